-- Reconciles the two daily tables: the value moved and the fees paid in
-- block_daily_metrics equal the sums over user_activity_agg's senders, and
-- the distinct senders equal its sending addresses. Returns the rows that
-- disagree.
--
-- model: block_daily_metrics
-- severity: error
SELECT m.day, m.total_value_wei, u.value_sent_wei, m.total_fees_wei, u.fees_paid_wei,
       m.unique_senders, u.senders
FROM block_daily_metrics m
CROSS JOIN (
    SELECT
        CAST(coalesce(sum(value_sent_wei), 0) AS DECIMAL(38, 0)) AS value_sent_wei,
        CAST(coalesce(sum(fees_paid_wei), 0) AS DECIMAL(38, 0)) AS fees_paid_wei,
        count(*) FILTER (WHERE tx_sent > 0) AS senders
    FROM user_activity_agg
) u
WHERE m.total_value_wei <> u.value_sent_wei
   OR m.total_fees_wei <> u.fees_paid_wei
   OR m.unique_senders <> u.senders
