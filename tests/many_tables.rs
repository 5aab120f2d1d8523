//! Many published tables: one transaction touching every one of them is written with at
//! most `pipeline.max_concurrent_inserts` stream inserts in flight at once — counted from
//! outside, by a proxy in front of ClickHouse that watches the inserts' requests.

mod common;

use std::time::Duration;

use common::converge::{env_value, log_path, log_text, wait_same};
use common::process::PgchProcess;
use common::{clickhouse_addr, guide_env, guide_source, PublicationShape};
use pgch::testkit::postgres::PgCluster;
use pgch::testkit::request_watch::RequestWatch;

const TABLES: usize = 60;
const ROWS: usize = 5;
const LIMIT: usize = 3;

/// `sum(v)` over every table, the same text from both sides.
fn sums(ch_db: &str) -> (String, String) {
    let pg = (0..TABLES)
        .map(|i| format!("SELECT coalesce(sum(v), 0) AS s FROM public.many_{i}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let ch = (0..TABLES)
        .map(|i| {
            format!(
                "SELECT sum(v) AS s FROM `{ch_db}`.`public_many_{i}` FINAL WHERE _is_deleted = 0"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    (
        format!("SELECT sum(s)::bigint FROM ({pg}) x"),
        format!("SELECT toInt64(sum(s)) FROM ({ch})"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_never_exceed_the_configured_concurrency() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTablesInSchema);
    let mut ddl = String::new();
    for i in 0..TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE public.many_{i} (id int PRIMARY KEY, v int NOT NULL);
             INSERT INTO public.many_{i} SELECT g, g FROM generate_series(1, {ROWS}) g;"
        ));
    }
    pg.sql(&src.database, &ddl).unwrap();

    let watch = RequestWatch::start(clickhouse_addr(), "query_id=pgch-cdc-").unwrap();
    let via_watch = format!("http://127.0.0.1:{}", watch.port);
    let limit = LIMIT.to_string();
    let env = guide_env(
        pg,
        &src,
        &[
            ("PGCH__DESTINATION__URL", via_watch.as_str()),
            ("PGCH__PIPELINE__MAX_CONCURRENT_INSERTS", limit.as_str()),
        ],
    );
    let ch_db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-many-tables");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    let (pg_sum, ch_sum) = sums(&ch_db);
    wait_same(
        pg,
        &src.database,
        &pg_sum,
        &ch_sum,
        Duration::from_secs(120),
        &log,
    )
    .await;

    for round in 0..3 {
        watch.reset();
        let mut tx = String::from("BEGIN;");
        for i in 0..TABLES {
            tx.push_str(&format!(
                "UPDATE public.many_{i} SET v = v + {} WHERE id = 1;",
                round + 1
            ));
        }
        tx.push_str("COMMIT;");
        pg.sql(&src.database, &tx).unwrap();
        wait_same(
            pg,
            &src.database,
            &pg_sum,
            &ch_sum,
            Duration::from_secs(60),
            &log,
        )
        .await;
        let (max, total) = (watch.max_in_flight(), watch.total());
        eprintln!("round {round}: {total} stream inserts, at most {max} in flight at once");
        assert!(
            total >= TABLES,
            "one insert per touched table: {total} seen"
        );
        assert!(
            max <= LIMIT,
            "{max} stream inserts ran at once; pipeline.max_concurrent_inserts = {LIMIT}"
        );
        assert!(max >= 2, "the inserts of one flush run concurrently: {max}");
    }
    let logged = log_text(&log);
    assert!(
        !logged.contains("insert failed; retrying"),
        "no insert was retried:\n{logged}"
    );
    pgch.stop();
}
