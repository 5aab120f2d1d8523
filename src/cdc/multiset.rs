//! The copies of multiset (keyless `REPLICA IDENTITY FULL`) tables, agreed with the
//! stream. A keyed table's copy may overlap the stream (rule 3: the stream's versions
//! win); a multiset's may not, or a change would count twice. So before the stream
//! applies any change of such a table, pgch empties whatever an unfinished copy left
//! in it, takes and holds the snapshot the copy will read ([`HeldSnapshot`]), and
//! records what it saw, so the stream skips those transactions — in this session and
//! after a restart, until it has passed them ([`CopyVisibility`]).
//!
//! Why emptying is exact: every change the stream applied to the table before this
//! start committed before the new snapshot is taken (its xmin is past every xid that
//! was running), so the new copy holds it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::apply::Applier;
use super::RunError;
use crate::config::Settings;
use crate::sink::client as ch_client;
use crate::sink::inflight::wait_for_inserts;
use crate::sink::preflight::quote_ident;
use crate::sink::state::{keys, StateStore};
use crate::snapshot::held::HeldSnapshot;
use crate::snapshot::plan::TablePlan;
use crate::snapshot::visibility::CopyVisibility;

/// What the copies of multiset tables need: snapshots to copy in, and what the stream
/// skips.
#[derive(Default)]
pub(super) struct MultisetCopies {
    /// Destination table → the snapshot its copy reads.
    pub held: BTreeMap<String, Arc<HeldSnapshot>>,
    /// Source table oid → the transactions its copy holds.
    pub seen: Vec<(u32, CopyVisibility)>,
}

impl MultisetCopies {
    /// Tells the applier what to skip.
    pub fn apply_to(&self, applier: &mut Applier) {
        for (oid, seen) in &self.seen {
            applier.set_seen_by_copy(*oid, seen.clone());
        }
    }
}

/// Prepares the multiset tables among `plans` before the stream applies any of their
/// changes: a finished copy's recorded snapshot is loaded; an unfinished one (when
/// `copy` — nothing is copied in `cdc_only` mode) is started over in a held snapshot
/// whose xmin is at least `min_xmin`.
pub(super) async fn prepare(
    settings: &Settings,
    state: &StateStore<'_>,
    plans: &[Arc<TablePlan>],
    min_xmin: Option<u64>,
    copy: bool,
) -> Result<MultisetCopies, RunError> {
    let mut out = MultisetCopies::default();
    if !plans.iter().any(|p| p.is_multiset()) {
        return Ok(out);
    }
    let dest = &settings.destination;
    let ch = ch_client::client(dest, false);
    let recorded = state.load().await?;
    for plan in plans.iter().filter(|p| p.is_multiset()) {
        let table = &plan.dest;
        let copied = recorded.contains_key(&keys::snapshot_complete(table))
            || recorded
                .keys()
                .any(|k| k.starts_with(&keys::copy_prefix(table)));
        if copied || !copy {
            if !recorded.contains_key(&keys::snapshot_complete(table)) && copied {
                // Copied, but stopped before saying so: never copy it twice.
                state.put(&keys::snapshot_complete(table), "copied").await?;
            }
            if let Some(seen) = recorded
                .get(&keys::copy_visibility(&plan.source.display()))
                .and_then(|v| v.parse::<CopyVisibility>().ok())
            {
                out.seen.push((plan.source.oid, seen));
            }
            continue;
        }
        // An unfinished copy (or stream rows of an earlier session) may be in it. A
        // history keeps its change rows (acknowledged already, never sent again) and
        // loses only the unfinished copy's.
        wait_for_inserts(&ch, dest, table).await;
        let target = format!("{}.{}", quote_ident(&dest.database), quote_ident(table));
        let sql = if plan.is_history() {
            format!(
                "ALTER TABLE {target} DELETE WHERE _op = 'snapshot' SETTINGS mutations_sync = 2"
            )
        } else {
            format!("TRUNCATE TABLE {target}")
        };
        ch_client::execute(&ch, dest, &sql).await?;
        let held = HeldSnapshot::take(&settings.source.endpoint, min_xmin).await?;
        state
            .put(
                &keys::copy_visibility(&plan.source.display()),
                &held.seen.to_string(),
            )
            .await?;
        tracing::info!(table = %plan.source.display(), snapshot = %held.seen, "keyless table: copying it in one snapshot the stream skips");
        out.seen.push((plan.source.oid, held.seen.clone()));
        out.held.insert(table.clone(), Arc::new(held));
    }
    Ok(out)
}
