//! Prometheus metrics: one vocabulary of names (the constants below), one registry, and
//! one process-wide [`Metrics`] that any task reaches through [`global()`] — recording a
//! figure needs no plumbing through the pipeline's call chains.
//!
//! ```text
//!   cdc / snapshot / sink ──rows(), insert_done(), applied_commit() …──► Metrics ─┐
//!   slot poller (slot.rs) ──every slot_poll_secs: pg_replication_slots──► Metrics ─┤
//!   health (health.rs) ◄── phases, fatal, stalled, heartbeats                       │
//!   http.rs: GET /metrics ── refresh lag, encode ◄──────────────────────────────────┘
//!            GET /healthz, /readyz ── health verdicts
//! ```
//!
//! Names follow `pgch_<thing>_<unit>[_total]`; label values are bounded: destination
//! table names, the operation, an error kind chosen in code, the slot name and its
//! `wal_status`. METRICS.md says how to read and alert on each.
//!
//! End-to-end lag is computed when scraped, not pushed: a gauge set at apply time would
//! freeze at its last value while the pipeline is stuck or idle; computed from the
//! remembered commit times it keeps growing while stuck and reads 0 while caught up.

pub mod health;
pub mod http;
pub mod slot;
pub mod standby_slots;

use crate::sink::rowbinary::ClampCounts;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::lsn::Lsn;

/// Rows seen by the pipeline, by destination table and operation (counter).
pub const ROWS_TOTAL: &str = "pgch_rows_total";
/// Rows written to ClickHouse by completed inserts, by table (counter).
pub const INSERTED_ROWS_TOTAL: &str = "pgch_inserted_rows_total";
/// Completed inserts (batches), by table (counter).
pub const INSERT_BATCHES_TOTAL: &str = "pgch_insert_batches_total";
/// RowBinary bytes sent by completed inserts, by table (counter).
pub const INSERTED_BYTES_TOTAL: &str = "pgch_inserted_bytes_total";
/// Time one insert took, by table (histogram).
pub const INSERT_DURATION_SECONDS: &str = "pgch_insert_duration_seconds";
/// Retried operations, by kind (counter).
pub const RETRIES_TOTAL: &str = "pgch_retries_total";
/// Errors, by kind, retried or not (counter).
pub const ERRORS_TOTAL: &str = "pgch_errors_total";
/// End-to-end lag: now − commit time of the oldest change not yet in ClickHouse; 0 while caught up.
pub const LAG_SECONDS: &str = "pgch_lag_seconds";
/// Commit time (Unix seconds) of the last transaction applied to ClickHouse.
pub const LAST_APPLIED_COMMIT_TIMESTAMP_SECONDS: &str =
    "pgch_last_applied_commit_timestamp_seconds";
/// The LSN last acknowledged to Postgres, as a byte position.
pub const ACKNOWLEDGED_LSN_BYTES: &str = "pgch_acknowledged_lsn_bytes";
/// Bytes of pending row images held by the pipeline.
pub const PIPELINE_MEMORY_BYTES: &str = "pgch_pipeline_memory_bytes";
/// Values not stored exactly (dates the server cannot hold, NULL arrays stored empty), by
/// table and kind: the only values pgch changes on purpose (README, "What is not exact").
pub const CLAMPED_VALUES_TOTAL: &str = "pgch_clamped_values_total";
/// Rows copied so far by the snapshot, by table.
pub const SNAPSHOT_COPIED_ROWS: &str = "pgch_snapshot_copied_rows";
/// Rows the snapshot expects to copy (Postgres' estimate), by table.
pub const SNAPSHOT_ESTIMATED_ROWS: &str = "pgch_snapshot_estimated_rows";
/// WAL the slot holds back: `pg_current_wal_lsn() - restart_lsn`.
pub const SLOT_RETAINED_WAL_BYTES: &str = "pgch_slot_retained_wal_bytes";
/// WAL not yet confirmed by pgch: `pg_current_wal_lsn() - confirmed_flush_lsn`.
pub const SLOT_UNCONFIRMED_WAL_BYTES: &str = "pgch_slot_unconfirmed_wal_bytes";
/// `max_slot_wal_keep_size` in bytes; −1 when unlimited; absent on Postgres 12.
pub const SLOT_MAX_WAL_KEEP_BYTES: &str = "pgch_slot_max_wal_keep_bytes";
/// `safe_wal_size`: WAL that can still be written before the slot is lost (PG 13+).
pub const SLOT_SAFE_WAL_BYTES: &str = "pgch_slot_safe_wal_bytes";
/// 1 for the slot's current `wal_status`, 0 for the others (PG 13+).
pub const SLOT_WAL_STATUS: &str = "pgch_slot_wal_status";
/// Retained WAL / `max_slot_wal_keep_size`; at 1 the slot is about to be lost.
pub const SLOT_RETAINED_WAL_RATIO: &str = "pgch_slot_retained_wal_ratio";
/// 1 while a walsender streams from the slot.
pub const SLOT_ACTIVE: &str = "pgch_slot_active";
/// 1 when the slot is a failover slot (Postgres 17+; absent before): a promoted standby
/// that synchronizes slots has it.
pub const SLOT_FAILOVER: &str = "pgch_slot_failover";
/// Standbys of `source.standby_urls` holding a synced, valid copy of the slot (absent
/// when none are given): 0 means a failover now costs a resync.
pub const SLOT_SYNCED_ON_STANDBYS: &str = "pgch_slot_synced_on_standbys";
/// Transactions the source spilled to disk while decoding the slot (PG 14+).
pub const SLOT_SPILLED_TRANSACTIONS_TOTAL: &str = "pgch_slot_spilled_transactions_total";
/// Bytes the source spilled to disk while decoding the slot (PG 14+).
pub const SLOT_SPILLED_BYTES_TOTAL: &str = "pgch_slot_spilled_bytes_total";
/// Transactions streamed before their commit from the slot (PG 14+).
pub const SLOT_STREAMED_TRANSACTIONS_TOTAL: &str = "pgch_slot_streamed_transactions_total";
/// Bytes streamed before their commit from the slot (PG 14+).
pub const SLOT_STREAMED_BYTES_TOTAL: &str = "pgch_slot_streamed_bytes_total";
/// Bytes of changes the source decoded for the slot (PG 14+).
pub const SLOT_DECODED_BYTES_TOTAL: &str = "pgch_slot_decoded_bytes_total";
/// 1 while `/readyz` answers 200.
pub const READY: &str = "pgch_ready";
/// 1 for the current phase (starting, snapshotting, streaming, stopping).
pub const PHASE: &str = "pgch_phase";
/// Seconds from a transaction's commit in Postgres until its rows were readable in
/// ClickHouse (the insert returned), observed per flush for its oldest and its newest
/// commit.
pub const COMMIT_TO_VISIBLE_SECONDS: &str = "pgch_commit_to_visible_seconds";
/// Always 1; the labels carry the version.
pub const BUILD_INFO: &str = "pgch_build_info";

/// Every metric name pgch exports, for checks that dashboards and alert rules name
/// only real series.
pub const ALL: &[&str] = &[
    ROWS_TOTAL,
    INSERTED_ROWS_TOTAL,
    INSERT_BATCHES_TOTAL,
    INSERTED_BYTES_TOTAL,
    INSERT_DURATION_SECONDS,
    RETRIES_TOTAL,
    ERRORS_TOTAL,
    LAG_SECONDS,
    LAST_APPLIED_COMMIT_TIMESTAMP_SECONDS,
    ACKNOWLEDGED_LSN_BYTES,
    PIPELINE_MEMORY_BYTES,
    CLAMPED_VALUES_TOTAL,
    SNAPSHOT_COPIED_ROWS,
    SNAPSHOT_ESTIMATED_ROWS,
    SLOT_RETAINED_WAL_BYTES,
    SLOT_UNCONFIRMED_WAL_BYTES,
    SLOT_MAX_WAL_KEEP_BYTES,
    SLOT_SAFE_WAL_BYTES,
    SLOT_WAL_STATUS,
    SLOT_RETAINED_WAL_RATIO,
    SLOT_ACTIVE,
    SLOT_FAILOVER,
    SLOT_SYNCED_ON_STANDBYS,
    SLOT_SPILLED_TRANSACTIONS_TOTAL,
    SLOT_SPILLED_BYTES_TOTAL,
    SLOT_STREAMED_TRANSACTIONS_TOTAL,
    SLOT_STREAMED_BYTES_TOTAL,
    SLOT_DECODED_BYTES_TOTAL,
    READY,
    PHASE,
    COMMIT_TO_VISIBLE_SECONDS,
    BUILD_INFO,
];

/// The decoding counters: name, help, and how to read it from [`DecodingStats`].
type DecodingCounter = (&'static str, &'static str, fn(&DecodingStats) -> i64);
const DECODING_COUNTERS: [DecodingCounter; 5] = [
    (
        SLOT_SPILLED_TRANSACTIONS_TOTAL,
        "Transactions the source spilled to disk while decoding the slot (larger than logical_decoding_work_mem; pg_stat_replication_slots.spill_txns)",
        |s| s.spilled_transactions,
    ),
    (
        SLOT_SPILLED_BYTES_TOTAL,
        "Bytes the source spilled to disk while decoding the slot (pg_stat_replication_slots.spill_bytes)",
        |s| s.spilled_bytes,
    ),
    (
        SLOT_STREAMED_TRANSACTIONS_TOTAL,
        "Transactions streamed from the slot before their commit (pg_stat_replication_slots.stream_txns)",
        |s| s.streamed_transactions,
    ),
    (
        SLOT_STREAMED_BYTES_TOTAL,
        "Bytes streamed from the slot before their commit (pg_stat_replication_slots.stream_bytes)",
        |s| s.streamed_bytes,
    ),
    (
        SLOT_DECODED_BYTES_TOTAL,
        "Bytes of changes the source decoded for the slot (pg_stat_replication_slots.total_bytes)",
        |s| s.decoded_bytes,
    ),
];

/// Label keys.
pub mod label {
    /// Destination table name.
    pub const TABLE: &str = "table";
    /// Row operation ([`super::Op`]).
    pub const OP: &str = "op";
    /// Error or retry kind, a short snake_case word chosen in code.
    pub const KIND: &str = "kind";
    /// Replication slot name.
    pub const SLOT: &str = "slot";
    /// `wal_status` of `pg_replication_slots`.
    pub const WAL_STATUS: &str = "wal_status";
    /// Health phase.
    pub const PHASE: &str = "phase";
    /// Crate version.
    pub const VERSION: &str = "version";
}

/// The values `wal_status` takes (Postgres 13+); each gets a series so a change shows.
pub const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

/// Commit-to-visible buckets: from a flush on the next sync interval to a long outage.
const VISIBLE_BUCKETS: [f64; 14] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Insert latency buckets (seconds): from a quick local insert to a minute-long stall.
const INSERT_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Seconds from the Unix epoch to the Postgres epoch (2000-01-01 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// What happened to a row, the `op` label of [`ROWS_TOTAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
    /// Copied by the snapshot.
    Snapshot,
}

impl Op {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Snapshot => "snapshot",
        }
    }
}

/// Why metrics could not be built, encoded or served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered (a bad name: a bug, caught by tests).
    #[error("metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
    /// The text encoding produced bytes that are not UTF-8 (cannot happen with our names).
    #[error("metrics text is not UTF-8")]
    Encoding,
    /// `[metrics] listen` could not be bound.
    #[error("cannot listen for /metrics on {addr}: {source}; set metrics.listen (PGCH__METRICS__LISTEN) to a free address")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Slot figures read by the poller; `None` where Postgres has no such figure (the
/// column is absent on 12, or NULL for a lost slot), which leaves the series absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotFigures {
    pub retained_bytes: Option<i64>,
    pub unconfirmed_bytes: Option<i64>,
    /// `max_slot_wal_keep_size` in bytes, −1 when unlimited; `None` on Postgres 12.
    pub max_keep_bytes: Option<i64>,
    pub safe_wal_bytes: Option<i64>,
    pub wal_status: Option<String>,
    pub active: bool,
    /// The server's decoding counters for the slot (Postgres 14+).
    pub decoding: Option<DecodingStats>,
    /// `pg_replication_slots.failover` (Postgres 17+).
    pub failover: Option<bool>,
}

/// `pg_stat_replication_slots`: what decoding the slot cost the server, cumulative since
/// the server's statistics were last reset. Spilled transactions were too large for
/// `logical_decoding_work_mem` and went to disk on the source (slow decoding, disk
/// use); streamed ones were sent before their commit (pgch does not ask for that, so it
/// stays 0 unless another consumer shares the slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodingStats {
    pub spilled_transactions: i64,
    pub spilled_bytes: i64,
    pub streamed_transactions: i64,
    pub streamed_bytes: i64,
    pub decoded_bytes: i64,
}

impl SlotFigures {
    /// Retained WAL over the limit; `None` when unlimited, unknown or zero.
    pub fn ratio(&self) -> Option<f64> {
        match (self.retained_bytes, self.max_keep_bytes) {
            (Some(r), Some(limit)) if limit > 0 => Some(r.max(0) as f64 / limit as f64),
            _ => None,
        }
    }
}

/// Commit times remembered for the lag, in Postgres microseconds since 2000.
#[derive(Debug, Default)]
struct LagState {
    caught_up: bool,
    /// The oldest commit received but not yet applied.
    oldest_unapplied: Option<i64>,
    last_applied: Option<i64>,
}

impl LagState {
    /// Lag in seconds at `now_pg_micros`.
    fn lag_seconds(&self, now_pg_micros: i64) -> f64 {
        if self.caught_up {
            return 0.0;
        }
        match self.oldest_unapplied.or(self.last_applied) {
            Some(t) => (now_pg_micros.saturating_sub(t)).max(0) as f64 / 1e6,
            None => 0.0,
        }
    }
}

/// The registered metric families.
struct Families {
    rows: IntCounterVec,
    inserted_rows: IntCounterVec,
    insert_batches: IntCounterVec,
    inserted_bytes: IntCounterVec,
    insert_duration: HistogramVec,
    commit_to_visible: Histogram,
    retries: IntCounterVec,
    errors: IntCounterVec,
    lag: Gauge,
    last_applied: Gauge,
    acknowledged: IntGauge,
    memory: IntGauge,
    clamped: IntCounterVec,
    snapshot_copied: IntGaugeVec,
    snapshot_estimated: IntGaugeVec,
    slot_retained: IntGaugeVec,
    slot_unconfirmed: IntGaugeVec,
    slot_max_keep: IntGaugeVec,
    slot_safe: IntGaugeVec,
    slot_wal_status: IntGaugeVec,
    slot_ratio: GaugeVec,
    slot_active: IntGaugeVec,
    slot_failover: IntGaugeVec,
    slot_synced_on_standbys: IntGaugeVec,
    /// The `pg_stat_replication_slots` counters, in the order of [`DECODING_COUNTERS`].
    slot_decoding: Vec<IntCounterVec>,
    ready: IntGauge,
    phase: IntGaugeVec,
}

/// pgch's metrics, in their own registry (no global default registry: a library user's
/// own metrics never mix with ours). Every method is cheap and never fails.
pub struct Metrics {
    registry: Registry,
    /// `Err` only if construction failed (a bad constant name, caught by unit tests):
    /// then recording is a no-op and `/metrics` reports the error, rather than a panic.
    families: Result<Families, String>,
    lag: Mutex<LagState>,
    /// The server's decoding counters last seen, by slot: the counters grow by the
    /// difference.
    decoding_seen: Mutex<std::collections::HashMap<String, DecodingStats>>,
}

/// The process-wide metrics, built on first use.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

fn now_pg_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(unix.as_micros())
        .unwrap_or(i64::MAX)
        .saturating_sub(PG_EPOCH_UNIX_SECS * 1_000_000)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in a fresh registry (tests use their own; pgch uses [`global()`]).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let families = Families::register(&registry).map_err(|e| e.to_string());
        if let Err(e) = &families {
            tracing::error!(error = %e, "metrics are disabled");
        }
        Metrics {
            registry,
            families,
            lag: Mutex::new(LagState::default()),
            decoding_seen: Mutex::default(),
        }
    }

    fn with(&self, f: impl FnOnce(&Families)) {
        if let Ok(fam) = &self.families {
            f(fam);
        }
    }

    fn lag_state(&self) -> std::sync::MutexGuard<'_, LagState> {
        self.lag.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `n` rows of `op` for `table` as they enter the pipeline (CDC) or are copied
    /// (snapshot): the throughput per table and operation.
    pub fn rows(&self, table: &str, op: Op, n: u64) {
        self.with(|f| f.rows.with_label_values(&[table, op.as_str()]).inc_by(n));
    }

    /// Records one completed insert into `table`: rows, RowBinary bytes, and its latency.
    /// Call after ClickHouse confirmed it, so the counters say what is durable.
    pub fn insert_done(&self, table: &str, rows: u64, bytes: u64, elapsed: Duration) {
        self.with(|f| {
            f.inserted_rows.with_label_values(&[table]).inc_by(rows);
            f.insert_batches.with_label_values(&[table]).inc();
            f.inserted_bytes.with_label_values(&[table]).inc_by(bytes);
            f.insert_duration
                .with_label_values(&[table])
                .observe(elapsed.as_secs_f64());
        });
    }

    /// Counts a retried operation of `kind` (e.g. `clickhouse_insert`, `replication_session`):
    /// retries that keep climbing mean a dependency is failing.
    pub fn retry(&self, kind: &str) {
        self.with(|f| f.retries.with_label_values(&[kind]).inc());
    }

    /// Counts an error of `kind` (a short snake_case word chosen in code, never a message).
    pub fn error(&self, kind: &str) {
        self.with(|f| f.errors.with_label_values(&[kind]).inc());
    }

    /// A transaction committed at `commit_time` (pgoutput Commit timestamp: microseconds
    /// since 2000-01-01 UTC) was received and is not yet in ClickHouse. From now until it
    /// is applied the lag counts from its commit time, so a stuck pipeline shows a
    /// growing lag even after a quiet period.
    pub fn received_commit(&self, commit_time_micros_since_2000: i64) {
        let mut s = self.lag_state();
        s.caught_up = false;
        if s.oldest_unapplied.is_none() {
            s.oldest_unapplied = Some(commit_time_micros_since_2000);
        }
    }

    /// Every transaction up to one committed at `commit_time` (pgoutput Commit timestamp,
    /// microseconds since 2000-01-01 UTC) is durably in ClickHouse.
    pub fn applied_commit(&self, commit_time_micros_since_2000: i64) {
        {
            let mut s = self.lag_state();
            s.caught_up = false;
            s.last_applied = Some(commit_time_micros_since_2000);
            if s.oldest_unapplied
                .is_some_and(|t| t <= commit_time_micros_since_2000)
            {
                s.oldest_unapplied = None;
            }
        }
        let unix = commit_time_micros_since_2000 as f64 / 1e6 + PG_EPOCH_UNIX_SECS as f64;
        self.with(|f| f.last_applied.set(unix));
    }

    /// A flush made the commits from `oldest` to `newest` (Postgres microseconds since
    /// 2000) readable in ClickHouse just now: how long each waited, end to end. Measured
    /// against this machine's clock, so a source clock ahead of it reads as less (never
    /// below 0).
    pub fn made_visible(&self, oldest: i64, newest: i64) {
        let now = now_pg_micros();
        self.with(|f| {
            for t in [oldest, newest] {
                f.commit_to_visible
                    .observe(now.saturating_sub(t).max(0) as f64 / 1e6);
            }
        });
    }

    /// Nothing is pending and the server's keepalive position was acknowledged: the lag
    /// reads 0 until the next [`Metrics::received_commit`] or [`Metrics::applied_commit`].
    pub fn caught_up(&self) {
        let mut s = self.lag_state();
        s.caught_up = true;
        s.oldest_unapplied = None;
    }

    /// The LSN last acknowledged to Postgres (flush position of a standby status update):
    /// the slot's `confirmed_flush_lsn` follows it.
    pub fn acknowledged(&self, lsn: Lsn) {
        self.with(|f| f.acknowledged.set(clamp_i64(lsn.as_u64())));
    }

    /// Bytes of pending row images the pipeline holds now (against its memory budget).
    pub fn memory_in_use(&self, bytes: u64) {
        self.with(|f| f.memory.set(clamp_i64(bytes)));
    }

    /// Counts the values of `table` not stored exactly, by kind, from the copy or the
    /// stream.
    pub fn clamped(&self, table: &str, counts: &ClampCounts) {
        self.with(|f| {
            for (kind, n) in counts.iter().filter(|(_, n)| *n > 0) {
                f.clamped
                    .with_label_values(&[table, kind.as_str()])
                    .inc_by(n);
            }
        });
    }

    /// Snapshot progress of `table`: rows copied so far and Postgres' estimate of the total.
    pub fn snapshot_progress(&self, table: &str, rows_copied: u64, rows_estimated: u64) {
        self.with(|f| {
            f.snapshot_copied
                .with_label_values(&[table])
                .set(clamp_i64(rows_copied));
            f.snapshot_estimated
                .with_label_values(&[table])
                .set(clamp_i64(rows_estimated));
        });
    }

    /// Publishes the slot's figures; `None` (the slot does not exist) removes its series.
    pub fn slot(&self, slot: &str, figures: Option<&SlotFigures>) {
        self.with(|f| {
            let set = |vec: &IntGaugeVec, v: Option<i64>| match v {
                Some(v) => vec.with_label_values(&[slot]).set(v),
                None => {
                    let _ = vec.remove_label_values(&[slot]);
                }
            };
            let fig = figures.cloned().unwrap_or_default();
            set(&f.slot_retained, fig.retained_bytes);
            set(&f.slot_unconfirmed, fig.unconfirmed_bytes);
            set(&f.slot_max_keep, fig.max_keep_bytes);
            set(&f.slot_safe, fig.safe_wal_bytes);
            set(&f.slot_active, figures.map(|fig| i64::from(fig.active)));
            set(&f.slot_failover, fig.failover.map(i64::from));
            if let Some(stats) = fig.decoding {
                let mut seen = self
                    .decoding_seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let last = seen.entry(slot.to_string()).or_default();
                for (counter, (_, _, read)) in f.slot_decoding.iter().zip(DECODING_COUNTERS) {
                    let (now, before) = (read(&stats), read(last));
                    // A statistics reset (or a new slot) starts the server's count anew.
                    let delta = if now >= before { now - before } else { now };
                    counter
                        .with_label_values(&[slot])
                        .inc_by(delta.max(0) as u64);
                }
                *last = stats;
            }
            match fig.ratio() {
                Some(r) => f.slot_ratio.with_label_values(&[slot]).set(r),
                None => {
                    let _ = f.slot_ratio.remove_label_values(&[slot]);
                }
            }
            for status in WAL_STATUSES {
                match &fig.wal_status {
                    Some(current) => f
                        .slot_wal_status
                        .with_label_values(&[slot, status])
                        .set(i64::from(current == status)),
                    None => {
                        let _ = f.slot_wal_status.remove_label_values(&[slot, status]);
                    }
                }
            }
        });
    }

    /// How many of the watched standbys hold a synced copy of `slot`; `None` when none
    /// could be read (the gauge goes away rather than claim 0).
    pub fn synced_on_standbys(&self, slot: &str, count: Option<i64>) {
        self.with(|f| match count {
            Some(n) => f.slot_synced_on_standbys.with_label_values(&[slot]).set(n),
            None => {
                let _ = f.slot_synced_on_standbys.remove_label_values(&[slot]);
            }
        });
    }

    /// Marks `phase` as current in [`PHASE`] (called by [`health::set_phase`]).
    fn phase(&self, phase: health::Phase) {
        self.with(|f| {
            for p in health::Phase::ALL {
                f.phase
                    .with_label_values(&[p.as_str()])
                    .set(i64::from(p == phase));
            }
        });
    }

    /// The end-to-end lag in seconds now (what [`LAG_SECONDS`] will read).
    pub fn lag_seconds(&self) -> f64 {
        self.lag_state().lag_seconds(now_pg_micros())
    }

    /// The Prometheus text exposition of every metric, with the lag and readiness
    /// computed at this moment.
    pub fn render(&self) -> Result<String, MetricsError> {
        let lag = self.lag_seconds();
        let ready = health::readiness().ready;
        match &self.families {
            Ok(f) => {
                f.lag.set(lag);
                f.ready.set(i64::from(ready));
            }
            Err(e) => return Err(MetricsError::Registry(prometheus::Error::Msg(e.clone()))),
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|_| MetricsError::Encoding)
    }
}

impl Families {
    fn register(reg: &Registry) -> Result<Families, prometheus::Error> {
        fn reg_it<C: prometheus::core::Collector + Clone + 'static>(
            reg: &Registry,
            c: C,
        ) -> Result<C, prometheus::Error> {
            reg.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg_it(reg, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg_it(reg, IntGaugeVec::new(Opts::new(name, help), labels)?)
        };
        use label::{KIND, OP, SLOT, TABLE, VERSION, WAL_STATUS};
        let build = gauge_vec(BUILD_INFO, "pgch build; always 1", &[VERSION])?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let fam = Families {
            rows: counter(
                ROWS_TOTAL,
                "Rows that entered the pipeline (CDC) or were copied (snapshot)",
                &[TABLE, OP],
            )?,
            inserted_rows: counter(
                INSERTED_ROWS_TOTAL,
                "Rows written to ClickHouse by completed inserts",
                &[TABLE],
            )?,
            insert_batches: counter(
                INSERT_BATCHES_TOTAL,
                "Completed inserts into ClickHouse",
                &[TABLE],
            )?,
            inserted_bytes: counter(
                INSERTED_BYTES_TOTAL,
                "RowBinary bytes sent by completed inserts",
                &[TABLE],
            )?,
            insert_duration: reg_it(
                reg,
                HistogramVec::new(
                    HistogramOpts::new(INSERT_DURATION_SECONDS, "Duration of one insert")
                        .buckets(INSERT_BUCKETS.to_vec()),
                    &[TABLE],
                )?,
            )?,
            commit_to_visible: reg_it(
                reg,
                Histogram::with_opts(
                    HistogramOpts::new(
                        COMMIT_TO_VISIBLE_SECONDS,
                        "Seconds from a commit in Postgres until its rows were readable in ClickHouse (per flush: its oldest and newest commit)",
                    )
                    .buckets(VISIBLE_BUCKETS.to_vec()),
                )?,
            )?,
            retries: counter(RETRIES_TOTAL, "Retried operations by kind", &[KIND])?,
            errors: counter(ERRORS_TOTAL, "Errors by kind", &[KIND])?,
            lag: reg_it(
                reg,
                Gauge::new(
                    LAG_SECONDS,
                    "Now minus the commit time of the oldest change not yet in ClickHouse; 0 while caught up",
                )?,
            )?,
            last_applied: reg_it(
                reg,
                Gauge::new(
                    LAST_APPLIED_COMMIT_TIMESTAMP_SECONDS,
                    "Commit time (Unix seconds) of the last transaction applied to ClickHouse",
                )?,
            )?,
            acknowledged: reg_it(
                reg,
                IntGauge::new(
                    ACKNOWLEDGED_LSN_BYTES,
                    "LSN last acknowledged to Postgres, as a WAL byte position",
                )?,
            )?,
            memory: reg_it(
                reg,
                IntGauge::new(
                    PIPELINE_MEMORY_BYTES,
                    "Bytes of pending row images held by the pipeline",
                )?,
            )?,
            clamped: counter(
                CLAMPED_VALUES_TOTAL,
                "Values not stored exactly: dates ClickHouse cannot hold (bc, infinity, minus_infinity, before_range, after_range), NULL arrays and hstores stored empty (null_as_empty), array lower bounds dropped",
                &[TABLE, "kind"],
            )?,
            snapshot_copied: gauge_vec(
                SNAPSHOT_COPIED_ROWS,
                "Rows copied by the snapshot so far",
                &[TABLE],
            )?,
            snapshot_estimated: gauge_vec(
                SNAPSHOT_ESTIMATED_ROWS,
                "Rows the snapshot expects to copy (Postgres' estimate)",
                &[TABLE],
            )?,
            slot_retained: gauge_vec(
                SLOT_RETAINED_WAL_BYTES,
                "WAL retained by the slot: pg_current_wal_lsn() - restart_lsn",
                &[SLOT],
            )?,
            slot_unconfirmed: gauge_vec(
                SLOT_UNCONFIRMED_WAL_BYTES,
                "WAL not yet confirmed: pg_current_wal_lsn() - confirmed_flush_lsn",
                &[SLOT],
            )?,
            slot_max_keep: gauge_vec(
                SLOT_MAX_WAL_KEEP_BYTES,
                "max_slot_wal_keep_size in bytes; -1 when unlimited",
                &[SLOT],
            )?,
            slot_safe: gauge_vec(
                SLOT_SAFE_WAL_BYTES,
                "safe_wal_size: WAL that can be written before the slot is lost",
                &[SLOT],
            )?,
            slot_wal_status: gauge_vec(
                SLOT_WAL_STATUS,
                "1 for the slot's current wal_status, 0 for the others",
                &[SLOT, WAL_STATUS],
            )?,
            slot_ratio: reg_it(
                reg,
                GaugeVec::new(
                    Opts::new(
                        SLOT_RETAINED_WAL_RATIO,
                        "Retained WAL divided by max_slot_wal_keep_size; the slot is lost near 1",
                    ),
                    &[SLOT],
                )?,
            )?,
            slot_active: gauge_vec(
                SLOT_ACTIVE,
                "1 while a walsender streams from the slot",
                &[SLOT],
            )?,
            slot_failover: gauge_vec(
                SLOT_FAILOVER,
                "1 when the slot is a failover slot (Postgres 17+)",
                &[SLOT],
            )?,
            slot_synced_on_standbys: gauge_vec(
                SLOT_SYNCED_ON_STANDBYS,
                "Standbys of source.standby_urls holding a synced copy of the slot",
                &[SLOT],
            )?,
            slot_decoding: DECODING_COUNTERS
                .iter()
                .map(|(name, help, _)| counter(name, help, &[SLOT]))
                .collect::<Result<Vec<_>, _>>()?,
            ready: reg_it(
                reg,
                IntGauge::new(READY, "1 while /readyz answers 200")?,
            )?,
            phase: gauge_vec(PHASE, "1 for the current phase", &[label::PHASE])?,
        };
        Ok(fam)
    }
}

#[cfg(test)]
mod tests;
