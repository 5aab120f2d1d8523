//! DESIGN.md rule 6: an unchanged TOAST value is read from Postgres in a snapshot that
//! sees the change's transaction. With synchronous replication the walsender can send a
//! commit before other sessions see it; here a transaction left open plays that
//! moment: the read waits for it instead of returning the value from before it.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{guide_settings, guide_source, PublicationShape};
use pgch::cdc::toast;
use pgch::lsn::Lsn;
use pgch::pipeline::batch::{Cell, TableBatch};
use pgch::snapshot::{self, SnapshotOptions};
use pgch::source::connect;
use pgch::source::pgoutput::{ColumnValue, TupleData};
use pgch::testkit::postgres::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_is_read_only_once_the_changes_transaction_is_visible() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.tv (id int PRIMARY KEY, big text, n int);
         ALTER TABLE public.tv ALTER COLUMN big SET STORAGE EXTERNAL;
         INSERT INTO public.tv VALUES (1, repeat('old', 1000), 0), (2, repeat('two', 1000), 0);
         ALTER PUBLICATION clickpipes ADD TABLE public.tv;",
    )
    .unwrap();
    let settings = guide_settings(pg, &src, &[]);
    let reader = connect::connect(&settings.source.endpoint).await.unwrap();
    let opts = SnapshotOptions::from_settings(&settings);
    let (plans, _) = snapshot::plan_all(&reader, &settings, &opts).await.unwrap();
    let plan = plans
        .into_iter()
        .find(|p| p.source.display() == "public.tv")
        .unwrap();
    let keys: Vec<usize> = plan.key_columns();
    let big = plan.columns.iter().position(|c| c.name == "big").unwrap();

    // The "committed but not yet visible" transaction: open in another session.
    let (writer, conn) =
        tokio_postgres::connect(&pg.superuser_url(&src.database), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    writer
        .batch_execute("BEGIN; UPDATE public.tv SET big = repeat('new', 1000), n = 1 WHERE id = 1")
        .await
        .unwrap();
    let xid64: i64 = writer
        .query_one("SELECT txid_current()", &[])
        .await
        .unwrap()
        .get(0);
    let xid = (xid64 & 0xffff_ffff) as u32;

    // The UPDATE as pgoutput sends it: `big` unchanged.
    let update = |n: &'static str| TupleData {
        columns: vec![
            ColumnValue::Text(Bytes::from_static(b"1")),
            ColumnValue::UnchangedToast,
            ColumnValue::Text(Bytes::from_static(n.as_bytes())),
        ],
    };
    let mut batch = TableBatch::new(plan.columns.len(), keys.clone());
    batch
        .update(Lsn::new(100), None, update("1"), Instant::now())
        .unwrap();
    assert_eq!(batch.unresolved().len(), 1);

    let commit_after = Duration::from_millis(1500);
    // Before the commit is scheduled: the commit comes at least `commit_after` later.
    let started = Instant::now();
    let committer = tokio::spawn(async move {
        tokio::time::sleep(commit_after).await;
        writer.batch_execute("COMMIT").await.unwrap();
        writer
    });
    toast::resolve(&reader, &plan, &mut batch, &BTreeSet::from([xid]))
        .await
        .unwrap();
    let waited = started.elapsed();
    let _writer = committer.await.unwrap();
    match &batch.rows()[0].cells[big] {
        Cell::Text(v) => assert!(
            v.starts_with(b"newnew"),
            "the value of the change's transaction, not the one before it (waited {waited:?})"
        ),
        other => panic!("unresolved TOAST cell became {other:?}"),
    }
    assert!(
        waited >= commit_after,
        "the read waited for the transaction ({waited:?})"
    );

    // Without a transaction to wait for (or once it is visible) the read is immediate,
    // and a key with no row is left to a later delete (a placeholder).
    let mut batch = TableBatch::new(plan.columns.len(), keys);
    batch
        .update(Lsn::new(200), None, update("2"), Instant::now())
        .unwrap();
    batch
        .update(
            Lsn::new(201),
            None,
            TupleData {
                columns: vec![
                    ColumnValue::Text(Bytes::from_static(b"99")),
                    ColumnValue::UnchangedToast,
                    ColumnValue::Text(Bytes::from_static(b"0")),
                ],
            },
            Instant::now(),
        )
        .unwrap();
    toast::resolve(&reader, &plan, &mut batch, &BTreeSet::from([xid]))
        .await
        .unwrap();
    assert!(matches!(&batch.rows()[0].cells[big], Cell::Text(v) if v.starts_with(b"newnew")));
    assert!(matches!(&batch.rows()[1].cells[big], Cell::Placeholder));
}
