//! Every bad input gives a clear error naming what is wrong, and the target
//! tables keep exactly what they had.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use ledgerflow_testkit::project::{parquet_files, rewrite_parquet, stderr, stdout, TestProject};
use ledgerflow_testkit::serving::{assert_dumps_eq, Serving};

use crate::{project, SINKS};

const DAY: &str = "2026-11-10";

/// A project with DAY loaded once; returns it and its tables.
async fn loaded(serving: Serving) -> (TestProject, Vec<Vec<String>>) {
    let p = project(serving).await;
    p.generate(DAY, DAY, "0.005", &[], &[]);
    p.ok(&["run", "--date", DAY]);
    let before = p.db.dump_metrics().await;
    assert!(before.iter().all(|t| !t.is_empty()));
    (p, before)
}

fn output(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn blocks_file(p: &TestProject) -> std::path::PathBuf {
    let dir = p.path().join(format!("data/batch/blocks/date={DAY}"));
    parquet_files(&dir).remove(0)
}

#[tokio::test]
async fn a_day_in_neither_layer_names_the_day_and_both_places() {
    for serving in SINKS {
        let (p, before) = loaded(serving).await;
        let out = p.expect(&["run", "--date", "2026-11-12"], 1);
        let text = output(&out);
        assert!(text.contains("no data for 2026-11-12"), "{text}");
        assert!(text.contains("data/batch/blocks/date=2026-11-12"), "{text}");
        assert!(
            text.contains("data/landing/blocks/date=2026-11-12"),
            "{text}"
        );
        assert_dumps_eq(&p.db.dump_metrics().await, &before, "tables");
        let failed = p.db.runs().await.iter().filter(|r| r.2 == "failed").count();
        assert_eq!(failed, 3, "each model's failure is in the ledger");
        // --allow-empty writes an empty day instead.
        p.ok(&["run", "--date", "2026-11-12", "--allow-empty"]);
        assert_dumps_eq(&p.db.dump_metrics().await, &before, "tables");
        p.drop_db().await;
    }
}

#[tokio::test]
async fn a_truncated_parquet_file_is_named_and_nothing_changes() {
    for serving in SINKS {
        let (p, before) = loaded(serving).await;
        let file = blocks_file(&p);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        let out = p.expect(&["run", "--date", DAY, "--force"], 1);
        let text = output(&out);
        assert!(
            text.contains(&file.file_name().unwrap().to_string_lossy().to_string()),
            "{text}"
        );
        assert!(
            text.contains("corrupt or unreadable Parquet file"),
            "{text}"
        );
        assert_dumps_eq(&p.db.dump_metrics().await, &before, "tables");
        p.drop_db().await;
    }
}

#[tokio::test]
async fn missing_and_mistyped_columns_name_column_file_and_type() {
    for serving in SINKS {
        let (p, before) = loaded(serving).await;
        let file = blocks_file(&p);
        let original = std::fs::read(&file).unwrap();

        rewrite_parquet(&file, |b| {
            let idx = b.schema().index_of("gas_used").unwrap();
            let mut b = b;
            b.remove_column(idx);
            b
        });
        let text = output(&p.expect(&["run", "--date", DAY, "--force"], 1));
        assert!(
            text.contains("column `gas_used` is missing") && text.contains("part-00000.parquet"),
            "{text}"
        );
        assert_dumps_eq(&p.db.dump_metrics().await, &before, "tables");

        std::fs::write(&file, &original).unwrap();
        rewrite_parquet(&file, |b| {
            let schema = b.schema();
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| match f.name().as_str() {
                    "number" => Field::new("number", DataType::Utf8, false),
                    _ => f.as_ref().clone(),
                })
                .collect();
            let columns: Vec<ArrayRef> = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| match f.name().as_str() {
                    "number" => Arc::new(StringArray::from(vec!["x"; c.len()])) as ArrayRef,
                    _ => c.clone(),
                })
                .collect();
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
        });
        let text = output(&p.expect(&["run", "--date", DAY, "--force"], 1));
        assert!(
            text.contains("column `number` has type Utf8 (expected Int64)"),
            "{text}"
        );
        assert_dumps_eq(&p.db.dump_metrics().await, &before, "tables");
        p.drop_db().await;
    }
}

#[tokio::test]
async fn a_model_sql_error_names_file_and_line() {
    for serving in SINKS {
        let (p, before) = loaded(serving).await;
        let model = p.path().join("models/block_daily_metrics.sql");
        let sql = std::fs::read_to_string(&model).unwrap();
        let line = sql
            .lines()
            .position(|l| l.contains("sum(gas_used)"))
            .unwrap()
            + 1;
        std::fs::write(&model, sql.replace("sum(gas_used)", "sum(gas_usedd)")).unwrap();
        let text = output(&p.expect(&["run", "--date", DAY, "--force"], 1));
        assert!(
            text.contains(&format!("block_daily_metrics.sql:{line}:")),
            "line {line}: {text}"
        );
        assert!(text.contains("gas_usedd"), "{text}");
        assert_dumps_eq(&p.db.dump_metrics().await, &before, "tables");
        p.drop_db().await;
    }
}

#[tokio::test]
async fn config_typo_names_the_key_and_exits_2() {
    let p = project(Serving::Sqlite).await;
    p.set_config("[engine]", "[engine]\nmemory_limt = \"1 GiB\"");
    let text = output(&p.expect(&["run", "--date", DAY], 2));
    assert!(text.contains("memory_limt"), "{text}");
    assert!(text.contains("ledgerflow.toml"), "{text}");
}

#[tokio::test]
async fn an_unreachable_postgres_names_host_and_database_never_the_password() {
    let p = project(Serving::Sqlite).await;
    p.generate(DAY, DAY, "0.005", &[], &[]);
    p.set_config(
        "url = \"sqlite://serving.db\"",
        "url = \"postgres://alice:s3cretpw@127.0.0.1:1/warehouse\"",
    );
    let text = output(&p.expect(&["run", "--date", DAY], 1));
    assert!(text.contains("127.0.0.1:1/warehouse"), "{text}");
    assert!(!text.contains("s3cretpw"), "{text}");
}

#[tokio::test]
async fn usage_errors_exit_2_and_name_the_flag() {
    let p = project(Serving::Sqlite).await;
    let cases: [(&[&str], &str); 4] = [
        (
            &["generate", "--from", DAY, "--to", DAY, "--reorg-rate", "2"],
            "--reorg-rate",
        ),
        (
            &["backfill", "--from", DAY, "--to", "2026-11-01"],
            "--to is before --from",
        ),
        (
            &["run", "--date", DAY, "--model", "nosuch"],
            "unknown model `nosuch`",
        ),
        (&["run", "--date", "2026-13-01"], "--date"),
    ];
    for (args, needle) in cases {
        let text = output(&p.expect(args, 2));
        assert!(text.contains(needle), "{args:?}: {text}");
    }
}
