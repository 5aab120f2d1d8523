//! Writing sealed batches to ClickHouse while the stream reads on.
//!
//! A flush *seals* the pending rows of every table into encoded inserts and hands them
//! to a background task; the stream loop goes on reading and decoding the next batch
//! meanwhile (issue 13: reading never waits for ClickHouse while the memory budget has
//! room). At most one flush is in flight: the next seal first waits for it, so inserts
//! land in the order they were sealed and the commit tickets of a flush are marked
//! durable only once every insert sealed with (or before) them has returned
//! (DESIGN.md rule 5). Inserts of one flush run concurrently, at most
//! `pipeline.max_concurrent_inserts` at a time, each retrying on its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt, TryStreamExt};

use crate::checkpoint::CommitTicket;
use crate::config::DestinationSettings;
use crate::error;
use crate::metrics::health;
use crate::pipeline::batch::{ImageError, TableBatch};
use crate::sink::rowbinary::{ClampCounts, Codec};
use crate::sink::writer::RowBinaryInsert;
use crate::snapshot::plan::TablePlan;

use super::error::ApplyError;

/// One table's rows, encoded and ready to insert.
pub struct Encoded {
    pub plan: Arc<TablePlan>,
    pub rows: u64,
    pub body: Bytes,
    pub columns: Vec<String>,
    pub query_id: String,
    pub clamps: ClampCounts,
    /// Changes received for the table since its last flush: inserts, updates, deletes.
    pub received: [u64; 3],
}

/// Encodes one table's pending rows; `serial` makes the insert's query id unique.
pub fn encode(
    plan: &Arc<TablePlan>,
    batch: &TableBatch,
    received: [u64; 3],
    serial: u64,
) -> Result<Encoded, ApplyError> {
    let codecs: Vec<&Codec> = plan.mappings.iter().map(|m| &m.codec).collect();
    let mut buf = BytesMut::new();
    let mut clamps = ClampCounts::default();
    batch
        .encode(&codecs, &mut buf, &mut clamps)
        .map_err(|source: ImageError| match source {
            ImageError::Encode { column, source } => ApplyError::Encode {
                table: plan.source.display(),
                column: plan
                    .columns
                    .get(column)
                    .map_or_else(|| format!("#{column}"), |c| c.name.clone()),
                source: Box::new(source),
            },
            source => ApplyError::Image {
                table: plan.source.display(),
                source,
            },
        })?;
    let columns = plan.insert_columns();
    Ok(Encoded {
        plan: plan.clone(),
        rows: batch.len() as u64,
        body: buf.freeze(),
        columns,
        query_id: format!(
            "{}{}-{serial}",
            crate::sink::inflight::stream_query_prefix(&plan.dest),
            std::process::id()
        ),
        clamps,
        received,
    })
}

/// A sealed flush: its inserts, and the commits that become durable with them.
pub struct Sealed {
    pub inserts: Vec<Encoded>,
    pub tickets: Vec<CommitTicket>,
    /// Commit time (Postgres microseconds) of the last commit sealed.
    pub commit_time: Option<i64>,
    /// Commit time of the first commit sealed (the one that waited longest).
    pub first_commit_time: Option<i64>,
}

impl Sealed {
    /// Bytes the sealed inserts hold until they have returned.
    pub fn bytes(&self) -> u64 {
        self.inserts.iter().map(|e| e.body.len() as u64).sum()
    }
}

/// A flush whose inserts run in the background.
pub struct InFlight {
    pub handle: tokio::task::JoinHandle<Result<Sealed, ApplyError>>,
    /// Encoded bytes it holds (they count against the memory budget).
    pub bytes: u64,
}

/// Starts the inserts of `sealed` on their own task; the task hands `sealed` back when
/// every insert has returned.
pub fn spawn(
    sealed: Sealed,
    ch: clickhouse::Client,
    dest: DestinationSettings,
    concurrency: usize,
) -> InFlight {
    let bytes = sealed.bytes();
    let handle = tokio::spawn(async move {
        let started = Instant::now();
        run_all(&ch, &dest, &sealed.inserts, concurrency).await?;
        tracing::debug!(
            inserts = sealed.inserts.len(),
            rows = sealed.inserts.iter().map(|e| e.rows).sum::<u64>(),
            ms = started.elapsed().as_millis() as u64,
            "flush written"
        );
        Ok(sealed)
    });
    InFlight { handle, bytes }
}

/// Runs the inserts, at most `concurrency` at once. A fatal error of one stops the
/// others at once (one may be retrying through an outage): nothing of this flush is
/// acknowledged, and the TRUNCATE barrier waits out abandoned inserts.
pub async fn run_all(
    ch: &clickhouse::Client,
    dest: &DestinationSettings,
    inserts: &[Encoded],
    concurrency: usize,
) -> Result<(), ApplyError> {
    // Boxed: a spawned task cannot carry the iterator's closure type (a lifetime that
    // is not general enough), and the boxes are one per table per flush.
    let attempts: Vec<futures_util::future::BoxFuture<'_, Result<(), ApplyError>>> = inserts
        .iter()
        .map(|e| insert_with_retry(ch, dest, e).boxed())
        .collect();
    futures_util::stream::iter(attempts)
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Inserts one table's rows, retrying transient failures with backoff: the same rows
/// again (they are versioned, so a repeat converges), never a part of them.
async fn insert_with_retry(
    ch: &clickhouse::Client,
    dest: &DestinationSettings,
    e: &Encoded,
) -> Result<(), ApplyError> {
    let metrics = crate::metrics::global();
    let plan = &e.plan;
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let started = Instant::now();
        let query_id = format!("{}-{attempt}", e.query_id);
        let mut insert =
            RowBinaryInsert::start(ch, dest, &plan.dest, &e.columns, query_id, plan.has_json());
        let result = match insert.send_encoded(&e.body, e.rows).await {
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
