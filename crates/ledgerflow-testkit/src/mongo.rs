//! A MongoDB wire-protocol server of a test's own: SecantusDB
//! (`secantusd-py`, installed by `.ci/run` into a venv), on a free port,
//! with its own storage directory, stopped when dropped. No mongod can be
//! installed here; the official driver talks to this one as to MongoDB.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Where the server binary is: `LEDGERFLOW_SECANTUSD`, else the venv that
/// `.ci/run` creates, else `secantusd-py` on PATH.
pub fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("LEDGERFLOW_SECANTUSD") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/ledgerflow-venv/bin/secantusd-py"));
    match venv {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("secantusd-py"),
    }
}

pub struct MongoServer {
    child: Option<Child>,
    port: u16,
    storage: tempfile::TempDir,
    sync_on_commit: bool,
    extra: Vec<String>,
}

impl MongoServer {
    /// Starts a server on a free port. `sync_on_commit` makes acknowledged
    /// writes durable, for tests that kill the server.
    pub fn start(sync_on_commit: bool) -> MongoServer {
        Self::start_with(sync_on_commit, &[])
    }

    /// With more server flags (e.g. `--oplog-max-entries 100`).
    pub fn start_with(sync_on_commit: bool, extra: &[&str]) -> MongoServer {
        let storage = tempfile::tempdir().expect("temp dir");
        let mut server = MongoServer {
            child: None,
            port: 0,
            storage,
            sync_on_commit,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(server_binary());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--storage-path")
            .arg(self.storage.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.sync_on_commit {
            cmd.arg("--sync-on-commit");
        }
        cmd.args(&self.extra);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start SecantusDB ({}): {e}; run .ci/run once, or set LEDGERFLOW_SECANTUSD",
                server_binary().display()
            )
        });
        // The server logs its port once it listens; the log is drained for
        // the server's whole life so it never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, rest)) = line.split_once("listening on ") {
                    let port = rest
                        .trim()
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok());
                    let _ = tx.send(port);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(port)) => self.port = port,
            other => {
                let _ = child.kill();
                panic!("SecantusDB did not start listening: {other:?}");
            }
        }
        self.child = Some(child);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection string the driver should use.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            for _ in 0..200 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server at once (SIGKILL), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again after [`stop`](Self::stop) or [`kill`](Self::kill).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.kill();
    }
}
