//! Applies decoded changes to per-table batches and writes them to ClickHouse.
//!
//! Every flush writes all non-empty batches; only when every insert has returned are
//! the commits received before the flush marked durable in the ledger, whose safe LSN
//! then goes to the slot (DESIGN.md rule 5). A failed insert is retried with the same
//! rows (they are versioned: a repeat converges), so nothing is lost or reordered.

use crate::sink::types::MappingOptions;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::ApplyError;
use super::{insert, schema, toast};
use crate::checkpoint::{CommitTicket, Ledger};
use crate::config::FlushLimits;
use crate::config::{DestinationSettings, PipelineSettings};
use crate::lsn::Lsn;
use crate::metrics::Op;
use crate::pipeline::batch::{TableBatch, TxStamp};
use crate::sink::client as ch_client;
use crate::sink::inflight::wait_for_inserts;
use crate::sink::preflight::quote_ident as ch_quote;
use crate::sink::rowbinary::ClampCounts;
use crate::sink::state::{keys, StateStore};
use crate::snapshot::control::CopyControl;
use crate::snapshot::plan::TablePlan;
use crate::snapshot::visibility::CopyVisibility;
use crate::source::pgoutput::{Oid, Relation};

struct Lane {
    plan: Arc<TablePlan>,
    batch: TableBatch,
    /// Columns (name, type, typmod) of the last Relation message of this session.
    last_relation: Option<Vec<(String, u32, i32)>>,
    /// The table's column names as the catalog last showed them.
    live: BTreeSet<String>,
    /// Changes received since the last report: inserts, updates, deletes.
    received: [u64; 3],
    /// Transactions committed at or before this are in the table's last resync copy:
    /// their replayed changes are skipped (the stream may lack later deletes of them).
    copied_through: Option<Lsn>,
    /// A multiset table's copy snapshot: the transactions it saw are in the copy, and
    /// adding their changes again would count them twice (see
    /// [`crate::snapshot::visibility`]).
    seen_by_copy: Option<CopyVisibility>,
}

/// The kind of a row change, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Insert,
    Update,
    Delete,
}

/// The apply side of the pipeline: relations, batches, ledger.
pub struct Applier {
    lanes: Vec<Lane>,
    /// `server_version_num` of the source, for catalog reads.
    server_version: u32,
    /// The type map the tables were planned with: a shape change re-plans with it, so
    /// the stream keeps encoding as the snapshot does.
    mapping: MappingOptions,
    /// The transaction being received, as history rows record it.
    tx: TxStamp,
    /// Source tables (oids) a streamed TRUNCATE emptied since the membership poll.
    truncated: Vec<u32>,
    control: Arc<CopyControl>,
    by_name: HashMap<String, usize>,
    relations: HashMap<Oid, usize>,
    pub ledger: Ledger,
    /// Commits received since the last flush.
    pending: Vec<CommitTicket>,
    /// Commit time (Postgres microseconds) of the last commit in `pending`.
    pending_commit_time: Option<i64>,
    /// The first commit since the last seal: its wait is the flush's longest.
    pending_first_commit_time: Option<i64>,
    policy: FlushLimits,
    budget_bytes: u64,
    pub clamps: ClampCounts,
    inserts: u64,
    /// The transaction being received (its Begin's xid and commit LSN).
    xid: u32,
    final_lsn: Lsn,
    /// Transactions since the last flush with an UPDATE that left a TOASTed value
    /// unchanged: the values are read in a snapshot that sees them (rule 6).
    toast_xids: BTreeSet<u32>,
    /// The flush whose inserts run in the background.
    in_flight: Option<insert::InFlight>,
    max_concurrent_inserts: usize,
}

impl Applier {
    /// An applier for the planned tables, starting at the slot's confirmed position.
    pub fn new(
        plans: Vec<Arc<TablePlan>>,
        confirmed: Lsn,
        pipeline: &PipelineSettings,
        control: Arc<CopyControl>,
    ) -> Self {
        let mut by_name = HashMap::new();
        let lanes: Vec<Lane> = plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| {
                by_name.insert(plan.source.display(), i);
                Lane {
                    batch: TableBatch::for_plan(&plan),
                    live: plan.published.iter().map(|c| c.name.clone()).collect(),
                    plan,
                    last_relation: None,
                    received: [0; 3],
                    copied_through: None,
                    seen_by_copy: None,
                }
            })
            .collect();
        Applier {
            server_version: 0,
            mapping: MappingOptions::default(),
            tx: TxStamp::default(),
            truncated: Vec::new(),
            lanes,
            control,
            by_name,
            relations: HashMap::new(),
            ledger: Ledger::new(confirmed),
            pending: Vec::new(),
            pending_commit_time: None,
            pending_first_commit_time: None,
            policy: pipeline.flush,
            budget_bytes: pipeline.memory_budget_bytes,
            clamps: ClampCounts::default(),
            inserts: 0,
            xid: 0,
            final_lsn: Lsn::ZERO,
            toast_xids: BTreeSet::new(),
            in_flight: None,
            max_concurrent_inserts: pipeline.max_concurrent_inserts,
        }
    }

    /// Whether a streamed TRUNCATE emptied the table since the last call.
    pub fn take_truncated(&mut self, oid: u32) -> bool {
        let before = self.truncated.len();
        self.truncated.retain(|o| *o != oid);
        self.truncated.len() != before
    }

    /// Sets the type map the tables were planned with (the destination's capabilities).
    pub fn set_mapping(&mut self, mapping: MappingOptions) {
        self.mapping = mapping;
    }

    /// Sets the source's `server_version_num` (catalog queries depend on it).
    pub fn set_server_version(&mut self, version: u32) {
        self.server_version = version;
    }

    /// The plans of every table streamed.
    pub fn plans(&self) -> Vec<Arc<TablePlan>> {
        self.lanes.iter().map(|l| l.plan.clone()).collect()
    }

    /// Points the lane of source table `oid` at another ClickHouse table (a live
    /// resync's shadow was swapped in under the real name).
    pub fn set_dest(&mut self, oid: u32, dest: &str) {
        if let Some(lane) = self.lanes.iter_mut().find(|l| l.plan.source.oid == oid) {
            lane.plan = Arc::new(lane.plan.with_dest(dest));
        }
    }

    /// Whether a Relation message names a table pgch streams.
    pub fn knows(&self, r: &Relation) -> bool {
        self.by_name
            .contains_key(&format!("{}.{}", r.namespace, r.name))
    }

    /// Routes a leaf partition's Relation to the lane of its published root, when the
    /// leaf has the root's columns in the root's order (its tuples then fit the root's
    /// table); returns whether it did.
    pub fn alias_leaf(&mut self, r: &Relation, root: u32) -> bool {
        let Some(lane) = self.lanes.iter().position(|l| l.plan.source.oid == root) else {
            return false;
        };
        let same_columns = self.lanes[lane]
            .plan
            .published
            .iter()
            .map(|c| c.name.as_str())
            .eq(r.columns.iter().map(|c| c.name.as_str()));
        if same_columns {
            self.by_name
                .insert(format!("{}.{}", r.namespace, r.name), lane);
        }
        same_columns
    }

    /// Adds lanes for tables that joined the publication.
    pub fn add_tables(&mut self, plans: &[Arc<TablePlan>]) {
        for plan in plans {
            if self.by_name.contains_key(&plan.source.display()) {
                continue;
            }
            self.by_name.insert(plan.source.display(), self.lanes.len());
            self.lanes.push(Lane {
                batch: TableBatch::for_plan(plan),
                live: plan.published.iter().map(|c| c.name.clone()).collect(),
                plan: plan.clone(),
                last_relation: None,
                received: [0; 3],
                copied_through: None,
                seen_by_copy: None,
            });
        }
    }

    /// A Relation message: maps its id to a planned table whose columns it must match.
    pub async fn relation(
        &mut self,
        r: &Relation,
        pg: &tokio_postgres::Client,
        ch: &clickhouse::Client,
        dest: &DestinationSettings,
    ) -> Result<(), ApplyError> {
        let name = format!("{}.{}", r.namespace, r.name);
        let &lane = self
            .by_name
            .get(&name)
            .ok_or_else(|| ApplyError::UnplannedTable(name.clone()))?;
        if self.lanes[lane]
            .copied_through
            .is_some_and(|through| self.final_lsn <= through)
        {
            // A shape from before the table's resync copy, whose rows are skipped
            // (`in_copy`): later rows of this relation still need the mapping, and the
            // next Relation is compared with the plan again.
            self.relations.insert(r.id, lane);
            self.lanes[lane].last_relation = None;
            return Ok(());
        }
        let sent: Vec<(String, u32, i32)> = r
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
            .collect();
        let unchanged = match &self.lanes[lane].last_relation {
            Some(previous) => *previous == sent,
            // The first message of a session: the plan was read from the catalog, maybe
            // before a change the stream is only now delivering (names and types, as
            // the Relation names them).
            None => self.lanes[lane]
                .plan
                .published
                .iter()
                .map(|c| (c.name.as_str(), c.sent_type))
                .eq(r
                    .columns
                    .iter()
                    .map(|c| (c.name.as_str(), (c.type_oid, c.type_modifier)))),
        };
        if !unchanged {
            self.reshape(lane, r, pg, ch, dest).await?;
        }
        self.lanes[lane].last_relation = Some(sent);
        self.relations.insert(r.id, lane);
        Ok(())
    }

    /// The table changed shape (DESIGN.md rule 9): rows of the old shape are written
    /// first, then ClickHouse is altered, then the lane takes the new plan.
    async fn reshape(
        &mut self,
        lane: usize,
        r: &Relation,
        pg: &tokio_postgres::Client,
        ch: &clickhouse::Client,
        dest: &DestinationSettings,
    ) -> Result<(), ApplyError> {
        self.flush(pg, ch, dest).await?;
        let table = self.lanes[lane].plan.source.display();
        if !self.lanes[lane].batch.is_empty() {
            return Err(ApplyError::SchemaChanged {
                table,
                detail: "its shape changed inside a transaction whose earlier rows still wait for TOAST values".into(),
            });
        }
        let change = schema::reshape(
            pg,
            ch,
            dest,
            &self.lanes[lane].plan,
            &self.lanes[lane].live,
            r,
            schema::Planning {
                server_version: self.server_version,
                mapping: &self.mapping,
            },
        )
        .await?;
        for sql in &change.statements {
            tracing::info!(table = %table, statement = %sql, "following a schema change");
            ch_client::execute(ch, dest, sql).await?;
        }
        let plan = change.plan;
        if !change.statements.is_empty() {
            // The view lists the columns: it follows an added or renamed one.
            crate::snapshot::destination::refresh_view(ch, dest, &plan).await?;
        }
        if !change.replayed {
            self.lanes[lane].live = plan.published.iter().map(|c| c.name.clone()).collect();
        }
        let l = &mut self.lanes[lane];
        l.batch = TableBatch::for_plan(&plan);
        l.plan = Arc::new(plan);
        Ok(())
    }

    /// The batch of a relation id, counting one change of `kind`; the plan names the
    /// table in errors.
    pub fn batch(
        &mut self,
        relation: Oid,
        kind: Change,
    ) -> Result<(&mut TableBatch, &TablePlan), ApplyError> {
        let &lane = self
            .relations
            .get(&relation)
            .ok_or(ApplyError::UnknownRelation(relation))?;
        let l = &mut self.lanes[lane];
        l.received[kind as usize] += 1;
        l.batch.set_transaction(self.tx);
        Ok((&mut l.batch, &l.plan))
    }

    /// The destination table of a relation id (for TRUNCATE).
    pub fn lane_of(&self, relation: Oid) -> Option<usize> {
        self.relations.get(&relation).copied()
    }

    /// A transaction begins: keepalives are not acknowledged until it commits.
    /// `commit_time` (µs since 1970) goes into history tables' rows.
    pub fn begin(&mut self, xid: u32, final_lsn: Lsn, commit_time: i64) {
        self.ledger.begin();
        self.xid = xid;
        self.tx = TxStamp { xid, commit_time };
        self.final_lsn = final_lsn;
    }

    /// Marks the table `oid` as copied (by a resync) through every transaction
    /// committed at or before `lsn`.
    pub fn set_copied_through(&mut self, oid: u32, lsn: Lsn) {
        if let Some(lane) = self.lanes.iter_mut().find(|l| l.plan.source.oid == oid) {
            lane.copied_through = Some(lsn);
        }
    }

    /// Sets the snapshot of a multiset table's copy: changes of the transactions it saw
    /// are skipped.
    pub fn set_seen_by_copy(&mut self, oid: u32, seen: CopyVisibility) {
        if let Some(lane) = self.lanes.iter_mut().find(|l| l.plan.source.oid == oid) {
            lane.seen_by_copy = Some(seen);
        }
    }

    /// Whether a change of `relation` in the current transaction is already in the
    /// table's copy (its last resync copy, or a multiset table's copy), and must not be
    /// applied over it.
    pub fn in_copy(&self, relation: Oid) -> bool {
        let Some(lane) = self.relations.get(&relation).map(|&l| &self.lanes[l]) else {
            return false;
        };
        lane.copied_through
            .is_some_and(|through| self.final_lsn <= through)
            || lane
                .seen_by_copy
                .as_ref()
                .is_some_and(|seen| seen.saw(self.xid, self.final_lsn))
    }

    /// The current transaction's UPDATE left a TOASTed value unchanged.
    pub fn unchanged_toast(&mut self) {
        self.toast_xids.insert(self.xid);
    }

    /// A commit: acknowledgeable after the next flush.
    pub fn commit(&mut self, end_lsn: Lsn, commit_time: i64) {
        let t = self.ledger.commit(end_lsn);
        self.pending.push(t);
        self.pending_commit_time = Some(commit_time);
        self.pending_first_commit_time.get_or_insert(commit_time);
    }

    /// Whether a batch is due by its own limits (rows, bytes, age).
    pub fn flush_due(&self, now: Instant) -> bool {
        self.lanes
            .iter()
            .any(|l| self.policy.due(&l.batch.fill, now).is_some())
    }

    /// Whether pending rows and the flush in flight together hold the pipeline's byte
    /// budget: then the next flush must start now, waiting for the one in flight
    /// (DESIGN.md rule 7: a slow ClickHouse slows the read; memory does not grow).
    pub fn over_budget(&self) -> bool {
        let pending: u64 = self.lanes.iter().map(|l| l.batch.fill.bytes).sum();
        let in_flight = self.in_flight.as_ref().map_or(0, |j| j.bytes);
        crate::metrics::global().memory_in_use(pending + in_flight);
        pending > 0 && pending + in_flight >= self.budget_bytes
    }

    /// Until the oldest batch is due by age.
    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        self.lanes
            .iter()
            .filter_map(|l| self.policy.time_left(&l.batch.fill, now))
            .min()
    }

    /// Whether rows wait in any batch.
    pub fn has_rows(&self) -> bool {
        self.lanes.iter().any(|l| !l.batch.fill.is_empty())
    }

    /// Forgets everything not yet durable, after a lost session: the slot sends it again
    /// from its confirmed position.
    pub fn discard_in_flight(&mut self) {
        if let Some(job) = self.in_flight.take() {
            // Whatever it still writes is versioned: the replay converges with it.
            job.handle.abort();
        }
        for lane in &mut self.lanes {
            lane.batch.restart();
        }
        self.pending.clear();
        self.toast_xids.clear();
        self.ledger.discard_in_flight();
    }

    /// Commits waiting for a flush.
    pub fn has_pending_commits(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The TRUNCATE barrier (DESIGN.md rule 8): cancels the table's copies and waits
    /// until none is inserting, drops its unflushed rows, empties the ClickHouse table,
    /// and marks its snapshot complete — the stream carries everything after this.
    pub async fn truncate(
        &mut self,
        lane: usize,
        ch: &clickhouse::Client,
        dest: &DestinationSettings,
        slot: &str,
    ) -> Result<(), ApplyError> {
        let table = self.lanes[lane].plan.dest.clone();
        self.truncated.push(self.lanes[lane].plan.source.oid);
        self.control.gate(&table).cancel_and_wait().await;
        wait_for_inserts(ch, dest, &table).await;
        let l = &mut self.lanes[lane];
        l.batch.clear();
        // Everything after this comes from the stream: no copy is left to overlap with.
        l.seen_by_copy = None;
        if l.plan.is_history() {
            // A history keeps what happened before the TRUNCATE; the rows inserted
            // after it follow as changes.
            tracing::info!(table = %l.plan.source.display(), "TRUNCATE: the history table keeps its rows");
        } else {
            let sql = format!(
                "TRUNCATE TABLE {}.{}",
                ch_quote(&dest.database),
                ch_quote(&table)
            );
            ch_client::execute(ch, dest, &sql).await?;
        }
        let state = StateStore::open(dest, slot).await?;
        state
            .put(&keys::snapshot_complete(&table), "truncated")
            .await?;
        state
            .forget(&[keys::copy_visibility(&l.plan.source.display())])
            .await?;
        if l.plan.source.relkind == "p" {
            let recorded = state.load().await?;
            crate::membership::record_tree_emptied(&state, &recorded, &table).await?;
        }
        crate::metrics::global().rows(&table, Op::Truncate, 1);
        tracing::info!(table = %l.plan.source.display(), "TRUNCATE applied");
        Ok(())
    }

    /// Writes every batch and waits for it (and for the flush already in flight), then
    /// marks the commits received so far durable. Returns the LSN that may now be
    /// confirmed. For barriers (TRUNCATE, a schema change) and shutdown.
    pub async fn flush(
        &mut self,
        pg: &tokio_postgres::Client,
        ch: &clickhouse::Client,
        dest: &DestinationSettings,
    ) -> Result<Lsn, ApplyError> {
        self.start_flush(pg, ch, dest).await?;
        if self.in_flight.is_some() {
            self.flushed().await?;
        }
        Ok(self.ledger.safe_lsn())
    }

    /// Seals every pending batch into inserts that run in the background while the
    /// stream reads on ([`super::insert`]). Waits first for the flush in flight, if any:
    /// at most one is, so flushes land in order. Commits sealed with no rows behind
    /// them are durable at once.
    pub async fn start_flush(
        &mut self,
        pg: &tokio_postgres::Client,
        ch: &clickhouse::Client,
        dest: &DestinationSettings,
    ) -> Result<(), ApplyError> {
        if self.in_flight.is_some() {
            self.flushed().await?;
        }
        let mut inserts = Vec::new();
        for lane in &mut self.lanes {
            if lane.batch.is_empty() {
                continue;
            }
            // Unchanged TOAST values are read now, also mid-transaction: without
            // streaming (rule 5), pgoutput sends a transaction only after it committed,
            // so Postgres already shows its values.
            toast::resolve(pg, &lane.plan, &mut lane.batch, &self.toast_xids).await?;
            if lane.batch.is_empty() {
                continue;
            }
            self.inserts += 1;
            inserts.push(insert::encode(
                &lane.plan,
                &lane.batch,
                lane.received,
                self.inserts,
            )?);
            lane.received = [0; 3];
        }
        for lane in &mut self.lanes {
            lane.batch.clear();
        }
        self.toast_xids.clear();
        let sealed = insert::Sealed {
            inserts,
            tickets: std::mem::take(&mut self.pending),
            commit_time: self.pending_commit_time.take(),
            first_commit_time: self.pending_first_commit_time.take(),
        };
        tracing::debug!(
            inserts = sealed.inserts.len(),
            commits = sealed.tickets.len(),
            "flush sealed"
        );
        if sealed.inserts.is_empty() {
            self.finish(sealed);
        } else {
            self.in_flight = Some(insert::spawn(
                sealed,
                ch.clone(),
                dest.clone(),
                self.max_concurrent_inserts,
            ));
        }
        Ok(())
    }

    /// Waits until the flush in flight has written everything, marks its commits
    /// durable and returns the LSN that may now be confirmed. Never returns while no
    /// flush is in flight (for `select!`); cancel-safe.
    pub async fn flushed(&mut self) -> Result<Lsn, ApplyError> {
        let Some(job) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = (&mut job.handle).await;
        self.in_flight = None;
        let sealed = outcome.map_err(|e| ApplyError::InsertTask(e.to_string()))??;
        self.finish(sealed);
        Ok(self.ledger.safe_lsn())
    }

    /// Whether inserts run in the background.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Counts what a flush wrote and marks its commits durable.
    fn finish(&mut self, sealed: insert::Sealed) {
        let metrics = crate::metrics::global();
        for e in &sealed.inserts {
            let ops = [Op::Insert, Op::Update, Op::Delete];
            for (n, op) in e.received.iter().zip(ops) {
                if *n > 0 {
                    metrics.rows(&e.plan.dest, op, *n);
                }
            }
            if e.clamps.total() > 0 {
                metrics.clamped(&e.plan.dest, &e.clamps);
            }
            self.clamps.merge(&e.clamps);
        }
        if !sealed.tickets.is_empty() {
            crate::failpoint::hit(crate::failpoint::AFTER_INSERT_BEFORE_ACK);
        }
        for t in sealed.tickets {
            self.ledger.mark_durable(t);
        }
        if let Some(time) = sealed.commit_time {
            metrics.applied_commit(time);
            metrics.made_visible(sealed.first_commit_time.unwrap_or(time), time);
        }
    }
}
