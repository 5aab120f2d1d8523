//! Failover slots (Postgres 17+): pgch creates its slot with `FAILOVER true` unless
//! `source.failover_slot = false`, and turns failover on for a slot of its own that has
//! it off. Older servers get an ordinary slot. Runs on whichever major the shared
//! cluster is (`PGCH_TEST_PG_MAJOR`; CI runs it on every major).

mod common;

use std::time::Duration;

use common::converge::{env_value, log_path, slot_active, wait_streaming, wait_until};
use common::process::PgchProcess;
use common::{guide_env, guide_source, PublicationShape};
use pgch::testkit::postgres::PgCluster;

/// `pg_replication_slots.failover` of `slot` ("t"/"f"), or "n/a" before Postgres 17.
fn failover_flag(pg: &PgCluster, db: &str, slot: &str) -> String {
    if pg.version_num < 170000 {
        return "n/a".into();
    }
    pg.sql(
        db,
        &format!("SELECT failover FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
    .unwrap()
    .trim()
    .to_string()
}

async fn run_until_streaming(
    pg: &PgCluster,
    db: &str,
    env: &[(String, String)],
    slot: &str,
) -> PgchProcess {
    let log = log_path("pgch-failover-slot");
    let pgch = PgchProcess::run(env, &[], log.clone());
    wait_streaming(pg, db, slot, Duration::from_secs(60)).await;
    pgch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_is_a_failover_slot_where_the_server_has_them_and_an_opt_out_is_honoured_then_switched_on(
) {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let opt_out = guide_env(pg, &src, &[("PGCH__SOURCE__FAILOVER_SLOT", "false")]);
    let slot = env_value(&opt_out, "PGCH__SOURCE__SLOT");

    // Opted out: an ordinary slot.
    let pgch = run_until_streaming(pg, &src.database, &opt_out, &slot).await;
    let flag = failover_flag(pg, &src.database, &slot);
    assert!(
        flag == "f" || flag == "n/a",
        "failover_slot = false: {flag}"
    );
    pgch.stop();
    wait_until(Duration::from_secs(30), "the walsender lets go", || {
        !slot_active(pg, &src.database, &slot)
    })
    .await;

    // The default, on the same slot and state: failover is switched on at start.
    let default: Vec<(String, String)> = opt_out
        .iter()
        .filter(|(k, _)| k != "PGCH__SOURCE__FAILOVER_SLOT")
        .cloned()
        .collect();
    let pgch = run_until_streaming(pg, &src.database, &default, &slot).await;
    let flag = failover_flag(pg, &src.database, &slot);
    if pg.version_num >= 170000 {
        assert_eq!(flag, "t", "the recorded slot became a failover slot");
    } else {
        eprintln!(
            "Postgres {}: no failover slots; an ordinary slot",
            pg.version_num
        );
    }
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_creates_a_failover_slot_on_postgres_17_and_newer() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let env = guide_env(pg, &src, &[]);
    let slot = env_value(&env, "PGCH__SOURCE__SLOT");
    let pgch = run_until_streaming(pg, &src.database, &env, &slot).await;
    let flag = failover_flag(pg, &src.database, &slot);
    match pg.version_num >= 170000 {
        true => assert_eq!(flag, "t", "created with FAILOVER true"),
        false => assert_eq!(flag, "n/a"),
    }
    pgch.stop();
}
