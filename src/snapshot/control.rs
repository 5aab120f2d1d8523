//! Lets the stream stop a table's copies: the TRUNCATE barrier of DESIGN.md rule 8.
//!
//! Copies run alongside the stream (rule 3). A copy's snapshot may predate a TRUNCATE
//! the stream applies; its rows, landing after the TRUNCATE, would resurrect what was
//! truncated. So a TRUNCATE first cancels the table's copies and waits until none holds
//! the table's gate — a copy holds it from before its insert starts until the insert has
//! returned or been abandoned — and only then empties the ClickHouse table.
//!
//! ```text
//!   copy:     enter() ─► (cancelled? skip) ─► COPY ─► insert … check is_cancelled() … ─► leave
//!   truncate: cancel_and_wait() ─► no copy inside ─► TRUNCATE ─► snapshot complete
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// The gates of every destination table, shared by the copy workers and the stream.
#[derive(Debug, Default)]
pub struct CopyControl {
    gates: Mutex<HashMap<String, Arc<GateState>>>,
}

/// One table's barrier state: how many TRUNCATEs it has seen, and which copies are
/// inside.
#[derive(Debug, Default)]
struct GateState {
    truncates: AtomicU64,
    inside: Arc<RwLock<()>>,
}

/// A copy's view of its table's gate, taken before the copy's snapshot: the copy is
/// cancelled by any TRUNCATE after that moment, never by an earlier one (a partition
/// attached after a TRUNCATE is still copied).
#[derive(Clone, Debug)]
pub struct TableGate {
    state: Arc<GateState>,
    seen: u64,
}

/// Held by a copy from before its insert starts until the insert is over.
#[derive(Debug)]
pub struct CopyPass {
    _guard: OwnedRwLockReadGuard<()>,
}

impl CopyControl {
    /// The gate of a destination table as of now (created on first use).
    pub fn gate(&self, table: &str) -> TableGate {
        let mut gates = match self.gates.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let state = gates.entry(table.to_string()).or_default().clone();
        let seen = state.truncates.load(Ordering::Acquire);
        TableGate { state, seen }
    }
}

impl TableGate {
    /// Enters the gate for one copy; `None` once a TRUNCATE cancelled it.
    pub async fn enter(&self) -> Option<CopyPass> {
        if self.is_cancelled() {
            return None;
        }
        let guard = self.state.inside.clone().read_owned().await;
        // A cancel between the check and the lock is seen here, inside.
        if self.is_cancelled() {
            return None;
        }
        Some(CopyPass { _guard: guard })
    }

    /// Whether a TRUNCATE came since this view was taken (checked while rows stream).
    pub fn is_cancelled(&self) -> bool {
        self.state.truncates.load(Ordering::Acquire) != self.seen
    }

    /// Cancels every copy of the table that started before now and waits until none is
    /// inside any more.
    pub async fn cancel_and_wait(&self) {
        self.state.truncates.fetch_add(1, Ordering::AcqRel);
        drop(self.state.inside.write().await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_cancel_waits_for_the_copy_inside_and_bars_later_ones() {
        let control = Arc::new(CopyControl::default());
        let gate = control.gate("t");
        let pass = gate.enter().await;
        assert!(pass.is_some());
        let waiter = {
            let gate = control.gate("t");
            tokio::spawn(async move { gate.cancel_and_wait().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a copy is still inside");
        assert!(gate.is_cancelled(), "the copy inside sees the cancel");
        drop(pass);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap();
        assert!(
            gate.enter().await.is_none(),
            "no copy enters after a cancel"
        );
        assert!(
            control.gate("other").enter().await.is_some(),
            "other tables are untouched"
        );
    }
}
