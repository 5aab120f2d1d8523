//! `pgch run` streaming into ClickHouse: after a workload of inserts, updates, key
//! updates, deletes and a TRUNCATE across tables keyed in different ways, every table's
//! `FINAL` view (without deleted rows) equals Postgres; the slot is acknowledged; a
//! restart resumes without loss or duplicates; a lost slot is "resync required".

mod common;

use std::time::{Duration, Instant};

use common::process::InProcessRun;
use common::{guide_settings, guide_source, GuideSource, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

const SCHEMA: &str = "
CREATE TABLE public.accounts (region text, id int, balance numeric(12,2), note text, PRIMARY KEY (region, id));
CREATE TABLE public.events (a int, b text);
ALTER TABLE public.events REPLICA IDENTITY FULL;
CREATE TABLE public.devices (id int PRIMARY KEY, serial text NOT NULL, model text);
CREATE UNIQUE INDEX devices_serial ON public.devices (serial);
ALTER TABLE public.devices REPLICA IDENTITY USING INDEX devices_serial;
CREATE TABLE public.docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE public.docs ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO public.accounts SELECT 'eu', g, g, 'initial' FROM generate_series(1, 200) g;
INSERT INTO public.events SELECT g, 'e' || g FROM generate_series(1, 50) g;
INSERT INTO public.devices SELECT g, 'S' || g, 'm' FROM generate_series(1, 100) g;
INSERT INTO public.docs SELECT g, 't' || g, (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 200) x) FROM generate_series(1, 20) g;
ALTER PUBLICATION clickpipes ADD TABLE public.accounts, public.events, public.devices, public.docs;
";

const WORKLOAD: &str = "
BEGIN;
UPDATE public.accounts SET balance = balance + 1 WHERE id % 3 = 0;
UPDATE public.accounts SET region = 'us' WHERE id % 10 = 0;
DELETE FROM public.accounts WHERE id % 7 = 0;
INSERT INTO public.accounts SELECT 'ap', g, g * 2, 'new' FROM generate_series(1, 100) g;
COMMIT;
INSERT INTO public.events SELECT g, 'f' || g FROM generate_series(51, 80) g;
UPDATE public.events SET b = b || '!' WHERE a % 4 = 0;
DELETE FROM public.events WHERE a % 5 = 0;
UPDATE public.devices SET serial = serial || 'x' WHERE id % 6 = 0;
UPDATE public.devices SET model = 'm2' WHERE id % 4 = 0;
DELETE FROM public.devices WHERE id % 9 = 0;
UPDATE public.docs SET title = title || '+' WHERE id % 2 = 0;
UPDATE public.docs SET id = id + 1000 WHERE id % 5 = 0;
BEGIN;
INSERT INTO public.accounts SELECT 'big', g, g, repeat('x', 20) FROM generate_series(1, 20000) g;
COMMIT;
";

fn pg_rows(pg: &PgCluster, db: &str, sql: &str) -> String {
    pg.sql(db, sql).unwrap().trim().replace('|', "\t")
}

async fn ch_rows(ch: &ClickHouse, sql: &str) -> String {
    ch.query(sql).await.unwrap_or_default().trim().to_string()
}

/// (Postgres query, ClickHouse query) pairs that must agree.
fn comparisons(db: &str) -> Vec<(String, String)> {
    vec![
        (
            "SELECT count(*), sum(id), sum(balance), sum(length(note)), count(DISTINCT region) FROM public.accounts".into(),
            format!("SELECT count(), sum(id), toDecimalString(sum(balance), 2), sum(lengthUTF8(note)), uniqExact(region) FROM `{db}`.`public_accounts` FINAL WHERE _is_deleted = 0"),
        ),
        (
            "SELECT count(*), sum(a), sum(length(b)) FROM public.events".into(),
            format!("SELECT count(), sum(a), sum(lengthUTF8(b)) FROM `{db}`.`public_events_current`"),
        ),
        (
            "SELECT count(*), sum(id), sum(length(serial)), sum(length(model)) FROM public.devices".into(),
            format!("SELECT count(), sum(id), sum(lengthUTF8(serial)), sum(lengthUTF8(model)) FROM `{db}`.`public_devices` FINAL WHERE _is_deleted = 0"),
        ),
        (
            "SELECT count(*), sum(id), sum(length(title)), sum(length(body)), count(DISTINCT md5(body)) FROM public.docs".into(),
            format!("SELECT count(), sum(id), sum(lengthUTF8(title)), sum(lengthUTF8(body)), uniqExact(MD5(body)) FROM `{db}`.`public_docs` FINAL WHERE _is_deleted = 0"),
        ),
    ]
}

async fn wait_equal(pg: &PgCluster, src: &GuideSource, db: &str) {
    let ch = ClickHouse::shared();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut diffs = Vec::new();
        for (p, c) in comparisons(db) {
            let (a, b) = (pg_rows(pg, &src.database, &p), ch_rows(ch, &c).await);
            if a != b {
                diffs.push(format!("{p}\n  postgres:   {a}\n  clickhouse: {b}"));
            }
        }
        if diffs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not equal after 120 s:\n{}",
            diffs.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_arrives_equal_and_a_restart_resumes() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(&src.database, SCHEMA).unwrap();
    let settings = guide_settings(pg, &src, &[]);
    let db = settings.destination.database.clone();

    let pgch = InProcessRun::start(&settings);
    pg.sql(&src.database, WORKLOAD).unwrap();
    wait_equal(pg, &src, &db).await;
    pgch.stop().await;
    let confirmed = pg
        .sql(&src.database, &format!("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn) < 1000000 FROM pg_replication_slots WHERE slot_name = '{}'", settings.source.slot))
        .unwrap();
    assert_eq!(confirmed.trim(), "t", "the slot was acknowledged");

    // Changes while pgch is stopped arrive after a restart, each once.
    pg.sql(
        &src.database,
        "UPDATE public.accounts SET note = 'after restart' WHERE id % 11 = 0; DELETE FROM public.events WHERE a % 2 = 1;
         UPDATE public.docs SET title = 'T' WHERE id < 5;
         TRUNCATE public.devices; INSERT INTO public.devices VALUES (1, 'fresh', 'm9');",
    )
    .unwrap();
    let pgch = InProcessRun::start(&settings);
    wait_equal(pg, &src, &db).await;
    pgch.stop().await;
    let ch = ClickHouse::shared();
    let dupes = ch_rows(
        ch,
        &format!("SELECT count() - uniqExact(region, id) FROM `{db}`.`public_accounts` FINAL"),
    )
    .await;
    assert_eq!(dupes, "0", "no key twice under FINAL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_resync_required_never_a_silent_new_slot() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let settings = guide_settings(pg, &src, &[]);
    let pgch = InProcessRun::start(&settings);
    tokio::time::sleep(Duration::from_secs(2)).await;
    pgch.stop().await;
    pg.sql(
        &src.database,
        &format!(
            "SELECT pg_drop_replication_slot('{}')",
            settings.source.slot
        ),
    )
    .unwrap();
    let err = pgch::cdc::run(&settings, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("resync required") && err.contains("is gone") && err.contains("pgch resync"),
        "{err}"
    );
    let slots = pg
        .sql(
            &src.database,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
                settings.source.slot
            ),
        )
        .unwrap();
    assert_eq!(slots.trim(), "0", "no new slot was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_stream_loses_nothing() {
    let pg = PgCluster::start(pgch::testkit::postgres::PgOptions::default()).unwrap();
    let src = guide_source(&pg, None, PublicationShape::ForTable);
    pg.sql(&src.database, SCHEMA).unwrap();
    let settings = guide_settings(&pg, &src, &[]);
    let db = settings.destination.database.clone();
    let pgch = InProcessRun::start(&settings);
    pg.sql(&src.database, WORKLOAD).unwrap();
    wait_equal(&pg, &src, &db).await;
    // The walsender and every session go away; pgch reconnects and catches up.
    pg.restart().unwrap();
    pg.sql(
        &src.database,
        "UPDATE public.accounts SET balance = balance * 2 WHERE id % 13 = 0;
         DELETE FROM public.docs WHERE id % 3 = 0;
         INSERT INTO public.events SELECT g, 'after' FROM generate_series(100, 150) g;",
    )
    .unwrap();
    wait_equal(&pg, &src, &db).await;
    assert!(!pgch.is_finished(), "pgch must survive the restart");
    pgch.stop().await;
}
