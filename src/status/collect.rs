//! Gathers the facts of a [`Status`]: Postgres, ClickHouse and the running pgch are
//! read side by side, each bounded in time, and a server that does not answer becomes
//! a fact of the status (never an error of the command). Nothing is created or changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::prom::{self, Sample};
use super::{judge, PgchStatus, SlotStatus, Status, TableState, TableStatus};
use crate::config::Settings;
use crate::lsn::Lsn;
use crate::resync::scope::Scope;
use crate::sink::client as ch_client;
use crate::sink::preflight::{escape_string, quote_ident};
use crate::sink::state::{keys, StateStore, STATE_TABLE};
use crate::source::catalog::{self, ReplicaIdentity};
use crate::source::connect;
use crate::source::row::column;

/// The longest a server gets to answer before it counts as unreachable.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pgch's own endpoint gets: it answers from memory.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(3);
/// Tables per `max(_version)` query.
const TABLES_PER_QUERY: usize = 50;

/// Where the running pgch's own health comes from.
#[derive(Clone, Copy, Debug)]
pub enum HealthSource {
    /// `pgch status`: ask the endpoint of a pgch that may be running.
    Endpoint(SocketAddr),
    /// The status page: this process is the running pgch.
    InProcess,
}

/// A published table as far as the status needs it.
struct SourceTable {
    display: String,
    dest: String,
    multiset: bool,
    blocks: u64,
    estimate: u64,
    filenode: u32,
}

/// What Postgres says.
struct SourceFacts {
    version: u32,
    tables: Vec<SourceTable>,
    slot: SlotStatus,
}

/// What ClickHouse says.
#[derive(Default)]
struct DestinationFacts {
    state: BTreeMap<String, String>,
    rows_stored: BTreeMap<String, u64>,
    last_version: BTreeMap<String, u64>,
}

/// Reads everything and judges it.
pub async fn collect(settings: &Settings, health: HealthSource) -> Status {
    let (source, destination, pgch) = tokio::join!(
        bounded(SERVER_TIMEOUT, read_source(settings)),
        bounded(SERVER_TIMEOUT, read_destination(settings)),
        read_pgch(health),
    );
    let mut status = Status {
        slot_name: settings.source.slot.clone(),
        publication: settings.source.publication.clone(),
        database: settings.destination.database.clone(),
        pgch: pgch.0,
        ..Status::default()
    };
    let samples = pgch.1;
    let destination = destination.unwrap_or_else(|e| {
        status.destination_error = Some(e);
        DestinationFacts::default()
    });
    let state = &destination.state;
    status.state_recorded = state.contains_key(keys::SYSTEM_IDENTIFIER);
    let scope = state.get(keys::RESYNC).map(|r| Scope::from_record(r));
    status.resync_pending = scope.as_ref().map(|s| match s {
        Ok(Scope::All) => "every table, from a new slot".to_string(),
        Ok(Scope::Tables(t)) => t.iter().cloned().collect::<Vec<_>>().join(", "),
        Err(e) => e.to_string(),
    });
    let streaming = status.pgch.phase.as_deref() == Some("streaming");
    let mut seen = BTreeSet::new();
    match source {
        Ok(facts) => {
            for t in &facts.tables {
                seen.insert(t.dest.clone());
                let in_resync = match &scope {
                    Some(Ok(Scope::All)) | Some(Err(_)) => true,
                    Some(Ok(Scope::Tables(names))) => {
                        names.contains(&t.display) || names.contains(&t.dest)
                    }
                    None => false,
                };
                let (done, total) = partitions(settings, facts.version, t, state);
                let complete = state.contains_key(&keys::snapshot_complete(&t.dest));
                let owned = state.contains_key(&keys::table_owned(&t.dest));
                let state = if in_resync {
                    TableState::ResyncPending
                } else if !owned {
                    TableState::NotCopied
                } else if complete || done == total {
                    if streaming {
                        TableState::Streaming
                    } else {
                        TableState::Copied
                    }
                } else {
                    TableState::Copying
                };
                let copying = state == TableState::Copying;
                status.tables.push(TableStatus {
                    source: t.display.clone(),
                    destination: t.dest.clone(),
                    state,
                    partitions_done: copying.then_some(done),
                    partitions_total: copying.then_some(total),
                    rows_copied: table_metric(
                        &samples,
                        crate::metrics::SNAPSHOT_COPIED_ROWS,
                        &t.dest,
                    ),
                    rows_estimated: Some(t.estimate),
                    rows_stored: destination.rows_stored.get(&t.dest).copied(),
                    last_change_lsn: last_change(&destination, &t.dest),
                });
            }
            status.slot = Some(facts.slot);
        }
        Err(e) => status.source_error = Some(e),
    }
    if status.source_error.is_none() {
        for (dest, source) in owned_tables(state) {
            if !seen.contains(&dest) {
                status.tables.push(TableStatus {
                    source,
                    rows_stored: destination.rows_stored.get(&dest).copied(),
                    last_change_lsn: last_change(&destination, &dest),
                    destination: dest,
                    state: TableState::LeftPublication,
                    partitions_done: None,
                    partitions_total: None,
                    rows_copied: None,
                    rows_estimated: None,
                });
            }
        }
    }
    if let Some(slot) = &mut status.slot {
        slot.failover_wanted = settings.source.failover_slot;
    }
    judge(&mut status);
    status
}

async fn bounded<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", limit.as_secs())))
}

/// Partitions done and planned, as the copy would plan them now (the same layout and
/// done-marks as [`crate::snapshot::copy_all`]).
fn partitions(
    settings: &Settings,
    version: u32,
    t: &SourceTable,
    state: &BTreeMap<String, String>,
) -> (u64, u64) {
    let per = settings.snapshot.partition_blocks.unwrap_or_else(|| {
        crate::snapshot::auto_partition_blocks(t.blocks, settings.snapshot.workers)
    });
    let ranges = if t.multiset {
        vec![None]
    } else {
        crate::snapshot::partition(t.blocks, per, version)
    };
    let done = ranges
        .iter()
        .filter(|r| {
            let label = format!(
                "{}:{}",
                t.filenode,
                crate::snapshot::copy::partition_label(**r)
            );
            state.contains_key(&keys::copy_done(&t.dest, &label))
        })
        .count();
    (done as u64, ranges.len() as u64)
}

/// `(destination, source)` of every ClickHouse table this slot owns, shadows left out.
fn owned_tables(state: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let prefix = keys::table_owned("");
    let shadow = crate::resync::shadow::shadow_name("");
    state
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
        .filter(|(dest, _)| !dest.ends_with(&shadow))
        .collect()
}

fn last_change(destination: &DestinationFacts, dest: &str) -> Option<String> {
    destination
        .last_version
        .get(dest)
        .filter(|v| **v > 0)
        .map(|v| Lsn::new(*v).to_string())
}

fn table_metric(samples: &[Sample], name: &str, dest: &str) -> Option<u64> {
    prom::value(samples, name, &[("table", dest)]).map(|v| v.max(0.0) as u64)
}

async fn read_source(settings: &Settings) -> Result<SourceFacts, String> {
    let pg = connect::connect(&settings.source.endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let err = |e: tokio_postgres::Error| e.to_string();
    let row = pg
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(err)?;
    let version =
        column::<i32>(&row, 0, "reading server_version_num").map_err(|e| e.to_string())? as u32;
    let published = catalog::published_tables(&pg, &settings.source.publication, version)
        .await
        .map_err(|e| e.to_string())?;
    let oids: Vec<u32> = published.iter().map(|t| t.oid).collect();
    let rows = pg
        .query(
            "SELECT c.oid, (pg_relation_size(c.oid) / current_setting('block_size')::int)::int8, \
                    greatest(c.reltuples, 0)::int8, coalesce(pg_relation_filenode(c.oid), 0)::oid \
               FROM pg_catalog.pg_class c WHERE c.oid = ANY($1::oid[])",
            &[&oids],
        )
        .await
        .map_err(err)?;
    const WHAT: &str = "reading table sizes (pg_class)";
    let mut sizes = BTreeMap::new();
    for row in &rows {
        let get = |i| column::<i64>(row, i, WHAT).map_err(|e| e.to_string());
        let oid = column::<u32>(row, 0, WHAT).map_err(|e| e.to_string())?;
        let filenode = column::<u32>(row, 3, WHAT).map_err(|e| e.to_string())?;
        sizes.insert(
            oid,
            (get(1)?.max(0) as u64, get(2)?.max(0) as u64, filenode),
        );
    }
    let tables = published
        .iter()
        .map(|t| {
            let (blocks, estimate, filenode) = sizes.get(&t.oid).copied().unwrap_or_default();
            SourceTable {
                display: t.display(),
                dest: settings
                    .destination
                    .table_names
                    .get(&t.display())
                    .cloned()
                    .unwrap_or_else(|| catalog::destination_name(&t.schema, &t.name)),
                multiset: t.replica_identity == ReplicaIdentity::Full && !t.has_primary_key,
                blocks,
                estimate,
                filenode,
            }
        })
        .collect();
    let slot = read_slot(&pg, version, &settings.source.slot).await?;
    Ok(SourceFacts {
        version,
        tables,
        slot,
    })
}

async fn read_slot(
    pg: &tokio_postgres::Client,
    version: u32,
    name: &str,
) -> Result<SlotStatus, String> {
    let Some(figures) = crate::metrics::slot::poll(pg, version, name).await? else {
        return Ok(SlotStatus::default());
    };
    let failover = if version >= 170_000 {
        "failover"
    } else {
        "NULL::bool"
    };
    let row = pg
        .query_opt(
            &format!("SELECT confirmed_flush_lsn::text, {failover} FROM pg_catalog.pg_replication_slots WHERE slot_name = $1"),
            &[&name],
        )
        .await
        .map_err(|e| e.to_string())?;
    const WHAT: &str = "reading the slot (pg_replication_slots)";
    let (confirmed_lsn, failover) = match row {
        Some(row) => (
            column::<Option<String>>(&row, 0, WHAT).map_err(|e| e.to_string())?,
            column::<Option<bool>>(&row, 1, WHAT).map_err(|e| e.to_string())?,
        ),
        None => (None, None),
    };
    Ok(SlotStatus {
        exists: true,
        active: figures.active,
        confirmed_lsn,
        retained_bytes: figures.retained_bytes,
        max_keep_bytes: figures.max_keep_bytes,
        retained_ratio: figures.ratio(),
        wal_status: figures.wal_status.clone(),
        safe_wal_bytes: figures.safe_wal_bytes,
        failover,
        failover_wanted: false,
    })
}

async fn read_destination(settings: &Settings) -> Result<DestinationFacts, String> {
    let dest = &settings.destination;
    let ch = ch_client::client(dest, false);
    let err = |e: crate::sink::client::SinkError| e.to_string();
    let found = ch_client::query_text(
        &ch,
        dest,
        &format!(
            "SELECT name, total_rows FROM system.tables WHERE database = '{}'",
            escape_string(&dest.database)
        ),
    )
    .await
    .map_err(err)?;
    let mut facts = DestinationFacts::default();
    let mut has_state = false;
    for line in found.lines() {
        let Some((name, rows)) = line.split_once('\t') else {
            continue;
        };
        has_state |= name == STATE_TABLE;
        if let Ok(rows) = rows.parse() {
            facts.rows_stored.insert(name.to_string(), rows);
        }
    }
    if !has_state {
        // pgch never ran here: nothing to read, and nothing to create.
        return Ok(facts);
    }
    facts.state = StateStore::open(dest, &settings.source.slot)
        .await
        .map_err(err)?
        .load()
        .await
        .map_err(err)?;
    let owned: Vec<String> = owned_tables(&facts.state)
        .into_iter()
        .map(|(d, _)| d)
        .filter(|d| facts.rows_stored.contains_key(d))
        .collect();
    for chunk in owned.chunks(TABLES_PER_QUERY) {
        let sql = chunk
            .iter()
            .map(|t| {
                format!(
                    "SELECT '{}', max(_version) FROM {}.{}",
                    escape_string(t),
                    quote_ident(&dest.database),
                    quote_ident(t)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let text = ch_client::query_text(&ch, dest, &sql).await.map_err(err)?;
        for line in text.lines() {
            if let Some((t, v)) = line.split_once('\t') {
                if let Ok(v) = v.parse() {
                    facts.last_version.insert(t.to_string(), v);
                }
            }
        }
    }
    Ok(facts)
}

/// The running pgch's status and its metric samples; not running when nothing answers.
async fn read_pgch(health: HealthSource) -> (PgchStatus, Vec<Sample>) {
    match health {
        HealthSource::InProcess => {
            let samples = crate::metrics::global()
                .render()
                .map(|t| prom::parse(&t))
                .unwrap_or_default();
            let live = crate::metrics::health::liveness();
            let ready = crate::metrics::health::readiness();
            let mut problems = live.reasons.clone();
            problems.extend(ready.reasons.iter().cloned());
            (
                from_samples(
                    "this process".into(),
                    &samples,
                    live.ready,
                    ready.ready,
                    problems,
                ),
                samples,
            )
        }
        HealthSource::Endpoint(addr) => {
            let endpoint = addr.to_string();
            let Some((_, metrics)) = get(addr, "/metrics").await else {
                return (
                    PgchStatus {
                        endpoint,
                        ..PgchStatus::default()
                    },
                    Vec::new(),
                );
            };
            let samples = prom::parse(&metrics);
            let (live_code, live_body) =
                get(addr, "/healthz").await.unwrap_or((503, String::new()));
            let (ready_code, ready_body) =
                get(addr, "/readyz").await.unwrap_or((503, String::new()));
            let problems = [live_body, ready_body]
                .iter()
                .flat_map(|b| {
                    b.lines()
                        .filter_map(|l| l.strip_prefix("- "))
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .collect();
            (
                from_samples(
                    endpoint,
                    &samples,
                    live_code == 200,
                    ready_code == 200,
                    problems,
                ),
                samples,
            )
        }
    }
}

fn from_samples(
    endpoint: String,
    samples: &[Sample],
    live: bool,
    ready: bool,
    problems: Vec<String>,
) -> PgchStatus {
    let phase = samples
        .iter()
        .find(|s| s.name == "pgch_phase" && s.value >= 1.0)
        .and_then(|s| s.labels.get("phase").cloned());
    PgchStatus {
        endpoint,
        running: true,
        phase,
        live: Some(live),
        ready: Some(ready),
        problems,
        lag_seconds: prom::value(samples, "pgch_lag_seconds", &[]),
        acknowledged_lsn: prom::value(samples, "pgch_acknowledged_lsn_bytes", &[])
            .filter(|v| *v > 0.0)
            .map(|v| Lsn::new(v as u64).to_string()),
        pipeline_memory_bytes: prom::value(samples, "pgch_pipeline_memory_bytes", &[])
            .map(|v| v.max(0.0) as u64),
    }
}

/// The address to reach a listener bound to `listen` (a wildcard means this machine).
pub fn reachable(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// `GET path` on pgch's endpoint: status code and body; `None` when nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    };
    tokio::time::timeout(ENDPOINT_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}
