//! End to end: how fast `pgch tail --format none` drains a replication slot's backlog,
//! next to `pg_recvlogical` draining the same backlog from an identical slot.
//!
//! A private Postgres (the test kit's) gets a 10-column table and a publication for it,
//! then `2 * RUNS` logical slots, then the backlog: single-row UPDATEs, 1,000 per
//! transaction (1,000,000 in all, times `PGCH_TEST_SCALE`). Each slot is drained once,
//! alternating between the tools, both asking for the same stream (pgoutput
//! `proto_version` 3 with `messages` on Postgres 15, as pgch does) and both stopping at
//! the same `--endpos`. Reported per run: wall time (spawn to exit), changes/s, the
//! client's user and system CPU and peak RSS (from `wait4`), and the CPU the walsender
//! spent serving it (sampled from /proc). Ends with one line:
//!
//! ```text
//! RESULT tail_drain pgch=<median>/s pg_recvlogical=<median>/s ratio=<pgch/pg_recvlogical>
//! ```
//!
//! ```sh
//! cargo bench --bench tail_drain --features testkit                        # full size
//! PGCH_TEST_SCALE=0.05 cargo bench --bench tail_drain --features testkit   # quick
//! ```
//!
//! Run without `--bench` (as `cargo test --benches` does) it does nothing.

#[path = "common/mod.rs"]
mod common;

use common::{median, postmaster_pid, print_machine, timeval};

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgch::testkit::postgres::{PgCluster, PgOptions};
use pgch::testkit::{scale, scaled};

/// Drains per tool.
const RUNS: usize = 3;
/// Rows in the table (scaled).
const ROWS: u64 = 100_000;
/// Single-row UPDATEs in the backlog (scaled).
const UPDATES: u64 = 1_000_000;
/// UPDATEs per transaction.
const PER_TRANSACTION: u64 = 1_000;
const PUBLICATION: &str = "bench_pub";
/// A drain that takes longer than this is killed and the bench fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the walsender's CPU time is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

type BenchResult<T> = Result<T, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    PgRecvlogical,
    Pgch,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::PgRecvlogical => "pg_recvlogical",
            Tool::Pgch => "pgch",
        }
    }
}

/// What one drain measured.
struct Drain {
    tool: Tool,
    slot: String,
    wall: Duration,
    user: Duration,
    sys: Duration,
    max_rss_kib: u64,
    walsender_cpu: Option<Duration>,
    /// From pgch's "tail finished" line.
    pgch: Option<TailLine>,
}

/// The fields of pgch's final log line.
#[derive(Clone, Copy, Debug, Default)]
struct TailLine {
    changes: u64,
    transactions: u64,
    payload_bytes: u64,
    seconds: f64,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("tail_drain: run it with `cargo bench --bench tail_drain --features testkit`");
        return;
    }
    if let Err(e) = run() {
        eprintln!("\ntail_drain FAILED: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    let rows = scaled(ROWS);
    let updates = scaled(UPDATES);
    let transactions = updates.div_ceil(PER_TRANSACTION);
    print_machine();

    let pg = PgCluster::start(PgOptions::default())?;
    let db = pg.create_database()?;
    let version = pg.sql(&db, "SHOW server_version")?;
    println!(
        "postgres:  {} ({}), port {}",
        version.trim(),
        pg.bin_dir.display(),
        pg.port
    );
    pg.sql(&db, &setup_sql(rows))?;
    let slots: Vec<String> = (0..2 * RUNS).map(|i| format!("s_{i}")).collect();
    let create: String = slots
        .iter()
        .map(|s| format!("SELECT pg_create_logical_replication_slot('{s}', 'pgoutput');\n"))
        .collect();
    pg.sql(&db, &create)?;

    let wal_start = pg.sql(&db, "SELECT pg_current_wal_insert_lsn()")?;
    let wal_start = wal_start.trim().to_string();
    let began = Instant::now();
    pg.sql(&db, &backlog_sql(rows, updates))?;
    let built = began.elapsed();
    let endpos = pg.sql(&db, "SELECT pg_current_wal_insert_lsn()")?;
    let endpos = endpos.trim().to_string();
    let wal_bytes: u64 = pg
        .sql(
            &db,
            &format!("SELECT pg_wal_lsn_diff('{endpos}', '{wal_start}')::bigint"),
        )?
        .trim()
        .parse()
        .map_err(|e| format!("pg_wal_lsn_diff: {e}"))?;
    // Leave nothing for the server to do in the background while the tools run.
    pg.sql(&db, "CHECKPOINT")?;
    println!(
        "backlog:   {updates} single-row UPDATEs of a 10-column table ({rows} rows), \
         {PER_TRANSACTION} per transaction ({transactions} transactions); scale {}",
        scale()
    );
    println!(
        "           built in {:.1} s; WAL {wal_start} .. {endpos} = {:.1} MB",
        built.as_secs_f64(),
        wal_bytes as f64 / 1e6
    );

    let recvlogical = pg.bin_dir.join("pg_recvlogical");
    if !recvlogical.exists() {
        return Err(format!("{} is missing", recvlogical.display()));
    }
    let pgch = PathBuf::from(env!("CARGO_BIN_EXE_pgch"));
    println!("tools:     {}", recvlogical.display());
    println!("           {}", pgch.display());
    let postmaster = postmaster_pid(&pg.data_dir);
    let logs = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let url = pg.superuser_url(&db);

    println!();
    println!(
        "{:>3}  {:<14} {:<4} {:>8} {:>11} {:>8} {:>7} {:>6} {:>9} {:>13}",
        "run",
        "tool",
        "slot",
        "seconds",
        "changes/s",
        "user s",
        "sys s",
        "cpu%",
        "peak RSS",
        "walsender cpu"
    );
    let mut drains = Vec::new();
    for run in 0..RUNS {
        for (i, tool) in [Tool::PgRecvlogical, Tool::Pgch].into_iter().enumerate() {
            let slot = &slots[2 * run + i];
            let stderr_path = logs.path().join(format!("{slot}.stderr"));
            let cmd = match tool {
                Tool::PgRecvlogical => recvlogical_command(&recvlogical, &url, slot, &endpos),
                Tool::Pgch => pgch_command(&pgch, &url, slot, &endpos),
            };
            let drain = measure(tool, slot, cmd, &stderr_path, postmaster)?;
            if let Some(line) = drain.pgch {
                if line.changes != updates {
                    return Err(format!(
                        "pgch reported changes={} on slot {slot}, but the backlog has {updates} \
                         UPDATEs (transactions={}, expected {transactions})",
                        line.changes, line.transactions
                    ));
                }
            }
            print_row(run + 1, &drain, updates);
            drains.push(drain);
        }
    }

    let rates = |tool: Tool| -> Vec<f64> {
        drains
            .iter()
            .filter(|d| d.tool == tool)
            .map(|d| updates as f64 / d.wall.as_secs_f64())
            .collect()
    };
    let recv_median = median(rates(Tool::PgRecvlogical));
    let pgch_median = median(rates(Tool::Pgch));
    let ratio = pgch_median / recv_median;
    println!();
    for tool in [Tool::PgRecvlogical, Tool::Pgch] {
        let mine: Vec<&Drain> = drains.iter().filter(|d| d.tool == tool).collect();
        let cpu = median(
            mine.iter()
                .map(|d| (d.user + d.sys).as_secs_f64())
                .collect(),
        );
        let rss = mine.iter().map(|d| d.max_rss_kib).max().unwrap_or(0);
        println!(
            "median {:<14} {:>10.0} changes/s   client CPU {:.2} s (median), peak RSS {:.1} MiB (max)",
            tool.name(),
            if tool == Tool::Pgch {
                pgch_median
            } else {
                recv_median
            },
            cpu,
            rss as f64 / 1024.0
        );
    }
    if let Some(line) = drains.iter().find_map(|d| d.pgch) {
        println!(
            "pgch payload: {:.1} MB of pgoutput messages per drain ({:.0} B per change)",
            line.payload_bytes as f64 / 1e6,
            line.payload_bytes as f64 / updates as f64
        );
        println!(
            "pgch's own timer (after connecting): {:.3} s in the last run",
            drains
                .iter()
                .rev()
                .find_map(|d| d.pgch)
                .map_or(0.0, |l| l.seconds)
        );
    }
    println!("ratio pgch / pg_recvlogical: {ratio:.3}");
    println!(
        "RESULT tail_drain pgch={pgch_median:.0}/s pg_recvlogical={recv_median:.0}/s ratio={ratio:.3}"
    );
    Ok(())
}

/// The table, its rows and the publication (all before the slots exist, so the slots
/// see only the backlog).
fn setup_sql(rows: u64) -> String {
    format!(
        "CREATE TABLE public.orders (
            id         bigint PRIMARY KEY,
            qty        int NOT NULL,
            price      numeric(12,2) NOT NULL,
            note       text NOT NULL,
            updated_at timestamptz NOT NULL,
            active     bool NOT NULL,
            attrs      jsonb NOT NULL,
            ref        uuid NOT NULL,
            score      float8 NOT NULL,
            status     varchar(32) NOT NULL
        );
        INSERT INTO public.orders
        SELECT g,
               g % 1000,
               (g % 100000) / 100.0 + 0.01,
               rpad(md5(g::text), 45, 'x'),
               timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
               g % 2 = 0,
               jsonb_build_object('k', g % 10, 'tags', jsonb_build_array('a', 'b')),
               md5(g::text)::uuid,
               g * 1.5,
               'status_' || (g % 7)
        FROM generate_series(1, {rows}) AS g;
        VACUUM ANALYZE public.orders;
        CREATE PUBLICATION {PUBLICATION} FOR TABLE public.orders;"
    )
}

/// `updates` single-row UPDATEs by primary key, a COMMIT after every PER_TRANSACTION.
fn backlog_sql(rows: u64, updates: u64) -> String {
    format!(
        "DO $$
        BEGIN
            FOR k IN 0 .. {last} LOOP
                UPDATE public.orders
                   SET qty = qty + 1,
                       score = score + 0.25,
                       updated_at = updated_at + interval '1 second'
                 WHERE id = 1 + k % {rows};
                IF (k + 1) % {PER_TRANSACTION} = 0 THEN
                    COMMIT;
                END IF;
            END LOOP;
        END
        $$;",
        last = updates - 1
    )
}

fn recvlogical_command(bin: &Path, url: &str, slot: &str, endpos: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["-d", url, "-S", slot, "--start", "-P", "pgoutput"])
        .args(["-o", "proto_version=3"])
        .args(["-o", &format!("publication_names={PUBLICATION}")])
        .args(["-o", "messages=true"])
        .args(["--endpos", endpos, "-f", "/dev/null", "--no-loop"]);
    cmd
}

fn pgch_command(bin: &Path, url: &str, slot: &str, endpos: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "tail", "--slot", slot, "--endpos", endpos, "--format", "none",
    ])
    .env("PGCH__SOURCE__URL", url)
    .env("PGCH__SOURCE__PUBLICATION", PUBLICATION)
    .env("PGCH_LOG", "info")
    .env("NO_COLOR", "1")
    .env_remove("PGCH_CONFIG");
    cmd
}

/// Runs `cmd` to completion: wall time from spawn to exit, the child's own rusage via
/// `wait4`, and the CPU of our cluster's walsender(s) meanwhile.
fn measure(
    tool: Tool,
    slot: &str,
    mut cmd: Command,
    stderr_path: &Path,
    postmaster: Option<i32>,
) -> BenchResult<Drain> {
    let stderr =
        File::create(stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", tool.name()))?;
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let monitor = {
        let done = done.clone();
        let timed_out = timed_out.clone();
        std::thread::spawn(move || {
            let mut walsenders = WalsenderCpu::default();
            while !done.load(Ordering::Acquire) {
                if let Some(pm) = postmaster {
                    walsenders.sample(pm);
                }
                if started.elapsed() > DRAIN_TIMEOUT && !done.load(Ordering::Acquire) {
                    timed_out.store(true, Ordering::Release);
                    // SAFETY: kill has no memory preconditions; pid is our unreaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    break;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            postmaster.map(|_| walsenders.total())
        })
    };
    // Reap the child ourselves: wait4 gives its own rusage (std's wait does not).
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = loop {
        // SAFETY: both pointers are to live locals of the right types.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let wall = started.elapsed();
    done.store(true, Ordering::Release);
    let walsender_cpu = monitor.join().unwrap_or(None);
    drop(child); // already reaped; dropping a Child neither waits nor kills
    let log = std::fs::read_to_string(stderr_path).unwrap_or_default();
    if reaped != pid {
        return Err(format!(
            "wait4 on {} failed: {}",
            tool.name(),
            std::io::Error::last_os_error()
        ));
    }
    if timed_out.load(Ordering::Acquire) {
        return Err(format!(
            "{} on slot {slot} did not finish within {} s; killed. stderr:\n{log}",
            tool.name(),
            DRAIN_TIMEOUT.as_secs()
        ));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!(
            "{} on slot {slot} failed (wait status {status:#x}); stderr:\n{log}",
            tool.name()
        ));
    }
    let pgch = match tool {
        Tool::Pgch => Some(parse_tail_line(&log).ok_or_else(|| {
            format!("pgch exited 0 but logged no \"tail finished\" line; stderr:\n{log}")
        })?),
        Tool::PgRecvlogical => None,
    };
    Ok(Drain {
        tool,
        slot: slot.to_string(),
        wall,
        user: timeval(usage.ru_utime),
        sys: timeval(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        walsender_cpu,
        pgch,
    })
}

/// CPU time of the walsenders (children of our postmaster) seen while sampling; each
/// process's last sample counts, so up to one sampling period per process is missed.
#[derive(Default)]
struct WalsenderCpu {
    ticks: HashMap<i32, u64>,
}

impl WalsenderCpu {
    fn sample(&mut self, postmaster: i32) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // After the ")" that ends the command name: state, ppid, ... utime (14), stime (15).
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
            if field(4) != Some(postmaster as u64) {
                continue;
            }
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&title).contains("walsender") {
                continue;
            }
            if let (Some(u), Some(s)) = (field(14), field(15)) {
                self.ticks.insert(pid, u + s);
            }
        }
    }

    fn total(&self) -> Duration {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Duration::from_secs_f64(self.ticks.values().sum::<u64>() as f64 / hz)
    }
}

/// Reads `changes=… transactions=… payload_bytes=… seconds=…` off pgch's
/// "tail finished" line (text or JSON log format, colours or not).
fn parse_tail_line(log: &str) -> Option<TailLine> {
    let line = log.lines().rev().find(|l| l.contains("tail finished"))?;
    let line = strip_ansi(line);
    let number = |key: &str| -> Option<f64> {
        let at = line
            .find(&format!("{key}="))
            .map(|i| i + key.len() + 1)
            .or_else(|| line.find(&format!("\"{key}\":")).map(|i| i + key.len() + 3))?;
        let value: String = line[at..]
            .trim_start_matches(['"', ' '])
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        value.parse().ok()
    };
    Some(TailLine {
        changes: number("changes")? as u64,
        transactions: number("transactions").unwrap_or(0.0) as u64,
        payload_bytes: number("payload_bytes").unwrap_or(0.0) as u64,
        seconds: number("seconds").unwrap_or(0.0),
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn print_row(run: usize, d: &Drain, updates: u64) {
    let secs = d.wall.as_secs_f64();
    let cpu = (d.user + d.sys).as_secs_f64();
    println!(
        "{:>3}  {:<14} {:<4} {:>8.3} {:>11.0} {:>8.2} {:>7.2} {:>5.0}% {:>7.1}Mi {:>13}",
        run,
        d.tool.name(),
        d.slot,
        secs,
        updates as f64 / secs,
        d.user.as_secs_f64(),
        d.sys.as_secs_f64(),
        100.0 * cpu / secs,
        d.max_rss_kib as f64 / 1024.0,
        d.walsender_cpu
            .map_or("n/a".to_string(), |c| format!("{:.2} s", c.as_secs_f64()))
    );
}
