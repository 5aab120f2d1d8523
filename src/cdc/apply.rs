//! Applies decoded changes to per-table batches and writes them to ClickHouse.
//!
//! Every flush writes all non-empty batches; only when every insert has returned are
//! the commits received before the flush marked durable in the ledger, whose safe LSN
//! then goes to the slot (DESIGN.md rule 5). A failed insert is retried with the same
//! rows (they are versioned: a repeat converges), so nothing is lost or reordered.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{schema, toast};
use crate::checkpoint::{CommitTicket, Ledger};
use crate::config::{DestinationSettings, PipelineSettings};
use crate::error::{self, Class};
use crate::lsn::Lsn;
use crate::metrics::{health, Op};
use crate::pipeline::batch::{ImageError, TableBatch};
use crate::pipeline::flush::FlushPolicy;
use crate::sink::client::{self as ch_client, SinkError};
use crate::sink::ddl::SYSTEM_COLUMNS;
use crate::sink::preflight::quote_ident as ch_quote;
use crate::sink::rowbinary::{ClampCounts, Codec};
use crate::sink::state::{keys, StateStore};
use crate::sink::writer::RowBinaryInsert;
use crate::snapshot::control::CopyControl;
use crate::snapshot::copy::copy_query_prefix;
use crate::snapshot::plan::TablePlan;
use crate::source::pgoutput::{Oid, Relation};
use crate::source::row::ReadError;

/// Why applying failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{table}: {source}")]
    Image { table: String, source: ImageError },
    #[error("a change refers to relation {0}, which no Relation message announced")]
    UnknownRelation(Oid),
    #[error(
        "{0} is not part of the publication pgch planned at start; restart pgch to pick it up"
    )]
    UnplannedTable(String),
    #[error("{table} changed in a way pgch cannot follow in place ({detail}): run `pgch resync --table {table}`")]
    SchemaChanged { table: String, detail: String },
    #[error("reading the catalog of {table} failed: {source}")]
    Catalog { table: String, source: ReadError },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("reading unchanged TOAST values of {table} from Postgres failed: {source}")]
    Toast { table: String, source: ReadError },
    #[error("the transactions whose unchanged TOAST values {table} needs were still not visible after {waited:?}; reading them again from the slot")]
    NotVisible {
        table: String,
        waited: std::time::Duration,
    },
}

impl ApplyError {
    /// Retry or stop with a fix.
    pub fn classify(&self) -> Class {
        match self {
            ApplyError::Sink(e) => error::clickhouse(e),
            // The session starts over from the slot; the changes come again.
            ApplyError::NotVisible { .. } => Class::Retry,
            ApplyError::Toast { source, .. } | ApplyError::Catalog { source, .. } => {
                source.classify()
            }
            _ => Class::Fatal { fix: String::new() },
        }
    }
}

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
    policy: FlushPolicy,
    budget_bytes: u64,
    pub clamps: ClampCounts,
    inserts: u64,
    /// The transaction being received (its Begin's xid and commit LSN).
    xid: u32,
    final_lsn: Lsn,
    /// Transactions since the last flush with an UPDATE that left a TOASTed value
    /// unchanged: the values are read in a snapshot that sees them (rule 6).
    toast_xids: BTreeSet<u32>,
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
                let keys = plan.key_columns();
                Lane {
                    batch: TableBatch::new(plan.columns.len(), keys),
                    live: plan.columns.iter().map(|c| c.name.clone()).collect(),
                    plan,
                    last_relation: None,
                    received: [0; 3],
                    copied_through: None,
                }
            })
            .collect();
        Applier {
            server_version: 0,
            truncated: Vec::new(),
            lanes,
            control,
            by_name,
            relations: HashMap::new(),
            ledger: Ledger::new(confirmed),
            pending: Vec::new(),
            pending_commit_time: None,
            policy: pipeline.flush,
            budget_bytes: pipeline.memory_budget_bytes,
            clamps: ClampCounts::default(),
            inserts: 0,
            xid: 0,
            final_lsn: Lsn::ZERO,
            toast_xids: BTreeSet::new(),
        }
    }

    /// Whether a streamed TRUNCATE emptied the table since the last call.
    pub fn take_truncated(&mut self, oid: u32) -> bool {
        let before = self.truncated.len();
        self.truncated.retain(|o| *o != oid);
        self.truncated.len() != before
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
            .columns
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
            let keys = plan.key_columns();
            self.by_name.insert(plan.source.display(), self.lanes.len());
            self.lanes.push(Lane {
                batch: TableBatch::new(plan.columns.len(), keys),
                live: plan.columns.iter().map(|c| c.name.clone()).collect(),
                plan: plan.clone(),
                last_relation: None,
                received: [0; 3],
                copied_through: None,
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
                .columns
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
            self.server_version,
        )
        .await?;
        for sql in &change.statements {
            tracing::info!(table = %table, statement = %sql, "following a schema change");
            ch_client::execute(ch, dest, sql).await?;
        }
        let plan = change.plan;
        if !change.replayed {
            self.lanes[lane].live = plan.columns.iter().map(|c| c.name.clone()).collect();
        }
        let keys = plan.key_columns();
        let l = &mut self.lanes[lane];
        l.batch = TableBatch::new(plan.columns.len(), keys);
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
        Ok((&mut l.batch, &l.plan))
    }

    /// The destination table of a relation id (for TRUNCATE).
    pub fn lane_of(&self, relation: Oid) -> Option<usize> {
        self.relations.get(&relation).copied()
    }

    /// A transaction begins: keepalives are not acknowledged until it commits.
    pub fn begin(&mut self, xid: u32, final_lsn: Lsn) {
        self.ledger.begin();
        self.xid = xid;
        self.final_lsn = final_lsn;
    }

    /// Marks the table `oid` as copied (by a resync) through every transaction
    /// committed at or before `lsn`.
    pub fn set_copied_through(&mut self, oid: u32, lsn: Lsn) {
        if let Some(lane) = self.lanes.iter_mut().find(|l| l.plan.source.oid == oid) {
            lane.copied_through = Some(lsn);
        }
    }

    /// Whether a change of `relation` in the current transaction is already in the
    /// table's resync copy, and must not be replayed over it.
    pub fn in_copy(&self, relation: Oid) -> bool {
        self.relations
            .get(&relation)
            .and_then(|&lane| self.lanes[lane].copied_through)
            .is_some_and(|through| self.final_lsn <= through)
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
    }

    /// Whether any batch must be written now — by its own limits, or because all
    /// batches together hold the pipeline's byte budget (DESIGN.md rule 7: a slow
    /// ClickHouse slows the read; memory does not grow).
    pub fn flush_due(&self, now: Instant) -> bool {
        let total: u64 = self.lanes.iter().map(|l| l.batch.fill.bytes).sum();
        crate::metrics::global().memory_in_use(total);
        total >= self.budget_bytes
            || self
                .lanes
                .iter()
                .any(|l| self.policy.due(&l.batch.fill, now).is_some())
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
        for lane in &mut self.lanes {
            lane.batch.clear();
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
        let sql = format!(
            "TRUNCATE TABLE {}.{}",
            ch_quote(&dest.database),
            ch_quote(&table)
        );
        ch_client::execute(ch, dest, &sql).await?;
        let state = StateStore::open(dest, slot).await?;
        state
            .put(&keys::snapshot_complete(&table), "truncated")
            .await?;
        if l.plan.source.relkind == "p" {
            let recorded = state.load().await?;
            super::membership::record_tree_emptied(&state, &recorded, &table).await?;
        }
        crate::metrics::global().rows(&table, Op::Truncate, 1);
        tracing::info!(table = %l.plan.source.display(), "TRUNCATE applied");
        Ok(())
    }

    /// Writes every batch, then marks the commits received so far durable. Returns the
    /// LSN that may now be confirmed.
    pub async fn flush(
        &mut self,
        pg: &tokio_postgres::Client,
        ch: &clickhouse::Client,
        dest: &DestinationSettings,
    ) -> Result<Lsn, ApplyError> {
        let mut encoded = Vec::new();
        for i in 0..self.lanes.len() {
            if self.lanes[i].batch.is_empty() {
                continue;
            }
            // Unchanged TOAST values are read now, also mid-transaction: without
            // streaming (rule 5), pgoutput sends a transaction only after it committed,
            // so Postgres already shows its values.
            let lane = &mut self.lanes[i];
            toast::resolve(pg, &lane.plan, &mut lane.batch, &self.toast_xids).await?;
            if lane.batch.is_empty() {
                continue;
            }
            self.inserts += 1;
            encoded.push(encode_lane(lane, i, self.inserts)?);
        }
        // The tables' inserts run concurrently; each retries on its own. Rows stay in
        // their batches until every insert has returned. A fatal error of one stops the
        // others at once (one may be retrying through an outage): nothing of this flush
        // is acknowledged, and the TRUNCATE barrier waits out abandoned inserts.
        futures_util::future::try_join_all(
            encoded
                .iter()
                .map(|e| insert_with_retry(ch, dest, &self.lanes[e.lane].plan, e)),
        )
        .await?;
        let metrics = crate::metrics::global();
        for e in &encoded {
            let lane = &mut self.lanes[e.lane];
            let ops = [Op::Insert, Op::Update, Op::Delete];
            for (n, op) in lane.received.iter().zip(ops) {
                if *n > 0 {
                    metrics.rows(&lane.plan.dest, op, *n);
                }
            }
            lane.received = [0; 3];
            let clamped = e.clamps.total();
            if clamped > 0 {
                metrics.clamped(&lane.plan.dest, clamped);
            }
            self.clamps.merge(&e.clamps);
        }
        for lane in &mut self.lanes {
            lane.batch.clear();
        }
        self.toast_xids.clear();
        if !self.pending.is_empty() {
            crate::failpoint::hit(crate::failpoint::AFTER_INSERT_BEFORE_ACK);
        }
        for t in self.pending.drain(..) {
            self.ledger.mark_durable(t);
        }
        if let Some(time) = self.pending_commit_time.take() {
            metrics.applied_commit(time);
        }
        Ok(self.ledger.safe_lsn())
    }
}

/// One table's rows, encoded and ready to insert.
struct Encoded {
    lane: usize,
    rows: u64,
    body: Bytes,
    columns: Vec<String>,
    query_id: String,
    clamps: ClampCounts,
}

fn encode_lane(lane: &Lane, index: usize, serial: u64) -> Result<Encoded, ApplyError> {
    let codecs: Vec<&Codec> = lane.plan.mappings.iter().map(|m| &m.codec).collect();
    let mut buf = BytesMut::new();
    let mut clamps = ClampCounts::default();
    lane.batch
        .encode(&codecs, &mut buf, &mut clamps)
        .map_err(|source| ApplyError::Image {
            table: lane.plan.source.display(),
            source,
        })?;
    let mut columns: Vec<String> = lane.plan.columns.iter().map(|c| c.name.clone()).collect();
    columns.extend(SYSTEM_COLUMNS.iter().take(2).map(|(n, _)| n.to_string()));
    Ok(Encoded {
        lane: index,
        rows: lane.batch.len() as u64,
        body: buf.freeze(),
        columns,
        query_id: format!(
            "pgch-cdc-{}-{}-{serial}",
            lane.plan.dest,
            std::process::id()
        ),
        clamps,
    })
}

/// Inserts one table's rows, retrying transient failures with backoff: the same rows
/// again (they are versioned, so a repeat converges), never a part of them.
async fn insert_with_retry(
    ch: &clickhouse::Client,
    dest: &DestinationSettings,
    plan: &TablePlan,
    e: &Encoded,
) -> Result<(), ApplyError> {
    let metrics = crate::metrics::global();
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let started = Instant::now();
        let query_id = format!("{}-{attempt}", e.query_id);
        let mut insert = RowBinaryInsert::start(ch, dest, &plan.dest, &e.columns, query_id);
        insert.buffer().extend_from_slice(&e.body);
        let result = match insert.row_done().await {
            Ok(()) => insert.finish().await.map(|_| ()),
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                health::set_stalled(CLICKHOUSE, false);
                metrics.insert_done(&plan.dest, e.rows, e.body.len() as u64, started.elapsed());
                return Ok(());
            }
            Err(err) if error::clickhouse(&err).is_retry() => {
                tracing::warn!(table = %plan.dest, error = %err, retry_in_ms = backoff.as_millis() as u64, "insert failed; retrying");
                metrics.retry("clickhouse_insert");
                health::set_stalled(CLICKHOUSE, true);
                // Still alive: waiting for ClickHouse is this task's job now.
                health::heartbeat("stream");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(INSERT_RETRY_MAX);
            }
            Err(err) => {
                metrics.error("clickhouse_insert");
                return Err(err.into());
            }
        }
    }
}

/// Longest wait between insert retries: an outage ends at most this long before
/// pgch notices.
const INSERT_RETRY_MAX: Duration = Duration::from_secs(10);

/// The ClickHouse component in `/readyz`.
const CLICKHOUSE: &str = "clickhouse";

/// Waits until ClickHouse runs no insert of `table` any more: a copy (or a stream
/// insert attempt) abandoned by its client may still be finishing on the server, and
/// must not land after a TRUNCATE or an exchange. Servers that cannot tell (no
/// `system.processes`) are taken at their word.
pub async fn wait_for_inserts(ch: &clickhouse::Client, dest: &DestinationSettings, table: &str) {
    // Copies, and attempts of stream inserts abandoned by a retry, of this table.
    let sql = format!(
        "SELECT count() FROM system.processes WHERE startsWith(query_id, '{}') OR startsWith(query_id, '{}')",
        crate::sink::preflight::escape_string(&copy_query_prefix(table)),
        crate::sink::preflight::escape_string(&format!("pgch-cdc-{table}-"))
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match ch_client::query_text(ch, dest, &sql).await {
            Ok(n) if n.trim() == "0" => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list running ClickHouse queries");
                return;
            }
        }
    }
    tracing::warn!(
        table,
        "an abandoned insert still runs in ClickHouse after 60 s; going on anyway"
    );
}
