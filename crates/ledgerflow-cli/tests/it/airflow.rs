//! `examples/airflow/ledgerflow_dag.py` under a real Airflow 3
//! (`airflow dags test`, SQLite metadata DB) running the real binary
//! against a generated project: a day that loads -> task success; the
//! speed layer down under `on_unavailable = "skip"` (exit 99) -> task
//! skipped; a failing model -> task failed.

use std::path::{Path, PathBuf};
use std::process::Command;

use ledgerflow_testkit::project::TestProject;
use ledgerflow_testkit::serving::Serving;

use crate::project;

/// `LEDGERFLOW_AIRFLOW`, else the venv `.ci/run` installs it into.
fn airflow() -> PathBuf {
    std::env::var_os("LEDGERFLOW_AIRFLOW")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/ledgerflow-airflow/bin/airflow")
        })
}

fn airflow_cmd(home: &Path, p: &TestProject) -> Command {
    let dags = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/airflow");
    let mut cmd = Command::new(airflow());
    cmd.env("AIRFLOW_HOME", home)
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("AIRFLOW__CORE__DAGS_FOLDER", &dags)
        .env("LEDGERFLOW_PROJECT", p.path())
        .env("LEDGERFLOW_BIN", crate::bin())
        .env("LEDGERFLOW_RETRIES", "0")
        .env_remove("LEDGERFLOW_CONFIG");
    cmd
}

/// The final state Airflow gave task `run_models` for `day`.
fn task_state(home: &Path, p: &TestProject, day: &str) -> (String, String) {
    let out = airflow_cmd(home, p)
        .args(["dags", "test", "ledgerflow_daily", day])
        .output()
        .expect("airflow (.ci/run installs apache-airflow 3.1 into ~/.cache/ledgerflow-airflow)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `dags test` of Airflow 3.1.8 fails after a successful run of a DAG
    // with a deadline (it compares the run's unset end date); the task's
    // own state is what Airflow recorded for it.
    let state = log
        .lines()
        .rev()
        .filter_map(|l| l.split("new_state=").nth(1))
        .find_map(|s| s.split_whitespace().next())
        .unwrap_or("none")
        .to_string();
    (state, log)
}

#[tokio::test]
async fn the_airflow_dag_runs_the_binary_for_real() {
    let p = project(Serving::Sqlite).await;
    p.generate("2026-11-01", "2026-11-01", "0.002", &[], &[]);
    let home = tempfile::tempdir().unwrap();
    let out = airflow_cmd(home.path(), &p)
        .args(["db", "migrate"])
        .output()
        .expect("airflow");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (state, log) = task_state(home.path(), &p, "2026-11-01");
    assert_eq!(state, "success", "{log}");
    assert_eq!(
        p.db.block_daily_metrics().await.len(),
        1,
        "the day was loaded"
    );

    // The speed layer down (nothing listens) and a day only it could have.
    p.set_config(
        "url = \"data/landing\"",
        "url = \"mongodb://127.0.0.1:1/?directConnection=true\"\non_unavailable = \"skip\"\nmongodb = { connect_timeout = \"1s\" }",
    );
    let (state, log) = task_state(home.path(), &p, "2026-11-05");
    assert_eq!(state, "skipped", "{log}");

    std::fs::write(
        p.path().join("models/broken.sql"),
        "-- key: day\n-- grain: day\n-- write: replace_day\nSELECT no_such_column AS day FROM blocks",
    )
    .unwrap();
    let (state, log) = task_state(home.path(), &p, "2026-11-01");
    assert_eq!(state, "failed", "{log}");
    p.drop_db().await;
}
