//! Scenarios every sink must pass, written against [`Sink`] alone. A sink's
//! tests open a fresh database, implement [`Reader`] to read its tables
//! back, and call these; checks of how one sink stores values stay in its
//! own tests.

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Int64Array, StringArray, TimestampSecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::NaiveDate;

use super::values::fixtures::{self, day, Row};
use super::{Sink, WriteMode, WriteRequest};
use crate::error::Error;
use crate::ledger::{RunFilter, RunOutcome, RunRecord, RunState};

/// Reads a sink's tables back, straight from its database.
#[async_trait]
pub(crate) trait Reader: Sync {
    /// (address, n, v) of `day` in an activity table (see
    /// [`fixtures::activity`]), ordered by address; `v` as exact decimal text.
    async fn day_rows(&self, table: &str, day: NaiveDate) -> Vec<(String, i64, String)>;

    /// (minute, block_count, value_wei) of an [`upsert`] table, ordered by
    /// minute; minute as [`super::values::timestamp_text`], value_wei as
    /// exact decimal text.
    async fn minute_rows(&self, table: &str) -> Vec<(String, i64, Option<String>)>;
}

/// Inserts a running ledger row for (model, day); returns its id.
pub(crate) async fn run(sink: &dyn Sink, model: &str, d: NaiveDate) -> i64 {
    sink.ledger_insert(&fixtures::running(model, d))
        .await
        .unwrap()
}

pub(crate) async fn state(sink: &dyn Sink, id: i64) -> RunRecord {
    let all = sink.ledger_list(&RunFilter::default()).await.unwrap();
    all.into_iter().find(|r| r.id == id).unwrap()
}

/// What [`Reader::day_rows`] returns after writing `rows`.
pub(crate) fn expect(rows: &[Row]) -> Vec<(String, i64, String)> {
    let mut rows: Vec<_> = rows
        .iter()
        .map(|r| (r.0.unwrap().to_owned(), r.1, r.2.to_string()))
        .collect();
    rows.sort();
    rows
}

/// Writes [`fixtures::big_rows`] as day 3 of `activity`; returns them.
pub(crate) async fn seed(sink: &dyn Sink) -> Vec<Row> {
    let rows = fixtures::big_rows();
    let id = run(sink, "activity", day(3)).await;
    let req = fixtures::replace(
        "activity",
        day(3),
        vec![fixtures::activity(day(3), &rows)],
        id,
    );
    sink.write(req).await.unwrap();
    rows
}

/// The fields of [`fixtures::activity_schema`], to alter.
pub(crate) fn activity_fields() -> Vec<Field> {
    fixtures::activity_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect()
}

/// Writes no rows to day 3 of `activity` with `fields` as the output
/// schema, expecting the sink to refuse; returns the error.
pub(crate) async fn refused(sink: &dyn Sink, fields: Vec<Field>) -> Error {
    let id = run(sink, "activity", day(3)).await;
    let mut req = fixtures::replace("activity", day(3), vec![], id);
    req.schema = Arc::new(Schema::new(fields));
    sink.write(req).await.unwrap_err()
}

/// An upsert of (minute, block_count, value_wei) rows keyed by minute.
pub(crate) fn upsert(table: &str, rows: &[(i64, i64, Option<i128>)], run_id: i64) -> WriteRequest {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "minute",
            DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
            false,
        ),
        Field::new("block_count", DataType::Int64, false),
        Field::new("value_wei", DataType::Decimal128(38, 0), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampSecondArray::from(rows.iter().map(|r| r.0 * 60).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(
            Decimal128Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                .with_precision_and_scale(38, 0)
                .unwrap(),
        ),
    ];
    WriteRequest {
        table: table.into(),
        key: vec!["minute".into()],
        mode: WriteMode::Upsert,
        day: day(5),
        schema: schema.clone(),
        batches: vec![RecordBatch::try_new(schema, columns).unwrap()],
        run_id: Some(run_id),
        checkpoint: None,
        version: None,
    }
}

/// Leaves day 3 of `activity` holding [`fixtures::big_rows`], for the
/// caller to check how the sink stored every type.
pub(crate) async fn replace_day_is_idempotent_and_touches_only_its_day(
    sink: &dyn Sink,
    db: &dyn Reader,
) {
    let (d1, d2) = (day(3), day(4));
    let first = fixtures::big_rows();
    let id = run(sink, "activity", d1).await;
    let req = fixtures::replace("activity", d1, vec![fixtures::activity(d1, &first)], id);
    assert_eq!(sink.write(req).await.unwrap(), 3);
    let other: Vec<Row> = vec![(Some("0xdd"), 9, 99)];
    let id = run(sink, "activity", d2).await;
    let req = fixtures::replace("activity", d2, vec![fixtures::activity(d2, &other)], id);
    assert_eq!(sink.write(req).await.unwrap(), 1);

    // The same day twice, from two batches: the day's rows are replaced,
    // never appended.
    let second: Vec<Row> = vec![(Some("0xaa"), 4, 5), (Some("0xee"), 6, 7)];
    for _ in 0..2 {
        let id = run(sink, "activity", d1).await;
        let batches = vec![
            fixtures::activity(d1, &second[..1]),
            fixtures::activity(d1, &second[1..]),
        ];
        let req = fixtures::replace("activity", d1, batches, id);
        assert_eq!(sink.write(req).await.unwrap(), 2);
        let rec = state(sink, id).await;
        assert_eq!((rec.state, rec.rows_written), (RunState::Success, Some(2)));
        assert!(rec.finished_at.is_some());
    }
    assert_eq!(db.day_rows("activity", d1).await, expect(&second));
    assert_eq!(db.day_rows("activity", d2).await, expect(&other));

    let id = run(sink, "activity", d1).await;
    let req = fixtures::replace("activity", d1, vec![fixtures::activity(d1, &first)], id);
    sink.write(req).await.unwrap();
    assert_eq!(db.day_rows("activity", d1).await, expect(&first));
}

pub(crate) async fn upsert_dedupes_keys_and_the_last_row_wins(sink: &dyn Sink, db: &dyn Reader) {
    let id = run(sink, "dash", day(5)).await;
    let big = Some(1i128 << 100);
    let req = upsert("dash", &[(1, 1, None), (2, 2, big), (1, 3, Some(30))], id);
    assert_eq!(sink.write(req).await.unwrap(), 2);
    let id = run(sink, "dash", day(5)).await;
    let req = upsert("dash", &[(2, 5, Some(50)), (3, 6, big)], id);
    assert_eq!(sink.write(req).await.unwrap(), 2);
    assert_eq!(state(sink, id).await.rows_written, Some(2));
    let big = (1i128 << 100).to_string();
    assert_eq!(
        db.minute_rows("dash").await,
        vec![
            ("1970-01-01T00:01:00.000000Z".into(), 3, Some("30".into())),
            ("1970-01-01T00:02:00.000000Z".into(), 5, Some("50".into())),
            ("1970-01-01T00:03:00.000000Z".into(), 6, Some(big)),
        ]
    );

    // A table that is all key: duplicates collapse, nothing to update.
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec!["x", "y", "x"])) as ArrayRef],
    )
    .unwrap();
    for expected in [2, 0] {
        let id = run(sink, "keys", day(5)).await;
        let req = WriteRequest {
            table: "keys".into(),
            key: vec!["a".into()],
            mode: WriteMode::Upsert,
            day: day(5),
            schema: schema.clone(),
            batches: vec![batch.clone()],
            run_id: Some(id),
            checkpoint: None,
            version: None,
        };
        assert_eq!(sink.write(req).await.unwrap(), expected);
    }
}

/// `table_in_errors` is how the sink names `activity` in a schema error;
/// `n_as_text` what it says of column `n` when the model makes it text.
/// Leaves day 3 of `activity` holding [`fixtures::big_rows`].
pub(crate) async fn a_mismatched_table_is_refused_and_left_alone(
    sink: &dyn Sink,
    db: &dyn Reader,
    table_in_errors: &str,
    n_as_text: &str,
) {
    let rows = seed(sink).await;

    // `n` as text instead of an integer.
    let mut fields = activity_fields();
    fields[2] = Field::new("n", DataType::Utf8, true);
    let err = refused(sink, fields.clone()).await;
    assert!(
        matches!(&err, Error::SinkSchema { table, .. } if table == table_in_errors),
        "{err}"
    );
    assert!(err.to_string().contains(n_as_text), "{err}");

    // A column the table does not have.
    fields[2] = Field::new("n", DataType::Int64, true);
    fields.push(Field::new("extra", DataType::Int64, true));
    let err = refused(sink, fields).await;
    assert!(
        err.to_string().contains("column `extra` is missing"),
        "{err}"
    );
    assert_eq!(db.day_rows("activity", day(3)).await, expect(&rows));
}

/// `null_key_error` is part of the sink's message for a NULL `address`.
pub(crate) async fn a_failed_write_keeps_the_old_day_and_the_run_open(
    sink: &dyn Sink,
    db: &dyn Reader,
    null_key_error: &str,
) {
    let rows = seed(sink).await;

    // The NULL key is in the second batch, after the first was written.
    let id = run(sink, "activity", day(3)).await;
    let batches = vec![
        fixtures::activity(day(3), &[(Some("0x01"), 1, 1)]),
        fixtures::activity(day(3), &[(None, 2, 2)]),
    ];
    let err = sink
        .write(fixtures::replace("activity", day(3), batches, id))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Serving { .. }), "{err}");
    assert!(err.to_string().contains(null_key_error), "{err}");
    assert_eq!(db.day_rows("activity", day(3)).await, expect(&rows));
    assert_eq!(state(sink, id).await.state, RunState::Running);

    // Closing a ledger row that does not exist rolls the data back too.
    let batches = vec![fixtures::activity(day(3), &[(Some("0x01"), 1, 1)])];
    let err = sink
        .write(fixtures::replace("activity", day(3), batches, 999_999))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ledger row 999999"), "{err}");
    assert_eq!(db.day_rows("activity", day(3)).await, expect(&rows));
    // The sink is usable after the rollbacks.
    assert!(sink.ledger_list(&RunFilter::default()).await.is_ok());

    // Several tables in one transaction: the second table's failure rolls
    // back the first table's new day too; together, both commit.
    let (good_id, bad_id) = (
        run(sink, "activity_b", day(3)).await,
        run(sink, "activity", day(3)).await,
    );
    let good = fixtures::replace(
        "activity_b",
        day(3),
        vec![fixtures::activity(day(3), &[(Some("0x02"), 2, 2)])],
        good_id,
    );
    let bad = fixtures::replace(
        "activity",
        day(3),
        vec![fixtures::activity(day(3), &[(None, 2, 2)])],
        bad_id,
    );
    let err = sink.write_all(vec![good.clone(), bad]).await.unwrap_err();
    assert!(err.to_string().contains(null_key_error), "{err}");
    assert!(db.day_rows("activity_b", day(3)).await.is_empty());
    assert_eq!(state(sink, good_id).await.state, RunState::Running);
    let fixed = fixtures::replace(
        "activity",
        day(3),
        vec![fixtures::activity(day(3), &[(Some("0x03"), 3, 3)])],
        bad_id,
    );
    assert_eq!(sink.write_all(vec![good, fixed]).await.unwrap(), vec![1, 1]);
    assert_eq!(
        db.day_rows("activity_b", day(3)).await,
        expect(&[(Some("0x02"), 2, 2)])
    );
    assert_eq!(
        db.day_rows("activity", day(3)).await,
        expect(&[(Some("0x03"), 3, 3)])
    );
    assert_eq!(state(sink, good_id).await.state, RunState::Success);
    assert_eq!(state(sink, bad_id).await.state, RunState::Success);
}

/// `other` is a second, prepared handle on the same database, as another
/// process would open it.
pub(crate) async fn ledger_records_runs(sink: &dyn Sink, other: &dyn Sink) {
    let mut pending = fixtures::running("m", day(1));
    pending.state = RunState::Pending;
    let p = sink.ledger_insert(&pending).await.unwrap();
    let r1 = run(sink, "m", day(1)).await;
    let r2 = run(other, "m", day(2)).await;
    let other_model = run(sink, "other", day(1)).await;
    assert!(state(sink, p).await.started_at.is_none());
    let rec = state(sink, r1).await;
    assert!(rec.started_at.is_some() && rec.finished_at.is_none());
    assert_eq!(rec.source_layers.as_deref(), Some("blocks=batch"));

    let ok = RunOutcome {
        rows_written: Some(7),
        ..RunOutcome::new(RunState::Success)
    };
    let failed = RunOutcome {
        error: Some("boom".into()),
        ..RunOutcome::new(RunState::Failed)
    };
    sink.ledger_update(r1, &ok).await.unwrap();
    sink.ledger_update(r2, &failed).await.unwrap();
    let running = RunOutcome {
        fingerprint: Some("fp-p".into()),
        ..RunOutcome::new(RunState::Running)
    };
    sink.ledger_update(p, &running).await.unwrap();
    let rec = state(sink, p).await;
    assert!(rec.started_at.is_some());
    assert_eq!(rec.fingerprint.as_deref(), Some("fp-p"));
    let rec = state(sink, r2).await;
    assert_eq!(
        (rec.state, rec.error.as_deref()),
        (RunState::Failed, Some("boom"))
    );
    assert!(rec.finished_at.unwrap() >= rec.started_at.unwrap());
    assert!(sink.ledger_update(999_999, &ok).await.is_err());

    let ids = |rs: Vec<RunRecord>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = sink.ledger_list(&RunFilter::default()).await.unwrap();
    assert_eq!(ids(all), vec![other_model, r2, r1, p]);
    let filter = RunFilter {
        model: Some("m".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(sink.ledger_list(&filter).await.unwrap()),
        vec![r2, r1, p]
    );
    let filter = RunFilter {
        state: Some(RunState::Success),
        ..Default::default()
    };
    assert_eq!(ids(sink.ledger_list(&filter).await.unwrap()), vec![r1]);
    let filter = RunFilter {
        from: Some(day(2)),
        to: Some(day(2)),
        ..Default::default()
    };
    assert_eq!(ids(sink.ledger_list(&filter).await.unwrap()), vec![r2]);
    let filter = RunFilter {
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(
        ids(sink.ledger_list(&filter).await.unwrap()),
        vec![other_model, r2]
    );

    assert_eq!(
        sink.last_success_fingerprint("m", day(1))
            .await
            .unwrap()
            .as_deref(),
        Some("fp-m-2026-11-01")
    );
    assert_eq!(
        sink.last_success_fingerprint("m", day(2)).await.unwrap(),
        None
    );
    assert_eq!(
        sink.last_success_fingerprint("other", day(1))
            .await
            .unwrap(),
        None
    );
}

/// Versions: a write whose version is below the committed one is refused
/// (superseded) and changes nothing, its ledger row stays open; an equal
/// or greater one commits; the last success is the one with the greatest
/// version, whatever the ids.
pub(crate) async fn an_older_version_never_replaces_a_newer_one(sink: &dyn Sink, db: &dyn Reader) {
    let old_rows: Vec<Row> = vec![(Some("0xaa"), 1, 1)];
    let new_rows: Vec<Row> = vec![(Some("0xbb"), 2, 2)];
    let write = |d: NaiveDate, rows: &[Row], id: i64, version: i64| {
        let mut req = fixtures::replace("versioned", d, vec![fixtures::activity(d, rows)], id);
        req.version = Some(version);
        req
    };
    for (d, newer_first) in [(day(3), false), (day(4), true)] {
        let older = sink.next_version().await.unwrap();
        let newer = sink.next_version().await.unwrap();
        assert!(newer > older);
        // The run holding the newer version got its ledger row first.
        let newer_id = run(sink, "versioned", d).await;
        let older_id = run(sink, "versioned", d).await;
        for (id, fp) in [(newer_id, "newer"), (older_id, "older")] {
            let running = RunOutcome {
                fingerprint: Some(fp.into()),
                ..RunOutcome::new(RunState::Running)
            };
            sink.ledger_update(id, &running).await.unwrap();
        }
        if newer_first {
            sink.write(write(d, &new_rows, newer_id, newer))
                .await
                .unwrap();
            let err = sink
                .write(write(d, &old_rows, older_id, older))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::Superseded { version, by, .. } if version == older && by == newer),
                "{err}"
            );
            assert_eq!(state(sink, older_id).await.state, RunState::Running);
            // The same version again (a realtime pass writing in chunks)
            // commits.
            let again = run(sink, "versioned", d).await;
            let running = RunOutcome {
                fingerprint: Some("newer".into()),
                ..RunOutcome::new(RunState::Running)
            };
            sink.ledger_update(again, &running).await.unwrap();
            sink.write(write(d, &new_rows, again, newer)).await.unwrap();
        } else {
            sink.write(write(d, &old_rows, older_id, older))
                .await
                .unwrap();
            sink.write(write(d, &new_rows, newer_id, newer))
                .await
                .unwrap();
        }
        assert_eq!(db.day_rows("versioned", d).await, expect(&new_rows), "{d}");
        // By id the older run is the latest; by version, the newer.
        let last = sink.last_success_fingerprint("versioned", d).await.unwrap();
        assert_eq!(last.as_deref(), Some("newer"), "{d}");
    }
}
