//! The initial copy against real servers: counts and per-column checksums after a
//! parallel copy, resuming after SIGKILL without copying finished partitions again, and
//! identifiers of any shape on both sides.

mod common;

use std::time::{Duration, Instant};

use common::{guide_settings, guide_source, PublicationShape};
use pgch::snapshot::{self, SnapshotOptions};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

const ORDERS: &str = "
CREATE TABLE public.big_orders (
    id bigint PRIMARY KEY, n int NOT NULL, amount numeric(12,2), note text, at timestamptz,
    flag bool, doc jsonb, u uuid, f float8, code varchar(20));
INSERT INTO public.big_orders
SELECT g, g % 1000, round((g % 100000) / 7.0, 2), 'note ' || repeat('x', g % 40), '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 second',
       g % 3 = 0, jsonb_build_object('g', g, 'even', g % 2 = 0), md5(g::text)::uuid, g / 3.0, 'c' || (g % 97)
FROM generate_series(1, %ROWS%) g;
ANALYZE public.big_orders;
ALTER PUBLICATION clickpipes ADD TABLE public.big_orders;";

fn pg_checksums(pg: &PgCluster, db: &str) -> String {
    pg.sql(
        db,
        "SELECT count(*), sum(id), sum(n), sum(amount), sum(length(note)), count(*) FILTER (WHERE flag),
                sum((extract(epoch FROM at) * 1000000)::bigint), count(DISTINCT u), sum(length(code)),
                sum(length(doc::text)), round(sum(f))::bigint
           FROM public.big_orders",
    )
    .unwrap()
    .trim()
    .replace('|', "\t")
}

async fn ch_checksums(ch: &ClickHouse, db: &str) -> String {
    ch.query(&format!(
        "SELECT count(), sum(id), sum(n), sum(amount), sum(lengthUTF8(note)), countIf(flag),
                sum(toInt128(toUnixTimestamp64Micro(at))), uniqExact(u), sum(lengthUTF8(code)),
                sum(lengthUTF8(doc)), toInt64(round(sum(f)))
           FROM `{db}`.`public_big_orders` FINAL
          SETTINGS output_format_decimal_trailing_zeros = 1"
    ))
    .await
    .unwrap()
    .trim()
    .to_string()
}

#[tokio::test]
async fn a_parallel_copy_arrives_with_equal_counts_and_checksums() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let rows = pgch::testkit::scaled(3_000_000);
    pg.sql(&src.database, &ORDERS.replace("%ROWS%", &rows.to_string()))
        .unwrap();
    let settings = guide_settings(pg, &src, &[("PGCH__PIPELINE__MODE", "snapshot_only")]);
    let mut opts = SnapshotOptions::from_settings(&settings);
    opts.partition_blocks = Some(4096); // a dozen partitions on 14+, copied by 4 workers
    let report = snapshot::run(&settings, &opts).await.unwrap();
    if pg.version_num >= 140000 {
        assert!(report.partitions_copied > 4, "{report:?}");
    }
    let ch = ClickHouse::shared();
    let db = &settings.destination.database;
    assert_eq!(ch_checksums(ch, db).await, pg_checksums(pg, &src.database));
    let dupes = ch
        .query(&format!(
            "SELECT count() - uniqExact(id) FROM `{db}`.`public_big_orders`"
        ))
        .await
        .unwrap();
    assert_eq!(dupes.trim(), "0", "each partition copied once");
    let versions = ch
        .query(&format!(
            "SELECT DISTINCT _version, _is_deleted FROM `{db}`.`public_big_orders`"
        ))
        .await
        .unwrap();
    assert_eq!(versions.trim(), "0\t0", "snapshot rows have version 0");

    // A second run finds every table copied whole and copies nothing (nor plans the
    // partitions again: a table grown since would be laid out differently).
    let again = snapshot::run(&settings, &opts).await.unwrap();
    assert_eq!(again.partitions_copied, 0);
    assert_eq!(again.tables_already_copied, report.tables.len() as u64);
}

#[tokio::test]
async fn sigkill_mid_snapshot_then_restart_completes_without_copying_done_partitions_again() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let rows = pgch::testkit::scaled(300_000);
    pg.sql(&src.database, &ORDERS.replace("%ROWS%", &rows.to_string()))
        .unwrap();
    pg.sql(
        &src.database,
        "CREATE TABLE public.second (id int PRIMARY KEY, v text);
         INSERT INTO public.second SELECT g, md5(g::text) FROM generate_series(1, 50000) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.second;",
    )
    .unwrap();
    let settings = guide_settings(pg, &src, &[]);
    let ch = ClickHouse::shared();
    let db = settings.destination.database.clone();
    let spawn = |stderr: std::process::Stdio| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgch"))
            .arg("run")
            .env(
                "PGCH__SOURCE__URL",
                pg.url(&src.user, Some(&src.password), &src.database),
            )
            .env("PGCH__SOURCE__PUBLICATION", &src.publication)
            .env("PGCH__SOURCE__SLOT", &settings.source.slot)
            .env("PGCH__DESTINATION__URL", &ch.url)
            .env("PGCH__DESTINATION__USER", &ch.user)
            .env("PGCH__DESTINATION__PASSWORD", &ch.password)
            .env("PGCH__DESTINATION__DATABASE", &db)
            .env("PGCH__PIPELINE__MODE", "snapshot_only")
            .env("PGCH__SNAPSHOT__WORKERS", "2")
            .env("PGCH__SNAPSHOT__PARTITION_BLOCKS", "64")
            .stderr(stderr)
            .spawn()
            .unwrap()
    };
    let mut first = spawn(std::process::Stdio::null());
    // Kill it once some, but not all, partitions are done.
    let deadline = Instant::now() + Duration::from_secs(120);
    let done_at_kill = loop {
        let done = ch
            .query(&format!(
                "SELECT count() FROM `{db}`.`_pgch_state` WHERE key LIKE 'copy/%'"
            ))
            .await
            .unwrap_or_default()
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        if done >= 2 {
            break done;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the copy finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no partition finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let second = spawn(std::process::Stdio::piped())
        .wait_with_output()
        .unwrap();
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    let skipped: u64 = log
        .split("partitions_already_done=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no partitions_already_done in:\n{log}"));
    assert!(
        skipped >= done_at_kill.min(2),
        "finished partitions were copied again:\n{log}"
    );
    assert_eq!(ch_checksums(ch, &db).await, pg_checksums(pg, &src.database));
    let second_count = ch
        .query(&format!(
            "SELECT count(), uniqExact(id) FROM `{db}`.`public_second` FINAL"
        ))
        .await
        .unwrap();
    assert_eq!(second_count.trim(), "50000\t50000");
}

#[tokio::test]
async fn identifiers_of_any_shape_are_quoted_on_both_sides() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        r#"CREATE SCHEMA "Odd Schema";
           CREATE TABLE "Odd Schema"."Tab.le ""quoted"" ünï" (
               "select" int PRIMARY KEY, "MiXeD" text, "with space" text, "dot.ted" int, "ünïcödé" text, "back`tick" text);
           INSERT INTO "Odd Schema"."Tab.le ""quoted"" ünï" VALUES (1, 'a', 'b', 2, 'ü', '`');
           GRANT USAGE ON SCHEMA "Odd Schema" TO PUBLIC;
           GRANT SELECT ON ALL TABLES IN SCHEMA "Odd Schema" TO PUBLIC;
           ALTER PUBLICATION clickpipes ADD TABLE "Odd Schema"."Tab.le ""quoted"" ünï";"#,
    )
    .unwrap();
    let settings = guide_settings(pg, &src, &[("PGCH__PIPELINE__MODE", "snapshot_only")]);
    snapshot::run(&settings, &SnapshotOptions::from_settings(&settings))
        .await
        .unwrap();
    let ch = ClickHouse::shared();
    let db = &settings.destination.database;
    let got = ch
        .query(&format!(
            "SELECT `select`, `MiXeD`, `with space`, `dot.ted`, `ünïcödé`, `back\\`tick` FROM `{db}`.`Odd Schema_Tab.le \"quoted\" ünï` FINAL"
        ))
        .await
        .unwrap();
    assert_eq!(got.trim(), "1\ta\tb\t2\tü\t`");
}

#[tokio::test]
async fn existing_tables_are_reused_only_when_they_belong_to_the_slot_and_match() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "INSERT INTO public.customers VALUES (1, 'Ann'), (2, 'Bob');",
    )
    .unwrap();
    let mut settings = guide_settings(pg, &src, &[("PGCH__PIPELINE__MODE", "snapshot_only")]);
    settings
        .destination
        .table_names
        .insert("public.customers".into(), "clients".into());
    let ch = ClickHouse::shared();
    let db = settings.destination.database.clone();
    let opts = SnapshotOptions::from_settings(&settings);

    // A table of that name that pgch did not create is refused, named.
    ch.query(&format!("CREATE DATABASE `{db}`")).await.unwrap();
    ch.query(&format!(
        "CREATE TABLE `{db}`.`clients` (x Int32) ENGINE = MergeTree ORDER BY x"
    ))
    .await
    .unwrap();
    let err = snapshot::run(&settings, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{db}.clients")) && err.contains("does not belong"),
        "{err}"
    );
    ch.query(&format!("DROP TABLE `{db}`.`clients`"))
        .await
        .unwrap();

    // The override names the destination table.
    snapshot::run(&settings, &opts).await.unwrap();
    let rows = ch
        .query(&format!(
            "SELECT id, name FROM `{db}`.`clients` FINAL ORDER BY id"
        ))
        .await
        .unwrap();
    assert_eq!(rows.trim(), "1\tAnn\n2\tBob");

    // Our table, changed behind pgch's back: stop, naming the column and the difference.
    ch.query(&format!(
        "ALTER TABLE `{db}`.`clients` MODIFY COLUMN name Nullable(String)"
    ))
    .await
    .unwrap();
    let err = snapshot::run(&settings, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`name` is Nullable(String)") && err.contains("needs String"),
        "{err}"
    );
}

// Multi-threaded: the blocking psql VACUUM must not stall the copy it waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_full_during_a_parallel_copy_loses_no_rows() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let rows = pgch::testkit::scaled(300_000);
    pg.sql(&src.database, &ORDERS.replace("%ROWS%", &rows.to_string()))
        .unwrap();
    // Holes, so that VACUUM FULL moves rows to other blocks.
    pg.sql(
        &src.database,
        "DELETE FROM public.big_orders WHERE id % 3 = 0;",
    )
    .unwrap();
    let settings = guide_settings(pg, &src, &[("PGCH__PIPELINE__MODE", "snapshot_only")]);
    let mut opts = SnapshotOptions::from_settings(&settings);
    opts.workers = 2;
    opts.partition_blocks = Some(32);
    let ch = ClickHouse::shared();
    let db = settings.destination.database.clone();
    let copy = {
        let settings = settings.clone();
        tokio::spawn(async move { snapshot::run(&settings, &opts).await })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = ch
            .query(&format!("SELECT count() FROM `{db}`.`_pgch_state` WHERE key LIKE 'copy/public_big_orders/%'"))
            .await
            .unwrap_or_default()
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        if done >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline && !copy.is_finished(),
            "the copy ended before the rewrite"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pg.sql(&src.database, "VACUUM FULL public.big_orders;")
        .unwrap();
    let report = copy.await.unwrap().unwrap();
    assert!(
        report.tables_recopied >= 1,
        "the rewrite must be noticed: {report:?}"
    );
    assert_eq!(ch_checksums(ch, &db).await, pg_checksums(pg, &src.database));
    let dupes = ch
        .query(&format!(
            "SELECT count() FROM `{db}`.`public_big_orders` FINAL"
        ))
        .await
        .unwrap();
    assert_eq!(
        dupes.trim(),
        (rows - rows / 3).to_string(),
        "one row per key under FINAL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_only_works_through_a_transaction_pooler() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g, g / 10.0 FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    let bouncer =
        pgch::testkit::services::pgbouncer(pg.port, &[(&src.user, &src.password)]).unwrap();
    let url = pgch::testkit::postgres::loopback_url(
        bouncer.port,
        &src.user,
        Some(&src.password),
        &src.database,
    );
    let settings = common::settings_for(
        &url,
        &src.publication,
        &[("PGCH__PIPELINE__MODE", "snapshot_only")],
    );
    snapshot::run(&settings, &SnapshotOptions::from_settings(&settings))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", bouncer.log()));
    let ch = ClickHouse::shared();
    let got = ch
        .query(&format!(
            "SELECT count(), sum(total) FROM `{}`.`public_orders` FINAL",
            settings.destination.database
        ))
        .await
        .unwrap();
    assert_eq!(got.trim(), "1000\t50050");
}
