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
//! The copy runs beside the stream (rule 3): the tables exist before the stream starts,
//! partitions land as they are copied, and a TRUNCATE cancels the table's copies first
//! (rule 8). Schema changes are not followed yet.

pub mod apply;
mod copies;
mod error;
mod insert;
mod multiset;
pub mod schema;
pub mod toast;
mod tracker;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::error::{ApplyError, RunError};
use crate::config::{Settings, TruncateMode};
use crate::membership;
use crate::metrics::health::{self, Phase};
use crate::resync;
use crate::sink::client as ch_client;
use crate::sink::ddl;
use crate::sink::state::{keys, StateStore};
use crate::slot::{self, SlotError};
use crate::snapshot::control::CopyControl;
use crate::snapshot::{self, SnapshotOptions};
use crate::source::connect;
use crate::source::pgoutput::{self, DecodeContext, Message};
use crate::source::stream::{StreamEvent, StreamOptions};
use crate::source::walsender::Walsender;
use apply::{Applier, Change};
use copies::Copies;
use tracker::{still_a_member, LiveShadow, Tracker};

/// [`run`], with `pipeline.auto_resync`: when the stream needs a resync (a lost slot, a
/// schema change that cannot be followed), runs it — every table, or the one table —
/// and streams on. At most [`MAX_AUTO_RESYNCS`] times per start, so a cause that comes
/// straight back stops pgch instead of copying forever.
pub async fn run_resyncing(
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    use futures_util::FutureExt;
    let shutdown = shutdown.boxed().shared();
    let mut resyncs = 0;
    loop {
        let outcome = run(settings, shutdown.clone()).await;
        let scope = match &outcome {
            Err(e) if settings.pipeline.auto_resync && resyncs < MAX_AUTO_RESYNCS => {
                e.resync_scope()
            }
            _ => None,
        };
        let Some(tables) = scope else {
            return outcome;
        };
        resyncs += 1;
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, tables = ?tables, "resyncing automatically (pipeline.auto_resync)");
        }
        if tables.is_empty() {
            // A new slot: every table is copied again before streaming resumes.
            resync_when_free(settings, &tables).await?;
        } else {
            // One table: copied into a shadow that receives the stream while every
            // other table streams on (resync::live).
            let state = StateStore::open(&settings.destination, &settings.source.slot).await?;
            resync::live::request(&state, &tables).await?;
        }
    }
}

/// Automatic resyncs per start before pgch gives up.
pub const MAX_AUTO_RESYNCS: u32 = 3;

/// Runs the resync once the walsender of the stopped stream has let go of the slot.
async fn resync_when_free(settings: &Settings, tables: &[String]) -> Result<(), RunError> {
    let mut tries = 0;
    loop {
        match crate::resync::run(settings, tables).await {
            Ok(_) => return Ok(()),
            Err(crate::resync::ResyncError::Slot(SlotError::InUse { .. })) if tries < 30 => {
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(RunError::Resync(e.to_string())),
        }
    }
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

    // Until a copy starts, nothing depends on a slot this start created: a failure
    // here drops it again, so a late-found setup error leaves no slot holding WAL.
    let planned: Result<_, RunError> = async {
        let mut opts = SnapshotOptions::for_destination(settings).await?;
        // Copies see every transaction the stream will not carry: those before the slot
        // (rule 3), and those that wrote to a table before it joined the publication while
        // pgch was away — so the xmax of now, which is never below the recorded one.
        let pg = connect::connect(&settings.source.endpoint).await?;
        // Before the xmax: a copy waiting for that xmax sees everything committed up to here.
        let wal_now = membership::current_wal_lsn(&pg).await?;
        let xmax_now = membership::current_xmax(&pg).await?;
        opts.min_xmin = Some(identity.snapshot_xmax.max(xmax_now));
        // Every table exists before the stream writes to it; the copies then land alongside
        // the stream (DESIGN.md rule 3), so WAL does not pile up during a long initial load.
        let recorded = state.load().await?;
        let (mut plans, server_version) = snapshot::plan_all(&pg, settings, &opts).await?;
        // Tables being resynced live stream into, and are copied into, fresh shadows.
        let live = resync::live::recorded(&recorded);
        let published: BTreeSet<String> = plans.iter().map(|p| p.source.display()).collect();
        resync::live::forget_unpublished(&state, &live, &published).await?;
        let mut shadows = HashMap::new();
        let mut copied_through: HashMap<u32, crate::lsn::Lsn> = HashMap::new();
        for plan in plans.iter_mut() {
            let source = plan.source.display();
            if let Some(lsn) = recorded
                .get(&keys::copied_through(&source))
                .and_then(|t| t.parse().ok())
            {
                copied_through.insert(plan.source.oid, lsn);
            }
            if !live.contains(&source) {
                continue;
            }
            if recorded
                .get(&resync::live::key(&source))
                .map(String::as_str)
                == Some(resync::live::EXCHANGED)
            {
                // Exchanged before pgch stopped: the new table's layout and view, then
                // only the old rows are left to drop.
                resync::live::settle(&ch, dest, &state, plan).await?;
                resync::live::clean_up(&ch, dest, &state, &source, &plan.dest).await?;
                continue;
            }
            let shadow =
                resync::live::prepare(&ch, settings, &state, &pg, plan, server_version, wal_now)
                    .await?;
            copied_through.insert(plan.source.oid, wal_now);
            shadows.insert(plan.source.oid, LiveShadow::new(source, plan.dest.clone()));
            *plan = shadow;
        }
        let prepared = snapshot::prepare_plans(settings, plans, server_version).await?;
        // A table that left the publication and joined again while pgch was stopped missed
        // the changes in between: only a resync makes it equal.
        for plan in &prepared.plans {
            if shadows.contains_key(&plan.source.oid) {
                continue;
            }
            still_a_member(
                &pg,
                &state,
                &recorded,
                settings,
                plan,
                prepared.server_version,
            )
            .await?;
        }
        Ok((
            opts,
            pg,
            xmax_now,
            recorded,
            shadows,
            copied_through,
            prepared,
            server_version,
        ))
    }
    .await;
    let (mut opts, pg, xmax_now, recorded, shadows, copied_through, prepared, server_version) =
        match planned {
            Ok(planned) => planned,
            Err(e) => {
                if identity.created {
                    slot::undo_created_slot(settings, &state).await;
                }
                return Err(e);
            }
        };
    let (shadow_plans, table_plans): (Vec<_>, Vec<_>) = prepared
        .plans
        .iter()
        .cloned()
        .partition(|p| shadows.contains_key(&p.source.oid));
    // Keyless tables' copies must not overlap the stream: agreed before it starts.
    let copies_tables = settings.mode == crate::config::Mode::SnapshotAndCdc;
    let mut keyless =
        multiset::prepare(settings, &state, &table_plans, opts.min_xmin, copies_tables).await?;
    let keyless_shadows =
        multiset::prepare(settings, &state, &shadow_plans, opts.min_xmin, true).await?;
    keyless.held.extend(keyless_shadows.held);
    keyless.seen.extend(keyless_shadows.seen);
    opts.held = keyless.held.clone();
    let control = Arc::new(CopyControl::default());
    let mut copies = Copies::new(settings, &opts, control.clone());
    copies.start(
        snapshot::Prepared {
            plans: table_plans,
            server_version,
        },
        opts.min_xmin,
    );
    for plan in shadow_plans {
        copies.start_shadow(
            plan.source.oid,
            snapshot::Prepared {
                plans: vec![plan],
                server_version,
            },
            opts.min_xmin,
        );
    }
    let mut applier = Applier::new(
        prepared.plans.clone(),
        identity.consistent_point,
        &settings.pipeline,
        control,
    );
    applier.set_server_version(prepared.server_version);
    applier.set_mapping(opts.mapping.clone());
    for (oid, lsn) in copied_through {
        applier.set_copied_through(oid, lsn);
    }
    keyless.apply_to(&mut applier);
    let mut tracker = Tracker {
        opts: opts.clone(),
        server_version: prepared.server_version,
        left: BTreeSet::new(),
        partitions: membership::Partitions::default(),
        shadows,
    };

    // The partition trees against their records: leaves attached, detached or
    // truncated while pgch was stopped. Later looks compare with the tree seen now.
    for parent in applier.plans() {
        if parent.source.relkind == "p" {
            let oid = parent.source.oid;
            // A table resynced live had its tree recorded just now, by prepare.
            let record = match tracker.shadows.contains_key(&oid) {
                true => None,
                false => recorded.get(&keys::partition_tree(&parent.dest)),
            };
            let tree = tracker
                .partitions
                .poll(&pg, &parent, record.map(String::as_str))
                .await?;
            tracker.follow_tree(&parent, tree, &mut copies, xmax_now)?;
            let record_as = tracker.real_dest(&parent);
            tracker.partitions.save(&state, oid, &record_as).await?;
        }
    }

    tokio::pin!(shutdown);
    let mut backoff = RECONNECT_MIN;
    let outcome = loop {
        let began = Instant::now();
        let session = stream_session(
            settings,
            &mut applier,
            &ch,
            &mut copies,
            &mut tracker,
            shutdown.as_mut(),
        );
        match session.await {
            Ok(SessionEnd::Shutdown | SessionEnd::Abandoned) => break Ok(()),
            Ok(SessionEnd::Ended) => {
                tracing::warn!("the server ended the replication stream; reconnecting");
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "replication session lost; reconnecting");
            }
            Err(e) => break Err(e),
        }
        // What is not durable will be sent again from the slot's confirmed position.
        applier.discard_in_flight();
        if began.elapsed() > Duration::from_secs(60) {
            backoff = RECONNECT_MIN;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.as_mut() => break Ok(()),
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
        // The server may be another one now (a failover through a multi-host URL):
        // same system and the slot, or a fatal "resync required" (rule 1).
        if let Err(e) = slot::verify_still_ours(settings, &state).await {
            let e = RunError::from(e);
            if !e.is_transient() {
                break Err(e);
            }
        }
    };
    // Unfinished partitions are copied again on the next start.
    copies.abort();
    outcome
}

/// How often the publication's tables are compared with the tables pgch streams.
const MEMBERSHIP_POLL: Duration = Duration::from_secs(10);

/// The stream loop's name in `/healthz`.
const STREAM_TASK: &str = "stream";
/// The longest the stream loop sleeps without a message.
const IDLE_WAKE: Duration = Duration::from_secs(5);

/// First wait before reconnecting after a lost session.
pub(super) const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Longest wait between reconnects.
pub(super) const RECONNECT_MAX: Duration = Duration::from_secs(30);

enum SessionEnd {
    /// Shutdown was asked for; everything durable is acknowledged.
    Shutdown,
    /// Shutdown was asked for during a flush that could not finish (ClickHouse away).
    Abandoned,
    /// The server closed the stream cleanly.
    Ended,
}

/// One replication session: connect, stream and apply until shutdown or an error.
async fn stream_session(
    settings: &Settings,
    applier: &mut Applier,
    ch: &clickhouse::Client,
    copies: &mut Copies,
    tracker: &mut Tracker,
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
            StreamOptions {
                // Received messages not yet applied count against the same budget.
                buffer_bytes: (settings.pipeline.memory_budget_bytes / 4).max(1 << 20) as usize,
                ..StreamOptions::default()
            },
        )
        .await?;
    let feedback = stream.feedback();
    tracing::info!(slot = %settings.source.slot, "streaming changes");
    health::set_phase(Phase::Streaming);
    let metrics = crate::metrics::global();
    let mut membership_tick = tokio::time::interval(MEMBERSHIP_POLL);
    membership_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    membership_tick.reset();
    let mut in_stream = false;
    // A keepalive came while commits waited: the walsender has nothing more to send
    // right now, so they are written at once instead of after the sync interval.
    let mut caught_up = false;
    let min_flush_gap = settings.pipeline.flush.max_age / 10;
    let mut last_flush = Instant::now();
    let outcome = async {
        Ok::<_, RunError>(loop {
            health::heartbeat(STREAM_TASK);
            // Wake at least every few seconds so the heartbeat flows while idle. While
            // a flush is in flight, its end wakes the loop.
            let wait = match applier.in_flight() {
                true => IDLE_WAKE,
                false => {
                    let now = Instant::now();
                    let gap = match caught_up {
                        true => min_flush_gap.saturating_sub(now - last_flush),
                        false => IDLE_WAKE,
                    };
                    applier
                        .time_left(now)
                        .unwrap_or(IDLE_WAKE)
                        .min(IDLE_WAKE)
                        .min(gap)
                }
            };
            let event = tokio::select! {
                e = stream.next() => match e {
                    Some(e) => Some(e?),
                    None => break SessionEnd::Ended,
                },
                safe = applier.flushed() => {
                    let safe = safe?;
                    feedback.confirm_now(safe);
                    metrics.acknowledged(safe);
                    None
                }
                // A batch came of age with no event to carry the flush check.
                _ = tokio::time::sleep(wait) => None,
                _ = shutdown.as_mut() => break SessionEnd::Shutdown,
                e = copies.failed() => return Err(e),
                _ = membership_tick.tick() => {
                    tracker.poll(&pg, settings, applier, copies).await?;
                    None
                }
            };
            if let Some(first) = event {
                // Everything the reader has handed over is applied in one go; the
                // select above runs once per handover, not once per message.
                let mut next = Some(first);
                let mut applied = 0usize;
                // One clock read per handover: batch ages need no finer grain.
                let now = Instant::now();
                while let Some(event) = next.take() {
                    let reply = handle_event(
                        event,
                        applier,
                        &mut in_stream,
                        &pg,
                        ch,
                        settings,
                        tracker,
                        copies,
                        &feedback,
                        now,
                    )
                    .await?;
                    caught_up |= reply && applier.has_pending_commits();
                    applied += 1;
                    // Now and then the budget and the other branches get their turn.
                    if applied.is_multiple_of(DRAIN_CHECK) && applier.over_budget() {
                        break;
                    }
                    next = stream.try_next();
                }
            }
            let now = Instant::now();
            // Caught up: written at once, but no more often than a tenth of the sync
            // interval, so a trickle of commits does not become an insert per commit.
            let early = caught_up
                && now.saturating_duration_since(last_flush) >= min_flush_gap
                && (applier.has_rows() || applier.has_pending_commits());
            let flush = applier.over_budget()
                || (!applier.in_flight()
                    && (applier.flush_due(now)
                        || early
                        || (!applier.has_rows() && applier.has_pending_commits())));
            if flush {
                caught_up = false;
                last_flush = now;
                // A flush waits out a ClickHouse outage; a shutdown does not wait for it.
                let started = tokio::select! {
                    r = applier.start_flush(&pg, ch, dest) => Some(r),
                    _ = shutdown.as_mut() => None,
                };
                let Some(started) = started else {
                    break SessionEnd::Abandoned;
                };
                started?;
                let safe = applier.ledger.safe_lsn();
                feedback.confirm_now(safe);
                metrics.acknowledged(safe);
            }
        })
    }
    .await;
    let end = match outcome {
        Ok(end) => end,
        Err(e) => {
            // Whatever is durable is acknowledged before stopping: a restart (after the
            // fix, e.g. a resync) resumes after it, not before it.
            let safe = applier.ledger.safe_lsn();
            feedback.confirm_now(safe);
            metrics.acknowledged(safe);
            stream.shutdown().await;
            return Err(e);
        }
    };
    // Write what is pending, acknowledge it, say goodbye to the walsender.
    if matches!(end, SessionEnd::Shutdown | SessionEnd::Abandoned) {
        health::set_phase(Phase::Stopping);
    }
    if matches!(end, SessionEnd::Abandoned) {
        let safe = applier.ledger.safe_lsn();
        feedback.confirm_now(safe);
        stream.shutdown().await;
        tracing::info!(confirmed = %safe, "stopped while ClickHouse was unavailable; the slot keeps what was not written");
        return Ok(SessionEnd::Shutdown);
    }
    let safe = match applier.flush(&pg, ch, dest).await {
        Ok(safe) => safe,
        // Stopping anyway: what was not written is sent again from the slot next time.
        Err(e) if matches!(end, SessionEnd::Shutdown) => {
            tracing::warn!(error = %e, "the last flush before stopping failed; the slot keeps those changes");
            let safe = applier.ledger.safe_lsn();
            feedback.confirm_now(safe);
            stream.shutdown().await;
            return Ok(SessionEnd::Shutdown);
        }
        Err(e) => return Err(e.into()),
    };
    feedback.confirm_now(safe);
    metrics.acknowledged(safe);
    stream.shutdown().await;
    if matches!(end, SessionEnd::Shutdown) {
        tracing::info!(confirmed = %safe, "stopped after flushing and acknowledging");
    }
    Ok(end)
}

/// Events applied between two looks at the memory budget while draining a handover.
const DRAIN_CHECK: usize = 4096;

/// Applies one stream event; returns whether it was a keepalive (the walsender had
/// nothing more to send when it wrote it).
#[allow(clippy::too_many_arguments)]
async fn handle_event(
    event: StreamEvent,
    applier: &mut Applier,
    in_stream: &mut bool,
    pg: &tokio_postgres::Client,
    ch: &clickhouse::Client,
    settings: &Settings,
    tracker: &mut Tracker,
    copies: &mut Copies,
    feedback: &crate::source::stream::Feedback,
    now: Instant,
) -> Result<bool, RunError> {
    match event {
        StreamEvent::XLogData { start, payload, .. } => {
            let ctx = DecodeContext {
                in_stream: *in_stream,
            };
            let msg = pgoutput::decode(&payload, ctx)
                .map_err(|source| RunError::Decode { lsn: start, source })?;
            if let Message::Relation(r) = &msg {
                if !applier.knows(r) {
                    // A table that joined and was written before the poll saw it, or a
                    // leaf whose changes come under its own name.
                    tracker.poll(pg, settings, applier, copies).await?;
                    if !applier.knows(r) {
                        if let Some(root) = membership::partition_root(pg, r.id).await? {
                            applier.alias_leaf(r, root);
                        }
                    }
                }
            }
            apply_message(applier, msg, start, in_stream, pg, ch, settings, now).await?;
            Ok(false)
        }
        StreamEvent::Keepalive { wal_end, .. } => {
            if !applier.has_rows() && !applier.has_pending_commits() && !applier.in_flight() {
                applier.ledger.keepalive(wal_end);
                let safe = applier.ledger.safe_lsn();
                feedback.confirm(safe);
                let metrics = crate::metrics::global();
                metrics.acknowledged(safe);
                if !applier.ledger.in_transaction() {
                    metrics.caught_up();
                }
            }
            Ok(true)
        }
    }
}

/// Applies one decoded message to the batches and the ledger.
#[allow(clippy::too_many_arguments)]
async fn apply_message(
    applier: &mut Applier,
    msg: Message,
    start: crate::lsn::Lsn,
    in_stream: &mut bool,
    pg: &tokio_postgres::Client,
    ch: &clickhouse::Client,
    settings: &Settings,
    now: Instant,
) -> Result<(), RunError> {
    let dest = &settings.destination;
    let slot = &settings.source.slot;
    match msg {
        Message::Begin(b) => applier.begin(
            b.xid,
            b.final_lsn,
            b.commit_timestamp.to_unix_micros().unwrap_or(i64::MAX),
        ),
        // Already in the table's resync copy (see Applier::in_copy).
        Message::Insert(crate::source::pgoutput::Insert { relation_id, .. })
        | Message::Update(crate::source::pgoutput::Update { relation_id, .. })
        | Message::Delete(crate::source::pgoutput::Delete { relation_id, .. })
            if applier.in_copy(relation_id) => {}
        Message::Commit(c) => {
            crate::metrics::global().received_commit(c.commit_timestamp.0);
            applier.commit(c.end_lsn, c.commit_timestamp.0);
        }
        Message::Relation(r) => applier.relation(&r, pg, ch, dest).await?,
        Message::Insert(i) => {
            let (batch, plan) = applier.batch(i.relation_id, Change::Insert)?;
            batch
                .insert(start, i.new, now)
                .map_err(|source| ApplyError::Image {
                    table: plan.source.display(),
                    source,
                })?;
        }
        Message::Update(u) => {
            if u.new
                .columns
                .iter()
                .any(|c| matches!(c, pgoutput::ColumnValue::UnchangedToast))
            {
                applier.unchanged_toast();
            }
            let (batch, plan) = applier.batch(u.relation_id, Change::Update)?;
            batch
                .update(start, u.old, u.new, now)
                .map_err(|source| ApplyError::Image {
                    table: plan.source.display(),
                    source,
                })?;
        }
        Message::Delete(d) => {
            let (batch, plan) = applier.batch(d.relation_id, Change::Delete)?;
            batch
                .delete(start, d.old, now)
                .map_err(|source| ApplyError::Image {
                    table: plan.source.display(),
                    source,
                })?;
        }
        Message::Truncate(t) if settings.pipeline.truncate == TruncateMode::Ignore => {
            tracing::info!(
                relations = t.relation_ids.len(),
                "TRUNCATE ignored (pipeline.truncate = \"ignore\"): the ClickHouse rows stay"
            );
        }
        Message::Truncate(t) => {
            // Rows of other tables before the TRUNCATE must land first.
            applier.flush(pg, ch, dest).await?;
            for id in &t.relation_ids {
                if applier.in_copy(*id) {
                    continue;
                }
                if let Some(lane) = applier.lane_of(*id) {
                    applier.truncate(lane, ch, dest, slot).await?;
                }
            }
        }
        Message::StreamStart(_) => *in_stream = true,
        Message::StreamStop => *in_stream = false,
        _ => {}
    }
    Ok(())
}
