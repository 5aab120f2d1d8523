//! Tables joining and leaving the publication while pgch runs (issues #4 and #7).
//!
//! A table that joins sends no Relation message until it is written, and its rows
//! from before it joined never come through the stream: so pgch polls
//! `pg_publication_tables` (and looks at once when a Relation message names a table it
//! does not know), creates the table's ClickHouse table and copies it — in a snapshot
//! whose xmin is at least the xmax at the moment the join was noticed (DESIGN.md rule
//! 3), which also waits out a transaction that wrote to the table before the join and
//! commits after it. A table that leaves is reported; its ClickHouse table is kept.
//!
//! What pgch last saw is also kept in `_pgch_state`, so a start notices what happened
//! while it was stopped: how each table is a member of the publication (a table found a
//! member only by new paths left and joined again, and missed the changes in between),
//! and each partition tree's leaves whose rows are in ClickHouse.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::lsn::Lsn;
use crate::sink::client::SinkError;
use crate::sink::state::{keys, StateStore};
use crate::snapshot::plan::TablePlan;
use crate::snapshot::{self, Prepared, SnapshotError, SnapshotOptions};
use crate::source::catalog;
use crate::source::row::column;

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
    let row = pg
        .query_one(
            "SELECT txid_snapshot_xmax(txid_current_snapshot())::int8",
            &[],
        )
        .await
        .map_err(SnapshotError::Catalog)?;
    let xmax: i64 = column(&row, 0, "reading the current snapshot's xmax")?;
    Ok(xmax.max(0) as u64)
}

/// The WAL written so far: read before a copy's snapshot, every transaction committed
/// at or before it is in the copy.
pub async fn current_wal_lsn(pg: &tokio_postgres::Client) -> Result<Lsn, SnapshotError> {
    let row = pg
        .query_one(
            &format!("SELECT {}::text", crate::source::WAL_POSITION_SQL),
            &[],
        )
        .await
        .map_err(SnapshotError::Catalog)?;
    let text: String = column(&row, 0, "reading the current WAL position")?;
    text.parse()
        .map_err(|_| SnapshotError::State(format!("unreadable WAL position {text:?}")))
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
    let tables =
        catalog::published_tables(pg, &settings.source.publication, server_version).await?;
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

/// The ways `table` is a member of `publication` now: the oids of the
/// `pg_publication_rel` row naming it, of the `pg_publication_namespace` row naming its
/// schema (Postgres 15+), of the publication when it is `FOR ALL TABLES`. Leaving and
/// joining again makes new rows with new oids.
pub async fn member_paths(
    pg: &tokio_postgres::Client,
    publication: &str,
    table: u32,
    server_version: u32,
) -> Result<BTreeSet<String>, SnapshotError> {
    let mut sql = String::from(
        "SELECT 'table:' || pr.oid::text FROM pg_catalog.pg_publication_rel pr
           JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
          WHERE p.pubname = $1 AND pr.prrelid = $2::oid
         UNION ALL
         SELECT 'all:' || p.oid::text FROM pg_catalog.pg_publication p
          WHERE p.pubname = $1 AND p.puballtables",
    );
    if server_version >= 150_000 {
        sql.push_str(
            "
         UNION ALL
         SELECT 'schema:' || pn.oid::text FROM pg_catalog.pg_publication_namespace pn
           JOIN pg_catalog.pg_publication p ON p.oid = pn.pnpubid
           JOIN pg_catalog.pg_class c ON c.relnamespace = pn.pnnspid
          WHERE p.pubname = $1 AND c.oid = $2::oid",
        );
    }
    let rows = pg
        .query(&sql, &[&publication, &table])
        .await
        .map_err(SnapshotError::Catalog)?;
    let mut paths = rows
        .iter()
        .map(|r| Ok(column::<String>(r, 0, "reading how a table is published")?))
        .collect::<Result<BTreeSet<String>, SnapshotError>>()?;
    if !paths.is_empty() {
        // The table itself: dropped and created again under FOR ALL TABLES or TABLES IN
        // SCHEMA, it keeps its paths but not its rows.
        paths.insert(format!("oid:{table}"));
    }
    Ok(paths)
}

/// Whether a table recorded as a member by `before` (comma-separated paths) and a
/// member by `now` left the publication and joined again in between: none of the old
/// paths is still there (pure).
pub fn rejoined(before: Option<&str>, now: &BTreeSet<String>) -> bool {
    let Some(before) = before.filter(|b| !b.is_empty()) else {
        return false;
    };
    if now.is_empty() {
        return false;
    }
    let is_oid = |p: &&str| p.starts_with("oid:");
    let old_oid = before.split(',').find(is_oid);
    let new_oid = now.iter().map(String::as_str).find(is_oid);
    if let (Some(old), Some(new)) = (old_oid, new_oid) {
        if old != new {
            // Another table under the same name.
            return true;
        }
    }
    !before
        .split(',')
        .filter(|p| !is_oid(p))
        .any(|path| now.contains(path))
}

/// Compares how `plan`'s table is a member now with the record, and records the present
/// paths. Returns why the table needs a resync when it left and joined again while pgch
/// was not looking (its changes in between were never streamed).
pub async fn check_membership(
    pg: &tokio_postgres::Client,
    state: &StateStore<'_>,
    recorded: &BTreeMap<String, String>,
    publication: &str,
    plan: &TablePlan,
    server_version: u32,
) -> Result<Option<String>, SnapshotError> {
    let now = member_paths(pg, publication, plan.source.oid, server_version).await?;
    let key = keys::membership(&plan.dest);
    let before = recorded.get(&key).map(String::as_str);
    if rejoined(before, &now) {
        return Ok(Some(format!(
            "it left publication \"{publication}\" and joined again while pgch was not streaming it; its changes in between were not streamed"
        )));
    }
    record_membership(state, &key, before, &now).await?;
    Ok(None)
}

/// Records how `plan`'s table is a member now (after a resync, which makes it equal
/// whatever happened before).
pub async fn record_membership_now(
    pg: &tokio_postgres::Client,
    state: &StateStore<'_>,
    publication: &str,
    plan: &TablePlan,
    server_version: u32,
) -> Result<(), SnapshotError> {
    let now = member_paths(pg, publication, plan.source.oid, server_version).await?;
    record_membership(state, &keys::membership(&plan.dest), None, &now).await
}

async fn record_membership(
    state: &StateStore<'_>,
    key: &str,
    before: Option<&str>,
    now: &BTreeSet<String>,
) -> Result<(), SnapshotError> {
    let value = now.iter().cloned().collect::<Vec<_>>().join(",");
    if value.is_empty() || before == Some(value.as_str()) {
        return Ok(());
    }
    state.put(key, &value).await?;
    Ok(())
}

/// One leaf of a published partitioned table, as last seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub filenode: u32,
    pub has_rows: bool,
    /// Recorded while its copy into the root's table had not finished: a start finds
    /// it present (copy it again) or gone (resync the root — some rows may have landed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copying: bool,
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
    /// Every tree as last seen.
    trees: HashMap<u32, BTreeMap<u32, Leaf>>,
    /// Leaves (by tree) being copied into the root's table: left out of the record
    /// until their copy is done, so a restart copies them again.
    copying: HashMap<u32, BTreeSet<u32>>,
    /// The record last written (or read) per tree.
    saved: HashMap<u32, String>,
}

impl Partitions {
    /// A streamed TRUNCATE of the root emptied every leaf: the next look must not take
    /// that for a leaf truncate, yet still see leaves attached meanwhile.
    pub fn emptied(&mut self, parent: u32) {
        if let Some(tree) = self.trees.get_mut(&parent) {
            tree.values_mut().for_each(|leaf| leaf.has_rows = false);
        }
    }

    /// Looks at the tree of `parent`. The first look compares with `recorded` (the
    /// tree kept in `_pgch_state`, what was in ClickHouse when pgch last looked), or
    /// only remembers the tree when there is no record.
    pub async fn poll(
        &mut self,
        pg: &tokio_postgres::Client,
        parent: &TablePlan,
        recorded: Option<&str>,
    ) -> Result<TreeChanges, SnapshotError> {
        let oid = parent.source.oid;
        let now = leaves(pg, oid).await?;
        let before = match self.trees.insert(oid, now.clone()) {
            Some(before) => before,
            None => match recorded {
                Some(text) => {
                    self.saved.insert(oid, text.to_string());
                    parse_tree(&parent.source.display(), text)?
                }
                None => return Ok(TreeChanges::default()),
            },
        };
        let changes = compare(&parent.source.display(), &before, &now);
        self.copying
            .entry(oid)
            .or_default()
            .extend(changes.attached.iter().map(|leaf| leaf.oid));
        Ok(changes)
    }

    /// Whether leaves of `parent` are still being copied into its table.
    pub fn is_copying(&self, parent: u32) -> bool {
        self.copying.get(&parent).is_some_and(|c| !c.is_empty())
    }

    /// The copy of an attached leaf finished: its rows are in the root's table.
    pub fn copied(&mut self, parent: u32, leaf: u32) {
        if let Some(copying) = self.copying.get_mut(&parent) {
            copying.remove(&leaf);
        }
    }

    /// Writes the tree of `parent` (by oid) as it is in ClickHouse table `dest` (the
    /// last look; leaves still being copied marked so) when it differs from the record.
    pub async fn save(
        &mut self,
        state: &StateStore<'_>,
        parent: u32,
        dest: &str,
    ) -> Result<(), SinkError> {
        let Some(text) = self.landed(parent) else {
            return Ok(());
        };
        if self.saved.get(&parent) == Some(&text) {
            return Ok(());
        }
        state.put(&keys::partition_tree(dest), &text).await?;
        self.saved.insert(parent, text);
        Ok(())
    }

    /// The next save writes the tree whatever the last one wrote (it goes elsewhere now).
    pub fn forget_saved(&mut self, parent: u32) {
        self.saved.remove(&parent);
    }

    /// Whether the tree of `parent` differs from its record (a write is due).
    pub fn unsaved(&self, parent: u32) -> bool {
        self.landed(parent)
            .is_some_and(|text| self.saved.get(&parent) != Some(&text))
    }

    /// The record of a tree: the last look, leaves still being copied marked so.
    fn landed(&self, parent: u32) -> Option<String> {
        let tree = self.trees.get(&parent)?;
        let copying = self.copying.get(&parent);
        let landed: Vec<Leaf> = tree
            .values()
            .map(|leaf| Leaf {
                copying: copying.is_some_and(|c| c.contains(&leaf.oid)),
                ..leaf.clone()
            })
            .collect();
        // Plain data: serialising it cannot fail.
        serde_json::to_string(&landed).ok()
    }
}

/// Records the tree of `parent` as it is now, before a copy of the whole table (a
/// resync) that will hold every leaf's rows: a leaf attached after this look is copied
/// by the next start, one detached after it asks for a resync — never a leaf missed.
pub async fn record_tree_now(
    pg: &tokio_postgres::Client,
    state: &StateStore<'_>,
    parent: &TablePlan,
) -> Result<(), SnapshotError> {
    if parent.source.relkind != "p" {
        return Ok(());
    }
    let mut partitions = Partitions::default();
    partitions.poll(pg, parent, None).await?;
    partitions
        .save(state, parent.source.oid, &parent.dest)
        .await?;
    Ok(())
}

/// After a streamed TRUNCATE of a partitioned table: its recorded leaves hold no rows,
/// so a start after it does not take the emptied leaves for leaf truncates. (An
/// unreadable record is forgotten: the next start then takes the tree as it finds it.)
pub async fn record_tree_emptied(
    state: &StateStore<'_>,
    recorded: &BTreeMap<String, String>,
    parent: &str,
) -> Result<(), SinkError> {
    let key = keys::partition_tree(parent);
    let Some(text) = recorded.get(&key) else {
        return Ok(());
    };
    let Ok(mut tree) = parse_tree(parent, text) else {
        return state.forget(&[key]).await;
    };
    tree.values_mut().for_each(|leaf| leaf.has_rows = false);
    let leaves: Vec<&Leaf> = tree.values().collect();
    match serde_json::to_string(&leaves) {
        Ok(text) => state.put(&key, &text).await,
        Err(_) => state.forget(&[key]).await,
    }
}

fn parse_tree(parent: &str, text: &str) -> Result<BTreeMap<u32, Leaf>, SnapshotError> {
    let leaves: Vec<Leaf> = serde_json::from_str(text).map_err(|e| {
        SnapshotError::State(format!(
            "unreadable partition tree of {parent} in _pgch_state: {e}"
        ))
    })?;
    Ok(leaves.into_iter().map(|leaf| (leaf.oid, leaf)).collect())
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
            // Its copy was interrupted: copy it again (rows are versioned 0; repeats
            // converge).
            Some(old) if old.copying && leaf.has_rows => changes.attached.push(leaf.clone()),
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
        const WHAT: &str = "reading a partition tree";
        let (oid, schema, name, filenode): (u32, String, String, u32) = (
            column(&r, 0, WHAT)?,
            column(&r, 1, WHAT)?,
            column(&r, 2, WHAT)?,
            column(&r, 3, WHAT)?,
        );
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
            Ok(row) => column(&row, 0, "looking for rows in a partition")?,
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
                copying: false,
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
    const WHAT: &str = "reading a partition's root";
    let (root, is_partition): (Option<u32>, Option<bool>) =
        (column(&row, 0, WHAT)?, column(&row, 1, WHAT)?);
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
            copying: false,
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

    #[test]
    fn rejoined_only_when_no_recorded_path_is_left() {
        let now = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect::<BTreeSet<_>>();
        assert!(!rejoined(None, &now(&["table:1"])), "no record: first look");
        assert!(!rejoined(Some(""), &now(&["table:1"])));
        assert!(!rejoined(Some("table:1"), &now(&["table:1"])));
        assert!(
            !rejoined(Some("schema:7,table:1"), &now(&["table:1"])),
            "still a member by its own row"
        );
        assert!(
            !rejoined(Some("table:1"), &now(&["schema:7", "table:1"])),
            "a second path added"
        );
        assert!(
            rejoined(Some("table:1"), &now(&["table:9"])),
            "dropped and added"
        );
        assert!(
            rejoined(Some("table:1"), &now(&["schema:7"])),
            "moved to a schema path"
        );
        assert!(
            !rejoined(Some("table:1"), &now(&[])),
            "not a member now: it left"
        );
        assert!(!rejoined(Some("all:3,oid:10"), &now(&["all:3", "oid:10"])));
        assert!(
            rejoined(Some("all:3,oid:10"), &now(&["all:3", "oid:11"])),
            "dropped and created again under FOR ALL TABLES"
        );
        assert!(
            rejoined(Some("oid:10,table:1"), &now(&["oid:10", "table:2"])),
            "same table, out and back in"
        );
    }

    #[test]
    fn the_record_marks_leaves_still_being_copied_and_a_restart_copies_them_again_or_resyncs() {
        let mut partitions = Partitions::default();
        partitions
            .trees
            .insert(100, tree(&[leaf(1, 10, true), leaf(3, 30, true)]));
        partitions.copying.entry(100).or_default().insert(3);
        let record = partitions.landed(100).unwrap();
        let recorded = parse_tree("t", &record).unwrap();
        let copying_3 = Leaf {
            copying: true,
            ..leaf(3, 30, true)
        };
        assert_eq!(recorded, tree(&[leaf(1, 10, true), copying_3]));
        assert!(partitions.unsaved(100));
        let gone = compare("t", &recorded, &tree(&[leaf(1, 10, true)]));
        assert!(
            gone.resync.unwrap().contains("p3 of t was detached"),
            "gone while its copy ran: some rows may have landed"
        );
        // A restart compares the record with the tree: leaf 3 is copied again.
        let again = compare(
            "t",
            &recorded,
            &tree(&[leaf(1, 10, true), leaf(3, 30, true)]),
        );
        assert_eq!(again.attached, vec![leaf(3, 30, true)]);
        partitions.copied(100, 3);
        assert_eq!(
            parse_tree("t", &partitions.landed(100).unwrap()).unwrap(),
            tree(&[leaf(1, 10, true), leaf(3, 30, true)])
        );
        assert!(parse_tree("t", "not json").is_err());
    }
}
