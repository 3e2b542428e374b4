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

use crate::cli::{BenchArgs, BenchEngine};

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
    /// Each day's seconds, oldest day first: for a backfill the time since
    /// the day before was over, else the day's models' seconds.
    days: Vec<f64>,
}

/// A fresh schema on the PostgreSQL server, so the bench never touches the
/// tables of a real deployment; dropped at the end.
struct Pg {
    url: String,
    client: tokio_postgres::Client,
    schema: String,
    config: PathBuf,
}

/// A bench's working directory: `dir` as given, else a temporary one that
/// lives as long as the returned guard.
pub(crate) fn work_dir(dir: Option<&Path>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match dir {
        Some(d) => Ok((None, d.to_path_buf())),
        None => {
            let tmp = tempfile::tempdir().context("creating a temporary bench directory")?;
            let path = tmp.path().to_path_buf();
            Ok((Some(tmp), path))
        }
    }
}

/// `--config CONFIG` then the whitespace-separated `rest`.
pub(crate) fn argv(config: &Path, rest: &str) -> Vec<String> {
    let head = ["--config".to_string(), config.display().to_string()];
    head.into_iter()
        .chain(rest.split_whitespace().map(String::from))
        .collect()
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<u8> {
    let (_tmp, work) = crate::bench::work_dir(args.dir.as_deref())?;
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
    let remote = match &args.batch {
        Some(url) => Some(upload(&args, url, &config, &project.join("data/batch")).await?),
        None => None,
    };

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
            if let Some((url, _)) = &remote {
                let mut s3_env = env.clone();
                s3_env.push((ENV_BATCH_URL, url.clone()));
                let m = child(&exe, &work, "run-s3", &s3_env, &run).await?;
                phases.push(phase(format!("1 day ({first}) from S3"), target, m)?);
            }
            if remote.is_some() || args.checks || args.engine == BenchEngine::Ballista {
                // The runs below replace a loaded day: compared with a
                // local run that does the same.
                let m = child(&exe, &work, "run", env, &run).await?;
                phases.push(phase(format!("1 day ({first}) again"), target, m)?);
            }
            if args.checks {
                let off = without_checks(config)?;
                let run = argv(&off, &format!("run --date {first} --force --json"));
                let m = child(&exe, &work, "run-no-checks", env, &run).await?;
                phases.push(phase(format!("1 day ({first}) checks off"), target, m)?);
            }
            if last > first {
                // JSON logs: each day's time is read back from them.
                let fill =
                    format!("--log-format json backfill --from {first} --to {last} --force --json");
                let one = variant(config, "one-day", |t| {
                    t.replace("# parallel_days = 2", "parallel_days = 1")
                })?;
                // What overlapping days gains (the default, two in flight):
                // the same range one day at a time.
                for (label, config, suffix) in [
                    ("backfill", config, ""),
                    ("backfill-one-day", &one, " one at a time"),
                ] {
                    let mut env = env.clone();
                    env.push(("LEDGERFLOW_LOG", "warn,ledgerflow::backfill=info".into()));
                    let m = child(&exe, &work, label, &env, &argv(config, &fill)).await?;
                    let mut p = phase(
                        format!("{} days ({first}..{last}){suffix}", args.days),
                        target,
                        m,
                    )?;
                    p.days = day_times(&work.join(format!("{label}.stderr")));
                    phases.push(p);
                }
            }
        }
        if args.engine == BenchEngine::Ballista {
            #[cfg(not(feature = "ballista"))]
            bail!("--engine ballista needs a build with the `ballista` feature");
            // Against the last target (PostgreSQL when there is one).
            #[cfg(feature = "ballista")]
            {
                let (target, config, env) = targets.last().context("a serving target")?;
                for &n in &args.executors {
                    phases.extend(
                        on_ballista(&exe, &work, config, env, target, n, first, last, args.days)
                            .await?,
                    );
                }
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
    if let Some((url, secs)) = remote {
        println!("(the batch layer was uploaded to {url} in {secs:.1} s)");
    }
    Ok(0)
}

/// The first day and the range on a Ballista cluster of `executors`
/// executors (2 slots each) started on this host for the purpose; prints
/// what the cluster's processes cost.
#[cfg(feature = "ballista")]
#[allow(clippy::too_many_arguments)]
async fn on_ballista(
    exe: &Path,
    work: &Path,
    config: &Path,
    env: &[(&str, String)],
    target: &'static str,
    executors: usize,
    first: NaiveDate,
    last: NaiveDate,
    days: u32,
) -> anyhow::Result<Vec<Phase>> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("a free port")?;
        l.local_addr()?.port()
    };
    let bind: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let cluster = crate::cluster_cmd::LocalCluster::start(config, executors, bind, 2, Some(work))?;
    let ports: Vec<u16> = std::iter::once(port)
        .chain((0..executors).map(|i| port + 1 + 2 * i as u16))
        .collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while !ports
        .iter()
        .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
    {
        if Instant::now() > deadline {
            cluster.stop().await;
            bail!("the bench cluster did not come up within 60 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Registration follows the listening ports by a heartbeat.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let url = cluster.url.clone();
    let on = variant(config, &format!("ballista-{executors}"), |t| {
        t.replace(
            "[engine]\n",
            &format!(
                "[engine]\nmode = \"ballista\"\nurl = \"{url}\"\ntarget_partitions = {}\n",
                2 * executors
            ),
        )
    })?;
    let label = format!("on Ballista, {executors} executor(s)");
    let mut env = env.to_vec();
    env.push((
        "LEDGERFLOW_LOG",
        "warn,ledgerflow::engine::ballista=info".into(),
    ));
    let result = async {
        let mut phases = Vec::new();
        // JSON logs: the `ballista query` lines are read back below.
        let run = argv(
            &on,
            &format!("--log-format json run --date {first} --force --json"),
        );
        let name = format!("run-ballista-{executors}");
        let m = child(exe, work, &name, &env, &run).await?;
        phases.push(phase(format!("1 day ({first}) {label}"), target, m)?);
        print_stages(
            &format!("1 day {label}"),
            &work.join(format!("{name}.stderr")),
        );
        if last > first {
            let fill =
                format!("--log-format json backfill --from {first} --to {last} --force --json");
            let name = format!("backfill-ballista-{executors}");
            let m = child(exe, work, &name, &env, &argv(&on, &fill)).await?;
            phases.push(phase(
                format!("{days} days ({first}..{last}) {label}"),
                target,
                m,
            )?);
            print_stages(
                &format!("{days} days {label}"),
                &work.join(format!("{name}.stderr")),
            );
        }
        anyhow::Ok(phases)
    }
    .await;
    for (i, pid) in cluster.pids().into_iter().enumerate() {
        let (cpu, hwm) = proc_cost(pid);
        let who = if i == 0 {
            "scheduler".to_string()
        } else {
            format!("executor {i}")
        };
        println!("cluster of {executors}: {who}: {cpu:.1} s CPU, peak RSS {hwm:.0} MiB");
    }
    cluster.stop().await;
    result
}

/// Sums the client's `ballista query` log lines (one per model and day):
/// planning here, the job on the cluster (its stages and shuffles), and
/// fetching the results.
#[cfg(feature = "ballista")]
fn print_stages(what: &str, stderr: &Path) {
    let text = std::fs::read_to_string(stderr).unwrap_or_default();
    let (mut plan, mut job, mut fetch, mut queries) = (0.0, 0.0, 0.0, 0);
    for line in text.lines().filter(|l| l.contains("ballista query")) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let field = |name: &str| v["fields"][name].as_f64().unwrap_or(0.0);
        plan += field("plan_s");
        job += field("job_s");
        fetch += field("fetch_s");
        queries += 1;
    }
    println!("{what}: {queries} queries: plan {plan:.2} s (client), job {job:.2} s (cluster: stages and shuffles), fetch {fetch:.2} s (results to the client)");
}

/// Each day's time in a backfill's JSON log (its `backfill day over`
/// lines: the time since the day before was over, so overlapping days are
/// not counted twice), in the order the days were over.
fn day_times(stderr: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(stderr).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("backfill day over"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["seconds"].as_f64())
        .collect()
}

/// CPU seconds and peak RSS (MiB) of a live process, from /proc.
#[cfg(feature = "ballista")]
fn proc_cost(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are
    // the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    ((ticks(11) + ticks(12)) / hz, status_mib(&status, "VmHWM:"))
}

/// A memory field of a `/proc/<pid>/status` text (`VmRSS:`, `VmHWM:`), in
/// MiB; 0 when absent.
pub(crate) fn status_mib(status: &str, key: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A copy of `config` with `run.checks = false`.
fn without_checks(config: &Path) -> anyhow::Result<PathBuf> {
    variant(config, "no-checks", |t| {
        format!("{t}\n[run]\nchecks = false\n")
    })
}

/// A copy of `config` named `<name>.toml` beside it, its text changed by
/// `edit`.
fn variant(config: &Path, name: &str, edit: impl Fn(&str) -> String) -> anyhow::Result<PathBuf> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let copy = config.with_extension(format!("{name}.toml"));
    std::fs::write(&copy, edit(&text)).with_context(|| format!("writing {}", copy.display()))?;
    Ok(copy)
}

/// Points the bench project's S3 settings at the endpoint and uploads the
/// generated batch layer to `url`: (url, upload seconds).
async fn upload(
    args: &BenchArgs,
    url: &str,
    config: &Path,
    batch: &Path,
) -> anyhow::Result<(String, f64)> {
    use ledgerflow::location::Location;
    let location =
        Location::parse(url, Path::new("")).map_err(|m| anyhow::anyhow!("--batch: {m}"))?;
    if location.is_local() {
        bail!("--batch wants an object store URL (s3://bucket/prefix)");
    }
    if let Some(endpoint) = &args.s3_endpoint {
        let section = format!(
            "\n[batch.s3]\nendpoint = \"{endpoint}\"\nallow_http = {}\n",
            endpoint.starts_with("http://")
        );
        let mut text = std::fs::read_to_string(config)
            .with_context(|| format!("reading {}", config.display()))?;
        text.push_str(&section);
        std::fs::write(config, text).with_context(|| format!("writing {}", config.display()))?;
    }
    let settings = ledgerflow::config::Config::load(config)?.batch.s3;
    let store = ledgerflow::catalog::store::PartitionStore::open(&location, &settings)?;
    let started = Instant::now();
    let files = store.upload_tree(batch).await?;
    let secs = started.elapsed().as_secs_f64();
    println!("uploaded the batch layer ({files} files) to {location} in {secs:.1} s");
    Ok((location.to_string(), secs))
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
    let mut days = std::collections::BTreeMap::<String, f64>::new();
    for line in m.stdout.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("parsing report {line}"))?;
        if let Some(day) = v["day"].as_str() {
            *days.entry(day.to_owned()).or_default() += v["seconds"].as_f64().unwrap_or(0.0);
        }
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
        days: days.into_values().collect(),
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

/// Each phase named `... {suffix}` with the local `... again` run of the
/// same target it is compared with (both replace a loaded day).
fn against_again<'a>(
    phases: &'a [Phase],
    suffix: &'a str,
) -> impl Iterator<Item = (&'a Phase, &'a Phase)> {
    phases
        .iter()
        .filter(move |p| p.name.ends_with(suffix))
        .filter_map(move |variant| {
            let again = variant.name.replace(suffix, " again");
            phases
                .iter()
                .find(|p| p.target == variant.target && p.name == again)
                .map(|local| (variant, local))
        })
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
        let (wall, rss, cpu) = (p.m.wall_s, p.m.rss_mib, p.m.cpu_s);
        println!(
            "{} -> {}: {wall:.2} s wall, {cpu:.2} s CPU, peak RSS {rss:.0} MiB",
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
            "  time: compute incl. reads {:.0}%, write {:.0}%, other (start-up, catalog, ledger) {other:.0}%",
            pct(c),
            pct(w)
        );
        if p.days.len() >= 5 {
            // A flat per-day cost: the last days cost what the first did.
            let (first, last, change) = first_and_last_5(&p.days);
            println!("  per day: first 5 {first:.2} s, last 5 {last:.2} s ({change:+.1}%)");
            // The fitted line uses every day: over a month, one noisy day
            // at either end moves it less than it moves a mean of five.
            if let Some(slope) = trend(&p.days) {
                let span = (p.days.len() - 1) as f64;
                println!(
                    "  per day: trend {:+.1} ms a day, {:+.1}% of the mean day over the {} days",
                    1000.0 * slope,
                    100.0 * slope * span / mean(&p.days),
                    p.days.len()
                );
            }
        }
        println!();
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
    // Issue 25's month: the per-day cost does not grow with the range.
    for p in phases.iter().filter(|p| p.days.len() >= 30) {
        let (first, last, change) = first_and_last_5(&p.days);
        let verdict = if change.abs() <= 10.0 {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "target, {} ({}): the last 5 days within 10% of the first 5: {verdict} ({change:+.1}%: {first:.2} s -> {last:.2} s)\n",
            p.name, p.target
        );
    }
    for (off, on) in against_again(phases, " checks off") {
        let cost = on.m.wall_s - off.m.wall_s;
        let share = 100.0 * cost / on.m.wall_s;
        let verdict = if share <= 10.0 { "met" } else { "MISSED" };
        println!(
            "target, checks cost <= 10% of the day ({}): {verdict} ({:.2} s on, {:.2} s off: {cost:.2} s, {share:.1}%)\n",
            off.target, on.m.wall_s, off.m.wall_s
        );
    }
    for (suffix, what) in [
        (
            " on Ballista, 1 executor(s)",
            "on Ballista with one executor within 1.5x of local mode",
        ),
        (" from S3", "from S3 within 1.5x of local disk"),
    ] {
        for (variant, local) in against_again(phases, suffix) {
            let ratio = variant.m.wall_s / local.m.wall_s;
            let verdict = if ratio <= 1.5 { "met" } else { "MISSED" };
            println!(
                "target, one day {what} ({}, both replacing a loaded day): {verdict} ({ratio:.2}x: {:.2} s vs {:.2} s; peak RSS {:.0} vs {:.0} MiB)\n",
                local.target, variant.m.wall_s, local.m.wall_s, variant.m.rss_mib, local.m.rss_mib
            );
        }
    }
    println!(
        "| phase | target | wall s | CPU s | peak RSS MiB | rows per table | compute s | write s |"
    );
    println!("|---|---|---:|---:|---:|---|---:|---:|");
    println!(
        "| generate (scale {}) | batch layer | {wall:.2} | {:.2} | {rss:.0} | - | - | - |",
        args.scale, gen.cpu_s
    );
    for p in phases {
        let rows: Vec<String> = p
            .models
            .iter()
            .map(|(n, t)| format!("{n}: {}", t.rows))
            .collect();
        let (wall, rss, rows, t) = (p.m.wall_s, p.m.rss_mib, rows.join("<br>"), &p.total);
        let (c, w, cpu) = (t.compute_s, t.write_s, p.m.cpu_s);
        println!(
            "| {} | {} | {wall:.2} | {cpu:.2} | {rss:.0} | {rows} | {c:.2} | {w:.2} |",
            p.name, p.target
        );
    }
}

/// The mean of the first 5 and of the last 5 of `days` (at least 5), and
/// the change from one to the other in percent, rounded to 0.1 as printed
/// (a verdict is judged on what it shows).
fn first_and_last_5(days: &[f64]) -> (f64, f64, f64) {
    let (first, last) = (mean(&days[..5]), mean(&days[days.len() - 5..]));
    (first, last, (1000.0 * (last / first - 1.0)).round() / 10.0)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The least-squares slope of `values` against their index (seconds per
/// day for a backfill's days); `None` for fewer than two.
fn trend(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let x_mean = (values.len() - 1) as f64 / 2.0;
    let y_mean = mean(values);
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dx = i as f64 - x_mean;
        num += dx * (y - y_mean);
        den += dx * dx;
    }
    Some(num / den)
}

#[cfg(test)]
mod tests {
    use super::trend;

    #[test]
    fn the_trend_is_the_fitted_slope() {
        assert_eq!(trend(&[2.0]), None);
        assert_eq!(trend(&[2.0, 2.0, 2.0]), Some(0.0));
        let line: Vec<f64> = (0..30).map(|i| 2.0 + 0.01 * i as f64).collect();
        assert!((trend(&line).unwrap() - 0.01).abs() < 1e-12);
        // Noise around a flat line: one slow day in the middle moves no slope.
        assert!(trend(&[2.0, 2.1, 1.9, 3.0, 1.9, 2.1, 2.0]).unwrap().abs() < 1e-9);
    }
}
