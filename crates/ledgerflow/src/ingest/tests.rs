//! Whole-ingest tests on real archives in a temporary batch root.

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::DataType;
use chrono::NaiveDate;

use super::summary::{ArchiveAction, IngestReport, TableState};
use super::*;
use crate::generate::partner::{self, DumpParams, DumpSummary, HostileParams};

use crate::day::nov as day;

/// Generator settings for archives of day 1 only.
fn day_one(
    seed: u64,
    archives_per_day: usize,
    rows_per_batch: usize,
    bad_rows: bool,
) -> DumpParams {
    DumpParams {
        seed,
        days: vec![day(1)],
        archives_per_day,
        rows_per_batch,
        bad_rows,
    }
}

fn config(dir: &Path, extra: &str) -> Config {
    let text = format!(
        "[batch]\nurl = \"batch\"\n[speed]\nurl = \"landing\"\n[serving]\nurl = \"sqlite://s.db\"\n{extra}"
    );
    let c = Config::parse(&text, &dir.join("ledgerflow.toml")).unwrap();
    c.validate().unwrap();
    c
}

async fn run(c: &Config, paths: &[PathBuf], date: Option<NaiveDate>) -> IngestReport {
    ingest(
        c,
        paths,
        &IngestOptions {
            date,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn table<'a>(r: &'a IngestReport, t: &str, d: NaiveDate) -> &'a summary::TableReport {
    r.tables
        .iter()
        .find(|x| x.table == t && x.day == d)
        .unwrap_or_else(|| panic!("no report for {t} {d}: {r:#?}"))
}

/// (name, size) of every file under `dir`, sorted.
fn tree(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, e.metadata().unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

fn parquet_schema(dir: &Path) -> Vec<(String, DataType)> {
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .unwrap_or_else(|| panic!("no parquet in {}", dir.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(file).unwrap(),
    )
    .unwrap();
    reader
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect()
}

fn col_type(schema: &[(String, DataType)], name: &str) -> DataType {
    schema
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no column {name} in {schema:?}"))
        .1
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_days_of_drift_reconcile_and_end_in_the_expected_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config(tmp.path(), "");
    let dumps = tmp.path().join("dumps");
    let days: Vec<NaiveDate> = (1..=5).map(day).collect();
    let summary = partner::write_partner_dumps(
        &dumps,
        &DumpParams {
            seed: 1,
            days: days.clone(),
            archives_per_day: 2,
            rows_per_batch: 1600,
            bad_rows: true,
        },
    )
    .unwrap();
    let root = c.batch_root().unwrap();
    for d in &days {
        let files: Vec<PathBuf> = summary
            .archives
            .iter()
            .filter(|p| p.to_string_lossy().contains(&d.to_string()))
            .cloned()
            .collect();
        let r = run(&c, &files, Some(*d)).await;
        assert!(r.reconciled, "{r:#?}");
        for t in ["transfers", "prices", "balances"] {
            let tr = table(&r, t, *d);
            let expect = &summary.counts[&DumpSummary::key(t, *d)];
            assert_eq!(tr.rows_read, expect.rows, "{t} {d}");
            if t == "balances" && *d == day(5) {
                // as_of turned into integers: incompatible, every row bad.
                assert_eq!(tr.state, TableState::Failed, "{tr:#?}");
                assert!(
                    tr.error.as_ref().unwrap().contains("max_bad_rows_ratio"),
                    "{tr:?}"
                );
                continue;
            }
            assert_eq!(tr.state, TableState::Committed, "{tr:#?}");
            assert_eq!(tr.rows_quarantined, expect.bad, "{t} {d}");
            assert_eq!(tr.rows_written, expect.rows - expect.bad, "{t} {d}");
            assert_eq!(tr.rows_on_disk, Some(tr.rows_written));
            let part = root.join(t).join(crate::day::partition_dir(*d));
            assert!(part.join("_SUCCESS").exists());
        }
        let code = if *d == day(5) { 1 } else { 0 };
        assert_eq!(r.exit_code(), code);
    }
    // Balances of day 5 left nothing, not even an uncommitted partition.
    assert!(!root.join("balances/date=2026-11-05/_SUCCESS").exists());

    let reg = Registry::new(crate::catalog::meta::MetaDir::local(&root));
    let versions = |t: &str| reg.load(t).unwrap().version();
    assert_eq!(
        (
            versions("transfers"),
            versions("prices"),
            versions("balances")
        ),
        (4, 2, 1)
    );
    let transfers = reg.load("transfers").unwrap();
    assert_eq!(
        transfers.versions[1].changes,
        vec!["widened amount int -> decimal(38,2)", "added memo string"]
    );
    assert_eq!(
        transfers.versions[3].changes,
        vec!["widened id int -> bigint"]
    );

    // Each day's Parquet has the version it was merged with.
    let s1 = parquet_schema(&root.join("transfers/date=2026-11-01"));
    assert_eq!(col_type(&s1, "amount"), DataType::Int32);
    assert_eq!(col_type(&s1, "block_time"), DataType::Date32);
    assert!(s1.iter().all(|(n, _)| n != "memo"));
    let s4 = parquet_schema(&root.join("transfers/date=2026-11-04"));
    assert_eq!(col_type(&s4, "id"), DataType::Int64);
    assert_eq!(col_type(&s4, "amount"), DataType::Decimal128(38, 2));
    assert!(matches!(
        col_type(&s4, "block_time"),
        DataType::Timestamp(_, _)
    ));
    // `fee` stopped coming on day 4; the column stays, null.
    assert_eq!(col_type(&s4, "fee"), DataType::Int32);
    let p3 = parquet_schema(&root.join("prices/date=2026-11-03"));
    assert_eq!(col_type(&p3, "volume"), DataType::Int64);

    // Quarantine holds exactly the bad rows, each with file, line, reason.
    let q = root.join("_quarantine/transfers/date=2026-11-02");
    let lines: Vec<serde_json::Value> = std::fs::read_dir(&q)
        .unwrap()
        .flat_map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        lines.len() as u64,
        summary.counts[&DumpSummary::key("transfers", day(2))].bad
    );
    assert!(lines.iter().all(|l| l["line"].as_u64().unwrap() > 1000));
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("fields, the header has")));
    assert!(reasons.iter().any(|r| r.contains("is not a decimal")));
    assert!(reasons.iter().any(|r| r.contains("invalid UTF-8")));
    assert!(lines[0]["file"].as_str().unwrap().contains(".tar.gz!"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_archives_twice_load_once() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config(tmp.path(), "");
    let summary =
        partner::write_partner_dumps(&tmp.path().join("dumps"), &day_one(2, 3, 200, false))
            .unwrap();
    let dir = vec![tmp.path().join("dumps")];
    let first = run(&c, &dir, None).await;
    assert!(first
        .archives
        .iter()
        .all(|a| a.action == ArchiveAction::Loaded));
    assert_eq!(table(&first, "transfers", day(1)).rows_written, 600);
    // New names of new sizes are hashed while extracted: same digest.
    for a in &first.archives {
        assert_eq!(
            a.sha256,
            archive::sha256_file(&a.path).unwrap(),
            "{}",
            a.name
        );
    }
    let root = c.batch_root().unwrap();
    let data = |root: &Path| {
        tree(root)
            .into_iter()
            .filter(|(n, _)| !n.starts_with("_ingest/runs"))
            .collect::<Vec<_>>()
    };
    let before = data(&root);
    let second = run(&c, &dir, None).await;
    assert_eq!(second.archives.len(), summary.archives.len());
    assert!(second
        .archives
        .iter()
        .all(|a| a.action == ArchiveAction::Unchanged));
    assert!(second.tables.is_empty());
    assert_eq!(data(&root), before);
    // The same bytes re-sent under a new name are not loaded again.
    let resent = tmp.path().join("resent_2026-11-01.tar.gz");
    std::fs::copy(&summary.archives[0], &resent).unwrap();
    let third = run(&c, std::slice::from_ref(&resent), None).await;
    assert_eq!(third.archives[0].action, ArchiveAction::Unchanged);
    assert!(third.archives[0]
        .reason
        .as_ref()
        .unwrap()
        .contains("partner_2026-11-01_0000.tar.gz"));
    assert_eq!(data(&root), before);
    // A batch root from before the size index: it is rebuilt, and the
    // re-sent bytes are still recognized.
    std::fs::remove_dir_all(root.join("_ingest/sizes")).unwrap();
    let again = tmp.path().join("again_2026-11-01.tar.gz");
    std::fs::copy(&summary.archives[1], &again).unwrap();
    let fourth = run(&c, std::slice::from_ref(&again), None).await;
    assert_eq!(fourth.archives[0].action, ArchiveAction::Unchanged);
    assert!(root.join("_ingest/sizes/.complete").is_file());
    assert_eq!(data(&root), before);
    // A rebuild cut short (no `.complete`, a size missing) is done again.
    let size = std::fs::metadata(&summary.archives[2]).unwrap().len();
    std::fs::remove_file(root.join(format!("_ingest/sizes/{size}"))).unwrap();
    std::fs::remove_file(root.join("_ingest/sizes/.complete")).unwrap();
    let thrice = tmp.path().join("thrice_2026-11-01.tar.gz");
    std::fs::copy(&summary.archives[2], &thrice).unwrap();
    let fifth = run(&c, std::slice::from_ref(&thrice), None).await;
    assert_eq!(fifth.archives[0].action, ArchiveAction::Unchanged);
    assert!(root.join(format!("_ingest/sizes/{size}")).is_file());
    assert_eq!(data(&root), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_under_two_names_in_one_run_load_once() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config(tmp.path(), "");
    let summary =
        partner::write_partner_dumps(&tmp.path().join("dumps"), &day_one(5, 1, 200, false))
            .unwrap();
    let copy = tmp.path().join("dumps/copy_2026-11-01.tar.gz");
    std::fs::copy(&summary.archives[0], &copy).unwrap();
    let r = run(&c, &[tmp.path().join("dumps")], None).await;
    let actions: Vec<_> = r
        .archives
        .iter()
        .map(|a| (a.name.as_str(), a.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("copy_2026-11-01.tar.gz", ArchiveAction::Loaded),
            ("partner_2026-11-01_0000.tar.gz", ArchiveAction::Unchanged)
        ]
    );
    assert!(r.archives[1]
        .reason
        .as_ref()
        .unwrap()
        .contains("copy_2026-11-01.tar.gz"));
    assert_eq!(r.archives[0].sha256, r.archives[1].sha256);
    assert_eq!(table(&r, "transfers", day(1)).rows_written, 200);

    // A second input of a known name in one run is refused by name.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let same_name = other.join("copy_2026-11-01.tar.gz");
    std::fs::copy(&summary.archives[0], &same_name).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let c2 = config(fresh.path(), "");
    let r = run(&c2, &[copy.clone(), same_name], None).await;
    assert_eq!(r.archives[0].action, ArchiveAction::Loaded);
    assert_eq!(r.archives[1].action, ArchiveAction::Rejected);
    let reason = r.archives[1].reason.clone().unwrap();
    assert!(reason.contains("already in this run"), "{reason}");
    assert_eq!(table(&r, "transfers", day(1)).rows_written, 200);

    // When the first of two copies does not load, the report says the
    // second did not either.
    let fresh = tempfile::tempdir().unwrap();
    let c3 = config(fresh.path(), "");
    let r = run(&c3, &[tmp.path().join("dumps")], Some(day(2))).await;
    assert_eq!(r.archives[0].action, ArchiveAction::OtherDay);
    let reason = r.archives[1].reason.clone().unwrap();
    assert!(reason.contains("did not load"), "{reason}");
    assert!(r.tables.is_empty());
}

#[test]
fn a_file_that_changes_size_while_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let summary =
        partner::write_partner_dumps(&tmp.path().join("dumps"), &day_one(6, 1, 50, false)).unwrap();
    let mut input = archive::input(&summary.archives[0]).unwrap();
    let limits = archive::Limits::from_config(&config(tmp.path(), "").ingest);
    let mut entries = 0;
    let mut visit = |_: archive::EntryMeta, r: &mut dyn Read| {
        entries += 1;
        io::copy(r, &mut io::sink())
            .map(|_| ())
            .map_err(|e| Error::io("entry", e))
    };
    let whole = archive::for_each_entry(&input, limits, true, &mut visit).unwrap();
    assert_eq!(
        whole.sha256.unwrap(),
        archive::sha256_file(&input.path).unwrap()
    );
    // Listed shorter than it is read: it grew since (still being written).
    input.size -= 1;
    let err = archive::for_each_entry(&input, limits, true, &mut visit).unwrap_err();
    assert!(
        err.to_string().contains("changed while being read"),
        "{err}"
    );
    // Also when its sha256 was taken before (no hashing on the way).
    let err = archive::for_each_entry(&input, limits, false, &mut visit).unwrap_err();
    assert!(
        err.to_string().contains("changed while being read"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_recompressed_at_another_gzip_level_loads_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let params = day_one(4, 1, 3_000, true);
    let fast = partner::write_partner_dumps(&tmp.path().join("fast"), &params).unwrap();
    let best = partner::write_partner_dumps(&tmp.path().join("best"), &params).unwrap();
    partner::recompress(&best.archives[0], 9).unwrap();
    let inflate = |p: &Path| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(p).unwrap()),
            &mut out,
        )
        .unwrap();
        out
    };
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&best.archives[0]) < size(&fast.archives[0]));
    assert_eq!(inflate(&best.archives[0]), inflate(&fast.archives[0]));
    let mut loaded = Vec::new();
    for which in ["fast", "best"] {
        let c = config(&tmp.path().join(format!("project-{which}")), "");
        let r = run(&c, &[tmp.path().join(which)], None).await;
        assert_eq!(r.archives[0].action, ArchiveAction::Loaded, "{which}");
        loaded.push(
            ["transfers", "prices", "balances"]
                .map(|t| {
                    let t = table(&r, t, day(1));
                    (t.rows_read, t.rows_written, t.rows_quarantined)
                })
                .to_vec(),
        );
    }
    assert_eq!(loaded[0], loaded[1]);
    assert_eq!(loaded[0][0].0, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_archive_is_refused_or_replaces_its_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dumps = tmp.path().join("dumps");
    let params = day_one(3, 2, 100, false);
    partner::write_partner_dumps(&dumps, &params).unwrap();
    let c = config(tmp.path(), "");
    run(&c, std::slice::from_ref(&dumps), None).await;
    // Same names, other content (more rows).
    partner::write_partner_dumps(
        &dumps,
        &DumpParams {
            seed: 4,
            rows_per_batch: 150,
            ..params
        },
    )
    .unwrap();
    let r = run(&c, std::slice::from_ref(&dumps), None).await;
    assert!(r
        .archives
        .iter()
        .all(|a| a.action == ArchiveAction::Rejected));
    assert!(r.archives[0]
        .reason
        .as_ref()
        .unwrap()
        .contains("on_changed_archive"));
    assert_eq!(r.exit_code(), 1);

    let c = config(tmp.path(), "[ingest]\non_changed_archive = \"replace\"\n");
    let r = run(&c, std::slice::from_ref(&dumps), None).await;
    assert!(r
        .archives
        .iter()
        .all(|a| a.action == ArchiveAction::Loaded && a.replaced));
    let root = c.batch_root().unwrap();
    let batch = BatchLayer::open(&c).unwrap();
    let mut rows = 0;
    for m in batch.list_day("transfers", day(1)).await.unwrap() {
        rows += batch.files.row_count(&m).await.unwrap();
    }
    // 2 archives x 150, the 2 x 100 of the old versions gone.
    assert_eq!(rows, 300);
    assert!(root.join("transfers/date=2026-11-01/_SUCCESS").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_rejected_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let c = config(&project, "[ingest]\nmax_line = \"1 MiB\"\n");
    let hostile = tmp.path().join("hostile");
    let archives = partner::hostile_archives(
        &hostile,
        &HostileParams {
            bomb_bytes: 20 << 20,
            huge_line_bytes: 2 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(archives.len() >= 12);
    let outside_before = tree(tmp.path());
    for (path, why) in &archives {
        let r = run(&c, std::slice::from_ref(path), None).await;
        assert_eq!(r.archives.len(), 1);
        let a = &r.archives[0];
        assert_eq!(
            a.action,
            ArchiveAction::Rejected,
            "{}: {a:?}",
            path.display()
        );
        let reason = a.reason.as_deref().unwrap();
        assert!(reason.contains(why), "{}: {reason}", path.display());
        assert!(r.tables.is_empty(), "{:?}", r.tables);
        assert_eq!(r.exit_code(), 1);
    }
    let root = c.batch_root().unwrap();
    // Only ingest's bookkeeping: no table, no quarantine, no manifest entry.
    let written: Vec<String> = tree(&root)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| {
            !n.starts_with("_ingest/runs/") && n != "_ingest/lock" && n != "_ingest/sizes/.complete"
        })
        .collect();
    assert!(written.is_empty(), "{written:?}");
    // Outside the batch root, nothing changed.
    let outside_after: Vec<(String, u64)> = tree(tmp.path())
        .into_iter()
        .filter(|(n, _)| !n.starts_with("project/batch/"))
        .collect();
    assert_eq!(outside_after, outside_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_files_and_an_incompatible_change_under_the_fail_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config(tmp.path(), "[ingest.table_policy]\nledger = \"fail\"\n");
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ledger_2026-11-01_1.csv"),
        "Id,When\n1,2026-11-01\n2,\n",
    )
    .unwrap();
    let gz = dir.join("notes_2026-11-01_1.ndjson.gz");
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        e.write_all(b"{\"k\":\"a\",\"n\":1}\n{\"k\":\"b\",\"n\":2.5}\n")
            .unwrap();
        e.finish().unwrap();
    }
    // A header alone: zero rows, and no types to learn from.
    std::fs::write(dir.join("empty_2026-11-01_1.csv"), "a,b\n").unwrap();
    let r = run(&c, std::slice::from_ref(&dir), None).await;
    assert_eq!(r.exit_code(), 0, "{r:#?}");
    assert_eq!(table(&r, "ledger", day(1)).rows_written, 2);
    assert_eq!(table(&r, "empty", day(1)).rows_read, 0);
    let reg = Registry::new(crate::catalog::meta::MetaDir::local(
        &c.batch_root().unwrap(),
    ));
    assert_eq!(reg.load("empty").unwrap().version(), 0);
    let notes = Registry::new(crate::catalog::meta::MetaDir::local(
        &c.batch_root().unwrap(),
    ))
    .load("notes")
    .unwrap();
    assert_eq!(notes.columns()[1].ty, types::ColType::Decimal(1));

    std::fs::write(dir.join("ledger_2026-11-01_2.csv"), "id,when\n3,17\n").unwrap();
    let r = run(&c, &[dir.join("ledger_2026-11-01_2.csv")], None).await;
    let t = table(&r, "ledger", day(1));
    assert_eq!(t.state, TableState::Failed);
    assert!(t.error.as_ref().unwrap().contains("policy: fail"), "{t:?}");
    assert_eq!(r.archives[0].action, ArchiveAction::Partial);
    // The earlier rows stay committed.
    let batch = BatchLayer::open(&c).unwrap();
    assert!(batch.is_committed("ledger", day(1)).await.unwrap());
    let files = batch.list_day("ledger", day(1)).await.unwrap();
    assert_eq!(files.len(), 1);
}

#[tokio::test]
async fn ndjson_amounts_load_to_the_last_digit() {
    // JSON numbers past 2^53 (wei) and in exponent form: read as their
    // text, never through an f64.
    let tmp = tempfile::tempdir().unwrap();
    let c = config(tmp.path(), "");
    let file = tmp.path().join("wei_2026-11-01_1.ndjson");
    std::fs::write(
        &file,
        concat!(
            "{\"id\":1,\"amount\":123456789012345678901234.5678}\n",
            "{\"id\":2,\"amount\":1000000000000000000000}\n",
            "{\"id\":3,\"amount\":1.5e3}\n",
            "{\"id\":4,\"amount\":-2E-4}\n",
        ),
    )
    .unwrap();
    let r = run(&c, &[file], None).await;
    assert_eq!(r.exit_code(), 0, "{r:#?}");
    let schema = Registry::new(crate::catalog::meta::MetaDir::local(
        &c.batch_root().unwrap(),
    ))
    .load("wei")
    .unwrap();
    assert_eq!(schema.columns()[1].ty, types::ColType::Decimal(4));
    let dir = c.batch_root().unwrap().join("wei/date=2026-11-01");
    let mut got = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "parquet") {
            continue;
        }
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let amount = batch
                .column_by_name("amount")
                .unwrap()
                .as_primitive::<arrow::datatypes::Decimal128Type>();
            got.extend(amount.values().iter().copied());
        }
    }
    let scale = 10_000i128;
    let want = [
        123_456_789_012_345_678_901_234 * scale + 5678,
        10i128.pow(21) * scale,
        1500 * scale,
        -2,
    ];
    assert_eq!(got, want);
}

/// Readers of the Parquet files in `dir`.
fn parquet_files(dir: &Path) -> Vec<parquet::file::reader::SerializedFileReader<std::fs::File>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "parquet") {
            let file = std::fs::File::open(&path).unwrap();
            out.push(parquet::file::reader::SerializedFileReader::new(file).unwrap());
        }
    }
    out
}

/// (column, dictionary-encoded, compression) of every column chunk of the
/// Parquet files in `dir`.
fn chunk_encodings(dir: &Path) -> Vec<(String, bool, parquet::basic::Compression)> {
    use parquet::file::reader::FileReader;
    let mut out = Vec::new();
    for reader in parquet_files(dir) {
        for rg in reader.metadata().row_groups() {
            for c in rg.columns() {
                let dict = c
                    .encodings()
                    .any(|e| e == parquet::basic::Encoding::RLE_DICTIONARY);
                out.push((c.column_path().string(), dict, c.compression()));
            }
        }
    }
    out
}

/// Uncompressed sizes of the data pages of `column` in the Parquet files
/// of `dir`.
fn data_page_sizes(dir: &Path, column: &str) -> Vec<usize> {
    use parquet::file::reader::FileReader;
    let mut out = Vec::new();
    for reader in parquet_files(dir) {
        for g in 0..reader.num_row_groups() {
            let rg = reader.get_row_group(g).unwrap();
            let i = (0..rg.num_columns())
                .find(|&i| rg.metadata().column(i).column_path().string() == column)
                .unwrap();
            let mut pages = rg.get_column_page_reader(i).unwrap();
            while let Some(page) = pages.get_next_page().unwrap() {
                if !matches!(page.page_type(), parquet::basic::PageType::DICTIONARY_PAGE) {
                    out.push(page.buffer().len());
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_columns_skip_the_dictionary_and_compression_is_configurable() {
    let tmp = tempfile::tempdir().unwrap();
    let dumps = tmp.path().join("dumps");
    // 8,000 addresses of 42 characters: more than one ingest data page.
    let summary = partner::write_partner_dumps(&dumps, &day_one(9, 1, 8000, false)).unwrap();
    let mut read_back = Vec::new();
    for (name, extra, codec) in [
        ("zstd", "", "ZSTD"),
        ("none", "[ingest]\ncompression = \"none\"\n", "UNCOMPRESSED"),
        ("lz4", "[ingest]\ncompression = \"lz4\"\n", "LZ4_RAW"),
        ("snappy", "[ingest]\ncompression = \"snappy\"\n", "SNAPPY"),
    ] {
        let root = tmp.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        let c = config(&root, extra);
        let r = run(&c, &summary.archives, None).await;
        assert_eq!(r.exit_code(), 0, "{r:#?}");
        let dir = c.batch_root().unwrap().join("transfers/date=2026-11-01");
        let chunks = chunk_encodings(&dir);
        assert!(!chunks.is_empty());
        // Pages of ~INGEST_PAGE_BYTES (the limit is checked after each
        // mini-batch of values), not Parquet's default 1 MiB.
        let pages = data_page_sizes(&dir, "from_addr");
        assert!(pages.len() >= 2, "{name}: {pages:?}");
        if name == "none" {
            let limit = crate::catalog::store::INGEST_PAGE_BYTES;
            assert!(pages.iter().all(|&p| p <= limit + (64 << 10)), "{pages:?}");
        }
        for (column, dict, compression) in &chunks {
            // Addresses and ids are all distinct; the day's date is one value.
            let want_dict = match column.as_str() {
                "from_addr" | "to_addr" | "id" => false,
                "block_time" => true,
                _ => *dict,
            };
            assert_eq!(*dict, want_dict, "{column} in {name}");
            assert!(
                compression.to_string().starts_with(codec),
                "{column}: {compression}"
            );
        }
        let batch = BatchLayer::open(&c).unwrap();
        let mut rows = Vec::new();
        for f in batch.list_day("transfers", day(1)).await.unwrap() {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(c.batch_root().unwrap().join(f.location.as_ref())).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            rows.extend(reader.map(|b| b.unwrap()));
        }
        read_back.push(rows);
        // A later file with a new column rewrites the day's parts to the new
        // schema: still with the configured compression.
        let extra = root.join("transfers_2026-11-01_9.csv");
        std::fs::write(&extra, "id,note_extra\n1,x\n").unwrap();
        let r = run(&c, &[extra], None).await;
        assert_eq!(r.exit_code(), 0, "{r:#?}");
        let chunks = chunk_encodings(&dir);
        // Every row group, old parts included, now has the new column.
        let groups = chunks.iter().filter(|(col, _, _)| col == "id").count();
        let widened = chunks
            .iter()
            .filter(|(col, _, _)| col == "note_extra")
            .count();
        assert!(
            groups >= 2 && widened == groups,
            "{groups} row groups, {widened} widened"
        );
        for (column, _, compression) in chunks {
            assert!(
                compression.to_string().starts_with(codec),
                "{column}: {compression}"
            );
        }
    }
    assert_eq!(
        read_back[0].iter().map(|b| b.num_rows()).sum::<usize>(),
        8000
    );
    for other in &read_back[1..] {
        assert_eq!(&read_back[0], other);
    }
}

/// Waits up to 10 s for `budget` to have `free` places.
fn wait_free(budget: &inflight::Budget, free: usize) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < until {
        if budget.free() == free {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

#[test]
fn a_reader_waiting_for_input_holds_no_place_in_the_budget() {
    // One place: the extractor could not send the next chunk if the reader
    // kept the place of the chunk it has read while it waits.
    let budget = inflight::Budget::new(1);
    let (tx, rx) = channel();
    let (spent_tx, _spent_rx) = channel();
    tx.send(Msg::Data(vec![7u8; 10], budget.acquire())).unwrap();
    let read = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut r = ChannelReader::new(rx, &spent_tx);
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).map(|_| buf)
        });
        assert!(
            wait_free(&budget, 1),
            "the reader kept its place while waiting"
        );
        tx.send(Msg::Data(vec![8u8; 5], budget.acquire())).unwrap();
        tx.send(Msg::End).unwrap();
        reader.join().unwrap().unwrap()
    });
    assert_eq!(read, [vec![7u8; 10], vec![8u8; 5]].concat());
    assert_eq!(budget.free(), 1);
}

#[test]
fn chunks_left_to_a_stopped_worker_give_their_places_back() {
    let budget = inflight::Budget::new(3);
    let (tx, rx) = channel();
    let (spent_tx, spent_rx) = channel();
    tx.send(Msg::Data(vec![0u8; CHUNK], budget.acquire()))
        .unwrap();
    tx.send(Msg::Data(vec![0u8; CHUNK], budget.acquire()))
        .unwrap();
    tx.send(Msg::End).unwrap();
    // A worker that stopped reading drains the entry: places and buffers
    // come back.
    let mut r = ChannelReader::new(rx, &spent_tx);
    r.drain();
    assert_eq!(budget.free(), 3);
    assert_eq!(spent_rx.try_iter().count(), 2);
    // A worker gone with chunks queued: dropping its receiver frees them.
    let (tx, rx) = channel();
    tx.send(Msg::Data(Vec::new(), budget.acquire())).unwrap();
    assert_eq!(budget.free(), 2);
    drop(rx);
    assert_eq!(budget.free(), 3);
}
