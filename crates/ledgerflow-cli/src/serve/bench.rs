//! `ledgerflow bench-serve`: the page's server time over a large ledger
//! (years x models of rows, SQLite serving) and `serve`'s memory when idle.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{Days, NaiveDate};
use ledgerflow::config::Config;
use ledgerflow::ledger::{RunState, Step};

#[derive(Debug, clap::Args)]
pub struct BenchServeArgs {
    /// Years of daily ledger rows.
    #[arg(long, default_value_t = 3)]
    pub years: u32,
    /// Day models.
    #[arg(long, default_value_t = 10)]
    pub models: u32,
    /// Requests timed per page.
    #[arg(long, default_value_t = 20)]
    pub requests: u32,
    /// Working directory (default: a temporary one, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub async fn bench_serve(args: BenchServeArgs) -> anyhow::Result<u8> {
    let (_tmp, work) = crate::bench::work_dir(args.dir.as_deref())?;
    let project = work.join("project");
    ledgerflow::project::init(&project)?;
    let models = project.join("models");
    for e in std::fs::read_dir(&models)? {
        std::fs::remove_file(e?.path())?;
    }
    // The default checks guard the default models, replaced here.
    std::fs::remove_dir_all(project.join("checks"))?;
    for m in 0..args.models {
        std::fs::write(
            models.join(format!("model_{m:02}.sql")),
            "-- key: day\n-- grain: day\n-- write: replace_day\nSELECT CAST($day AS DATE) AS day, count(*) AS blocks FROM blocks\nWHERE \"timestamp\" >= $start AND \"timestamp\" < $end\n",
        )?;
    }
    let config_path = project.join(ledgerflow::project::CONFIG_FILE);
    let config = Config::load(&config_path)?;
    let sink = ledgerflow::sinks::open(&config).await?;
    let last = NaiveDate::from_ymd_opt(2026, 11, 30).context("bench day")?;
    let first = last - Days::new(365 * u64::from(args.years) - 1);
    let started = Instant::now();
    let mut steps = Vec::new();
    for day in ledgerflow::day::range(first, last) {
        for m in 0..args.models {
            // Every 97th (model, day) failed: the grid has more than one
            // colour.
            let failed = (m + chrono::Datelike::ordinal0(&day)) % 97 == 0;
            steps.push(Step {
                model: format!("model_{m:02}"),
                day,
                state: if failed {
                    RunState::Failed
                } else {
                    RunState::Success
                },
                rows: Some(1),
                error: failed.then(|| "bench: a failed run".to_string()),
            });
        }
    }
    let rows = steps.len();
    ledgerflow::sinks::record_steps(sink.as_ref(), steps, "bench").await?;
    println!(
        "ledger: {rows} rows ({} years x {} models) written in {:.1} s",
        args.years,
        args.models,
        started.elapsed().as_secs_f64()
    );
    drop(sink);

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args([
            "--config",
            &config_path.display().to_string(),
            "serve",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting `ledgerflow serve`")?;
    let base = format!("http://127.0.0.1:{port}");
    let result = measure(&base, child.id(), &args).await;
    let _ = child.kill();
    let _ = child.wait();
    let lines = result?;
    for l in lines {
        println!("{l}");
    }
    Ok(0)
}

async fn measure(base: &str, pid: u32, args: &BenchServeArgs) -> anyhow::Result<Vec<String>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let fetch = |url: String| {
        let agent = agent.clone();
        async move {
            tokio::task::spawn_blocking(move || -> anyhow::Result<(u16, usize, Duration)> {
                let t = Instant::now();
                let mut r = agent.get(&url).call()?;
                let body = r.body_mut().read_to_string()?;
                Ok((r.status().as_u16(), body.len(), t.elapsed()))
            })
            .await?
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while fetch(format!("{base}/metrics")).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "serve did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = vec![
        format!("| page | requests | median ms | max ms | bytes |"),
        "|---|---:|---:|---:|---:|".to_string(),
    ];
    for page in ["/?month=2026-11", "/?month=2025-06", "/runs", "/metrics"] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.requests {
            let (status, n, t) = fetch(format!("{base}{page}")).await?;
            anyhow::ensure!(status == 200, "{page}: HTTP {status}");
            bytes = n;
            times.push(t.as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        out.push(format!(
            "| `{page}` | {} | {:.1} | {:.1} | {bytes} |",
            args.requests,
            times[times.len() / 2],
            times[times.len() - 1]
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| crate::bench::status_mib(&status, key);
    out.push(format!(
        "serve after the requests, idle 2 s: RSS {:.1} MiB (peak {:.1} MiB); target < 30 MiB idle",
        field("VmRSS:"),
        field("VmHWM:")
    ));
    Ok(out)
}
