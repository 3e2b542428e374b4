-- One row per UTC minute that has blocks, upserted as the open day grows.
-- Exact definitions: MISSION.md.
--
-- key: minute
-- grain: realtime
-- write: upsert
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
        CASE WHEN receipt_status = 0 THEN CAST(0 AS DECIMAL(38, 0)) ELSE value END AS moved
    FROM transactions
    WHERE block_timestamp >= $start AND block_timestamp < $end
),
-- One row per address side of a transaction; the transaction's own
-- figures ride on its sender side only.
sides AS (
    SELECT minute, from_address AS address, 1 AS is_tx, moved,
           CAST(gas_price AS DOUBLE) AS gas_price
    FROM tx
    UNION ALL
    SELECT minute, to_address AS address, 0 AS is_tx, CAST(0 AS DECIMAL(38, 0)) AS moved,
           CAST(NULL AS DOUBLE) AS gas_price
    FROM tx
    WHERE to_address IS NOT NULL
),
-- One row per (minute, active address), so a minute's active addresses
-- are a count of rows rather than a count(DISTINCT). Over files sorted
-- by time (ledgerflow's own writers say so) this grouping streams minute
-- by minute; a count(DISTINCT) held every minute's address set at once.
per_address AS (
    SELECT
        minute,
        address,
        sum(is_tx) AS tx_count,
        sum(moved) AS value_wei,
        sum(gas_price) AS gas_price_sum,
        count(gas_price) AS gas_price_count
    FROM sides
    GROUP BY minute, address
),
t AS (
    SELECT
        minute,
        sum(tx_count) AS tx_count,
        sum(value_wei) AS value_wei,
        sum(gas_price_sum) / CAST(nullif(sum(gas_price_count), 0) AS DOUBLE) AS avg_gas_price_wei,
        count(address) AS active_addresses
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
    coalesce(t.active_addresses, 0) AS active_addresses,
    b.last_block,
    $run_at AS updated_at
FROM b
LEFT JOIN t ON b.minute = t.minute
