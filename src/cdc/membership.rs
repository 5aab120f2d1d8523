//! Tables joining and leaving the publication while pgch runs (issues #4 and #7).
//!
//! A table that joins sends no Relation message until it is written, and its rows
//! from before it joined never come through the stream: so pgch polls
//! `pg_publication_tables` (and looks at once when a Relation message names a table it
//! does not know), creates the table's ClickHouse table and copies it — in a snapshot
//! whose xmin is at least the xmax at the moment the join was noticed (DESIGN.md rule
//! 3), which also waits out a transaction that wrote to the table before the join and
//! commits after it. A table that leaves is reported; its ClickHouse table is kept.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::Settings;
use crate::snapshot::plan::TablePlan;
use crate::snapshot::{self, Prepared, SnapshotError, SnapshotOptions};
use crate::source::catalog;

/// What changed in the publication since the last look.
#[derive(Debug, Default)]
pub struct Changes {
    /// Tables to add: planned, their ClickHouse tables ready, to be copied with
    /// `min_xmin`.
    pub joined: Option<(Prepared, u64)>,
    /// Tables that are no longer published (`schema.table`).
    pub left: Vec<String>,
}

/// The xmax of a snapshot taken now: a copy whose xmin is at least this sees every
/// transaction that was running or committed at this moment.
pub async fn current_xmax(pg: &tokio_postgres::Client) -> Result<u64, SnapshotError> {
    let xmax: i64 = pg
        .query_one(
            "SELECT txid_snapshot_xmax(txid_current_snapshot())::int8",
            &[],
        )
        .await
        .map_err(SnapshotError::Catalog)?
        .get(0);
    Ok(xmax.max(0) as u64)
}

/// Compares the publication with the tables pgch streams (`known`, by `schema.table`).
pub async fn poll(
    pg: &tokio_postgres::Client,
    settings: &Settings,
    opts: &SnapshotOptions,
    known: &[Arc<TablePlan>],
    server_version: u32,
) -> Result<Changes, SnapshotError> {
    // The xmax first: a table published by now is copied in a snapshot that sees it.
    let xmax = current_xmax(pg).await?;
    let tables = catalog::published_tables(pg, &settings.source.publication, server_version)
        .await
        .map_err(SnapshotError::Catalog)?;
    let known_names: BTreeSet<String> = known.iter().map(|p| p.source.display()).collect();
    let published: BTreeSet<String> = tables.iter().map(|t| t.display()).collect();
    let mut plans = Vec::new();
    for t in tables
        .iter()
        .filter(|t| !known_names.contains(&t.display()))
    {
        plans.push(snapshot::plan_one(pg, settings, opts, t, server_version).await?);
    }
    let left = known_names.difference(&published).cloned().collect();
    let joined = if plans.is_empty() {
        None
    } else {
        let prepared = snapshot::prepare_joined(settings, plans, known, server_version).await?;
        Some((prepared, xmax))
    };
    Ok(Changes { joined, left })
}
