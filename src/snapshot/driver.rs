//! The copy driver: queues the partitions not yet done, runs them on the workers, and
//! copies again a table rewritten during its copy (DESIGN.md rule 3).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::control::{CopyControl, TableGate};
use super::copy::{self, BlockRange, CopyError};
use super::held::HeldSnapshot;
use super::partitions::{auto_partition_blocks, partition};
use super::plan::TablePlan;
use super::{Prepared, SnapshotError, SnapshotOptions, SnapshotReport, TableProgress};
use crate::config::Settings;
use crate::sink::client as ch_client;
use crate::sink::preflight::escape_string;
use crate::sink::rowbinary::ClampCounts;
use crate::sink::state::{keys, StateStore};
use crate::source::connect;
use crate::source::row::column;

/// One partition of one table, waiting for a worker.
struct Job {
    plan: Arc<TablePlan>,
    range: Option<BlockRange>,
    /// `<filenode>:<block range>`, the partition's key in `_pgch_state`.
    label: String,
    progress: Arc<TableProgress>,
}

/// How many times a table rewritten during its copy is copied again before giving up.
const MAX_RECOPY_ROUNDS: u32 = 5;

/// Copies the partitions of the prepared tables that are not done yet; a table whose
/// gate is cancelled (TRUNCATE) is left to the stream.
pub async fn copy_all(
    settings: &Settings,
    opts: &SnapshotOptions,
    prepared: &Prepared,
    control: &CopyControl,
) -> Result<SnapshotReport, SnapshotError> {
    let pg = connect::connect(&settings.source.endpoint).await?;
    let version = prepared.server_version;
    let state = StateStore::open(&settings.destination, &settings.source.slot).await?;
    let done = state.load().await?;
    let plans = prepared.plans.clone();
    // The tables' gates as of now: a TRUNCATE after this point cancels their copies.
    let start_gates: BTreeMap<String, TableGate> = plans
        .iter()
        .map(|p| (p.dest.clone(), control.gate(&p.dest)))
        .collect();
    let mut report = SnapshotReport::default();
    let mut jobs = Vec::new();
    let mut planned = Vec::new();
    for plan in plans {
        let progress = Arc::new(TableProgress::default());
        // A partition attached later is copied even into a table whose own copy is
        // complete (a TRUNCATE or a resync marked it so).
        if done.contains_key(&keys::snapshot_complete(&plan.dest)) && !plan.source.is_partition {
            report.tables_already_copied += 1;
            report.tables.insert(plan.dest.clone(), progress);
            continue;
        }
        let filenode = plan_jobs(
            &pg,
            &plan,
            &progress,
            opts,
            version,
            &done,
            &mut report,
            &mut jobs,
        )
        .await?;
        report.tables.insert(plan.dest.clone(), progress.clone());
        planned.push((plan, progress, filenode));
    }
    report.partitions_copied = jobs.len() as u64;
    report.clamps = run_jobs(settings, opts, jobs, &state, control).await?;

    // A rewrite (VACUUM FULL, CLUSTER, pg_repack, a safe widening) during the copy moves
    // rows between blocks: block ranges planned before it can miss or repeat rows. Its
    // values are unchanged and of this slot's era, so the table is copied again in place
    // under its new filenode (DESIGN.md rule 3).
    for round in 1..=MAX_RECOPY_ROUNDS {
        let mut again = Vec::new();
        for (plan, progress, filenode) in &mut planned {
            if start_gates
                .get(&plan.dest)
                .is_some_and(|g| g.is_cancelled())
            {
                continue;
            }
            let (_, _, now) = table_size(&pg, plan.source.oid).await?;
            // One snapshot saw a multiset's table whole: a later rewrite moved nothing in it.
            if now == *filenode || plan.is_multiset() {
                continue;
            }
            tracing::warn!(
                table = %plan.source.display(),
                round,
                "table was rewritten during its copy; copying it again"
            );
            let done = state.load().await?;
            progress.partitions_done.store(0, Ordering::Relaxed);
            *filenode = plan_jobs(
                &pg,
                plan,
                progress,
                opts,
                version,
                &done,
                &mut report,
                &mut again,
            )
            .await?;
            report.tables_recopied += 1;
        }
        if again.is_empty() {
            break;
        }
        report.partitions_copied += again.len() as u64;
        let clamps = run_jobs(settings, opts, again, &state, control).await?;
        report.clamps.merge(&clamps);
    }
    // Said once a table is copied whole, so that neither a restart nor `pgch status`
    // plans its partitions again from a size that has grown since.
    let complete: Vec<(String, String)> = planned
        .iter()
        .filter(|(plan, progress, _)| {
            !plan.source.is_partition
                && !start_gates
                    .get(&plan.dest)
                    .is_some_and(|g| g.is_cancelled())
                && progress.partitions_done.load(Ordering::Relaxed)
                    >= progress.partitions_total.load(Ordering::Relaxed)
        })
        .map(|(plan, _, _)| (keys::snapshot_complete(&plan.dest), "copied".to_string()))
        .collect();
    state.put_many(&complete).await?;
    Ok(report)
}

/// Queues the partitions of `plan` not yet done under its current filenode; returns it.
#[allow(clippy::too_many_arguments)]
async fn plan_jobs(
    pg: &tokio_postgres::Client,
    plan: &Arc<TablePlan>,
    progress: &Arc<TableProgress>,
    opts: &SnapshotOptions,
    version: u32,
    done: &BTreeMap<String, String>,
    report: &mut SnapshotReport,
    jobs: &mut Vec<Job>,
) -> Result<u32, SnapshotError> {
    let (blocks, estimate, filenode) = table_size(pg, plan.source.oid).await?;
    progress.rows_estimated.store(estimate, Ordering::Relaxed);
    crate::metrics::global().snapshot_progress(
        &plan.dest,
        progress.rows_copied.load(Ordering::Relaxed),
        estimate,
    );
    let per_partition = opts
        .partition_blocks
        .unwrap_or_else(|| auto_partition_blocks(blocks, opts.workers));
    // A multiset's copy is one snapshot read once: the stream skips what it saw.
    let ranges = if plan.is_multiset() {
        vec![None]
    } else {
        partition(blocks, per_partition, version)
    };
    progress
        .partitions_total
        .store(ranges.len() as u64, Ordering::Relaxed);
    tracing::info!(
        table = %plan.source.display(),
        destination = %plan.dest,
        estimated_rows = estimate,
        partitions = ranges.len(),
        filenode,
        "snapshot of table started"
    );
    for range in ranges {
        // Done-marks carry the filenode: after a rewrite none of them match.
        let label = format!("{filenode}:{}", copy::partition_label(range));
        if done.contains_key(&keys::copy_done(&plan.dest, &label)) {
            progress.partitions_done.fetch_add(1, Ordering::Relaxed);
            report.partitions_skipped += 1;
            continue;
        }
        jobs.push(Job {
            plan: plan.clone(),
            range,
            label,
            progress: progress.clone(),
        });
    }
    Ok(filenode)
}

/// Blocks, estimated rows and the filenode (which a rewrite changes) of a table.
async fn table_size(
    pg: &tokio_postgres::Client,
    oid: u32,
) -> Result<(u64, u64, u32), SnapshotError> {
    let row = pg
        .query_one(
            "SELECT (pg_relation_size($1::oid) / current_setting('block_size')::int)::int8, \
                    greatest(c.reltuples, 0)::int8, coalesce(pg_relation_filenode($1::oid), 0)::oid \
               FROM pg_catalog.pg_class c WHERE c.oid = $1::oid",
            &[&oid],
        )
        .await
        .map_err(SnapshotError::Catalog)?;
    const WHAT: &str = "reading a table's size (pg_class)";
    Ok((
        column::<i64>(&row, 0, WHAT)?.max(0) as u64,
        column::<i64>(&row, 1, WHAT)?.max(0) as u64,
        column::<u32>(&row, 2, WHAT)?,
    ))
}

async fn run_jobs(
    settings: &Settings,
    opts: &SnapshotOptions,
    jobs: Vec<Job>,
    state: &StateStore<'_>,
    control: &CopyControl,
) -> Result<ClampCounts, SnapshotError> {
    let workers = Arc::new(Semaphore::new(opts.workers.max(1)));
    let clamps = Arc::new(Mutex::new(ClampCounts::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        let permit = workers.clone();
        let settings = settings.clone();
        let min_xmin = opts.min_xmin;
        let clamps = clamps.clone();
        let gate = control.gate(&job.plan.dest);
        let held = opts.held.get(&job.plan.dest).cloned();
        tasks.spawn(async move {
            let _permit = permit.acquire_owned().await;
            let result = copy_job(&settings, &job, min_xmin, held, &clamps, &gate).await;
            (job, result)
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (job, result) = match joined {
            Ok(done) => done,
            Err(e) if e.is_cancelled() => continue,
            Err(e) => {
                first_error.get_or_insert(SnapshotError::Worker(e.to_string()));
                tasks.abort_all();
                continue;
            }
        };
        match result {
            Ok(false) => {
                // Cancelled by a TRUNCATE: the stream carries the table from here.
                if let Some(held) = opts.held.get(&job.plan.dest) {
                    held.release();
                }
                tracing::info!(table = %job.plan.source.display(), partition = %job.label, "copy cancelled by a TRUNCATE; the stream carries the table from here");
            }
            Ok(true) => {
                state
                    .put(&keys::copy_done(&job.plan.dest, &job.label), "done")
                    .await?;
                if job.plan.is_multiset() {
                    state
                        .put(&keys::snapshot_complete(&job.plan.dest), "copied")
                        .await?;
                    if let Some(held) = opts.held.get(&job.plan.dest) {
                        held.release();
                    }
                }
                let done = job.progress.partitions_done.fetch_add(1, Ordering::Relaxed) + 1;
                if done == job.progress.partitions_total.load(Ordering::Relaxed) {
                    tracing::info!(
                        table = %job.plan.source.display(),
                        rows = job.progress.rows_copied.load(Ordering::Relaxed),
                        "snapshot of table finished"
                    );
                }
            }
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                    tasks.abort_all();
                }
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let clamps = clamps.lock().map(|c| *c).unwrap_or_default();
    Ok(clamps)
}

async fn copy_job(
    settings: &Settings,
    job: &Job,
    min_xmin: Option<u64>,
    held: Option<Arc<HeldSnapshot>>,
    clamps: &Mutex<ClampCounts>,
    gate: &TableGate,
) -> Result<bool, SnapshotError> {
    if gate.is_cancelled() {
        return Ok(false);
    }
    let table = job.plan.source.display();
    let held = match held {
        Some(held) if !held.is_held() => return Err(SnapshotError::HeldSnapshotLost(table)),
        Some(held) => Some(held),
        // No stream follows (`pgch snapshot`): any one snapshot is exact.
        None if job.plan.is_multiset() && min_xmin.is_none() => Some(Arc::new(
            HeldSnapshot::take(&settings.source.endpoint, None).await?,
        )),
        None if job.plan.is_multiset() => {
            return Err(SnapshotError::State(format!(
                "the copy of keyless table {table} has no snapshot agreed with the stream"
            )))
        }
        None => None,
    };
    let mut pg = connect::connect(&settings.source.endpoint).await?;
    let started = Instant::now();
    let tx = loop {
        let tx = pg
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(SnapshotError::Catalog)?;
        if let Some(held) = &held {
            let import = format!("SET TRANSACTION SNAPSHOT '{}'", escape_string(&held.id));
            if let Err(e) = tx.batch_execute(&import).await {
                tracing::warn!(table = %table, error = %e, "cannot import the copy's held snapshot");
                return Err(SnapshotError::HeldSnapshotLost(table));
            }
            break tx;
        }
        let Some(min) = min_xmin else { break tx };
        let row = tx
            .query_one(
                "SELECT txid_snapshot_xmin(txid_current_snapshot())::int8",
                &[],
            )
            .await
            .map_err(SnapshotError::Catalog)?;
        let xmin: i64 = column(&row, 0, "reading the copy snapshot's xmin")?;
        if xmin as u64 >= min {
            break tx;
        }
        // An older transaction is still running: this snapshot might miss changes the
        // stream will not carry. Wait for it to end.
        tx.rollback().await.map_err(SnapshotError::Catalog)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Tests hold the copy here: its snapshot is taken, no row read yet.
    crate::failpoint::hold(crate::failpoint::BEFORE_COPY).await;
    let ch = ch_client::client(&settings.destination, false);
    let query_id = format!(
        "{}{}-{}",
        crate::sink::inflight::copy_query_prefix(&job.plan.dest),
        copy::partition_label(job.range),
        std::process::id()
    );
    let mut local = ClampCounts::default();
    // Inside the gate from before the insert starts until it is over (rule 8).
    let Some(_pass) = gate.enter().await else {
        return Ok(false);
    };
    let stats = match copy::copy_partition(
        &tx,
        &ch,
        &settings.destination,
        copy::CopyTask {
            plan: &job.plan,
            range: job.range,
            query_id,
            gate: Some(gate),
        },
        &mut local,
    )
    .await
    {
        Ok(stats) => stats,
        Err(CopyError::Cancelled(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    tx.commit().await.map_err(SnapshotError::Catalog)?;
    if let Ok(mut c) = clamps.lock() {
        c.merge(&local);
    }
    if local.total() > 0 {
        crate::metrics::global().clamped(&job.plan.dest, &local);
    }
    let copied = job
        .progress
        .rows_copied
        .fetch_add(stats.rows, Ordering::Relaxed)
        + stats.rows;
    let metrics = crate::metrics::global();
    metrics.rows(&job.plan.dest, crate::metrics::Op::Snapshot, stats.rows);
    metrics.insert_done(&job.plan.dest, stats.rows, stats.bytes, started.elapsed());
    metrics.snapshot_progress(
        &job.plan.dest,
        copied,
        job.progress.rows_estimated.load(Ordering::Relaxed),
    );
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    tracing::info!(
        table = %job.plan.source.display(),
        partition = %copy::partition_label(job.range),
        rows = stats.rows,
        rows_per_sec = %format!("{:.0}", stats.rows as f64 / secs),
        "partition copied"
    );
    Ok(true)
}
