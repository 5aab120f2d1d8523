//! (a) Catch-up: how fast `pgch run` applies a backlog of single-row UPDATEs until
//! ClickHouse shows the last one, next to `pg_recvlogical` draining the same backlog
//! from a second slot into /dev/null. See the crate documentation (benches/cdc.rs).

use std::process::Command;
use std::time::{Duration, Instant};

use pgch::source::walsender::proto_version_for;
use pgch::testkit::scaled;

use crate::common::{machine_busy_ticks, median, process_ticks, ticks};
use crate::proc::{Running, Walsenders};
use crate::{Bench, BenchResult, PUBLICATION};

/// Rounds; each builds a fresh backlog that both tools drain.
const RUNS: usize = 3;
/// Single-row UPDATEs in the backlog (scaled): issue 13's workload.
const UPDATES: u64 = 500_000;
const PER_TRANSACTION: u64 = 1_000;
/// How often ClickHouse is asked for the marker row (and the walsender's progress).
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Before the walsender has sent the marker, ClickHouse is asked every this many polls.
const SLOW_POLL_EVERY: u32 = 25;
/// First start: create the slot, copy the table.
const PRIME_TIMEOUT: Duration = Duration::from_secs(600);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// pgch's line once the initial copy has landed (it streams meanwhile).
pub const COPY_DONE: &str = "initial copy complete";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    PgRecvlogical,
    /// pgch over TCP (loopback), as most deployments reach Postgres.
    Pgch,
    /// pgch over the Unix socket, the transport pg_recvlogical uses here.
    PgchSocket,
}

impl Tool {
    const ALL: [Tool; 3] = [Tool::PgRecvlogical, Tool::Pgch, Tool::PgchSocket];

    fn name(self) -> &'static str {
        match self {
            Tool::PgRecvlogical => "pg_recvlogical",
            Tool::Pgch => "pgch",
            Tool::PgchSocket => "pgch (socket)",
        }
    }

    /// The slot and ClickHouse database a pgch drain of `round` uses.
    fn pgch_target(self, round: usize) -> (String, String) {
        let tag = if self == Tool::PgchSocket { "s" } else { "" };
        (
            format!("pgch{tag}_r{round}"),
            format!("bench_cdc{tag}_r{round}"),
        )
    }
}

/// What one drain measured.
struct Drain {
    round: usize,
    tool: Tool,
    /// pg_recvlogical: spawn to exit; pgch: spawn to the marker seen in ClickHouse.
    wall: Duration,
    client_cpu: Duration,
    peak_rss_kib: u64,
    walsender_cpu: Option<Duration>,
    front_cpu: Option<Duration>,
    /// Machine CPU (all cores) from spawn to reaping.
    machine_busy: Option<Duration>,
    /// From spawn to reaping (pgch: includes its shutdown after the marker).
    lifetime: Duration,
    /// pgch: from spawn to its "streaming changes" line.
    startup: Option<Duration>,
    /// pgch: from spawn until its walsender had sent the whole backlog (`sent_lsn`).
    sent: Option<Duration>,
}

impl Drain {
    /// Machine CPU not accounted to the client, its walsender or the front.
    fn other_share(&self) -> Option<f64> {
        let busy = self.machine_busy?.as_secs_f64();
        let ours = (self.client_cpu
            + self.walsender_cpu.unwrap_or_default()
            + self.front_cpu.unwrap_or_default())
        .as_secs_f64();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Some((busy - ours).max(0.0) / (self.lifetime.as_secs_f64() * cpus))
    }
}

/// The medians the summary reports.
pub struct Summary {
    /// pgch over TCP: the headline figure.
    pub pgch_rate: f64,
    /// pgch over the Unix socket, like pg_recvlogical.
    pub socket_rate: f64,
    pub recv_rate: f64,
    pub cpu_per_million: f64,
    pub socket_cpu_per_million: f64,
    pub peak_rss_mib: f64,
}

impl Summary {
    pub fn ratio(&self) -> f64 {
        self.pgch_rate / self.recv_rate
    }

    pub fn socket_ratio(&self) -> f64 {
        self.socket_rate / self.recv_rate
    }
}

pub fn run(b: &Bench) -> BenchResult<Summary> {
    let updates = scaled(UPDATES);
    println!();
    println!(
        "== (a) catch-up: {updates} single-row UPDATEs, {PER_TRANSACTION} per transaction \
         ({} transactions), built after pgch's first start; {RUNS} rounds",
        updates.div_ceil(PER_TRANSACTION)
    );
    println!(
        "pg_recvlogical options: proto_version={}{}, publication_names={PUBLICATION} \
         (what pgch asks for)",
        proto_version_for(b.pg.version_num),
        if b.pg.version_num >= 140000 {
            ", messages=true"
        } else {
            ""
        }
    );
    let mut drains = Vec::new();
    for round in 1..=RUNS {
        run_round(b, round, updates, &mut drains)?;
    }

    let pick = |tool: Tool| drains.iter().filter(move |d| d.tool == tool);
    let rate = |d: &Drain| updates as f64 / d.wall.as_secs_f64();
    let cpu = |tool: Tool| {
        median(
            pick(tool)
                .map(|d| d.client_cpu.as_secs_f64() * 1e6 / updates as f64)
                .collect(),
        )
    };
    let summary = Summary {
        pgch_rate: median(pick(Tool::Pgch).map(rate).collect()),
        socket_rate: median(pick(Tool::PgchSocket).map(rate).collect()),
        recv_rate: median(pick(Tool::PgRecvlogical).map(rate).collect()),
        cpu_per_million: cpu(Tool::Pgch),
        socket_cpu_per_million: cpu(Tool::PgchSocket),
        peak_rss_mib: drains
            .iter()
            .filter(|d| d.tool != Tool::PgRecvlogical)
            .map(|d| d.peak_rss_kib)
            .max()
            .unwrap_or(0) as f64
            / 1024.0,
    };
    println!();
    for tool in Tool::ALL {
        let secs = |f: fn(&Drain) -> Option<Duration>| median_secs(pick(tool), f);
        println!(
            "median {:<14} {:>9.0} changes/s  client CPU {:.2} s, walsender CPU {:.2} s, \
             front CPU {:.2} s",
            tool.name(),
            median(pick(tool).map(rate).collect()),
            secs(|d| Some(d.client_cpu)),
            secs(|d| d.walsender_cpu),
            secs(|d| d.front_cpu),
        );
    }
    for tool in [Tool::Pgch, Tool::PgchSocket] {
        println!(
            "{}: started streaming after {:.2} s; its walsender had sent the backlog after \
             {:.2} s; ClickHouse showed the last change {:.2} s later (medians; sync \
             interval {} ms)",
            tool.name(),
            median_secs(pick(tool), |d| d.startup),
            median_secs(pick(tool), |d| d.sent),
            median_secs(pick(tool), |d| d.wall.checked_sub(d.sent?)),
            crate::sync_interval().as_millis()
        );
    }
    println!(
        "pgch: {:.2} CPU s per million changes ({:.2} µs per change; target <= 1.5; over \
         the socket {:.2}); peak RSS {:.1} MiB; ratio pgch / pg_recvlogical {:.3} (over the \
         socket, pg_recvlogical's transport: {:.3}; cores busy: CPU of the whole machine \
         over the drain's lifetime)",
        summary.cpu_per_million,
        summary.cpu_per_million,
        summary.socket_cpu_per_million,
        summary.peak_rss_mib,
        summary.ratio(),
        summary.socket_ratio()
    );
    Ok(summary)
}

/// The median of a duration over some drains, in seconds (NaN when none has it).
fn median_secs<'a>(
    drains: impl Iterator<Item = &'a Drain>,
    f: impl Fn(&Drain) -> Option<Duration>,
) -> f64 {
    median(drains.filter_map(f).map(|d| d.as_secs_f64()).collect())
}

fn run_round(b: &Bench, round: usize, updates: u64, drains: &mut Vec<Drain>) -> BenchResult<()> {
    let recv_slot = format!("recv_r{round}");
    let targets = [Tool::Pgch, Tool::PgchSocket].map(|tool| tool.pgch_target(round));

    // Each pgch's first start: its slot, its state, the snapshot.
    let mut primed = Duration::ZERO;
    for (i, (slot, database)) in targets.iter().enumerate() {
        let mut first = Running::spawn(
            "pgch (first start)",
            b.pgch_run(slot, database),
            &b.log_path(&format!("r{round}_first{i}")),
        )?;
        first.wait_for_log("streaming changes", PRIME_TIMEOUT)?;
        primed = primed.max(first.wait_for_log(COPY_DONE, PRIME_TIMEOUT)?);
        first.terminate();
        first.wait(STOP_TIMEOUT, || {})?;
    }
    b.sql(&format!(
        "SELECT pg_create_logical_replication_slot('{recv_slot}', 'pgoutput')"
    ))?;

    let marker = format!("done_r{round}");
    let marker_key = 1 + (updates - 1) % b.rows;
    let wal_start = b.sql("SELECT pg_current_wal_insert_lsn()")?;
    let began = Instant::now();
    b.sql(&backlog_sql(b.rows, updates, &marker))?;
    let built = began.elapsed();
    let endpos = b.sql("SELECT pg_current_wal_insert_lsn()")?;
    let wal_bytes = b.sql_number(&format!(
        "SELECT pg_wal_lsn_diff('{endpos}', '{wal_start}')::bigint"
    ))?;
    let expected = b.sql("SELECT count(*), sum(qty) FROM public.orders")?;
    b.sql("CHECKPOINT")?;
    println!();
    println!(
        "round {round}: pgch first starts {:.1} s (two slots, snapshots); backlog built in \
         {:.1} s, WAL {wal_start} .. {endpos} = {:.1} MB",
        primed.as_secs_f64(),
        built.as_secs_f64(),
        wal_bytes as f64 / 1e6
    );
    print_header();

    // Every tool drains first, second and third once over the rounds.
    let mut order = Tool::ALL;
    order.rotate_left((round - 1) % Tool::ALL.len());
    for tool in order {
        let drain = match tool {
            Tool::PgRecvlogical => drain_recvlogical(b, round, &recv_slot, &endpos)?,
            Tool::Pgch | Tool::PgchSocket => {
                let (slot, database) = tool.pgch_target(round);
                let target = Target {
                    tool,
                    slot: &slot,
                    database: &database,
                    endpos: &endpos,
                    marker_key,
                    marker: &marker,
                };
                drain_pgch(b, round, &target)?
            }
        };
        print_row(&drain, updates);
        drains.push(drain);
    }

    // Nothing lost: the latest version of every row equals the table.
    for (_, database) in &targets {
        let got = b.ch(&format!(
            "SELECT count(), sum(qty) FROM `{database}`.`public_orders` FINAL WHERE _is_deleted = 0"
        ))?;
        if got.split_whitespace().ne(expected.split('|')) {
            return Err(format!(
                "round {round}: ClickHouse {database} has count, sum(qty) = {got:?}, Postgres {expected:?}"
            ));
        }
    }
    let [(slot, database), (socket_slot, socket_database)] = &targets;
    b.cleanup(
        &[database, socket_database],
        &[slot, socket_slot, &recv_slot],
    )?;
    b.sql("VACUUM public.orders; CHECKPOINT")?;
    Ok(())
}

/// `updates` single-row UPDATEs by primary key, a COMMIT after every PER_TRANSACTION;
/// the last one also sets `status` to `marker`.
fn backlog_sql(rows: u64, updates: u64, marker: &str) -> String {
    format!(
        "DO $$
        BEGIN
            FOR k IN 0 .. {last} LOOP
                UPDATE public.orders
                   SET qty = qty + 1,
                       score = score + 0.25,
                       updated_at = updated_at + interval '1 second',
                       status = CASE WHEN k = {last} THEN '{marker}' ELSE status END
                 WHERE id = 1 + k % {rows};
                IF (k + 1) % {PER_TRANSACTION} = 0 OR k = {last} THEN
                    COMMIT;
                END IF;
            END LOOP;
        END
        $$;",
        last = updates - 1
    )
}

/// CPU of the machine and of the ClickHouse front over a drain.
struct Window {
    busy: Option<u64>,
    front: Option<u64>,
}

impl Window {
    fn start(b: &Bench) -> Window {
        Window {
            busy: machine_busy_ticks(),
            front: b.front.and_then(process_ticks),
        }
    }

    /// (machine busy, front CPU) since the start.
    fn finish(self, b: &Bench) -> (Option<Duration>, Option<Duration>) {
        let diff =
            |before: Option<u64>, after: Option<u64>| Some(ticks(after?.checked_sub(before?)?));
        (
            diff(self.busy, machine_busy_ticks()),
            diff(self.front, b.front.and_then(process_ticks)),
        )
    }
}

fn drain_recvlogical(b: &Bench, round: usize, slot: &str, endpos: &str) -> BenchResult<Drain> {
    let mut cmd = Command::new(b.pg.bin_dir.join("pg_recvlogical"));
    // As a user on the database host runs it: over the Unix socket.
    let conninfo = b.pg.superuser_socket_conninfo(&b.db);
    cmd.args(["-d", &conninfo, "-S", slot, "--start", "-P", "pgoutput"])
        .args([
            "-o".to_string(),
            format!("proto_version={}", proto_version_for(b.pg.version_num)),
        ])
        .args(["-o".to_string(), format!("publication_names={PUBLICATION}")]);
    if b.pg.version_num >= 140000 {
        cmd.args(["-o", "messages=true"]);
    }
    cmd.args(["--endpos", endpos, "-f", "/dev/null", "--no-loop"]);
    let window = Window::start(b);
    let mut walsenders = Walsenders::new(b.postmaster);
    let mut p = Running::spawn(
        "pg_recvlogical",
        cmd,
        &b.log_path(&format!("r{round}_recv")),
    )?;
    let exited = p.wait(DRAIN_TIMEOUT, || walsenders.sample())?;
    walsenders.sample();
    let (machine_busy, front_cpu) = window.finish(b);
    Ok(Drain {
        round,
        tool: Tool::PgRecvlogical,
        wall: exited.wall,
        client_cpu: exited.cpu(),
        peak_rss_kib: exited.max_rss_kib,
        walsender_cpu: walsenders.total(),
        front_cpu,
        machine_busy,
        lifetime: exited.wall,
        startup: None,
        sent: None,
    })
}

/// What pgch's drain waits for.
struct Target<'a> {
    tool: Tool,
    slot: &'a str,
    database: &'a str,
    /// The end of the backlog's WAL.
    endpos: &'a str,
    /// The row the last UPDATE marks, and its mark.
    marker_key: u64,
    marker: &'a str,
}

fn drain_pgch(b: &Bench, round: usize, t: &Target<'_>) -> BenchResult<Drain> {
    let (slot, database) = (t.slot, t.database);
    let query = format!(
        "SELECT count() FROM `{database}`.`public_orders` WHERE id = {} AND status = '{}' \
         AND _version > 0",
        t.marker_key, t.marker
    );
    // Whether the slot's walsender has sent the whole backlog.
    let sent_query = format!(
        "SELECT r.sent_lsn >= '{}' FROM pg_stat_replication r \
         JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = '{slot}'",
        t.endpos
    );
    let pg = b.pg_client()?;
    let mut sent = None;
    let window = Window::start(b);
    let mut walsenders = Walsenders::new(b.postmaster);
    let (command, label) = match t.tool {
        Tool::PgchSocket => (b.pgch_run_on_socket(slot, database), "pgchs"),
        _ => (b.pgch_run(slot, database), "pgch"),
    };
    let mut p = Running::spawn("pgch", command, &b.log_path(&format!("r{round}_{label}")))?;
    let profiler = match std::env::var("PGCH_BENCH_PERF").as_deref() {
        Ok("1") => Some(attach_perf(b, round, label, p.pid(), true)?),
        Ok("flat") => Some(attach_perf(b, round, label, p.pid(), false)?),
        _ => None,
    };
    let mut startup = None;
    let mut polls_before_sent = 1u32;
    let wall = loop {
        walsenders.sample();
        if startup.is_none() && p.log().contains("streaming changes") {
            startup = Some(p.started.elapsed());
        }
        if p.exited() {
            return Err(format!(
                "pgch exited before the marker reached ClickHouse; stderr:\n{}",
                p.log()
            ));
        }
        if p.started.elapsed() > DRAIN_TIMEOUT {
            return Err(format!(
                "the marker did not reach ClickHouse within {} s; pgch's stderr:\n{}",
                DRAIN_TIMEOUT.as_secs(),
                p.log()
            ));
        }
        if sent.is_none() && b.pg_query(&pg, &sent_query)? == "t" {
            sent = Some(p.started.elapsed());
        }
        // The marker is the backlog's last change: it cannot be in ClickHouse before
        // the walsender has sent it. Until then ClickHouse is asked only now and then
        // (a poll costs the test front ~5 ms of CPU: 50 a second would take a quarter
        // of this machine from the drain, which pg_recvlogical's drain does not pay).
        let due = sent.is_some() || polls_before_sent.is_multiple_of(SLOW_POLL_EVERY);
        polls_before_sent += u32::from(sent.is_none());
        if due && b.ch(&query)? == "1" {
            break p.started.elapsed();
        }
        std::thread::sleep(POLL_EVERY);
    };
    let hwm = p.hwm_kib().unwrap_or(0);
    if let Some(mut perf) = profiler {
        perf.interrupt();
        perf.reap(STOP_TIMEOUT, || {})?;
    }
    p.terminate();
    let exited = p.wait(STOP_TIMEOUT, || walsenders.sample())?;
    let (machine_busy, front_cpu) = window.finish(b);
    if let Some(line) = exited
        .log
        .lines()
        .find(|l| l.contains(" WARN ") || l.contains("ERROR"))
    {
        println!("     pgch logged: {line}");
    }
    Ok(Drain {
        round,
        tool: t.tool,
        wall,
        client_cpu: exited.cpu(),
        peak_rss_kib: hwm.max(exited.max_rss_kib),
        walsender_cpu: walsenders.total(),
        front_cpu,
        machine_busy,
        lifetime: exited.wall,
        startup,
        sent,
    })
}

/// `perf record` attached to pgch (`PGCH_BENCH_PERF=1`): call graphs from DWARF, into
/// `r<round>_pgch.perf.data` (`_pgchs` over the socket) next to the logs. Its own CPU disturbs the figures;
/// `PGCH_BENCH_PERF=flat` samples more often without call graphs, and disturbs less.
fn attach_perf(
    b: &Bench,
    round: usize,
    label: &str,
    pid: i32,
    graphs: bool,
) -> BenchResult<Running> {
    let data = b.logs.join(format!("r{round}_{label}.perf.data"));
    let mut cmd = Command::new("perf");
    if graphs {
        cmd.args(["record", "-F", "999", "--call-graph", "dwarf,16384", "-o"]);
    } else {
        cmd.args(["record", "-F", "4999", "-o"]);
    }
    cmd.arg(&data).args(["-p", &pid.to_string()]);
    println!("     perf record -> {}", data.display());
    Running::spawn("perf", cmd, &b.log_path(&format!("r{round}_perf")))
}

fn print_header() {
    println!(
        "{:>3}  {:<14} {:>8} {:>11} {:>7} {:>9} {:>10} {:>8} {:>6} {:>6} {:>8} {:>8}",
        "run",
        "tool",
        "seconds",
        "changes/s",
        "cpu s",
        "peak RSS",
        "walsender",
        "front",
        "other",
        "cores",
        "startup",
        "all sent"
    );
}

fn print_row(d: &Drain, updates: u64) {
    let secs = d.wall.as_secs_f64();
    let opt =
        |v: Option<Duration>| v.map_or("n/a".to_string(), |v| format!("{:.2}s", v.as_secs_f64()));
    println!(
        "{:>3}  {:<14} {:>8.3} {:>11.0} {:>7.2} {:>7.1}Mi {:>10} {:>8} {:>6} {:>6} {:>8} {:>8}",
        d.round,
        d.tool.name(),
        secs,
        updates as f64 / secs,
        d.client_cpu.as_secs_f64(),
        d.peak_rss_kib as f64 / 1024.0,
        opt(d.walsender_cpu),
        opt(d.front_cpu),
        d.other_share()
            .map_or("n/a".to_string(), |s| format!("{:.0}%", 100.0 * s)),
        d.machine_busy.map_or("n/a".to_string(), |b| format!(
            "{:.2}",
            b.as_secs_f64() / d.lifetime.as_secs_f64()
        )),
        opt(d.startup),
        opt(d.sent),
    );
}
