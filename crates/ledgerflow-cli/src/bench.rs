//! `ledgerflow bench`: generates data, then runs `run` and `backfill` as child
//! processes of this very binary, so that wall time and peak RSS are those of
//! the commands a user runs, not of a process that also holds the generator.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{Days, NaiveDate};
use ledgerflow::config::{ENV_BATCH_URL, ENV_SERVING_URL, ENV_SPEED_URL};

use crate::cli::BenchArgs;

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const CLEARED_ENV: [&str; 4] = [
    ENV_SERVING_URL,
    ENV_BATCH_URL,
    ENV_SPEED_URL,
    "LEDGERFLOW_CONFIG",
];

/// What one child process cost.
pub(crate) struct Measure {
    pub(crate) wall_s: f64,
    pub(crate) rss_mib: f64,
    /// User + system CPU seconds (for per-core throughput).
    pub(crate) cpu_s: f64,
    pub(crate) stdout: String,
}

#[derive(Default)]
struct Totals {
    rows: u64,
    compute_s: f64,
    write_s: f64,
}

struct Phase {
    name: String,
    target: &'static str,
    m: Measure,
    models: Vec<(String, Totals)>,
    total: Totals,
}

/// A fresh schema on the PostgreSQL server, so the bench never touches the
/// tables of a real deployment; dropped at the end.
struct Pg {
    url: String,
    client: tokio_postgres::Client,
    schema: String,
    config: PathBuf,
}

/// `--config CONFIG` then the whitespace-separated `rest`.
pub(crate) fn argv(config: &Path, rest: &str) -> Vec<String> {
    let head = ["--config".to_string(), config.display().to_string()];
    head.into_iter()
        .chain(rest.split_whitespace().map(String::from))
        .collect()
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<u8> {
    let tmp;
    let work = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary bench directory")?;
            tmp.path().to_path_buf()
        }
    };
    let project = work.join("project");
    ledgerflow::project::init(&project)
        .with_context(|| format!("creating the bench project in {}", project.display()))?;
    let config = project.join(ledgerflow::project::CONFIG_FILE);
    let exe = std::env::current_exe().context("locating the ledgerflow executable")?;
    let first = NaiveDate::from_ymd_opt(2026, 10, 1).context("bench start day")?;
    let last = first + Days::new(u64::from(args.days.max(1)) - 1);

    // A speed day outside the range puts every generated day in the batch layer.
    let gen = format!(
        "generate --from {first} --to {last} --scale {} --speed-days 2000-01-01",
        args.scale
    );
    let gen = child(&exe, &work, "generate", &[], &argv(&config, &gen)).await?;
    let batch_bytes = dir_size(&project.join("data/batch")).context("measuring the batch layer")?;

    let pg = postgres(&args, &config).await?;
    let mut targets = vec![("SQLite", config.clone(), vec![])];
    if let Some(pg) = &pg {
        targets.push((
            "PostgreSQL",
            pg.config.clone(),
            vec![(ENV_SERVING_URL, pg.url.clone())],
        ));
    }
    let result = async {
        let mut phases = Vec::new();
        for (target, config, env) in &targets {
            let run = argv(config, &format!("run --date {first} --force --json"));
            let m = child(&exe, &work, "run", env, &run).await?;
            phases.push(phase(format!("1 day ({first})"), target, m)?);
            if last > first {
                let fill = format!("backfill --from {first} --to {last} --force --json");
                let m = child(&exe, &work, "backfill", env, &argv(config, &fill)).await?;
                phases.push(phase(
                    format!("{} days ({first}..{last})", args.days),
                    target,
                    m,
                )?);
            }
        }
        anyhow::Ok(phases)
    }
    .await;
    if let Some(Pg { client, schema, .. }) = &pg {
        let drop = format!(
            "SET client_min_messages = warning; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        );
        if let Err(e) = client.batch_execute(&drop).await {
            eprintln!("warning: could not drop bench schema {schema}: {e}");
        }
    }
    report(&args, &work, &gen, batch_bytes, &result?);
    Ok(0)
}

async fn postgres(args: &BenchArgs, config: &Path) -> anyhow::Result<Option<Pg>> {
    let from_env = std::env::var("LEDGERFLOW_TEST_PG_URL")
        .ok()
        .filter(|v| !v.is_empty());
    let explicit = args.postgres.is_some() || from_env.is_some();
    let url = args
        .postgres
        .clone()
        .or(from_env)
        .unwrap_or_else(|| DEFAULT_PG_URL.into());
    if url == "none" {
        return Ok(None);
    }
    let (client, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) if explicit => return Err(e).with_context(|| format!("connecting to {url}")),
        Err(e) => {
            println!("skipping PostgreSQL: cannot connect to {url} ({e}); pass --postgres URL\n");
            return Ok(None);
        }
    };
    tokio::spawn(conn);
    let schema = format!("ledgerflow_bench_{}", std::process::id());
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let edited = text.replace("schema = \"public\"", &format!("schema = \"{schema}\""));
    if edited == text {
        bail!(
            "{} has no `schema = \"public\"` line to edit",
            config.display()
        );
    }
    let config = config.with_file_name("ledgerflow-postgres.toml");
    std::fs::write(&config, edited).with_context(|| format!("writing {}", config.display()))?;
    Ok(Some(Pg {
        url,
        client,
        schema,
        config,
    }))
}

/// Runs this binary with `args`, reaping it with wait4 for its own peak RSS.
pub(crate) async fn child(
    exe: &Path,
    work: &Path,
    label: &str,
    env: &[(&str, String)],
    args: &[String],
) -> anyhow::Result<Measure> {
    // Files, not pipes: a chatty child can never block on a full pipe.
    let out_path = work.join(format!("{label}.stdout"));
    let err_path = work.join(format!("{label}.stderr"));
    let create = |p: &Path| File::create(p).with_context(|| format!("creating {}", p.display()));
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    cmd.stdout(create(&out_path)?).stderr(create(&err_path)?);
    // The parent's overrides must not send a child away from the bench project.
    for k in CLEARED_ENV {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().cloned());
    let started = Instant::now();
    let proc = cmd
        .spawn()
        .with_context(|| format!("starting `ledgerflow {label}`"))?;
    let pid = proc.id() as libc::pid_t;
    let (status, usage) = tokio::task::spawn_blocking(move || wait4(pid))
        .await
        .context("joining the wait4 task")?
        .with_context(|| format!("waiting for `ledgerflow {label}`"))?;
    let wall_s = started.elapsed().as_secs_f64();
    drop(proc);
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let stdout = read(&out_path)?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let stderr = read(&err_path)?;
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        let failed: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains("\"failed\""))
            .collect();
        let cmdline = args.join(" ");
        bail!(
            "`ledgerflow {cmdline}` failed (wait status {status:#x}):\n{}\n{tail}",
            failed.join("\n")
        );
    }
    let rss_mib = usage.ru_maxrss as f64 / 1024.0;
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measure {
        wall_s,
        rss_mib,
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
        stdout,
    })
}

fn wait4(pid: libc::pid_t) -> std::io::Result<(libc::c_int, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals; pid is our own child.
        if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sums the child's `--json` reports per model, in the order models ran.
fn phase(name: String, target: &'static str, m: Measure) -> anyhow::Result<Phase> {
    let (mut models, mut total) = (Vec::<(String, Totals)>::new(), Totals::default());
    for line in m.stdout.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("parsing report {line}"))?;
        let model = v["model"].as_str().context("report without a model")?;
        let i = models
            .iter()
            .position(|(n, _)| n == model)
            .unwrap_or_else(|| {
                models.push((model.to_string(), Totals::default()));
                models.len() - 1
            });
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        let (rows, compute_s, write_s) = (
            v["rows"].as_u64().unwrap_or(0),
            f("compute_s"),
            f("write_s"),
        );
        for t in [&mut models[i].1, &mut total] {
            t.rows += rows;
            t.compute_s += compute_s;
            t.write_s += write_s;
        }
    }
    Ok(Phase {
        name,
        target,
        m,
        models,
        total,
    })
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = path.symlink_metadata()?;
        total += if meta.is_dir() {
            dir_size(&path)?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn report(args: &BenchArgs, work: &Path, gen: &Measure, batch_bytes: u64, phases: &[Phase]) {
    let (days, kept) = (
        args.days.max(1),
        if args.dir.is_some() {
            "kept"
        } else {
            "removed at exit"
        },
    );
    println!(
        "ledgerflow bench: scale {}, {days} day(s), work dir {} ({kept})",
        args.scale,
        work.display()
    );
    let (wall, rss, out) = (gen.wall_s, gen.rss_mib, gen.stdout.trim());
    let batch_mib = batch_bytes as f64 / (1024.0 * 1024.0);
    println!("generate: {wall:.2} s wall, peak RSS {rss:.0} MiB; {out}; batch layer {batch_mib:.1} MiB\n");
    let row = |name: &str, t: &Totals| {
        println!(
            "  {name:<28} {:>10} {:>10.2} {:>9.2}",
            t.rows, t.compute_s, t.write_s
        )
    };
    for p in phases {
        let (wall, rss) = (p.m.wall_s, p.m.rss_mib);
        println!(
            "{} -> {}: {wall:.2} s wall, peak RSS {rss:.0} MiB",
            p.name, p.target
        );
        println!(
            "  {:<28} {:>10} {:>10} {:>9}",
            "model", "rows", "compute s", "write s"
        );
        p.models.iter().for_each(|(name, t)| row(name, t));
        row("total", &p.total);
        // compute_s spans planning and execution, so the Parquet reads are in it.
        let pct = |s: f64| 100.0 * s / wall;
        let (c, w) = (p.total.compute_s, p.total.write_s);
        let other = pct((wall - c - w).max(0.0));
        println!(
            "  time: compute incl. reads {:.0}%, write {:.0}%, other (start-up, catalog, ledger) {other:.0}%\n",
            pct(c),
            pct(w)
        );
    }
    let one_day_pg = phases
        .iter()
        .find(|p| p.target == "PostgreSQL" && p.name.starts_with("1 day"));
    if let Some(Phase { m, .. }) = one_day_pg {
        let verdict = if m.wall_s <= 3.0 && m.rss_mib <= 1536.0 {
            "met"
        } else {
            "MISSED"
        };
        let note = if args.scale == 1.0 {
            ""
        } else {
            " (not at mainnet scale 1.0: indicative only)"
        };
        let (wall, rss) = (m.wall_s, m.rss_mib);
        println!("target, one day into PostgreSQL in <= 3 s and <= 1.5 GiB: {verdict} ({wall:.2} s, {rss:.0} MiB){note}\n");
    }
    println!("| phase | target | wall s | peak RSS MiB | rows per table | compute s | write s |");
    println!("|---|---|---:|---:|---|---:|---:|");
    println!(
        "| generate (scale {}) | batch layer | {wall:.2} | {rss:.0} | - | - | - |",
        args.scale
    );
    for p in phases {
        let rows: Vec<String> = p
            .models
            .iter()
            .map(|(n, t)| format!("{n}: {}", t.rows))
            .collect();
        let (wall, rss, rows, t) = (p.m.wall_s, p.m.rss_mib, rows.join("<br>"), &p.total);
        let (c, w) = (t.compute_s, t.write_s);
        println!(
            "| {} | {} | {wall:.2} | {rss:.0} | {rows} | {c:.2} | {w:.2} |",
            p.name, p.target
        );
    }
}
