//! The replication client against real Postgres: exact decoded messages for real SQL,
//! acknowledgements reaching `confirmed_flush_lsn`, resuming after a reconnect, idle
//! publications not holding WAL, and `pgch tail`. Runs on whichever major the shared
//! cluster is (`PGCH_TEST_PG_MAJOR` / `PGCH_TEST_PG_BIN`), asserting what that version can do.

mod common;

use std::time::{Duration, Instant};

use common::{guide_settings, guide_source, GuideSource, PublicationShape};
use pgch::checkpoint::Ledger;
use pgch::config::SourceSettings;
use pgch::lsn::Lsn;
use pgch::source::pgoutput::{self, ColumnValue, DecodeContext, Message};
use pgch::source::stream::{ReplicationStream, StreamEvent, StreamOptions};
use pgch::source::walsender::{SlotSnapshot, Walsender};
use pgch::tail::render::{self, Relations, TxContext};
use pgch::testkit::postgres::{PgCluster, PgOptions};
use serde_json::{json, Value};

fn source_settings(pg: &PgCluster, src: &GuideSource) -> SourceSettings {
    guide_settings(pg, src, &[]).source
}

async fn create_slot(settings: &SourceSettings) -> Lsn {
    let mut w = Walsender::connect(&settings.endpoint).await.unwrap();
    let slot = w
        .create_slot(&settings.slot, false, SlotSnapshot::NoExport)
        .await
        .unwrap();
    assert_eq!(slot.name, settings.slot);
    w.close().await;
    slot.consistent_point
}

async fn start(settings: &SourceSettings, from: Lsn) -> ReplicationStream {
    let w = Walsender::connect(&settings.endpoint).await.unwrap();
    w.start(
        &settings.slot,
        from,
        &settings.publication,
        StreamOptions::default(),
    )
    .await
    .unwrap()
}

/// The WAL insert position: past every commit so far (the *write* position can lag
/// behind a commit with `synchronous_commit = off`, as in the test clusters).
fn current_lsn(pg: &PgCluster, db: &str) -> Lsn {
    pg.sql(db, "SELECT pg_current_wal_insert_lsn()")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn confirmed_flush(pg: &PgCluster, db: &str, slot: &str) -> Lsn {
    pg.sql(
        db,
        &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// A change as JSON without the per-run fields (lsn, xid, commit time).
fn stable(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("lsn");
        m.remove("xid");
        m.remove("commit_time");
    }
    v
}

/// Decoded changes (and commit end LSNs) until a commit or idle keepalive reaches `endpos`.
struct Collected {
    changes: Vec<Value>,
    commits: Vec<Lsn>,
    relations: Relations,
}

async fn collect_until(stream: &mut ReplicationStream, endpos: Lsn) -> Collected {
    let mut out = Collected {
        changes: Vec::new(),
        commits: Vec::new(),
        relations: Relations::new(),
    };
    let mut in_tx = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.next())
            .await
            .expect("timed out waiting for the stream")
            .expect("stream ended")
            .expect("stream error");
        match event {
            StreamEvent::XLogData { start, payload, .. } => {
                let msg = pgoutput::decode(&payload, DecodeContext::OUTSIDE_STREAM).unwrap();
                let tx = TxContext::default();
                let rel = &out.relations;
                let change = match &msg {
                    Message::Begin(_) => {
                        in_tx = true;
                        None
                    }
                    Message::Commit(c) => {
                        in_tx = false;
                        out.commits.push(c.end_lsn);
                        if c.end_lsn >= endpos {
                            return out;
                        }
                        None
                    }
                    Message::Relation(r) => {
                        out.relations.insert(r.id, r.clone());
                        None
                    }
                    Message::Insert(i) => Some(render::insert(rel, start, tx, i).unwrap()),
                    Message::Update(u) => Some(render::update(rel, start, tx, u).unwrap()),
                    Message::Delete(d) => Some(render::delete(rel, start, tx, d).unwrap()),
                    Message::Truncate(t) => Some(render::truncate(rel, start, tx, t).unwrap()),
                    Message::LogicalMessage(m) => Some(render::message(start, tx, m)),
                    _ => None,
                };
                if let Some(c) = change {
                    assert!(!start.is_zero(), "a change must carry its own WAL position");
                    out.changes.push(stable(c));
                }
            }
            StreamEvent::Keepalive { wal_end, .. } => {
                if !in_tx && wal_end >= endpos {
                    return out;
                }
            }
        }
    }
}

#[tokio::test]
async fn real_sql_decodes_to_the_exact_messages() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let db = &src.database;
    pg.sql(
        db,
        "CREATE TABLE public.items (id int PRIMARY KEY, v text, big text);
         ALTER TABLE public.items ALTER COLUMN big SET STORAGE EXTERNAL;
         ALTER PUBLICATION clickpipes ADD TABLE public.items;",
    )
    .unwrap();
    let settings = source_settings(pg, &src);
    let from = create_slot(&settings).await;
    pg.sql(
        db,
        "INSERT INTO public.items VALUES (1, 'a', NULL), (2, 'b', NULL);
         UPDATE public.items SET v = 'a2' WHERE id = 1;
         UPDATE public.items SET id = 10 WHERE id = 2;
         DELETE FROM public.items WHERE id = 10;
         INSERT INTO public.items VALUES (3, 'c', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 100) g));
         UPDATE public.items SET v = 'c2' WHERE id = 3;
         ALTER TABLE public.items ADD COLUMN extra int DEFAULT 7;
         INSERT INTO public.items (id, v) VALUES (4, 'd');",
    )
    .unwrap();
    let toast_rows: i64 = pg
        .sql(
            db,
            "SELECT count(*) FROM pg_class c WHERE c.relname = 'items' AND pg_relation_size(c.reltoastrelid) > 0",
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        toast_rows, 1,
        "the 3.2 kB value must live out of line in the TOAST table"
    );
    pg.sql(db, "TRUNCATE public.items;").unwrap();
    let has_messages = pg.version_num >= 140000;
    if has_messages {
        pg.sql(db, "SELECT pg_logical_emit_message(true, 'pgch', 'hello');")
            .unwrap();
    }
    let endpos = current_lsn(pg, db);
    let mut stream = start(&settings, from).await;
    let got = collect_until(&mut stream, endpos).await;
    stream.shutdown().await;

    let big: String = pg
        .sql(
            db,
            "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 100) g",
        )
        .unwrap()
        .trim()
        .to_string();
    let t = "public.items";
    let mut expected = vec![
        json!({"op": "insert", "table": t, "key": {"id": "1"}, "new": {"id": "1", "v": "a", "big": null}}),
        json!({"op": "insert", "table": t, "key": {"id": "2"}, "new": {"id": "2", "v": "b", "big": null}}),
        json!({"op": "update", "table": t, "key": {"id": "1"}, "new": {"id": "1", "v": "a2", "big": null}}),
        json!({"op": "update", "table": t, "key": {"id": "2"}, "new": {"id": "10", "v": "b", "big": null},
               "old": {"id": "2", "v": null, "big": null}}),
        json!({"op": "delete", "table": t, "key": {"id": "10"}, "old": {"id": "10", "v": null, "big": null}}),
        json!({"op": "insert", "table": t, "key": {"id": "3"}, "new": {"id": "3", "v": "c", "big": big}}),
        json!({"op": "update", "table": t, "key": {"id": "3"},
               "new": {"id": "3", "v": "c2", "big": {"unchanged_toast": true}}}),
        json!({"op": "insert", "table": t, "key": {"id": "4"}, "new": {"id": "4", "v": "d", "big": null, "extra": "7"}}),
        json!({"op": "truncate", "tables": [t], "cascade": false, "restart_identity": false}),
    ];
    if has_messages {
        expected.push(
            json!({"op": "message", "prefix": "pgch", "transactional": true, "content": "hello"}),
        );
    }
    assert_eq!(got.changes, expected);
    let rel = got.relations.values().find(|r| r.name == "items").unwrap();
    let names: Vec<&str> = rel.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["id", "v", "big", "extra"],
        "the Relation after ADD COLUMN"
    );
    assert!(rel.columns[0].is_key() && !rel.columns[1].is_key());
}

#[tokio::test]
async fn a_100k_row_transaction_arrives_whole() {
    // Its own cluster: every walsender on a cluster decodes every transaction.
    let pg = PgCluster::start(PgOptions::default()).unwrap();
    let src = guide_source(&pg, None, PublicationShape::ForTable);
    let db = &src.database;
    pg.sql(db, "CREATE TABLE public.bulk (id int PRIMARY KEY, v text); ALTER PUBLICATION clickpipes ADD TABLE public.bulk;")
        .unwrap();
    let settings = source_settings(&pg, &src);
    let from = create_slot(&settings).await;
    let rows = pgch::testkit::scaled(100_000);
    pg.sql(
        db,
        &format!(
            "INSERT INTO public.bulk SELECT g, 'row ' || g FROM generate_series(1, {rows}) g;"
        ),
    )
    .unwrap();
    let endpos = current_lsn(&pg, db);
    let mut stream = start(&settings, from).await;
    let got = collect_until(&mut stream, endpos).await;
    stream.shutdown().await;
    assert_eq!(got.changes.len() as u64, rows);
    assert_eq!(got.commits.len(), 1, "one transaction");
    assert_eq!(got.changes[0]["new"], json!({"id": "1", "v": "row 1"}));
    let last = &got.changes[got.changes.len() - 1];
    assert_eq!(last["new"]["id"], json!(rows.to_string()));
}

/// The stream up to its first commit (keepalives before it are skipped).
async fn collect_first_commit(stream: &mut ReplicationStream) -> Collected {
    loop {
        let got = collect_until(stream, Lsn::new(1)).await;
        if !got.commits.is_empty() {
            return got;
        }
    }
}

async fn wait_confirmed(pg: &PgCluster, db: &str, slot: &str, at_least: Lsn) -> Lsn {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lsn = confirmed_flush(pg, db, slot);
        if lsn >= at_least || Instant::now() > deadline {
            return lsn;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn acknowledged_lsn_reaches_confirmed_flush_and_a_reconnect_resumes_there() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let db = &src.database;
    let settings = source_settings(pg, &src);
    let from = create_slot(&settings).await;
    pg.sql(db, "INSERT INTO public.customers VALUES (1, 'first');")
        .unwrap();
    pg.sql(db, "INSERT INTO public.customers VALUES (2, 'second');")
        .unwrap();

    // Up to the first commit: other tests write WAL on the shared cluster at the same
    // time, so an insert position read after the first INSERT may lie past its commit.
    let mut stream = start(&settings, from).await;
    let got = collect_first_commit(&mut stream).await;
    assert_eq!(got.changes.len(), 1);
    let first_commit = got.commits[0];
    stream.feedback().confirm_now(first_commit);
    let confirmed = wait_confirmed(pg, db, &settings.slot, first_commit).await;
    assert_eq!(
        confirmed, first_commit,
        "confirmed_flush_lsn follows exactly what was acknowledged"
    );
    stream.shutdown().await;

    // A reconnect from the slot's position (0/0 = "where the slot stands") resumes after it.
    let mut stream = start(&settings, Lsn::ZERO).await;
    let got = collect_first_commit(&mut stream).await;
    stream.shutdown().await;
    assert_eq!(got.changes.len(), 1, "{:?}", got.changes);
    assert_eq!(got.changes[0]["new"]["id"], json!("2"));
}

#[tokio::test]
async fn idle_publication_keeps_confirmed_flush_advancing_while_other_tables_are_written() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let db = &src.database;
    pg.sql(
        db,
        "CREATE TABLE public.unpublished (id serial PRIMARY KEY, v text);",
    )
    .unwrap();
    let settings = source_settings(pg, &src);
    let from = create_slot(&settings).await;
    let before = current_lsn(pg, db);
    let mut stream = start(&settings, from).await;
    let feedback = stream.feedback();
    let mut ledger = Ledger::new(from);
    let writer_pg = pg;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut target = None;
    loop {
        writer_pg
            .sql(
                db,
                "INSERT INTO public.unpublished (v) SELECT 'x' FROM generate_series(1, 100);",
            )
            .unwrap();
        let now_lsn = current_lsn(pg, db);
        target.get_or_insert(now_lsn);
        // Drain what the stream has for us, acknowledging like the pipeline will.
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(200), stream.next()).await
        {
            match event.unwrap() {
                StreamEvent::XLogData { payload, .. } => {
                    match pgoutput::decode(&payload, DecodeContext::OUTSIDE_STREAM).unwrap() {
                        Message::Begin(_) => ledger.begin(),
                        Message::Commit(c) => {
                            let t = ledger.commit(c.end_lsn);
                            ledger.mark_durable(t);
                        }
                        other => panic!("nothing published was written, got {other:?}"),
                    }
                }
                StreamEvent::Keepalive { wal_end, .. } => ledger.keepalive(wal_end),
            }
            feedback.confirm_now(ledger.safe_lsn());
        }
        let confirmed = confirmed_flush(pg, db, &settings.slot);
        if target.is_some_and(|t| confirmed >= t) {
            assert!(confirmed > before);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn stuck at {confirmed} (started at {before}, WAL at {now_lsn})"
        );
    }
    stream.shutdown().await;
}

#[tokio::test]
async fn tail_prints_changes_as_json_lines_and_never_moves_the_slot() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let db = &src.database;
    let settings = source_settings(pg, &src);
    create_slot(&settings).await;
    let confirmed_before = confirmed_flush(pg, db, &settings.slot);
    pg.sql(
        db,
        "INSERT INTO public.customers VALUES (1, 'Ann'); UPDATE public.customers SET name = 'Anna' WHERE id = 1;
         DELETE FROM public.customers WHERE id = 1;",
    )
    .unwrap();
    let endpos = current_lsn(pg, db);
    let run = |format: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgch"))
            .args([
                "tail",
                "--slot",
                &settings.slot,
                "--endpos",
                &endpos.to_string(),
                "--format",
                format,
            ])
            .env(
                "PGCH__SOURCE__URL",
                pg.url(&src.user, Some(&src.password), db),
            )
            .env("PGCH__SOURCE__PUBLICATION", &src.publication)
            .output()
            .unwrap()
    };
    let out = run("json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = lines.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "update", "delete"]);
    assert_eq!(lines[1]["new"], json!({"id": "1", "name": "Anna"}));
    assert_eq!(lines[0]["table"], "public.customers");
    assert!(lines[0]["xid"].as_u64().is_some());
    assert!(lines[0]["commit_time"].as_str().unwrap().ends_with('Z'));
    assert!(lines[0]["lsn"].as_str().unwrap().contains('/'));
    // The same again: tail confirmed nothing, so the slot still has every change.
    let again = run("json");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(confirmed_flush(pg, db, &settings.slot), confirmed_before);
    let none = run("none");
    assert!(none.status.success());
    assert!(none.stdout.is_empty());
}

#[tokio::test]
async fn tail_with_a_temporary_slot_needs_no_slot_of_its_own() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let settings = source_settings(pg, &src);
    let args = pgch::tail::TailArgs {
        slot: None,
        temporary: true,
        from: None,
        endpos: None,
        format: pgch::tail::TailFormat::Json,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let db = src.database.clone();
    let writer = tokio::spawn(async move {
        let pg = PgCluster::shared();
        // Wait for the temporary slot, then write and let tail see it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while pg
            .sql(&db, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgch_tail_%' AND temporary AND active AND database = current_database()")
            .unwrap()
            .trim()
            == "0"
        {
            assert!(Instant::now() < deadline, "no temporary slot appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pg.sql(&db, "INSERT INTO public.orders VALUES (7, 1, 9.99);")
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = tx.send(());
    });
    let mut out: Vec<u8> = Vec::new();
    let stats = pgch::tail::run(&settings, &args, &mut out, async {
        let _ = rx.await;
    })
    .await
    .unwrap();
    writer.await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(stats.changes, 1, "{text}");
    let line: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        line["new"],
        json!({"id": "7", "customer_id": "1", "total": "9.99"})
    );
}

#[test]
fn unchanged_toast_is_never_rendered_as_null() {
    assert_ne!(
        render::value_json(&ColumnValue::UnchangedToast),
        Value::Null
    );
}

#[tokio::test]
async fn a_paused_consumer_keeps_the_connection_past_wal_sender_timeout() {
    // Own cluster with a short wal_sender_timeout: a client that stops talking for 2 s
    // is dropped. The consumer pauses 3x that long while a backlog fills the buffer.
    let pg = PgCluster::start(PgOptions::default().setting("wal_sender_timeout", "'2s'")).unwrap();
    let src = guide_source(&pg, None, PublicationShape::ForTable);
    let db = &src.database;
    let settings = source_settings(&pg, &src);
    let from = create_slot(&settings).await;
    let rows = pgch::testkit::scaled(20_000);
    pg.sql(
        db,
        &format!("INSERT INTO public.orders SELECT g, g, g FROM generate_series(1, {rows}) g;"),
    )
    .unwrap();
    let endpos = current_lsn(&pg, db);
    let w = Walsender::connect(&settings.endpoint).await.unwrap();
    assert_eq!(w.wal_sender_timeout, Some(Duration::from_secs(2)));
    let options = StreamOptions {
        status_interval: None,
        buffer_bytes: 64 * 1024,
    };
    let mut stream = w
        .start(&settings.slot, from, &settings.publication, options)
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(
        first,
        StreamEvent::XLogData { .. } | StreamEvent::Keepalive { .. }
    ));
    // Backpressure: the reader stops at 64 kB while we sleep.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let active: String = pg
        .sql(
            db,
            &format!(
                "SELECT active FROM pg_replication_slots WHERE slot_name = '{}'",
                settings.slot
            ),
        )
        .unwrap();
    assert_eq!(
        active.trim(),
        "t",
        "the walsender must still be there:\n{}",
        pg.log_tail()
    );
    let got = collect_until(&mut stream, endpos).await;
    stream.shutdown().await;
    // The first event was the Begin (or a keepalive before it); every row still arrives.
    assert_eq!(got.changes.len() as u64, rows);
}
