//! The `ledgerflow` binary: parses arguments, reports errors with context,
//! maps outcomes to exit codes (0 ok, 1 run failed, 2 usage/config, 99
//! skipped). Everything else lives in the library.

mod allocator;
mod bench;
mod checks_cmd;
mod cli;
#[cfg(feature = "ballista")]
mod cluster_cmd;
mod commands;
mod explain_cmd;
mod ingest_cmd;
mod progress;
mod realtime_cmd;
mod schedule;
mod serve;
mod signals;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogFormat};

/// Threads for blocking work (file I/O, SQLite, archive extraction): one
/// per core, at least 2 (an ingest's extraction holds one for its whole
/// run; its writes take the other). The rest is short reads from the page
/// cache and SQLite calls, so more threads than cores only queue for the
/// CPU, and each keeps its own allocator pages: 7 mainnet days into PostgreSQL
/// peaked at 936-969 MiB with 2 threads against 1,152 MiB with 32, a
/// landing day at 880 against 1,085-1,120 MiB, neither slower; partner
/// archive ingest the same (216-222 MB/s).
fn blocking_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// `ledgerflow runs | head` ends as any Unix tool does, by SIGPIPE, instead
/// of a panic: Rust ignores SIGPIPE, so printing to the closed pipe fails
/// and `println!` panics with a backtrace. Not for the services, which keep
/// running when whatever read their output has gone.
fn die_on_closed_stdout() {
    // SAFETY: first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Serves others until stopped: a closed log reader must not kill it.
fn is_server(command: &Command) -> bool {
    #[cfg(feature = "ballista")]
    if matches!(command, Command::Cluster(_)) {
        return true;
    }
    matches!(command, Command::Serve(_))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Schedule(_) | Command::Realtime(_));
    if !daemon && !is_server(&cli.command) {
        die_on_closed_stdout();
    }
    allocator::tune(&cli.command);
    init_logging(cli.log_format, log_level(daemon, cli.quiet, cli.verbose));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Local file reads (object_store, tokio::fs) each take a blocking
        // thread: a speed day's ~1,500 files once grew the pool to ~440
        // threads, each keeping its allocator pages (~450 MiB of RSS).
        // Beyond this many, reads queue.
        .max_blocking_threads(blocking_threads())
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code_of(&e))
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Init { dir } => commands::init(&dir),
        Command::Generate(args) => commands::generate(&cli.config, args).await,
        Command::Run(args) => commands::run(&cli.config, args).await,
        Command::Backfill(args) => commands::backfill(&cli.config, args).await,
        Command::Runs(args) => commands::runs(&cli.config, args).await,
        Command::Check(args) => checks_cmd::check(&cli.config, args).await,
        Command::Checks(args) => checks_cmd::checks(&cli.config, args).await,
        Command::Explain(args) => explain_cmd::explain(&cli.config, args).await,
        Command::Serve(args) => serve::serve(&cli.config, args).await,
        Command::Compact(args) => commands::compact(&cli.config, args).await,
        Command::Realtime(args) => realtime_cmd::realtime(&cli.config, args).await,
        Command::BenchRealtime(args) => realtime_cmd::bench(args).await,
        Command::Schedule(args) => schedule::schedule(&cli.config, args).await,
        Command::Status(args) => schedule::status(&cli.config, args).await,
        Command::Bench(args) => bench::bench(args).await,
        Command::Ingest(args) => ingest_cmd::ingest(&cli.config, args).await,
        Command::Schemas(args) => ingest_cmd::schemas(&cli.config, args),
        Command::BenchIngest(args) => ingest_cmd::bench_ingest(args).await,
        Command::BenchServe(args) => serve::bench::bench_serve(args).await,
        #[cfg(feature = "ballista")]
        Command::Cluster(args) => cluster_cmd::cluster(&cli.config, args).await,
    }
}

/// Library errors carry their own exit code (2 for configuration and usage);
/// anything else is a failed run.
fn exit_code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<ledgerflow::Error>())
        .map_or(1, |e| e.exit_code() as u8)
}

/// A one-shot command prints its result, progress and warnings; its logs
/// come with `-v`. The daemons' logs are their output. Server notices
/// (`relation ... already exists, skipping`) are debug.
fn log_level(daemon: bool, quiet: bool, verbose: u8) -> &'static str {
    match (quiet, verbose, daemon) {
        (true, _, _) => "warn",
        (false, 0, false) => "warn",
        (false, 0, true) | (false, 1, _) => "info,tokio_postgres=warn",
        (false, _, _) => "debug",
    }
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEDGERFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
