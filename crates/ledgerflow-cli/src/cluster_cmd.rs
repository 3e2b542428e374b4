//! `ledgerflow cluster`: a Ballista scheduler, an executor, or both on this
//! host (`up`) for trying `engine.mode = "ballista"` out. Each reads the
//! project's configuration for its object stores and memory limit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use ledgerflow::engine::cluster::{self, ExecutorOptions, SchedulerOptions};

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub what: ClusterCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Run a Ballista scheduler until SIGINT or SIGTERM.
    Scheduler {
        /// Address to listen on (engine.url = "df://<this>").
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
        /// An executor silent this long is lost; its tasks run elsewhere.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        executor_timeout: Duration,
        /// The address executors reach this scheduler at (default: the
        /// --bind address; needed with 0.0.0.0).
        #[arg(long)]
        external_host: Option<String>,
    },
    /// Run a Ballista executor for a scheduler until SIGINT or SIGTERM.
    Executor {
        /// The scheduler, host:port.
        #[arg(long, default_value = "127.0.0.1:50050")]
        scheduler: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Address the scheduler and clients reach this executor at
        /// (default: the one its connection to the scheduler comes from).
        #[arg(long)]
        external_host: Option<String>,
        /// Arrow Flight port (results and shuffle reads).
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// Task port (default: --port + 1).
        #[arg(long)]
        grpc_port: Option<u16>,
        /// Tasks at once.
        #[arg(long, default_value_t = 2)]
        slots: usize,
        /// Shuffle files (default: <engine.spill_dir>/executor-<port>).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// A scheduler and N executors on this host, each a process of its own,
    /// until SIGINT or SIGTERM (or one of them exits).
    Up {
        /// Executors to start.
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// The scheduler's address; executors take the ports after it.
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
        /// Tasks at once per executor.
        #[arg(long, default_value_t = 2)]
        slots: usize,
    },
}

pub async fn cluster(config_path: &Path, args: ClusterArgs) -> anyhow::Result<u8> {
    let config = crate::commands::load(config_path)?;
    match args.what {
        ClusterCommand::Scheduler {
            bind,
            executor_timeout,
            external_host,
        } => {
            eprintln!("ballista scheduler listening on {bind} (engine.url = \"df://{bind}\")");
            cluster::run_scheduler(
                &config,
                &SchedulerOptions {
                    bind,
                    external_host,
                    executor_timeout,
                },
            )
            .await?;
        }
        ClusterCommand::Executor {
            scheduler,
            bind,
            external_host,
            port,
            grpc_port,
            slots,
            work_dir,
        } => {
            let (host, sport) = scheduler
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .with_context(|| format!("--scheduler {scheduler}: expected host:port"))?;
            let opts = ExecutorOptions {
                scheduler_host: host,
                scheduler_port: sport,
                bind_host: bind,
                external_host,
                port,
                grpc_port: grpc_port.unwrap_or(port.saturating_add(1)),
                slots: slots.max(1),
                work_dir: work_dir
                    .unwrap_or_else(|| config.spill_dir().join(format!("executor-{port}"))),
            };
            eprintln!(
                "ballista executor on {}:{port} ({slots} slots) for {scheduler}",
                opts.bind_host
            );
            cluster::run_executor(&config, &opts).await?;
        }
        ClusterCommand::Up {
            executors,
            bind,
            slots,
        } => return up(config_path, executors, bind, slots).await,
    }
    Ok(0)
}

/// A scheduler and executors on this host, each a child process.
pub(crate) struct LocalCluster {
    children: Vec<Child>,
    pub(crate) url: String,
}

impl LocalCluster {
    /// Starts `ledgerflow cluster scheduler` at `bind` and `executors`
    /// executors on the ports after it, with `slots` tasks each; their
    /// stderr goes to files in `logs` when given (`<role>-<port>.log`).
    pub(crate) fn start(
        config_path: &Path,
        executors: usize,
        bind: SocketAddr,
        slots: usize,
        logs: Option<&Path>,
    ) -> anyhow::Result<LocalCluster> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let spawn = |args: Vec<String>| -> anyhow::Result<Child> {
            let mut cmd = Command::new(&exe);
            cmd.arg("--config")
                .arg(config_path)
                .arg("cluster")
                .args(&args)
                .stdin(Stdio::null());
            if let Some(dir) = logs {
                let port = args.iter().skip_while(|a| *a != "--port").nth(1);
                let name = format!(
                    "{}-{}.log",
                    args[0],
                    port.map_or("scheduler", |p| p.as_str())
                );
                let file = std::fs::File::create(dir.join(&name))
                    .with_context(|| format!("creating {}", dir.join(&name).display()))?;
                cmd.stderr(file);
            }
            cmd.spawn()
                .with_context(|| format!("starting `ledgerflow cluster {}`", args.join(" ")))
        };
        let mut cluster = LocalCluster {
            children: vec![spawn(vec![
                "scheduler".into(),
                "--bind".into(),
                bind.to_string(),
            ])?],
            url: format!("df://{bind}"),
        };
        for i in 0..executors {
            let port = bind.port() + 1 + 2 * i as u16;
            cluster.children.push(spawn(vec![
                "executor".into(),
                "--scheduler".into(),
                bind.to_string(),
                "--bind".into(),
                bind.ip().to_string(),
                "--port".into(),
                port.to_string(),
                "--slots".into(),
                slots.to_string(),
            ])?);
        }
        Ok(cluster)
    }

    /// Which child exited, if one did (0 is the scheduler).
    pub(crate) fn exited(&mut self) -> Option<usize> {
        self.children
            .iter_mut()
            .position(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// The children's process ids (0 is the scheduler).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// SIGTERM to all, then SIGKILL to whoever is left after 5 s.
    pub(crate) async fn stop(mut self) {
        for child in &mut self.children {
            // SAFETY: signalling a child we started and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the scheduler and the executors as children of this process and
/// stops them all together.
async fn up(
    config_path: &Path,
    executors: usize,
    bind: SocketAddr,
    slots: usize,
) -> anyhow::Result<u8> {
    let mut cluster = LocalCluster::start(config_path, executors, bind, slots, None)?;
    eprintln!(
        "cluster up: a scheduler at {} and {executors} executor(s) x {slots} slots; set [engine] mode = \"ballista\", url = \"{}\" (Ctrl-C stops them)",
        cluster.url, cluster.url
    );
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let notify = stop.clone();
    crate::signals::on_shutdown("stopping the cluster", move || notify.notify_one())?;
    let exited = loop {
        tokio::select! {
            _ = stop.notified() => break None,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if let Some(i) = cluster.exited() {
                    break Some(i);
                }
            }
        }
    };
    cluster.stop().await;
    match exited {
        Some(0) => anyhow::bail!("the scheduler exited; the cluster is stopped"),
        Some(i) => anyhow::bail!("executor {i} exited; the cluster is stopped"),
        None => Ok(0),
    }
}
