//! Membership of the publication as the stream loop last saw it: tables joining and
//! leaving, partition trees, and the swap of live-resync shadows.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::apply::Applier;
use super::copies::Copies;
use super::error::ApplyError;
use super::RunError;
use crate::config::Settings;
use crate::membership;
use crate::resync;
use crate::sink::client as ch_client;
use crate::sink::state::StateStore;
use crate::snapshot::plan::TablePlan;
use crate::snapshot::{self, SnapshotOptions};

/// Records how `plan`'s table is a member of the publication; a resync error when it
/// left and joined again since the record (its changes in between were never streamed).
pub(super) async fn still_a_member(
    pg: &tokio_postgres::Client,
    state: &StateStore<'_>,
    recorded: &std::collections::BTreeMap<String, String>,
    settings: &Settings,
    plan: &TablePlan,
    server_version: u32,
) -> Result<(), RunError> {
    let publication = &settings.source.publication;
    match membership::check_membership(pg, state, recorded, publication, plan, server_version)
        .await?
    {
        Some(detail) => Err(RunError::Apply(ApplyError::SchemaChanged {
            table: plan.source.display(),
            detail,
        })),
        None => Ok(()),
    }
}

/// Membership of the publication, as the stream loop last saw it.
pub(super) struct Tracker {
    pub(super) opts: SnapshotOptions,
    pub(super) server_version: u32,
    /// Tables already reported as having left.
    pub(super) left: BTreeSet<String>,
    pub(super) partitions: membership::Partitions,
    /// Tables resynced live (by source oid).
    pub(super) shadows: HashMap<u32, LiveShadow>,
}

/// A table resynced live: its lane writes to the shadow until the exchange.
pub(super) struct LiveShadow {
    source: String,
    /// The real destination table.
    dest: String,
    /// The exchange happened; what is left is dropping the old rows.
    exchanged: bool,
}

impl LiveShadow {
    pub(super) fn new(source: String, dest: String) -> LiveShadow {
        LiveShadow {
            source,
            dest,
            exchanged: false,
        }
    }
}

impl Tracker {
    /// Looks for tables that joined (adds and copies them) or left (reports them).
    pub(super) async fn poll(
        &mut self,
        pg: &tokio_postgres::Client,
        settings: &Settings,
        applier: &mut Applier,
        copies: &mut Copies,
    ) -> Result<(), RunError> {
        let changes = membership::poll(
            pg,
            settings,
            &self.opts,
            &applier.plans(),
            self.server_version,
        )
        .await?;
        if let Some((prepared, xmax)) = changes.joined {
            let state = StateStore::open(&settings.destination, &settings.source.slot).await?;
            let recorded = state.load().await?;
            for plan in &prepared.plans {
                // Left and back while pgch was stopped (the record says so) or while
                // it ran (below): a copy cannot remove rows deleted in between.
                still_a_member(pg, &state, &recorded, settings, plan, self.server_version).await?;
            }
            for plan in &prepared.plans {
                tracing::info!(table = %plan.source.display(), destination = %plan.dest, "table joined the publication; copying it");
            }
            // Before its lane exists no change of a joining table is applied: its
            // copy can be agreed with the stream now (a keyless one must be).
            let copy = settings.mode == crate::config::Mode::SnapshotAndCdc;
            let keyless =
                super::multiset::prepare(settings, &state, &prepared.plans, Some(xmax), copy)
                    .await?;
            applier.add_tables(&prepared.plans);
            keyless.apply_to(applier);
            copies.hold(keyless.held);
            copies.start(prepared, Some(xmax));
        }
        // A table that left and came back missed the changes in between: a version-0
        // copy cannot remove what was deleted then, so only a resync makes it equal.
        let still_left: BTreeSet<String> = changes.left.iter().cloned().collect();
        if let Some(back) = self.left.iter().find(|t| !still_left.contains(*t)) {
            return Err(RunError::Apply(ApplyError::SchemaChanged {
                table: back.clone(),
                detail: "it left the publication and joined again; its changes in between were not streamed".into(),
            }));
        }
        for table in changes.left {
            if self.left.insert(table.clone()) {
                tracing::warn!(table = %table, "table left the publication: its changes are no longer streamed; its ClickHouse table is kept as it is");
            }
        }
        // Partition trees: an ATTACH streams no rows, a DETACH, DROP or TRUNCATE of a
        // leaf publishes nothing under publish_via_partition_root (rule 8).
        let xmax = membership::current_xmax(pg).await?;
        for (tree, leaf) in copies.take_leaves_copied() {
            self.partitions.copied(tree, leaf);
        }
        self.swap_shadows(settings, applier, copies).await?;
        let mut state = None;
        for parent in applier.plans() {
            if parent.source.relkind != "p" {
                continue;
            }
            if applier.take_truncated(parent.source.oid) {
                // The streamed TRUNCATE of the root emptied every leaf; that is no leaf
                // truncate to resync for.
                self.partitions.emptied(parent.source.oid);
            }
            let tree = self.partitions.poll(pg, &parent, None).await?;
            self.follow_tree(&parent, tree, copies, xmax)?;
            if self.partitions.unsaved(parent.source.oid) {
                if state.is_none() {
                    state =
                        Some(StateStore::open(&settings.destination, &settings.source.slot).await?);
                }
                if let Some(state) = &state {
                    let record_as = self.real_dest(&parent);
                    self.partitions
                        .save(state, parent.source.oid, &record_as)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The ClickHouse table a plan's rows end up in: its own, or for a table resynced
    /// live, the real one its shadow will become.
    pub(super) fn real_dest(&self, plan: &TablePlan) -> String {
        match self.shadows.get(&plan.source.oid) {
            Some(live) => live.dest.clone(),
            None => plan.dest.clone(),
        }
    }

    /// Swaps in the filled shadows of tables resynced live. Runs between flushes, so no
    /// insert of this process into a shadow is running (abandoned ones are waited for);
    /// a shadow whose attached leaves are still being copied into it waits for the next
    /// look. A failure leaves the shadow to the next look: the exchange is recorded the
    /// moment it happens and never repeated.
    pub(super) async fn swap_shadows(
        &mut self,
        settings: &Settings,
        applier: &mut Applier,
        copies: &mut Copies,
    ) -> Result<(), RunError> {
        let filled = copies.take_shadows_copied();
        if filled.is_empty() {
            return Ok(());
        }
        let dest = &settings.destination;
        let ch = ch_client::client(dest, false);
        let state = match StateStore::open(dest, &settings.source.slot).await {
            Ok(state) => state,
            Err(e) => {
                copies.shadows_copied.extend(filled);
                return Err(e.into());
            }
        };
        let mut pending = filled.into_iter();
        while let Some(oid) = pending.next() {
            if self.partitions.is_copying(oid) {
                copies.shadows_copied.push(oid);
                continue;
            }
            let Some(live) = self.shadows.get_mut(&oid) else {
                continue;
            };
            let step = async {
                if !live.exchanged {
                    resync::live::exchange(&ch, dest, &state, &live.source, &live.dest).await?;
                    live.exchanged = true;
                    applier.set_dest(oid, &live.dest);
                }
                // Safe to repeat, so a failure after the exchange is retried here.
                if let Some(plan) = applier.plans().into_iter().find(|p| p.source.oid == oid) {
                    resync::live::settle(&ch, dest, &state, &plan).await?;
                }
                resync::live::clean_up(&ch, dest, &state, &live.source, &live.dest).await
            };
            if let Err(e) = step.await {
                copies.shadows_copied.push(oid);
                copies.shadows_copied.extend(pending);
                return Err(e.into());
            }
            self.shadows.remove(&oid);
            // The tree is recorded under the real table from now on.
            self.partitions.forget_saved(oid);
        }
        Ok(())
    }

    /// Copies the leaves attached to `parent` with rows; stops for a resync of
    /// `parent` when one of its leaves was detached, dropped or truncated with rows.
    pub(super) fn follow_tree(
        &mut self,
        parent: &Arc<TablePlan>,
        tree: membership::TreeChanges,
        copies: &mut Copies,
        xmax: u64,
    ) -> Result<(), RunError> {
        if let Some(detail) = tree.resync {
            return Err(RunError::Apply(ApplyError::SchemaChanged {
                table: parent.source.display(),
                detail,
            }));
        }
        for leaf in tree.attached {
            tracing::info!(table = %parent.source.display(), partition = %format!("{}.{}", leaf.schema, leaf.name), "partition attached with rows; copying it");
            copies.start_leaf(
                parent.source.oid,
                leaf.oid,
                snapshot::Prepared {
                    plans: vec![Arc::new(membership::leaf_plan(parent, &leaf))],
                    server_version: self.server_version,
                },
                Some(xmax),
            );
        }
        Ok(())
    }
}
