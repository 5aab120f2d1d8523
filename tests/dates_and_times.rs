//! Dates, timestamps and times through both paths (the copy and the stream), judged
//! against the ClickHouse server itself: on a server whose `Date32`/`DateTime64` hold
//! 0001..9999 (26.8+, the engine the tests run) nothing in that range is clamped and
//! `time` is a `Time64(6)`; only BC dates, `±infinity` and years past 9999 are clamped,
//! and counted by kind in `pgch_clamped_values_total`. A server that reports an older
//! version keeps the 1900..2299 range and `time` as text.

mod common;

use std::time::{Duration, Instant};

use common::process::InProcessRun;
use common::{guide_settings, guide_source, PublicationShape};
use pgch::config::Settings;
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

/// (d, ts, tz, tm): the years the issue names, the edges, and what cannot be held.
const VALUES: &[(&str, &str, &str, &str)] = &[
    (
        "0001-01-01",
        "0001-01-01 00:00:00",
        "0001-01-01 00:00:00+00",
        "00:00:00",
    ),
    (
        "1000-06-15",
        "1000-06-15 12:34:56.789012",
        "1000-06-15 12:34:56.789012+00",
        "24:00:00",
    ),
    (
        "1899-12-31",
        "1899-12-31 23:59:59.999999",
        "1899-12-31 23:59:59.999999+00",
        "23:59:59.999999",
    ),
    (
        "2300-01-01",
        "2300-01-01 00:00:00.000001",
        "2300-01-01 00:00:00.000001+00",
        "00:00:00.000001",
    ),
    (
        "5000-07-04",
        "5000-07-04 04:05:06",
        "5000-07-04 04:05:06+00",
        "12:00:00.5",
    ),
    (
        "9999-12-31",
        "9999-12-31 23:59:59.999999",
        "9999-12-31 23:59:59.999999+00",
        "13:14:15.123456",
    ),
    (
        "0044-03-15 BC",
        "0044-03-15 12:00:00 BC",
        "0044-03-15 12:00:00+00 BC",
        "01:02:03",
    ),
    ("infinity", "infinity", "infinity", "23:59:59"),
    ("-infinity", "-infinity", "-infinity", "00:00:01"),
    (
        "10000-01-01",
        "10000-01-01 00:00:00",
        "10000-01-01 00:00:00+00",
        "06:07:08.9",
    ),
];

/// Clamps of each kind after the copy and the stream: [`VALUES`] twice (d, ts and tz
/// each), and the stream's update (0002 in d and ts, 8888 in tz).
const CLAMPS_WIDE: &[(&str, u64)] = &[
    ("bc", 6),
    ("infinity", 6),
    ("minus_infinity", 6),
    ("after_range", 6), // 10000
    ("before_range", 0),
];
const CLAMPS_OLD: &[(&str, u64)] = &[
    ("bc", 6),
    ("infinity", 6),
    ("minus_infinity", 6),
    ("after_range", 25),  // 2300, 5000, 9999, 10000; the update's 8888
    ("before_range", 20), // 0001, 1000, 1899; the update's 0002 (twice)
];

fn insert_sql(table: &str, first_id: usize) -> String {
    let rows: Vec<String> = VALUES
        .iter()
        .enumerate()
        .map(|(i, (d, ts, tz, tm))| format!("({}, '{d}', '{ts}', '{tz}', '{tm}')", first_id + i))
        .collect();
    format!(
        "INSERT INTO public.{table} VALUES {} ; INSERT INTO public.{table} VALUES ({}, NULL, NULL, NULL, NULL);",
        rows.join(", "),
        first_id + VALUES.len()
    )
}

/// Postgres' side of the comparison, clamped to `[lo, hi]` years the way pgch clamps.
fn pg_expected(table: &str, lo: &str, hi: &str, time64: bool) -> String {
    let tm = if time64 {
        "to_char(tm::interval, 'HH24:MI:SS.US')"
    } else {
        "tm::text"
    };
    format!(
        "SELECT id, \
           CASE WHEN d IS NULL THEN 'N' WHEN d < '{lo}-01-01' THEN '{lo}-01-01' WHEN d > '{hi}-12-31' THEN '{hi}-12-31' ELSE d::text END, \
           CASE WHEN ts IS NULL THEN 'N' WHEN ts < '{lo}-01-01' THEN '{lo}-01-01 00:00:00.000000' WHEN ts > '{hi}-12-31 23:59:59.999999' THEN '{hi}-12-31 23:59:59.999999' ELSE to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US') END, \
           CASE WHEN tz IS NULL THEN 'N' WHEN tz < '{lo}-01-01+00' THEN '{lo}-01-01 00:00:00.000000' WHEN tz > '{hi}-12-31 23:59:59.999999+00' THEN '{hi}-12-31 23:59:59.999999' ELSE to_char(tz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') END, \
           coalesce({tm}, 'N') \
         FROM public.{table} ORDER BY id"
    )
}

fn ch_actual(db: &str, table: &str) -> String {
    format!(
        "SELECT id, ifNull(toString(d), 'N'), ifNull(toString(ts), 'N'), ifNull(toString(tz), 'N'), ifNull(toString(tm), 'N') \
         FROM `{db}`.`public_{table}` FINAL ORDER BY id"
    )
}

async fn wait_equal(pg: &PgCluster, src_db: &str, ch: &ClickHouse, pg_sql: &str, ch_sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let p = pg
            .sql(src_db, pg_sql)
            .unwrap_or_default()
            .trim()
            .replace('|', "\t");
        let c = ch
            .query(ch_sql)
            .await
            .unwrap_or_default()
            .trim()
            .to_string();
        if p == c {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not equal after 90 s\npostgres:\n{p}\nclickhouse:\n{c}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `pgch_clamped_values_total` of `table` by kind, from this process' registry.
fn clamped(table: &str, kind: &str) -> u64 {
    let text = pgch::metrics::global().render().unwrap_or_default();
    let table_label = format!("table=\"{table}\"");
    let kind_label = format!("kind=\"{kind}\"");
    text.lines()
        .filter(|l| l.starts_with("pgch_clamped_values_total{"))
        .filter(|l| l.contains(&table_label) && l.contains(&kind_label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn column_types(ch: &ClickHouse, db: &str, table: &str) -> String {
    ch.query(&format!(
        "SELECT arrayStringConcat(groupArray(concat(name, ' ', type)), ', ') FROM \
         (SELECT name, type FROM system.columns WHERE database = '{db}' AND table = 'public_{table}' \
          AND name IN ('d', 'ts', 'tz', 'tm') ORDER BY position)"
    ))
    .await
    .unwrap()
    .trim()
    .replace("\\'", "'")
}

/// Copies `table`'s first rows, streams the same values again plus an update, and
/// checks both against Postgres as the server's range allows; returns the settings.
async fn copy_and_stream(
    pg: &PgCluster,
    src_db: &str,
    table: &str,
    ch: &ClickHouse,
    settings: Settings,
    expected: (&str, &str, bool),
) -> Settings {
    let db = settings.destination.database.clone();
    let pgch = InProcessRun::start(&settings);
    let (lo, hi, time64) = expected;
    let want = pg_expected(table, lo, hi, time64);
    let have = ch_actual(&db, table);
    // The copy.
    wait_equal(pg, src_db, ch, &want, &have).await;
    // The stream: the same values in new rows, and an update through every column.
    pg.sql(src_db, &insert_sql(table, 101)).unwrap();
    pg.sql(
        src_db,
        &format!(
            "UPDATE public.{table} SET d = '0002-02-02', ts = '0002-02-02 02:02:02.000002', \
             tz = '8888-08-08 08:08:08+00', tm = '24:00:00' WHERE id = 1"
        ),
    )
    .unwrap();
    wait_equal(pg, src_db, ch, &want, &have).await;
    pgch.stop().await;
    settings
}

fn create_sql(table: &str) -> String {
    format!(
        "CREATE TABLE public.{table} (id int PRIMARY KEY, d date, ts timestamp, tz timestamptz, tm time);
         {}
         ALTER PUBLICATION clickpipes ADD TABLE public.{table};",
        insert_sql(table, 1)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn years_1_to_9999_and_24_hour_times_arrive_exact_through_copy_and_stream() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let table = "dt_wide";
    pg.sql(&src.database, &create_sql(table)).unwrap();
    let settings = guide_settings(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "200")]);
    let ch = ClickHouse::shared();
    let settings = copy_and_stream(
        pg,
        &src.database,
        table,
        ch,
        settings,
        ("0001", "9999", true),
    )
    .await;
    let db = &settings.destination.database;
    assert_eq!(
        column_types(ch, db, table).await,
        "d Nullable(Date32), ts Nullable(DateTime64(6)), tz Nullable(DateTime64(6, 'UTC')), tm Nullable(Time64(6))"
    );
    // Both paths clamped exactly what the server cannot hold, and nothing else.
    let dest = format!("public_{table}");
    for (kind, n) in CLAMPS_WIDE {
        assert_eq!(clamped(&dest, kind), *n, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reporting_an_older_version_keeps_the_1900_to_2299_range_and_time_as_text() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let table = "dt_old";
    pg.sql(&src.database, &create_sql(table)).unwrap();
    let ch = ClickHouse::start_front_reporting(None, Some("25.3.6.56")).unwrap();
    let mut settings = guide_settings(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "200")]);
    settings.destination.url = ch.url.clone();
    settings.destination.user = ch.user.clone();
    let settings = copy_and_stream(
        pg,
        &src.database,
        table,
        &ch,
        settings,
        ("1900", "2299", false),
    )
    .await;
    let db = &settings.destination.database;
    assert_eq!(
        column_types(&ch, db, table).await,
        "d Nullable(Date32), ts Nullable(DateTime64(6)), tz Nullable(DateTime64(6, 'UTC')), tm Nullable(String)"
    );
    let dest = format!("public_{table}");
    for (kind, n) in CLAMPS_OLD {
        assert_eq!(clamped(&dest, kind), *n, "{kind}");
    }
}
