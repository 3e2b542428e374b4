//! Open ledger rows of processes that died, here or on another host: a row
//! whose heartbeat expired is closed by any invocation; a live run's
//! heartbeat keeps it open however long it takes; a PID reused by another
//! process does not keep a dead run's row alive. And the ledger's listing
//! piped into a reader that stops early ends as a Unix tool does.

use std::time::Duration;

use ledgerflow_testkit::project::{stdout, Paused, TestProject};
use serde_json::Value;

use crate::{project, SINKS};

const DAY: &str = "2026-11-05";

fn runs(p: &TestProject) -> Vec<Value> {
    serde_json::from_str(&stdout(&p.ok(&["runs", "--json", "--limit", "100"]))).unwrap()
}

fn row<'a>(runs: &'a [Value], model: &str) -> &'a Value {
    runs.iter().find(|r| r["model"] == model).unwrap()
}

fn short_lease(p: &TestProject) {
    p.append_config("[ledger]\nlease = \"2s\"");
}

#[tokio::test]
async fn rows_of_dead_processes_close_on_any_host_live_ones_stay_open() {
    // This test process's identity with another start time: its PID now
    // belongs to a process that is not the one that wrote the row.
    let me = ledgerflow::ledger::this_process();
    let mut parts: Vec<&str> = me.split(':').collect();
    parts[2] = "1";
    let reused = parts.join(":");
    for serving in SINKS {
        let p = project(serving).await;
        short_lease(&p);
        p.generate(DAY, DAY, "0.01", &[], &[]);
        p.ok(&["run", "--date", DAY, "--model", "block_daily_metrics"]);
        for (model, owner, heartbeat) in [
            // Died on another host: its heartbeat stopped long ago.
            (
                "gone_elsewhere",
                "other-host:41:7:cafef00d:1",
                "2000-01-01T00:00:00.000000Z",
            ),
            // Alive on another host (a heartbeat from the future, for a
            // test that must not depend on timing).
            (
                "alive_elsewhere",
                "other-host:42:7:cafef00d:1",
                "2999-01-01T00:00:00.000000Z",
            ),
            // Died here; its PID was reused. Heartbeat still fresh.
            ("pid_reused", reused.as_str(), "2999-01-01T00:00:00.000000Z"),
        ] {
            p.db.execute(&format!(
                "INSERT INTO ledgerflow_runs (model, day, state, attempt, \"trigger\", owner, heartbeat_at) \
                 VALUES ('{model}', '{DAY}', 'running', 1, 'run', '{owner}', '{heartbeat}')"
            ))
            .await;
        }
        // Any invocation that opens the runner closes what is abandoned.
        p.ok(&["run", "--date", DAY, "--model", "block_daily_metrics"]);
        let rows = runs(&p);
        let gone = row(&rows, "gone_elsewhere");
        assert_eq!(gone["state"], "failed", "{gone}");
        assert!(
            gone["error"].as_str().unwrap().contains("no heartbeat"),
            "{gone}"
        );
        assert_eq!(row(&rows, "alive_elsewhere")["state"], "running");
        let reused_row = row(&rows, "pid_reused");
        assert_eq!(reused_row["state"], "failed", "{reused_row}");
        assert!(reused_row["error"].as_str().unwrap().contains("is gone"));
        p.drop_db().await;
    }
}

#[tokio::test]
async fn a_live_run_outlasting_its_lease_keeps_its_row() {
    for serving in SINKS {
        let p = project(serving).await;
        short_lease(&p);
        p.generate(DAY, "2026-11-06", "0.01", &[], &[]);
        let paused = Paused::start(
            &p,
            &["run", "--date", DAY, "--model", "block_daily_metrics"],
            "before_write:block_daily_metrics",
            &[],
        );
        // Three leases pass while it is paused; another invocation then
        // looks for abandoned rows.
        std::thread::sleep(Duration::from_secs(6));
        p.ok(&[
            "run",
            "--date",
            "2026-11-06",
            "--model",
            "block_daily_metrics",
        ]);
        let row = runs(&p)
            .into_iter()
            .find(|r| r["day"] == DAY && r["model"] == "block_daily_metrics")
            .unwrap();
        assert_eq!(row["state"], "running", "{row}");
        let out = paused.release();
        assert!(out.status.success());
        let done = runs(&p)
            .into_iter()
            .find(|r| r["day"] == DAY && r["model"] == "block_daily_metrics")
            .unwrap();
        assert_eq!(done["state"], "success", "{done}");
        p.drop_db().await;
    }
}

/// `ledgerflow runs | head`: the listing meets a closed pipe and ends by
/// SIGPIPE, not with a panic and its backtrace on the terminal.
#[tokio::test]
async fn the_listing_into_a_closed_pipe_ends_by_sigpipe_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let p = project(ledgerflow_testkit::serving::Serving::Sqlite).await;
    p.generate(DAY, DAY, "0.005", &[], &[]);
    p.ok(&["run", "--date", DAY]);
    // The reading end is closed before the listing starts: its first
    // write fails, whatever the timing.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = p
        .cmd(&["runs"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = ledgerflow_testkit::project::stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    const SIGPIPE: i32 = 13;
    assert_eq!(out.status.signal(), Some(SIGPIPE), "{:?} {err}", out.status);
}
