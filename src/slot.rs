//! One slot, one history (DESIGN.md rule 1). On first start pgch creates its slot and
//! records, in `_pgch_state`, the source's `system_identifier`, the slot's consistent
//! point and the xmax of a snapshot taken right after the slot existed. Later starts
//! must find the same system and the slot; anything else is a fatal "resync required",
//! never a silent new slot. A slot of that name with no state is refused.
//!
//! `pgch resync` ([`crate::resync`]) is the one place a recorded slot is replaced: it
//! uses the same [`SourceSession::create_and_record`] as a first start, so a resynced
//! pipeline is indistinguishable from a fresh one. While a resync is unfinished,
//! [`ensure_slot`] refuses to start.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{PgEndpoint, Settings};
use crate::lsn::Lsn;
use crate::sink::client::SinkError;
use crate::sink::state::{keys, StateStore};
use crate::source::connect;
use crate::source::row::{column, ColumnError};
use crate::source::walsender::{
    supports_failover_slots, SlotSnapshot, SystemInfo, Walsender, WalsenderError,
};

/// What the stream and the snapshot need to know about the slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotIdentity {
    pub system_id: String,
    pub consistent_point: Lsn,
    /// Copies need a snapshot whose xmin is at least this.
    pub snapshot_xmax: u64,
    /// Whether the slot was created by this start.
    pub created: bool,
}

/// Why the slot cannot be used; every variant names the fix.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("resync required: {0}. Run `pgch resync` to copy every table again from a new slot")]
    ResyncRequired(String),
    #[error("replication slot \"{0}\" exists, but no pgch state in ClickHouse belongs to it: drop it (SELECT pg_drop_replication_slot('{0}');) or choose another source.slot")]
    ForeignSlot(String),
    #[error("a resync is unfinished: run `pgch resync` again (it resumes; `pgch run` starts once it has completed)")]
    ResyncUnfinished,
    #[error("replication slot \"{slot}\" is in use by process {pid}: stop `pgch run` (or whatever reads the slot) before `pgch resync`")]
    InUse { slot: String, pid: i32 },
    #[error(transparent)]
    Walsender(#[from] WalsenderError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot read the slot: {0}")]
    Postgres(String),
    #[error(transparent)]
    Column(#[from] ColumnError),
}

/// The slot as `pg_replication_slots` shows it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRow {
    /// `wal_status` (Postgres 13+), e.g. `reserved` or `lost`.
    pub wal_status: Option<String>,
    /// The process streaming from it, if any.
    pub active_pid: Option<i32>,
    /// `failover` (Postgres 17+): whether standbys that synchronize slots keep a copy.
    pub failover: Option<bool>,
}

impl SlotRow {
    /// Whether Postgres removed WAL the slot still needed (`max_slot_wal_keep_size`).
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

/// A walsender session and an ordinary connection to the source, with what
/// `IDENTIFY_SYSTEM` said: everything needed to inspect, drop and create the slot.
pub struct SourceSession {
    walsender: Walsender,
    pg: tokio_postgres::Client,
    pub system: SystemInfo,
    /// `source.failover_slot`: new slots are failover slots (Postgres 17+).
    failover: bool,
    /// `source.primary_url`: asked for a running-transactions record while a slot is
    /// made on a standby.
    primary: Option<PgEndpoint>,
}

impl SourceSession {
    /// Connects both sessions and identifies the system.
    pub async fn open(settings: &Settings) -> Result<SourceSession, SlotError> {
        let mut walsender = Walsender::connect(&settings.source.endpoint).await?;
        let system = walsender.identify_system().await?;
        let pg = connect::connect(&settings.source.endpoint)
            .await
            .map_err(|e| SlotError::Postgres(e.message))?;
        Ok(SourceSession {
            walsender,
            pg,
            system,
            failover: settings.source.failover_slot,
            primary: settings.source.primary.clone(),
        })
    }

    /// The slot named `slot`, if it exists.
    pub async fn slot_row(&mut self, slot: &str) -> Result<Option<SlotRow>, SlotError> {
        let status_column = if self.walsender.server_version >= 130000 {
            "wal_status::text"
        } else {
            "NULL::text"
        };
        let failover_column = if supports_failover_slots(self.walsender.server_version) {
            "failover"
        } else {
            "NULL::bool"
        };
        let row = self
            .pg
            .query_opt(
                &format!(
                    "SELECT {status_column}, active_pid, {failover_column} FROM pg_catalog.pg_replication_slots WHERE slot_name = $1"
                ),
                &[&slot],
            )
            .await
            .map_err(|e| SlotError::Postgres(e.to_string()))?;
        const WHAT: &str = "reading the slot (pg_replication_slots)";
        let Some(r) = row else { return Ok(None) };
        Ok(Some(SlotRow {
            wal_status: column(&r, 0, WHAT)?,
            active_pid: column(&r, 1, WHAT)?,
            failover: column(&r, 2, WHAT)?,
        }))
    }

    /// Makes an existing slot a failover slot when `source.failover_slot` asks for it
    /// and the server has failover slots (Postgres 17+). A failure is only logged:
    /// streaming works without it, and `pgch check` reports the slot as not ready.
    pub async fn ensure_failover(&mut self, slot: &str, row: &SlotRow) {
        if !self.failover || row.failover != Some(false) {
            return;
        }
        match self.walsender.set_slot_failover(slot, true).await {
            Ok(()) => tracing::info!(
                slot = %slot,
                "the replication slot had failover off: turned it on (ALTER_REPLICATION_SLOT … (FAILOVER true)), so standbys that synchronize slots keep it"
            ),
            Err(e) => tracing::warn!(
                slot = %slot,
                error = %e,
                "could not turn failover on for the replication slot; a failover would lose it (set source.failover_slot = false to stop trying)"
            ),
        }
    }

    /// Drops the slot (it must not be in use).
    pub async fn drop_slot(&mut self, slot: &str) -> Result<(), SlotError> {
        self.walsender.drop_slot(slot, false).await?;
        Ok(())
    }

    /// Creates the slot and records its identity, exactly as a first start does: the
    /// `slot_creating` mark first, then the slot, then consistent point, xmax and last
    /// the `system_identifier`, which makes the slot this pipeline's for good (rule 1).
    pub async fn create_and_record(
        mut self,
        slot: &str,
        state: &StateStore<'_>,
    ) -> Result<SlotIdentity, SlotError> {
        let system_id = self.system.system_id.clone();
        state.put(keys::SLOT_CREATING, &system_id).await?;
        let on_standby: bool = column(
            &self
                .pg
                .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
                .await
                .map_err(|e| SlotError::Postgres(e.to_string()))?,
            0,
            "reading pg_is_in_recovery()",
        )?;
        let created = if on_standby {
            // Postgres makes no failover slot on a standby; the slot is the standby's.
            let nudge = tokio::spawn(nudge_primary(self.primary.clone()));
            let created = self
                .walsender
                .create_slot_with(slot, false, SlotSnapshot::NoExport, false)
                .await;
            nudge.abort();
            created?
        } else {
            self.walsender
                .create_slot_with(slot, false, SlotSnapshot::NoExport, self.failover)
                .await?
        };
        self.walsender.close().await;
        // Every transaction that committed before the slot's consistent point has an
        // xid below this xmax; a snapshot with xmin >= it sees them all.
        let row = self
            .pg
            .query_one(
                "SELECT txid_snapshot_xmax(txid_current_snapshot())::int8",
                &[],
            )
            .await
            .map_err(|e| SlotError::Postgres(e.to_string()))?;
        let xmax: i64 = column(&row, 0, "reading the snapshot xmax at slot creation")?;
        state
            .put(
                keys::CONSISTENT_POINT,
                &created.consistent_point.to_string(),
            )
            .await?;
        state.put(keys::SNAPSHOT_XMAX, &xmax.to_string()).await?;
        // Last: with it the slot is ours for good (rule 1).
        state.put(keys::SYSTEM_IDENTIFIER, &system_id).await?;
        tracing::info!(slot = %slot, consistent_point = %created.consistent_point, "replication slot created");
        Ok(SlotIdentity {
            system_id,
            consistent_point: created.consistent_point,
            snapshot_xmax: xmax.max(0) as u64,
            created: true,
        })
    }

    /// Ends both sessions.
    pub async fn close(self) {
        self.walsender.close().await;
    }
}

/// A slot on a standby is ready once the standby replays a running-transactions record
/// from the primary, which an idle primary writes rarely. With `source.primary_url`,
/// pgch asks the primary for one each second (`pg_log_standby_snapshot()`, superuser or
/// granted); without it, or without the grant, it says what it waits for.
async fn nudge_primary(primary: Option<PgEndpoint>) {
    let client = match &primary {
        Some(ep) => match connect::connect(ep).await {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot reach source.primary_url to speed up slot creation on the standby");
                None
            }
        },
        None => None,
    };
    let mut waited = 0u32;
    let mut nudging = client.is_some();
    loop {
        if let (true, Some(client)) = (nudging, &client) {
            if let Err(e) = client
                .batch_execute("SELECT pg_catalog.pg_log_standby_snapshot()")
                .await
            {
                tracing::warn!(error = %e, "the primary refused pg_log_standby_snapshot(); waiting for its own running-transactions record instead (GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() TO <user>; speeds this up)");
                nudging = false;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += 1;
        if waited.is_multiple_of(15) {
            tracing::info!(
                waited_secs = waited,
                "creating the slot on the standby waits for a running-transactions record from the primary; it writes one every 15 s while it has writes, or run SELECT pg_log_standby_snapshot(); on the primary"
            );
        }
    }
}

/// Undoes a slot this start created, when the start failed before any table was copied
/// from it: a setup error found late (an incompatible ClickHouse table) must not leave a
/// slot holding WAL until the disk or `max_slot_wal_keep_size` runs out. The identity
/// is forgotten first and the `slot_creating` mark kept, so a slot whose drop failed is
/// still known as ours and made again by the next start.
pub async fn undo_created_slot(settings: &Settings, state: &StateStore<'_>) {
    let slot = &settings.source.slot;
    let identity = [
        keys::SYSTEM_IDENTIFIER.to_string(),
        keys::CONSISTENT_POINT.to_string(),
        keys::SNAPSHOT_XMAX.to_string(),
    ];
    if let Err(e) = state.forget(&identity).await {
        tracing::warn!(slot = %slot, error = %e, "could not forget the slot this failed start created; the next start uses it");
        return;
    }
    let dropped = match SourceSession::open(settings).await {
        Ok(mut session) => {
            let dropped = session.drop_slot(slot).await;
            session.close().await;
            dropped
        }
        Err(e) => Err(e),
    };
    match dropped {
        Ok(()) => {
            tracing::info!(slot = %slot, "dropped the replication slot this failed start created")
        }
        Err(e) => {
            tracing::warn!(slot = %slot, error = %e, "could not drop the replication slot this failed start created; the next start replaces it, or drop it: SELECT pg_drop_replication_slot('{slot}');")
        }
    }
}

/// Creates the slot on first start, or checks that the recorded one is still there.
pub async fn ensure_slot(
    settings: &Settings,
    state: &StateStore<'_>,
) -> Result<SlotIdentity, SlotError> {
    let slot = &settings.source.slot;
    let recorded = state.load().await?;
    if recorded.contains_key(keys::RESYNC) {
        return Err(SlotError::ResyncUnfinished);
    }
    let mut session = SourceSession::open(settings).await?;
    let existing = session.slot_row(slot).await?;
    if recorded.contains_key(keys::SYSTEM_IDENTIFIER) {
        let identity = verify_recorded(
            &recorded,
            &session.system.system_id,
            slot,
            existing.as_ref(),
        );
        if let (Ok(_), Some(row)) = (&identity, &existing) {
            session.ensure_failover(slot, row).await;
        }
        session.close().await;
        return identity;
    }
    if existing.is_some() {
        if recorded.get(keys::SLOT_CREATING) != Some(&session.system.system_id) {
            return Err(SlotError::ForeignSlot(slot.clone()));
        }
        // Our own slot, made by a start that died before recording it: nothing was
        // copied or acknowledged from it yet, so it is made again.
        tracing::warn!(slot = %slot, "dropping the slot a previous start created but did not record");
        session.drop_slot(slot).await?;
    }
    session.create_and_record(slot, state).await
}

/// After a lost session (a restart of the server, a failover to a standby), the server
/// the multi-host URL now leads to must still be the recorded system and have the slot
/// (rule 1): a promoted physical standby shares the `system_identifier`, and has the
/// slot only if it was synchronized there (a failover slot, Postgres 17+).
pub async fn verify_still_ours(
    settings: &Settings,
    state: &StateStore<'_>,
) -> Result<(), SlotError> {
    let recorded = state.load().await?;
    let mut session = SourceSession::open(settings).await?;
    let slot = &settings.source.slot;
    let existing = session.slot_row(slot).await?;
    let verdict = verify_recorded(
        &recorded,
        &session.system.system_id,
        slot,
        existing.as_ref(),
    );
    session.close().await;
    verdict.map(|_| ())
}

/// The recorded identity, when the source still has the same system and a usable slot;
/// otherwise "resync required" with what happened.
pub fn verify_recorded(
    recorded: &BTreeMap<String, String>,
    system_id: &str,
    slot: &str,
    existing: Option<&SlotRow>,
) -> Result<SlotIdentity, SlotError> {
    if let Some(recorded_system) = recorded.get(keys::SYSTEM_IDENTIFIER) {
        if recorded_system != system_id {
            return Err(SlotError::ResyncRequired(format!(
                "the source is a different Postgres system ({system_id} now, {recorded_system} when the slot was made: a restore or failover)"
            )));
        }
    }
    let Some(row) = existing else {
        return Err(SlotError::ResyncRequired(format!(
            "the replication slot \"{slot}\" is gone, and with it the changes since pgch last ran (after a failover: the new primary had no synchronized copy of it; on Postgres 17+ keep source.failover_slot = true and set sync_replication_slots = on on the standbys, see `pgch check`)"
        )));
    };
    if row.is_lost() {
        return Err(SlotError::ResyncRequired(format!(
            "the replication slot \"{slot}\" was invalidated (wal_status = lost, max_slot_wal_keep_size exceeded)"
        )));
    }
    Ok(SlotIdentity {
        system_id: system_id.to_string(),
        consistent_point: recorded
            .get(keys::CONSISTENT_POINT)
            .and_then(|t| t.parse().ok())
            .unwrap_or(Lsn::ZERO),
        snapshot_xmax: recorded
            .get(keys::SNAPSHOT_XMAX)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0),
        created: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> BTreeMap<String, String> {
        [
            (keys::SYSTEM_IDENTIFIER, "7000"),
            (keys::CONSISTENT_POINT, "0/16B3748"),
            (keys::SNAPSHOT_XMAX, "751"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn healthy() -> SlotRow {
        SlotRow {
            wal_status: Some("reserved".into()),
            active_pid: None,
            failover: None,
        }
    }

    #[test]
    fn the_recorded_slot_on_the_same_system_is_used() {
        let id = verify_recorded(&recorded(), "7000", "s", Some(&healthy())).unwrap();
        assert_eq!(id.snapshot_xmax, 751);
        assert_eq!(id.consistent_point, "0/16B3748".parse().unwrap());
        assert!(!id.created);
    }

    #[test]
    fn a_missing_lost_or_foreign_system_slot_is_resync_required() {
        let lost = SlotRow {
            wal_status: Some("lost".into()),
            active_pid: None,
            failover: None,
        };
        for (system, row, words) in [
            ("7000", None, "is gone"),
            ("7000", Some(&lost), "invalidated"),
            ("8000", Some(&healthy()), "different Postgres system"),
        ] {
            let err = verify_recorded(&recorded(), system, "s", row)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("resync required")
                    && err.contains(words)
                    && err.contains("pgch resync"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unfinished_resync_names_the_command_to_finish_it() {
        let err = SlotError::ResyncUnfinished.to_string();
        assert!(
            err.contains("unfinished") && err.contains("pgch resync"),
            "{err}"
        );
    }
}
