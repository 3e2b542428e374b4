//! The scheduler as real processes against the real PostgreSQL: ticks in
//! DAG order with retries, the catch-up incident, a killed scheduler, two
//! schedulers at once, SLA alerts to a real local HTTP server. Days pass in
//! seconds through the simulated clock (`LEDGERFLOW_CLOCK`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledgerflow_testkit::cluster::Cluster;
use ledgerflow_testkit::project::{stderr, stdout, Background, TestProject};
use ledgerflow_testkit::serving::{assert_dumps_eq, Serving};
use serde_json::Value;

use crate::project;

/// A clock reading `start` now and running `rate` times faster.
fn clock(start: &str, rate: f64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    format!("{start}@{now}x{rate}")
}

/// A PostgreSQL project with a fast-polling scheduler and `jobs` appended.
async fn scheduled(jobs: &str) -> TestProject {
    let p = project(Serving::Postgres).await;
    p.append_config(&format!(
        "[scheduler]\npoll_interval = \"100ms\"\ngrace_period = \"5s\"\nlease = \"2s\"\n\n{jobs}"
    ));
    p
}

/// A project serving into `cluster` (schema `public`) with a fast-polling
/// scheduler (grace 2 s) and `jobs`.
async fn on_cluster(cluster: &Cluster, jobs: &str) -> TestProject {
    let p = project(Serving::Sqlite).await;
    p.set_config(
        "url = \"sqlite://serving.db\"",
        &format!("url = \"{}\"", cluster.url()),
    );
    p.append_config(&format!(
        "[scheduler]\npoll_interval = \"100ms\"\ngrace_period = \"2s\"\nlease = \"2s\"\n\n{jobs}"
    ));
    p
}

fn runs(p: &TestProject) -> Vec<Value> {
    let out = p.ok(&["runs", "--json", "--limit", "1000"]);
    let mut rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    rows.reverse(); // oldest first
    rows
}

fn of<'a>(rows: &'a [Value], model: &str, day: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["model"] == model && r["day"] == day)
        .collect()
}

/// (attempt, state) of ledger rows, in their order.
fn attempt_states<'a>(rows: &[&'a Value]) -> Vec<(i64, &'a str)> {
    rows.iter()
        .map(|r| (r["attempt"].as_i64().unwrap(), r["state"].as_str().unwrap()))
        .collect()
}

fn status(p: &TestProject, clock: &str) -> Value {
    let out = p
        .cmd(&["status", "--json"])
        .env("LEDGERFLOW_CLOCK", clock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// A scheduler in the background (simulated clock); its log goes to a file.
struct Scheduler;

impl Scheduler {
    fn start(p: &TestProject, args: &[&str], clock: &str, env: &[(&str, &str)]) -> Background {
        let env: Vec<(&str, &str)> = [("LEDGERFLOW_CLOCK", clock)]
            .into_iter()
            .chain(env.iter().copied())
            .collect();
        Background::start(p, &[&["schedule"], args].concat(), &env)
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A clean project with the same generated data that ran `days` with
/// `run`: what the scheduled tables must equal.
async fn clean_run(days: &[&str], from: &str, to: &str, scale: &str) -> Vec<Vec<String>> {
    let c = project(Serving::Postgres).await;
    c.generate(from, to, scale, &[], &[]);
    for d in days {
        c.ok(&["run", "--date", d]);
    }
    let dump = c.db.dump_metrics().await;
    c.drop_db().await;
    dump
}

#[tokio::test]
async fn ticks_run_in_dag_order_with_retries_in_the_ledger() {
    let p = scheduled(
        "[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"\nretries = 3\nretry_delay = \"1h\"\nretry_max_delay = \"2h\"",
    )
    .await;
    // A model downstream of block_daily_metrics: it must wait for it, and be
    // skipped while it fails.
    std::fs::write(
        p.path().join("models/daily_summary.sql"),
        "-- key: day\n-- grain: day\n-- write: replace_day\n-- depends_on: block_daily_metrics\n\
         SELECT $day AS day, count(*) AS blocks FROM blocks WHERE \"timestamp\" >= $start AND \"timestamp\" < $end\n",
    )
    .unwrap();
    p.generate("2026-11-01", "2026-11-05", "0.005", &[], &[]);
    // Half a simulated day per real second: ticks at 00:00 come every 2 s.
    let clock = clock("2026-11-03T00:00:00Z", 43_200.0);
    let s = Scheduler::start(
        &p,
        &[],
        &clock,
        &[("LEDGERFLOW_FAILPOINT", "model_error:block_daily_metrics:2")],
    );
    wait_until(
        "days 2026-11-02 and 2026-11-03 done",
        Duration::from_secs(60),
        || {
            let rows = runs(&p);
            ["2026-11-02", "2026-11-03"].iter().all(|d| {
                of(&rows, "daily_summary", d)
                    .iter()
                    .any(|r| r["state"] == "success")
            })
        },
    );
    s.stop();

    let rows = runs(&p);
    assert!(
        rows.iter().all(|r| r["trigger"] == "schedule:daily"),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .all(|r| r["state"] != "running" && r["state"] != "pending"),
        "{rows:#?}"
    );
    // Attempts 1 and 2 of block_daily_metrics failed (injected), 3 succeeded.
    let daily = of(&rows, "block_daily_metrics", "2026-11-02");
    assert_eq!(
        attempt_states(&daily),
        vec![(1, "failed"), (2, "failed"), (3, "success")],
        "{daily:#?}"
    );
    assert!(daily[0]["error"]
        .as_str()
        .unwrap()
        .contains("injected failure"));
    // Its dependent was skipped (upstream failed) on attempts 1 and 2, and
    // ran after it on attempt 3.
    let dep = of(&rows, "daily_summary", "2026-11-02");
    assert_eq!(
        attempt_states(&dep),
        vec![(1, "skipped"), (2, "skipped"), (3, "success")],
        "{dep:#?}"
    );
    assert!(dep[0]["error"]
        .as_str()
        .unwrap()
        .contains("upstream model `block_daily_metrics` failed"));
    let at = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    // DAG order: the dependent reads its upstream's output as soon as it
    // exists, and is written only after its upstream is.
    assert!(
        at(&dep[2]["started_at"]) >= at(&daily[2]["started_at"])
            && at(&dep[2]["finished_at"]) >= at(&daily[2]["finished_at"]),
        "DAG order"
    );
    // Models that succeeded on attempt 1 are not re-run by the retries.
    for m in ["user_activity_agg", "realtime_dashboard"] {
        let r = of(&rows, m, "2026-11-02");
        assert_eq!(r.len(), 1, "{m}: {r:#?}");
        assert_eq!(r[0]["state"], "success");
    }
    // The next day's tick ran once, first time.
    for m in ["block_daily_metrics", "daily_summary", "user_activity_agg"] {
        let r = of(&rows, m, "2026-11-03");
        assert_eq!(r.len(), 1, "{m}: {r:#?}");
        assert_eq!(
            (r[0]["attempt"].as_i64(), r[0]["state"].as_str()),
            (Some(1), Some("success")),
            "{m}"
        );
    }
    // Only the days the ticks named ran.
    assert!(
        rows.iter()
            .all(|r| ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
                .contains(&r["day"].as_str().unwrap())),
        "{rows:#?}"
    );
    // And the tables equal plain runs of those days.
    let days: Vec<String> = {
        let mut d: Vec<String> = rows
            .iter()
            .filter(|r| r["model"] == "block_daily_metrics" && r["state"] == "success")
            .map(|r| r["day"].as_str().unwrap().to_owned())
            .collect();
        d.dedup();
        d
    };
    let days: Vec<&str> = days.iter().map(String::as_str).collect();
    let expected = clean_run(&days, "2026-11-01", "2026-11-05", "0.005").await;
    assert_dumps_eq(
        &p.db.dump_metrics().await,
        &expected,
        "scheduled vs plain runs",
    );
    p.drop_db().await;
}

/// The incident: catch-up on by mistake re-ran every missed day. Here the
/// scheduler is down for 10 intervals; without catch-up 1 interval runs,
/// with `max_catchup = 3` three do; no day is ever loaded twice.
/// A model error (a SQL bug) is permanent: the tick fails at once instead of
/// retrying the same mistake; a transient one (above) is retried.
#[tokio::test]
async fn a_permanent_failure_fails_the_tick_without_retries() {
    let p = scheduled(
        "[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"\nretries = 3\nretry_delay = \"1s\"\nretry_max_delay = \"1s\"",
    )
    .await;
    p.generate("2026-11-01", "2026-11-03", "0.005", &[], &[]);
    let clock = clock("2026-11-03T00:00:00Z", 3_600.0);
    let s = Scheduler::start(
        &p,
        &[],
        &clock,
        &[("LEDGERFLOW_FAILPOINT", "model_bug:block_daily_metrics:100")],
    );
    s.wait_log("attempt failed permanently", Duration::from_secs(60));
    // Seconds of simulated time pass for every real millisecond: retries
    // (1 s apart) would have happened by now.
    std::thread::sleep(Duration::from_millis(1500));
    s.stop();
    let rows = runs(&p);
    let daily = of(&rows, "block_daily_metrics", "2026-11-02");
    assert_eq!(attempt_states(&daily), vec![(1, "failed")], "{daily:#?}");
    let st = status(&p, &clock);
    let text = st.to_string();
    assert!(text.contains("injected failure"), "{text}");
    p.drop_db().await;
}

/// The clock jumps forward four days, back three, and forward again under
/// a running scheduler (`LEDGERFLOW_CLOCK=@file`): each tick's day runs once
/// (a tick once recorded is never due again, a jump back re-runs nothing),
/// and the tables equal plain runs of those days.
#[tokio::test]
async fn the_clock_jumping_forward_and_back_loads_no_day_twice() {
    let p = scheduled("[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"").await;
    p.generate("2026-11-01", "2026-11-09", "0.002", &[], &[]);
    let file = p.path().join("clock");
    // `rate` 60 runs the clock; a rate near zero holds it still, so a jump's
    // missed tick is planned before midnight comes, however slow the start.
    let set = |at: &str, rate: &str| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Written whole, then renamed: a reader never sees half a value.
        let tmp = p.path().join("clock.tmp");
        std::fs::write(&tmp, format!("{at}@{now}x{rate}")).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    const HELD: &str = "0.000001";
    let succeeded = |day: &str| {
        of(&runs(&p), "block_daily_metrics", day)
            .iter()
            .filter(|r| r["state"] == "success")
            .count()
    };
    set("2026-11-02T23:59:50Z", HELD);
    let spec = format!("@{}", file.display());
    let s = Scheduler::start(&p, &[], &spec, &[]);
    wait_until("the missed 11-02 tick", Duration::from_secs(60), || {
        succeeded("2026-11-01") == 1
    });
    set("2026-11-02T23:59:50Z", "60");
    wait_until("the 11-03 tick", Duration::from_secs(60), || {
        succeeded("2026-11-02") == 1
    });
    set("2026-11-06T23:59:50Z", HELD);
    wait_until(
        "the missed 11-06 tick after the jump",
        Duration::from_secs(60),
        || succeeded("2026-11-05") == 1,
    );
    set("2026-11-06T23:59:50Z", "60");
    wait_until(
        "the 11-07 tick after the jump",
        Duration::from_secs(60),
        || succeeded("2026-11-06") == 1,
    );
    // Back across three midnights already planned: nothing is due again.
    set("2026-11-03T23:59:50Z", "60");
    std::thread::sleep(Duration::from_secs(3));
    set("2026-11-07T23:59:50Z", "60");
    wait_until("the 11-08 tick", Duration::from_secs(60), || {
        succeeded("2026-11-07") == 1
    });
    std::thread::sleep(Duration::from_secs(1));
    s.stop();
    let rows = runs(&p);
    let mut ran: Vec<&str> = rows
        .iter()
        .filter(|r| r["model"] == "block_daily_metrics" && r["state"] == "success")
        .map(|r| r["day"].as_str().unwrap())
        .collect();
    ran.sort();
    // At start and after the jump forward, the latest tick missed is due
    // too (catch-up is off, so only that one); each day ran once.
    let expected = [
        "2026-11-01",
        "2026-11-02",
        "2026-11-05",
        "2026-11-06",
        "2026-11-07",
    ];
    assert_eq!(ran, expected, "{rows:#?}");
    let clean = clean_run(&expected, "2026-11-01", "2026-11-09", "0.002").await;
    assert_eq!(p.db.dump_metrics().await, clean);
    p.drop_db().await;
}

#[tokio::test]
async fn catchup_after_downtime_is_bounded_and_never_loads_a_day_twice() {
    let scale = "0.002";
    for (catchup, expect_days, gap_ticks) in [
        ("catchup = false", vec!["2026-11-01", "2026-11-11"], 9),
        (
            "catchup = true\nmax_catchup = 3",
            vec!["2026-11-01", "2026-11-09", "2026-11-10", "2026-11-11"],
            7,
        ),
    ] {
        let p = scheduled(&format!(
            "[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"\nsla = \"01:00\"\n{catchup}"
        ))
        .await;
        p.generate("2026-11-01", "2026-11-12", scale, &[], &[]);
        let once = |clock: &str| {
            let out = p
                .cmd(&["schedule", "--once"])
                .env("LEDGERFLOW_CLOCK", clock)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        };
        // Up on 11-02 (runs day 11-01), then down until 11-12.
        once(&clock("2026-11-02T00:00:30Z", 1.0));
        let later = clock("2026-11-12T00:00:30Z", 1.0);
        once(&later);
        // Started again at the same moment: nothing is due twice.
        once(&later);

        let rows = runs(&p);
        let mut days: Vec<&str> = rows
            .iter()
            .filter(|r| r["model"] == "block_daily_metrics")
            .map(|r| r["day"].as_str().unwrap())
            .collect();
        days.dedup();
        assert_eq!(days, expect_days, "{catchup}: {rows:#?}");
        // One run per (model, day), all successful: nothing loaded twice.
        assert_eq!(rows.len(), 3 * expect_days.len(), "{catchup}: {rows:#?}");
        assert!(rows.iter().all(|r| r["state"] == "success"));
        // status shows the gap that was not caught up, and no lag.
        let st = status(&p, &later);
        let job = &st["jobs"][0];
        assert_eq!(job["gaps"][0]["ticks"], gap_ticks, "{job:#}");
        assert_eq!(job["gaps"][0]["first_day"], "2026-11-02");
        assert_eq!(job["expected_day"], "2026-11-11");
        assert_eq!(job["models"][0]["lag_days"], 0);
        // The intervals that never started missed their SLA: one alert for
        // the outage, plus one per caught-up interval (run after its
        // deadline); the first and the latest ticks were on time.
        let misses = job["sla_misses"].as_array().unwrap();
        assert_eq!(misses.len(), expect_days.len() - 1, "{job:#}");
        let gap_alert = misses
            .iter()
            .find(|m| m["state"].as_str().unwrap().starts_with("missed"))
            .unwrap();
        let state = gap_alert["state"].as_str().unwrap();
        assert!(
            state.starts_with(&format!("missed: {gap_ticks} interval")),
            "{job:#}"
        );
        // The tables hold exactly a clean run of those days.
        let expected = clean_run(&expect_days, "2026-11-01", "2026-11-12", scale).await;
        assert_dumps_eq(&p.db.dump_metrics().await, &expected, catchup);
        p.drop_db().await;
    }
}

#[tokio::test]
async fn a_killed_scheduler_run_is_abandoned_and_run_again() {
    let p = scheduled("[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"").await;
    p.generate("2026-11-01", "2026-11-01", "0.005", &[], &[]);
    let clock = clock("2026-11-02T00:00:30Z", 1.0);
    let mut s = Scheduler::start(
        &p,
        &[],
        &clock,
        &[("LEDGERFLOW_FAILPOINT", "before_commit:user_activity_agg")],
    );
    s.wait_log("failpoint before_commit reached", Duration::from_secs(60));
    s.signal(libc::SIGKILL);
    s.child.wait().unwrap();
    let before = runs(&p);
    assert!(
        of(&before, "user_activity_agg", "2026-11-01")[0]["state"] == "running",
        "{before:#?}"
    );

    let out = p
        .cmd(&["schedule", "--once"])
        .env("LEDGERFLOW_CLOCK", &clock)
        .env("LEDGERFLOW_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("due again"), "{}", stderr(&out));
    let rows = runs(&p);
    let ua = of(&rows, "user_activity_agg", "2026-11-01");
    assert_eq!(ua.first().unwrap()["state"], "failed");
    assert!(
        ua[0]["error"].as_str().unwrap().contains("abandoned"),
        "{ua:#?}"
    );
    assert_eq!(ua.last().unwrap()["state"], "success");
    assert!(
        rows.iter()
            .all(|r| r["state"] != "running" && r["state"] != "pending"),
        "{rows:#?}"
    );
    let expected = clean_run(&["2026-11-01"], "2026-11-01", "2026-11-01", "0.005").await;
    assert_dumps_eq(&p.db.dump_metrics().await, &expected, "after the rerun");
    p.drop_db().await;
}

#[tokio::test]
async fn one_scheduler_leads_and_a_standby_takes_over_when_it_dies() {
    let p = scheduled("[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"").await;
    p.generate("2026-11-01", "2026-11-01", "0.002", &[], &[]);
    let clock = clock("2026-11-02T00:00:30Z", 1.0);
    let mut leader = Scheduler::start(&p, &[], &clock, &[]);
    leader.wait_log("leading the schedule", Duration::from_secs(30));
    // A second one refuses, naming the leader.
    let out = p
        .cmd(&["schedule"])
        .env("LEDGERFLOW_CLOCK", &clock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("another scheduler leads") && err.contains(&format!(":{}", leader.child.id())),
        "{err}"
    );
    assert!(status(&p, &clock)["leader"]
        .as_str()
        .unwrap()
        .contains(&leader.child.id().to_string()));
    // A standby waits, and takes over within the lease once the leader dies.
    let standby = Scheduler::start(&p, &["--standby"], &clock, &[]);
    standby.wait_log("standing by", Duration::from_secs(30));
    leader.signal(libc::SIGKILL);
    leader.child.wait().unwrap();
    let killed = Instant::now();
    standby.wait_log("leading the schedule", Duration::from_secs(10));
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(4), "standby took {took:?}");
    assert!(status(&p, &clock)["leader"]
        .as_str()
        .unwrap()
        .contains(&standby.child.id().to_string()));
    standby.stop();
    p.drop_db().await;
}

/// A local HTTP server recording POST bodies.
pub(crate) fn webhook_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).to_string());
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

#[tokio::test]
async fn an_sla_miss_posts_one_alert_even_across_a_restart() {
    let (url, bodies) = webhook_server();
    // No data for the day: every attempt fails, so the tick is not done by
    // its deadline, 10 minutes after the 00:00 tick.
    let p = scheduled(&format!(
        "[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"\nsla = \"00:10\"\nretries = 100\nretry_delay = \"1m\"\nretry_max_delay = \"2m\"\nwebhook = \"{url}\""
    ))
    .await;
    // A simulated minute per real second: the deadline passes after ~1 s.
    let clock = clock("2026-11-02T00:09:00Z", 60.0);
    let s = Scheduler::start(&p, &[], &clock, &[]);
    wait_until("the alert", Duration::from_secs(30), || {
        !bodies.lock().unwrap().is_empty()
    });
    s.wait_log("SLA missed", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    s.stop();
    let again = Scheduler::start(&p, &[], &clock, &[]);
    again.wait_log("leading the schedule", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    again.stop();

    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    let alert: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(alert["job"], "daily");
    assert_eq!(alert["day"], "2026-11-01");
    assert_eq!(alert["deadline"], "2026-11-02T00:10:00Z");
    assert!(
        ["due", "running"].contains(&alert["state"].as_str().unwrap()),
        "{alert}"
    );
    let st = status(&p, &clock);
    let misses = st["jobs"][0]["sla_misses"].as_array().unwrap();
    assert_eq!(misses.len(), 1, "{st:#}");
    assert!(misses[0]["delivered_at"].is_string(), "{st:#}");
    // The failing tick waits for its next attempt, and status says so.
    let due = st["jobs"][0]["due"].as_array().unwrap();
    assert_eq!(due.len(), 1, "{st:#}");
    assert!(due[0]["attempts"].as_u64().unwrap() >= 1, "{st:#}");
    p.drop_db().await;
}

#[tokio::test]
async fn bad_jobs_are_refused_naming_the_job_and_key() {
    let p = project(Serving::Sqlite).await;
    let base = std::fs::read_to_string(p.config_path()).unwrap();
    for (job, want) in [
        ("cron = \"61 * * * *\"", "cron"),
        ("cron = \"0 0 * * *\"\ntimezone = \"Mars/Base\"", "timezone"),
        ("cron = \"0 0 * * *\"\nsla = \"soon\"", "sla"),
        ("cron = \"0 0 * * *\"\ncatchup = \"yes\"", "catchup"),
    ] {
        std::fs::write(
            p.config_path(),
            format!("{base}\n[[jobs]]\nname = \"nightly\"\n{job}\n"),
        )
        .unwrap();
        let out = p.expect(&["schedule", "--once"], 2);
        let err = stderr(&out);
        assert!(err.contains(want), "{job}: {err}");
        if want != "catchup" {
            assert!(err.contains("nightly"), "{job}: {err}");
        }
    }
    std::fs::write(
        p.config_path(),
        format!("{base}\n[[jobs]]\nname = \"nightly\"\ncron = \"0 0 * * *\"\nmodels = [\"no_such_model\"]\n"),
    )
    .unwrap();
    let err = stderr(&p.expect(&["schedule", "--once"], 2));
    assert!(
        err.contains("nightly") && err.contains("no_such_model"),
        "{err}"
    );
    // A dependency cycle is refused before anything runs.
    std::fs::write(
        p.config_path(),
        format!("{base}\n[[jobs]]\nname = \"nightly\"\ncron = \"0 0 * * *\"\n"),
    )
    .unwrap();
    for (a, b) in [("a", "b"), ("b", "a")] {
        std::fs::write(
            p.path().join(format!("models/{a}.sql")),
            format!("-- key: day\n-- grain: day\n-- write: replace_day\n-- depends_on: {b}\nSELECT $day AS day\n"),
        )
        .unwrap();
    }
    let err = stderr(&p.expect(&["schedule", "--once"], 2));
    assert!(
        err.contains("cycle") && (err.contains("`a`") || err.contains("`b`")),
        "{err}"
    );
    p.drop_db().await;
}

#[tokio::test]
async fn the_scheduler_outlives_its_database_and_resumes() {
    let cluster = Cluster::start();
    let p = on_cluster(
        &cluster,
        "[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"\nretries = 50\nretry_delay = \"1h\"\nretry_max_delay = \"1h\"",
    )
    .await;
    p.generate("2026-11-01", "2026-11-08", "0.002", &[], &[]);
    // Half a day per real second: a tick every 2 s.
    let clock = clock("2026-11-02T00:00:30Z", 43_200.0);
    let mut s = Scheduler::start(&p, &[], &clock, &[]);
    let done = |day: &str| {
        runs(&p).iter().any(|r| {
            r["model"] == "block_daily_metrics" && r["day"] == day && r["state"] == "success"
        })
    };
    wait_until("the first tick", Duration::from_secs(60), || {
        done("2026-11-01")
    });

    cluster.down();
    s.wait_log("lost the scheduler lock", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "the scheduler exited:\n{}",
        s.log()
    );
    assert!(
        s.log().contains("cannot reach the serving database"),
        "{}",
        s.log()
    );

    cluster.up();
    let start = Instant::now();
    while s.log().matches("leading the schedule").count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never led again:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ticks that came due meanwhile: the latest runs (catch-up is off).
    wait_until("a tick after the outage", Duration::from_secs(60), || {
        runs(&p).iter().any(|r| {
            r["model"] == "block_daily_metrics"
                && r["state"] == "success"
                && r["day"].as_str().unwrap() > "2026-11-02"
        })
    });
    s.stop();
    let rows = runs(&p);
    assert!(
        rows.iter()
            .all(|r| r["state"] != "running" && r["state"] != "pending"),
        "{rows:#?}"
    );
    p.drop_db().await;
}

#[tokio::test]
async fn sigterm_cancels_a_run_past_the_grace_period_and_rolls_it_back() {
    let p = scheduled("[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"").await;
    p.set_config("grace_period = \"5s\"", "grace_period = \"1s\"");
    p.generate("2026-11-01", "2026-11-01", "0.005", &[], &[]);
    let clock = clock("2026-11-02T00:00:30Z", 1.0);
    // The COPY of user_activity_agg hangs (a failpoint): only cancellation ends it.
    let mut s = Scheduler::start(
        &p,
        &[],
        &clock,
        &[("LEDGERFLOW_FAILPOINT", "during_copy:user_activity_agg")],
    );
    s.wait_log("failpoint during_copy reached", Duration::from_secs(60));
    let stopped = Instant::now();
    s.signal(libc::SIGTERM);
    let code = s.child.wait().unwrap().code();
    assert_eq!(code, Some(0), "{}", s.log());
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "took {:?}",
        stopped.elapsed()
    );
    assert!(s.log().contains("grace period over"), "{}", s.log());
    // Nothing half-written, nothing left "running".
    assert_eq!(p.db.count("user_activity_agg").await, 0);
    let rows = runs(&p);
    let ua = of(&rows, "user_activity_agg", "2026-11-01");
    assert_eq!(ua.len(), 1);
    assert_eq!(ua[0]["state"], "failed");
    assert!(
        ua[0]["error"].as_str().unwrap().contains("cancelled"),
        "{ua:#?}"
    );
    // The tick is due again: the next scheduler completes it.
    let out = p
        .cmd(&["schedule", "--once"])
        .env("LEDGERFLOW_CLOCK", &clock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = runs(&p);
    assert_eq!(
        of(&rows, "user_activity_agg", "2026-11-01").last().unwrap()["state"],
        "success"
    );
    p.drop_db().await;
}

#[tokio::test]
async fn max_active_runs_keeps_caught_up_days_one_at_a_time() {
    let p = scheduled(
        "[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"\ncatchup = true\nmax_catchup = 3\nmax_active_runs = 1",
    )
    .await;
    p.generate("2026-11-01", "2026-11-05", "0.002", &[], &[]);
    let once = |clock: &str| {
        let out = p
            .cmd(&["schedule", "--once"])
            .env("LEDGERFLOW_CLOCK", clock)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    once(&clock("2026-11-02T00:00:30Z", 1.0));
    once(&clock("2026-11-05T00:00:30Z", 1.0));
    // Three days were due at once; each ran alone: the spans of the days'
    // ledger rows do not overlap.
    let rows = runs(&p);
    let at = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let mut spans: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = Vec::new();
    for day in ["2026-11-02", "2026-11-03", "2026-11-04"] {
        let day_rows: Vec<&Value> = rows.iter().filter(|r| r["day"] == day).collect();
        assert_eq!(day_rows.len(), 3, "{day}: {rows:#?}");
        let start = day_rows.iter().map(|r| at(&r["started_at"])).min().unwrap();
        let end = day_rows
            .iter()
            .map(|r| at(&r["finished_at"]))
            .max()
            .unwrap();
        spans.push((start, end));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping runs: {spans:?}");
    }
    p.drop_db().await;
}

/// `max_active_runs = 2`: caught-up days overlap, and each model's days
/// are still written oldest first. The oldest day's `user_activity_agg` is
/// held just before its write: the next day runs meanwhile but does not
/// write that model before it; the tables equal plain runs.
#[tokio::test]
async fn caught_up_days_in_flight_write_each_model_oldest_first() {
    let p = scheduled(
        "[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"\ncatchup = true\nmax_catchup = 3\nmax_active_runs = 2",
    )
    .await;
    p.generate("2026-11-01", "2026-11-05", "0.002", &[], &[]);
    let once = |clock: &str, env: &[(&str, &str)]| {
        let out = p
            .cmd(&["schedule", "--once"])
            .env("LEDGERFLOW_CLOCK", clock)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    once(&clock("2026-11-02T00:00:30Z", 1.0), &[]);
    let release = p.path().join("release");
    let released = std::thread::spawn({
        let release = release.clone();
        move || {
            std::thread::sleep(Duration::from_secs(4));
            std::fs::write(release, "").unwrap();
        }
    });
    once(
        &clock("2026-11-05T00:00:30Z", 1.0),
        &[
            ("LEDGERFLOW_FAILPOINT", "before_write:user_activity_agg@1"),
            ("LEDGERFLOW_FAILPOINT_RELEASE", release.to_str().unwrap()),
        ],
    );
    released.join().unwrap();
    let rows = runs(&p);
    let at = |r: &Value, k: &str| {
        r[k].as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let days = ["2026-11-02", "2026-11-03", "2026-11-04"];
    for model in [
        "user_activity_agg",
        "block_daily_metrics",
        "realtime_dashboard",
    ] {
        let commits: Vec<_> = days
            .iter()
            .map(|day| {
                let ok = of(&rows, model, day);
                assert_eq!(ok.len(), 1, "{model} {day}: {rows:#?}");
                assert_eq!(ok[0]["state"], "success", "{rows:#?}");
                at(ok[0], "finished_at")
            })
            .collect();
        assert!(
            commits.windows(2).all(|w| w[0] <= w[1]),
            "{model} written out of day order: {commits:?}"
        );
    }
    // The held day's successor started before the held day was over.
    let span = |day: &str| {
        let r: Vec<&Value> = rows.iter().filter(|r| r["day"] == day).collect();
        (
            r.iter().map(|r| at(r, "started_at")).min().unwrap(),
            r.iter().map(|r| at(r, "finished_at")).max().unwrap(),
        )
    };
    let (first, second) = (span(days[0]), span(days[1]));
    assert!(second.0 < first.1, "no overlap: {first:?} {second:?}");
    let mut all = vec!["2026-11-01"];
    all.extend(days);
    let clean = clean_run(&all, "2026-11-01", "2026-11-05", "0.002").await;
    assert_eq!(p.db.dump_metrics().await, clean);
    p.drop_db().await;
}

/// Two hosts (network namespaces, each with its own link to the database
/// server) run the scheduler against one PostgreSQL. One leads, one stands
/// by. The leader's link is cut: the server drops its session (keepalives),
/// the standby leads within seconds and the ticks go on; the old leader,
/// healed, stands by. Every day ran exactly once and the tables equal
/// plain runs.
#[tokio::test]
async fn two_hosts_one_leader_across_a_network_partition() {
    use ledgerflow_testkit::netns::Host;
    let (a, b) = (Host::create(1), Host::create(2));
    let cluster = Cluster::start_listening(&[&a.gateway, &b.gateway]);
    let p = on_cluster(&cluster, "[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"").await;
    p.generate("2026-11-01", "2026-11-30", "0.002", &[], &[]);
    // A tick every 4 real seconds.
    let clock = clock("2026-11-02T00:00:30Z", 21_600.0);
    let start = |host: &Host| {
        let url = cluster.url_at(&host.gateway);
        Background::start_via(
            &p,
            &host.exec(),
            &["schedule", "--standby"],
            &[
                ("LEDGERFLOW_CLOCK", clock.as_str()),
                ("LEDGERFLOW_SERVING_URL", &url),
            ],
        )
    };
    let sa = start(&a);
    sa.wait_log("leading the schedule", Duration::from_secs(30));
    let sb = start(&b);
    sb.wait_log("standing by", Duration::from_secs(30));
    let done = || {
        let rows = runs(&p);
        rows.iter()
            .filter(|r| r["model"] == "block_daily_metrics" && r["state"] == "success")
            .count()
    };
    wait_until("two ticks on host a", Duration::from_secs(60), || {
        done() >= 2
    });

    a.cut();
    let cut = Instant::now();
    sb.wait_log("leading the schedule", Duration::from_secs(30));
    let took = cut.elapsed();
    let before = done();
    wait_until("two more ticks on host b", Duration::from_secs(60), || {
        done() >= before + 2
    });
    a.heal();
    // Healed, host a no longer leads: its session is gone.
    sa.wait_log("lost the scheduler lock", Duration::from_secs(60));
    let after_heal = done();
    wait_until("a tick after healing", Duration::from_secs(60), || {
        done() > after_heal
    });
    sb.stop();
    sa.stop();
    assert!(took < Duration::from_secs(20), "standby took {took:?}");

    let rows = runs(&p);
    assert!(
        rows.iter()
            .all(|r| r["state"] != "running" && r["state"] != "pending"),
        "{rows:#?}"
    );
    let mut days: Vec<&str> = rows
        .iter()
        .filter(|r| r["model"] == "block_daily_metrics" && r["state"] == "success")
        .map(|r| r["day"].as_str().unwrap())
        .collect();
    let ran = days.len();
    days.sort();
    days.dedup();
    assert_eq!(days.len(), ran, "a day succeeded twice: {rows:#?}");
    let clean = clean_run(&days, "2026-11-01", "2026-11-30", "0.002").await;
    let check = ledgerflow_testkit::serving::TestDb::Postgres {
        url: cluster.url(),
        schema: "public".into(),
        client: ledgerflow_testkit::serving::pg_connect(&cluster.url()).await,
    };
    assert_dumps_eq(&check.dump_metrics().await, &clean, "two hosts");
}

/// A speed day run before the next day's blocks exist counts the fork at
/// its end (the best knowledge then). When the next day's chain orphans
/// it, the next tick's recheck (`recheck_days = 1`) sees the day's inputs
/// changed and re-runs it: the day then equals the reference.
#[tokio::test]
async fn a_recheck_repairs_a_day_the_next_days_blocks_changed() {
    use ledgerflow::generate::chain::GenParams;
    use ledgerflow_testkit::reference;
    let p = scheduled("[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"\nrecheck_days = 1").await;
    let flags = ["--reorg-rate", "0.05", "--boundary-forks"];
    p.generate("2026-11-05", "2026-11-05", "0.01", &["2026-11-05"], &flags);
    // Two simulated hours a second: the next tick comes 12 s after the first.
    let clock = clock("2026-11-06T00:00:30Z", 7_200.0);
    let s = Scheduler::start(&p, &[], &clock, &[]);
    let successes = |day: &str| -> Vec<Value> {
        runs(&p)
            .into_iter()
            .filter(|r| {
                r["model"] == "block_daily_metrics" && r["day"] == day && r["state"] == "success"
            })
            .collect()
    };
    wait_until("the 11-05 tick", Duration::from_secs(60), || {
        !successes("2026-11-05").is_empty()
    });
    let params = GenParams {
        seed: 42,
        scale: 0.01,
        reorg_rate: 0.05,
        boundary_forks: true,
        ..Default::default()
    };
    let day = "2026-11-05".parse().unwrap();
    let (blocks, txs) = ledgerflow_testkit::reference::generated_day(&params, day, true);
    let expected = reference::block_daily_metrics(day, &blocks, &txs).unwrap();
    let first = p.db.block_daily_metrics().await;
    assert_ne!(
        first[0].block_count, expected.block_count,
        "alone, the day counts the fork at its end"
    );
    // The next day lands; its tick rechecks 11-05.
    p.generate("2026-11-06", "2026-11-06", "0.01", &["2026-11-06"], &flags);
    wait_until("the recheck of 11-05", Duration::from_secs(60), || {
        successes("2026-11-05")
            .iter()
            .any(|r| r["trigger"] == "schedule:daily:recheck")
    });
    s.stop();
    let daily = p.db.block_daily_metrics().await;
    ledgerflow_testkit::serving::assert_daily_eq(&daily[0], &expected);
    p.drop_db().await;
}

/// After a successful tick the scheduler reconciles the day: a day held in
/// both layers has its layers compared, recorded in the check history.
#[tokio::test]
async fn a_tick_reconciles_its_day_across_layers() {
    let p = scheduled("[[jobs]]\nname = \"daily\"\ncron = \"0 0 * * *\"").await;
    p.generate(
        "2026-11-01",
        "2026-11-01",
        "0.002",
        &["2026-11-01"],
        &["--also-batch"],
    );
    let out = p
        .cmd(&["schedule", "--once"])
        .env("LEDGERFLOW_CLOCK", clock("2026-11-02T00:00:30Z", 1.0))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = p.ok(&["checks", "--json", "--model", "_inputs"]);
    let results: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_eq!(
        (
            results[0]["check"].as_str(),
            results[0]["day"].as_str(),
            results[0]["status"].as_str()
        ),
        (Some("layers_agree"), Some("2026-11-01"), Some("pass"))
    );
    p.drop_db().await;
}
