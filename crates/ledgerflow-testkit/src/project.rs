//! A temporary ledgerflow project on disk, driven through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::serving::{Serving, TestDb};

pub struct TestProject {
    pub dir: TempDir,
    pub bin: PathBuf,
    pub db: TestDb,
    /// Set on every command (e.g. an S3 server's credentials).
    pub env: Vec<(String, String)>,
}

impl TestProject {
    /// `ledgerflow init` in a fresh temp dir, serving into `serving`.
    pub async fn new(bin: &Path, serving: Serving) -> TestProject {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = TestDb::create(serving, dir.path()).await;
        let project = TestProject {
            dir,
            bin: bin.to_path_buf(),
            db,
            env: Vec::new(),
        };
        let out = project.cmd(&["init", "."]).output().expect("run init");
        // init refuses nothing here: the temp dir is empty.
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        project.set_config("url = \"sqlite://serving.db\"", &project.db.serving_toml());
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("ledgerflow.toml")
    }

    /// Replaces one exact piece of ledgerflow.toml.
    pub fn set_config(&self, from: &str, to: &str) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).expect("read config");
        assert!(text.contains(from), "config has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write config");
    }

    /// Appends `toml` (whole sections) to ledgerflow.toml.
    pub fn append_config(&self, toml: &str) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).expect("read config");
        std::fs::write(&path, format!("{text}\n{toml}\n")).expect("write config");
    }

    /// The binary, in the project dir, with a clean environment for the
    /// variables that would override the config.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_via(&[], args)
    }

    /// The binary run through `wrapper` (e.g. `ip netns exec NS`).
    pub fn cmd_via(&self, wrapper: &[String], args: &[&str]) -> Command {
        let mut c = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        c.current_dir(self.path())
            .args(args)
            .env_remove("LEDGERFLOW_SERVING_URL")
            .env_remove("LEDGERFLOW_BATCH_URL")
            .env_remove("LEDGERFLOW_SPEED_URL")
            .env_remove("LEDGERFLOW_FAILPOINT")
            .env("LEDGERFLOW_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs the binary; panics with its output unless the exit code is `code`.
    pub fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.cmd(args).output().expect("spawn ledgerflow");
        assert_eq!(
            out.status.code(),
            Some(code),
            "ledgerflow {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        self.expect(args, 0)
    }

    /// `generate` a few days at a small scale (`speed` days go to the landing dir).
    pub fn generate(&self, from: &str, to: &str, scale: &str, speed_days: &[&str], extra: &[&str]) {
        let speed = if speed_days.is_empty() {
            "1999-01-01".to_string()
        } else {
            speed_days.join(",")
        };
        let mut args = vec![
            "generate",
            "--from",
            from,
            "--to",
            to,
            "--scale",
            scale,
            "--speed-days",
            &speed,
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    pub async fn drop_db(self) {
        self.db.drop().await;
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Rewrites a Parquet file through `f` (to corrupt a column's name or type).
pub fn rewrite_parquet(
    path: &Path,
    f: impl Fn(arrow::record_batch::RecordBatch) -> arrow::record_batch::RecordBatch,
) {
    let file = std::fs::File::open(path).expect("open parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192)
        .expect("parquet reader");
    let batches: Vec<_> = reader.map(|b| f(b.expect("batch"))).collect();
    let out = std::fs::File::create(path).expect("create parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(out, batches[0].schema(), None).expect("writer");
    for b in &batches {
        w.write(b).expect("write");
    }
    w.close().expect("close");
}

/// The data files of a partition, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    files
}

/// Every value of a string column of a Parquet file.
pub fn string_column(path: &Path, column: &str) -> Vec<String> {
    let file = std::fs::File::open(path).expect("open parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192)
        .expect("parquet reader");
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let col = batch.column_by_name(column).expect("column");
        let strings = col
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("a Utf8 column");
        out.extend(strings.iter().map(|s| s.expect("non-null").to_string()));
    }
    out
}

/// A long-running command of a project (scheduler, realtime loop) in the
/// background; its stderr log goes to a file in the project.
pub struct Background {
    pub child: std::process::Child,
    log: PathBuf,
}

impl Background {
    pub fn start(p: &TestProject, args: &[&str], env: &[(&str, &str)]) -> Background {
        Self::start_via(p, &[], args, env)
    }

    /// Through `wrapper`, as [`TestProject::cmd_via`].
    pub fn start_via(
        p: &TestProject,
        wrapper: &[String],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Background {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let log = p.path().join(format!("{}-{stamp}.log", args[0]));
        let mut cmd = p.cmd_via(wrapper, args);
        cmd.env("LEDGERFLOW_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Background {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    pub fn wait_log(&self, text: &str, timeout: std::time::Duration) {
        let start = std::time::Instant::now();
        while !self.log().contains(text) {
            assert!(
                start.elapsed() < timeout,
                "no `{text}` within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, then asserts a clean exit (0); returns it.
    pub fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        assert_eq!(code, 0, "{:?} exit; log:\n{}", self.log, self.log());
        code
    }

    /// SIGKILL, like a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test that fails (panics) before stopping its processes must not leave
/// them running: a leftover scheduler or executor would keep its ports and
/// its project's locks, and act on the next test's data.
impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A command stopped at a failpoint: started with it armed and returned
/// once it is reached. [`release`](Self::release) lets it go on (through
/// `LEDGERFLOW_FAILPOINT_RELEASE`), [`kill`](Self::kill) crashes it there.
pub struct Paused {
    child: std::process::Child,
    release: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Paused {
    pub fn start(p: &TestProject, args: &[&str], failpoint: &str, env: &[(&str, &str)]) -> Paused {
        use std::io::BufRead;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let release = p.path().join(format!(".release-{stamp}"));
        let mut cmd = p.cmd(args);
        cmd.env("LEDGERFLOW_FAILPOINT", failpoint)
            .env("LEDGERFLOW_FAILPOINT_RELEASE", &release)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ledgerflow");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (lines, log) = (child.stderr.take().expect("piped"), stderr.clone());
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(lines).lines().map_while(Result::ok) {
                if line.contains("failpoint") && line.contains("reached") {
                    let _ = tx.send(());
                }
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        if rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .is_err()
        {
            let _ = child.kill();
            panic!(
                "ledgerflow {args:?}: failpoint {failpoint} not reached; stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
        Paused {
            child,
            release,
            stderr,
            reader: Some(reader),
        }
    }

    /// Lets it go on and waits for it to exit.
    pub fn release(mut self) -> Output {
        std::fs::write(&self.release, b"").expect("release file");
        let stdout = {
            let mut s = Vec::new();
            if let Some(mut out) = self.child.stdout.take() {
                std::io::Read::read_to_end(&mut out, &mut s).expect("read stdout");
            }
            s
        };
        let status = self.child.wait().expect("wait");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Output {
            status,
            stdout,
            stderr: self.stderr.lock().unwrap().clone().into_bytes(),
        }
    }

    /// SIGKILL at the failpoint, like a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// As for [`Background`]: a failing test leaves no process paused at a
/// failpoint.
impl Drop for Paused {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
