//! Decoding from a hot standby (issue 12 item 4, Postgres 16+): pgch's source URL leads
//! to a standby of a cold-copied primary (`hot_standby_feedback = on`, a physical slot),
//! `source.standby_decoding = true`, and `source.primary_url` given for the checks and
//! for the running-transactions record slot creation waits for. The slot is made on the
//! standby, every table is copied there — the primary's scan counters do not move —
//! and the workload on the primary streams through; the standby is then promoted
//! mid-workload (the primary stopped with `-m immediate`), and the same pgch process
//! carries on from it with nothing copied again.
//!
//! Runs on Postgres 16 (or `PGCH_TEST_PG_MAJOR` when that is 16 or newer).

mod common;

use std::time::Duration;

use common::converge::{env_value, log_path, wait_streaming, wait_until};
use common::failover::{assert_carried_on, fail_over_mid_workload};
use common::process::PgchProcess;
use common::workload::{copy_records, run_transactions, wait_equal, Workload, SCHEMA};
use common::{env_for, guide_source, settings_for, GuideSource, PublicationShape};
use pgch::check::{self, Outcome};
use pgch::testkit::postgres::{loopback_url, PgCluster, PgOptions};
use pgch::testkit::versions;

fn major() -> u32 {
    std::env::var("PGCH_TEST_PG_MAJOR")
        .ok()
        .and_then(|m| m.parse().ok())
        .filter(|m| *m >= 16)
        .unwrap_or(16)
}

fn url_of(pg: &PgCluster, src: &GuideSource) -> String {
    loopback_url(pg.port, &src.user, Some(&src.password), &src.database)
}

/// Scans of the published tables counted by `pg`: a copy read there adds to them.
fn table_scans(pg: &PgCluster, db: &str) -> i64 {
    pg.sql(
        db,
        "SELECT pg_stat_force_next_flush(); SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) \
         FROM pg_stat_user_tables WHERE relname LIKE 'w\\_%'",
    )
    .ok()
    .and_then(|out| out.lines().last().and_then(|l| l.trim().parse().ok()))
    .unwrap_or(-1)
}

/// Whether the standby has replayed everything the primary wrote.
fn caught_up(primary: &PgCluster, standby: &PgCluster) -> bool {
    let written = primary
        .sql("postgres", "SELECT pg_current_wal_lsn()")
        .unwrap_or_default();
    standby
        .sql(
            "postgres",
            &format!(
                "SELECT pg_last_wal_replay_lsn() >= '{}'::pg_lsn",
                written.trim()
            ),
        )
        .map(|s| s.trim() == "t")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_decoding_copies_and_streams_from_the_standby_and_carries_on_after_its_promotion() {
    let bin = versions::bin_dir(major()).expect("Postgres 16+ binaries (run .ci/install)");
    let primary = PgCluster::start(PgOptions {
        bin_dir: Some(bin),
        ..PgOptions::default()
    })
    .expect("start the primary");
    primary
        .sql(
            "postgres",
            "SELECT pg_create_physical_replication_slot('standby_d', true)",
        )
        .unwrap();
    let src = guide_source(&primary, None, PublicationShape::ForTable);
    primary.sql(&src.database, SCHEMA).unwrap();
    // What docs/planetscale.md suggests, so pgch can ask for a running-transactions record.
    primary
        .sql(
            "postgres",
            &format!(
                "GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() TO \"{}\"",
                src.user
            ),
        )
        .unwrap();
    let standby = primary
        .cold_standby(&[
            ("primary_slot_name", "'standby_d'"),
            ("hot_standby_feedback", "on"),
        ])
        .unwrap();
    let mut w = Workload::new(0x57a0_db1e);
    run_transactions(&primary, &src.database, &mut w, 20);
    wait_until(Duration::from_secs(60), "the standby catches up", || {
        caught_up(&primary, &standby)
    })
    .await;

    let extra = [
        ("PGCH__SOURCE__STANDBY_DECODING", "true"),
        ("PGCH__SOURCE__PRIMARY_URL", &url_of(&primary, &src) as &str),
    ];
    // `pgch check` on the standby: standby mode instead of a failed `primary`.
    let report = check::run(&settings_for(
        &url_of(&standby, &src),
        &src.publication,
        &extra,
    ))
    .await;
    let text = report.render_text();
    assert!(!report.has_failures(), "{text}");
    for name in [
        "primary",
        "standby_hot_standby_feedback",
        "primary_wal_level",
    ] {
        let got: Vec<Outcome> = report.named(name).iter().map(|c| c.outcome).collect();
        assert_eq!(got, [Outcome::Ok], "{name}\n{text}");
    }
    assert!(text.contains("standby mode"), "{text}");
    // Without the opt-in the standby is refused, as before.
    let refused = check::run(&settings_for(
        &url_of(&standby, &src),
        &src.publication,
        &[],
    ))
    .await;
    assert!(refused.has_failures(), "{}", refused.render_text());
    assert!(refused
        .render_text()
        .contains("source.standby_decoding = true"));

    std::thread::sleep(Duration::from_millis(1500));
    let primary_scans = table_scans(&primary, &src.database);
    let standby_scans = table_scans(&standby, &src.database);
    assert!(primary_scans >= 0 && standby_scans >= 0);

    let env = env_for(&url_of(&standby, &src), &src.publication, &extra);
    let slot = env_value(&env, "PGCH__SOURCE__SLOT");
    let ch_db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-standby-decoding");
    let mut pgch = PgchProcess::run(&env, &[], log.clone());
    wait_streaming(&standby, &src.database, &slot, Duration::from_secs(120)).await;
    // Compared with the standby (caught up, no workload yet): reading the primary here
    // would count as scans there.
    wait_equal(&standby, &src.database, &ch_db, &log).await;
    let copies = copy_records(&ch_db).await;
    assert!(copies.contains("complete/"), "{copies}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        table_scans(&primary, &src.database),
        primary_scans,
        "the primary did no copy work"
    );
    assert!(
        table_scans(&standby, &src.database) > standby_scans,
        "the copy read the standby"
    );
    assert!(
        primary
            .sql(
                &src.database,
                &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'")
            )
            .unwrap()
            .trim()
            == "0",
        "the slot lives on the standby only"
    );

    // Streaming: the workload on the primary arrives through the standby.
    run_transactions(&primary, &src.database, &mut w, 30);
    wait_equal(&primary, &src.database, &ch_db, &log).await;

    // Mid-workload the primary dies and the standby is promoted.
    fail_over_mid_workload(&primary, &standby, &src.database, &mut w, 20, 30);
    assert_carried_on(&mut pgch, &standby, &src.database, &ch_db, &log, &copies).await;
    pgch.stop();
}
