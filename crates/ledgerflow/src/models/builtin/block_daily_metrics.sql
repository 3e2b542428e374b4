-- One row per UTC day: chain activity, fees and value moved.
-- Exact definitions: MISSION.md, "The default models".
--
-- key: day
-- grain: day
-- write: replace_day
-- depends_on: user_activity_agg
-- check: expression(failed_tx_count <= tx_count)
-- check: expression(first_block <= last_block)
-- check: expression(unique_senders <= tx_count)
--
-- Parameters bound per run: $day (DATE), $start and $end (the day's
-- [start, end) as UTC timestamps), $run_at (when the run started).
-- `user_activity_agg` reads as that model's output for the same day: one
-- row per address, so the distinct senders and receivers are a count of
-- its rows rather than two distinct counts over every transaction.
WITH b AS (
    SELECT
        count(*) AS block_count,
        min(number) AS first_block,
        max(number) AS last_block,
        sum(gas_used) AS total_gas_used,
        avg(CAST(gas_used AS DOUBLE) / CAST(gas_limit AS DOUBLE)) AS avg_gas_used_ratio,
        avg(CAST(base_fee_per_gas AS DOUBLE)) AS avg_base_fee_per_gas,
        CASE WHEN count(*) > 1 THEN
            CAST(CAST(max("timestamp") AS BIGINT) - CAST(min("timestamp") AS BIGINT) AS DOUBLE)
                / 1000000.0 / CAST(count(*) - 1 AS DOUBLE)
        END AS avg_block_time_s
    FROM blocks
    WHERE "timestamp" >= $start AND "timestamp" < $end
),
-- The transaction figures come from `user_activity_agg` too: every
-- transaction is one sent side there (a null sender included, as its own
-- row), and one received side unless it created a contract. So the day's
-- transactions are not read a second time.
a AS (
    SELECT
        coalesce(sum(tx_sent), 0) AS tx_count,
        coalesce(sum(failed_tx_sent), 0) AS failed_tx_count,
        coalesce(sum(tx_sent) - sum(tx_received), 0) AS contract_creation_count,
        -- A failed transaction moves no value (value_sent_wei is 0 for
        -- it), but its fee is paid.
        sum(value_sent_wei) AS total_value_wei,
        sum(fees_paid_wei) AS total_fees_wei,
        count(*) FILTER (WHERE address IS NOT NULL AND tx_sent > 0) AS unique_senders,
        count(*) FILTER (WHERE address IS NOT NULL AND tx_received > 0) AS unique_receivers
    FROM user_activity_agg
)
SELECT
    CAST($day AS DATE) AS day,
    b.block_count,
    b.first_block,
    b.last_block,
    a.tx_count,
    a.failed_tx_count,
    a.contract_creation_count,
    b.total_gas_used,
    b.avg_gas_used_ratio,
    b.avg_base_fee_per_gas,
    CAST(coalesce(a.total_value_wei, 0) AS DECIMAL(38, 0)) AS total_value_wei,
    CAST(coalesce(a.total_fees_wei, 0) AS DECIMAL(38, 0)) AS total_fees_wei,
    a.unique_senders,
    a.unique_receivers,
    b.avg_block_time_s
FROM b CROSS JOIN a
WHERE b.block_count > 0
