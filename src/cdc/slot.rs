//! One slot, one history (DESIGN.md rule 1). On first start pgch creates its slot and
//! records, in `_pgch_state`, the source's `system_identifier`, the slot's consistent
//! point and the xmax of a snapshot taken right after the slot existed. Later starts
//! must find the same system and the slot; anything else is a fatal "resync required",
//! never a silent new slot. A slot of that name with no state is refused.

use crate::config::Settings;
use crate::lsn::Lsn;
use crate::sink::client::SinkError;
use crate::sink::state::{keys, StateStore};
use crate::source::connect;
use crate::source::walsender::{SlotSnapshot, Walsender, WalsenderError};

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
    #[error(transparent)]
    Walsender(#[from] WalsenderError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot read the slot: {0}")]
    Postgres(String),
}

/// Creates the slot on first start, or checks that the recorded one is still there.
pub async fn ensure_slot(
    settings: &Settings,
    state: &StateStore<'_>,
) -> Result<SlotIdentity, SlotError> {
    let slot = &settings.source.slot;
    let recorded = state.load().await?;
    let mut walsender = Walsender::connect(&settings.source.endpoint).await?;
    let system = walsender.identify_system().await?;
    let pg = connect::connect(&settings.source.endpoint)
        .await
        .map_err(|e| SlotError::Postgres(e.message))?;
    let status_column = if walsender.server_version >= 130000 {
        "wal_status::text"
    } else {
        "NULL::text"
    };
    let existing = pg
        .query_opt(
            &format!(
                "SELECT {status_column} FROM pg_catalog.pg_replication_slots WHERE slot_name = $1"
            ),
            &[slot],
        )
        .await
        .map_err(|e| SlotError::Postgres(e.to_string()))?;
    match recorded.get(keys::SYSTEM_IDENTIFIER) {
        Some(recorded_system) => {
            if *recorded_system != system.system_id {
                return Err(SlotError::ResyncRequired(format!(
                    "the source is a different Postgres system ({} now, {} when the slot was made: a restore or failover)",
                    system.system_id, recorded_system
                )));
            }
            let Some(row) = existing else {
                return Err(SlotError::ResyncRequired(format!(
                    "the replication slot \"{slot}\" is gone, and with it the changes since pgch last ran"
                )));
            };
            if row.get::<_, Option<String>>(0).as_deref() == Some("lost") {
                return Err(SlotError::ResyncRequired(format!(
                    "the replication slot \"{slot}\" was invalidated (wal_status = lost, max_slot_wal_keep_size exceeded)"
                )));
            }
            walsender.close().await;
            Ok(SlotIdentity {
                system_id: system.system_id,
                consistent_point: parse_lsn(recorded.get(keys::CONSISTENT_POINT)),
                snapshot_xmax: recorded
                    .get(keys::SNAPSHOT_XMAX)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0),
                created: false,
            })
        }
        None => {
            if existing.is_some() {
                if recorded.get(keys::SLOT_CREATING) != Some(&system.system_id) {
                    return Err(SlotError::ForeignSlot(slot.clone()));
                }
                // Our own slot, made by a start that died before recording it: nothing
                // was copied or acknowledged from it yet, so it is made again.
                tracing::warn!(slot = %slot, "dropping the slot a previous start created but did not record");
                walsender.drop_slot(slot, true).await?;
            }
            state.put(keys::SLOT_CREATING, &system.system_id).await?;
            let created = walsender
                .create_slot(slot, false, SlotSnapshot::NoExport)
                .await?;
            walsender.close().await;
            // Every transaction that committed before the slot's consistent point has an
            // xid below this xmax; a snapshot with xmin >= it sees them all.
            let xmax: i64 = pg
                .query_one(
                    "SELECT txid_snapshot_xmax(txid_current_snapshot())::int8",
                    &[],
                )
                .await
                .map_err(|e| SlotError::Postgres(e.to_string()))?
                .get(0);
            state
                .put(
                    keys::CONSISTENT_POINT,
                    &created.consistent_point.to_string(),
                )
                .await?;
            state.put(keys::SNAPSHOT_XMAX, &xmax.to_string()).await?;
            // Last: with it the slot is ours for good (rule 1).
            state
                .put(keys::SYSTEM_IDENTIFIER, &system.system_id)
                .await?;
            tracing::info!(slot = %slot, consistent_point = %created.consistent_point, "replication slot created");
            Ok(SlotIdentity {
                system_id: system.system_id,
                consistent_point: created.consistent_point,
                snapshot_xmax: xmax.max(0) as u64,
                created: true,
            })
        }
    }
}

fn parse_lsn(text: Option<&String>) -> Lsn {
    text.and_then(|t| t.parse().ok()).unwrap_or(Lsn::ZERO)
}
