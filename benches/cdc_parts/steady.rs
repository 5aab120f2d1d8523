//! (b) Steady state: commit-to-visible lag of `pgch run` under a rate-limited pgbench
//! load. See the crate documentation (benches/cdc.rs).

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgch::testkit::postgres::SUPERUSER;
use pgch::testkit::scale;

use crate::common::quantile;
use crate::proc::Running;
use crate::{sync_interval, Bench, BenchResult};

/// pgbench's transactions per second (`-R`); each updates a row and inserts one.
const RATE: u32 = 500;
/// Load duration at full scale; at least [`MIN_SECONDS`].
const SECONDS: f64 = 60.0;
const MIN_SECONDS: u64 = 10;
const CLIENTS: u32 = 4;
/// How often ClickHouse is asked for new rows.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Rows below the newest seen id by more than this are not asked for again while the
/// load runs (late ones are found by the final, complete poll).
const REASK_WINDOW: u64 = 5_000;
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// After the load: how long pgch may take to deliver the rest.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// Percentiles of one lag measure, in milliseconds.
pub struct Lags {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Lags {
    fn of(mut ms: Vec<f64>) -> Lags {
        ms.sort_by(f64::total_cmp);
        Lags {
            p50: quantile(&ms, 0.50),
            p90: quantile(&ms, 0.90),
            p99: quantile(&ms, 0.99),
            max: ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

pub struct Summary {
    /// First poll that returned the row − its commit timestamp.
    pub polled: Lags,
    /// ClickHouse's `_synced_at` − its commit timestamp.
    pub synced: Lags,
    pub peak_rss_mib: f64,
}

/// One `lag_events` row as seen in ClickHouse (microseconds since the epoch).
struct Seen {
    at: i64,
    synced: i64,
    first_seen: i64,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

pub fn run(b: &Bench) -> BenchResult<Summary> {
    let seconds = ((SECONDS * scale()).round() as u64).max(MIN_SECONDS);
    let sync = sync_interval();
    println!();
    println!(
        "== (b) steady state: pgbench -R {RATE} -c {CLIENTS} for {seconds} s (UPDATE a random \
         orders row + INSERT a lag_events row with clock_timestamp(), one transaction); \
         ClickHouse polled every {} ms; sync interval {} ms",
        POLL_EVERY.as_millis(),
        sync.as_millis()
    );
    let slot = "pgch_steady";
    let database = "bench_cdc_steady";
    let mut pgch = Running::spawn(
        "pgch",
        b.pgch_run(slot, database),
        &b.log_path("steady_pgch"),
    )?;
    pgch.wait_for_log("streaming changes", START_TIMEOUT)?;
    let ready = pgch.wait_for_log(crate::catchup::COPY_DONE, START_TIMEOUT)?;
    let cpu_before = pgch.cpu().unwrap_or_default();
    let script = b.logs.join("steady.pgbench");
    std::fs::write(&script, pgbench_script(b.rows))
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let mut cmd = Command::new(b.pg.bin_dir.join("pgbench"));
    cmd.args(["-n", "-h", "127.0.0.1", "-U", SUPERUSER])
        .args(["-p", &b.pg.port.to_string()])
        .args(["-R", &RATE.to_string(), "-T", &seconds.to_string()])
        .args(["-c", &CLIENTS.to_string(), "-j", "2", "-f"])
        .arg(&script)
        .arg(&b.db)
        // The kit's clusters commit asynchronously; a source that streams to replicas
        // flushes at commit, and the walsender sends only flushed WAL.
        .env("PGOPTIONS", "-c synchronous_commit=on");
    let mut load = Running::spawn("pgbench", cmd, &b.log_path("steady_pgbench"))?;

    let table = format!("`{database}`.`public_lag_events`");
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    let poll = |floor: u64, seen: &mut HashMap<u64, Seen>| -> BenchResult<()> {
        let asked = now_us();
        let out = b.ch(&format!(
            "SELECT id, toUnixTimestamp64Micro(at), toUnixTimestamp64Micro(_synced_at) \
             FROM {table} WHERE id > {floor}"
        ))?;
        for line in out.lines() {
            let f: Vec<i64> = line
                .split('\t')
                .map(|v| v.parse::<i64>())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("lag_events row {line:?}: {e}"))?;
            if let [id, at, synced] = f[..] {
                seen.entry(id as u64).or_insert(Seen {
                    at,
                    synced,
                    first_seen: asked,
                });
            }
        }
        Ok(())
    };
    // The ids below `prefix` have all been seen.
    let mut prefix = 0u64;
    let mut peak_hwm = 0u64;
    while !load.exited() {
        while seen.contains_key(&(prefix + 1)) {
            prefix += 1;
        }
        let newest = seen.keys().max().copied().unwrap_or(0);
        poll(prefix.max(newest.saturating_sub(REASK_WINDOW)), &mut seen)?;
        peak_hwm = peak_hwm.max(pgch.hwm_kib().unwrap_or(0));
        if pgch.exited() {
            return Err(format!("pgch exited under load; output:\n{}", pgch.log()));
        }
        std::thread::sleep(POLL_EVERY);
    }
    let bench_out = load.wait(Duration::from_secs(30), || {})?.log;
    let committed = b.sql_number("SELECT count(*) FROM public.lag_events")?;
    let settle_start = std::time::Instant::now();
    while (seen.len() as u64) < committed && settle_start.elapsed() < SETTLE_TIMEOUT {
        poll(0, &mut seen)?;
        std::thread::sleep(POLL_EVERY);
    }
    peak_hwm = peak_hwm.max(pgch.hwm_kib().unwrap_or(0));
    let cpu_load = pgch.cpu().unwrap_or_default().saturating_sub(cpu_before);
    pgch.terminate();
    let exited = pgch.wait(STOP_TIMEOUT, || {})?;
    b.cleanup(&[database], &[slot])?;
    if (seen.len() as u64) < committed {
        return Err(format!(
            "ClickHouse shows {} of {committed} committed lag_events rows {} s after the load \
             ended; pgch's output:\n{}",
            seen.len(),
            SETTLE_TIMEOUT.as_secs(),
            exited.log
        ));
    }

    let ms = |f: fn(&Seen) -> i64| -> Vec<f64> {
        seen.values().map(|s| (f(s) - s.at) as f64 / 1e3).collect()
    };
    let summary = Summary {
        polled: Lags::of(ms(|s| s.first_seen)),
        synced: Lags::of(ms(|s| s.synced)),
        peak_rss_mib: peak_hwm.max(exited.max_rss_kib) as f64 / 1024.0,
    };
    for line in bench_out
        .lines()
        .filter(|l| l.starts_with("tps") || l.starts_with("latency average"))
    {
        println!("pgbench:   {line}");
    }
    println!(
        "pgch:      ready (snapshot done, streaming) after {:.1} s; CPU under load {:.2} s \
         ({:.1}% of a core); peak RSS {:.1} MiB",
        ready.as_secs_f64(),
        cpu_load.as_secs_f64(),
        100.0 * cpu_load.as_secs_f64() / seconds as f64,
        summary.peak_rss_mib
    );
    println!("rows:      {} lag_events rows, all seen", seen.len());
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8}",
        "lag (ms)", "p50", "p90", "p99", "max"
    );
    for (name, l) in [
        ("commit -> visible (polled, upper bound)", &summary.polled),
        ("commit -> insert start (_synced_at)", &summary.synced),
    ] {
        println!(
            "{name:<44} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
            l.p50, l.p90, l.p99, l.max
        );
    }
    Ok(summary)
}

/// One transaction: a random row of `orders` changes, a `lag_events` row records when.
fn pgbench_script(rows: u64) -> String {
    format!(
        "\\set aid random(1, {rows})
\\set delta random(-5000, 5000)
BEGIN;
UPDATE public.orders SET qty = qty + :delta, updated_at = clock_timestamp() WHERE id = :aid;
INSERT INTO public.lag_events (aid, delta, at) VALUES (:aid, :delta, clock_timestamp());
END;
"
    )
}
