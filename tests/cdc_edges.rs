//! `pgch run` at the edges of the stream: unchanged TOAST values (out of line, 100 kB)
//! arriving intact also before the table's snapshot lands; a 1,000,000-row transaction
//! within the memory budget; an idle publication that still lets the slot advance; and
//! setup broken under a running pgch (publication dropped, SELECT revoked) stopping it
//! with the fix.

mod common;

use std::time::Duration;

use common::converge::{env_value, eventually, log_path, log_tail, wait_streaming};
use common::process::{CopyHold, InProcessRun, PgchProcess};
use common::{guide_env, guide_settings, guide_source, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

const DOCS: &str = "
CREATE TABLE public.docs (id int PRIMARY KEY, v int, title text, body text);
ALTER TABLE public.docs ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO public.docs
  SELECT g, 0, 't' || g, (SELECT string_agg(md5(random()::text || g::text || x::text), '') FROM generate_series(1, 3200) x)
  FROM generate_series(1, 30) g;
ALTER PUBLICATION clickpipes ADD TABLE public.docs;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_100kb_toast_values_arrive_intact_even_before_the_snapshot_lands() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(&src.database, DOCS).unwrap();
    let toast_bytes: i64 = pg
        .sql(
            &src.database,
            "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'public.docs'::regclass",
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        toast_bytes > 30 * 100_000,
        "the bodies live out of line: {toast_bytes} bytes of TOAST"
    );
    let avg: String = pg
        .sql(
            &src.database,
            "SELECT avg(length(body))::int FROM public.docs",
        )
        .unwrap();
    assert_eq!(avg.trim(), "102400");

    let env = guide_env(pg, &src, &[]);
    let (slot, db) = (
        env_value(&env, "PGCH__SOURCE__SLOT"),
        env_value(&env, "PGCH__DESTINATION__DATABASE"),
    );
    let hold = CopyHold::held();
    let log = log_path("pgch-toast");
    let pgch = PgchProcess::run(&env, &[hold.env()], log.clone());
    wait_streaming(pg, &src.database, &slot, Duration::from_secs(60)).await;

    // Updates that leave the 100 kB body unchanged (sent as 'u'), one that moves a key,
    // and a row updated twice in one transaction — all before any snapshot row exists.
    pg.sql(
        &src.database,
        "UPDATE public.docs SET v = v + 1 WHERE id % 3 = 0;
         UPDATE public.docs SET id = id + 1000 WHERE id = 2;
         BEGIN; UPDATE public.docs SET title = 'x' WHERE id = 5; UPDATE public.docs SET v = 7 WHERE id = 5; COMMIT;",
    )
    .unwrap();
    let touched = "id % 3 = 0 OR id IN (1002, 5)";
    let pg_view = pg
        .sql(
            &src.database,
            &format!("SELECT id, v, title, md5(body), length(body) FROM public.docs WHERE {touched} ORDER BY id"),
        )
        .unwrap()
        .trim()
        .replace('|', "\t");
    let ch = ClickHouse::shared();
    let ch_sql = format!(
        "SELECT id, v, title, lower(hex(MD5(body))), lengthUTF8(body) FROM `{db}`.`public_docs` FINAL WHERE _is_deleted = 0 ORDER BY id"
    );
    eventually(
        Duration::from_secs(60),
        "the updated rows arrive with their bodies",
        || async { ch.query(&ch_sql).await.unwrap_or_default().trim() == pg_view },
    )
    .await;
    let snapshot_rows = ch
        .query(&format!(
            "SELECT countIf(_version = 0) FROM `{db}`.`public_docs`"
        ))
        .await
        .unwrap();
    assert_eq!(snapshot_rows.trim(), "0", "the snapshot has not landed yet");

    // Let the copy land: the whole table is then equal.
    hold.release();
    let pg_all = pg
        .sql(
            &src.database,
            "SELECT id, v, title, md5(body), length(body) FROM public.docs ORDER BY id",
        )
        .unwrap()
        .trim()
        .replace('|', "\t");
    eventually(
        Duration::from_secs(120),
        "the whole table is equal",
        || async { ch.query(&ch_sql).await.unwrap_or_default().trim() == pg_all },
    )
    .await;
    pgch.stop();
}

fn vm_hwm_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction_passes_within_the_memory_budget() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.wide (id bigint PRIMARY KEY, a int, b numeric(12,2), c text, d timestamptz, e bool, f jsonb, g uuid, h float8, i varchar(45));
         ALTER PUBLICATION clickpipes ADD TABLE public.wide;",
    )
    .unwrap();
    let budget_mb = 32u64;
    let env = guide_env(
        pg,
        &src,
        &[("PGCH__PIPELINE__MEMORY_BUDGET_MB", &budget_mb.to_string())],
    );
    let (slot, db) = (
        env_value(&env, "PGCH__SOURCE__SLOT"),
        env_value(&env, "PGCH__DESTINATION__DATABASE"),
    );
    let log = log_path("pgch-bigtx");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    wait_streaming(pg, &src.database, &slot, Duration::from_secs(60)).await;
    let before = vm_hwm_kib(pgch.pid());
    pg.sql(
        &src.database,
        "INSERT INTO public.wide
           SELECT g, g % 1000, g / 7.0, repeat(md5(g::text), 1) || 'abcdefghijkl', now(), g % 2 = 0,
                  jsonb_build_object('k', g), md5(g::text)::uuid, g / 3.0, 'v' || g
           FROM generate_series(1, 1000000) g;",
    )
    .unwrap();
    let ch = ClickHouse::shared();
    let count_sql = format!("SELECT count(), sum(id) FROM `{db}`.`public_wide` FINAL");
    eventually(
        Duration::from_secs(600),
        "all 1,000,000 rows arrive",
        || async {
            ch.query(&count_sql).await.unwrap_or_default().trim() == "1000000\t500000500000"
        },
    )
    .await;
    let peak = vm_hwm_kib(pgch.pid());
    eprintln!(
        "1,000,000-row transaction: pgch peak RSS {:.1} MiB (before it: {:.1} MiB), memory_budget_mb = {budget_mb}",
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
    // Pending row images are capped at the budget, the stream's read buffer at a quarter
    // of it; one encoded insert and the runtime come on top. Without the cap the
    // transaction's images alone would be several hundred MiB (measured: 170 MiB peak
    // when the cap counted only the values' bytes).
    assert!(
        peak < (budget_mb * 2 + 32) * 1024,
        "peak RSS {peak} KiB is not bounded by the budget of {budget_mb} MiB\n{}",
        log_tail(&log, 30)
    );
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_publication_still_lets_the_slot_advance() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.noise (id serial, t text);",
    )
    .unwrap();
    let settings = guide_settings(pg, &src, &[]);
    let slot = settings.source.slot.clone();
    let pgch = InProcessRun::start(&settings);
    wait_streaming(pg, &src.database, &slot, Duration::from_secs(60)).await;
    // Only the unpublished table is written: pgoutput sends nothing for it.
    let target = pg
        .sql(
            &src.database,
            "INSERT INTO public.noise (t) SELECT 'x' FROM generate_series(1, 1000); SELECT pg_current_wal_insert_lsn();",
        )
        .unwrap();
    let target = target.lines().last().unwrap_or_default().trim().to_string();
    let db = src.database.clone();
    eventually(
        Duration::from_secs(150),
        "confirmed_flush_lsn passes the unpublished writes",
        || {
            let (db, target, slot) = (db.clone(), target.clone(), slot.clone());
            async move {
                let _ = pg.sql(&db, "INSERT INTO public.noise (t) VALUES ('tick');");
                pg.sql(
                    &db,
                    &format!("SELECT confirmed_flush_lsn >= '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
                )
                .map(|s| s.trim() == "t")
                .unwrap_or(false)
            }
        },
    )
    .await;
    pgch.stop().await;
}

/// Starts pgch with its copies held, breaks the setup with `breakage` once it streams,
/// releases the copies, and expects exit code 1 with a message containing `expected`.
async fn broken_setup_stops_pgch(breakage: &str, expected: &str) {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g, g FROM generate_series(1, 10) g;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[]);
    let slot = env_value(&env, "PGCH__SOURCE__SLOT");
    let hold = CopyHold::held();
    let log = log_path("pgch-broken");
    let pgch = PgchProcess::run(&env, &[hold.env()], log.clone());
    wait_streaming(pg, &src.database, &slot, Duration::from_secs(60)).await;
    let stmt = breakage.replace("{user}", &format!("\"{}\"", src.user));
    pg.sql(&src.database, &stmt).unwrap();
    // A change for the walsender to meet the breakage with, and the copies to run.
    pg.sql(&src.database, "UPDATE public.orders SET total = total + 1;")
        .unwrap();
    hold.release();
    let text = pgch.wait_refusal(Duration::from_secs(120)).await;
    assert!(
        text.contains("fix:") && text.contains(expected),
        "the error names the fix ({expected}):\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_publication_stops_pgch_with_the_fix() {
    broken_setup_stops_pgch("DROP PUBLICATION clickpipes", "CREATE PUBLICATION").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_select_stops_pgch_with_the_fix() {
    broken_setup_stops_pgch(
        "REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM {user}",
        "GRANT SELECT",
    )
    .await;
}
