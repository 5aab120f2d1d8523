//! Real servers for tests and local runs: private Postgres clusters started from the
//! machine's server binaries, and a ClickHouse HTTP endpoint (a real server named by
//! `PGCH_TEST_CLICKHOUSE_URL`, else pgch's own HTTP front over chdb). Compiled only with
//! the `testkit` feature; the daemon never uses it.
//!
//! Nothing leaks: every process and directory is owned by a guard that cleans up on
//! drop, and by a reaper process (in its own process group, so Ctrl-C does not kill it)
//! that cleans up after the test process dies however it dies.

pub mod clickhouse;
pub mod postgres;
pub mod proxy;
mod reaper;
pub mod request_watch;
pub mod services;
pub mod versions;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The `nobody` user: Postgres and PgBouncer refuse to run as root.
pub const UNPRIVILEGED_UID: u32 = 65534;
/// The `nogroup` group.
pub const UNPRIVILEGED_GID: u32 = 65534;

/// Errors of the test kit are plain text: they end a test with a readable message.
pub type KitResult<T> = Result<T, String>;

/// A free TCP port on the loopback interface.
pub fn free_port() -> KitResult<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Whether this process runs as root (servers must then drop to [`UNPRIVILEGED_UID`]).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `PGCH_TEST_SCALE` (default 1.0) multiplies data sizes, so quick runs can shrink them.
pub fn scale() -> f64 {
    std::env::var("PGCH_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0)
}

/// `n` scaled by [`scale`], at least 1.
pub fn scaled(n: u64) -> u64 {
    ((n as f64) * scale()).round().max(1.0) as u64
}

/// A name unique in this process and across concurrent test processes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}
