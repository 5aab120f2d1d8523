//! Failpoints: named moments where a test makes pgch die, to prove a crash there loses
//! nothing. Compiled in only with the `failpoints` feature (tests); otherwise every
//! [`hit`] is an empty inline function.
//!
//! `PGCH_FAILPOINT=<name>:<n>` kills the process with SIGKILL at the n-th time `name`
//! is reached — no destructor runs, no buffer is flushed, exactly like `kill -9`.

/// Between every insert of a flush having returned and the acknowledgement of its commits.
pub const AFTER_INSERT_BEFORE_ACK: &str = "after_insert_before_ack";

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
