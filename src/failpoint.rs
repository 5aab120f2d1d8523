//! Failpoints: named moments where a test makes pgch die, to prove a crash there loses
//! nothing. Compiled in only with the `failpoints` feature (tests); otherwise every
//! [`hit`] is an empty inline function.
//!
//! `PGCH_FAILPOINT=<name>:<n>` kills the process with SIGKILL at the n-th time `name`
//! is reached — no destructor runs, no buffer is flushed, exactly like `kill -9`.
//! `PGCH_FAILPOINT_HOLD=<name>=<file>` pauses at `name` while the file exists.

/// Between every insert of a flush having returned and the acknowledgement of its commits.
pub const AFTER_INSERT_BEFORE_ACK: &str = "after_insert_before_ack";

/// After a copy partition took its snapshot, before it reads a row:
/// `PGCH_FAILPOINT_HOLD=before_copy=<file>` holds every copy there while `<file>`
/// exists, so a test can act while the snapshot has not landed.
pub const BEFORE_COPY: &str = "before_copy";

/// Waits here while the hold file named for `name` exists.
#[cfg(feature = "failpoints")]
pub async fn hold(name: &str) {
    let Ok(spec) = std::env::var("PGCH_FAILPOINT_HOLD") else {
        return;
    };
    let Some((wanted, path)) = spec.split_once('=') else {
        return;
    };
    if wanted != name {
        return;
    }
    while std::path::Path::new(path).exists() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits at a failpoint (not compiled in).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn hold(_name: &str) {}

/// Reached a failpoint; dies here if the environment says so.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("PGCH_FAILPOINT") else {
        return;
    };
    let Some((wanted, n)) = spec.split_once(':') else {
        return;
    };
    if wanted != name {
        return;
    }
    let count = HITS.fetch_add(1, Ordering::SeqCst) + 1;
    if n.parse::<u64>().is_ok_and(|n| n == count) {
        eprintln!("pgch: failpoint {name} reached (hit {count}): SIGKILL");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Reached a failpoint (not compiled in).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
