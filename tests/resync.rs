//! `pgch resync` against real servers: a dropped or invalidated slot is refused by
//! `pgch run` and fixed by `pgch resync` (equal to Postgres, deleted rows gone, streaming
//! afterwards); readers see the old complete table until the exchange; `--table` touches
//! only its table and keeps the slot; a resync killed half-way blocks `pgch run` until a
//! rerun completes it.

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::converge::{log_path, log_text, wait_streaming};
use common::process::{CopyHold, PgchProcess};
use common::{guide_env, guide_source, GuideSource, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::{PgCluster, PgOptions};

const DATA: &str = "
INSERT INTO public.customers SELECT g, 'customer ' || g FROM generate_series(1, 3000) g;
INSERT INTO public.orders SELECT g, g % 300, g * 1.25 FROM generate_series(1, 5000) g;
";

/// Changes made while pgch is stopped and its slot is gone: the stream will never carry
/// them, so only the resync's copy can.
const WHILE_STOPPED: &str = "
DELETE FROM public.customers WHERE id % 7 = 0;
UPDATE public.customers SET name = name || ' (moved)' WHERE id % 5 = 0;
DELETE FROM public.orders WHERE id % 3 = 0;
INSERT INTO public.orders SELECT g, 7, 1.00 FROM generate_series(6001, 6200) g;
";

/// Changes after the resync, carried by the (new) slot.
const AFTER: &str = "
INSERT INTO public.customers SELECT g, 'late ' || g FROM generate_series(5001, 5100) g;
DELETE FROM public.orders WHERE id % 11 = 0;
UPDATE public.customers SET name = 'renamed' WHERE id % 13 = 0;
";

struct Env {
    vars: Vec<(String, String)>,
    db: String,
    slot: String,
}

fn env(pg: &PgCluster, src: &GuideSource) -> Env {
    let vars = guide_env(pg, src, &[]);
    let get = |k: &str| {
        vars.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    Env {
        db: get("PGCH__DESTINATION__DATABASE"),
        slot: get("PGCH__SOURCE__SLOT"),
        vars,
    }
}

/// `pgch resync [args]` as a child process, stderr appended to `log`.
fn spawn_resync(env: &Env, args: &[&str], extra: &[(&str, &str)], log: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgch"));
    cmd.arg("resync")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

async fn wait_child(child: &mut Child, limit: Duration, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "pgch resync did not finish within {limit:?}\n{}",
                log_text(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `pgch resync [args]` to its end; asserts exit 0; returns its log.
async fn resync(env: &Env, args: &[&str]) -> String {
    let log = log_path("pgch-resync");
    let mut child = spawn_resync(env, args, &[], &log);
    let status = wait_child(&mut child, Duration::from_secs(300), &log).await;
    let text = log_text(&log);
    assert!(status.success(), "pgch resync {args:?}: {status}\n{text}");
    for word in [
        "resync of table started",
        "resync of table finished",
        "rows_per_sec",
        "resync complete",
    ] {
        assert!(text.contains(word), "`{word}` not logged:\n{text}");
    }
    text
}

/// Runs `pgch resync [args]` that must fail (exit 1); returns its log.
async fn resync_fails(env: &Env, args: &[&str]) -> String {
    let log = log_path("pgch-resync-refused");
    let mut child = spawn_resync(env, args, &[], &log);
    let status = wait_child(&mut child, Duration::from_secs(120), &log).await;
    let text = log_text(&log);
    assert_eq!(status.code(), Some(1), "{text}");
    text
}

/// `pgch run` that must refuse to start: exit 1, with `words` in its log.
async fn run_refuses(env: &Env, words: &[&str]) {
    let text = PgchProcess::run(&env.vars, &[], log_path("pgch-refused"))
        .wait_refusal(Duration::from_secs(120))
        .await;
    for w in words {
        assert!(text.contains(w), "`{w}` not in:\n{text}");
    }
}

fn pg_rows(pg: &PgCluster, db: &str, sql: &str) -> String {
    pg.sql(db, sql).unwrap().trim().replace('|', "\t")
}

async fn ch(sql: &str) -> String {
    ClickHouse::shared()
        .query(sql)
        .await
        .unwrap_or_else(|e| format!("error: {e}"))
        .trim()
        .to_string()
}

/// (Postgres, ClickHouse) queries that agree when the tables are equal.
fn comparisons(db: &str) -> Vec<(String, String)> {
    vec![
        (
            "SELECT count(*), sum(id), sum(length(name)) FROM public.customers".into(),
            format!("SELECT count(), sum(id), sum(lengthUTF8(name)) FROM `{db}`.`public_customers` FINAL WHERE _is_deleted = 0"),
        ),
        (
            "SELECT count(*), sum(id), sum(customer_id), sum(total) FROM public.orders".into(),
            format!("SELECT count(), sum(id), sum(customer_id), toDecimalString(sum(total), 2) FROM `{db}`.`public_orders` FINAL WHERE _is_deleted = 0"),
        ),
    ]
}

async fn differences(pg: &PgCluster, src: &GuideSource, db: &str) -> Vec<String> {
    let mut diffs = Vec::new();
    for (p, c) in comparisons(db) {
        let (a, b) = (pg_rows(pg, &src.database, &p), ch(&c).await);
        if a != b {
            diffs.push(format!("{p}\n  postgres:   {a}\n  clickhouse: {b}"));
        }
    }
    diffs
}

async fn wait_equal(pg: &PgCluster, src: &GuideSource, db: &str, log: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let diffs = differences(pg, src, db).await;
        if diffs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not equal after 180 s:\n{}\n{}",
            diffs.join("\n"),
            log.map(log_text).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Equal right now (no daemon runs: nothing more will arrive).
async fn assert_equal(pg: &PgCluster, src: &GuideSource, db: &str) {
    let diffs = differences(pg, src, db).await;
    assert!(diffs.is_empty(), "not equal:\n{}", diffs.join("\n"));
}

/// The ClickHouse side of [`comparisons`], as readers see it now.
async fn ch_view(db: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (_, c) in comparisons(db) {
        out.push(ch(&c).await);
    }
    out
}

/// Starts `pgch run`, waits until equal, stops it with SIGTERM.
async fn run_until_equal(pg: &PgCluster, src: &GuideSource, env: &Env, changes: Option<&str>) {
    let log = log_path("pgch-run");
    let pgch = PgchProcess::run(&env.vars, &[], log.clone());
    if let Some(sql) = changes {
        pg.sql(&src.database, sql).unwrap();
    }
    wait_equal(pg, src, &env.db, Some(&log)).await;
    pgch.stop();
}

/// No row of the exchanged tables is older than the resync: the rows deleted while the
/// slot was gone are absent even without FINAL, and no shadow is left over.
async fn assert_no_old_rows(db: &str) {
    assert_eq!(
        ch(&format!(
            "SELECT count() FROM `{db}`.`public_customers` WHERE id % 7 = 0"
        ))
        .await,
        "0",
        "a customer deleted while the slot was gone came back"
    );
    assert_eq!(
        ch(&format!(
            "SELECT count() FROM `{db}`.`public_orders` WHERE id % 3 = 0 AND id <= 5000"
        ))
        .await,
        "0",
        "an order deleted while the slot was gone came back"
    );
    assert_eq!(
        ch(&format!("SELECT count() FROM system.tables WHERE database = '{db}' AND name LIKE '%pgch_resync%'")).await,
        "0",
        "a shadow table was left behind"
    );
}

fn setup(pg: &PgCluster) -> (GuideSource, Env) {
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(&src.database, DATA).unwrap();
    let env = env(pg, &src);
    (src, env)
}

fn drop_slot(pg: &PgCluster, src: &GuideSource, env: &Env) {
    pg.sql(
        &src.database,
        &format!("SELECT pg_drop_replication_slot('{}')", env.slot),
    )
    .unwrap();
}

fn slot_position(pg: &PgCluster, src: &GuideSource, env: &Env) -> String {
    pg_rows(
        pg,
        &src.database,
        &format!(
            "SELECT confirmed_flush_lsn, restart_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
            env.slot
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_dropped_while_stopped_is_refused_then_resync_restores_equality_and_streaming() {
    let pg = PgCluster::shared();
    let (src, env) = setup(pg);
    run_until_equal(pg, &src, &env, None).await;
    drop_slot(pg, &src, &env);
    pg.sql(&src.database, WHILE_STOPPED).unwrap();

    run_refuses(&env, &["resync required", "is gone", "pgch resync"]).await;
    resync(&env, &[]).await;
    assert_equal(pg, &src, &env.db).await;
    assert_no_old_rows(&env.db).await;
    let slots = pg_rows(
        pg,
        &src.database,
        &format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
            env.slot
        ),
    );
    assert_eq!(slots, "1", "a new slot was made");

    run_until_equal(pg, &src, &env, Some(AFTER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_invalidated_by_max_slot_wal_keep_size_is_refused_then_resync_restores_equality() {
    let pg = PgCluster::start(
        PgOptions::default()
            .setting("max_slot_wal_keep_size", "'1MB'")
            .setting("min_wal_size", "'32MB'")
            .setting("max_wal_size", "'64MB'"),
    )
    .unwrap();
    if pg.version_num < 130_000 {
        eprintln!(
            "skipped: Postgres {} has no max_slot_wal_keep_size",
            pg.version_num
        );
        return;
    }
    let (src, env) = setup(&pg);
    pg.sql(
        &src.database,
        "CREATE TABLE public.filler (id bigserial PRIMARY KEY, pad text);",
    )
    .unwrap();
    run_until_equal(&pg, &src, &env, None).await;
    pg.sql(&src.database, WHILE_STOPPED).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = pg_rows(
            &pg,
            &src.database,
            &format!(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
                env.slot
            ),
        );
        if status == "lost" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was never invalidated ({status})"
        );
        pg.sql(
            &src.database,
            "INSERT INTO public.filler (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 3000) g;
             SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .unwrap();
    }

    run_refuses(&env, &["resync required", "invalidated", "pgch resync"]).await;
    resync(&env, &[]).await;
    assert_equal(&pg, &src, &env.db).await;
    assert_no_old_rows(&env.db).await;
    let status = pg_rows(
        &pg,
        &src.database,
        &format!(
            "SELECT wal_status <> 'lost' FROM pg_replication_slots WHERE slot_name = '{}'",
            env.slot
        ),
    );
    assert_eq!(status, "t", "a fresh slot replaced the lost one");

    run_until_equal(&pg, &src, &env, Some(AFTER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_resync_queries_see_the_old_complete_table_until_the_exchange() {
    let pg = PgCluster::shared();
    let (src, env) = setup(pg);
    run_until_equal(pg, &src, &env, None).await;
    let old = ch_view(&env.db).await;
    drop_slot(pg, &src, &env);
    pg.sql(&src.database, WHILE_STOPPED).unwrap();

    let hold = CopyHold::held();
    let log = log_path("pgch-resync-held");
    let mut child = spawn_resync(&env, &[], &[hold.env()], &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log_text(&log).contains("resync of table started") {
        assert!(
            Instant::now() < deadline,
            "the resync never reached a table\n{}",
            log_text(&log)
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "resync exited\n{}",
            log_text(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The copy is held in the shadow; readers see the old table.
    let shadow = format!(
        "SELECT count() FROM system.tables WHERE database = '{}' AND name LIKE '%__pgch_resync'",
        env.db
    );
    while ch(&shadow).await != "1" {
        assert!(
            Instant::now() < deadline,
            "no shadow table\n{}",
            log_text(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            ch_view(&env.db).await,
            old,
            "readers saw a change before the exchange"
        );
    }
    assert!(
        !differences(pg, &src, &env.db).await.is_empty(),
        "the old content differs from Postgres now"
    );

    hold.release();
    let status = wait_child(&mut child, Duration::from_secs(300), &log).await;
    assert!(status.success(), "{status}\n{}", log_text(&log));
    assert_equal(pg, &src, &env.db).await;
    assert_no_old_rows(&env.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_resync_leaves_other_tables_and_the_slot_untouched() {
    let pg = PgCluster::shared();
    let (src, env) = setup(pg);
    // While `pgch run` streams, a resync refuses and changes nothing.
    let log = log_path("pgch-run");
    let pgch = PgchProcess::run(&env.vars, &[], log.clone());
    wait_equal(pg, &src, &env.db, Some(&log)).await;
    wait_streaming(pg, &src.database, &env.slot, Duration::from_secs(60)).await;
    let text = resync_fails(&env, &["--table", "public.customers"]).await;
    assert!(
        text.contains("is in use by process") && text.contains("stop `pgch run`"),
        "{text}"
    );
    pgch.stop();
    let db = &env.db;
    // Drift in ClickHouse that only a re-copy repairs, and a change the slot still holds.
    ch(&format!(
        "INSERT INTO `{db}`.`public_customers` (id, name, _version, _is_deleted) VALUES (999999, 'stray', 0, 0)"
    ))
    .await;
    pg.sql(
        &src.database,
        "UPDATE public.customers SET name = 'while stopped' WHERE id < 100;",
    )
    .unwrap();
    let orders_raw = format!(
        "SELECT count(), sum(_version), max(_synced_at), sum(cityHash64(id, customer_id, total)) FROM `{db}`.`public_orders`"
    );
    let orders_before = ch(&orders_raw).await;
    let slot_before = slot_position(pg, &src, &env);
    let state_sql = format!(
        "SELECT key, argMax(value, updated_at) FROM `{db}`.`_pgch_state` WHERE key IN ('consistent_point', 'snapshot_xmax', 'system_identifier') GROUP BY key ORDER BY key"
    );
    let state_before = ch(&state_sql).await;

    resync(&env, &["--table", "public.customers"]).await;
    assert_eq!(ch(&orders_raw).await, orders_before, "orders was touched");
    assert_eq!(slot_position(pg, &src, &env), slot_before, "the slot moved");
    assert_eq!(
        ch(&state_sql).await,
        state_before,
        "the slot identity changed"
    );
    assert_eq!(
        ch(&format!(
            "SELECT count() FROM `{db}`.`public_customers` WHERE id = 999999"
        ))
        .await,
        "0",
        "the stray row survived the re-copy"
    );
    assert_eq!(
        ch(&format!(
            "SELECT count() FROM `{db}`.`public_customers` FINAL WHERE name = 'while stopped'"
        ))
        .await,
        "99",
        "the copy did not see the current rows"
    );

    // The kept slot streams on into the re-copied table.
    run_until_equal(pg, &src, &env, Some(AFTER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_resync_blocks_run_until_a_rerun_completes_it() {
    let pg = PgCluster::shared();
    let (src, env) = setup(pg);
    run_until_equal(pg, &src, &env, None).await;
    drop_slot(pg, &src, &env);
    pg.sql(&src.database, WHILE_STOPPED).unwrap();

    let hold = CopyHold::held();
    let log = log_path("pgch-resync-killed");
    let mut child = spawn_resync(&env, &[], &[hold.env()], &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log_text(&log).contains("resync of table started") {
        assert!(
            Instant::now() < deadline,
            "the resync never reached a table\n{}",
            log_text(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    hold.release();

    run_refuses(&env, &["resync is unfinished", "pgch resync"]).await;
    let text = resync(&env, &[]).await;
    for words in [
        "interrupted resync is continued",
        "keeping the slot the interrupted resync made",
    ] {
        assert!(text.contains(words), "`{words}` not logged:\n{text}");
    }
    assert_equal(pg, &src, &env.db).await;
    assert_no_old_rows(&env.db).await;
    run_until_equal(pg, &src, &env, Some(AFTER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_source_system_is_refused_then_resync_copies_it_from_a_new_slot() {
    let pg = PgCluster::shared();
    let (src, mut env) = setup(pg);
    run_until_equal(pg, &src, &env, None).await;

    // A restore into another cluster: same tables, some rows changed, another system.
    let restored = PgCluster::start(PgOptions::default()).unwrap();
    let new_src = guide_source(&restored, None, PublicationShape::ForTable);
    restored.sql(&new_src.database, DATA).unwrap();
    restored.sql(&new_src.database, WHILE_STOPPED).unwrap();
    let url = restored.url(&new_src.user, Some(&new_src.password), &new_src.database);
    for (k, v) in env.vars.iter_mut() {
        if k == "PGCH__SOURCE__URL" {
            *v = url.clone();
        }
    }

    run_refuses(
        &env,
        &[
            "resync required",
            "different Postgres system",
            "pgch resync",
        ],
    )
    .await;
    // Re-copying one table cannot help when the slot's history is gone.
    let text = resync_fails(&env, &["--table", "public.orders"]).await;
    assert!(
        text.contains("cannot be kept") && text.contains("without --table"),
        "{text}"
    );
    resync(&env, &[]).await;
    assert_equal(&restored, &new_src, &env.db).await;
    assert_no_old_rows(&env.db).await;
    run_until_equal(&restored, &new_src, &env, Some(AFTER)).await;
}
