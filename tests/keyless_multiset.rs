//! A keyless `REPLICA IDENTITY FULL` table is a multiset: ClickHouse holds as many
//! copies of every distinct row as Postgres — equal rows inserted in one transaction
//! or many, one copy deleted, one copy updated, a TRUNCATE — and neither a SIGKILL
//! between an insert and its acknowledgement (the replay that follows) nor a restart in
//! the middle of the table's copy adds or removes a copy.

mod common;

use std::time::Duration;

use common::converge::{env_value, log_path, wait_same, wait_streaming};
use common::process::{CopyHold, PgchProcess};
use common::{guide_env, guide_source, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

const LIMIT: Duration = Duration::from_secs(90);

/// Copies per distinct row, in Postgres and through the `_current` view.
fn counts(db: &str) -> (String, String) {
    (
        "SELECT a, coalesce(b, '~'), count(*) FROM public.k GROUP BY 1, 2 ORDER BY 1, 2".into(),
        format!("SELECT a, ifNull(b, '~'), count() FROM `{db}`.`public_k_current` GROUP BY 1, 2 ORDER BY 1, 2"),
    )
}

/// Replayed changes must not be stored twice: the change names are unique.
async fn names_unique(db: &str) -> bool {
    let sql = format!("SELECT count() - uniqExact(_version, _seq) FROM `{db}`.`public_k` FINAL");
    ClickHouse::shared()
        .query(&sql)
        .await
        .is_ok_and(|n| n.trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_rows_keep_their_number_of_copies_through_every_change_and_crash() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.k (a int, b text);
         ALTER TABLE public.k REPLICA IDENTITY FULL;
         INSERT INTO public.k VALUES (1, 'x'), (1, 'x'), (2, 'y'), (3, NULL), (3, NULL);
         ALTER PUBLICATION clickpipes ADD TABLE public.k;",
    )
    .unwrap();
    let env = guide_env(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "200")]);
    let (db, slot) = (
        env_value(&env, "PGCH__DESTINATION__DATABASE"),
        env_value(&env, "PGCH__SOURCE__SLOT"),
    );
    let (pg_sql, ch_sql) = counts(&db);
    let log = log_path("pgch-multiset");
    let same = |log| wait_same(pg, &src.database, &pg_sql, &ch_sql, LIMIT, log);

    // A first start killed while its copy holds its snapshot, and changes made while
    // pgch is away: the next start copies the table again in a new snapshot that sees
    // them, and the stream, which carries them too, must skip them.
    let hold = CopyHold::held();
    let first = PgchProcess::run(&env, &[hold.env()], log.clone());
    wait_streaming(pg, &src.database, &slot, LIMIT).await;
    // While the copy holds: the stream carries these, the copy does not see them.
    pg.sql(
        &src.database,
        "INSERT INTO public.k VALUES (1, 'x'), (4, 'w'), (4, 'w');",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    first.kill9();
    pg.sql(
        &src.database,
        "INSERT INTO public.k VALUES (2, 'y'), (2, 'y');
         DELETE FROM public.k WHERE ctid = (SELECT ctid FROM public.k WHERE a = 1 LIMIT 1);",
    )
    .unwrap();
    hold.release();
    let pgch = PgchProcess::run(&env, &[], log.clone());
    same(&log).await;

    // Copies in one transaction and across several.
    pg.sql(
        &src.database,
        "BEGIN; INSERT INTO public.k VALUES (5, 'v'), (5, 'v'), (5, 'v'); INSERT INTO public.k SELECT 5, 'v' FROM generate_series(1, 4); COMMIT;
         INSERT INTO public.k VALUES (5, 'v');
         INSERT INTO public.k VALUES (5, 'v');",
    )
    .unwrap();
    same(&log).await;
    // One copy deleted; one copy updated (its equals unchanged); an update of all.
    pg.sql(
        &src.database,
        "DELETE FROM public.k WHERE ctid = (SELECT ctid FROM public.k WHERE a = 5 LIMIT 1);
         UPDATE public.k SET b = 'changed' WHERE ctid = (SELECT ctid FROM public.k WHERE a = 2 LIMIT 1);
         UPDATE public.k SET b = 'all' WHERE a = 4;",
    )
    .unwrap();
    same(&log).await;
    // More copies, then a TRUNCATE, then more.
    pg.sql(
        &src.database,
        "INSERT INTO public.k SELECT 6, 'u' FROM generate_series(1, 3);
         TRUNCATE public.k;
         INSERT INTO public.k VALUES (7, 't'), (7, 't'), (1, 'x');",
    )
    .unwrap();
    same(&log).await;
    pgch.stop();

    // Killed right after an insert landed and before it was acknowledged: the restart
    // replays those changes, which must replace themselves, not add copies.
    for round in 0..3 {
        let spec = format!("{}:1", pgch::failpoint::AFTER_INSERT_BEFORE_ACK);
        let dying = PgchProcess::run(&env, &[("PGCH_FAILPOINT", spec.as_str())], log.clone());
        pg.sql(
            &src.database,
            &format!(
                "BEGIN; INSERT INTO public.k SELECT 8, 's' FROM generate_series(1, {n}); DELETE FROM public.k WHERE ctid = (SELECT ctid FROM public.k WHERE a = 7 LIMIT 1); COMMIT;",
                n = round + 2
            ),
        )
        .unwrap();
        let status = dying.wait(LIMIT).expect("the failpoint kills pgch");
        assert!(!status.success(), "round {round}: {status:?}");
        pg.sql(&src.database, "INSERT INTO public.k VALUES (7, 't');")
            .unwrap();
    }
    let pgch = PgchProcess::run(&env, &[], log.clone());
    same(&log).await;
    assert!(
        names_unique(&db).await,
        "a replayed change was stored twice"
    );
    pgch.stop();
}
