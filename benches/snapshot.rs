//! End to end: how fast `pgch run` (`snapshot_only`) copies one large table into
//! ClickHouse, next to what Postgres itself can hand out: `COPY … TO STDOUT (FORMAT
//! binary)` into /dev/null, single-stream and in parallel by CTID block ranges.
//!
//! A private Postgres (the test kit's, autovacuum off) gets a 10-column table of
//! 5,000,000 rows (times `PGCH_TEST_SCALE`: bigint key, int, numeric(12,2), 45-character
//! text, timestamptz, bool, small jsonb, uuid, float8, varchar(20)), `VACUUM ANALYZE`d,
//! and a publication for it; the ClickHouse endpoint is the test kit's (pgch's HTTP front
//! over chdb, or `PGCH_TEST_CLICKHOUSE_URL`). Two unmeasured COPYs (binary, then text)
//! warm the page cache and give the stream sizes. Then, interleaved, `RUNS` rounds of:
//!
//! - `copy_bin`: `psql -c "COPY public.t TO STDOUT (FORMAT binary)"` > /dev/null
//! - `copy_text`: the same in text format (what pgch asks Postgres for)
//! - `copy_parN`: N concurrent psql, each `COPY (SELECT * FROM t WHERE ctid >= '(a,0)' AND
//!   ctid < '(b,0)') TO STDOUT (FORMAT binary)` over its quarter (Nth) of the heap;
//!   wall time until all N are done
//! - `pgch_wN`: `pgch run` with `snapshot.workers = N`, a fresh slot name (copy progress
//!   is kept per slot) and a fresh ClickHouse database per run, at pgch's defaults (no
//!   setting but the mode, and the worker count when it is not the default; partitions
//!   sized by pgch from the table's size); timed from process start; afterwards
//!   `SELECT count() FROM db.public_t FINAL` must equal the row count, and the database
//!   is dropped
//!
//! for every N in `PGCH_BENCH_WORKERS` (default `4,2`; the first is pgch's default and
//! the one the RESULT line reports). Reported per run: wall time (spawn to exit),
//! rows/s, the client's user and system CPU and peak RSS (`wait4`), the CPU the
//! Postgres backends spent serving it (the postmaster's reaped-children time), and the
//! ClickHouse front's CPU and peak RSS during the run (its /proc entry; `n/a` for a
//! real server), and "other": the machine's busy CPU time (/proc/stat) not accounted to
//! those, which stays within a few percent of the run's CPU unless something else (a CI
//! job) ran meanwhile. A run where it exceeds 10% of the machine is marked DISTURBED,
//! left out and repeated (up to 3 times). Ends with one line:
//!
//! ```text
//! RESULT snapshot pgch=<rows/s> copy_single=<rows/s> copy_parallel=<rows/s> ratio=<pgch/copy_single> pgch_cpu_s_per_mrow=<s> pgch_peak_rss_mb=<MiB>
//! ```
//!
//! At full scale the bench first waits (polling every 30 s, up to 20 minutes) until the
//! 1-minute load average is below 0.8, so that it does not measure next to a CI run,
//! and again after building the table; `PGCH_BENCH_WAIT_LOAD=0` skips that, `=1` forces it
//! at any scale.
//!
//! ```sh
//! cargo bench --bench snapshot --features testkit                        # full size
//! PGCH_TEST_SCALE=0.02 cargo bench --bench snapshot --features testkit   # quick
//! ```
//!
//! Run without `--bench` (as `cargo test --benches` does) it does nothing.

#[path = "common/mod.rs"]
mod common;
#[path = "snapshot_parts/report.rs"]
mod report;

use common::*;
use report::{print_header, print_row, summarize};

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::{psql_path, PgCluster, PgOptions, SUPERUSER};
use pgch::testkit::{scale, scaled};

/// Runs per kind.
const RUNS: usize = 3;
/// Rows in the table (scaled).
const ROWS: u64 = 5_000_000;
/// Rows per `INSERT … SELECT` while building the table.
const INSERT_CHUNK: u64 = 1_000_000;
const PUBLICATION: &str = "bench_pub";
/// Worker counts when `PGCH_BENCH_WORKERS` is not set; the first is pgch's default.
const DEFAULT_WORKERS: &[usize] = &[4, 2];
/// A run that takes longer than this is killed and the bench fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the front's RSS is sampled (and the timeout checked).
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The machine counts as quiet below this 1-minute load average.
const QUIET_LOAD: f64 = 0.8;
const LOAD_POLL: Duration = Duration::from_secs(30);
const LOAD_WAIT_MAX: Duration = Duration::from_secs(20 * 60);
/// A run is disturbed when CPU time not its own exceeds this share of the machine
/// (wall time × CPUs): something else ran meanwhile. It is repeated (after waiting for
/// quiet when the bench waits for it) up to [`MAX_REPEATS`] times.
const DISTURBED_SHARE: f64 = 0.10;
const MAX_REPEATS: usize = 3;

type BenchResult<T> = Result<T, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Single-stream binary COPY.
    CopyBinary,
    /// Single-stream text COPY.
    CopyText,
    /// N concurrent binary COPYs of CTID block ranges.
    CopyParallel(usize),
    /// `pgch run` with N workers.
    Pgch(usize),
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::CopyBinary => "copy_bin".into(),
            Kind::CopyText => "copy_text".into(),
            Kind::CopyParallel(n) => format!("copy_par{n}"),
            Kind::Pgch(n) => format!("pgch_w{n}"),
        }
    }
}

/// What one run measured.
struct Measured {
    wall: Duration,
    /// Summed over the client processes.
    user: Duration,
    sys: Duration,
    /// The largest of the client processes.
    max_rss_kib: u64,
    /// CPU of the Postgres backends that served the run.
    backend_cpu: Option<Duration>,
    /// CPU of the ClickHouse front during the run.
    front_cpu: Option<Duration>,
    front_peak_rss_kib: Option<u64>,
    /// CPU the whole machine spent meanwhile (/proc/stat), for spotting other work.
    machine_busy: Option<Duration>,
    load_at_start: f64,
}

impl Measured {
    /// Machine CPU not accounted to the run's clients, backends or front: other
    /// processes (a CI job?), Postgres' background processes, the kernel's threads.
    fn other_cpu(&self) -> Option<f64> {
        let busy = self.machine_busy?.as_secs_f64();
        let ours = (self.user
            + self.sys
            + self.backend_cpu.unwrap_or_default()
            + self.front_cpu.unwrap_or_default())
        .as_secs_f64();
        Some(busy - ours)
    }

    /// Whether something else used more than [`DISTURBED_SHARE`] of the machine.
    fn disturbed(&self) -> bool {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        self.other_cpu()
            .is_some_and(|other| other > DISTURBED_SHARE * self.wall.as_secs_f64() * cpus)
    }
}

struct Run {
    round: usize,
    kind: Kind,
    m: Measured,
    /// From pgch's "snapshot complete" line.
    pgch: Option<SnapshotLine>,
}

/// The fields of pgch's final log line.
#[derive(Clone, Copy, Debug, Default)]
struct SnapshotLine {
    rows: u64,
    partitions: u64,
    seconds: f64,
}

/// What the bench needs to reach the servers and the processes it watches.
struct Env<'a> {
    url: String,
    ch: &'a ClickHouse,
    rt: tokio::runtime::Runtime,
    postmaster: Option<i32>,
    front: Option<i32>,
    logs: tempfile::TempDir,
    pgch: PathBuf,
    psql: PathBuf,
    rows: u64,
    blocks: u64,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("snapshot: run it with `cargo bench --bench snapshot --features testkit`");
        return;
    }
    if let Err(e) = run() {
        eprintln!("\nsnapshot FAILED: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    let rows = scaled(ROWS);
    let workers = worker_counts()?;
    let wait_load = match std::env::var("PGCH_BENCH_WAIT_LOAD").ok().as_deref() {
        Some("0") => false,
        Some("1") => true,
        _ => scale() >= 1.0,
    };
    print_machine();
    if wait_load {
        wait_until_quiet("before starting")?;
    }

    let pg = PgCluster::start(PgOptions::default().setting("autovacuum", "off"))?;
    let db = pg.create_database()?;
    let version = pg.sql(&db, "SHOW server_version")?;
    println!(
        "postgres:  {} ({}), port {}",
        version.trim(),
        pg.bin_dir.display(),
        pg.port
    );
    let ch = ClickHouse::from_env_or_start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let ch_version = rt.block_on(ch.query("SELECT version()"))?;
    let front = find_front();
    println!(
        "clickhouse: {} at {}{}",
        ch_version.trim(),
        ch.url,
        front.map_or(String::new(), |pid| format!(
            " (pgch's chdb front, pid {pid})"
        ))
    );

    let began = Instant::now();
    pg.sql(&db, &create_sql())?;
    let mut start = 1;
    while start <= rows {
        let end = (start + INSERT_CHUNK - 1).min(rows);
        pg.sql(&db, &insert_sql(start, end))?;
        start = end + 1;
    }
    pg.sql(
        &db,
        &format!("VACUUM ANALYZE public.t; CREATE PUBLICATION {PUBLICATION} FOR TABLE public.t;"),
    )?;
    pg.sql(&db, "CHECKPOINT")?;
    let built = began.elapsed();
    let counted: u64 = number(&pg.sql(&db, "SELECT count(*) FROM public.t")?)?;
    if counted != rows {
        return Err(format!("the table has {counted} rows, expected {rows}"));
    }
    let blocks: u64 = number(&pg.sql(
        &db,
        "SELECT pg_relation_size('public.t') / current_setting('block_size')::int",
    )?)?;
    let partition_blocks =
        pgch::snapshot::auto_partition_blocks(blocks, pgch::config::DEFAULT_SNAPSHOT_WORKERS);
    println!(
        "table:     public.t, {rows} rows, 10 columns, {blocks} blocks ({:.0} MB heap); \
         built in {:.1} s; scale {}",
        blocks as f64 * 8192.0 / 1e6,
        built.as_secs_f64(),
        scale()
    );

    let env = Env {
        url: pg.superuser_url(&db),
        ch: &ch,
        rt,
        postmaster: postmaster_pid(&pg.data_dir),
        front,
        logs: tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?,
        pgch: PathBuf::from(env!("CARGO_BIN_EXE_pgch")),
        psql: psql_path(),
        rows,
        blocks,
    };
    println!("tools:     {}", env.psql.display());
    println!("           {}", env.pgch.display());
    println!(
        "pgch:      snapshot_only at its defaults: partitions sized by pgch \
         ({partition_blocks} blocks, {} partitions with the default workers), workers {}",
        blocks.div_ceil(partition_blocks),
        workers
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Warm the page cache and measure the two COPY streams (unmeasured otherwise).
    let binary = copy_stream_size(&env, "(FORMAT binary)")?;
    let text = copy_stream_size(&env, "")?;
    println!(
        "streams:   COPY binary {:.1} MB ({:.1} B/row), text {:.1} MB ({:.1} B/row)",
        binary as f64 / 1e6,
        binary as f64 / rows as f64,
        text as f64 / 1e6,
        text as f64 / rows as f64
    );

    if wait_load {
        wait_until_quiet("before measuring")?;
    }
    let mut kinds = vec![Kind::CopyBinary, Kind::CopyText];
    for &w in &workers {
        kinds.push(Kind::CopyParallel(w));
        kinds.push(Kind::Pgch(w));
    }

    println!();
    print_header();
    let mut runs = Vec::new();
    let mut repeated = 0;
    for round in 1..=RUNS {
        for &kind in &kinds {
            let mut attempt = 0;
            let run = loop {
                let run = run_once(&env, round, kind)?;
                print_row(&run, rows);
                if !run.m.disturbed() || attempt == MAX_REPEATS {
                    break run;
                }
                attempt += 1;
                repeated += 1;
                println!("     ^ disturbed (other CPU); not counted, repeating");
                if wait_load {
                    wait_until_quiet("before repeating")?;
                }
            };
            runs.push(run);
        }
    }
    if repeated > 0 {
        println!("({repeated} disturbed runs repeated and left out)");
    }
    summarize(&runs, rows, workers[0]);
    Ok(())
}

fn worker_counts() -> BenchResult<Vec<usize>> {
    let Ok(list) = std::env::var("PGCH_BENCH_WORKERS") else {
        return Ok(DEFAULT_WORKERS.to_vec());
    };
    let counts: Vec<usize> = list
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("PGCH_BENCH_WORKERS={list}: {e}"))?;
    if counts.is_empty() || counts.iter().any(|&n| n == 0 || n > 64) {
        return Err(format!(
            "PGCH_BENCH_WORKERS={list}: give worker counts from 1 to 64"
        ));
    }
    Ok(counts)
}

fn create_sql() -> String {
    "CREATE TABLE public.t (
        id         bigint PRIMARY KEY,
        qty        int NOT NULL,
        price      numeric(12,2) NOT NULL,
        note       text NOT NULL,
        created_at timestamptz NOT NULL,
        active     bool NOT NULL,
        attrs      jsonb NOT NULL,
        ref        uuid NOT NULL,
        score      float8 NOT NULL,
        status     varchar(20) NOT NULL
    );"
    .into()
}

/// Rows `start..=end`; the text is 45 characters, the jsonb two keys.
fn insert_sql(start: u64, end: u64) -> String {
    format!(
        "INSERT INTO public.t
        SELECT g,
               (g * 7919) % 100000,
               ((g * 104729) % 10000000) / 100.0,
               left(md5(g::text) || md5((g + 1)::text), 45),
               timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
               g % 3 = 0,
               jsonb_build_object('k', g % 10, 'tags', jsonb_build_array('a', 'b')),
               md5(g::text)::uuid,
               g * 1.5 + 0.25,
               'status_' || (g % 7)
        FROM generate_series({start}::bigint, {end}::bigint) AS g;"
    )
}

fn number(text: &str) -> BenchResult<u64> {
    text.trim()
        .parse()
        .map_err(|e| format!("not a number: {text:?}: {e}"))
}

/// Bytes of `COPY public.t TO STDOUT {options}`, read through a pipe.
fn copy_stream_size(env: &Env<'_>, options: &str) -> BenchResult<u64> {
    let mut child = psql_copy(env, &format!("COPY public.t TO STDOUT {options}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("psql: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("psql: no stdout")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading psql's output: {e}")),
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "psql COPY failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(total)
}

/// `psql -c <sql>` against the bench database over TCP, as pgch connects.
fn psql_copy(env: &Env<'_>, sql: &str) -> Command {
    let mut cmd = Command::new(&env.psql);
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        &env.url,
        "-c",
        sql,
    ])
    .stdin(Stdio::null());
    cmd
}

fn run_once(env: &Env<'_>, round: usize, kind: Kind) -> BenchResult<Run> {
    let label = format!("r{round}_{}", kind.name());
    let mut commands = Vec::new();
    let mut target = None;
    match kind {
        Kind::CopyBinary => {
            commands.push(psql_copy(env, "COPY public.t TO STDOUT (FORMAT binary)"))
        }
        Kind::CopyText => commands.push(psql_copy(env, "COPY public.t TO STDOUT")),
        Kind::CopyParallel(n) => {
            let per = env.blocks.div_ceil(n as u64).max(1);
            for i in 0..n as u64 {
                let mut cond = format!("ctid >= '({},0)'::tid", i * per);
                // The last range is open, as pgch's is.
                if i + 1 < n as u64 {
                    cond.push_str(&format!(" AND ctid < '({},0)'::tid", (i + 1) * per));
                }
                commands.push(psql_copy(
                    env,
                    &format!(
                        "COPY (SELECT * FROM public.t WHERE {cond}) TO STDOUT (FORMAT binary)"
                    ),
                ));
            }
        }
        Kind::Pgch(n) => {
            let database = format!("bench_{label}");
            let mut cmd = Command::new(&env.pgch);
            cmd.arg("run")
                .env("PGCH__SOURCE__URL", &env.url)
                .env("PGCH__SOURCE__PUBLICATION", PUBLICATION)
                .env("PGCH__SOURCE__SLOT", format!("bench_{label}"))
                .env("PGCH__DESTINATION__URL", &env.ch.url)
                .env("PGCH__DESTINATION__USER", &env.ch.user)
                .env("PGCH__DESTINATION__DATABASE", &database)
                .env("PGCH__PIPELINE__MODE", "snapshot_only")
                .env("PGCH_LOG", "info")
                .env("NO_COLOR", "1")
                .env_remove("PGCH_CONFIG")
                .stdin(Stdio::null());
            // At pgch's defaults (partitions sized by pgch itself); only a worker count
            // other than the default is set.
            cmd.env_remove("PGCH__SNAPSHOT__PARTITION_BLOCKS");
            if n == pgch::config::DEFAULT_SNAPSHOT_WORKERS {
                cmd.env_remove("PGCH__SNAPSHOT__WORKERS");
            } else {
                cmd.env("PGCH__SNAPSHOT__WORKERS", n.to_string());
            }
            if env.ch.password.is_empty() {
                cmd.env_remove("PGCH__DESTINATION__PASSWORD");
            } else {
                cmd.env("PGCH__DESTINATION__PASSWORD", &env.ch.password);
            }
            commands.push(cmd);
            target = Some(database);
        }
    }
    let (m, logs) = measure(env, &label, commands)?;
    let mut pgch = None;
    if let Some(database) = target {
        let log = logs.concat();
        let line = parse_snapshot_line(&log).ok_or_else(|| {
            format!("pgch exited 0 but logged no \"snapshot complete\" line; stderr:\n{log}")
        })?;
        let copied: u64 = number(&env.rt.block_on(env.ch.query(&format!(
            "SELECT count() FROM `{database}`.`public_t` FINAL"
        )))?)?;
        env.rt.block_on(
            env.ch
                .query(&format!("DROP DATABASE IF EXISTS `{database}` SYNC")),
        )?;
        if line.rows != env.rows || copied != env.rows {
            return Err(format!(
                "{label}: pgch reported rows={}, ClickHouse has {copied} rows in \
                 {database}.public_t, the table {}; stderr:\n{log}",
                line.rows, env.rows
            ));
        }
        pgch = Some(line);
    }
    Ok(Run {
        round,
        kind,
        m,
        pgch,
    })
}

/// Runs `commands` concurrently to completion: wall time from the first spawn to the
/// last exit, each child's own rusage via `wait4`, the CPU Postgres' backends and the
/// ClickHouse front spent meanwhile. Returns the children's stderr too.
fn measure(
    env: &Env<'_>,
    label: &str,
    commands: Vec<Command>,
) -> BenchResult<(Measured, Vec<String>)> {
    let load_at_start = load_average().unwrap_or(f64::NAN);
    settle_backends(env);
    let backend_before = env.postmaster.and_then(reaped_children_ticks);
    let front_before = env.front.and_then(process_ticks);
    let busy_before = machine_busy_ticks();
    let mut children = Vec::new();
    let mut stderr_paths = Vec::new();
    let started = Instant::now();
    for (i, mut cmd) in commands.into_iter().enumerate() {
        let path = env.logs.path().join(format!("{label}_{i}.stderr"));
        let stderr = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        cmd.stdout(Stdio::null()).stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .map_err(|e| format!("{label}: cannot start: {e}"))?;
        children.push(child);
        stderr_paths.push(path);
    }
    let pids: Vec<libc::pid_t> = children.iter().map(|c| c.id() as libc::pid_t).collect();
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let front_peak = Arc::new(AtomicU64::new(0));
    let monitor = {
        let done = done.clone();
        let timed_out = timed_out.clone();
        let front_peak = front_peak.clone();
        let pids = pids.clone();
        let front = env.front;
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if let Some(rss) = front.and_then(process_rss_kib) {
                    front_peak.fetch_max(rss, Ordering::Relaxed);
                }
                if started.elapsed() > RUN_TIMEOUT && !done.load(Ordering::Acquire) {
                    timed_out.store(true, Ordering::Release);
                    for &pid in &pids {
                        // SAFETY: kill has no memory preconditions; pid is our child,
                        // unreaped until the main thread's wait4 returns.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    break;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
    };
    // Reap the children ourselves: wait4 gives each one's own rusage (std's wait does not).
    let mut user = Duration::ZERO;
    let mut sys = Duration::ZERO;
    let mut max_rss_kib = 0;
    let mut failures = Vec::new();
    for (i, &pid) in pids.iter().enumerate() {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = loop {
            // SAFETY: both pointers are to live locals of the right types.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            break r;
        };
        if reaped != pid {
            failures.push(format!(
                "wait4 on child {i} failed: {}",
                std::io::Error::last_os_error()
            ));
            continue;
        }
        user += timeval(usage.ru_utime);
        sys += timeval(usage.ru_stime);
        // Linux reports ru_maxrss in KiB.
        max_rss_kib = max_rss_kib.max(u64::try_from(usage.ru_maxrss).unwrap_or(0));
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failures.push(format!("child {i} failed (wait status {status:#x})"));
        }
    }
    let wall = started.elapsed();
    done.store(true, Ordering::Release);
    let _ = monitor.join();
    drop(children); // already reaped; dropping a Child neither waits nor kills
    let busy_after = machine_busy_ticks();
    let front_after = env.front.and_then(process_ticks);
    settle_backends(env);
    let backend_after = env.postmaster.and_then(reaped_children_ticks);
    let logs: Vec<String> = stderr_paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    if timed_out.load(Ordering::Acquire) {
        return Err(format!(
            "{label} did not finish within {} s; killed. stderr:\n{}",
            RUN_TIMEOUT.as_secs(),
            logs.concat()
        ));
    }
    if !failures.is_empty() {
        return Err(format!(
            "{label}: {}; stderr:\n{}",
            failures.join("; "),
            logs.concat()
        ));
    }
    let diff = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => Some(ticks(a.saturating_sub(b))),
        _ => None,
    };
    let peak = front_peak.load(Ordering::Relaxed);
    Ok((
        Measured {
            wall,
            user,
            sys,
            max_rss_kib,
            backend_cpu: diff(backend_before, backend_after),
            front_cpu: diff(front_before, front_after),
            front_peak_rss_kib: (peak > 0).then_some(peak),
            machine_busy: diff(busy_before, busy_after),
            load_at_start,
        },
        logs,
    ))
}

/// Waits (up to 5 s) until every backend has exited and been reaped, so the
/// postmaster's reaped-children CPU includes every backend of the last run. Only the
/// background processes stay: a child whose title is not `postgres: <something>`, or
/// names the bench's user, is a backend, or one on its way out (an exiting process
/// shows an empty command line before it turns zombie).
fn settle_backends(env: &Env<'_>) {
    let Some(postmaster) = env.postmaster else {
        return;
    };
    let backend = format!("postgres: {SUPERUSER} ");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let busy = children_of(postmaster).into_iter().any(|pid| {
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let title = String::from_utf8_lossy(&title);
            !title.starts_with("postgres: ") || title.starts_with(&backend)
        });
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The test kit's ClickHouse front: our child running clickhouse_front.py.
fn find_front() -> Option<i32> {
    let me = i32::try_from(std::process::id()).ok()?;
    children_of(me).into_iter().find(|&pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains("clickhouse_front.py")
    })
}

/// Reads `rows=… partitions_copied=… seconds=…` off pgch's "snapshot complete" line
/// (text or JSON log format).
fn parse_snapshot_line(log: &str) -> Option<SnapshotLine> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("snapshot complete"))?;
    let number = |key: &str| -> Option<f64> {
        let at = line
            .find(&format!(" {key}="))
            .map(|i| i + key.len() + 2)
            .or_else(|| line.find(&format!("\"{key}\":")).map(|i| i + key.len() + 3))?;
        let value: String = line[at..]
            .trim_start_matches(['"', ' '])
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        value.parse().ok()
    };
    Some(SnapshotLine {
        rows: number("rows")? as u64,
        partitions: number("partitions_copied").unwrap_or(0.0) as u64,
        seconds: number("seconds").unwrap_or(0.0),
    })
}

/// Polls the 1-minute load average until it is below [`QUIET_LOAD`]; gives up (and
/// says so) after [`LOAD_WAIT_MAX`].
fn wait_until_quiet(when: &str) -> BenchResult<()> {
    let start = Instant::now();
    loop {
        let load = load_average().ok_or("cannot read /proc/loadavg")?;
        if load < QUIET_LOAD {
            println!(
                "load:      {load:.2} {when} (waited {:.0} s)",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() >= LOAD_WAIT_MAX {
            println!(
                "load:      still {load:.2} {when} after {:.0} s; measuring anyway (figures \
                 may be low)",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        println!("load:      {load:.2} {when}; waiting for < {QUIET_LOAD} ...");
        std::thread::sleep(LOAD_POLL);
    }
}
