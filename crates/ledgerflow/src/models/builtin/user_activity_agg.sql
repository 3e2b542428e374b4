-- One row per (day, address) that sent or received a transaction that day.
-- A self-transfer counts on both sides. Exact definitions: MISSION.md.
--
-- key: day, address
-- grain: day
-- write: replace_day
-- check: expression(tx_sent + tx_received > 0)
-- check: expression(failed_tx_sent <= tx_sent)
-- check: volume(change <= 50% vs median of the last 7 days) warn
WITH tx AS (
    SELECT
        from_address,
        to_address,
        block_timestamp,
        -- A failed transaction moves no value, but its fee is paid.
        CASE WHEN receipt_status = 0 THEN CAST(0 AS DECIMAL(38, 0)) ELSE value END AS moved,
        CAST(receipt_gas_used AS DECIMAL(38, 0)) * CAST(gas_price AS DECIMAL(38, 0)) AS fee,
        CASE WHEN receipt_status = 0 THEN 1 ELSE 0 END AS failed
    FROM transactions
    WHERE block_timestamp >= $start AND block_timestamp < $end
),
sides AS (
    SELECT from_address AS address, 1 AS sent, 0 AS received,
           moved AS value_sent, CAST(0 AS DECIMAL(38, 0)) AS value_received,
           fee, failed, block_timestamp
    FROM tx
    UNION ALL
    SELECT to_address AS address, 0 AS sent, 1 AS received,
           CAST(0 AS DECIMAL(38, 0)) AS value_sent, moved AS value_received,
           CAST(0 AS DECIMAL(38, 0)) AS fee, 0 AS failed, block_timestamp
    FROM tx
    WHERE to_address IS NOT NULL
)
SELECT
    CAST($day AS DATE) AS day,
    address,
    CAST(sum(sent) AS BIGINT) AS tx_sent,
    CAST(sum(received) AS BIGINT) AS tx_received,
    CAST(sum(value_sent) AS DECIMAL(38, 0)) AS value_sent_wei,
    CAST(sum(value_received) AS DECIMAL(38, 0)) AS value_received_wei,
    CAST(sum(fee) AS DECIMAL(38, 0)) AS fees_paid_wei,
    CAST(sum(failed) AS BIGINT) AS failed_tx_sent,
    min(block_timestamp) AS first_seen_at,
    max(block_timestamp) AS last_seen_at
FROM sides
GROUP BY address
