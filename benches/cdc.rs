//! End to end: `pgch run` streaming changes into ClickHouse.
//!
//! A private Postgres (the test kit's, autovacuum off) gets a 10-column table of 2,000,000
//! rows (times `PGCH_TEST_SCALE`: bigint key, int, numeric(12,2), 45-character text,
//! timestamptz, bool, small jsonb, uuid, float8, varchar), a small `lag_events` table
//! and a publication for both; the ClickHouse endpoint is the test kit's (pgch's HTTP
//! front over chdb, or `PGCH_TEST_CLICKHOUSE_URL`). pgch is the release binary, run as
//! `pgch run` (mode `snapshot_and_cdc`) with its configuration in `PGCH__…` variables.
//!
//! **(a) Catch-up**, `RUNS` rounds. Each round: `pgch run` with a fresh slot and a fresh
//! ClickHouse database, until it logs "streaming changes" and "initial copy complete"
//! (the slot exists, the copy landed), then SIGTERM; a second slot for `pg_recvlogical`; then the
//! backlog: 500,000 single-row UPDATEs (scaled), 1,000 per transaction, the last one
//! setting a marker, then a CHECKPOINT. Then both drain the same WAL, in alternating
//! order, each from process start:
//!
//! - `pg_recvlogical --start -P pgoutput --no-loop --endpos <end of backlog> -f /dev/null`
//!   over the Unix socket (as a user on the database host runs it), with the options pgch
//!   sends (`proto_version` as pgch picks it, `publication_names`, `messages`): spawn
//!   to exit;
//! - `pgch run`: spawn until the marker row, carried by the stream (`_version > 0`), is
//!   visible in ClickHouse (polled by key every 20 ms once pgch's walsender has sent the
//!   end of the backlog, every 0.5 s before: a poll costs the test front ~5 ms of CPU,
//!   and polling all along took ~0.9 CPU-s from each drain), then SIGTERM. Afterwards
//!   `FINAL` must equal the table. Twice, each with its own slot and database: over TCP
//!   (the headline: how most deployments reach Postgres) and over the Unix socket
//!   (`host=/dir`, pg_recvlogical's transport here). The order rotates, so each of the
//!   three drains first, second and third once in three rounds.
//!
//! Reported per drain: wall time, changes/s, client CPU (`wait4`), peak RSS (pgch:
//! VmHWM just before SIGTERM, and `ru_maxrss`), the walsender's CPU, the front's CPU,
//! and "other": machine CPU (/proc/stat) not accounted to those (something else ran).
//!
//! **(b) Steady state**: `pgch run` on a fresh slot, then `pgbench -R 500` for 60 s
//! (scaled, at least 10 s) with a script that updates a random row and inserts a
//! `lag_events` row carrying `clock_timestamp()` in one transaction. ClickHouse is
//! polled every 50 ms for new `lag_events` rows: lag = the start of the first poll that
//! returned the row − its timestamp (an upper bound, within one poll period), next to
//! ClickHouse's `_synced_at` − the timestamp (when the insert carrying it began: a lower
//! bound). Reported: p50 / p90 / p99 / max against the sync interval (pgch's default,
//! or `PGCH__PIPELINE__SYNC_INTERVAL_MS` when set), pgch's CPU and peak RSS.
//!
//! Ends with one line:
//!
//! ```text
//! RESULT cdc catchup_pgch=<changes/s> catchup_pg_recvlogical=<changes/s> ratio=<…> pgch_cpu_s_per_mchange=<s> catchup_pgch_socket=<changes/s> ratio_socket=<…> lag_p50_ms=<ms> lag_p99_ms=<ms> sync_interval_ms=<ms> peak_rss_catchup_mib=<MiB> peak_rss_steady_mib=<MiB>
//! ```
//!
//! ```sh
//! cargo bench --bench cdc --features testkit                        # full size
//! PGCH_TEST_SCALE=0.02 cargo bench --bench cdc --features testkit   # quick (< 1 min)
//! PGCH_BENCH_CDC=catchup|steady                                     # one part only
//! ```
//!
//! Run without `--bench` (as `cargo test --benches` does) it does nothing.

#[path = "cdc_parts/catchup.rs"]
mod catchup;
#[path = "common/mod.rs"]
mod common;
#[path = "cdc_parts/proc.rs"]
mod proc;
#[path = "cdc_parts/steady.rs"]
mod steady;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{clickhouse_front_pid, load_average, postmaster_pid, print_machine_titled};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::{PgCluster, PgOptions};
use pgch::testkit::{scale, scaled};

pub type BenchResult<T> = Result<T, String>;

/// Rows in the table (scaled): issue 13's 2,000,000-row `orders`.
const ROWS: u64 = 2_000_000;
pub const PUBLICATION: &str = "bench_pub";
/// Peak RSS target for pgch (issue 5).
const RSS_TARGET_MIB: f64 = 256.0;

/// What the parts need to reach the servers and the processes they watch.
pub struct Bench {
    pub pg: PgCluster,
    pub db: String,
    pub url: String,
    pub ch: ClickHouse,
    rt: tokio::runtime::Runtime,
    pub postmaster: Option<i32>,
    pub front: Option<i32>,
    /// Where the processes' output goes: a temporary directory, or `PGCH_BENCH_LOGS`.
    pub logs: PathBuf,
    _logs_tmp: Option<tempfile::TempDir>,
    pub pgch: PathBuf,
    pub rows: u64,
}

impl Bench {
    /// Runs SQL through psql as the superuser; returns the trimmed output.
    pub fn sql(&self, script: &str) -> BenchResult<String> {
        Ok(self.pg.sql(&self.db, script)?.trim().to_string())
    }

    pub fn sql_number(&self, script: &str) -> BenchResult<u64> {
        let text = self.sql(script)?;
        text.parse()
            .map_err(|e| format!("{script}: not a number: {text:?}: {e}"))
    }

    /// A connection for frequent small queries (psql per poll would cost more than
    /// what it measures).
    pub fn pg_client(&self) -> BenchResult<tokio_postgres::Client> {
        let (client, connection) = self
            .rt
            .block_on(tokio_postgres::connect(&self.url, tokio_postgres::NoTls))
            .map_err(|e| format!("connect to Postgres: {e}"))?;
        // Driven whenever the runtime runs (inside `pg_query`'s block_on).
        self.rt.spawn(connection);
        Ok(client)
    }

    /// The first column of the first row, as text.
    pub fn pg_query(&self, client: &tokio_postgres::Client, sql: &str) -> BenchResult<String> {
        let rows = self
            .rt
            .block_on(client.simple_query(sql))
            .map_err(|e| format!("{sql}: {e}"))?;
        Ok(rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap_or_default())
    }

    /// A ClickHouse query's TabSeparated output, trimmed.
    pub fn ch(&self, sql: &str) -> BenchResult<String> {
        Ok(self.rt.block_on(self.ch.query(sql))?.trim().to_string())
    }

    /// `pgch run` (default mode) on `slot`, writing into ClickHouse `database`.
    pub fn pgch_run(&self, slot: &str, database: &str) -> Command {
        self.pgch_run_from(&self.url, slot, database)
    }

    /// The same, connected to Postgres through its Unix socket, as pg_recvlogical is.
    pub fn pgch_run_on_socket(&self, slot: &str, database: &str) -> Command {
        let url = format!(
            "postgres://{}@:{}/{}?host={}",
            pgch::testkit::postgres::SUPERUSER,
            self.pg.port,
            self.db,
            self.pg.socket_dir().display()
        );
        self.pgch_run_from(&url, slot, database)
    }

    fn pgch_run_from(&self, url: &str, slot: &str, database: &str) -> Command {
        let mut cmd = Command::new(&self.pgch);
        cmd.arg("run")
            .env("PGCH__SOURCE__URL", url)
            .env("PGCH__SOURCE__PUBLICATION", PUBLICATION)
            .env("PGCH__SOURCE__SLOT", slot)
            .env("PGCH__DESTINATION__URL", &self.ch.url)
            .env("PGCH__DESTINATION__USER", &self.ch.user)
            .env("PGCH__DESTINATION__DATABASE", database)
            .env("PGCH_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("PGCH_CONFIG")
            .env_remove("PGCH__PIPELINE__MODE");
        if self.ch.password.is_empty() {
            cmd.env_remove("PGCH__DESTINATION__PASSWORD");
        } else {
            cmd.env("PGCH__DESTINATION__PASSWORD", &self.ch.password);
        }
        cmd
    }

    pub fn log_path(&self, label: &str) -> PathBuf {
        self.logs.join(format!("{label}.log"))
    }

    /// Drops the ClickHouse databases and replication slots left by a round.
    pub fn cleanup(&self, databases: &[&str], slots: &[&str]) -> BenchResult<()> {
        for database in databases {
            self.ch(&format!("DROP DATABASE IF EXISTS `{database}` SYNC"))?;
        }
        for slot in slots {
            self.sql(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = '{slot}'"
            ))?;
        }
        Ok(())
    }
}

/// The sync interval pgch runs with: `PGCH__PIPELINE__SYNC_INTERVAL_MS` when the caller
/// set it (pgch inherits it), else pgch's default.
pub fn sync_interval() -> Duration {
    std::env::var("PGCH__PIPELINE__SYNC_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(pgch::config::DEFAULT_MAX_AGE)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cdc: run it with `cargo bench --bench cdc --features testkit`");
        return;
    }
    if let Err(e) = run() {
        eprintln!("\ncdc FAILED: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    let parts = std::env::var("PGCH_BENCH_CDC").unwrap_or_default();
    let (do_catchup, do_steady) = match parts.as_str() {
        "" | "both" => (true, true),
        "catchup" => (true, false),
        "steady" => (false, true),
        other => {
            return Err(format!(
                "PGCH_BENCH_CDC={other}: use catchup, steady or both"
            ))
        }
    };
    print_machine_titled("cdc: pgch run catching up vs pg_recvlogical; steady-state lag");
    let rows = scaled(ROWS);
    let (logs, logs_tmp) = match std::env::var_os("PGCH_BENCH_LOGS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            println!("logs:      kept in {}", dir.display());
            (dir, None)
        }
        None => {
            let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let pg = PgCluster::start(PgOptions::default().setting("autovacuum", "off"))?;
    let db = pg.create_database()?;
    let ch = ClickHouse::from_env_or_start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let bench = Bench {
        url: pg.superuser_url(&db),
        postmaster: postmaster_pid(&pg.data_dir),
        front: clickhouse_front_pid(),
        logs,
        _logs_tmp: logs_tmp,
        pgch: PathBuf::from(env!("CARGO_BIN_EXE_pgch")),
        pg,
        db,
        ch,
        rt,
        rows,
    };
    println!(
        "postgres:  {} ({}), port {}",
        bench.sql("SHOW server_version")?,
        bench.pg.bin_dir.display(),
        bench.pg.port
    );
    println!(
        "clickhouse: {} at {}{}",
        bench.ch("SELECT version()")?,
        bench.ch.url,
        bench.front.map_or(String::new(), |pid| format!(
            " (pgch's chdb front, pid {pid})"
        ))
    );
    println!("pgch:      {}", bench.pgch.display());
    bench.sql(&setup_sql(rows))?;
    println!(
        "table:     public.orders, {rows} rows, 10 columns; public.lag_events; \
         publication {PUBLICATION}; scale {}",
        scale()
    );

    let catchup = if do_catchup {
        Some(catchup::run(&bench)?)
    } else {
        None
    };
    let steady = if do_steady {
        Some(steady::run(&bench)?)
    } else {
        None
    };
    let load_end = load_average().unwrap_or(f64::NAN);
    println!();
    println!("== summary (load average at the end: {load_end:.2})");
    let mut result = String::from("RESULT cdc");
    if let Some(c) = &catchup {
        println!(
            "(a) catch-up: pgch {:.0} changes/s vs pg_recvlogical {:.0}/s: ratio {:.3} \
             (target >= 0.75: {}); pgch CPU {:.2} s per million changes (target <= 1.5: \
             {}); peak RSS {:.1} MiB",
            c.pgch_rate,
            c.recv_rate,
            c.ratio(),
            verdict(c.ratio() >= 0.75),
            c.cpu_per_million,
            verdict(c.cpu_per_million <= 1.5),
            c.peak_rss_mib
        );
        println!(
            "    pgch over the Unix socket (pg_recvlogical's transport): {:.0} changes/s: \
             ratio {:.3}; {:.2} CPU s per million changes",
            c.socket_rate,
            c.socket_ratio(),
            c.socket_cpu_per_million
        );
        result.push_str(&format!(
            " catchup_pgch={:.0}/s catchup_pg_recvlogical={:.0}/s ratio={:.3} \
             pgch_cpu_s_per_mchange={:.2} catchup_pgch_socket={:.0}/s ratio_socket={:.3}",
            c.pgch_rate,
            c.recv_rate,
            c.ratio(),
            c.cpu_per_million,
            c.socket_rate,
            c.socket_ratio()
        ));
    }
    if let Some(s) = &steady {
        let sync_ms = sync_interval().as_secs_f64() * 1e3;
        println!(
            "(b) steady state: commit-to-visible lag p50 {:.0} ms, p99 {:.0} ms (polled; \
             insert start p99 {:.0} ms) at sync interval {sync_ms:.0} ms (target p99 <= \
             {:.0} ms: {}); peak RSS {:.1} MiB",
            s.polled.p50,
            s.polled.p99,
            s.synced.p99,
            2.0 * sync_ms,
            verdict(s.polled.p99 <= 2.0 * sync_ms),
            s.peak_rss_mib
        );
        result.push_str(&format!(
            " lag_p50_ms={:.0} lag_p99_ms={:.0} sync_interval_ms={sync_ms:.0}",
            s.polled.p50, s.polled.p99
        ));
    }
    let peaks: Vec<(&str, f64)> = catchup
        .iter()
        .map(|c| ("catchup", c.peak_rss_mib))
        .chain(steady.iter().map(|s| ("steady", s.peak_rss_mib)))
        .collect();
    for (name, mib) in &peaks {
        result.push_str(&format!(" peak_rss_{name}_mib={mib:.1}"));
    }
    println!(
        "(c) peak RSS (VmHWM): {} (target <= {RSS_TARGET_MIB:.0} MiB: {})",
        peaks
            .iter()
            .map(|(n, m)| format!("{n} {m:.1} MiB"))
            .collect::<Vec<_>>()
            .join(", "),
        verdict(peaks.iter().all(|(_, m)| *m <= RSS_TARGET_MIB))
    );
    println!("{result}");
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// The table, its rows, the lag table and the publication.
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
               (g * 7919) % 100000,
               ((g * 104729) % 10000000) / 100.0,
               left(md5(g::text) || md5((g + 1)::text), 45),
               timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
               g % 3 = 0,
               jsonb_build_object('k', g % 10, 'tags', jsonb_build_array('a', 'b')),
               md5(g::text)::uuid,
               g * 1.5 + 0.25,
               'status_' || (g % 7)
        FROM generate_series(1::bigint, {rows}::bigint) AS g;
        CREATE TABLE public.lag_events (
            id    bigserial PRIMARY KEY,
            aid   bigint NOT NULL,
            delta int NOT NULL,
            at    timestamptz NOT NULL
        );
        VACUUM ANALYZE public.orders;
        CREATE PUBLICATION {PUBLICATION} FOR TABLE public.orders, public.lag_events;
        CHECKPOINT;"
    )
}
