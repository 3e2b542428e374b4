//! `serve` over a real ledger: the grid's states (success, failed, stale,
//! missing), a cell's attempts, the filter, escaping, `/metrics` parsed by
//! a Prometheus text parser equal to the ledger, and the token rules.

use std::time::Duration;

use ledgerflow_testkit::project::{stdout, Background, TestProject};
use ledgerflow_testkit::serving::Serving;

use crate::project;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// (status, body) of a GET.
pub(crate) fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// Starts `serve` on a free port; returns it with its base URL once it
/// answers.
pub(crate) fn start(p: &TestProject, args: &[&str], env: &[(&str, &str)]) -> (Background, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let s = Background::start(p, &[&["serve", "--listen", &addr][..], args].concat(), env);
    s.wait_log("serving http://", Duration::from_secs(30));
    (s, format!("http://{addr}"))
}

/// The `data-state` of (model, day) in a grid page.
fn state(html: &str, model: &str, day: &str) -> String {
    let needle = format!("data-model=\"{model}\" data-day=\"{day}\" data-state=\"");
    let at = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no cell {model} {day}"))
        + needle.len();
    html[at..].split('"').next().unwrap().to_string()
}

/// Three days backfilled; then day 2's block_daily_metrics fails, and a
/// model whose error quotes a `<script>` fails on day 1.
async fn three_days_with_failures() -> TestProject {
    let p = project(Serving::Sqlite).await;
    p.generate("2026-11-01", "2026-11-03", "0.002", &[], &[]);
    p.ok(&["backfill", "--from", "2026-11-01", "--to", "2026-11-03"]);
    p.cmd(&["run", "--date", "2026-11-02", "--force"])
        .env("LEDGERFLOW_FAILPOINT", "model_bug:block_daily_metrics:1")
        .output()
        .unwrap();
    std::fs::write(
        p.path().join("models/xss_probe.sql"),
        "-- key: day\n-- grain: day\n-- write: replace_day\nSELECT \"<script>alert(1)</script>\" AS day FROM blocks",
    )
    .unwrap();
    p.expect(&["run", "--date", "2026-11-01", "--model", "xss_probe"], 1);
    p
}

/// [`three_days_with_failures`], and day 3's inputs changed after its
/// success.
#[tokio::test]
async fn the_page_shows_each_cell_and_metrics_equal_the_ledger() {
    let p = three_days_with_failures().await;
    p.ok(&[
        "generate",
        "--from",
        "2026-11-03",
        "--to",
        "2026-11-03",
        "--scale",
        "0.002",
        "--seed",
        "7",
        "--speed-days",
        "1999-01-01",
    ]);

    let (s, base) = start(&p, &[], &[]);
    let (code, html) = get(&format!("{base}/?month=2026-11"), &[]);
    assert_eq!(code, 200);
    for (model, day, want) in [
        ("block_daily_metrics", "2026-11-01", "success"),
        ("block_daily_metrics", "2026-11-02", "failed"),
        ("block_daily_metrics", "2026-11-03", "stale"),
        ("user_activity_agg", "2026-11-02", "success"),
        ("user_activity_agg", "2026-11-03", "stale"),
        ("user_activity_agg", "2026-11-04", "missing"),
        ("xss_probe", "2026-11-01", "failed"),
    ] {
        assert_eq!(state(&html, model, day), want, "{model} {day}");
    }
    assert!(html.contains("data-count=\"failed\">failed: 2<"), "{html}");
    assert!(!html.contains("<script>alert(1)"), "unescaped: {html}");

    let (_, failed) = get(&format!("{base}/?month=2026-11&filter=failed"), &[]);
    assert!(failed.contains("data-model=\"block_daily_metrics\""));
    assert!(
        !failed.contains("data-model=\"user_activity_agg\""),
        "{failed}"
    );

    let (code, cell) = get(&format!("{base}/cell/xss_probe/2026-11-01"), &[]);
    assert_eq!(code, 200);
    assert!(
        cell.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{cell}"
    );
    assert!(!cell.contains("<script>alert(1)"), "{cell}");
    let (_, cell) = get(&format!("{base}/cell/block_daily_metrics/2026-11-02"), &[]);
    assert!(cell.contains("injected failure"), "{cell}");
    for page in ["runs", "checks", "schedule", "realtime", "ingest"] {
        let (code, body) = get(&format!("{base}/{page}"), &[]);
        assert_eq!(code, 200, "/{page}: {body}");
    }

    let (code, text) = get(&format!("{base}/metrics"), &[]);
    assert_eq!(code, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    let runs: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&p.ok(&["runs", "--json", "--limit", "1000"]))).unwrap();
    for (model, state) in [
        ("block_daily_metrics", "success"),
        ("block_daily_metrics", "failed"),
        ("user_activity_agg", "success"),
    ] {
        let n = runs
            .iter()
            .filter(|r| r["model"] == model && r["state"] == state)
            .count();
        assert_eq!(
            value(
                "ledgerflow_runs_total",
                &[("model", model), ("state", state)]
            ),
            n as f64,
            "{model} {state}"
        );
    }
    let rows: i64 = runs
        .iter()
        .filter(|r| r["model"] == "user_activity_agg" && r["state"] == "success")
        .map(|r| r["rows_written"].as_i64().unwrap())
        .sum();
    assert_eq!(
        value(
            "ledgerflow_rows_written_total",
            &[("model", "user_activity_agg")]
        ),
        rows as f64
    );
    assert!(text.contains("ledgerflow_build_info{version="), "{text}");
    assert!(!text.contains("2026-11-0"), "no day labels: {text}");
    s.stop();
    p.drop_db().await;
}

/// Beyond loopback a token is required (exit 2 without one); with one,
/// a request without it gets 401 (a browser is sent to /login), with it
/// (bearer or the login cookie) 200. No page shows the serving URL's
/// password.
#[tokio::test]
async fn binding_beyond_loopback_needs_a_token() {
    let p = project(Serving::Sqlite).await;
    p.generate("2026-11-01", "2026-11-01", "0.002", &[], &[]);
    p.ok(&["run", "--date", "2026-11-01"]);
    let out = p.expect(
        &["serve", "--listen", &format!("0.0.0.0:{}", free_port())],
        2,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a token"),
        "{out:?}"
    );

    let (s, base) = start(&p, &[], &[("LEDGERFLOW_SERVE_TOKEN", "s3cret-token")]);
    assert_eq!(get(&format!("{base}/"), &[]).0, 401);
    assert_eq!(get(&format!("{base}/metrics"), &[]).0, 401);
    assert_eq!(get(&format!("{base}/"), &[("accept", "text/html")]).0, 303);
    assert_eq!(
        get(&format!("{base}/"), &[("authorization", "Bearer wrong")]).0,
        401
    );
    let (code, _) = get(
        &format!("{base}/"),
        &[("authorization", "Bearer s3cret-token")],
    );
    assert_eq!(code, 200);
    let (code, login) = get(&format!("{base}/login"), &[]);
    assert_eq!((code, login.contains("<form")), (200, true));
    let mut resp = agent()
        .post(&format!("{base}/login"))
        .content_type("application/x-www-form-urlencoded")
        .send("token=s3cret-token")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let _ = resp.body_mut().read_to_string();
    assert!(cookie.starts_with("ledgerflow_token="), "{cookie}");
    let (code, _) = get(&format!("{base}/runs"), &[("cookie", &cookie)]);
    assert_eq!(code, 200);
    s.stop();
    p.drop_db().await;
}

/// The grid in Debian's chromium, driven by playwright-core
/// (`tests/browser/grid.mjs`): states and colours, a failed cell's
/// error, the filter, escaping, and an update without a reload. Writes
/// the grid's screenshot into the project.
#[tokio::test]
async fn the_grid_in_a_real_browser() {
    let p = three_days_with_failures().await;
    let (s, base) = start(&p, &[], &[]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let shot = p.path().join("grid.png");
    let out = std::process::Command::new("node")
        .current_dir(&dir)
        .arg("grid.mjs")
        .arg(&base)
        .arg(crate::bin())
        .arg(p.config_path())
        .arg(&shot)
        .output()
        .expect("node (tests/browser: npm ci; chromium from Debian's packages)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && log.contains("OK"), "{log}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    if let Ok(keep) = std::env::var("LEDGERFLOW_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    s.stop();
    p.drop_db().await;
}

/// The ingest page: each archive and its partitions, the latest reports'
/// rows per table (the quarantined count equal to the ingest report's),
/// and the schema registry.
#[tokio::test]
async fn the_ingest_page_shows_archives_reports_and_schemas() {
    let p = project(Serving::Sqlite).await;
    let dir = crate::ingest::dumps(&p, "2026-11-01", "1300");
    let out = p.ok(&["ingest", "--json", &crate::ingest::archive(&dir, 0)]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let quarantined = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "transfers")
        .unwrap()["rows_quarantined"]
        .as_u64()
        .unwrap();
    assert!(quarantined > 0);
    let (s, base) = start(&p, &[], &[]);
    let (code, html) = get(&format!("{base}/ingest"), &[]);
    assert_eq!(code, 200, "{html}");
    assert!(html.contains("partner_2026-11-01_0000.tar.gz"), "{html}");
    assert!(
        html.contains(&format!("data-quarantined=\"transfers\">{quarantined}<")),
        "{html}"
    );
    assert!(html.contains("<h3>transfers</h3>"), "{html}");
    s.stop();
    p.drop_db().await;
}
