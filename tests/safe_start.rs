//! A wrong setup is refused before anything is created (issue #16): `pgch run` and
//! `pgch resync` run the fatal checks first, so a typo'd publication, a missing grant or
//! `wal_level = replica` exits non-zero with the fix — and leaves no replication slot
//! (which would hold WAL until the disk fills) and no ClickHouse database behind.

mod common;

use std::time::Duration;

use common::converge::{env_value, log_path, log_text, wait_logged, wait_same};
use common::process::{pgch_output, PgchProcess};
use common::{guide_env, guide_source, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::{PgCluster, PgOptions};

/// Runs `pgch run` to its exit and returns what it printed; panics if it keeps running.
fn refused_run(env: &[(String, String)], prefix: &str) -> String {
    let log = log_path(prefix);
    let pgch = PgchProcess::run(env, &[], log.clone());
    let status = pgch
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("pgch run kept running on a wrong setup; log {log:?}"));
    let printed = log_text(&log);
    assert!(!status.success(), "pgch run exited 0: {printed}");
    assert!(
        printed.contains("nothing was created"),
        "says nothing was created: {printed}"
    );
    printed
}

/// Asserts that neither the slot nor the destination database exists.
async fn nothing_created(pg: &PgCluster, database: &str, env: &[(String, String)]) {
    let slot = env_value(env, "PGCH__SOURCE__SLOT");
    let slots = pg
        .sql(
            database,
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
        .unwrap();
    assert_eq!(slots.trim(), "0", "no replication slot {slot} left behind");
    let db = env_value(env, "PGCH__DESTINATION__DATABASE");
    let databases = ClickHouse::shared()
        .query(&format!(
            "SELECT count() FROM system.databases WHERE name = '{db}'"
        ))
        .await
        .unwrap();
    assert_eq!(databases.trim(), "0", "no ClickHouse database {db} created");
}

#[tokio::test]
async fn a_wrong_publication_name_is_refused_with_create_publication_and_no_slot() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let env = guide_env(pg, &src, &[("PGCH__SOURCE__PUBLICATION", "nope")]);
    let printed = refused_run(&env, "pgch-safe-start-publication");
    assert!(
        printed.contains("publication \"nope\" does not exist"),
        "names the cause: {printed}"
    );
    assert!(
        printed.contains("CREATE PUBLICATION \"nope\""),
        "gives the fix: {printed}"
    );
    assert!(
        !printed.contains("lists no tables"),
        "not the wrong cause: {printed}"
    );
    nothing_created(pg, &src.database, &env).await;
}

#[tokio::test]
async fn a_missing_select_grant_is_refused_with_the_grant_and_no_slot() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        &format!("REVOKE SELECT ON public.orders FROM \"{}\";", src.user),
    )
    .unwrap();
    let env = guide_env(pg, &src, &[]);
    let printed = refused_run(&env, "pgch-safe-start-grant");
    assert!(
        printed.contains("lacks SELECT on the table public.orders"),
        "{printed}"
    );
    assert!(printed.contains("GRANT SELECT"), "{printed}");
    nothing_created(pg, &src.database, &env).await;
}

#[tokio::test]
async fn wal_level_replica_is_refused_with_the_setting_and_no_slot() {
    let pg = PgCluster::start(PgOptions::default().setting("wal_level", "replica")).unwrap();
    let src = guide_source(&pg, None, PublicationShape::ForTable);
    let env = guide_env(&pg, &src, &[]);
    let printed = refused_run(&env, "pgch-safe-start-wal-level");
    assert!(printed.contains("wal_level is replica"), "{printed}");
    assert!(printed.contains("wal_level = logical"), "{printed}");
    nothing_created(&pg, &src.database, &env).await;
}

#[tokio::test]
async fn pgch_resync_refuses_a_wrong_setup_before_changing_anything() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let env = guide_env(pg, &src, &[("PGCH__SOURCE__PUBLICATION", "nope")]);
    let out = pgch_output(&["resync", "--table", "public.orders"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pgch resync exited 0: {stderr}");
    assert!(
        stderr.contains("pgch resync: the setup is not ready"),
        "{stderr}"
    );
    assert!(stderr.contains("CREATE PUBLICATION \"nope\""), "{stderr}");
    nothing_created(pg, &src.database, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_schema_publication_starts_and_copies_a_table_created_later() {
    let pg = PgCluster::shared();
    if pg.version_num < 150000 {
        eprintln!("FOR TABLES IN SCHEMA needs Postgres 15+; skipped");
        return;
    }
    let src = guide_source(pg, None, PublicationShape::ForTable);
    // The docker-compose order: pgch starts before the migrations create the tables.
    pg.sql(
        &src.database,
        &format!(
            "CREATE SCHEMA later;
             GRANT USAGE ON SCHEMA later TO \"{u}\";
             ALTER DEFAULT PRIVILEGES IN SCHEMA later GRANT SELECT ON TABLES TO \"{u}\";
             CREATE PUBLICATION waiting FOR TABLES IN SCHEMA later;",
            u = src.user
        ),
    )
    .unwrap();
    let env = guide_env(pg, &src, &[("PGCH__SOURCE__PUBLICATION", "waiting")]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-safe-start-empty-schema");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    wait_logged(&log, "streaming changes", Duration::from_secs(60)).await;
    let printed = log_text(&log);
    assert!(
        printed.contains("lists no tables yet") && printed.contains("schema later"),
        "says it waits for tables: {printed}"
    );

    pg.sql(
        &src.database,
        "CREATE TABLE later.events (id int PRIMARY KEY, v text);
         INSERT INTO later.events SELECT g, 'v' || g FROM generate_series(1, 200) g;",
    )
    .unwrap();
    let pg_sql = "SELECT count(*), sum(length(v)) FROM later.events";
    let ch_sql = format!(
        "SELECT count(), sum(lengthUTF8(v)) FROM `{db}`.`later_events` FINAL WHERE _is_deleted = 0"
    );
    wait_same(
        pg,
        &src.database,
        pg_sql,
        &ch_sql,
        Duration::from_secs(90),
        &log,
    )
    .await;
    // … and streamed from then on.
    pg.sql(
        &src.database,
        "UPDATE later.events SET v = v || v WHERE id % 2 = 0;
         DELETE FROM later.events WHERE id > 190;
         INSERT INTO later.events VALUES (1000, 'new');",
    )
    .unwrap();
    wait_same(
        pg,
        &src.database,
        pg_sql,
        &ch_sql,
        Duration::from_secs(60),
        &log,
    )
    .await;
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_failing_after_creating_its_slot_drops_the_slot_again() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let env = guide_env(pg, &src, &[]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    // Found only once the tables are planned: a ClickHouse table of another shape
    // (a column pgch cannot explain where `total` should be).
    let ch = ClickHouse::shared();
    ch.query(&format!("CREATE DATABASE `{db}`")).await.unwrap();
    ch.query(&format!(
        "CREATE TABLE `{db}`.`public_orders` (id Int64, customer_id Nullable(Int64), amount Nullable(String)) ENGINE = MergeTree ORDER BY id"
    ))
    .await
    .unwrap();
    let log = log_path("pgch-safe-start-late-failure");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    let status = pgch
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("pgch kept running; log {log:?}"));
    let printed = log_text(&log);
    assert!(!status.success(), "exits non-zero: {printed}");
    assert!(
        printed.contains("dropped the replication slot this failed start created"),
        "{printed}"
    );
    let slot = env_value(&env, "PGCH__SOURCE__SLOT");
    let slots = pg
        .sql(
            &src.database,
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
        .unwrap();
    assert_eq!(slots.trim(), "0", "no slot {slot} left behind: {printed}");

    // Fixed, the next start makes a slot of its own and copies.
    ch.query(&format!("DROP TABLE `{db}`.`public_orders`"))
        .await
        .unwrap();
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g, g FROM generate_series(1, 50) g;",
    )
    .unwrap();
    let pgch = PgchProcess::run(&env, &[], log.clone());
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(id) FROM public.orders",
        &format!("SELECT count(), sum(id) FROM `{db}`.`public_orders` FINAL WHERE _is_deleted = 0"),
        Duration::from_secs(60),
        &log,
    )
    .await;
    pgch.stop();
}
