//! The validated configuration the rest of pgch works from: defaults resolved, every
//! rule checked, so no other module re-reads a raw key.

use std::time::Duration;

use super::{Mode, PgEndpoint, Secret, TruncateMode};

/// Default rows per insert.
pub const DEFAULT_MAX_ROWS: u64 = 100_000;
/// Default bytes per insert.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Default sync interval: the longest a change waits before it is written.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(1);

/// The limits of one batch; `crate::pipeline::flush` decides with them when a batch is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushLimits {
    pub max_rows: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
}

impl Default for FlushLimits {
    fn default() -> Self {
        FlushLimits {
            max_rows: DEFAULT_MAX_ROWS,
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// Default pipeline byte budget: pending row images across all tables.
pub const DEFAULT_MEMORY_BUDGET_MB: u64 = 64;

/// The validated `[pipeline]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineSettings {
    pub flush: FlushLimits,
    pub memory_budget_bytes: u64,
    pub truncate: TruncateMode,
    pub auto_resync: bool,
    pub max_concurrent_inserts: usize,
}

/// Default bound on concurrent stream inserts.
pub const DEFAULT_MAX_CONCURRENT_INSERTS: usize = 8;

/// Default parallel copy workers.
pub const DEFAULT_SNAPSHOT_WORKERS: usize = 4;

/// Default metrics endpoint: loopback only, so nothing is exposed by accident.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9188";
/// Default warning ratios of retained WAL to `max_slot_wal_keep_size`.
pub const DEFAULT_WARN_RATIOS: [f64; 2] = [0.5, 0.8];
/// Default seconds between slot readings.
pub const DEFAULT_SLOT_POLL_SECS: u64 = 5;

/// Validated `[metrics]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSettings {
    pub listen: std::net::SocketAddr,
    /// Strictly increasing, each in (0, 1].
    pub warn_ratios: Vec<f64>,
    pub slot_poll: Duration,
}

/// Validated source settings.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    pub endpoint: PgEndpoint,
    pub publication: String,
    pub slot: String,
    /// Whether the slot should be a failover slot (Postgres 17+), so it survives a
    /// promotion of a standby that synchronizes slots.
    pub failover_slot: bool,
    /// Hot standbys named for failover readiness checks and the synced-slot metric.
    pub standbys: Vec<PgEndpoint>,
    /// `source.standby_decoding`: a hot standby is an accepted source (Postgres 16+).
    pub standby_decoding: bool,
    /// `source.primary_url`: the primary behind a standby source, for checks only.
    pub primary: Option<PgEndpoint>,
}

/// Validated ClickHouse settings.
#[derive(Clone, Debug)]
pub struct DestinationSettings {
    pub url: String,
    pub user: String,
    pub password: Secret,
    pub database: String,
    pub connect_timeout: Duration,
    pub cluster: Option<String>,
    /// Destination table names by source `schema.table`, where overridden.
    pub table_names: std::collections::BTreeMap<String, String>,
    /// How each configured source `schema.table` is laid out in ClickHouse.
    pub table_options: std::collections::BTreeMap<String, TableOptions>,
    /// `destination.create_views`: a `<table>_current` view next to each keyed table.
    pub create_views: bool,
}

/// The ClickHouse layout a `[[tables]]` entry asks for. Part of the table's shape:
/// a change on an existing table needs `pgch resync --table` ([`TableOptions::fingerprint`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// Leading sort columns, before the replica identity key.
    pub order_by: Vec<String>,
    /// A `PARTITION BY` expression.
    pub partition_by: Option<String>,
    /// Columns left out of ClickHouse, in the order written.
    pub exclude_columns: Vec<String>,
    /// ClickHouse type overrides by column name, as written (judged when planned).
    pub column_types: std::collections::BTreeMap<String, String>,
    /// `mode = "history"`: every change a row (`_lsn`, `_seq`, `_op`, `_xid`,
    /// `_commit_time`), nothing replaced or deleted.
    pub history: bool,
}

impl TableOptions {
    /// The options as one canonical line, recorded in `_pgch_state` with the table so
    /// a later start notices a changed mapping; empty for the default layout (tables
    /// made before options existed record nothing and read as the default).
    pub fn fingerprint(&self) -> String {
        let mut parts = Vec::new();
        if !self.order_by.is_empty() {
            parts.push(format!("order_by=[{}]", self.order_by.join(", ")));
        }
        if let Some(p) = &self.partition_by {
            parts.push(format!("partition_by={p}"));
        }
        if !self.exclude_columns.is_empty() {
            let mut excluded = self.exclude_columns.clone();
            excluded.sort();
            parts.push(format!("exclude_columns=[{}]", excluded.join(", ")));
        }
        if self.history {
            parts.push("mode=history".to_string());
        }
        if !self.column_types.is_empty() {
            let types: Vec<String> = self
                .column_types
                .iter()
                .map(|(c, t)| format!("{c}: {}", t.split_whitespace().collect::<String>()))
                .collect();
            parts.push(format!("column_types={{{}}}", types.join(", ")));
        }
        parts.join("; ")
    }
}

/// Validated snapshot settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSettings {
    pub workers: usize,
    /// `None`: sized per table ([`crate::snapshot::auto_partition_blocks`]).
    pub partition_blocks: Option<u64>,
}

/// The validated configuration that the rest of pgch works from.
#[derive(Clone, Debug)]
pub struct Settings {
    pub source: SourceSettings,
    pub destination: DestinationSettings,
    pub mode: Mode,
    pub pipeline: PipelineSettings,
    pub snapshot: SnapshotSettings,
    pub metrics: MetricsSettings,
}
