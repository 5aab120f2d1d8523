//! Failovers on Postgres 17+ (issue 12): a primary and a hot standby made by a cold copy
//! (the npm server binaries have no `pg_basebackup`); pgch reaches "the primary" through
//! a two-host URL with `target_session_attrs=read-write`, or through a TCP proxy that is
//! moved to the promoted standby — what a client sees when a host name that follows the
//! primary (PlanetScale's) moves.
//!
//! - A standby that synchronizes slots: `pgch check` passes every failover line, the
//!   metrics say the slot is a failover slot synced on 1 standby; the primary is
//!   stopped with `-m immediate` mid-workload and the standby promoted; the same pgch
//!   process, given both hosts, carries on from the new primary, nothing copied again,
//!   every table equal.
//! - A standby that does not: `pgch check` names each missing setting, the metric says
//!   0, and after the failover (through the proxy) pgch stops with "resync required"
//!   and the fix.
//!
//! Runs on Postgres 17 (or `PGCH_TEST_PG_MAJOR` when that is 17 or newer).

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::converge::{env_value, log_path, log_text, slot_active, wait_streaming};
use common::failover::{assert_carried_on, fail_over_mid_workload};
use common::process::PgchProcess;
use common::scrape::{http_get, value};
use common::workload::{copy_records, run_transactions, wait_equal, Workload, SCHEMA};
use common::{env_for, guide_source, settings_for, GuideSource, PublicationShape};
use pgch::check::{self, Outcome};
use pgch::testkit::postgres::{loopback_url, PgCluster, PgOptions};
use pgch::testkit::proxy::TcpProxy;
use pgch::testkit::versions;

fn major() -> u32 {
    std::env::var("PGCH_TEST_PG_MAJOR")
        .ok()
        .and_then(|m| m.parse().ok())
        .filter(|m| *m >= 17)
        .unwrap_or(17)
}

fn primary() -> PgCluster {
    let bin = versions::bin_dir(major()).expect("Postgres 17+ binaries (run .ci/install)");
    PgCluster::start(PgOptions {
        bin_dir: Some(bin),
        ..PgOptions::default()
    })
    .expect("start the primary")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn addr(pg: &PgCluster) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], pg.port))
}

fn url_of(port: u16, src: &GuideSource) -> String {
    loopback_url(port, &src.user, Some(&src.password), &src.database)
}

/// The value of `name{slot="…"}` on `/metrics`.
async fn gauge(port: u16, name: &str, slot: &str) -> Option<f64> {
    let (_, text) = http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/metrics").await?;
    value(&text, name, &format!("slot=\"{slot}\""))
}

async fn wait_gauge(port: u16, name: &str, slot: &str, want: f64, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = gauge(port, name, slot).await;
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {got:?}, want {want}\n--- pgch log ---\n{}",
            log_text(log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A running `pgch run` that watches `standby`, and what the test reads of it.
struct Streaming {
    pgch: PgchProcess,
    slot: String,
    ch_db: String,
    log: PathBuf,
    metrics_port: u16,
}

/// Starts pgch on `source_url` (scraping every second) and waits until it streams.
async fn start_streaming(
    source_url: &str,
    src: &GuideSource,
    primary: &PgCluster,
    standby: &PgCluster,
    log_prefix: &str,
) -> Streaming {
    let metrics_port = free_port();
    let env = env_for(
        source_url,
        &src.publication,
        &[
            ("PGCH__SOURCE__STANDBY_URLS", &url_of(standby.port, src)),
            (
                "PGCH__METRICS__LISTEN",
                &format!("127.0.0.1:{metrics_port}"),
            ),
            ("PGCH__METRICS__SLOT_POLL_SECS", "1"),
        ],
    );
    let slot = env_value(&env, "PGCH__SOURCE__SLOT");
    let ch_db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path(log_prefix);
    let pgch = PgchProcess::run(&env, &[], log.clone());
    wait_streaming(primary, &src.database, &slot, Duration::from_secs(90)).await;
    Streaming {
        pgch,
        slot,
        ch_db,
        log,
        metrics_port,
    }
}

/// `pgch check` as the guide's user on the primary, with `standby` named.
async fn failover_report(
    primary: &PgCluster,
    src: &GuideSource,
    slot: &str,
    standby: &PgCluster,
) -> check::Report {
    let settings = settings_for(
        &url_of(primary.port, src),
        &src.publication,
        &[
            ("PGCH__SOURCE__SLOT", slot),
            ("PGCH__SOURCE__STANDBY_URLS", &url_of(standby.port, src)),
        ],
    );
    check::run(&settings).await
}

fn outcome_of(report: &check::Report, name: &str) -> Vec<Outcome> {
    report.named(name).iter().map(|c| c.outcome).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_standby_that_synchronizes_slots_loses_nothing_and_copies_nothing_again() {
    let primary = primary();
    primary
        .sql(
            "postgres",
            "SELECT pg_create_physical_replication_slot('standby_a', true)",
        )
        .unwrap();
    let src = guide_source(&primary, None, PublicationShape::ForTable);
    primary.sql(&src.database, SCHEMA).unwrap();
    let standby = primary
        .cold_standby(&[
            ("primary_slot_name", "'standby_a'"),
            ("hot_standby_feedback", "on"),
            ("sync_replication_slots", "on"),
            (
                "primary_conninfo",
                &format!(
                    "'host=127.0.0.1 port={} user=postgres dbname=postgres'",
                    primary.port
                ),
            ),
        ])
        .unwrap();
    primary
        .sql(
            "postgres",
            "ALTER SYSTEM SET synchronized_standby_slots = 'standby_a'; SELECT pg_reload_conf();",
        )
        .unwrap();

    // Both hosts, libpq style: pgch finds whichever is primary now.
    let two_hosts = url_of(primary.port, &src).replacen(
        &format!(":{}/", primary.port),
        &format!(":{},127.0.0.1:{}/", primary.port, standby.port),
        1,
    ) + "&target_session_attrs=read-write";
    assert!(two_hosts.contains(','), "{two_hosts}");
    let Streaming {
        mut pgch,
        slot,
        ch_db,
        log,
        metrics_port,
    } = start_streaming(&two_hosts, &src, &primary, &standby, "pgch-failover").await;

    let mut w = Workload::new(0x0fa1_10e7);
    run_transactions(&primary, &src.database, &mut w, 20);
    wait_gauge(metrics_port, "pgch_slot_failover", &slot, 1.0, &log).await;
    wait_gauge(
        metrics_port,
        "pgch_slot_synced_on_standbys",
        &slot,
        1.0,
        &log,
    )
    .await;

    // pgch check, as the guide's user, with the standby named: every failover line passes.
    let report = failover_report(&primary, &src, &slot, &standby).await;
    for name in [
        "failover_slot",
        "synchronized_standby_slots",
        "standby_sync_replication_slots",
        "standby_hot_standby_feedback",
        "standby_primary_slot_name",
        "standby_slot_synced",
    ] {
        assert_eq!(
            outcome_of(&report, name),
            [Outcome::Ok],
            "{name}\n{}",
            report.render_text()
        );
    }
    // primary_conninfo holds a password: the guide's user may not read it.
    assert_eq!(
        outcome_of(&report, "standby_primary_conninfo"),
        [Outcome::NotApplicable]
    );

    wait_equal(&primary, &src.database, &ch_db, &log).await;
    let copies_before = copy_records(&ch_db).await;
    assert!(copies_before.contains("complete/"), "{copies_before}");

    // Mid-workload the primary dies without a clean stop; the workload goes on against
    // the new primary, and pgch finds it and its slot there.
    fail_over_mid_workload(&primary, &standby, &src.database, &mut w, 30, 30);
    let text = assert_carried_on(
        &mut pgch,
        &standby,
        &src.database,
        &ch_db,
        &log,
        &copies_before,
    )
    .await;
    assert!(slot_active(&standby, &src.database, &slot));
    assert!(
        text.contains("replication session lost"),
        "pgch saw the failover:\n{text}"
    );
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_does_not_synchronize_slots_is_named_by_check_and_a_failover_to_it_stops_with_resync_required(
) {
    let primary = primary();
    let src = guide_source(&primary, None, PublicationShape::ForTable);
    primary.sql(&src.database, SCHEMA).unwrap();
    let standby = primary.cold_standby(&[]).unwrap();

    let proxy = TcpProxy::start(addr(&primary)).unwrap();
    let Streaming {
        pgch,
        slot,
        ch_db,
        log,
        metrics_port,
    } = start_streaming(
        &url_of(proxy.port, &src),
        &src,
        &primary,
        &standby,
        "pgch-failover-not-ready",
    )
    .await;
    wait_gauge(metrics_port, "pgch_slot_failover", &slot, 1.0, &log).await;
    wait_gauge(
        metrics_port,
        "pgch_slot_synced_on_standbys",
        &slot,
        0.0,
        &log,
    )
    .await;

    let report = failover_report(&primary, &src, &slot, &standby).await;
    for name in [
        "standby_sync_replication_slots",
        "standby_hot_standby_feedback",
        "standby_primary_slot_name",
        "standby_slot_synced",
        "synchronized_standby_slots",
    ] {
        assert_eq!(
            outcome_of(&report, name),
            [Outcome::Warning],
            "{name}\n{}",
            report.render_text()
        );
    }
    let text = report.render_text();
    assert!(text.contains("sync_replication_slots = on"), "{text}");
    assert!(!report.has_failures(), "pgch works today:\n{text}");

    let mut w = Workload::new(0x0bad_5107);
    run_transactions(&primary, &src.database, &mut w, 20);
    wait_equal(&primary, &src.database, &ch_db, &log).await;
    primary.stop_server("immediate").unwrap();
    standby.promote().unwrap();
    proxy.retarget(addr(&standby));
    run_transactions(&standby, &src.database, &mut w, 5);

    let status = pgch
        .wait(Duration::from_secs(120))
        .expect("pgch stops after a failover that lost its slot");
    assert!(!status.success(), "{status:?}");
    let text = log_text(&log);
    assert!(text.contains("resync required"), "{text}");
    assert!(
        text.contains("sync_replication_slots = on"),
        "the fix: {text}"
    );
}
