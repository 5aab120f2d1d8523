//! ClickHouse gone for three minutes mid-stream — longer than Postgres' default 60 s
//! `wal_sender_timeout` — behind a loopback proxy the test cuts (it works the same in
//! front of pgch's test front and a real server). pgch keeps its replication connection
//! alive with status updates while its inserts fail, catches up when ClickHouse is
//! back, and loses nothing. `PGCH_TEST_OUTAGE_SECS` shortens the outage for a quick run.

mod common;

use std::time::{Duration, Instant};

use common::converge::{env_value, log_path, log_text};
use common::process::PgchProcess;
use common::workload::{duplicate_keys, run_transactions, wait_equal_within, Workload, SCHEMA};
use common::{clickhouse_addr, guide_env, guide_source, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;
use pgch::testkit::proxy::TcpProxy;

fn active_pid(pg: &PgCluster, db: &str, slot: &str) -> String {
    pg.sql(
        db,
        &format!("SELECT coalesce(active_pid::text, 'none') FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
    .unwrap_or_default()
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_gone_for_three_minutes_then_back_loses_nothing() {
    let outage = Duration::from_secs(
        std::env::var("PGCH_TEST_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180),
    );
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(&src.database, SCHEMA).unwrap();
    let timeout = pg
        .sql(&src.database, "SHOW wal_sender_timeout")
        .unwrap()
        .trim()
        .to_string();

    let proxy = TcpProxy::start(clickhouse_addr()).unwrap();
    let via_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let env = guide_env(pg, &src, &[("PGCH__DESTINATION__URL", via_proxy.as_str())]);
    let (slot, ch_db) = (
        env_value(&env, "PGCH__SOURCE__SLOT"),
        env_value(&env, "PGCH__DESTINATION__DATABASE"),
    );
    let log = log_path("pgch-outage");
    let mut pgch = PgchProcess::run(&env, &[], log.clone());

    let mut workload = Workload::new(42);
    run_transactions(pg, &src.database, &mut workload, 40);
    wait_equal_within(pg, &src.database, &ch_db, Duration::from_secs(120), &log).await;
    let pid_before = active_pid(pg, &src.database, &slot);

    proxy.cut();
    let cut_at = Instant::now();
    run_transactions(pg, &src.database, &mut workload, 60);
    let mut pids_seen = vec![pid_before.clone()];
    while cut_at.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            pgch.try_status().is_none(),
            "pgch gave up during the outage:\n{}",
            log_text(&log)
        );
        let pid = active_pid(pg, &src.database, &slot);
        if pids_seen.last() != Some(&pid) {
            pids_seen.push(pid);
        }
    }
    proxy.restore();
    wait_equal_within(pg, &src.database, &ch_db, Duration::from_secs(180), &log).await;
    assert_eq!(
        duplicate_keys(ClickHouse::shared(), &ch_db).await,
        0,
        "no key twice under FINAL"
    );
    eprintln!(
        "outage of {outage:?} (wal_sender_timeout {timeout}): walsender pids seen {pids_seen:?} — {}",
        if pids_seen.len() == 1 {
            "the replication connection was kept throughout"
        } else {
            "the replication connection was re-established"
        }
    );
    pgch.stop();
}
