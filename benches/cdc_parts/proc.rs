//! The processes the CDC bench runs and watches: a child reaped with `wait4` (its own
//! rusage), its output in a file, SIGTERM, peak RSS from /proc, and the CPU of the
//! walsenders serving it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{children_of, process_hwm_kib, process_ticks, stat_fields, ticks, timeval};
use crate::BenchResult;

/// A child process started by the bench; killed and reaped on drop unless waited for.
pub struct Running {
    name: String,
    child: Child,
    pid: libc::pid_t,
    pub started: Instant,
    output: PathBuf,
    reaped: bool,
}

/// How a child ended.
pub struct Exited {
    /// From spawn to reaping.
    pub wall: Duration,
    pub user: Duration,
    pub sys: Duration,
    /// `ru_maxrss`: the peak resident set size, in KiB.
    pub max_rss_kib: u64,
    pub log: String,
}

impl Exited {
    pub fn cpu(&self) -> Duration {
        self.user + self.sys
    }
}

impl Running {
    /// Starts `cmd` with stdin closed and stdout and stderr into the file `output`.
    pub fn spawn(name: &str, mut cmd: Command, output: &Path) -> BenchResult<Running> {
        let file = File::create(output).map_err(|e| format!("{}: {e}", output.display()))?;
        let out = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", output.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(file));
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Running {
            name: name.to_string(),
            pid: child.id() as libc::pid_t,
            child,
            started,
            output: output.to_path_buf(),
            reaped: false,
        })
    }

    /// What the child wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Whether the child has exited (a zombie not yet reaped, or gone).
    pub fn exited(&self) -> bool {
        stat_fields(self.pid)
            .and_then(|f| f.first().cloned())
            .is_none_or(|state| state == "Z" || state == "X")
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends SIGINT (perf then writes its data and exits 0).
    pub fn interrupt(&self) {
        if !self.reaped {
            // SAFETY: kill has no memory preconditions; pid is our unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGINT) };
        }
    }

    /// VmHWM of the live child, in KiB.
    pub fn hwm_kib(&self) -> Option<u64> {
        process_hwm_kib(self.pid)
    }

    /// CPU time of the live child so far.
    pub fn cpu(&self) -> Option<Duration> {
        process_ticks(self.pid).map(ticks)
    }

    /// Waits until the output contains `needle`; returns the time since spawn.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> BenchResult<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(self.started.elapsed());
            }
            if self.exited() {
                return Err(format!(
                    "{} exited before logging {needle:?}; output:\n{}",
                    self.name,
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not log {needle:?} within {} s; output:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM (pgch then flushes, acknowledges and exits 0).
    pub fn terminate(&self) {
        if !self.reaped {
            // SAFETY: kill has no memory preconditions; pid is our unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
        }
    }

    /// Reaps the child, calling `tick` every few milliseconds meanwhile; fails when it
    /// does not exit 0 within `timeout` (then it is killed).
    pub fn wait(&mut self, timeout: Duration, tick: impl FnMut()) -> BenchResult<Exited> {
        let (status, exited) = self.reap(timeout, tick)?;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(format!(
                "{} failed (wait status {status:#x}); output:\n{}",
                self.name, exited.log
            ));
        }
        Ok(exited)
    }

    /// Reaps the child however it ends (within `timeout`, else it is killed); returns
    /// its wait status too.
    pub fn reap(
        &mut self,
        timeout: Duration,
        mut tick: impl FnMut(),
    ) -> BenchResult<(libc::c_int, Exited)> {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let deadline = Instant::now() + timeout;
        loop {
            // SAFETY: both pointers are to live locals of the right types.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == self.pid {
                break;
            }
            if r == -1 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(format!("wait4 on {}: {e}", self.name));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not exit within {} s; killed. output:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.log()
                ));
            }
            tick();
            std::thread::sleep(Duration::from_millis(2));
        }
        self.reaped = true;
        let wall = self.started.elapsed();
        let exited = Exited {
            wall,
            user: timeval(usage.ru_utime),
            sys: timeval(usage.ru_stime),
            // Linux reports ru_maxrss in KiB.
            max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            log: self.log(),
        };
        Ok((status, exited))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time of the walsenders (children of the postmaster whose title says so) seen
/// while sampling. Each process's last sample counts: up to one sampling period per
/// process is missed, so sample often near the end.
pub struct Walsenders {
    postmaster: Option<i32>,
    ticks: HashMap<i32, u64>,
    last_scan: Option<Instant>,
    last_sample: Option<Instant>,
}

/// How often the walsenders' CPU is read at most.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// How often the postmaster's children are listed again (known walsenders are read
/// at every sample).
const RESCAN_EVERY: Duration = Duration::from_millis(200);

impl Walsenders {
    pub fn new(postmaster: Option<i32>) -> Self {
        Walsenders {
            postmaster,
            ticks: HashMap::new(),
            last_scan: None,
            last_sample: None,
        }
    }

    pub fn sample(&mut self) {
        let Some(postmaster) = self.postmaster else {
            return;
        };
        if self.last_sample.is_some_and(|t| t.elapsed() < SAMPLE_EVERY) {
            return;
        }
        self.last_sample = Some(Instant::now());
        if self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) {
            self.last_scan = Some(Instant::now());
            for pid in children_of(postmaster) {
                let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&title).contains("walsender") {
                    self.ticks.entry(pid).or_insert(0);
                }
            }
        }
        for (pid, seen) in self.ticks.iter_mut() {
            if let Some(t) = process_ticks(*pid) {
                *seen = t;
            }
        }
    }

    pub fn total(&self) -> Option<Duration> {
        self.postmaster
            .map(|_| ticks(self.ticks.values().sum::<u64>()))
    }
}
