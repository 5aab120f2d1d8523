//! The copies running beside the stream (DESIGN.md rule 3): the initial one, one per
//! batch of joining tables, one per attached leaf, one per live-resync shadow — each
//! reporting what it copied when it ends.

use std::sync::Arc;
use std::time::Instant;

use super::{RunError, RECONNECT_MAX, RECONNECT_MIN};
use crate::config::{Mode, Settings};
use crate::snapshot::control::CopyControl;
use crate::snapshot::{self, SnapshotOptions};

/// The copies running beside the stream: the initial one, and one per batch of tables
/// that joined the publication.
pub(super) struct Copies {
    settings: Settings,
    opts: SnapshotOptions,
    control: Arc<CopyControl>,
    /// Each copy ends saying what it copied.
    tasks: tokio::task::JoinSet<Result<Copied, snapshot::SnapshotError>>,
    /// Leaves whose copies finished since the last look.
    leaves_copied: Vec<(u32, u32)>,
    /// Tables (source oids) whose live-resync shadows are filled, since the last look.
    pub(super) shadows_copied: Vec<u32>,
}

/// What a finished copy task copied.
pub(super) enum Copied {
    Tables,
    /// A leaf (tree, leaf) attached to a partitioned table.
    Leaf(u32, u32),
    /// The shadow of a table resynced live (its source oid).
    Shadow(u32),
}

impl Copies {
    pub(super) fn new(
        settings: &Settings,
        opts: &SnapshotOptions,
        control: Arc<CopyControl>,
    ) -> Copies {
        Copies {
            settings: settings.clone(),
            opts: opts.clone(),
            control,
            tasks: tokio::task::JoinSet::new(),
            leaves_copied: Vec::new(),
            shadows_copied: Vec::new(),
        }
    }

    /// Adds snapshots held for keyless tables' copies (see [`super::multiset`]).
    pub(super) fn hold(
        &mut self,
        held: std::collections::BTreeMap<String, Arc<snapshot::held::HeldSnapshot>>,
    ) {
        self.opts.held.extend(held);
    }

    /// Copies `prepared` in a snapshot whose xmin is at least `min_xmin`; in
    /// `cdc_only` mode nothing is copied.
    pub(super) fn start(&mut self, prepared: snapshot::Prepared, min_xmin: Option<u64>) {
        self.spawn(prepared, min_xmin, Copied::Tables);
    }

    /// Copies a leaf attached to the partitioned table `tree` into the tree's table.
    pub(super) fn start_leaf(
        &mut self,
        tree: u32,
        leaf: u32,
        prepared: snapshot::Prepared,
        min_xmin: Option<u64>,
    ) {
        self.spawn(prepared, min_xmin, Copied::Leaf(tree, leaf));
    }

    /// Fills the shadow of a table resynced live (also in `cdc_only` mode: a resync is
    /// a copy).
    pub(super) fn start_shadow(
        &mut self,
        table: u32,
        prepared: snapshot::Prepared,
        min_xmin: Option<u64>,
    ) {
        self.spawn(prepared, min_xmin, Copied::Shadow(table));
    }

    pub(super) fn spawn(
        &mut self,
        prepared: snapshot::Prepared,
        min_xmin: Option<u64>,
        what: Copied,
    ) {
        let copies =
            self.settings.mode == Mode::SnapshotAndCdc || matches!(what, Copied::Shadow(_));
        if !copies || prepared.plans.is_empty() {
            // Nothing to copy: as good as copied.
            self.note(what);
            return;
        }
        let mut opts = self.opts.clone();
        opts.min_xmin = min_xmin;
        let copy = copy_until_done(self.settings.clone(), opts, prepared, self.control.clone());
        self.tasks.spawn(async move { copy.await.map(|()| what) });
    }

    pub(super) fn note(&mut self, copied: Copied) {
        match copied {
            Copied::Tables => {}
            Copied::Leaf(tree, leaf) => self.leaves_copied.push((tree, leaf)),
            Copied::Shadow(table) => self.shadows_copied.push(table),
        }
    }

    /// Live-resync shadows filled since the last call.
    pub(super) fn take_shadows_copied(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.shadows_copied)
    }

    /// Leaves whose copies finished since the last call.
    pub(super) fn take_leaves_copied(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.leaves_copied)
    }

    /// Resolves when a copy ends with an error (a finished one is just reaped); never
    /// while none fails.
    pub(super) async fn failed(&mut self) -> RunError {
        loop {
            match self.tasks.join_next().await {
                None => return std::future::pending().await,
                Some(Ok(Ok(copied))) => self.note(copied),
                Some(Ok(Err(e))) => return RunError::from(e),
                // Nothing restarts a copy task that panicked: stop, a restart resumes it.
                Some(Err(e)) => return RunError::CopyTask(e.to_string()),
            }
        }
    }

    pub(super) fn abort(&mut self) {
        self.tasks.abort_all();
    }
}

/// Copies every table, retrying transient failures (a partition copied in part is
/// copied again: its rows are versioned 0 and converge).
pub(super) async fn copy_until_done(
    settings: Settings,
    opts: SnapshotOptions,
    prepared: snapshot::Prepared,
    control: Arc<CopyControl>,
) -> Result<(), snapshot::SnapshotError> {
    let mut backoff = RECONNECT_MIN;
    loop {
        let started = Instant::now();
        match snapshot::copy_all(&settings, &opts, &prepared, &control).await {
            Ok(report) => {
                tracing::info!(
                    tables = report.tables.len(),
                    partitions_copied = report.partitions_copied,
                    partitions_already_done = report.partitions_skipped,
                    seconds = %format!("{:.1}", started.elapsed().as_secs_f64()),
                    "initial copy complete"
                );
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "initial copy interrupted; resuming");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}
