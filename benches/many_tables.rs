//! Hundreds of tables: `pgch run` at its defaults on a publication of 500 tables of 50
//! rows each (times `PGCH_TEST_SCALE` for the table count, at least 10).
//!
//! Measured, from process start: the initial copy of every table (until pgch logs
//! "initial copy complete", checked against Postgres' counts), next to the peer a user
//! would reach for — one `psql` running `COPY … TO STDOUT` of every table into
//! /dev/null; then one transaction that updates a row in each table, from its commit
//! until ClickHouse shows every change (polled every 20 ms); inserts retried (pgch's log
//! and `pgch_retries_total`); pgch's peak RSS (VmHWM).
//!
//! ```sh
//! cargo bench --bench many_tables --features testkit
//! ```
//!
//! Ends with `RESULT many_tables tables=… copy_s=… psql_copy_s=… one_tx_visible_s=…
//! retries=… peak_rss_mib=…`. Run without `--bench` it does nothing.

#[path = "common/mod.rs"]
mod common;
#[path = "cdc_parts/proc.rs"]
#[allow(dead_code)]
mod proc;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::{psql_path, PgCluster, PgOptions, SUPERUSER};
use pgch::testkit::scale;
use proc::Running;

pub type BenchResult<T> = Result<T, String>;

const TABLES: u64 = 500;
const ROWS: u64 = 50;
const PUBLICATION: &str = "many_pub";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("many_tables: run it with `cargo bench --bench many_tables --features testkit`");
        return;
    }
    if let Err(e) = run() {
        eprintln!("\nmany_tables FAILED: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    common::print_machine_titled("many_tables: 500 published tables, pgch at its defaults");
    let tables = ((TABLES as f64 * scale()).round() as u64).max(10);
    let pg = PgCluster::start(PgOptions::default().setting("max_connections", "200"))?;
    let db = pg.create_database()?;
    let ch = ClickHouse::from_env_or_start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut ddl = String::from("CREATE SCHEMA many;");
    for i in 0..tables {
        ddl.push_str(&format!(
            "CREATE TABLE many.t{i} (id int PRIMARY KEY, v int NOT NULL, note text NOT NULL);
             INSERT INTO many.t{i} SELECT g, g, md5(g::text) FROM generate_series(1, {ROWS}) g;"
        ));
    }
    ddl.push_str(&format!(
        "CREATE PUBLICATION {PUBLICATION} FOR TABLES IN SCHEMA many; CHECKPOINT;"
    ));
    let ddl = if pg.version_num < 150000 {
        ddl.replace("FOR TABLES IN SCHEMA many", "FOR ALL TABLES")
    } else {
        ddl
    };
    pg.sql(&db, &ddl)?;
    println!("tables:    {tables} in schema many, {ROWS} rows each; publication {PUBLICATION}");

    // The peer: every table copied out by one psql, as a user would dump them.
    let copy_all: String = (0..tables)
        .map(|i| format!("COPY many.t{i} TO STDOUT;"))
        .collect();
    let began = Instant::now();
    let out = Command::new(psql_path())
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port.to_string()])
        .args(["-U", SUPERUSER, "-d", &db, "-c", &copy_all])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("psql: {e}"))?;
    let psql_copy = began.elapsed();
    if !out.success() {
        return Err(format!("psql COPY failed: {out:?}"));
    }

    let logs = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    // `PGCH_BENCH_LOGS=DIR` keeps pgch's log (with `PGCH_BENCH_LOG_LEVEL`, e.g. `debug`).
    let kept = std::env::var_os("PGCH_BENCH_LOGS").map(PathBuf::from);
    let log_dir = kept.clone().unwrap_or_else(|| logs.path().to_path_buf());
    let level = std::env::var("PGCH_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let database = "bench_many";
    let mut cmd = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_pgch")));
    cmd.arg("run")
        .env("PGCH__SOURCE__URL", pg.superuser_url(&db))
        .env("PGCH__SOURCE__PUBLICATION", PUBLICATION)
        .env("PGCH__SOURCE__SLOT", "bench_many")
        .env("PGCH__DESTINATION__URL", &ch.url)
        .env("PGCH__DESTINATION__USER", &ch.user)
        .env("PGCH__DESTINATION__DATABASE", database)
        .env("PGCH_LOG", &level)
        .env("NO_COLOR", "1")
        .env_remove("PGCH_CONFIG")
        .env_remove("PGCH__PIPELINE__MODE");
    if ch.password.is_empty() {
        cmd.env_remove("PGCH__DESTINATION__PASSWORD");
    } else {
        cmd.env("PGCH__DESTINATION__PASSWORD", &ch.password);
    }
    let mut p = Running::spawn("pgch", cmd, &log_dir.join("many_tables_pgch.log"))?;
    let copied = p.wait_for_log("initial copy complete", Duration::from_secs(600))?;
    let count_sql: String = (0..tables)
        .map(|i| format!("SELECT count() AS n, sum(v) AS s FROM `{database}`.`many_t{i}` FINAL WHERE _is_deleted = 0"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let ch_totals = format!("SELECT toInt64(sum(n)), toInt64(sum(s)) FROM ({count_sql})");
    let got = rt.block_on(ch.query(&ch_totals))?.trim().to_string();
    let want = format!("{}\t{}", tables * ROWS, tables * ROWS * (ROWS + 1) / 2);
    if got != want {
        return Err(format!(
            "after the copy ClickHouse has {got:?}, Postgres {want:?}"
        ));
    }

    // One transaction touching every table.
    let mut tx = String::from("BEGIN;");
    for i in 0..tables {
        tx.push_str(&format!("UPDATE many.t{i} SET v = v + 1000 WHERE id = 1;"));
    }
    tx.push_str("COMMIT;");
    pg.sql(&db, &tx)?;
    let committed = Instant::now();
    let want = format!(
        "{}\t{}",
        tables * ROWS,
        tables * ROWS * (ROWS + 1) / 2 + tables * 1000
    );
    // Polled with a light query: the full check above reads 500 tables `FINAL` and takes
    // over a second on the test front, which would both load the front while pgch
    // inserts and make the figure as coarse as the query. Each updated row is the only
    // one of its table with `v > 1000`; its key is the sort key, so the poll reads a
    // granule per table. The full check runs once afterwards.
    let poll = format!(
        "SELECT count() FROM merge('{database}', '^many_t[0-9]+$') WHERE id = 1 AND v > 1000"
    );
    let mut slowest_poll = Duration::ZERO;
    let (visible, seen_by) = loop {
        let started = committed.elapsed();
        let got = rt.block_on(ch.query(&poll))?;
        let ended = committed.elapsed();
        slowest_poll = slowest_poll.max(ended - started);
        if got.trim() == tables.to_string() {
            break (ended, started);
        }
        if committed.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "the transaction was not visible after 300 s; log:\n{}",
                p.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let got = rt.block_on(ch.query(&ch_totals))?.trim().to_string();
    if got != want {
        return Err(format!(
            "after the transaction ClickHouse has {got:?} (count, sum under FINAL), expected {want:?}"
        ));
    }
    let hwm = p.hwm_kib().unwrap_or(0);
    p.terminate();
    let exited = p.wait(Duration::from_secs(120), || {})?;
    let retries = exited.log.matches("retrying").count();
    let peak = hwm.max(exited.max_rss_kib) as f64 / 1024.0;
    // The front's own floor for the same work: one single-row insert into each of as
    // many fresh tables of the same kind, 8 at a time (pgch's default concurrency), from
    // a bare client, after pgch has stopped.
    let floor = rt.block_on(bare_inserts(&ch, database, tables))?;
    println!(
        "initial copy of {tables} tables: pgch {:.2} s from process start (target <= 20 s) \
         vs one psql COPY of every table to /dev/null {:.2} s",
        copied.as_secs_f64(),
        psql_copy.as_secs_f64()
    );
    println!(
        "one transaction updating a row in each of {tables} tables: visible in ClickHouse \
         {:.2} s after its commit (target <= 2 s); inserts retried: {retries}; peak RSS \
         {peak:.1} MiB (target <= 256)",
        visible.as_secs_f64()
    );
    println!(
        "  (the first poll that saw every change began {:.2} s after the commit; slowest \
         poll {:.2} s; {tables} bare single-row INSERTs through the same ClickHouse, 8 at \
         a time: {:.2} s)",
        seen_by.as_secs_f64(),
        slowest_poll.as_secs_f64(),
        floor.as_secs_f64()
    );
    println!(
        "RESULT many_tables tables={tables} copy_s={:.2} psql_copy_s={:.2} one_tx_visible_s={:.2} bare_inserts_s={:.2} retries={retries} peak_rss_mib={peak:.1}",
        copied.as_secs_f64(),
        psql_copy.as_secs_f64(),
        visible.as_secs_f64(),
        floor.as_secs_f64()
    );
    Ok(())
}

/// `tables` single-row INSERTs, each into a table of its own (created first, not timed),
/// at most 8 at once: what the ClickHouse endpoint itself needs for one row per table.
async fn bare_inserts(ch: &ClickHouse, database: &str, tables: u64) -> Result<Duration, String> {
    use futures_util::StreamExt;
    for i in 0..tables {
        ch.query(&format!(
            "CREATE TABLE `{database}`.floor_t{i} (id Int64, v Int64, t String, _version UInt64, \
             _is_deleted UInt8) ENGINE = ReplacingMergeTree(_version, _is_deleted) ORDER BY id"
        ))
        .await
        .map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(0..tables)
        .map(|i| async move {
            ch.query(&format!(
                "INSERT INTO `{database}`.floor_t{i} VALUES (1, 1001, 'x', 1, 0)"
            ))
            .await
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let elapsed = started.elapsed();
    for r in results {
        r.map_err(|e| e.to_string())?;
    }
    Ok(elapsed)
}
