//! A PostgreSQL cluster of a test's own, on a free port, for tests that stop
//! and restart the server. initdb refuses root, so it runs as `postgres`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct Cluster {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
    /// Addresses listened on besides 127.0.0.1 (test hosts' gateways).
    listen: Vec<String>,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect("an initdb")
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// initdb + start on a free port (trust auth, user postgres).
    pub fn start() -> Cluster {
        Self::start_listening(&[])
    }

    /// Also listening on `addresses` (trusting 10.0.0.0/8), for processes
    /// in test hosts ([`crate::netns::Host`]).
    pub fn start_listening(addresses: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let c = Cluster {
            port,
            dir,
            bin: bin_dir(),
            listen: addresses.iter().map(|a| a.to_string()).collect(),
        };
        let data = c.data();
        as_postgres(
            &c.bin,
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        if !addresses.is_empty() {
            let hba = format!("{data}/pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            text.push_str("\nhost all all 10.0.0.0/8 trust\n");
            std::fs::write(&hba, text).expect("pg_hba.conf");
        }
        c.up();
        c
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn url(&self) -> String {
        self.url_at("127.0.0.1")
    }

    /// The URL through one of the addresses it listens on.
    pub fn url_at(&self, address: &str) -> String {
        format!("postgres://postgres@{address}:{}/postgres", self.port)
    }

    pub fn up(&self) {
        let mut listen = vec!["127.0.0.1".to_string()];
        listen.extend(self.listen.iter().cloned());
        let opts = format!(
            "-p {} -c listen_addresses={} -k {} -c fsync=off",
            self.port,
            listen.join(","),
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
    }

    /// Stops the server at once (connections are cut, like a crash).
    pub fn down(&self) {
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}
