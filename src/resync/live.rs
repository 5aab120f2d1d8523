//! The resync of one table while `pgch run` keeps streaming (`pipeline.auto_resync`).
//!
//! ```text
//!   stream needs a resync of T ─► live/<T> in _pgch_state ─► pgch run starts over:
//!     DROP leftover shadow ─► record T's tree and membership ─► CREATE shadow (T's shape now)
//!     stream of T ─► shadow            copy of T (xmin >= xmax now) ─► shadow
//!                                      copy done ─► EXCHANGE TABLES dest AND shadow
//!                                                ─► DROP shadow (the old rows) ─► forget live/<T>
//! ```
//!
//! Why it is equal (DESIGN.md rule 3): the shadow holds a copy (version 0) in a snapshot
//! that sees every transaction committed before the stream position it starts at, and
//! every change from that position on (their LSNs as versions), so it is what a first
//! start would have made. Other tables stream on the whole time, and readers of the
//! destination see the old complete table until the exchange. A crash or restart before
//! the exchange starts the resync over (the shadow is dropped and copied again, the
//! stream replays from the slot into it); after it, the mark is gone and T streams on.

use std::collections::{BTreeMap, BTreeSet};

use super::shadow::{self, Swap};
use crate::cdc::membership;
use crate::config::DestinationSettings;
use crate::sink::client::SinkError;
use crate::sink::state::{keys, StateStore};
use crate::snapshot::plan::TablePlan;
use crate::snapshot::SnapshotError;

/// `live/<schema.table>`: the table is being resynced by `pgch run`.
pub fn key(source: &str) -> String {
    format!("live/{source}")
}

/// Source tables (`schema.table`) with a live resync recorded.
pub fn recorded(state: &BTreeMap<String, String>) -> BTreeSet<String> {
    state
        .keys()
        .filter_map(|k| k.strip_prefix("live/"))
        .map(str::to_string)
        .collect()
}

/// Asks the next start of the stream to resync `sources` live.
pub async fn request(state: &StateStore<'_>, sources: &[String]) -> Result<(), SinkError> {
    for source in sources {
        state.put(&key(source), "requested").await?;
    }
    Ok(())
}

/// Turns the plan of a table to resync into the plan of its fresh shadow: drops what
/// an earlier attempt left, records the table's partition tree and publication
/// membership as the copy will find them, and forgets the shadow's copy marks. The
/// caller creates the shadow (like any table) and streams into it.
pub async fn prepare(
    ch: &clickhouse::Client,
    dest: &DestinationSettings,
    state: &StateStore<'_>,
    pg: &tokio_postgres::Client,
    publication: &str,
    plan: &TablePlan,
    server_version: u32,
) -> Result<TablePlan, SnapshotError> {
    let shadow_name = shadow::shadow_name(&plan.dest);
    shadow::recover_parked(ch, dest, &plan.dest).await?;
    shadow::drop(ch, dest, &shadow_name).await?;
    let mut stale = state
        .keys_with_prefix(&keys::copy_prefix(&shadow_name))
        .await?;
    stale.push(keys::snapshot_complete(&shadow_name));
    stale.push(keys::table_owned(&shadow_name));
    state.forget(&stale).await?;
    membership::record_tree_now(pg, state, plan).await?;
    membership::record_membership_now(pg, state, publication, plan, server_version).await?;
    tracing::warn!(
        table = %plan.source.display(),
        shadow = %shadow_name,
        "live resync: copying the table into a shadow that also receives the stream; readers see the old table until the swap"
    );
    Ok(plan.with_dest(&shadow_name))
}

/// Swaps the filled shadow of `dest` in and forgets the resync. Called between
/// flushes, so no insert into either table is running.
pub async fn finish(
    ch: &clickhouse::Client,
    settings: &DestinationSettings,
    state: &StateStore<'_>,
    source: &str,
    dest: &str,
) -> Result<Swap, SinkError> {
    let shadow_name = shadow::shadow_name(dest);
    let dest_exists = shadow::exists(ch, settings, dest).await?;
    let swap = shadow::swap(ch, settings, dest, dest_exists).await?;
    if swap != Swap::Created {
        // The shadow now holds the old rows.
        shadow::drop(ch, settings, &shadow_name).await?;
    }
    state.put(&keys::table_owned(dest), source).await?;
    state.put(&keys::snapshot_complete(dest), "resync").await?;
    let mut done = state
        .keys_with_prefix(&keys::copy_prefix(&shadow_name))
        .await?;
    done.extend([
        keys::snapshot_complete(&shadow_name),
        keys::table_owned(&shadow_name),
        keys::partition_tree(&shadow_name),
        key(source),
    ]);
    state.forget(&done).await?;
    tracing::info!(table = %source, destination = %dest, swap = swap.as_str(), "live resync finished: the fresh copy is in place");
    Ok(swap)
}

/// Forgets live resyncs of tables no longer published (nothing streams into them).
pub async fn forget_unpublished(
    state: &StateStore<'_>,
    live: &BTreeSet<String>,
    published: &BTreeSet<String>,
) -> Result<(), SinkError> {
    let gone: Vec<String> = live
        .iter()
        .filter(|t| !published.contains(*t))
        .map(|t| key(t))
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    state.forget(&gone).await
}
