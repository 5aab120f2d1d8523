//! What happens to the source while pgch is stopped is noticed at the next start
//! (DESIGN.md rules 3 and 8): a partition attached meanwhile is copied, one detached
//! meanwhile asks for a resync, a streamed TRUNCATE of the root is no leaf truncate
//! after a crash, and a table that left the publication and joined again — while pgch
//! was stopped, or while it was stopped and then running — or was dropped and created
//! again under a schema publication, is resynced, never resumed with the changes it
//! missed (nor with rows written before it left replayed over the resync's copy).

mod common;

use std::time::Duration;

use common::converge::{env_value, log_path, log_text, resync_table, wait_logged, wait_same};
use common::partitions::{ch_sums, partitioned_source, PG_SUMS};
use common::process::PgchProcess;
use common::{guide_env, guide_source, PublicationShape};
use pgch::testkit::postgres::PgCluster;

/// Starts pgch and expects it to stop at once with a resync naming `table`.
async fn expect_resync_required(env: &[(String, String)], log: &std::path::Path, table: &str) {
    let text = PgchProcess::run(env, &[], log.to_path_buf())
        .wait_refusal(Duration::from_secs(90))
        .await;
    assert!(
        text.contains(&format!("pgch resync --table {table}")),
        "the fix is named: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_attached_or_detached_while_pgch_was_stopped_are_noticed_at_the_next_start() {
    let pg = PgCluster::shared();
    let Some(src) = partitioned_source(pg) else {
        return;
    };
    let env = guide_env(pg, &src, &[]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-stopped-partitions");
    let pg_sql = PG_SUMS;
    let ch_sql = ch_sums(&db);
    let same = |limit| wait_same(pg, &src.database, pg_sql, &ch_sql, limit, &log);
    let pgch = PgchProcess::run(&env, &[], log.clone());
    same(Duration::from_secs(60)).await;
    pgch.stop();

    // Attached with rows while pgch was stopped: ATTACH streams nothing, so only the
    // recorded tree tells the next start that this leaf's rows are not in ClickHouse.
    pg.sql(
        &src.database,
        "CREATE TABLE public.m_ap (LIKE public.m INCLUDING ALL);
         INSERT INTO public.m_ap SELECT g, 'ap', g FROM generate_series(5001, 5300) g;
         ALTER TABLE public.m ATTACH PARTITION public.m_ap FOR VALUES IN ('ap');
         UPDATE public.m SET v = v + 1 WHERE id % 10 = 1;",
    )
    .unwrap();
    let pgch = PgchProcess::run(&env, &[], log.clone());
    same(Duration::from_secs(90)).await;

    // A streamed TRUNCATE of the root, then a crash before the next look at the tree:
    // the emptied leaves are no leaf truncate at the next start.
    pg.sql(
        &src.database,
        "TRUNCATE public.m;
         INSERT INTO public.m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 300) g;",
    )
    .unwrap();
    same(Duration::from_secs(60)).await;
    pgch.kill9();
    let mut pgch = PgchProcess::run(&env, &[], log.clone());
    pg.sql(
        &src.database,
        "UPDATE public.m SET v = v + 7 WHERE id < 50;",
    )
    .unwrap();
    same(Duration::from_secs(60)).await;
    // Past the first look at the trees (every 10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        pgch.try_status().is_none(),
        "no resync after a root TRUNCATE: {}",
        log_text(&log)
    );
    pgch.stop();

    // Detached with its rows while pgch was stopped: publish_via_partition_root
    // publishes nothing for it, so the next start asks for the one command that fixes it.
    pg.sql(
        &src.database,
        "ALTER TABLE public.m DETACH PARTITION public.m_eu;",
    )
    .unwrap();
    expect_resync_required(&env, &log, "public.m").await;
    resync_table(&env, "public.m");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    pg.sql(
        &src.database,
        "UPDATE public.m SET v = v + 1 WHERE id % 3 = 0;",
    )
    .unwrap();
    same(Duration::from_secs(90)).await;
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_left_the_publication_and_joined_again_while_pgch_was_stopped_is_resynced() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.r (id int PRIMARY KEY, v int);
         INSERT INTO public.r SELECT g, g FROM generate_series(1, 500) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.r;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-rejoined");
    let pg_sql = "SELECT count(*), sum(id), sum(v) FROM public.r";
    let ch_sql = format!(
        "SELECT count(), sum(id), sum(v) FROM `{db}`.`public_r` FINAL WHERE _is_deleted = 0"
    );
    let same = |limit| wait_same(pg, &src.database, pg_sql, &ch_sql, limit, &log);
    let pgch = PgchProcess::run(&env, &[], log.clone());
    same(Duration::from_secs(60)).await;
    pgch.stop();

    // Out and back in while pgch was stopped: the deletes in between were never
    // published, and a resumed stream would keep those rows forever. Rows written
    // before it left are still in the slot: replayed over the resync's copy they would
    // come back although deleted later (the copy holds them; they are not replayed).
    pg.sql(
        &src.database,
        "INSERT INTO public.r VALUES (9001, 1);
         UPDATE public.r SET v = 5 WHERE id = 450;
         ALTER PUBLICATION clickpipes DROP TABLE public.r;
         DELETE FROM public.r WHERE id > 400;
         UPDATE public.r SET v = -v WHERE id <= 10;
         ALTER PUBLICATION clickpipes ADD TABLE public.r;",
    )
    .unwrap();
    expect_resync_required(&env, &log, "public.r").await;
    assert!(log_text(&log).contains("left publication"));
    resync_table(&env, "public.r");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    // Streaming (the resync alone already made the counts equal).
    pg.sql(&src.database, "UPDATE public.r SET v = v + 1 WHERE id = 1;")
        .unwrap();
    same(Duration::from_secs(60)).await;

    // Out while pgch ran (it reports the table as gone), pgch restarted meanwhile, then
    // back in while it runs: the restart forgot what pgch saw, the record did not.
    pg.sql(
        &src.database,
        "ALTER PUBLICATION clickpipes DROP TABLE public.r;",
    )
    .unwrap();
    wait_logged(&log, "table left the publication", Duration::from_secs(30)).await;
    pgch.stop();
    let mut pgch = PgchProcess::run(
        &env,
        &[("PGCH__PIPELINE__AUTO_RESYNC", "true")],
        log.clone(),
    );
    pg.sql(
        &src.database,
        "DELETE FROM public.r WHERE id <= 100;
         ALTER PUBLICATION clickpipes ADD TABLE public.r;
         UPDATE public.r SET v = v + 1000 WHERE id % 5 = 0;",
    )
    .unwrap();
    same(Duration::from_secs(120)).await;
    let text = log_text(&log);
    assert!(text.contains("resyncing automatically"), "{text}");
    assert!(pgch.try_status().is_none(), "pgch streams on");
    pgch.stop();

    // The same while stopped, resynced live by the next start: rows written before the
    // table left and deleted while it was out stay deleted.
    pg.sql(
        &src.database,
        "INSERT INTO public.r VALUES (9002, 2);
         UPDATE public.r SET v = 6 WHERE id = 300;
         ALTER PUBLICATION clickpipes DROP TABLE public.r;
         DELETE FROM public.r WHERE id IN (300, 9002);
         ALTER PUBLICATION clickpipes ADD TABLE public.r;",
    )
    .unwrap();
    let pgch = PgchProcess::run(
        &env,
        &[("PGCH__PIPELINE__AUTO_RESYNC", "true")],
        log.clone(),
    );
    wait_logged(&log, "live resync finished", Duration::from_secs(90)).await;
    pg.sql(
        &src.database,
        "UPDATE public.r SET v = v + 1 WHERE id = 200;",
    )
    .unwrap();
    same(Duration::from_secs(60)).await;
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_and_created_again_under_a_schema_publication_while_stopped_is_resynced() {
    let pg = PgCluster::shared();
    if pg.version_num < 150_000 {
        eprintln!("skipped: FOR TABLES IN SCHEMA needs Postgres 15");
        return;
    }
    let src = guide_source(pg, None, PublicationShape::ForTablesInSchema);
    pg.sql(
        &src.database,
        "CREATE TABLE public.s (id int PRIMARY KEY, v int);
         INSERT INTO public.s SELECT g, g FROM generate_series(1, 200) g;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-recreated");
    let pg_sql = "SELECT count(*), sum(id), sum(v) FROM public.s";
    let ch_sql = format!(
        "SELECT count(), sum(id), sum(v) FROM `{db}`.`public_s` FINAL WHERE _is_deleted = 0"
    );
    let pgch = PgchProcess::run(&env, &[], log.clone());
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

    // The schema path is the same; the table is another one, and DROP TABLE is not
    // streamed: resumed, ClickHouse would keep the old table's rows.
    pg.sql(
        &src.database,
        "DROP TABLE public.s;
         CREATE TABLE public.s (id int PRIMARY KEY, v int);
         INSERT INTO public.s SELECT g, -g FROM generate_series(150, 260) g;",
    )
    .unwrap();
    expect_resync_required(&env, &log, "public.s").await;
    resync_table(&env, "public.s");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    pg.sql(&src.database, "UPDATE public.s SET v = 1 WHERE id = 150;")
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
