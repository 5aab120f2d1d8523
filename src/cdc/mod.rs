//! `pgch run` in the streaming modes: the slot (rule 1), the initial copy (rule 3), then
//! the stream applied to ClickHouse and acknowledged late (rule 5).
//!
//! ```text
//!   ensure slot ─► snapshot (xmin >= slot xmax) ─► stream from the slot's confirmed LSN
//!                                                     │ Begin/Commit ─► ledger
//!                                                     │ Insert/Update/Delete ─► table batches
//!                                                     │ Truncate ─► barrier: drop pending rows, TRUNCATE
//!                                                     ▼ flush (rows, bytes, age) ─► inserts ─► confirm safe LSN
//! ```
//!
//! This first version copies before it streams (WAL is retained during a long initial
//! load) and follows no schema changes: both are the next steps.

pub mod apply;
pub mod slot;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Mode, Settings};
use crate::pipeline::flush::FlushPolicy;
use crate::sink::client as ch_client;
use crate::sink::ddl;
use crate::sink::state::StateStore;
use crate::snapshot::{self, SnapshotOptions};
use crate::source::connect;
use crate::source::pgoutput::{self, DecodeContext, Message};
use crate::source::stream::{StreamEvent, StreamOptions};
use crate::source::walsender::Walsender;
use apply::{Applier, ApplyError};
use slot::SlotError;

/// Why `pgch run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Sink(#[from] crate::sink::client::SinkError),
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error(transparent)]
    Walsender(#[from] crate::source::walsender::WalsenderError),
    #[error(transparent)]
    Stream(#[from] crate::source::stream::StreamError),
    #[error("cannot decode the change at {lsn}: {source}")]
    Decode {
        lsn: crate::lsn::Lsn,
        source: pgoutput::DecodeError,
    },
}

/// Runs until `shutdown` resolves (then flushes, acknowledges and returns) or a fatal error.
pub async fn run(settings: &Settings, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let dest = &settings.destination;
    let ch = ch_client::client(dest, false);
    ch_client::execute(
        &ch,
        dest,
        &ddl::create_database_sql(&dest.database, dest.cluster.as_deref()),
    )
    .await?;
    let state = StateStore::open(dest, &settings.source.slot).await?;
    let identity = slot::ensure_slot(settings, &state).await?;

    let mut opts = SnapshotOptions::from_settings(settings);
    opts.min_xmin = Some(identity.snapshot_xmax);
    if settings.mode == Mode::SnapshotAndCdc {
        snapshot::run(settings, &opts).await?;
    }
    let pg = connect::connect(&settings.source.endpoint).await?;
    let (plans, _) = snapshot::plan_all(&pg, settings, &opts).await?;
    if settings.mode == Mode::CdcOnly {
        // Tables only: no copy.
        for plan in &plans {
            ch_client::execute(
                &ch,
                dest,
                &ddl::create_table_sql(&dest.database, &plan.spec, dest.cluster.as_deref()),
            )
            .await?;
        }
    }
    let plans: Vec<Arc<_>> = plans.into_iter().map(Arc::new).collect();
    let mut applier = Applier::new(plans, identity.consistent_point, FlushPolicy::default());

    tokio::pin!(shutdown);
    let mut backoff = RECONNECT_MIN;
    loop {
        let began = Instant::now();
        match stream_session(settings, &mut applier, &ch, shutdown.as_mut()).await {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::Ended) => {
                tracing::warn!("the server ended the replication stream; reconnecting");
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "replication session lost; reconnecting");
            }
            Err(e) => return Err(e),
        }
        // What is not durable will be sent again from the slot's confirmed position.
        applier.discard_in_flight();
        if began.elapsed() > Duration::from_secs(60) {
            backoff = RECONNECT_MIN;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.as_mut() => return Ok(()),
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// First wait before reconnecting after a lost session.
const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Longest wait between reconnects.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

enum SessionEnd {
    /// Shutdown was asked for; everything durable is acknowledged.
    Shutdown,
    /// The server closed the stream cleanly.
    Ended,
}

impl RunError {
    /// Lost connections and server restarts are retried; everything else needs the operator.
    pub fn is_transient(&self) -> bool {
        use crate::source::stream::StreamError;
        use crate::source::wire::WireError;
        let transient_state = |s: &str| s.starts_with("57P") || s.starts_with("08") || s == "53300";
        match self {
            RunError::Walsender(WireError::Server { sqlstate, .. }) => transient_state(sqlstate),
            RunError::Walsender(_) => true,
            RunError::Stream(StreamError::Server { sqlstate, .. }) => transient_state(sqlstate),
            RunError::Stream(_) => true,
            RunError::Connect(e) => e.sqlstate.as_deref().is_none_or(transient_state),
            RunError::Apply(ApplyError::Toast { source, .. }) => {
                source.is_closed() || source.code().is_some_and(|c| transient_state(c.code()))
            }
            _ => false,
        }
    }
}

/// One replication session: connect, stream and apply until shutdown or an error.
async fn stream_session(
    settings: &Settings,
    applier: &mut Applier,
    ch: &clickhouse::Client,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<SessionEnd, RunError> {
    let dest = &settings.destination;
    let pg = connect::connect(&settings.source.endpoint).await?;
    let walsender = Walsender::connect(&settings.source.endpoint).await?;
    let mut stream = walsender
        .start(
            &settings.source.slot,
            crate::lsn::Lsn::ZERO,
            &settings.source.publication,
            StreamOptions::default(),
        )
        .await?;
    let feedback = stream.feedback();
    tracing::info!(slot = %settings.source.slot, "streaming changes");
    let mut in_stream = false;
    let end = loop {
        let wait = applier
            .time_left(Instant::now())
            .unwrap_or(Duration::from_secs(3600));
        let event = tokio::select! {
            e = stream.next() => match e {
                Some(e) => Some(e?),
                None => break SessionEnd::Ended,
            },
            // A batch came of age with no event to carry the flush check.
            _ = tokio::time::sleep(wait) => None,
            _ = shutdown.as_mut() => break SessionEnd::Shutdown,
        };
        if let Some(event) = event {
            match event {
                StreamEvent::XLogData { start, payload, .. } => {
                    let ctx = DecodeContext { in_stream };
                    let msg = pgoutput::decode(&payload, ctx)
                        .map_err(|source| RunError::Decode { lsn: start, source })?;
                    apply_message(applier, &msg, start, &mut in_stream, &pg, ch, dest).await?;
                }
                StreamEvent::Keepalive { wal_end, .. } => {
                    if !applier.has_rows() && !applier.has_pending_commits() {
                        applier.ledger.keepalive(wal_end);
                        feedback.confirm(applier.ledger.safe_lsn());
                    }
                }
            }
        }
        if applier.flush_due(Instant::now())
            || (!applier.has_rows() && applier.has_pending_commits())
        {
            let safe = applier.flush(&pg, ch, dest).await?;
            feedback.confirm_now(safe);
        }
    };
    // Write what is pending, acknowledge it, say goodbye to the walsender.
    let safe = applier.flush(&pg, ch, dest).await?;
    feedback.confirm_now(safe);
    stream.shutdown().await;
    if matches!(end, SessionEnd::Shutdown) {
        tracing::info!(confirmed = %safe, "stopped after flushing and acknowledging");
    }
    Ok(end)
}

/// Applies one decoded message to the batches and the ledger.
async fn apply_message(
    applier: &mut Applier,
    msg: &Message,
    start: crate::lsn::Lsn,
    in_stream: &mut bool,
    pg: &tokio_postgres::Client,
    ch: &clickhouse::Client,
    dest: &crate::config::DestinationSettings,
) -> Result<(), RunError> {
    let now = Instant::now();
    match msg {
        Message::Begin(_) => applier.ledger.begin(),
        Message::Commit(c) => applier.commit(c.end_lsn),
        Message::Relation(r) => applier.relation(r)?,
        Message::Insert(i) => {
            let (batch, table) = applier.batch(i.relation_id)?;
            batch
                .insert(start, &i.new, now)
                .map_err(|source| ApplyError::Image { table, source })?;
        }
        Message::Update(u) => {
            let (batch, table) = applier.batch(u.relation_id)?;
            batch
                .update(start, u.old.as_ref(), &u.new, now)
                .map_err(|source| ApplyError::Image { table, source })?;
        }
        Message::Delete(d) => {
            let (batch, table) = applier.batch(d.relation_id)?;
            batch
                .delete(start, &d.old, now)
                .map_err(|source| ApplyError::Image { table, source })?;
        }
        Message::Truncate(t) => {
            // Rows of other tables before the TRUNCATE must land first.
            applier.flush(pg, ch, dest).await?;
            for id in &t.relation_ids {
                if let Some(lane) = applier.lane_of(*id) {
                    applier.truncate(lane, ch, dest).await?;
                }
            }
        }
        Message::StreamStart(_) => *in_stream = true,
        Message::StreamStop => *in_stream = false,
        _ => {}
    }
    Ok(())
}
