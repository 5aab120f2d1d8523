//! Waiting for ClickHouse to equal Postgres, and the small steps tests around a running
//! pgch share (its log, its settings, `pgch resync`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;
use pgch::testkit::unique_name;

/// The value of `key` in a pgch environment.
pub fn env_value(env: &[(String, String)], key: &str) -> String {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// A fresh log file for one pgch process.
pub fn log_path(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.log", unique_name(prefix)))
}

/// What pgch has logged so far (empty before its first line).
pub fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// The last `lines` lines of a pgch log: for failures of tests whose log runs long.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = log_text(log);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a walsender holds `slot`.
pub fn slot_active(pg: &PgCluster, db: &str, slot: &str) -> bool {
    pg.sql(
        db,
        &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
    .map(|s| s.trim() == "t")
    .unwrap_or(false)
}

/// Waits until the Postgres query and the ClickHouse query print the same rows.
pub async fn wait_same(
    pg: &PgCluster,
    db: &str,
    pg_sql: &str,
    ch_sql: &str,
    limit: Duration,
    log: &PathBuf,
) {
    let deadline = Instant::now() + limit;
    loop {
        let p = pg
            .sql(db, pg_sql)
            .unwrap_or_default()
            .trim()
            .replace('|', "\t");
        let c = ClickHouse::shared()
            .query(ch_sql)
            .await
            .unwrap_or_default()
            .trim()
            .to_string();
        if p == c {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "not equal after {limit:?}\npostgres:   {p}\nclickhouse: {c}\n--- pgch log ---\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `check` holds, or fails the test naming `what`.
pub async fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `check` (an async one: a ClickHouse query) holds, or fails the test
/// naming `what`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until a walsender holds `slot`: the started pgch streams.
pub async fn wait_streaming(pg: &PgCluster, db: &str, slot: &str, limit: Duration) {
    wait_until(limit, "pgch streams", || slot_active(pg, db, slot)).await;
}

/// Waits until the pgch log holds `line`: some steps show only in what pgch says.
pub async fn wait_logged(log: &Path, line: &str, limit: Duration) {
    wait_until(limit, &format!("pgch logs `{line}`"), || {
        log_text(log).contains(line)
    })
    .await;
}

/// Waits until at least `copies` copies hold their snapshots (idle in a transaction
/// with an xmin): under a [`super::process::CopyHold`], the copies have begun.
pub async fn wait_snapshots_held(pg: &PgCluster, db: &str, copies: usize, limit: Duration) {
    let sql = format!(
        "SELECT count(*) >= {copies} FROM pg_stat_activity WHERE backend_xmin IS NOT NULL AND state = 'idle in transaction'"
    );
    wait_until(limit, "the copies hold their snapshots", || {
        pg.sql(db, &sql).map(|s| s.trim() == "t").unwrap_or(false)
    })
    .await;
}

/// Runs `pgch resync --table <table>` with `env` once and expects success — also right
/// after a `pgch run` exited, whose walsender may hold the slot a moment longer: pgch
/// waits for it (issue #16), the test does not retry.
pub fn resync_table(env: &[(String, String)], table: &str) {
    let out = super::process::pgch_output(&["resync", "--table", table], env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgch resync: {stderr}");
}
