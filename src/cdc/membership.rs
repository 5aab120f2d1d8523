//! Tables joining and leaving the publication while pgch runs (issues #4 and #7).
//!
//! A table that joins sends no Relation message until it is written, and its rows
//! from before it joined never come through the stream: so pgch polls
//! `pg_publication_tables` (and looks at once when a Relation message names a table it
//! does not know), creates the table's ClickHouse table and copies it — in a snapshot
//! whose xmin is at least the xmax at the moment the join was noticed (DESIGN.md rule
//! 3), which also waits out a transaction that wrote to the table before the join and
//! commits after it. A table that leaves is reported; its ClickHouse table is kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// One leaf of a published partitioned table, as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub filenode: u32,
    pub has_rows: bool,
}

/// What happened to a partition tree since the last look.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TreeChanges {
    /// Leaves attached (or created) holding rows: to be copied into the parent's table.
    pub attached: Vec<Leaf>,
    /// Why the parent must be resynced: a leaf with rows detached or dropped, or
    /// emptied by a TRUNCATE — none of which `publish_via_partition_root` publishes.
    pub resync: Option<String>,
}

/// The leaves of every published partitioned table (DESIGN.md rule 8).
#[derive(Debug, Default)]
pub struct Partitions {
    trees: HashMap<u32, BTreeMap<u32, Leaf>>,
}

impl Partitions {
    /// A streamed TRUNCATE of the root emptied every leaf: the next look must not take
    /// that for a leaf truncate, yet still see leaves attached meanwhile.
    pub fn emptied(&mut self, parent: u32) {
        if let Some(tree) = self.trees.get_mut(&parent) {
            tree.values_mut().for_each(|leaf| leaf.has_rows = false);
        }
    }

    /// Looks at the tree of `parent`; the first look only remembers it.
    pub async fn poll(
        &mut self,
        pg: &tokio_postgres::Client,
        parent: &TablePlan,
    ) -> Result<TreeChanges, SnapshotError> {
        let now = leaves(pg, parent.source.oid).await?;
        let Some(before) = self.trees.insert(parent.source.oid, now.clone()) else {
            return Ok(TreeChanges::default());
        };
        Ok(compare(&parent.source.display(), &before, &now))
    }
}

/// The changes between two looks at one tree (pure).
pub fn compare(
    parent: &str,
    before: &BTreeMap<u32, Leaf>,
    now: &BTreeMap<u32, Leaf>,
) -> TreeChanges {
    let mut changes = TreeChanges::default();
    for (oid, leaf) in now {
        match before.get(oid) {
            None if leaf.has_rows => changes.attached.push(leaf.clone()),
            None => {}
            Some(old) if old.has_rows && !leaf.has_rows && old.filenode != leaf.filenode => {
                changes.resync = Some(format!(
                    "partition {}.{} of {parent} was truncated, which publish_via_partition_root does not publish",
                    leaf.schema, leaf.name
                ));
            }
            Some(_) => {}
        }
    }
    for (oid, leaf) in before {
        if !now.contains_key(oid) && leaf.has_rows {
            changes.resync = Some(format!(
                "partition {}.{} of {parent} was detached or dropped with its rows, which publish_via_partition_root does not publish",
                leaf.schema, leaf.name
            ));
        }
    }
    changes
}

async fn leaves(
    pg: &tokio_postgres::Client,
    parent: u32,
) -> Result<BTreeMap<u32, Leaf>, SnapshotError> {
    let rows = pg
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, coalesce(pg_relation_filenode(c.oid), 0)::oid
               FROM pg_catalog.pg_partition_tree($1::oid) t
               JOIN pg_catalog.pg_class c ON c.oid = t.relid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE t.isleaf",
            &[&parent],
        )
        .await
        .map_err(SnapshotError::Catalog)?;
    let mut out = BTreeMap::new();
    for r in rows {
        let (oid, schema, name, filenode): (u32, String, String, u32) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let exists = pg
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {}.{})",
                    catalog::quote_ident(&schema),
                    catalog::quote_ident(&name)
                ),
                &[],
            )
            .await;
        let has_rows: bool = match exists {
            Ok(row) => row.try_get(0).map_err(SnapshotError::Catalog)?,
            // Dropped between the two queries: gone, as the next look will show.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                continue
            }
            Err(e) => return Err(SnapshotError::Catalog(e)),
        };
        out.insert(
            oid,
            Leaf {
                oid,
                schema,
                name,
                filenode,
                has_rows,
            },
        );
    }
    Ok(out)
}

/// The published partitioned table a relation is a leaf of (`pg_partition_root`), if
/// any: its changes may come under the leaf's own name, and belong to the root's table.
pub async fn partition_root(
    pg: &tokio_postgres::Client,
    relation: u32,
) -> Result<Option<u32>, SnapshotError> {
    let row = pg
        .query_one(
            "SELECT pg_partition_root($1::oid)::oid, (SELECT relispartition FROM pg_catalog.pg_class WHERE oid = $1::oid)",
            &[&relation],
        )
        .await
        .map_err(SnapshotError::Catalog)?;
    let (root, is_partition): (Option<u32>, Option<bool>) = (row.get(0), row.get(1));
    Ok(root.filter(|r| is_partition == Some(true) && *r != relation))
}

/// The parent's plan reading from one leaf: the same columns (by name) into the same
/// ClickHouse table.
pub fn leaf_plan(parent: &TablePlan, leaf: &Leaf) -> TablePlan {
    let mut plan = parent.clone();
    plan.source.oid = leaf.oid;
    plan.source.schema = leaf.schema.clone();
    plan.source.name = leaf.name.clone();
    plan.source.relkind = "r".into();
    plan.source.is_partition = true;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(oid: u32, filenode: u32, has_rows: bool) -> Leaf {
        Leaf {
            oid,
            schema: "public".into(),
            name: format!("p{oid}"),
            filenode,
            has_rows,
        }
    }

    fn tree(leaves: &[Leaf]) -> BTreeMap<u32, Leaf> {
        leaves.iter().map(|l| (l.oid, l.clone())).collect()
    }

    #[test]
    fn attach_copies_detach_and_leaf_truncate_resync_and_vacuum_full_is_nothing() {
        let before = tree(&[leaf(1, 10, true), leaf(2, 20, false)]);
        let attached = compare(
            "t",
            &before,
            &tree(&[leaf(1, 10, true), leaf(2, 20, false), leaf(3, 30, true)]),
        );
        assert_eq!(attached.attached, vec![leaf(3, 30, true)]);
        assert_eq!(attached.resync, None);
        let empty_attach = compare(
            "t",
            &before,
            &tree(&[leaf(1, 10, true), leaf(2, 20, false), leaf(3, 30, false)]),
        );
        assert_eq!(empty_attach, TreeChanges::default());
        let detached = compare("t", &before, &tree(&[leaf(2, 20, false)]));
        assert!(detached.resync.unwrap().contains("p1 of t was detached"));
        assert_eq!(
            compare("t", &before, &tree(&[leaf(1, 10, true)])),
            TreeChanges::default(),
            "an empty leaf left"
        );
        let truncated = compare(
            "t",
            &before,
            &tree(&[leaf(1, 11, false), leaf(2, 20, false)]),
        );
        assert!(truncated.resync.unwrap().contains("truncated"));
        let vacuumed = compare(
            "t",
            &before,
            &tree(&[leaf(1, 11, true), leaf(2, 20, false)]),
        );
        assert_eq!(vacuumed, TreeChanges::default());
    }
}
