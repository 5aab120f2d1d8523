//! The initial copy: every published table into its ClickHouse table, in parallel across
//! tables and, on Postgres 14+, within a table by block (CTID) ranges, resumable per
//! partition through `_pgch_state`.
//!
//! ```text
//!   catalog ─► plan (types, key) ─► CREATE TABLE ─► partitions not yet done ─► N workers
//!                                                                 each: REPEATABLE READ snapshot
//!                                                                       COPY … TO STDOUT ─► RowBinary insert
//!                                                                       mark partition done
//! ```
//!
//! Why a partition may be copied again after a crash: its rows carry `_version = 0` and
//! `ReplacingMergeTree` keeps one row per key, so a second copy of the same rows changes
//! nothing; a partition is marked done only after its insert returned. A snapshot taken
//! later than the slot's is fine as long as its xmin is not older than the xmax recorded
//! at slot creation: it then sees every transaction the stream will not carry, and
//! whatever changed after it arrives again from the stream with a higher version
//! (DESIGN.md rule 3).

pub mod control;
pub mod copy;
pub mod destination;
mod driver;
pub mod held;
pub mod layout_check;
pub mod partitions;
pub mod plan;
pub mod visibility;

use destination::check_collisions;
pub use destination::{prepare_joined, prepare_plans};
pub use driver::copy_all;
pub use partitions::{
    auto_partition_blocks, partition, MIN_AUTO_PARTITION_BLOCKS, PARTITIONS_PER_WORKER,
};

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::config::Settings;
use crate::sink::client::SinkError;
use crate::sink::rowbinary::ClampCounts;
use crate::sink::types::MappingOptions;
use crate::source::catalog;
use crate::source::columns::published_columns;
use crate::source::connect::{self, ConnectError};
use crate::source::row::{column, ColumnError, ReadError};
use control::CopyControl;
use copy::CopyError;
use held::HeldSnapshot;
use plan::{plan_table, PlanError, TablePlan};

/// How the copy runs.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    pub workers: usize,
    /// Blocks per partition; `None` sizes them per table ([`auto_partition_blocks`]).
    pub partition_blocks: Option<u64>,
    /// Copies must see every transaction that committed before this xid (the xmax
    /// recorded at slot creation); `None` when no stream follows.
    pub min_xmin: Option<u64>,
    pub mapping: MappingOptions,
    /// Snapshots held for multiset (keyless) tables' copies, by destination table: the
    /// stream skips what they saw, so the copy must read exactly them ([`held`]).
    pub held: BTreeMap<String, Arc<HeldSnapshot>>,
}

impl SnapshotOptions {
    /// The options the configuration asks for, with the conservative type map (the
    /// 1900..2299 date range, `time` as text): for callers that have not asked the server.
    pub fn from_settings(settings: &Settings) -> Self {
        SnapshotOptions {
            workers: settings.snapshot.workers,
            partition_blocks: settings.snapshot.partition_blocks,
            min_xmin: None,
            mapping: MappingOptions::default(),
            held: BTreeMap::new(),
        }
    }

    /// The options the configuration asks for, with the type map the destination
    /// server allows (its date range, `Time64`): what `run`, `snapshot` and `resync`
    /// use, so every path encodes the same way.
    pub async fn for_destination(settings: &Settings) -> Result<Self, SinkError> {
        let caps = crate::sink::capabilities::detect(&settings.destination).await?;
        let mut opts = SnapshotOptions::from_settings(settings);
        opts.mapping = caps.mapping();
        Ok(opts)
    }
}

/// Why the snapshot stopped.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("reading the catalog failed: {0}")]
    Catalog(tokio_postgres::Error),
    #[error(transparent)]
    Column(#[from] ColumnError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Copy(Box<CopyError>),
    #[error("destination names collide: {0}; rename one of the tables")]
    NameCollision(String),
    #[error("ClickHouse table {database}.{table} exists but does not belong to slot \"{slot}\" (no record in _pgch_state): drop it, or choose another destination.database")]
    ForeignTable {
        database: String,
        table: String,
        slot: String,
    },
    #[error("publication \"{0}\" lists no tables")]
    NoTables(String),
    #[error("a copy worker failed: {0}")]
    Worker(String),
    #[error("ClickHouse table {table} does not match the source: it {problem}; drop it to start over, or run `pgch resync` for this table")]
    IncompatibleTable {
        table: String,
        problem: String,
        /// The source table (`schema.table`), which a resync would copy again.
        source_table: String,
    },
    #[error("{0}; delete that key from _pgch_state, or run `pgch resync` to copy the table again")]
    State(String),
    #[error("the [[tables]] mapping of {source_table} changed (ClickHouse table {table} was made with {was}, the configuration now asks for {now}): pgch will not write into a table of another shape; run `pgch resync --table {source_table}` to rebuild it with the new mapping, or restore the old one")]
    MappingChanged {
        source_table: String,
        table: String,
        was: String,
        now: String,
    },
    #[error("the copy of keyless table {0} lost its snapshot (the connection holding it ended); restart pgch: the copy of that table starts over")]
    HeldSnapshotLost(String),
}

impl SnapshotError {
    /// Retry or stop with a fix (see [`crate::error`]).
    pub fn classify(&self) -> crate::error::Class {
        use crate::error::{self, Class};
        match self {
            SnapshotError::Connect(e) => match &e.sqlstate {
                Some(state) => error::postgres(state, &e.message),
                None => Class::Retry,
            },
            SnapshotError::Catalog(e) => error::tokio_postgres(e),
            SnapshotError::Sink(e) => error::clickhouse(e),
            SnapshotError::Copy(e) => match e.as_ref() {
                CopyError::Postgres { source, .. } => error::tokio_postgres(source),
                CopyError::Sink(e) => error::clickhouse(e),
                _ => Class::Fatal { fix: String::new() },
            },
            SnapshotError::Worker(_) => Class::Retry,
            _ => Class::Fatal { fix: String::new() },
        }
    }

    /// Whether a later attempt may succeed (the copy resumes per partition).
    pub fn is_transient(&self) -> bool {
        self.classify().is_retry()
    }
}

impl From<CopyError> for SnapshotError {
    fn from(e: CopyError) -> Self {
        SnapshotError::Copy(Box::new(e))
    }
}

impl From<ReadError> for SnapshotError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Query(e) => SnapshotError::Catalog(e),
            ReadError::Column(e) => SnapshotError::Column(e),
        }
    }
}

/// Live progress of one table, for logs and metrics.
#[derive(Debug, Default)]
pub struct TableProgress {
    pub rows_copied: AtomicU64,
    pub rows_estimated: AtomicU64,
    pub partitions_total: AtomicU64,
    pub partitions_done: AtomicU64,
}

/// What a snapshot run did, per destination table.
#[derive(Debug, Default)]
pub struct SnapshotReport {
    pub tables: BTreeMap<String, Arc<TableProgress>>,
    /// Partitions copied in this run (not those found done).
    pub partitions_copied: u64,
    /// Partitions of unfinished copies found done by an earlier run.
    pub partitions_skipped: u64,
    /// Tables an earlier run copied whole (or a TRUNCATE or a resync made complete).
    pub tables_already_copied: u64,
    /// Tables copied again because they were rewritten during the copy.
    pub tables_recopied: u64,
    pub clamps: ClampCounts,
}

/// The tables of the publication, planned and present in ClickHouse.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub plans: Vec<Arc<TablePlan>>,
    pub server_version: u32,
}

/// Plans, creates and copies every published table; resumes where a previous run stopped.
pub async fn run(
    settings: &Settings,
    opts: &SnapshotOptions,
) -> Result<SnapshotReport, SnapshotError> {
    let prepared = prepare(settings, opts).await?;
    copy_all(settings, opts, &prepared, &CopyControl::default()).await
}

/// Plans every published table and creates (or checks) its ClickHouse table, so the
/// stream can write to it before any copy lands.
pub async fn prepare(
    settings: &Settings,
    opts: &SnapshotOptions,
) -> Result<Prepared, SnapshotError> {
    let pg = connect::connect(&settings.source.endpoint).await?;
    let (plans, version) = plan_all(&pg, settings, opts).await?;
    prepare_plans(settings, plans, version).await
}

/// Plans every published table (types, key, destination name); fails on collisions.
pub async fn plan_all(
    pg: &tokio_postgres::Client,
    settings: &Settings,
    opts: &SnapshotOptions,
) -> Result<(Vec<TablePlan>, u32), SnapshotError> {
    let row = pg
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(SnapshotError::Catalog)?;
    let version = column::<i32>(&row, 0, "reading server_version_num")? as u32;
    let tables = catalog::published_tables(pg, &settings.source.publication, version).await?;
    if tables.is_empty() {
        let publication = catalog::publication(pg, &settings.source.publication, version)
            .await
            .map_err(SnapshotError::from)?;
        match publication {
            Some(p) if p.grows_by_itself() => {
                tracing::warn!(publication = %p.name, "the publication lists no tables yet: tables created in {} will be copied and streamed when they appear", p.where_tables_appear());
            }
            _ => return Err(SnapshotError::NoTables(settings.source.publication.clone())),
        }
    }
    let mut plans = Vec::with_capacity(tables.len());
    for t in &tables {
        plans.push(plan_one(pg, settings, opts, t, version).await?);
    }
    check_collisions(&plans, settings.destination.create_views)?;
    Ok((plans, version))
}

/// Plans one published table: its published columns, types, key and destination name.
pub async fn plan_one(
    pg: &tokio_postgres::Client,
    settings: &Settings,
    opts: &SnapshotOptions,
    table: &catalog::PublishedTable,
    version: u32,
) -> Result<TablePlan, SnapshotError> {
    let cols = published_columns(pg, table, version).await?;
    let dest = settings
        .destination
        .table_names
        .get(&table.display())
        .cloned()
        .unwrap_or_else(|| catalog::destination_name(&table.schema, &table.name));
    let layout = settings
        .destination
        .table_options
        .get(&table.display())
        .cloned()
        .unwrap_or_default();
    plan::check_layout_names(table, &cols, &layout)?;
    Ok(plan_table(table, dest, cols, &opts.mapping, &layout)?)
}
