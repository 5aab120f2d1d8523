//! The source changes shape under a running pgch (DESIGN.md rules 3, 8 and 9): TRUNCATE
//! during the table's snapshot and mid-stream, and tables joining the publication —
//! also while a transaction that wrote to them is still open.

mod common;

use std::time::Duration;

use common::converge::{
    env_value, log_path, log_text, resync_table, wait_logged, wait_same, wait_snapshots_held,
    wait_streaming,
};
use common::partitions::{ch_sums, partitioned_source, PG_SUMS};
use common::process::{CopyHold, PgchProcess};
use common::{guide_env, guide_source, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_during_the_snapshot_and_mid_stream_resurrects_nothing() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g, g FROM generate_series(1, 5000) g;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[]);
    let (slot, db) = (
        env_value(&env, "PGCH__SOURCE__SLOT"),
        env_value(&env, "PGCH__DESTINATION__DATABASE"),
    );
    // The copy takes its snapshot (5,000 rows) and is held there.
    let hold = CopyHold::held();
    let log = log_path("pgch-truncate");
    let pgch = PgchProcess::run(&env, &[hold.env()], log.clone());
    wait_streaming(pg, &src.database, &slot, Duration::from_secs(60)).await;
    wait_snapshots_held(pg, &src.database, 2, Duration::from_secs(60)).await;

    pg.sql(
        &src.database,
        "TRUNCATE public.orders; INSERT INTO public.orders SELECT g, g, 7 FROM generate_series(1, 10) g;",
    )
    .unwrap();
    let pg_sql =
        "SELECT count(*), coalesce(sum(id), 0), coalesce(sum(total), 0) FROM public.orders";
    let ch_sql = format!(
        "SELECT count(), sum(id), toDecimalString(sum(total), 2) FROM `{db}`.`public_orders` FINAL WHERE _is_deleted = 0"
    );
    wait_same(
        pg,
        &src.database,
        pg_sql,
        &ch_sql,
        Duration::from_secs(60),
        &log,
    )
    .await;
    // The held copy saw 5,000 rows; released now, it must not land them.
    hold.release();
    wait_logged(
        &log,
        "copy cancelled by a TRUNCATE",
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_same(
        pg,
        &src.database,
        pg_sql,
        &ch_sql,
        Duration::from_secs(60),
        &log,
    )
    .await;
    let all = ClickHouse::shared()
        .query(&format!("SELECT count() FROM `{db}`.`public_orders`"))
        .await
        .unwrap();
    assert_eq!(all.trim(), "10", "no pre-TRUNCATE row was written after it");

    // Mid-stream, after the snapshot: the same barrier.
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g, 1 FROM generate_series(100, 200) g;
         TRUNCATE public.orders;
         INSERT INTO public.orders VALUES (1, 1, 99);",
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
async fn a_table_added_while_a_transaction_that_wrote_to_it_is_open_loses_no_row() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.late (id int PRIMARY KEY, v text);
         INSERT INTO public.late SELECT g, 'before' FROM generate_series(1, 100) g;
         CREATE TABLE public.quiet (id int PRIMARY KEY, v text);
         INSERT INTO public.quiet SELECT g, 'never written again' FROM generate_series(1, 50) g;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[]);
    let (slot, db) = (
        env_value(&env, "PGCH__SOURCE__SLOT"),
        env_value(&env, "PGCH__DESTINATION__DATABASE"),
    );
    let log = log_path("pgch-join");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    wait_streaming(pg, &src.database, &slot, Duration::from_secs(60)).await;

    // A transaction writes to the table, the table joins, then the transaction commits.
    let (open, conn) =
        tokio_postgres::connect(&pg.superuser_url(&src.database), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    open.batch_execute(
        "BEGIN; INSERT INTO public.late VALUES (1000, 'written before the join, committed after');",
    )
    .await
    .unwrap();
    pg.sql(
        &src.database,
        "ALTER PUBLICATION clickpipes ADD TABLE public.late, public.quiet;",
    )
    .unwrap();
    open.batch_execute("COMMIT;").await.unwrap();
    pg.sql(
        &src.database,
        "UPDATE public.late SET v = 'after' WHERE id <= 10; INSERT INTO public.late VALUES (2000, 'after the join');
         DELETE FROM public.late WHERE id BETWEEN 90 AND 95;",
    )
    .unwrap();

    for table in ["late", "quiet"] {
        let pg_sql = format!(
            "SELECT count(*), sum(id), string_agg(DISTINCT v, ',' ORDER BY v) FROM public.{table}"
        );
        let ch_sql = format!(
            "SELECT count(), sum(id), arrayStringConcat(arraySort(groupUniqArray(v)), ',') FROM `{db}`.`public_{table}` FINAL WHERE _is_deleted = 0"
        );
        wait_same(
            pg,
            &src.database,
            &pg_sql,
            &ch_sql,
            Duration::from_secs(90),
            &log,
        )
        .await;
    }
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_renamed_widened_and_dropped_mid_stream_are_followed() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.evo (id int PRIMARY KEY, a int, b varchar(10), c text);
         INSERT INTO public.evo SELECT g, g, 'b' || g, 'c' || g FROM generate_series(1, 100) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.evo;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-evolve");
    let mut pgch = PgchProcess::run(&env, &[], log.clone());
    let t = format!("`{db}`.`public_evo` FINAL WHERE _is_deleted = 0");
    let compare = |pg_cols: &str, ch_cols: &str| {
        (
            format!("SELECT count(*), {pg_cols} FROM public.evo"),
            format!("SELECT count(), {ch_cols} FROM {t}"),
        )
    };
    let steps: Vec<(&str, (String, String))> = vec![
        (
            "UPDATE public.evo SET a = a + 1 WHERE id <= 10;",
            compare("sum(a), sum(length(b)), sum(length(c))", "sum(a), sum(lengthUTF8(b)), sum(lengthUTF8(c))"),
        ),
        (
            "ALTER TABLE public.evo ADD COLUMN d text;
             UPDATE public.evo SET d = 'd' || id WHERE id % 3 = 0; INSERT INTO public.evo VALUES (101, 1, 'b', 'c', 'd');",
            compare("sum(a), count(d), sum(length(d))", "sum(a), count(d), sum(lengthUTF8(d))"),
        ),
        (
            "ALTER TABLE public.evo ADD COLUMN e text NOT NULL DEFAULT 'x y';
             ALTER TABLE public.evo ADD COLUMN f timestamptz DEFAULT '2020-02-02 10:00:00.123456+00';
             UPDATE public.evo SET e = 'changed' WHERE id % 5 = 0; INSERT INTO public.evo (id, a, b, c) VALUES (102, 2, 'b', 'c');",
            compare(
                "string_agg(DISTINCT e, ',' ORDER BY e), sum((extract(epoch FROM f) * 1000000)::bigint)",
                "arrayStringConcat(arraySort(groupUniqArray(e)), ','), sum(toUnixTimestamp64Micro(f))",
            ),
        ),
        (
            "ALTER TABLE public.evo RENAME COLUMN c TO c2;
             UPDATE public.evo SET c2 = c2 || '!' WHERE id % 4 = 0;",
            compare("sum(length(c2)), count(c2)", "sum(lengthUTF8(c2)), count(c2)"),
        ),
        (
            "ALTER TABLE public.evo ALTER COLUMN a TYPE bigint;
             UPDATE public.evo SET a = 5000000000 + id WHERE id <= 3;",
            compare("sum(a)", "sum(a)"),
        ),
        (
            "ALTER TABLE public.evo DROP COLUMN b;
             INSERT INTO public.evo (id, a, c2, d) VALUES (103, 3, 'c', 'd'); DELETE FROM public.evo WHERE id = 50;",
            compare("sum(id), sum(a), sum(length(c2)), count(d)", "sum(id), sum(a), sum(lengthUTF8(c2)), count(d)"),
        ),
    ];
    for (sql, (pg_sql, ch_sql)) in &steps {
        pg.sql(&src.database, sql).unwrap();
        wait_same(
            pg,
            &src.database,
            pg_sql,
            ch_sql,
            Duration::from_secs(60),
            &log,
        )
        .await;
        assert!(pgch.try_status().is_none(), "pgch stopped after `{sql}`");
    }

    // A restart after the changes: the tables are planned anew and still match.
    pgch.stop();
    let mut pgch = PgchProcess::run(&env, &[], log.clone());
    pg.sql(
        &src.database,
        "UPDATE public.evo SET c2 = 'restarted', e = 'r' WHERE id <= 20;",
    )
    .unwrap();
    let (pg_sql, ch_sql) = compare(
        "sum(a), sum(length(c2)), string_agg(DISTINCT e, ',' ORDER BY e)",
        "sum(a), sum(lengthUTF8(c2)), arrayStringConcat(arraySort(groupUniqArray(e)), ',')",
    );
    wait_same(
        pg,
        &src.database,
        &pg_sql,
        &ch_sql,
        Duration::from_secs(60),
        &log,
    )
    .await;
    assert!(pgch.try_status().is_none(), "pgch runs after the restart");

    // A type change that is not a widening cannot be followed in place.
    pg.sql(
        &src.database,
        "ALTER TABLE public.evo ALTER COLUMN d TYPE int USING length(d);
         UPDATE public.evo SET d = 1 WHERE id = 1;",
    )
    .unwrap();
    let text = pgch.wait_refusal(Duration::from_secs(60)).await;
    assert!(
        text.contains("pgch resync --table public.evo"),
        "the fix is named:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_or_widened_while_pgch_was_stopped_are_followed_and_a_rename_is_refused() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.away (id int PRIMARY KEY, a int, c text);
         INSERT INTO public.away SELECT g, g, 'c' || g FROM generate_series(1, 100) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.away;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-away");
    let t = format!("`{db}`.`public_away` FINAL WHERE _is_deleted = 0");
    let pg_sql = "SELECT count(*), sum(a), sum(z), sum(length(c)) FROM public.away";
    let ch_sql = format!("SELECT count(), sum(a), sum(z), sum(lengthUTF8(c)) FROM {t}");

    let pgch = PgchProcess::run(&env, &[], log.clone());
    wait_same(
        pg,
        &src.database,
        "SELECT count(*) FROM public.away",
        &format!("SELECT count() FROM {t}"),
        Duration::from_secs(60),
        &log,
    )
    .await;
    pgch.stop();

    // While pgch is stopped: changes before, the DDL, changes after.
    pg.sql(
        &src.database,
        "UPDATE public.away SET a = a + 1 WHERE id <= 5;
         ALTER TABLE public.away ADD COLUMN z int NOT NULL DEFAULT 7;
         ALTER TABLE public.away ALTER COLUMN a TYPE bigint;
         UPDATE public.away SET z = 1, a = 6000000000 WHERE id = 9;",
    )
    .unwrap();
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

    // A rename while stopped cannot be told from a drop and an add: refused, with the fix.
    pg.sql(
        &src.database,
        "ALTER TABLE public.away RENAME COLUMN c TO c2;",
    )
    .unwrap();
    let pgch = PgchProcess::run(&env, &[], log.clone());
    let text = pgch.wait_refusal(Duration::from_secs(60)).await;
    assert!(
        text.contains("rename cannot be told") && text.contains("pgch resync"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_ignored_by_config_keeps_the_clickhouse_rows() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g, g FROM generate_series(1, 100) g;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[("PGCH__PIPELINE__TRUNCATE", "ignore")]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-truncate-ignore");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    let ch_sql =
        format!("SELECT count(), sum(id) FROM `{db}`.`public_orders` FINAL WHERE _is_deleted = 0");
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(id) FROM public.orders",
        &ch_sql,
        Duration::from_secs(60),
        &log,
    )
    .await;
    pg.sql(
        &src.database,
        "TRUNCATE public.orders; INSERT INTO public.orders VALUES (1000, 1, 1);",
    )
    .unwrap();
    // The 100 rows stay; the row inserted after the TRUNCATE arrives.
    wait_same(
        pg,
        &src.database,
        "SELECT 101, 5050 + 1000",
        &ch_sql,
        Duration::from_secs(60),
        &log,
    )
    .await;
    assert!(log_text(&log).contains("TRUNCATE ignored"));
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_keeping_rewrite_after_the_copy_needs_nothing() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g, g FROM generate_series(1, 2000) g;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-rewrite");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    let pg_sql = "SELECT count(*), sum(id), sum(customer_id) FROM public.orders";
    let ch_sql = format!(
        "SELECT count(), sum(id), sum(customer_id) FROM `{db}`.`public_orders` FINAL WHERE _is_deleted = 0"
    );
    wait_same(
        pg,
        &src.database,
        pg_sql,
        &ch_sql,
        Duration::from_secs(60),
        &log,
    )
    .await;
    // VACUUM FULL and CLUSTER move every row to a new file; no change is streamed.
    pg.sql(
        &src.database,
        "DELETE FROM public.orders WHERE id % 2 = 0; VACUUM FULL public.orders;
         CLUSTER public.orders USING orders_pkey;
         UPDATE public.orders SET customer_id = customer_id + 1 WHERE id < 100;",
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
async fn partitions_attached_with_rows_are_copied_and_a_detach_or_leaf_truncate_is_one_resync_away()
{
    let pg = PgCluster::shared();
    let Some(src) = partitioned_source(pg) else {
        return;
    };
    let env = guide_env(pg, &src, &[]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-partitions");
    let pg_sql = PG_SUMS;
    let ch_sql = ch_sums(&db);
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

    // ATTACH streams no rows: pgch notices the new leaf and copies it.
    pg.sql(
        &src.database,
        "CREATE TABLE public.m_ap (LIKE public.m INCLUDING ALL);
         INSERT INTO public.m_ap SELECT g, 'ap', g FROM generate_series(5001, 5300) g;
         ALTER TABLE public.m ATTACH PARTITION public.m_ap FOR VALUES IN ('ap');
         UPDATE public.m SET v = v + 1 WHERE id % 10 = 1;",
    )
    .unwrap();
    wait_same(
        pg,
        &src.database,
        pg_sql,
        &ch_sql,
        Duration::from_secs(90),
        &log,
    )
    .await;

    // A TRUNCATE of the root is streamed; a partition attached after it is still copied.
    pg.sql(
        &src.database,
        "TRUNCATE public.m;
         INSERT INTO public.m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 400) g;
         CREATE TABLE public.m_sa (LIKE public.m INCLUDING ALL);
         INSERT INTO public.m_sa SELECT g, 'sa', g FROM generate_series(7001, 7100) g;
         ALTER TABLE public.m ATTACH PARTITION public.m_sa FOR VALUES IN ('sa');",
    )
    .unwrap();
    wait_same(
        pg,
        &src.database,
        pg_sql,
        &ch_sql,
        Duration::from_secs(90),
        &log,
    )
    .await;

    // A leaf TRUNCATE or DETACH publishes nothing: pgch stops, naming the one command
    // that fixes it; after it the table is equal again and streaming goes on.
    let mut pgch = pgch;
    for (breakage, what) in [
        ("TRUNCATE public.m_us;", "was truncated"),
        (
            "ALTER TABLE public.m DETACH PARTITION public.m_eu;",
            "was detached",
        ),
    ] {
        pg.sql(&src.database, breakage).unwrap();
        let text = pgch.wait_refusal(Duration::from_secs(90)).await;
        assert!(
            text.contains(what) && text.contains("pgch resync --table public.m"),
            "{text}"
        );
        resync_table(&env, "public.m");
        pgch = PgchProcess::run(&env, &[], log.clone());
        pg.sql(
            &src.database,
            "UPDATE public.m SET v = v + 1 WHERE id % 7 = 0;",
        )
        .unwrap();
        wait_same(
            pg,
            &src.database,
            pg_sql,
            &ch_sql,
            Duration::from_secs(90),
            &log,
        )
        .await;
    }
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_resync_a_type_change_and_a_volatile_default_are_resynced_and_streaming_goes_on()
{
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.t2 (id int PRIMARY KEY, d text);
         INSERT INTO public.t2 SELECT g, 'd' || g FROM generate_series(1, 200) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.t2;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[("PGCH__PIPELINE__AUTO_RESYNC", "true")]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-auto-resync");
    let mut pgch = PgchProcess::run(&env, &[], log.clone());
    let t = format!("`{db}`.`public_t2` FINAL WHERE _is_deleted = 0");
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(length(d)) FROM public.t2",
        &format!("SELECT count(), sum(lengthUTF8(d)) FROM {t}"),
        Duration::from_secs(60),
        &log,
    )
    .await;
    // text -> int is no widening: the table is copied again into a shadow and swapped in.
    pg.sql(
        &src.database,
        "UPDATE public.t2 SET d = d || '!' WHERE id <= 5;
         ALTER TABLE public.t2 ALTER COLUMN d TYPE int USING length(d);
         UPDATE public.t2 SET d = d * 100 WHERE id % 3 = 0; DELETE FROM public.t2 WHERE id > 190;",
    )
    .unwrap();
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(d) FROM public.t2",
        &format!("SELECT count(), sum(d) FROM {t}"),
        Duration::from_secs(120),
        &log,
    )
    .await;
    // A volatile default rewrites the table without streaming the values: resynced too.
    pg.sql(
        &src.database,
        "ALTER TABLE public.t2 ADD COLUMN r float8 DEFAULT random();
         UPDATE public.t2 SET d = 1 WHERE id = 1;",
    )
    .unwrap();
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(d), round(sum(r)::numeric, 6) FROM public.t2",
        &format!("SELECT count(), sum(d), toDecimalString(round(sum(r), 6), 6) FROM {t}"),
        Duration::from_secs(120),
        &log,
    )
    .await;
    pg.sql(&src.database, "UPDATE public.t2 SET d = 2 WHERE id = 2;")
        .unwrap();
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(d) FROM public.t2",
        &format!("SELECT count(), sum(d) FROM {t}"),
        Duration::from_secs(60),
        &log,
    )
    .await;
    assert!(pgch.try_status().is_none(), "pgch streams on");
    assert!(log_text(&log).contains("resyncing automatically"));
    pgch.stop();
}
