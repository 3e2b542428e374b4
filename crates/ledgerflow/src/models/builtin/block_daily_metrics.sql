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
t AS (
    SELECT
        count(*) AS tx_count,
        count(*) FILTER (WHERE receipt_status = 0) AS failed_tx_count,
        count(*) FILTER (WHERE to_address IS NULL) AS contract_creation_count,
        -- A failed transaction moves no value, but its fee is paid.
        sum(value) FILTER (WHERE receipt_status IS DISTINCT FROM 0) AS total_value_wei,
        sum(CAST(receipt_gas_used AS DECIMAL(38, 0)) * CAST(gas_price AS DECIMAL(38, 0))) AS total_fees_wei
    FROM transactions
    WHERE block_timestamp >= $start AND block_timestamp < $end
),
a AS (
    SELECT
        count(*) FILTER (WHERE tx_sent > 0) AS unique_senders,
        count(*) FILTER (WHERE tx_received > 0) AS unique_receivers
    FROM user_activity_agg
    WHERE address IS NOT NULL
)
SELECT
    CAST($day AS DATE) AS day,
    b.block_count,
    b.first_block,
    b.last_block,
    t.tx_count,
    t.failed_tx_count,
    t.contract_creation_count,
    b.total_gas_used,
    b.avg_gas_used_ratio,
    b.avg_base_fee_per_gas,
    CAST(coalesce(t.total_value_wei, 0) AS DECIMAL(38, 0)) AS total_value_wei,
    CAST(coalesce(t.total_fees_wei, 0) AS DECIMAL(38, 0)) AS total_fees_wei,
    a.unique_senders,
    a.unique_receivers,
    b.avg_block_time_s
FROM b CROSS JOIN t CROSS JOIN a
WHERE b.block_count > 0
