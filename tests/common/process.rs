//! The `pgch` binary as a child process: started with a `PGCH__…` environment, killed
//! with SIGKILL (nothing flushed, nothing acknowledged) or stopped with SIGTERM.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `pgch <args>` once to its end with exactly `env` (and `PATH`), nothing read
/// from stdin, and returns what it printed: the one-shot commands (`status`, `resync`).
pub fn pgch_output(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgch"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run pgch")
}

/// A running `pgch run`.
pub struct PgchProcess {
    child: Child,
    pub log: PathBuf,
}

impl PgchProcess {
    /// Starts `pgch run`; its stderr goes to `log` (appended, so restarts share one file).
    pub fn run(env: &[(String, String)], extra: &[(&str, &str)], log: PathBuf) -> PgchProcess {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgch"));
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        PgchProcess {
            child: cmd.spawn().expect("start pgch"),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it has exited, and how.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("reap pgch")
    }

    /// Sends a signal (SIGTERM, SIGSTOP, SIGCONT…).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM and wait for the exit (at most `limit`, then SIGKILL and panic).
    pub fn terminate(mut self, limit: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("pgch did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and a clean exit (0) within 60 s: a graceful shutdown drains what it
    /// holds and exits 0, so anything else fails the test, with the log.
    pub fn stop(self) {
        let log = self.log.clone();
        let status = self.terminate(Duration::from_secs(60));
        assert!(
            status.success(),
            "pgch exited with {status:?} on SIGTERM\n--- pgch log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Waits (on a blocking thread, so the test's runtime goes on) for pgch to stop by
    /// itself with exit code 1 — how it refuses to go on: a resync required, a setup
    /// broken — and returns its log.
    pub async fn wait_refusal(self, limit: Duration) -> String {
        let log = self.log.clone();
        let status = tokio::task::spawn_blocking(move || self.wait(limit))
            .await
            .expect("wait for pgch");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let status = status.unwrap_or_else(|| panic!("pgch kept running:\n{text}"));
        assert_eq!(status.code(), Some(1), "{text}");
        text
    }

    /// Waits for an exit on its own.
    pub fn wait(mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for PgchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pgch run` inside the test's own process (`pgch::cdc::run` on a task), for tests that
/// read its in-process state or its error; stopped the way SIGTERM stops the binary.
pub struct InProcessRun {
    task: tokio::task::JoinHandle<Result<(), pgch::cdc::RunError>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl InProcessRun {
    /// Starts it with `settings`.
    pub fn start(settings: &pgch::config::Settings) -> InProcessRun {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let settings = settings.clone();
        let task = tokio::spawn(async move {
            pgch::cdc::run(&settings, async {
                let _ = rx.await;
            })
            .await
        });
        InProcessRun { task, stop }
    }

    /// Whether it has ended (by itself: a failure).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks it to stop and expects it to end without an error.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the pgch task")
            .expect("pgch run ends without an error");
    }
}

/// A hold on every copy right after it takes its snapshot (`PGCH_FAILPOINT_HOLD` at
/// `before_copy`), for as long as its file exists: tests act while no snapshot row has
/// landed, then release it.
pub struct CopyHold {
    path: PathBuf,
    spec: String,
}

impl CopyHold {
    /// A hold in force from the start.
    pub fn held() -> CopyHold {
        let hold = CopyHold::released();
        hold.hold();
        hold
    }

    /// A hold not in force until [`CopyHold::hold`].
    pub fn released() -> CopyHold {
        let path = std::env::temp_dir().join(pgch::testkit::unique_name("hold-copy"));
        let spec = format!("{}={}", pgch::failpoint::BEFORE_COPY, path.display());
        CopyHold { path, spec }
    }

    /// The variable that gives pgch the hold.
    pub fn env(&self) -> (&str, &str) {
        ("PGCH_FAILPOINT_HOLD", self.spec.as_str())
    }

    /// Copies from now on wait at the failpoint.
    pub fn hold(&self) {
        std::fs::write(&self.path, b"hold").expect("write the hold file");
    }

    /// Held copies go on.
    pub fn release(&self) {
        std::fs::remove_file(&self.path).expect("remove the hold file");
    }
}
