use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::datatypes::Field;
use chrono::{DateTime, Utc};

use super::*;
use crate::sinks::suite::{self, Reader};
use crate::sinks::values::fixtures::{self, day};

fn url() -> String {
    std::env::var("LEDGERFLOW_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A sink on a schema of its own, prepared; drop it with [`cleanup`].
async fn fresh() -> PostgresSink {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!(
        "t_{}_{nanos}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let sink = PostgresSink::connect(&url(), &schema).await.unwrap();
    sink.prepare().await.unwrap();
    sink
}

async fn cleanup(sink: PostgresSink) {
    execute(
        &sink,
        &format!("DROP SCHEMA {} CASCADE", quote(&sink.schema)),
    )
    .await;
}

async fn execute(sink: &PostgresSink, sql: &str) {
    sink.client()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}

async fn query(sink: &PostgresSink, sql: &str) -> Vec<Row> {
    sink.client().await.unwrap().query(sql, &[]).await.unwrap()
}

/// `v` and `value_wei` as [`PgNumeric`] text: the value and its scale.
#[async_trait]
impl Reader for PostgresSink {
    async fn day_rows(&self, table: &str, d: NaiveDate) -> Vec<(String, i64, String)> {
        let sql = format!(
            "SELECT address, n, v FROM {} WHERE day = $1 ORDER BY address",
            self.table(table)
        );
        let client = self.client().await.unwrap();
        let rows = client.query(&sql, &[&d]).await.unwrap();
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, PgNumeric>(2).to_string()))
            .collect()
    }

    async fn minute_rows(&self, table: &str) -> Vec<(String, i64, Option<String>)> {
        let sql = format!(
            "SELECT minute, block_count, value_wei FROM {} ORDER BY minute",
            self.table(table)
        );
        query(self, &sql)
            .await
            .iter()
            .map(|r| {
                let minute = r.get::<_, DateTime<Utc>>(0).timestamp_micros();
                (
                    values::timestamp_text(minute).unwrap(),
                    r.get(1),
                    r.get::<_, Option<PgNumeric>>(2).map(|n| n.to_string()),
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn numeric_round_trips_exactly() {
    let sink = PostgresSink::connect(&url(), "public").await.unwrap();
    let client = sink.client().await.unwrap();
    let max = 10i128.pow(38) - 1;
    let cases = [
        (0, 0, "0"),
        (1, 0, "1"),
        (-1, 0, "-1"),
        (10_000, 0, "10000"),
        ((1 << 64) + 1, 0, "18446744073709551617"),
        (10i128.pow(37), 0, "10000000000000000000000000000000000000"),
        (max, 0, "99999999999999999999999999999999999999"),
        (-max, 0, "-99999999999999999999999999999999999999"),
        (-(10i128.pow(30)), 0, "-1000000000000000000000000000000"),
        (12345, 2, "123.45"),
        (-5, 3, "-0.005"),
        (1, 4, "0.0001"),
        (10_000_001, 4, "1000.0001"),
        (0, 2, "0.00"),
        (max, 38, "0.99999999999999999999999999999999999999"),
        (10i128.pow(16), 0, "10000000000000000"),
        (1_234_567_000_000_000, 8, "12345670.00000000"),
        (i128::MAX, 0, "170141183460469231731687303715884105727"),
        (-7, 12, "-0.000000000007"),
    ];
    for (value, scale, text) in cases {
        let n = PgNumeric(value, scale);
        assert_eq!(n.to_string(), text);
        // Ours -> server, and the server's own encoding of the text -> ours.
        let row = client
            .query_one("SELECT $1::numeric::text, $2::text::numeric", &[&n, &text])
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            text,
            "encoding {value} scale {scale}"
        );
        assert_eq!(row.get::<_, PgNumeric>(1), n, "decoding {text}");
    }
    // A negative scale, on both encoding paths (scale % 4 == 0 or not).
    for (n, text) in [
        (PgNumeric(123, -2), "12300"),
        (PgNumeric(-123_456_789, -4), "-1234567890000"),
    ] {
        let row = client
            .query_one("SELECT $1::numeric::text", &[&n])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), text);
    }
    // A constrained column reports its scale.
    let row = client
        .query_one("SELECT 7::numeric(10,3)", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, PgNumeric>(0), PgNumeric(7000, 3));
    let err = client
        .query_one("SELECT 'NaN'::numeric", &[])
        .await
        .unwrap();
    assert!(err.try_get::<_, PgNumeric>(0).is_err());
}

#[tokio::test]
async fn replace_day_is_idempotent_and_touches_only_its_day() {
    let sink = fresh().await;
    suite::replace_day_is_idempotent_and_touches_only_its_day(&sink, &sink).await;

    // Every type, read back.
    let sql = format!(
        "SELECT i, f, b, amt, ts, ts_ns, day FROM {} WHERE address = '0xbb'",
        sink.table("activity")
    );
    let row = &query(&sink, &sql).await[0];
    let ts = DateTime::<Utc>::from_timestamp_micros(fixtures::ts_micros(2)).unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(row.get::<_, f64>(1), 2.5);
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, PgNumeric>(3), PgNumeric(fixtures::amt(2), 2));
    assert_eq!(row.get::<_, DateTime<Utc>>(4), ts);
    assert_eq!(row.get::<_, DateTime<Utc>>(5), ts);
    assert_eq!(row.get::<_, NaiveDate>(6), day(3));
    let sql = format!(
        "SELECT string_agg(column_name || ' ' || data_type || coalesce('(' || \
         numeric_precision || ',' || numeric_scale || ')', '') || ' ' || is_nullable, '; ' \
         ORDER BY ordinal_position) FROM information_schema.columns \
         WHERE table_schema = '{}' AND table_name = 'activity'",
        sink.schema
    );
    let ddl: String = query(&sink, &sql).await[0].get(0);
    assert!(
        ddl.starts_with("day date NO; address text NO; n bigint(64,0) YES; i integer(32,0) YES"),
        "{ddl}"
    );
    assert!(
        ddl.contains("v numeric(38,0) YES; amt numeric(20,2) YES; ts timestamp with time zone YES"),
        "{ddl}"
    );
    cleanup(sink).await;
}

/// `(relation, index definition)` of every index on `prefix*` tables.
async fn indexes(sink: &PostgresSink, prefix: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{}' AND c.relname LIKE '{prefix}%' ORDER BY 1, 2",
        sink.schema
    );
    let rows = query(sink, &sql).await;
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn replace_day(sink: &PostgresSink, table: &str, d: NaiveDate, rows: &[fixtures::Row]) {
    let id = sink
        .ledger_insert(&fixtures::running(table, d))
        .await
        .unwrap();
    let req = fixtures::replace(table, d, vec![fixtures::activity(d, rows)], id);
    assert_eq!(sink.write(req).await.unwrap(), rows.len() as u64);
}

#[tokio::test]
async fn a_day_partition_is_indexed_day_last_and_older_tables_keep_their_order() {
    let sink = fresh().await;
    for _ in 0..2 {
        replace_day(&sink, "activity", day(3), &fixtures::big_rows()).await;
    }
    let found = indexes(&sink, "activity").await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "activity");
    assert_eq!(found[1].0, "activity_p20261103");
    for (_, def) in &found {
        assert!(def.ends_with("USING btree (address, day)"), "{def}");
    }

    // A table created with the day first (as before) keeps that order:
    // the day's partition is indexed once, in the table's order.
    let (activity, legacy) = (sink.table("activity"), sink.table("legacy"));
    let sql = format!(
        "CREATE TABLE {legacy} (LIKE {activity}, PRIMARY KEY (day, address)) \
         PARTITION BY RANGE (day)"
    );
    execute(&sink, &sql).await;
    replace_day(&sink, "legacy", day(3), &fixtures::big_rows()).await;
    let second: Vec<fixtures::Row> = vec![(Some("0xee"), 6, 7)];
    replace_day(&sink, "legacy", day(3), &second).await;
    let found = indexes(&sink, "legacy").await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[1].0, "legacy_p20261103");
    for (_, def) in &found {
        assert!(def.ends_with("USING btree (day, address)"), "{def}");
    }
    assert_eq!(sink.day_rows("legacy", day(3)).await.len(), 1);
    cleanup(sink).await;
}

#[tokio::test]
async fn a_copy_of_several_chunks_arrives_whole() {
    let sink = fresh().await;
    // 20 k rows of ~190 bytes: several COPY_CHUNKs.
    let rows: Vec<fixtures::Row> = (0..20_000i64)
        .map(|i| {
            let address: &'static str = Box::leak(format!("0x{i:0>64}").into_boxed_str());
            (Some(address), i, i128::from(i) << 70)
        })
        .collect();
    replace_day(&sink, "activity", day(3), &rows).await;
    let sql = format!(
        "SELECT count(*), sum(n)::bigint, sum(v)::text, max(address) FROM {}",
        sink.table("activity")
    );
    let row = &query(&sink, &sql).await[0];
    let n: i64 = (0..20_000).sum();
    assert_eq!(row.get::<_, i64>(0), 20_000);
    assert_eq!(row.get::<_, i64>(1), n);
    assert_eq!(row.get::<_, String>(2), (i128::from(n) << 70).to_string());
    assert_eq!(row.get::<_, String>(3), format!("0x{:0>64}", 19_999));
    cleanup(sink).await;
}

#[tokio::test]
async fn an_older_version_never_replaces_a_newer_one() {
    let sink = fresh().await;
    suite::an_older_version_never_replaces_a_newer_one(&sink, &sink).await;
    cleanup(sink).await;
}

#[tokio::test]
async fn upsert_dedupes_keys_and_the_last_row_wins() {
    let sink = fresh().await;
    suite::upsert_dedupes_keys_and_the_last_row_wins(&sink, &sink).await;
    cleanup(sink).await;
}

#[tokio::test]
async fn a_mismatched_table_is_refused_and_left_alone() {
    let sink = fresh().await;
    let table = format!("{}.activity", sink.schema);
    let n_as_text = "column `n` is bigint";
    suite::a_mismatched_table_is_refused_and_left_alone(&sink, &sink, &table, n_as_text).await;

    // Narrower decimals fit a wider column; another scale does not.
    let mut fields = suite::activity_fields();
    fields[7] = Field::new("amt", DataType::Decimal128(20, 3), true);
    let err = suite::refused(&sink, fields).await;
    assert!(
        err.to_string().contains("column `amt` is numeric(20,2)"),
        "{err}"
    );
    let rows = suite::expect(&fixtures::big_rows());
    assert_eq!(sink.day_rows("activity", day(3)).await, rows);
    cleanup(sink).await;
}

#[tokio::test]
async fn a_failed_write_keeps_the_old_day_and_the_run_open() {
    let sink = fresh().await;
    suite::a_failed_write_keeps_the_old_day_and_the_run_open(&sink, &sink, "address").await;
    cleanup(sink).await;
}

#[tokio::test]
async fn ledger_records_runs() {
    let sink = fresh().await;
    // A second process preparing the same schema at the same time.
    let other = PostgresSink::connect(&url(), &sink.schema).await.unwrap();
    let (a, b) = tokio::join!(sink.prepare(), other.prepare());
    a.unwrap();
    b.unwrap();
    suite::ledger_records_runs(&sink, &other).await;
    cleanup(sink).await;
}

#[tokio::test]
async fn connection_errors_name_the_target_but_not_the_password() {
    let err = PostgresSink::connect("postgres://me:s3cret@127.0.0.1:1/ledger", "public")
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1/ledger"), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let err = PostgresSink::connect("postgres://me:s3cret@127.0.0.1:1/ledger", "bad-name")
        .await
        .err()
        .unwrap();
    assert!(!err.to_string().contains("s3cret"));
}
