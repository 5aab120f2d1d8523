//! The configuration as the user wrote it (TOML file and `PGCH__…` environment), before
//! validation: every key optional, unknown keys refused, secrets never printed.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{redact_url, Mode, Secret, SslMode, TruncateMode};

/// The `[source]` section as written by the user.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `postgres://user:pass@host:port/db?sslmode=...`; or the separate keys below.
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub database: Option<String>,
    pub sslmode: Option<SslMode>,
    /// PEM file with the CA certificate(s) the server's certificate must chain to.
    pub sslrootcert: Option<PathBuf>,
    pub publication: Option<String>,
    pub slot: Option<String>,
    pub connect_timeout_secs: Option<u64>,
    /// Create (or alter) the slot with `failover` on Postgres 17+, so a promoted
    /// standby that synchronizes slots has it; `false` opts out. Default true.
    pub failover_slot: Option<bool>,
    /// Hot standbys to check for failover readiness (`pgch check`) and to watch for
    /// pgch's synchronized slot (`pgch_slot_synced_on_standbys`): URLs as a list, or
    /// comma-separated from the environment. A URL without a password uses the source's
    /// when the user is the same.
    #[serde(default, deserialize_with = "url_list")]
    pub standby_urls: Option<Vec<String>>,
    /// Opt-in (Postgres 16+): `url` may lead to a hot standby; the slot lives there and
    /// the copy reads there, so the primary does neither. Default false.
    pub standby_decoding: Option<bool>,
    /// With `standby_decoding`: the primary, used only to check its `wal_level` and to
    /// ask it for a running-transactions record so a slot on the standby is made
    /// without waiting (`pg_log_standby_snapshot()`, where granted).
    pub primary_url: Option<String>,
}

/// A list of URLs, from TOML as a list or from the environment as `"url1,url2"`.
fn url_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    Ok(Some(match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::Text(t) => t
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
    }))
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("failover_slot", &self.failover_slot)
            .field(
                "standby_urls",
                &self
                    .standby_urls
                    .as_ref()
                    .map(|v| v.iter().map(|u| redact_url(u)).collect::<Vec<_>>()),
            )
            .field("standby_decoding", &self.standby_decoding)
            .field("primary_url", &self.primary_url.as_deref().map(redact_url))
            .finish()
    }
}

/// The `[destination]` section: the ClickHouse HTTP endpoint.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationConfig {
    pub url: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub database: Option<String>,
    /// A ClickHouse cluster: DDL runs `ON CLUSTER` with the `Replicated` engine.
    pub cluster: Option<String>,
    /// `<table>_current` views (`FINAL`, deletes hidden) next to every keyed table
    /// (default on): what most readers want without knowing the engine.
    pub create_views: Option<bool>,
}

impl fmt::Debug for DestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestinationConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("database", &self.database)
            .field("cluster", &self.cluster)
            .field("create_views", &self.create_views)
            .finish()
    }
}

/// One `[[tables]]` entry: settings for one source table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `schema.table` as Postgres names it (unquoted).
    pub source: String,
    /// The ClickHouse table name instead of `<schema>_<table>`.
    pub destination: Option<String>,
    /// Leading ClickHouse sort columns; the replica identity key is always appended.
    pub order_by: Option<Vec<String>>,
    /// A ClickHouse `PARTITION BY` expression over the table's sort columns.
    pub partition_by: Option<String>,
    /// Published columns never copied nor streamed (not a key column).
    pub exclude_columns: Option<Vec<String>>,
    /// ClickHouse types instead of the type map's, by column (a documented set:
    /// `crate::sink::types::overrides`).
    pub column_types: Option<std::collections::BTreeMap<String, String>>,
    /// `current` (default) or `history`: an append-only table of every change.
    pub mode: Option<super::TableMode>,
}

/// The `[pipeline]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub mode: Mode,
    /// The longest a change waits in a batch before it is written (milliseconds).
    pub sync_interval_ms: Option<u64>,
    /// Rows per insert at most.
    pub batch_max_rows: Option<u64>,
    /// Bytes of row images per insert at most (MiB).
    pub batch_max_mb: Option<u64>,
    /// Bytes of pending row images across all tables (MiB); reaching it flushes every
    /// batch, a large transaction in parts.
    pub memory_budget_mb: Option<u64>,
    /// `apply` (default) or `ignore`.
    pub truncate: TruncateMode,
    /// Run `pgch resync` by itself when the stream needs one (a lost slot, a schema
    /// change that cannot be followed in place), then go on streaming.
    pub auto_resync: bool,
    /// Stream inserts running at once across all tables (default 8): one transaction
    /// touching hundreds of tables must not open hundreds of connections at once.
    pub max_concurrent_inserts: Option<usize>,
}

/// The `[snapshot]` section: how the initial copy runs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Parallel copy workers (Postgres connections and concurrent inserts).
    pub workers: Option<usize>,
    /// Heap blocks (8 kB) per copy partition on Postgres 14+; unset, pgch sizes the
    /// partitions from each table's size and the workers.
    pub partition_blocks: Option<u64>,
}

/// The `[metrics]` section: the HTTP endpoint and the slot poller.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `IP:port` for `/metrics`, `/healthz` and `/readyz`.
    pub listen: Option<String>,
    /// Retained-WAL ratios (of `max_slot_wal_keep_size`) that log a warning when crossed
    /// upward; the highest also makes `/readyz` fail. A list, or `"0.5,0.8"` from the
    /// environment.
    #[serde(default, deserialize_with = "ratios")]
    pub warn_ratios: Option<Vec<f64>>,
    /// Seconds between two readings of the slot.
    pub slot_poll_secs: Option<u64>,
}

/// A list of numbers, from TOML as a list or from the environment as `"0.5,0.8"`.
fn ratios<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<f64>),
        One(f64),
        Text(String),
    }
    Ok(Some(match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::One(v) => vec![v],
        Raw::Text(t) => t
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "metrics.warn_ratios `{t}` is not a comma-separated list of numbers"
                ))
            })?,
    }))
}

/// The whole file, as written; [`Config::validate`] turns it into [`Settings`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub source: SourceConfig,
    pub destination: DestinationConfig,
    pub pipeline: PipelineConfig,
    pub snapshot: SnapshotConfig,
    pub metrics: MetricsConfig,
    pub tables: Vec<TableConfig>,
}
