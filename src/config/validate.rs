//! From what the user wrote to what pgch runs with: each rule checked, the error naming
//! the key and the rule it broke, defaults resolved.

use super::url::{parse_pg_url, related_endpoint};
use super::*;

impl Config {
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
            let options = validate_table_options(t)?;
            if options != TableOptions::default() {
                destination.table_options.insert(t.source.clone(), options);
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
        flush: FlushLimits {
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
        table_options: std::collections::BTreeMap::new(),
        create_views: dst.create_views.unwrap_or(true),
    })
}

/// The layout options of one `[[tables]]` entry, as far as they can be judged without
/// the table (its columns are checked when it is planned).
fn validate_table_options(t: &TableConfig) -> Result<TableOptions, ConfigError> {
    let order_by = t.order_by.clone().unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    for c in &order_by {
        if c.is_empty() || !seen.insert(c.as_str()) {
            return Err(invalid(
                "tables.order_by",
                format!(
                    "{}: column names must be non-empty and listed once",
                    t.source
                ),
            ));
        }
    }
    let partition_by = match t.partition_by.as_deref().map(str::trim) {
        Some("") => {
            return Err(invalid(
                "tables.partition_by",
                format!(
                    "{}: an empty expression; leave the key out for no partitioning",
                    t.source
                ),
            ))
        }
        Some(p) => Some(p.to_string()),
        None => None,
    };
    let exclude_columns = t.exclude_columns.clone().unwrap_or_default();
    let mut excluded = std::collections::BTreeSet::new();
    for c in &exclude_columns {
        if c.is_empty() || !excluded.insert(c.as_str()) {
            return Err(invalid(
                "tables.exclude_columns",
                format!(
                    "{}: column names must be non-empty and listed once",
                    t.source
                ),
            ));
        }
        if seen.contains(c.as_str()) {
            return Err(invalid(
                "tables.exclude_columns",
                format!(
                    "{}: `{c}` is also in order_by; a column left out cannot sort the table",
                    t.source
                ),
            ));
        }
    }
    let column_types = t.column_types.clone().unwrap_or_default();
    for (c, ty) in &column_types {
        if c.is_empty() || ty.trim().is_empty() {
            return Err(invalid(
                "tables.column_types",
                format!("{}: column names and types must be non-empty", t.source),
            ));
        }
        if excluded.contains(c.as_str()) {
            return Err(invalid(
                "tables.column_types",
                format!("{}: `{c}` is also in exclude_columns", t.source),
            ));
        }
    }
    let history = t.mode == Some(TableMode::History);
    if history && !order_by.is_empty() {
        return Err(invalid(
            "tables.order_by",
            format!(
                "{}: a history table is ordered by change (_lsn, _seq); leave order_by out",
                t.source
            ),
        ));
    }
    Ok(TableOptions {
        order_by,
        partition_by,
        exclude_columns,
        column_types,
        history,
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
