//! A snapshot held open for a multiset (keyless) table's copy: taken before the stream
//! applies any change of the table, exported, and imported by the copy whenever it runs
//! — also again after a transient failure, so a retried copy reads the very same rows
//! at the very same ctids and its rows replace those of the failed attempt. The stream
//! skips the transactions it saw ([`super::visibility`]); once the copy is done the
//! holding transaction ends, so it keeps back vacuum no longer than needed.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio_postgres::Client;

use super::visibility::CopyVisibility;
use super::SnapshotError;
use crate::config::PgEndpoint;
use crate::source::connect;
use crate::source::row::column;

/// An exported snapshot and the open transaction that keeps it importable.
pub struct HeldSnapshot {
    /// The `pg_export_snapshot()` name.
    pub id: String,
    /// What the stream must skip.
    pub seen: CopyVisibility,
    holder: Mutex<Option<Client>>,
}

impl fmt::Debug for HeldSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldSnapshot")
            .field("id", &self.id)
            .field("seen", &self.seen)
            .finish()
    }
}

impl HeldSnapshot {
    /// Takes a snapshot that sees every transaction older than `min_xmin` (rule 3)
    /// and holds it.
    pub async fn take(ep: &PgEndpoint, min_xmin: Option<u64>) -> Result<Self, SnapshotError> {
        let pg = connect::connect(ep).await?;
        loop {
            // Idle in its transaction by design: a server-wide idle timeout must not
            // end it (SET LOCAL: also right through a transaction pooler).
            pg.batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL idle_in_transaction_session_timeout = 0",
            )
            .await
                .map_err(SnapshotError::Catalog)?;
            // The insert position, not the write position: under `synchronous_commit =
            // off` a transaction is visible before its commit record is written, and
            // every commit the snapshot sees must lie at or before `through`.
            let row = pg
                .query_one(
                    &format!(
                        "SELECT txid_current_snapshot()::text, pg_export_snapshot(), {}::text",
                        crate::source::WAL_INSERT_POSITION_SQL
                    ),
                    &[],
                )
                .await
                .map_err(SnapshotError::Catalog)?;
            let snapshot: String = column(&row, 0, "reading the copy snapshot")?;
            let id: String = column(&row, 1, "exporting the copy snapshot")?;
            let lsn: String = column(&row, 2, "reading the WAL position")?;
            let through = lsn
                .parse()
                .map_err(|_| SnapshotError::State(format!("unreadable WAL position {lsn:?}")))?;
            let seen = CopyVisibility::from_snapshot_text(&snapshot, through)
                .map_err(|e| SnapshotError::State(e.to_string()))?;
            if min_xmin.is_none_or(|min| seen.xmin >= min) {
                return Ok(HeldSnapshot {
                    id,
                    seen,
                    holder: Mutex::new(Some(pg)),
                });
            }
            // An older transaction still runs: wait for it (see `copy_job`).
            pg.batch_execute("ROLLBACK")
                .await
                .map_err(SnapshotError::Catalog)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether the holding transaction is still open (the snapshot importable).
    pub fn is_held(&self) -> bool {
        self.holder
            .lock()
            .map(|h| h.as_ref().is_some_and(|c| !c.is_closed()))
            .unwrap_or(false)
    }

    /// Ends the holding transaction: the copy is done.
    pub fn release(&self) {
        if let Ok(mut holder) = self.holder.lock() {
            holder.take();
        }
    }
}
