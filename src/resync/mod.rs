//! `pgch resync [--table T]…`: the fix every "resync required" error names. Runs while
//! `pgch run` is stopped.
//!
//! ```text
//!   record scope (`resync` in _pgch_state)          ── `pgch run` refuses from here …
//!   no --table: drop the old slot, create a new one, record its identity (as a first
//!               start does), forget copy/… and complete/… marks
//!   per table:  DROP leftover shadow ─► CREATE shadow like dest ─► copy (xmin >= slot xmax)
//!               ─► EXCHANGE TABLES dest AND shadow ─► DROP shadow (the old rows)
//!               ─► complete/<dest>
//!   forget the scope                                ── … to here
//! ```
//!
//! Why the result is what a first start would have made (DESIGN.md rule 3): each table
//! after the exchange holds only rows copied with `_version = 0` in a snapshot whose
//! xmin is at least the xmax recorded when the slot was made, so it sees every
//! transaction the slot will not stream; everything after it arrives from the slot's
//! confirmed position with a higher version. No old row survives the exchange, so rows
//! deleted while the slot was lost cannot come back. With `--table` the slot is kept:
//! its confirmed position is older than the new copy, so the stream replays what the
//! copy already holds, and replays converge (rule 2).
//!
//! Interrupted (crash, SIGKILL, a ClickHouse outage), a rerun finishes it: the recorded
//! scope is never narrowed, a slot the run already made and recorded is kept, tables
//! already exchanged are skipped, and a table in progress is copied again from scratch.

pub mod live;
pub mod scope;
pub mod shadow;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::membership;
use crate::sink::client::{self as ch_client, SinkError};
use crate::sink::ddl;
use crate::sink::state::{keys, StateStore};
use crate::slot::{verify_recorded, SlotError, SlotIdentity, SourceSession};
use crate::snapshot::control::CopyControl;
use crate::snapshot::held::HeldSnapshot;
use crate::snapshot::plan::TablePlan;
use crate::snapshot::{self, Prepared, SnapshotError, SnapshotOptions};
use crate::source::connect::{self, ConnectError};
pub use scope::Scope;
use scope::ScopeError;
use shadow::Swap;

/// Why a resync stopped; rerunning `pgch resync` resumes it.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("`--table` keeps the slot, but it cannot be kept: {0}. Run `pgch resync` without --table to copy every table from a new slot")]
    SlotUnusable(String),
    #[error("nothing to resync: pgch has not run with slot \"{0}\" on this destination yet (no identity in _pgch_state); `pgch run` makes the slot and copies every table")]
    NeverStarted(String),
}

/// What a resync did.
#[derive(Debug, Default)]
pub struct ResyncReport {
    /// Tables copied and swapped in by this run.
    pub tables: Vec<TableOutcome>,
    /// Tables an interrupted earlier run had already finished.
    pub already_done: usize,
    /// The new slot's identity, when this run made one.
    pub new_slot: Option<SlotIdentity>,
}

/// One table's resync.
#[derive(Debug)]
pub struct TableOutcome {
    pub source: String,
    pub dest: String,
    pub rows: u64,
    pub elapsed: Duration,
    pub swap: Swap,
}

/// Attempts at copying one table before a transient failure is given up on.
const COPY_ATTEMPTS: u32 = 5;
/// Longest wait between copy attempts.
const COPY_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Resyncs every published table from a new slot (`tables` empty) or just `tables`.
pub async fn run(settings: &Settings, tables: &[String]) -> Result<ResyncReport, ResyncError> {
    let dest = &settings.destination;
    let slot = &settings.source.slot;
    let ch = ch_client::client(dest, false);
    ch_client::execute(
        &ch,
        dest,
        &ddl::create_database_sql(&dest.database, dest.cluster.as_deref()),
    )
    .await?;
    let state = StateStore::open(dest, slot).await?;
    let recorded = state.load().await?;
    let previous = match recorded.get(keys::RESYNC) {
        Some(text) => Some(Scope::from_record(text)?),
        None => None,
    };
    if let Some(previous) = &previous {
        tracing::warn!(unfinished = %previous.to_record(), "an interrupted resync is continued");
    }
    let scope = Scope::merge(previous.clone(), Scope::requested(tables));

    // Everything that can refuse is checked before anything is changed.
    let mut opts = SnapshotOptions::for_destination(settings).await?;
    let pg = connect::connect(&settings.source.endpoint).await?;
    let (plans, server_version) = snapshot::plan_all(&pg, settings, &opts).await?;
    drop(pg);
    let chosen: Vec<TablePlan> = scope
        .select(&plans, &settings.source.publication)?
        .into_iter()
        .cloned()
        .collect();
    for plan in &chosen {
        let owned = recorded.contains_key(&keys::table_owned(&plan.dest));
        if !owned && shadow::exists(&ch, dest, &plan.dest).await? {
            return Err(SnapshotError::ForeignTable {
                database: dest.database.clone(),
                table: plan.dest.clone(),
                slot: slot.clone(),
            }
            .into());
        }
    }
    let session = if settings.mode.streams() {
        Some(check_slot(settings, &recorded, &scope).await?)
    } else {
        None
    };

    if previous.is_none() {
        // Marks a finished earlier resync might have left behind mean nothing now.
        state
            .forget(&state.keys_with_prefix("resync/").await?)
            .await?;
    }
    state.put(keys::RESYNC, &scope.to_record()).await?;
    tracing::info!(scope = %scope.to_record(), tables = chosen.len(), "resync started");

    let mut report = ResyncReport::default();
    if let Some((session, identity)) = session {
        let identity = match identity {
            Some(kept) => kept,
            None => {
                let made = renew_slot(settings, &state, session).await?;
                report.new_slot = Some(made.clone());
                made
            }
        };
        opts.min_xmin = Some(identity.snapshot_xmax);
    }

    let done = state.load().await?;
    let total = chosen.len();
    for (i, plan) in chosen.iter().enumerate() {
        if done.contains_key(&keys::resync_done(&plan.dest)) {
            tracing::info!(table = %plan.source.display(), "already resynced by the interrupted run");
            report.already_done += 1;
            continue;
        }
        tracing::info!(
            table = %plan.source.display(),
            destination = %plan.dest,
            position = %format!("{}/{total}", i + 1),
            "resync of table started"
        );
        let outcome = resync_table(settings, &state, &opts, plan, server_version).await?;
        let secs = outcome.elapsed.as_secs_f64().max(1e-6);
        tracing::info!(
            table = %outcome.source,
            destination = %outcome.dest,
            rows = outcome.rows,
            seconds = %format!("{secs:.1}"),
            rows_per_sec = %format!("{:.0}", outcome.rows as f64 / secs),
            swap = outcome.swap.as_str(),
            "resync of table finished"
        );
        report.tables.push(outcome);
    }

    // Last: from here on `pgch run` starts again.
    state
        .forget(&state.keys_with_prefix("resync/").await?)
        .await?;
    state.forget(&[keys::RESYNC.to_string()]).await?;
    Ok(report)
}

/// How long `pgch resync` waits for a walsender to let go of the slot: right after
/// `pgch run` exits, its walsender takes a moment to notice and exit.
pub const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(15);

/// The slot's row once no process streams from it, or as it is after
/// [`SLOT_RELEASE_WAIT`] (still active: the caller refuses).
async fn slot_row_once_free(
    session: &mut SourceSession,
    slot: &str,
) -> Result<Option<crate::slot::SlotRow>, SlotError> {
    let deadline = Instant::now() + SLOT_RELEASE_WAIT;
    let mut told = false;
    loop {
        let row = session.slot_row(slot).await?;
        let Some(pid) = row.as_ref().and_then(|r| r.active_pid) else {
            return Ok(row);
        };
        if Instant::now() >= deadline {
            return Ok(row);
        }
        if !told {
            tracing::info!(slot = %slot, pid, wait_s = SLOT_RELEASE_WAIT.as_secs(), "the slot is in use; waiting for its walsender to exit (a pgch run that just stopped)");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Checks the slot before anything changes. Returns the session and, when the slot is
/// kept, its identity; `None` means a full resync must make a new slot.
async fn check_slot(
    settings: &Settings,
    recorded: &std::collections::BTreeMap<String, String>,
    scope: &Scope,
) -> Result<(SourceSession, Option<SlotIdentity>), ResyncError> {
    let slot = &settings.source.slot;
    if !recorded.contains_key(keys::SYSTEM_IDENTIFIER) {
        return Err(ResyncError::NeverStarted(slot.clone()));
    }
    let mut session = SourceSession::open(settings).await?;
    let row = slot_row_once_free(&mut session, slot).await?;
    if let Some(pid) = row.as_ref().and_then(|r| r.active_pid) {
        return Err(SlotError::InUse {
            slot: slot.clone(),
            pid,
        }
        .into());
    }
    let usable = verify_recorded(recorded, &session.system.system_id, slot, row.as_ref());
    let identity = match (scope, usable) {
        (Scope::Tables(_), Ok(identity)) => Some(identity),
        (Scope::Tables(_), Err(SlotError::ResyncRequired(why))) => {
            return Err(ResyncError::SlotUnusable(why))
        }
        (Scope::Tables(_), Err(e)) => return Err(e.into()),
        // A full resync keeps only the slot an interrupted run of it made and recorded.
        (Scope::All, Ok(identity))
            if recorded.get(keys::RESYNC_SLOT) == Some(&identity.consistent_point.to_string()) =>
        {
            tracing::info!(slot = %slot, consistent_point = %identity.consistent_point, "keeping the slot the interrupted resync made");
            Some(identity)
        }
        (Scope::All, _) => None,
    };
    Ok((session, identity))
}

/// Replaces the slot: drops the old one if it is still there (invalidated, or from
/// before a failover), creates and records a new one exactly as a first start does, and
/// forgets every copy mark made for the old slot.
async fn renew_slot(
    settings: &Settings,
    state: &StateStore<'_>,
    mut session: SourceSession,
) -> Result<SlotIdentity, ResyncError> {
    let slot = &settings.source.slot;
    // Tables an earlier attempt exchanged were copied for a slot that is about to go.
    state
        .forget(&state.keys_with_prefix("resync/").await?)
        .await?;
    if let Some(row) = session.slot_row(slot).await? {
        tracing::warn!(slot = %slot, wal_status = ?row.wal_status, "dropping the old replication slot");
        session.drop_slot(slot).await?;
    }
    let identity = session.create_and_record(slot, state).await?;
    let loaded = state.load().await?;
    let stale: Vec<String> = loaded
        .into_keys()
        // `copied/…` positions belong to the old slot's (maybe the old system's) WAL.
        .filter(|k| {
            k.starts_with("copy/") || k.starts_with("complete/") || k.starts_with("copied/")
        })
        .collect();
    tracing::info!(
        marks = stale.len(),
        "forgetting the copy progress made for the old slot"
    );
    state.forget(&stale).await?;
    state
        .put(keys::RESYNC_SLOT, &identity.consistent_point.to_string())
        .await?;
    Ok(identity)
}

/// Copies one table into its shadow and swaps it in.
async fn resync_table(
    settings: &Settings,
    state: &StateStore<'_>,
    opts: &SnapshotOptions,
    plan: &TablePlan,
    server_version: u32,
) -> Result<TableOutcome, ResyncError> {
    let started = Instant::now();
    let dest = &settings.destination;
    let ch = ch_client::client(dest, false);
    let shadow_name = shadow::shadow_name(&plan.dest);
    shadow::recover_parked(&ch, dest, &plan.dest).await?;
    // A leftover shadow is from an interrupted run: start it over.
    shadow::drop(&ch, dest, &shadow_name).await?;
    let mut stale = state
        .keys_with_prefix(&keys::copy_prefix(&shadow_name))
        .await?;
    stale.extend(
        state
            .keys_with_prefix(&keys::copy_prefix(&plan.dest))
            .await?,
    );
    stale.push(keys::snapshot_complete(&shadow_name));
    stale.push(keys::snapshot_complete(&plan.dest));
    state.forget(&stale).await?;

    // What the copy will hold, recorded before it: the partition tree's leaves and how
    // the table is a member of the publication (a later start compares with these).
    let pg = connect::connect(&settings.source.endpoint).await?;
    // Read before the copy's snapshot, which waits for every transaction running now:
    // what committed at or before this position is in the copy and is not replayed over
    // it (the stream may lack its later deletes: the table left, or a leaf was detached).
    let copied_through = membership::current_wal_lsn(&pg).await?;
    let xmax = membership::current_xmax(&pg).await?;
    let mut opts = opts.clone();
    opts.min_xmin = Some(opts.min_xmin.unwrap_or(0).max(xmax));
    // A keyless table's copy: one held snapshot, whose transactions the stream skips.
    let held = if plan.is_multiset() {
        let held = HeldSnapshot::take(&settings.source.endpoint, opts.min_xmin).await?;
        let held = Arc::new(held);
        opts.held.insert(shadow_name.clone(), held.clone());
        Some(held)
    } else {
        None
    };
    let opts = &opts;
    membership::record_tree_now(&pg, state, plan).await?;
    membership::record_membership_now(
        &pg,
        state,
        &settings.source.publication,
        plan,
        server_version,
    )
    .await?;
    drop(pg);

    let shadow_plan = Arc::new(plan.with_dest(&shadow_name));
    ch_client::execute(
        &ch,
        dest,
        &ddl::create_table_sql(&dest.database, &shadow_plan.spec, dest.cluster.as_deref()),
    )
    .await?;
    let prepared = Prepared {
        plans: vec![shadow_plan],
        server_version,
    };
    let rows = copy_with_retries(settings, opts, &prepared, &shadow_name).await?;

    let dest_exists = shadow::exists(&ch, dest, &plan.dest).await?;
    let swap = shadow::swap(&ch, dest, &plan.dest, dest_exists).await?;
    if swap != Swap::Created {
        // The shadow now holds the old rows.
        shadow::drop(&ch, dest, &shadow_name).await?;
    }
    state
        .put(&keys::table_owned(&plan.dest), &plan.source.display())
        .await?;
    live::settle(&ch, dest, state, plan).await?;
    state
        .put(
            &keys::copied_through(&plan.source.display()),
            &copied_through.to_string(),
        )
        .await?;
    match &held {
        Some(held) => {
            let key = keys::copy_visibility(&plan.source.display());
            state.put(&key, &held.seen.to_string()).await?;
        }
        None => {
            let key = keys::copy_visibility(&plan.source.display());
            state.forget(&[key]).await?;
        }
    }
    // The table needs no more copying for this slot: `pgch run` only streams into it.
    state
        .put(&keys::snapshot_complete(&plan.dest), "resync")
        .await?;
    let mut finished = state
        .keys_with_prefix(&keys::copy_prefix(&shadow_name))
        .await?;
    finished.push(keys::snapshot_complete(&shadow_name));
    // A live resync `pgch run` had begun for this table is done by this one.
    finished.push(live::key(&plan.source.display()));
    state.forget(&finished).await?;
    state.put(&keys::resync_done(&plan.dest), "done").await?;
    Ok(TableOutcome {
        source: plan.source.display(),
        dest: plan.dest.clone(),
        rows,
        elapsed: started.elapsed(),
        swap,
    })
}

/// Copies the shadow, resuming per partition after transient failures; returns rows.
async fn copy_with_retries(
    settings: &Settings,
    opts: &SnapshotOptions,
    prepared: &Prepared,
    shadow_name: &str,
) -> Result<u64, ResyncError> {
    let control = CopyControl::default();
    let mut rows = 0;
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=COPY_ATTEMPTS {
        match snapshot::copy_all(settings, opts, prepared, &control).await {
            Ok(report) => {
                rows += report
                    .tables
                    .get(shadow_name)
                    .map(|p| p.rows_copied.load(Ordering::Relaxed))
                    .unwrap_or(0);
                return Ok(rows);
            }
            Err(e) if e.is_transient() && attempt < COPY_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, retry_in_s = backoff.as_secs(), "copy interrupted; resuming");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(COPY_BACKOFF_MAX);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rows)
}
