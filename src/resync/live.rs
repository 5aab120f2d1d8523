//! The resync of one table while `pgch run` keeps streaming (`pipeline.auto_resync`).
//!
//! ```text
//!   stream needs a resync of T ─► live/<T> in _pgch_state ─► pgch run starts over:
//!     WAL position W, then xmax ─► DROP leftover shadow ─► record T's tree, membership
//!     and copied/<T> = W ─► CREATE shadow (T's shape now)
//!     stream of T ─► shadow            copy of T (xmin >= xmax) ─► shadow
//!     (transactions committed          copy done ─► EXCHANGE TABLES dest AND shadow
//!      at or before W skipped)                   ─► live/<T> = exchanged
//!                                                ─► DROP shadow (the old rows) ─► forget live/<T>
//! ```
//!
//! Why it is equal (DESIGN.md rule 3): the shadow holds a copy (version 0) in a snapshot
//! that sees every transaction committed at or before W, and every change of a
//! transaction committed after W (their LSNs as versions), so it is what a first start
//! would have made. Changes at or before W are not replayed over the copy: for a table
//! that left the publication or lost a leaf, the stream lacks their later deletes.
//! Other tables stream on the whole time, and readers of the destination see the old
//! complete table until the exchange. A crash or restart before the exchange starts the
//! resync over (the shadow is dropped and copied again, the stream replays from the slot
//! into it); after it, only the clean-up is left, and T streams on.

use std::collections::{BTreeMap, BTreeSet};

use super::shadow::{self, Swap};
use crate::config::{DestinationSettings, Settings};
use crate::lsn::Lsn;
use crate::membership;
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
    settings: &Settings,
    state: &StateStore<'_>,
    pg: &tokio_postgres::Client,
    plan: &TablePlan,
    server_version: u32,
    copied_through: Lsn,
) -> Result<TablePlan, SnapshotError> {
    let dest = &settings.destination;
    let publication = &settings.source.publication;
    let shadow_name = shadow::shadow_name(&plan.dest);
    shadow::recover_parked(ch, dest, &plan.dest).await?;
    shadow::drop(ch, dest, &shadow_name).await?;
    let mut stale = state
        .keys_with_prefix(&keys::copy_prefix(&shadow_name))
        .await?;
    stale.push(keys::snapshot_complete(&shadow_name));
    stale.push(keys::table_owned(&shadow_name));
    stale.push(keys::partition_tree(&shadow_name));
    state.forget(&stale).await?;
    membership::record_tree_now(pg, state, plan).await?;
    membership::record_membership_now(pg, state, publication, plan, server_version).await?;
    // Replayed changes the copy already holds are skipped, also after the exchange.
    state
        .put(
            &keys::copied_through(&plan.source.display()),
            &copied_through.to_string(),
        )
        .await?;
    tracing::warn!(
        table = %plan.source.display(),
        shadow = %shadow_name,
        "live resync: copying the table into a shadow that also receives the stream; readers see the old table until the swap"
    );
    Ok(plan.with_dest(&shadow_name))
}

/// The mark's value once the shadow has been exchanged in: what is left is cleaning up
/// (exchanging again would put the old rows back).
pub const EXCHANGED: &str = "exchanged";

/// Swaps the filled shadow of `dest` in and records that it did. Called between
/// flushes (no insert of this process into either table is running), after inserts
/// abandoned on the server have ended.
pub async fn exchange(
    ch: &clickhouse::Client,
    settings: &DestinationSettings,
    state: &StateStore<'_>,
    source: &str,
    dest: &str,
) -> Result<Swap, SinkError> {
    let shadow_name = shadow::shadow_name(dest);
    crate::sink::inflight::wait_for_inserts(ch, settings, &shadow_name).await;
    let dest_exists = shadow::exists(ch, settings, dest).await?;
    let swap = shadow::swap(ch, settings, dest, dest_exists).await?;
    state.put(&key(source), EXCHANGED).await?;
    tracing::info!(table = %source, destination = %dest, swap = swap.as_str(), "live resync: the fresh copy is in place");
    Ok(swap)
}

/// After the exchange: records the layout the table now has and makes its view again
/// (the fresh copy may have other columns than the old table). Safe to repeat.
pub async fn settle(
    ch: &clickhouse::Client,
    settings: &DestinationSettings,
    state: &StateStore<'_>,
    plan: &TablePlan,
) -> Result<(), SinkError> {
    state
        .put(&keys::mapping(&plan.dest), &plan.options.fingerprint())
        .await?;
    crate::snapshot::destination::refresh_view(ch, settings, plan).await
}

/// After the exchange: drops the old rows (now in the shadow) and forgets the resync.
/// Safe to repeat.
pub async fn clean_up(
    ch: &clickhouse::Client,
    settings: &DestinationSettings,
    state: &StateStore<'_>,
    source: &str,
    dest: &str,
) -> Result<(), SinkError> {
    let shadow_name = shadow::shadow_name(dest);
    shadow::drop(ch, settings, &shadow_name).await?;
    state.put(&keys::table_owned(dest), source).await?;
    state.put(&keys::snapshot_complete(dest), "resync").await?;
    let mut done = state
        .keys_with_prefix(&keys::copy_prefix(&shadow_name))
        .await?;
    done.extend([
        keys::snapshot_complete(&shadow_name),
        keys::table_owned(&shadow_name),
        keys::partition_tree(&shadow_name),
        keys::mapping(&shadow_name),
        key(source),
    ]);
    state.forget(&done).await?;
    tracing::info!(table = %source, destination = %dest, "live resync finished");
    Ok(())
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
