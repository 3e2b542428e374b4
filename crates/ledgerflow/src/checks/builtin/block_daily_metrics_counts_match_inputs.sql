-- Reconciles block_daily_metrics with the canonical inputs it read: the
-- day's block and transaction counts are recounted from the tables (reorg
-- orphans already removed). A model that joins its way into counting a
-- transaction twice fails here. Returns the rows that disagree.
--
-- model: block_daily_metrics
-- severity: error
SELECT m.day, m.block_count, b.blocks, m.tx_count, t.transactions
FROM block_daily_metrics m
CROSS JOIN (
    SELECT count(*) AS blocks FROM blocks
    WHERE "timestamp" >= $start AND "timestamp" < $end
) b
CROSS JOIN (
    SELECT count(*) AS transactions FROM transactions
    WHERE block_timestamp >= $start AND block_timestamp < $end
) t
WHERE m.block_count <> b.blocks OR m.tx_count <> t.transactions
