//! The pages: server-rendered HTML, every text from data escaped. Each
//! page's changing part is its `<main>`, which the page's script swaps for
//! a fresh copy every few seconds.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use chrono::{Datelike, NaiveDate};
use ledgerflow::catalog::meta::MetaDir;
use ledgerflow::checks::CheckFilter;
use ledgerflow::dashboard::{grid, metrics, CellState};
use ledgerflow::ingest::manifest::Manifest;
use ledgerflow::ingest::registry::Registry;
use ledgerflow::ledger::{RunFilter, RunRecord, RunState};

use super::App;

/// Ingest reports the ingest page shows.
const RECENT_INGESTS: usize = 20;

/// How often the page refreshes its main part, in ms.
const REFRESH_MS: u32 = 5000;

/// Escapes text for HTML element content and quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, main: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ledgerflow · {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px system-ui, sans-serif; margin: 0; color: #222; }}
nav {{ background: #1f2937; padding: 8px 16px; }}
nav a {{ color: #e5e7eb; margin-right: 16px; text-decoration: none; }}
main {{ padding: 16px; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }}
table.grid td {{ width: 22px; height: 22px; padding: 0; text-align: center; }}
table.grid td a {{ display: block; width: 100%; height: 100%; }}
.success {{ background: #22c55e; }} .stale {{ background: #eab308; }} .failed {{ background: #ef4444; }}
.running {{ background: #3b82f6; }} .skipped {{ background: #a3a3a3; }} .missing {{ background: #f3f4f6; }}
.future {{ background: #fff; }} .hidden {{ background: #fff; opacity: .2; }}
.legend span {{ display: inline-block; padding: 2px 8px; margin-right: 6px; }}
pre {{ white-space: pre-wrap; max-width: 900px; }}
</style></head>
<body><nav><a href="/">Partitions</a><a href="/runs">Runs</a><a href="/checks">Checks</a><a href="/schedule">Schedule</a><a href="/realtime">Realtime</a><a href="/ingest">Ingest</a><a href="/metrics">Metrics</a></nav>
<main id="main">{main}</main>
<script>
// Refreshes the main part without reloading the page (the page works
// without this script too).
setInterval(async () => {{
  try {{
    const r = await fetch(location.href, {{ headers: {{ accept: "text/html" }} }});
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const fresh = doc.getElementById("main");
    if (fresh) document.getElementById("main").replaceWith(fresh);
  }} catch (e) {{}}
}}, {REFRESH_MS});
</script></body></html>"#
    ))
}

fn error_page(e: impl std::fmt::Display) -> Response {
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        page("error", &format!("<p>{}</p>", esc(&e.to_string()))),
    )
        .into_response()
}

#[derive(serde::Deserialize, Default)]
pub struct GridQuery {
    /// `YYYY-MM`.
    month: Option<String>,
    /// `failed` or `missing`.
    filter: Option<String>,
}

/// The month to show: the asked one, else the newest day in the ledger's,
/// else today's.
async fn month_of(app: &App, asked: Option<&str>) -> ledgerflow::Result<NaiveDate> {
    if let Some(m) =
        asked.and_then(|m| NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").ok())
    {
        return Ok(m);
    }
    let newest = app
        .runner
        .sink
        .ledger_list(&RunFilter {
            limit: Some(200),
            ..Default::default()
        })
        .await?
        .iter()
        .filter(|r| !r.model.starts_with("ingest:"))
        .map(|r| r.day)
        .max()
        .unwrap_or_else(ledgerflow::day::today);
    Ok(newest.with_day(1).expect("day 1 exists"))
}

pub async fn grid(State(app): State<Arc<App>>, Query(q): Query<GridQuery>) -> Response {
    let first = match month_of(&app, q.month.as_deref()).await {
        Ok(m) => m,
        Err(e) => return error_page(e),
    };
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .expect("a next month");
    let last = next.pred_opt().expect("a day before");
    let g = match grid::grid(&app.runner, first, last, true).await {
        Ok(g) => g,
        Err(e) => return error_page(e),
    };
    let filter = q
        .filter
        .as_deref()
        .and_then(|f| CellState::ALL.into_iter().find(|s| s.as_str() == f));
    let month = first.format("%Y-%m").to_string();
    let prev = first
        .checked_sub_months(chrono::Months::new(1))
        .expect("a previous month")
        .format("%Y-%m");
    let mut html = format!(
        "<h1>Partitions, {month}</h1><p><a href=\"/?month={prev}\">&larr; {prev}</a> · <a href=\"/?month={}\">{} &rarr;</a> · show: <a href=\"/?month={month}\">all</a> <a id=\"filter-failed\" href=\"/?month={month}&amp;filter=failed\">failed</a> <a id=\"filter-missing\" href=\"/?month={month}&amp;filter=missing\">missing</a> <a href=\"/?month={month}&amp;filter=stale\">stale</a></p>",
        next.format("%Y-%m"),
        next.format("%Y-%m")
    );
    html.push_str("<p class=\"legend\">");
    for s in CellState::ALL {
        let n = g.counts.get(&s).copied().unwrap_or(0);
        let _ = write!(
            html,
            "<span class=\"{0}\" data-count=\"{0}\">{0}: {n}</span>",
            s.as_str()
        );
    }
    html.push_str("</p><table class=\"grid\"><tr><th>model</th>");
    for d in &g.days {
        let _ = write!(html, "<th title=\"{d}\">{}</th>", d.day());
    }
    html.push_str("</tr>");
    for (model, cells) in &g.rows {
        if filter.is_some_and(|f| !cells.iter().any(|c| c.state == f)) {
            continue;
        }
        let _ = write!(html, "<tr><th>{}</th>", esc(model));
        for (cell, day) in cells.iter().zip(&g.days) {
            let shown = filter.is_none_or(|f| f == cell.state);
            let class = if shown { cell.state.as_str() } else { "hidden" };
            let title = match &cell.error {
                Some(e) => format!("{model} {day}: {} ({e})", cell.state.as_str()),
                None => format!("{model} {day}: {}", cell.state.as_str()),
            };
            let _ = write!(
                html,
                "<td class=\"{class}\" data-model=\"{m}\" data-day=\"{day}\" data-state=\"{s}\" title=\"{t}\"><a href=\"/cell/{m}/{day}\"></a></td>",
                m = esc(model),
                s = cell.state.as_str(),
                t = esc(&title),
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    page(&format!("partitions {month}"), &html).into_response()
}

pub async fn cell(
    State(app): State<Arc<App>>,
    Path((model, day)): Path<(String, NaiveDate)>,
) -> Response {
    let rows = match app
        .runner
        .sink
        .ledger_list(&RunFilter {
            model: Some(model.clone()),
            from: Some(day),
            to: Some(day),
            ..Default::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let mut html = format!(
        "<h1>{} · {day}</h1><p><a href=\"/?month={}\">&larr; the grid</a></p><table id=\"attempts\"><tr><th>id</th><th>attempt</th><th>state</th><th>trigger</th><th>started</th><th>finished</th><th>rows</th><th>layers</th><th>fingerprint</th><th>error</th></tr>",
        esc(&model),
        day.format("%Y-%m")
    );
    for r in &rows {
        run_row(&mut html, r, true);
    }
    html.push_str("</table>");
    if rows.is_empty() {
        html.push_str("<p>No run of this model for this day in the ledger.</p>");
    }
    page(&format!("{model} {day}"), &html).into_response()
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn run_row(html: &mut String, r: &RunRecord, detail: bool) {
    let _ = write!(
        html,
        "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        r.id,
        r.attempt,
        match r.state {
            RunState::Success => "success",
            RunState::Failed => "failed",
            RunState::Running | RunState::Pending => "running",
            _ => "skipped",
        },
        r.state.as_str(),
        esc(&r.trigger),
        time(r.started_at),
        time(r.finished_at),
        r.rows_written.map(|n| n.to_string()).unwrap_or_default(),
    );
    if detail {
        let _ = write!(
            html,
            "<td>{}</td><td><code>{}</code></td><td class=\"error\"><pre>{}</pre></td></tr>",
            esc(r.source_layers.as_deref().unwrap_or("")),
            esc(r.fingerprint.as_deref().unwrap_or("")),
            esc(r.error.as_deref().unwrap_or("")),
        );
    } else {
        let _ = write!(
            html,
            "<td class=\"error\">{}</td></tr>",
            esc(r.error.as_deref().unwrap_or(""))
        );
    }
}

pub async fn runs(State(app): State<Arc<App>>) -> Response {
    let rows = match app
        .runner
        .sink
        .ledger_list(&RunFilter {
            limit: Some(2000),
            ..Default::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let mut html =
        String::from("<h1>Runs</h1><h2>Duration of the latest successes, per model</h2>");
    let mut by_model: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in rows.iter().rev() {
        if let (RunState::Success, Some(s), Some(f)) = (r.state, r.started_at, r.finished_at) {
            by_model
                .entry(r.model.as_str())
                .or_default()
                .push((f - s).num_milliseconds() as f64 / 1000.0);
        }
    }
    for (model, secs) in &by_model {
        let tail = &secs[secs.len().saturating_sub(60)..];
        let _ = write!(html, "<h3>{}</h3>{}", esc(model), trend(tail, "runs"));
    }
    html.push_str("<h2>Recent runs</h2><table><tr><th>id</th><th>attempt</th><th>state</th><th>trigger</th><th>started</th><th>finished</th><th>rows</th><th>error</th></tr>");
    for r in rows.iter().take(200) {
        let _ = write!(
            html,
            "<tr><td colspan=\"8\">{} · {}</td></tr>",
            esc(&r.model),
            r.day
        );
        run_row(&mut html, r, false);
    }
    html.push_str("</table>");
    page("runs", &html).into_response()
}

/// A small server-drawn SVG line of seconds, one point per `what`.
fn trend(secs: &[f64], what: &str) -> String {
    let (w, h) = (600.0, 80.0);
    let max = secs.iter().copied().fold(0.0f64, f64::max).max(0.001);
    let n = secs.len().max(2) as f64 - 1.0;
    let points: Vec<String> = secs
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{:.1},{:.1}", i as f64 * w / n, h - s / max * (h - 4.0)))
        .collect();
    format!(
        "<svg class=\"trend\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"><polyline fill=\"none\" stroke=\"#2563eb\" stroke-width=\"2\" points=\"{}\"/><text x=\"4\" y=\"12\" font-size=\"11\">max {max:.2} s, last {:.2} s, {} {what}</text></svg>",
        points.join(" "),
        secs.last().copied().unwrap_or(0.0),
        secs.len()
    )
}

pub async fn checks(State(app): State<Arc<App>>) -> Response {
    let results = match app
        .runner
        .sink
        .checks_list(&CheckFilter {
            limit: Some(300),
            ..Default::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let mut html = String::from("<h1>Checks</h1><table><tr><th>day</th><th>model</th><th>check</th><th>status</th><th>severity</th><th>failing</th><th>observed</th><th>expected</th><th>sample</th></tr>");
    for r in &results {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.day,
            esc(&r.model),
            esc(&r.check),
            match r.status.as_str() {
                "pass" => "success",
                "warn" => "stale",
                _ => "failed",
            },
            r.status.as_str(),
            r.severity.as_str(),
            r.failing_rows,
            esc(r.observed.as_deref().or(r.detail.as_deref()).unwrap_or("")),
            esc(r.expected.as_deref().unwrap_or("")),
            esc(r.sample.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</table>");
    page("checks", &html).into_response()
}

pub async fn schedule(State(app): State<Arc<App>>) -> Response {
    let s = match ledgerflow::schedule::status::status(&app.config).await {
        Ok(s) => s,
        Err(e) => return error_page(e),
    };
    let mut html = format!(
        "<h1>Schedule</h1><p>leader: {}</p>",
        esc(s.leader.as_deref().unwrap_or("none running"))
    );
    if s.jobs.is_empty() {
        html.push_str("<p>No <code>[[jobs]]</code> configured.</p>");
    }
    for j in &s.jobs {
        let _ = write!(
            html,
            "<h2>{}</h2><p>{} ({}) · next tick {} (day {})</p>",
            esc(&j.job),
            esc(&j.cron),
            esc(&j.timezone),
            time(j.next_tick),
            j.next_day.map(|d| d.to_string()).unwrap_or_default()
        );
        for a in &j.sla_misses {
            let _ = write!(
                html,
                "<p class=\"failed\">SLA missed: day {} deadline {} (was {})</p>",
                a.day,
                time(Some(a.deadline)),
                esc(&a.state)
            );
        }
        for g in &j.gaps {
            let _ = write!(
                html,
                "<p>gap: {} interval(s), days {} .. {}: <code>ledgerflow backfill --from {} --to {}</code></p>",
                g.gap.ticks, g.gap.first_day, g.gap.last_day, g.gap.first_day, g.gap.last_day
            );
        }
        html.push_str("<table><tr><th>model</th><th>last success day</th><th>lag (days)</th></tr>");
        for m in &j.models {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.model),
                m.last_success_day
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                m.lag_days.map(|d| d.to_string()).unwrap_or_default()
            );
        }
        html.push_str("</table>");
    }
    page("schedule", &html).into_response()
}

pub async fn realtime(State(app): State<Arc<App>>) -> Response {
    let position = match app.runner.realtime_position().await {
        Ok(p) => p,
        Err(e) => return error_page(e),
    };
    let Some(p) = position else {
        return page(
            "realtime",
            "<h1>Realtime</h1><p>No realtime checkpoint yet (run <code>ledgerflow realtime</code>).</p>",
        )
        .into_response();
    };
    let now = chrono::Utc::now().timestamp();
    let lag_seconds = p
        .lag_seconds(now)
        .map(|s| format!("{s:.0} s"))
        .unwrap_or_else(|| "unknown (no commit time stored)".into());
    let mut html = format!(
        "<h1>Realtime</h1><table><tr><th>checkpoint day</th><td>{}</td></tr><tr><th>realtime tables at block</th><td id=\"at\">{}</td></tr><tr><th>speed layer's newest block</th><td>{}</td></tr><tr><th>lag now</th><td id=\"lag\">{} block(s), {lag_seconds}</td></tr><tr><th>allowed</th><td>{} block(s) (speed.max_lag_blocks)</td></tr><tr><th>last commit</th><td>{}</td></tr></table>",
        p.day,
        p.at_block,
        p.newest_block,
        p.lag_blocks(),
        app.config.speed.max_lag_blocks,
        time(p.journal.last_commit().and_then(|t| chrono::DateTime::from_timestamp(t, 0)))
    );
    let hour: Vec<&ledgerflow::realtime::journal::Sample> = p
        .journal
        .samples
        .iter()
        .filter(|s| s.at >= now - ledgerflow::realtime::journal::HISTORY_SECONDS)
        .collect();
    html.push_str("<h2>Freshness over the last hour</h2>");
    if hour.is_empty() {
        html.push_str("<p id=\"history\">No commit in the last hour.</p>");
    } else {
        let secs: Vec<f64> = hour.iter().map(|s| s.lag_ms as f64 / 1000.0).collect();
        let _ = write!(
            html,
            "<p>Age of the newest block in the realtime tables at each commit (commit time minus block time).</p><div id=\"history\">{}</div>",
            trend(&secs, "commits")
        );
    }
    html.push_str("<h2>Reorgs seen</h2>");
    if p.journal.reorgs.is_empty() {
        html.push_str("<p id=\"reorgs\">None while following.</p>");
    } else {
        html.push_str("<table id=\"reorgs\"><tr><th>seen at</th><th>from block</th><th>blocks replaced</th></tr>");
        for r in p.journal.reorgs.iter().rev() {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(chrono::DateTime::from_timestamp(r.at, 0)),
                r.from_block,
                r.depth
            );
        }
        html.push_str("</table>");
    }
    page("realtime", &html).into_response()
}

pub async fn ingest(State(app): State<Arc<App>>) -> Response {
    let read = || -> ledgerflow::Result<String> {
        let docs = MetaDir::open(&app.config.batch_location()?, &app.config.batch.s3)?;
        let mut html = String::from("<h1>Ingest</h1><h2>Archives</h2><table><tr><th>archive</th><th>state</th><th>bytes</th><th>partitions (rows)</th><th>failed tables</th><th>updated</th></tr>");
        let mut records = Manifest::new(docs.clone()).all()?;
        records.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        for r in &records {
            let parts: Vec<String> = r
                .partitions
                .iter()
                .map(|p| format!("{} {} ({})", p.table, p.day, p.rows))
                .collect();
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.name),
                r.state,
                r.size,
                esc(&parts.join(", ")),
                esc(&r.failed_tables.join(", ")),
                time(Some(r.updated_at))
            );
        }
        html.push_str("</table><h2>Recent ingests</h2><table id=\"ingest-runs\"><tr><th>started</th><th>reconciled</th><th>table</th><th>day</th><th>state</th><th>read</th><th>written</th><th>quarantined</th><th>on disk</th></tr>");
        let runs_dir = format!("{}/runs", ledgerflow::ingest::manifest::DIR);
        let mut names = docs.list(&runs_dir)?;
        names.reverse();
        for name in names.iter().take(RECENT_INGESTS) {
            let Some(bytes) = docs.read(&format!("{runs_dir}/{name}"))? else {
                continue;
            };
            let Ok(report) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let started = report["started_at"].as_str().unwrap_or("");
            let reconciled = report["reconciled"].as_bool().unwrap_or(false);
            for t in report["tables"].as_array().into_iter().flatten() {
                let n = |k: &str| t[k].as_u64().map(|v| v.to_string()).unwrap_or_default();
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td data-quarantined=\"{}\">{}</td><td>{}</td></tr>",
                    esc(started),
                    if reconciled { "success" } else { "failed" },
                    if reconciled { "yes" } else { "NO" },
                    esc(t["table"].as_str().unwrap_or("")),
                    esc(t["day"].as_str().unwrap_or("")),
                    esc(t["state"].as_str().unwrap_or("")),
                    n("rows_read"),
                    n("rows_written"),
                    esc(t["table"].as_str().unwrap_or("")),
                    n("rows_quarantined"),
                    n("rows_on_disk"),
                );
            }
        }
        html.push_str("</table><h2>Schema registry</h2>");
        for t in Registry::new(docs).load_all()? {
            let _ = write!(html, "<h3>{}</h3><ul>", esc(&t.table));
            for v in &t.versions {
                let _ = write!(
                    html,
                    "<li>v{} ({}, from {}): {}</li>",
                    v.version,
                    v.day,
                    esc(&v.source),
                    esc(&v.changes.join("; "))
                );
            }
            html.push_str("</ul>");
        }
        Ok(html)
    };
    match read() {
        Ok(html) => page("ingest", &html).into_response(),
        Err(e) => error_page(e),
    }
}

pub fn login_page(problem: Option<&str>) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ledgerflow · log in</title></head><body><h1>ledgerflow</h1>{}<form method=\"post\" action=\"/login\"><label>Token <input type=\"password\" name=\"token\" autofocus></label> <button type=\"submit\">Log in</button></form></body></html>",
        problem
            .map(|p| format!("<p>{}</p>", esc(p)))
            .unwrap_or_default()
    ))
}

pub async fn login() -> Html<String> {
    login_page(None)
}

/// The `/metrics` exposition from the ledger, the schedule store, the
/// ingest manifest and the realtime checkpoint.
pub async fn metrics_text(app: &App) -> anyhow::Result<String> {
    let runs = app.runner.sink.ledger_list(&RunFilter::default()).await?;
    let mut sla_misses = BTreeMap::new();
    if !app.config.jobs.is_empty() {
        let store = ledgerflow::schedule::store::ScheduleStore::open(&app.config).await?;
        for a in store.alerts(None, 100_000).await? {
            *sla_misses.entry(a.job).or_insert(0) += 1;
        }
    }
    let docs = MetaDir::open(&app.config.batch_location()?, &app.config.batch.s3)?;
    let ingest_bytes = Manifest::new(docs).all()?.iter().map(|r| r.size).sum();
    let position = app.runner.realtime_position().await?;
    let now = chrono::Utc::now().timestamp();
    Ok(metrics::render(&metrics::Inputs {
        runs,
        sla_misses,
        ingest_bytes,
        realtime_lag_blocks: position.as_ref().map(|p| p.lag_blocks()),
        realtime_lag_seconds: position.as_ref().and_then(|p| p.lag_seconds(now)),
    }))
}
