-- One row per UTC minute that has blocks, upserted as the open day grows.
-- Exact definitions: MISSION.md.
--
-- key: minute
-- grain: realtime
-- write: upsert
-- datafusion: optimizer.repartition_aggregations = false
--
-- Each scan partition groups its own rows (minute by minute: the files
-- are in time order) and one final step merges them. Routing every
-- (minute, address) row to a partition by its hash first cost more CPU
-- than it spread (docs/benchmarks.md, "Per-model settings").
WITH b AS (
    SELECT
        date_trunc('minute', "timestamp") AS minute,
        count(*) AS block_count,
        sum(gas_used) AS gas_used,
        max(number) AS last_block
    FROM blocks
    WHERE "timestamp" >= $start AND "timestamp" < $end
    GROUP BY 1
),
tx AS (
    SELECT
        date_trunc('minute', block_timestamp) AS minute,
        from_address,
        to_address,
        gas_price,
        receipt_status,
        value
    FROM transactions
    WHERE block_timestamp >= $start AND block_timestamp < $end
),
-- A minute's transaction figures need no address: grouping by minute
-- alone keeps the decimal sums out of the (minute, address) grouping
-- below, which then carries no aggregate at all.
t AS (
    SELECT
        minute,
        count(*) AS tx_count,
        sum(CASE WHEN receipt_status = 0 THEN CAST(0 AS DECIMAL(38, 0)) ELSE value END) AS value_wei,
        avg(CAST(gas_price AS DOUBLE)) AS avg_gas_price_wei
    FROM tx
    GROUP BY minute
),
-- One row per (minute, active address), so a minute's active addresses
-- are a count of rows rather than a count(DISTINCT). Over files sorted
-- by time (ledgerflow's own writers say so) this grouping streams minute
-- by minute; a count(DISTINCT) held every minute's address set at once.
per_address AS (
    SELECT minute, address
    FROM (
        SELECT minute, from_address AS address FROM tx
        UNION ALL
        SELECT minute, to_address AS address FROM tx WHERE to_address IS NOT NULL
    ) AS sides
    GROUP BY minute, address
),
active AS (
    SELECT minute, count(address) AS active_addresses
    FROM per_address
    GROUP BY minute
)
SELECT
    b.minute,
    b.block_count,
    coalesce(t.tx_count, 0) AS tx_count,
    b.gas_used,
    CAST(coalesce(t.value_wei, 0) AS DECIMAL(38, 0)) AS value_wei,
    t.avg_gas_price_wei,
    coalesce(a.active_addresses, 0) AS active_addresses,
    b.last_block,
    $run_at AS updated_at
FROM b
LEFT JOIN t ON b.minute = t.minute
LEFT JOIN active AS a ON b.minute = a.minute
