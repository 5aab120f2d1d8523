//! `pipeline.auto_resync` resyncs one table while pgch streams (issue #7, DESIGN.md
//! rule 3): the table is copied into a shadow that also receives the stream, every
//! other table streams on, readers see the old complete table until the exchange, and
//! a crash before the exchange starts the resync over.

mod common;

use std::time::Duration;

use common::converge::{env_value, log_path, log_text, wait_logged, wait_same, wait_until};
use common::process::{CopyHold, PgchProcess};
use common::{guide_env, guide_source, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_resync_streams_other_tables_and_shows_the_old_table_until_the_exchange() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.lr (id int PRIMARY KEY, d text);
         INSERT INTO public.lr SELECT g, 'd' || g FROM generate_series(1, 300) g;
         CREATE TABLE public.other (id int PRIMARY KEY, v int);
         INSERT INTO public.other SELECT g, g FROM generate_series(1, 100) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.lr, public.other;",
    )
    .unwrap();
    let hold = CopyHold::released();
    let env = guide_env(
        pg,
        &src,
        &[("PGCH__PIPELINE__AUTO_RESYNC", "true"), hold.env()],
    );
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-live-resync");
    let lr = format!("`{db}`.`public_lr` FINAL WHERE _is_deleted = 0");
    let other_pg = "SELECT count(*), sum(v) FROM public.other";
    let other_ch =
        format!("SELECT count(), sum(v) FROM `{db}`.`public_other` FINAL WHERE _is_deleted = 0");
    let old_pg = "SELECT count(*), sum(length(d)) FROM public.lr";
    let old_ch = format!("SELECT count(), sum(lengthUTF8(d)) FROM {lr}");
    let mut pgch = PgchProcess::run(&env, &[], log.clone());
    wait_same(
        pg,
        &src.database,
        old_pg,
        &old_ch,
        Duration::from_secs(60),
        &log,
    )
    .await;
    wait_same(
        pg,
        &src.database,
        other_pg,
        &other_ch,
        Duration::from_secs(60),
        &log,
    )
    .await;
    let old_content = ClickHouse::shared().query(&old_ch).await.unwrap();

    // From here on copies hold after taking their snapshot: the shadow stays half-done.
    hold.hold();
    // text -> int is no widening: a resync of public.lr.
    pg.sql(
        &src.database,
        "ALTER TABLE public.lr ALTER COLUMN d TYPE int USING length(d);
         UPDATE public.lr SET d = d * 100 WHERE id % 3 = 0;
         DELETE FROM public.lr WHERE id > 290;",
    )
    .unwrap();
    wait_logged(
        &log,
        "live resync: copying the table into a shadow",
        Duration::from_secs(60),
    )
    .await;
    // Other tables stream on while the shadow is being filled …
    pg.sql(
        &src.database,
        "INSERT INTO public.other SELECT g, g FROM generate_series(101, 150) g;
         UPDATE public.other SET v = v + 1 WHERE id <= 10;
         UPDATE public.lr SET d = 7 WHERE id = 1;",
    )
    .unwrap();
    wait_same(
        pg,
        &src.database,
        other_pg,
        &other_ch,
        Duration::from_secs(60),
        &log,
    )
    .await;
    // … and readers of public_lr still see the old complete table.
    assert_eq!(
        ClickHouse::shared().query(&old_ch).await.unwrap(),
        old_content,
        "the old table until the exchange"
    );

    // A SIGKILL before the exchange: the next start begins the resync again.
    pgch.kill9();
    pg.sql(&src.database, "UPDATE public.lr SET d = 8 WHERE id = 2;")
        .unwrap();
    pgch = PgchProcess::run(&env, &[], log.clone());
    wait_until(Duration::from_secs(60), "the resync begins again", || {
        log_text(&log)
            .matches("live resync: copying the table into a shadow")
            .count()
            >= 2
    })
    .await;
    pg.sql(&src.database, "INSERT INTO public.other VALUES (1000, 1);")
        .unwrap();
    wait_same(
        pg,
        &src.database,
        other_pg,
        &other_ch,
        Duration::from_secs(60),
        &log,
    )
    .await;
    assert_eq!(
        ClickHouse::shared().query(&old_ch).await.unwrap(),
        old_content,
        "still the old table"
    );

    // Let the copy finish: the shadow is swapped in, with the changes streamed meanwhile.
    hold.release();
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(d), sum(id * d) FROM public.lr",
        &format!("SELECT count(), sum(d), sum(id * d) FROM {lr}"),
        Duration::from_secs(120),
        &log,
    )
    .await;
    // After the swap public.lr streams into its real table.
    pg.sql(
        &src.database,
        "UPDATE public.lr SET d = d + 1 WHERE id <= 50; INSERT INTO public.other VALUES (1001, 1);",
    )
    .unwrap();
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(d), sum(id * d) FROM public.lr",
        &format!("SELECT count(), sum(d), sum(id * d) FROM {lr}"),
        Duration::from_secs(60),
        &log,
    )
    .await;
    wait_same(
        pg,
        &src.database,
        other_pg,
        &other_ch,
        Duration::from_secs(60),
        &log,
    )
    .await;
    let shadows = ClickHouse::shared()
        .query(&format!(
            "SELECT count() FROM system.tables WHERE database = '{db}' AND name LIKE '%pgch_resync%'"
        ))
        .await
        .unwrap();
    assert_eq!(shadows.trim(), "0", "no shadow left behind");
    let text = log_text(&log);
    assert!(text.contains("live resync finished"), "{text}");
    assert!(pgch.try_status().is_none(), "pgch streams on: {text}");
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_change_inside_a_transaction_with_earlier_rows_is_resynced_once() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.tx (id int PRIMARY KEY, d text);
         INSERT INTO public.tx SELECT g, 'd' || g FROM generate_series(1, 100) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.tx;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[("PGCH__PIPELINE__AUTO_RESYNC", "true")]);
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-live-resync-tx");
    let t = format!("`{db}`.`public_tx` FINAL WHERE _is_deleted = 0");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(length(d)) FROM public.tx",
        &format!("SELECT count(), sum(lengthUTF8(d)) FROM {t}"),
        Duration::from_secs(60),
        &log,
    )
    .await;
    // Rows of the old shape, the change and rows of the new shape in one transaction:
    // the replay after the resync starts before it; its old-shape rows (text into what
    // is now an int column) are in the copy and must be skipped, its old-shape Relation
    // must not ask for another resync.
    pg.sql(
        &src.database,
        "BEGIN;
         UPDATE public.tx SET d = d || '!' WHERE id <= 10;
         ALTER TABLE public.tx ALTER COLUMN d TYPE int USING length(d);
         UPDATE public.tx SET d = d * 10 WHERE id > 90;
         COMMIT;
         UPDATE public.tx SET d = 1 WHERE id = 50;",
    )
    .unwrap();
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(d), sum(id * d) FROM public.tx",
        &format!("SELECT count(), sum(d), sum(id * d) FROM {t}"),
        Duration::from_secs(120),
        &log,
    )
    .await;
    wait_logged(&log, "live resync finished", Duration::from_secs(60)).await;
    pg.sql(&src.database, "UPDATE public.tx SET d = 2 WHERE id = 51;")
        .unwrap();
    wait_same(
        pg,
        &src.database,
        "SELECT count(*), sum(d), sum(id * d) FROM public.tx",
        &format!("SELECT count(), sum(d), sum(id * d) FROM {t}"),
        Duration::from_secs(60),
        &log,
    )
    .await;
    let text = log_text(&log);
    assert_eq!(
        text.matches("resyncing automatically").count(),
        1,
        "one resync: {text}"
    );
    pgch.stop();
}
