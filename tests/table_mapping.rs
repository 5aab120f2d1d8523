//! Per-table mapping (`[[tables]]` order_by, partition_by, exclude_columns; the
//! `<table>_current` views) against real servers: ClickHouse equals Postgres under the
//! view through the randomized workload and SIGKILLs, with the layout as configured;
//! deletes and moves collapse under a custom sort key (the PeerDB #2058 case); columns
//! left out never reach ClickHouse; a changed mapping names the resync that applies it;
//! `pgch check` judges the mapping against the publication.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use common::converge::{env_value, log_path, log_text, resync_table, wait_same};
use common::process::PgchProcess;
use common::workload::{run_transactions, wait_equal_within, Rng, Workload, SCHEMA};
use common::{guide_env, guide_settings, guide_source, PublicationShape};
use pgch::check::{self, Outcome};
use pgch::config::TableOptions;
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;
use pgch::testkit::{scaled, unique_name};

const LIMIT: Duration = Duration::from_secs(120);

/// Writes `toml` to a file of its own and returns the env pointing pgch at it.
fn with_config(env: &[(String, String)], toml: &str) -> (Vec<(String, String)>, PathBuf) {
    let path = std::env::temp_dir().join(format!("{}.toml", unique_name("pgch-mapping")));
    std::fs::write(&path, toml).expect("write config");
    let mut env = env.to_vec();
    env.push(("PGCH_CONFIG".into(), path.display().to_string()));
    (env, path)
}

/// Four runs of pgch, each while `work` writes: killed at a random moment, except run
/// `at_failpoint`, which dies between an insert and its acknowledgement.
async fn crash_rounds(
    env: &[(String, String)],
    log: &std::path::Path,
    rng: &mut Rng,
    at_failpoint: usize,
    mut work: impl FnMut(),
) {
    let spec = format!("{}:1", pgch::failpoint::AFTER_INSERT_BEFORE_ACK);
    for round in 0..4 {
        let extra: Vec<(&str, &str)> = if round == at_failpoint {
            vec![("PGCH_FAILPOINT", spec.as_str())]
        } else {
            vec![]
        };
        let pgch = PgchProcess::run(env, &extra, log.to_path_buf());
        work();
        if round == at_failpoint {
            let status = tokio::task::spawn_blocking(move || pgch.wait(LIMIT))
                .await
                .unwrap();
            assert_eq!(
                status.and_then(|s| s.signal()),
                Some(libc::SIGKILL),
                "pgch did not die at the failpoint\n{}",
                log_text(log)
            );
        } else {
            tokio::time::sleep(Duration::from_millis(rng.range(200, 2500))).await;
            pgch.kill9();
        }
    }
}

/// `partition_key` and `sorting_key` of a ClickHouse table, as system.tables shows them
/// (a one-column sort key without the parentheses some versions print).
async fn keys_of(db: &str, table: &str) -> String {
    let text = ClickHouse::shared()
        .query(&format!(
            "SELECT partition_key, sorting_key FROM system.tables WHERE database = '{db}' AND name = '{table}' FORMAT TSV"
        ))
        .await
        .unwrap_or_default();
    let (partition, sorting) = text
        .trim_end_matches('\n')
        .split_once('\t')
        .unwrap_or_default();
    let sorting = sorting
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(sorting);
    format!("{partition}\t{sorting}")
}

/// Live rows sharing a key under FINAL: a delete marker or a move that missed its row.
async fn live_duplicates(db: &str, table: &str, key: &str) -> String {
    ClickHouse::shared()
        .query(&format!(
            "SELECT count() - uniqExact({key}) FROM `{db}`.`{table}` FINAL WHERE _is_deleted = 0"
        ))
        .await
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_sort_and_partition_keys_stay_equal_through_the_random_workload_and_sigkills() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(&src.database, SCHEMA).unwrap();
    // A sort column that every update may change (`v`) needs the whole old row; a
    // column to leave out, which the workload's inserts fill with its default.
    pg.sql(
        &src.database,
        "ALTER TABLE public.w_comp REPLICA IDENTITY FULL;
         ALTER TABLE public.w_comp ADD COLUMN secret text DEFAULT 'do not copy';",
    )
    .unwrap();
    let base = guide_env(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "300")]);
    let (env, _config) = with_config(
        &base,
        r#"
[[tables]]
source = "public.w_comp"
order_by = ["v"]
partition_by = "v % 4"
exclude_columns = ["secret"]
column_types = { note = "LowCardinality(String)" }

[[tables]]
source = "public.w_idx"
order_by = ["serial"]
partition_by = "cityHash64(serial) % 3"
column_types = { v = "String" }

[[tables]]
source = "public.w_full"
order_by = ["b"]
"#,
    );
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-mapping-workload");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(11);
    eprintln!("workload seed {seed}");
    let mut workload = Workload::new(seed);
    let mut rng = Rng::new(seed ^ 0x51);

    crash_rounds(&env, &log, &mut rng, 2, || {
        run_transactions(pg, &src.database, &mut workload, scaled(30) as usize)
    })
    .await;
    let pgch = PgchProcess::run(&env, &[], log.clone());
    run_transactions(pg, &src.database, &mut workload, scaled(30) as usize);
    wait_equal_within(pg, &src.database, &db, Duration::from_secs(240), &log).await;

    assert_eq!(keys_of(&db, "public_w_comp").await, "v % 4\tv, region, id");
    assert_eq!(
        keys_of(&db, "public_w_idx").await,
        "cityHash64(serial) % 3\tserial"
    );
    assert!(
        keys_of(&db, "public_w_full")
            .await
            .ends_with("b, a, _version, _seq"),
        "{}",
        keys_of(&db, "public_w_full").await
    );
    assert_eq!(
        live_duplicates(&db, "public_w_comp", "region, id").await,
        "0"
    );
    assert_eq!(live_duplicates(&db, "public_w_idx", "serial").await, "0");
    let types = ClickHouse::shared()
        .query(&format!(
            "SELECT table, name, type FROM system.columns WHERE database = '{db}' AND ((table = 'public_w_comp' AND name IN ('note', 'secret')) OR (table = 'public_w_idx' AND name = 'v')) ORDER BY table, name FORMAT TSV"
        ))
        .await
        .unwrap();
    assert_eq!(
        types.trim(),
        "public_w_comp\tnote\tLowCardinality(Nullable(String))\npublic_w_idx\tv\tNullable(String)"
    );
    // The view is the table as Postgres holds it.
    let (pg_sql, ch_sql) = (
        "SELECT region, id, v, coalesce(note, '') FROM public.w_comp ORDER BY 1, 2",
        format!("SELECT region, id, v, ifNull(note, '') FROM `{db}`.`public_w_comp_current` ORDER BY 1, 2"),
    );
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_moves_collapse_under_a_custom_sort_key_and_partitions() {
    // PeerDB #2058: a delete marker with placeholder sort values never meets its row.
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.shop_orders (id int PRIMARY KEY, region text NOT NULL, placed date NOT NULL, total int);
         ALTER TABLE public.shop_orders REPLICA IDENTITY FULL;
         INSERT INTO public.shop_orders SELECT g, (ARRAY['eu','us','ap'])[g % 3 + 1], date '2026-01-01' + g % 90, g FROM generate_series(1, 300) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.shop_orders;",
    )
    .unwrap();
    let base = guide_env(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "200")]);
    let (env, _config) = with_config(
        &base,
        r#"
[[tables]]
source = "public.shop_orders"
order_by = ["region", "placed"]
partition_by = "toYYYYMM(placed)"
"#,
    );
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-mapping-2058");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    let pg_sql =
        "SELECT id, region, placed, coalesce(total, -1) FROM public.shop_orders ORDER BY id";
    let ch_sql = format!(
        "SELECT id, region, placed, ifNull(total, -1) FROM `{db}`.`public_shop_orders_current` ORDER BY id"
    );
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    pg.sql(
        &src.database,
        "DELETE FROM public.shop_orders WHERE id % 5 = 0;
         UPDATE public.shop_orders SET region = 'sa' WHERE id % 7 = 0;
         UPDATE public.shop_orders SET placed = placed + 45 WHERE id % 11 = 0;
         UPDATE public.shop_orders SET total = NULL WHERE id % 13 = 0;
         UPDATE public.shop_orders SET id = id + 1000 WHERE id % 17 = 0;
         BEGIN; INSERT INTO public.shop_orders VALUES (5000, 'eu', '2026-03-01', 1); UPDATE public.shop_orders SET placed = '2026-06-30' WHERE id = 5000; DELETE FROM public.shop_orders WHERE id = 5000; COMMIT;",
    )
    .unwrap();
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    // Merged for good, the deleted and moved rows are gone, not only hidden by FINAL.
    let ch = ClickHouse::shared();
    ch.query(&format!("OPTIMIZE TABLE `{db}`.`public_shop_orders` FINAL"))
        .await
        .unwrap();
    let live = ch
        .query(&format!(
            "SELECT count(), countIf(_is_deleted = 0) FROM `{db}`.`public_shop_orders` FINAL"
        ))
        .await
        .unwrap();
    let pg_count = pg
        .sql(&src.database, "SELECT count(*) FROM public.shop_orders")
        .unwrap();
    assert_eq!(
        live.split('\t').nth(1).map(str::trim),
        Some(pg_count.trim()),
        "{live}"
    );
    assert_eq!(live_duplicates(&db, "public_shop_orders", "id").await, "0");
    assert_eq!(
        keys_of(&db, "public_shop_orders").await,
        "toYYYYMM(placed)\tregion, placed, id"
    );
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_out_columns_are_never_copied_nor_streamed_and_views_follow_an_added_column() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.accounts (id int PRIMARY KEY, email text, password text, note text);
         INSERT INTO public.accounts SELECT g, 'u' || g || '@x', 'secret' || g, 'n' || g FROM generate_series(1, 200) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.accounts;",
    )
    .unwrap();
    let base = guide_env(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "200")]);
    let (env, _config) = with_config(
        &base,
        r#"
[[tables]]
source = "public.accounts"
exclude_columns = ["password"]
"#,
    );
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-mapping-exclude");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    let pg_sql =
        "SELECT id, coalesce(email, ''), coalesce(note, '') FROM public.accounts ORDER BY id";
    let ch_sql = format!(
        "SELECT id, ifNull(email, ''), ifNull(note, '') FROM `{db}`.`public_accounts_current` ORDER BY id"
    );
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    pg.sql(
        &src.database,
        "INSERT INTO public.accounts VALUES (500, 'new@x', 'hunter2', 'fresh');
         UPDATE public.accounts SET password = 'rotated' WHERE id % 3 = 0;
         UPDATE public.accounts SET note = 'changed', password = 'again' WHERE id % 4 = 0;
         UPDATE public.accounts SET id = id + 1000 WHERE id % 9 = 0;
         DELETE FROM public.accounts WHERE id % 10 = 0;",
    )
    .unwrap();
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    let ch = ClickHouse::shared();
    let columns = |table: &'static str| {
        let db = db.clone();
        async move {
            ch.query(&format!(
                "SELECT groupArray(name) FROM (SELECT name FROM system.columns WHERE database = '{db}' AND table = '{table}' ORDER BY position)"
            ))
            .await
            .unwrap_or_default()
            .trim()
            .to_string()
        }
    };
    assert_eq!(
        columns("public_accounts").await,
        "['id','email','note','_version','_is_deleted','_synced_at']"
    );
    // No value of the left-out column reached ClickHouse in any form.
    let leaked = ch
        .query(&format!(
            "SELECT count() FROM `{db}`.`public_accounts` WHERE positionCaseInsensitive(concat(toString(id), ifNull(email, ''), ifNull(note, '')), 'secret') > 0 OR positionCaseInsensitive(ifNull(note, ''), 'hunter') > 0"
        ))
        .await
        .unwrap();
    assert_eq!(leaked.trim(), "0");

    // The view follows a column added in Postgres; the left-out one stays out.
    pg.sql(
        &src.database,
        "ALTER TABLE public.accounts ADD COLUMN tier int DEFAULT 1;
         INSERT INTO public.accounts VALUES (600, 'late@x', 'pw', 'late', 3);",
    )
    .unwrap();
    let pg_sql = "SELECT id, coalesce(note, ''), tier FROM public.accounts ORDER BY id";
    let ch_sql = format!(
        "SELECT id, ifNull(note, ''), tier FROM `{db}`.`public_accounts_current` ORDER BY id"
    );
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    assert_eq!(
        columns("public_accounts_current").await,
        "['id','email','note','tier']"
    );

    // Whatever happens to the left-out column, it stays out: renamed (and a new column
    // taking its name), then dropped and added again.
    pg.sql(
        &src.database,
        "ALTER TABLE public.accounts RENAME COLUMN password TO pw_old;
         ALTER TABLE public.accounts ADD COLUMN password text;
         INSERT INTO public.accounts VALUES (700, 'r@x', 'secret-renamed', 'renamed', 1, 'secret-new');",
    )
    .unwrap();
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    pg.sql(
        &src.database,
        "ALTER TABLE public.accounts DROP COLUMN pw_old;
         ALTER TABLE public.accounts ADD COLUMN pw_old text;
         INSERT INTO public.accounts VALUES (800, 'd@x', 'readded', 2, 'secret-new', 'secret-readded');",
    )
    .unwrap();
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    assert_eq!(
        columns("public_accounts").await,
        "['id','email','note','_version','_is_deleted','_synced_at','tier']"
    );
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_mapping_names_the_resync_and_the_resync_applies_it() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.events (id int PRIMARY KEY, kind text NOT NULL, payload text, secret text);
         ALTER TABLE public.events REPLICA IDENTITY FULL;
         INSERT INTO public.events SELECT g, 'k' || g % 4, 'p' || g, 's' || g FROM generate_series(1, 100) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.events;",
    )
    .unwrap();
    let base = guide_env(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "200")]);
    let db = env_value(&base, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-mapping-change");
    let pg_sql = "SELECT id, kind, coalesce(payload, '') FROM public.events ORDER BY id";
    let ch_sql = format!(
        "SELECT id, kind, ifNull(payload, '') FROM `{db}`.`public_events_current` ORDER BY id"
    );
    let pgch = PgchProcess::run(&base, &[], log.clone());
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    pgch.stop();
    assert_eq!(keys_of(&db, "public_events").await, "\tid");

    // The new mapping is refused on the old table, naming the fix.
    let (env, _config) = with_config(
        &base,
        r#"
[[tables]]
source = "public.events"
order_by = ["kind"]
partition_by = "kind"
exclude_columns = ["secret"]
"#,
    );
    pg.sql(
        &src.database,
        "UPDATE public.events SET kind = 'moved' WHERE id % 6 = 0; DELETE FROM public.events WHERE id % 8 = 0;",
    )
    .unwrap();
    let refused = PgchProcess::run(&env, &[], log.clone())
        .wait_refusal(LIMIT)
        .await;
    assert!(
        refused.contains("mapping of public.events changed")
            && refused.contains("pgch resync --table public.events"),
        "{refused}"
    );

    resync_table(&env, "public.events");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    assert_eq!(keys_of(&db, "public_events").await, "kind\tkind, id");
    pg.sql(
        &src.database,
        "UPDATE public.events SET kind = 'again' WHERE id % 5 = 0; DELETE FROM public.events WHERE id % 7 = 0;",
    )
    .unwrap();
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    assert_eq!(live_duplicates(&db, "public_events", "id").await, "0");
    let secret = ClickHouse::shared()
        .query(&format!(
            "SELECT count() FROM system.columns WHERE database = '{db}' AND table = 'public_events' AND name = 'secret'"
        ))
        .await
        .unwrap();
    assert_eq!(secret.trim(), "0");
    pgch.stop();
    // Started again with the same mapping: nothing to refuse.
    let pgch = PgchProcess::run(&env, &[], log.clone());
    pg.sql(
        &src.database,
        "INSERT INTO public.events VALUES (900, 'late', 'p', 's')",
    )
    .unwrap();
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_judges_each_mapping_against_the_publication() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.a (id int PRIMARY KEY, region text, v int);
         CREATE TABLE public.b (id int PRIMARY KEY, region text);
         CREATE TABLE public.c (id int PRIMARY KEY, region text);
         CREATE TABLE public.d (id int PRIMARY KEY, v int);
         ALTER TABLE public.c REPLICA IDENTITY FULL;
         ALTER PUBLICATION clickpipes ADD TABLE public.a, public.b, public.c, public.d;",
    )
    .unwrap();
    let mut settings = guide_settings(pg, &src, &[]);
    let options = |order: &[&str], partition: Option<&str>, exclude: &[&str]| TableOptions {
        order_by: order.iter().map(|s| s.to_string()).collect(),
        partition_by: partition.map(str::to_string),
        exclude_columns: exclude.iter().map(|s| s.to_string()).collect(),
        column_types: Default::default(),
        history: false,
    };
    let tables = &mut settings.destination.table_options;
    tables.insert("public.a".into(), options(&[], None, &["id"]));
    tables.insert("public.b".into(), options(&["region"], None, &["nope"]));
    tables.insert(
        "public.c".into(),
        options(&["region"], Some("cityHash64(region) % 8"), &[]),
    );
    tables.insert("public.missing".into(), options(&[], None, &["x"]));
    let mut typed = options(&[], None, &[]);
    typed
        .column_types
        .insert("v".into(), "Decimal(5, 2)".into());
    tables.insert("public.d".into(), typed);
    let report = check::run(&settings).await;
    let lines = report.named("table_layouts");
    let find = |what: &str| {
        lines
            .iter()
            .find(|c| c.observed.contains(what))
            .unwrap_or_else(|| panic!("no line about {what}:\n{}", report.render_text()))
    };
    let a = find("public.a");
    assert_eq!(a.outcome, Outcome::Failed);
    assert!(
        a.observed.contains("replica identity key"),
        "{}",
        a.observed
    );
    let b = find("public.b");
    assert_eq!(b.outcome, Outcome::Failed);
    assert!(b.observed.contains("`nope`"), "{}", b.observed);
    let c = find("public.c");
    assert_eq!(c.outcome, Outcome::Ok, "{}", c.observed);
    assert!(
        c.observed
            .contains("ORDER BY (region, id), PARTITION BY cityHash64(region) % 8"),
        "{}",
        c.observed
    );
    assert_eq!(find("public.missing").outcome, Outcome::Warning);
    let d = find("public.d");
    assert_eq!(d.outcome, Outcome::Failed);
    assert!(
        d.observed
            .contains("Decimal(5, 2) does not suit a int4 column"),
        "{}",
        d.observed
    );
    assert!(report.has_failures());

    // `pgch run` refuses the same mistakes before it creates anything.
    settings.destination.table_options.remove("public.b");
    settings.destination.table_options.remove("public.missing");
    settings.destination.table_options.remove("public.d");
    let err = pgch::snapshot::plan_all(
        &pgch::source::connect::connect(&settings.source.endpoint)
            .await
            .unwrap(),
        &settings,
        &pgch::snapshot::SnapshotOptions::from_settings(&settings),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("public.a"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_type_overrides_show_in_the_table_and_hold_every_value() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.typed (id int PRIMARY KEY, amount numeric, doc jsonb, at timestamp NOT NULL, kind text, price numeric(20, 4));
         INSERT INTO public.typed SELECT g, g * 1.25, jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g)), timestamp '2026-01-01' + g * interval '1.5 second', 'k' || g % 3, g FROM generate_series(1, 100) g;
         ALTER PUBLICATION clickpipes ADD TABLE public.typed;",
    )
    .unwrap();
    let base = guide_env(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "200")]);
    let (env, _config) = with_config(
        &base,
        r#"
[[tables]]
source = "public.typed"
column_types = { amount = "Decimal(18, 4)", doc = "JSON", at = "DateTime64(3)", kind = "LowCardinality(String)", price = "String" }
"#,
    );
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-mapping-types");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    let pg_sql = "SELECT id, amount::numeric(18, 4), (doc->>'n')::int, to_char(at, 'YYYY-MM-DD HH24:MI:SS.MS'), kind, price::text FROM public.typed ORDER BY id";
    let ch_sql = format!(
        "SELECT id, toDecimalString(amount, 4), doc.n::Int64, toString(at), kind, price FROM `{db}`.`public_typed_current` ORDER BY id"
    );
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    pg.sql(
        &src.database,
        "INSERT INTO public.typed VALUES (500, 9999999999.1234, '{\"n\": 500}', '2026-06-01 12:00:00.250', 'new', 1.5);
         UPDATE public.typed SET amount = amount * 2, doc = doc || '{\"n\": 7}', kind = 'changed' WHERE id % 4 = 0;
         DELETE FROM public.typed WHERE id % 9 = 0;",
    )
    .unwrap();
    wait_same(pg, &src.database, pg_sql, &ch_sql, LIMIT, &log).await;
    let types = ClickHouse::shared()
        .query(&format!(
            "SELECT name, type FROM system.columns WHERE database = '{db}' AND table = 'public_typed' AND name NOT LIKE '\\_%' ORDER BY position FORMAT TSV"
        ))
        .await
        .unwrap();
    assert_eq!(
        types.trim(),
        "id\tInt32\namount\tNullable(Decimal(18, 4))\ndoc\tNullable(JSON)\nat\tDateTime64(3)\nkind\tLowCardinality(Nullable(String))\nprice\tNullable(String)"
    );

    // A value the override cannot hold stops pgch naming table, column and value; the
    // batch is neither written nor acknowledged, so nothing is lost once it is fixed.
    pg.sql(
        &src.database,
        "INSERT INTO public.typed VALUES (600, 1.00001, '{}', '2026-06-01 12:00:00', 'x', 1);",
    )
    .unwrap();
    let refused = pgch.wait_refusal(LIMIT).await;
    assert!(
        refused.contains("public.typed.amount")
            && refused.contains("1.00001")
            && refused.contains("Decimal(18, 4)"),
        "{refused}"
    );
    let ch = ClickHouse::shared();
    let written = ch
        .query(&format!(
            "SELECT count() FROM `{db}`.`public_typed` WHERE id = 600"
        ))
        .await
        .unwrap();
    assert_eq!(written.trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_value_an_override_cannot_hold_stops_the_copy_before_anything_is_written() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.prices (id int PRIMARY KEY, amount numeric);
         INSERT INTO public.prices SELECT g, g FROM generate_series(1, 50) g;
         INSERT INTO public.prices VALUES (51, 123456.5);
         ALTER PUBLICATION clickpipes ADD TABLE public.prices;",
    )
    .unwrap();
    let base = guide_env(pg, &src, &[]);
    let (env, _config) = with_config(
        &base,
        r#"
[[tables]]
source = "public.prices"
column_types = { amount = "Decimal(5, 1)" }
"#,
    );
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-mapping-misfit");
    let refused = PgchProcess::run(&env, &[], log.clone())
        .wait_refusal(LIMIT)
        .await;
    assert!(
        refused.contains("public.prices.amount") && refused.contains("123456.5"),
        "{refused}"
    );
    let rows = ClickHouse::shared()
        .query(&format!("SELECT count() FROM `{db}`.`public_prices`"))
        .await
        .unwrap_or_default();
    assert_eq!(rows.trim(), "0", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_table_holds_exactly_one_row_per_change_through_sigkills_and_replays() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    // The oracle: a trigger logs every row change in Postgres, as the history must.
    pg.sql(
        &src.database,
        "CREATE TABLE public.ledger (id int PRIMARY KEY, amount int NOT NULL, memo text);
         ALTER TABLE public.ledger REPLICA IDENTITY FULL;
         INSERT INTO public.ledger SELECT g, g * 10, 'm' || g FROM generate_series(1, 50) g;
         CREATE TABLE public.ledger_audit (n bigserial PRIMARY KEY, op text, id int, amount int, memo text);
         CREATE FUNCTION public.ledger_log() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF TG_OP = 'DELETE' THEN
             INSERT INTO public.ledger_audit (op, id, amount, memo) VALUES ('delete', OLD.id, OLD.amount, OLD.memo);
           ELSE
             INSERT INTO public.ledger_audit (op, id, amount, memo) VALUES (lower(TG_OP), NEW.id, NEW.amount, NEW.memo);
           END IF;
           RETURN NULL;
         END $$;
         CREATE TRIGGER ledger_log AFTER INSERT OR UPDATE OR DELETE ON public.ledger FOR EACH ROW EXECUTE FUNCTION public.ledger_log();
         ALTER PUBLICATION clickpipes ADD TABLE public.ledger;",
    )
    .unwrap();
    let base = guide_env(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "200")]);
    let (env, _config) = with_config(
        &base,
        r#"
[[tables]]
source = "public.ledger"
mode = "history"
partition_by = "toYYYYMM(_commit_time)"
"#,
    );
    let db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-mapping-history");
    let table = format!("`{db}`.`public_ledger`");
    let mut rng = Rng::new(0x4157);
    let mut next_id = 1000;
    let mut changes = |rng: &mut Rng| {
        let mut sql = String::from("BEGIN;\n");
        for _ in 0..rng.range(1, 5) {
            let m = rng.range(3, 9);
            let r = rng.range(0, m - 1);
            sql.push_str(&match rng.range(0, 4) {
                0 | 1 => {
                    next_id += 3;
                    format!("INSERT INTO public.ledger VALUES ({next_id}, 1, 'n'), ({}, 2, NULL), ({}, 3, 'x');\n", next_id + 1, next_id + 2)
                }
                2 => format!("UPDATE public.ledger SET amount = amount + 1, memo = coalesce(memo, '') || 'u' WHERE id % {m} = {r};\n"),
                3 => format!("DELETE FROM public.ledger WHERE id % {m} = {r} AND id % 2 = 0;\n"),
                _ => "UPDATE public.ledger SET id = id + 100000 WHERE id = (SELECT min(id) FROM public.ledger WHERE id < 100000);\n".to_string(),
            });
        }
        sql.push_str("COMMIT;\n");
        sql
    };
    // The copy's rows are the table as its snapshot saw it; every change after it
    // follows as a row of its own (changes the snapshot saw are in its rows).
    let first = PgchProcess::run(&env, &[], log.clone());
    wait_same(
        pg,
        &src.database,
        "SELECT count(*) FROM public.ledger",
        &format!("SELECT count() FROM {table} FINAL WHERE _op = 'snapshot'"),
        LIMIT,
        &log,
    )
    .await;
    first.stop();
    crash_rounds(&env, &log, &mut Rng::new(0x99), 1, || {
        for _ in 0..scaled(25) {
            pg.sql(&src.database, &changes(&mut rng)).unwrap();
        }
    })
    .await;
    let pgch = PgchProcess::run(&env, &[], log.clone());
    // A TRUNCATE keeps the history; what follows is recorded after it.
    pg.sql(
        &src.database,
        "TRUNCATE public.ledger; INSERT INTO public.ledger VALUES (1, 1, 'after');",
    )
    .unwrap();
    let pg_sql = "SELECT op, id, amount, coalesce(memo, '~') FROM public.ledger_audit ORDER BY op COLLATE \"C\", id, amount, coalesce(memo, '~') COLLATE \"C\"";
    let ch_sql = format!(
        "SELECT toString(_op), id, amount, ifNull(memo, '~') FROM {table} FINAL WHERE _op != 'snapshot' ORDER BY 1, 2, 3, 4"
    );
    wait_same(
        pg,
        &src.database,
        pg_sql,
        &ch_sql,
        Duration::from_secs(240),
        &log,
    )
    .await;
    let ch = ClickHouse::shared();
    let facts = ch
        .query(&format!(
            "SELECT countIf(_op = 'snapshot'), count() - uniqExact(_lsn, _seq), countIf(_op != 'snapshot' AND (_commit_time < '2026-01-01' OR _xid = 0)) FROM {table} FINAL FORMAT TSV"
        ))
        .await
        .unwrap();
    assert_eq!(
        facts.trim(),
        "50\t0\t0",
        "snapshot rows, changes twice, unstamped"
    );
    // Replays were written again, but each change keeps one row.
    ch.query(&format!("OPTIMIZE TABLE {table} FINAL"))
        .await
        .unwrap();
    let after = ch
        .query(&format!("SELECT count() FROM {table}"))
        .await
        .unwrap();
    let audited = pg
        .sql(
            &src.database,
            "SELECT count(*) + 50 FROM public.ledger_audit",
        )
        .unwrap();
    assert_eq!(after.trim(), audited.trim());
    let views = ch
        .query(&format!(
            "SELECT count() FROM system.tables WHERE database = '{db}' AND name = 'public_ledger_current'"
        ))
        .await
        .unwrap();
    assert_eq!(views.trim(), "0", "a history has no current view");
    pgch.stop();
}
