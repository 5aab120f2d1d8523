//! Typed configuration: an optional TOML file plus `PGCH__<SECTION>__<KEY>` environment
//! overrides, so pgch runs in a container from the environment alone.
//!
//! Unknown keys are rejected (a typo must not silently fall back to a default), and
//! [`Config::validate`] names the key and the rule it broke. Passwords are held in
//! [`Secret`], whose `Debug` and `Display` never show the value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod endpoint;
mod url;

pub use self::endpoint::PgEndpoint;
pub use self::url::redact_url;
use self::url::{parse_pg_url, related_endpoint};

/// Default replication slot name.
pub const DEFAULT_SLOT: &str = "pgch";
/// Default destination database in ClickHouse.
pub const DEFAULT_DESTINATION_DATABASE: &str = "pgch";
/// Default ClickHouse user, as on a fresh server.
pub const DEFAULT_DESTINATION_USER: &str = "default";
/// Postgres' own default port.
pub const DEFAULT_PG_PORT: u16 = 5432;
/// Default connect timeout for both servers.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Prefix of environment overrides: `PGCH__SOURCE__URL` sets `source.url`.
pub const ENV_PREFIX: &str = "PGCH";

/// Errors from loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or did not match the schema.
    #[error("configuration could not be loaded: {0}")]
    Load(String),
    /// A value broke a rule: the key and the rule are named so the user can fix it.
    #[error("configuration key `{key}`: {rule}")]
    Invalid { key: &'static str, rule: String },
}

fn invalid(key: &'static str, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        rule: rule.into(),
    }
}

/// A password or other secret: never printed, not even by `{:?}`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that must send it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret was given (so none is sent).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// How the connection to Postgres uses TLS, with libpq's meaning of each mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, unverified; plain TCP otherwise.
    #[default]
    Prefer,
    /// TLS required; the certificate is verified only when a root certificate is given.
    Require,
    /// TLS required; the chain must lead to the root certificate (any host name).
    VerifyCa,
    /// TLS required; the chain and the host name are verified.
    VerifyFull,
}

/// What the pipeline does; `pgch check` judges the source for this mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Copy the tables, then stream changes from the slot (the default).
    #[default]
    SnapshotAndCdc,
    /// Copy the tables once; no slot, no replication connection (a pooler port is fine).
    SnapshotOnly,
    /// Stream changes only, from the slot's start.
    CdcOnly,
}

/// What a TRUNCATE in the stream does to the ClickHouse table.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TruncateMode {
    /// Empty the ClickHouse table too (the default: it mirrors Postgres).
    #[default]
    Apply,
    /// Keep the rows in ClickHouse (an archive that outlives Postgres' retention).
    Ignore,
}

impl Mode {
    /// Whether this mode needs a replication connection and a slot.
    pub fn streams(self) -> bool {
        !matches!(self, Mode::SnapshotOnly)
    }
}

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
}

impl fmt::Debug for DestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestinationConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("database", &self.database)
            .field("cluster", &self.cluster)
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

/// Default pipeline byte budget: pending row images across all tables.
pub const DEFAULT_MEMORY_BUDGET_MB: u64 = 64;

/// The validated `[pipeline]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineSettings {
    pub flush: crate::pipeline::flush::FlushPolicy,
    pub memory_budget_bytes: u64,
    pub truncate: TruncateMode,
    pub auto_resync: bool,
    pub max_concurrent_inserts: usize,
}

/// Default bound on concurrent stream inserts.
pub const DEFAULT_MAX_CONCURRENT_INSERTS: usize = 8;

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

/// Default parallel copy workers.
pub const DEFAULT_SNAPSHOT_WORKERS: usize = 4;

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

impl Config {
    /// Loads the optional file, then applies `PGCH__SECTION__KEY` environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "the config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
            );
        }
        let env_map: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(env_map)),
        );
        let loaded = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        loaded
            .try_deserialize::<Config>()
            .map_err(|e| ConfigError::Load(e.to_string()))
    }

    /// Validates only `[source]`, for commands that never touch ClickHouse (`pgch tail`).
    pub fn validate_source(&self) -> Result<SourceSettings, ConfigError> {
        validate_source(&self.source)
    }

    /// Checks every rule and resolves defaults; the error names the key and the rule.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let source = validate_source(&self.source)?;
        let mut destination = validate_destination(&self.destination, &source.endpoint)?;
        for t in &self.tables {
            if !t.source.contains('.') {
                return Err(invalid(
                    "tables.source",
                    format!("`{}` must be schema.table", t.source),
                ));
            }
            if let Some(name) = &t.destination {
                if name.is_empty() || name.starts_with("_pgch") {
                    return Err(invalid(
                        "tables.destination",
                        format!(
                            "`{name}` for {} must be non-empty and not start with _pgch",
                            t.source
                        ),
                    ));
                }
                destination
                    .table_names
                    .insert(t.source.clone(), name.clone());
            }
        }
        let workers = self.snapshot.workers.unwrap_or(DEFAULT_SNAPSHOT_WORKERS);
        if workers == 0 || workers > 64 {
            return Err(invalid("snapshot.workers", "must be 1 to 64"));
        }
        let partition_blocks = self.snapshot.partition_blocks;
        if partition_blocks == Some(0) {
            return Err(invalid("snapshot.partition_blocks", "must be at least 1"));
        }
        let pipeline = validate_pipeline(&self.pipeline)?;
        Ok(Settings {
            source,
            destination,
            mode: self.pipeline.mode,
            pipeline,
            snapshot: SnapshotSettings {
                workers,
                partition_blocks,
            },
            metrics: validate_metrics(&self.metrics)?,
        })
    }
}

fn validate_pipeline(p: &PipelineConfig) -> Result<PipelineSettings, ConfigError> {
    use crate::pipeline::flush::{
        FlushPolicy, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS,
    };
    const MIB: u64 = 1024 * 1024;
    let sync_ms = p
        .sync_interval_ms
        .unwrap_or(DEFAULT_MAX_AGE.as_millis() as u64);
    if !(10..=600_000).contains(&sync_ms) {
        return Err(invalid(
            "pipeline.sync_interval_ms",
            "must be 10 to 600000 (10 ms to 10 minutes)",
        ));
    }
    let max_rows = p.batch_max_rows.unwrap_or(DEFAULT_MAX_ROWS);
    if max_rows == 0 {
        return Err(invalid("pipeline.batch_max_rows", "must be at least 1"));
    }
    let max_bytes = p
        .batch_max_mb
        .map(|m| m.saturating_mul(MIB))
        .unwrap_or(DEFAULT_MAX_BYTES);
    if max_bytes == 0 {
        return Err(invalid("pipeline.batch_max_mb", "must be at least 1"));
    }
    let budget = p.memory_budget_mb.unwrap_or(DEFAULT_MEMORY_BUDGET_MB);
    if budget == 0 || budget > 64 * 1024 {
        return Err(invalid(
            "pipeline.memory_budget_mb",
            "must be 1 to 65536 (MiB of pending row images)",
        ));
    }
    let max_concurrent_inserts = p
        .max_concurrent_inserts
        .unwrap_or(DEFAULT_MAX_CONCURRENT_INSERTS);
    if !(1..=256).contains(&max_concurrent_inserts) {
        return Err(invalid(
            "pipeline.max_concurrent_inserts",
            "must be 1 to 256 (inserts running at once)",
        ));
    }
    Ok(PipelineSettings {
        max_concurrent_inserts,
        flush: FlushPolicy {
            max_rows,
            max_bytes,
            max_age: std::time::Duration::from_millis(sync_ms),
        },
        memory_budget_bytes: budget * MIB,
        truncate: p.truncate,
        auto_resync: p.auto_resync,
    })
}

fn validate_source(src: &SourceConfig) -> Result<SourceSettings, ConfigError> {
    let mut endpoint = match &src.url {
        Some(url) => {
            for (key, set) in [
                ("source.host", src.host.is_some()),
                ("source.port", src.port.is_some()),
                ("source.user", src.user.is_some()),
                ("source.database", src.database.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        key,
                        "give either source.url or the separate host/port/user/database keys, not both",
                    ));
                }
            }
            let mut ep = parse_pg_url(url)?;
            if let Some(pw) = &src.password {
                if !ep.password.is_empty() {
                    return Err(invalid(
                        "source.password",
                        "the password is already in source.url; give it once",
                    ));
                }
                ep.password = pw.clone();
            }
            ep
        }
        None => {
            let host = src.host.clone().ok_or_else(|| {
                invalid(
                    "source.url",
                    "required (or source.host with source.user and source.database)",
                )
            })?;
            let user = src
                .user
                .clone()
                .ok_or_else(|| invalid("source.user", "required when source.host is given"))?;
            let database = src.database.clone().unwrap_or_else(|| user.clone());
            PgEndpoint {
                host,
                port: src.port.unwrap_or(DEFAULT_PG_PORT),
                user,
                password: src.password.clone().unwrap_or_default(),
                database,
                sslmode: SslMode::default(),
                sslrootcert: None,
                connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
                other_hosts: Vec::new(),
                read_write_only: false,
            }
        }
    };
    if let Some(mode) = src.sslmode {
        endpoint.sslmode = mode;
    }
    if let Some(root) = &src.sslrootcert {
        endpoint.sslrootcert = Some(root.clone());
    }
    if let Some(secs) = src.connect_timeout_secs {
        if secs == 0 {
            return Err(invalid("source.connect_timeout_secs", "must be at least 1"));
        }
        endpoint.connect_timeout = Duration::from_secs(secs);
    }
    if matches!(endpoint.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
        && endpoint.sslrootcert.is_none()
    {
        return Err(invalid(
            "source.sslrootcert",
            "required with sslmode verify-ca or verify-full: the PEM file of the CA that signed the server's certificate",
        ));
    }
    if let Some(root) = &endpoint.sslrootcert {
        if !root.is_file() {
            return Err(invalid(
                "source.sslrootcert",
                format!("{} is not a readable file", root.display()),
            ));
        }
    }
    if endpoint.host.is_empty() {
        return Err(invalid("source.host", "must not be empty"));
    }
    if endpoint.user.is_empty() {
        return Err(invalid("source.user", "must not be empty"));
    }
    let publication = src.publication.clone().ok_or_else(|| {
        invalid(
            "source.publication",
            "required: the publication that lists the tables to replicate",
        )
    })?;
    if publication.is_empty() || publication.len() > 63 {
        return Err(invalid("source.publication", "must be 1 to 63 bytes long"));
    }
    let slot = src.slot.clone().unwrap_or_else(|| DEFAULT_SLOT.to_string());
    validate_slot_name(&slot)?;
    let standbys = src
        .standby_urls
        .iter()
        .flatten()
        .map(|url| related_endpoint("source.standby_urls", url, &endpoint))
        .collect::<Result<Vec<_>, _>>()?;
    let standby_decoding = src.standby_decoding.unwrap_or(false);
    let primary = match &src.primary_url {
        Some(_) if !standby_decoding => {
            return Err(invalid(
                "source.primary_url",
                "is only used with source.standby_decoding = true (remove it, or turn standby decoding on)",
            ))
        }
        Some(url) => Some(related_endpoint("source.primary_url", url, &endpoint)?),
        None => None,
    };
    Ok(SourceSettings {
        endpoint,
        publication,
        slot,
        failover_slot: src.failover_slot.unwrap_or(true),
        standbys,
        standby_decoding,
        primary,
    })
}

/// Postgres accepts slot names of lower-case letters, digits and underscores only.
fn validate_slot_name(slot: &str) -> Result<(), ConfigError> {
    let ok_chars = slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if slot.is_empty() || slot.len() > 63 || !ok_chars {
        return Err(invalid(
            "source.slot",
            format!("`{slot}` is not a valid slot name: use 1 to 63 lower-case letters, digits or underscores"),
        ));
    }
    Ok(())
}

fn validate_destination(
    dst: &DestinationConfig,
    source: &PgEndpoint,
) -> Result<DestinationSettings, ConfigError> {
    let raw = dst.url.clone().ok_or_else(|| {
        invalid(
            "destination.url",
            "required: the ClickHouse HTTP endpoint, e.g. http://localhost:8123",
        )
    })?;
    let url = ::url::Url::parse(&raw)
        .map_err(|e| invalid("destination.url", format!("not a valid URL ({e})")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid(
            "destination.url",
            format!("scheme `{}` is not http or https (pgch speaks ClickHouse's HTTP interface, port 8123 or 8443)", url.scheme()),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "destination.url",
            "put credentials in destination.user and destination.password, not in the URL",
        ));
    }
    let database = dst
        .database
        .clone()
        .unwrap_or_else(|| DEFAULT_DESTINATION_DATABASE.to_string());
    if database.is_empty() || database.len() > 206 {
        return Err(invalid(
            "destination.database",
            "must be 1 to 206 bytes long",
        ));
    }
    Ok(DestinationSettings {
        url: raw.trim_end_matches('/').to_string(),
        user: dst
            .user
            .clone()
            .unwrap_or_else(|| DEFAULT_DESTINATION_USER.to_string()),
        password: dst.password.clone().unwrap_or_default(),
        database,
        connect_timeout: source.connect_timeout,
        cluster: dst.cluster.clone().filter(|c| !c.is_empty()),
        table_names: std::collections::BTreeMap::new(),
    })
}

fn validate_metrics(m: &MetricsConfig) -> Result<MetricsSettings, ConfigError> {
    let listen_raw = m.listen.as_deref().unwrap_or(DEFAULT_METRICS_LISTEN);
    let listen = listen_raw.parse().map_err(|_| {
        invalid(
            "metrics.listen",
            format!("`{listen_raw}` is not IP:port, e.g. 0.0.0.0:9188 or 127.0.0.1:9188"),
        )
    })?;
    let warn_ratios = m
        .warn_ratios
        .clone()
        .unwrap_or_else(|| DEFAULT_WARN_RATIOS.to_vec());
    if warn_ratios.is_empty()
        || warn_ratios.len() > 10
        || warn_ratios.iter().any(|r| !(*r > 0.0 && *r <= 1.0))
        || warn_ratios.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(invalid(
            "metrics.warn_ratios",
            "must be 1 to 10 increasing ratios, each above 0 and at most 1 (e.g. [0.5, 0.8])",
        ));
    }
    let poll = m.slot_poll_secs.unwrap_or(DEFAULT_SLOT_POLL_SECS);
    if !(1..=3600).contains(&poll) {
        return Err(invalid("metrics.slot_poll_secs", "must be 1 to 3600"));
    }
    Ok(MetricsSettings {
        listen,
        warn_ratios,
        slot_poll: Duration::from_secs(poll),
    })
}

#[cfg(test)]
mod tests;
