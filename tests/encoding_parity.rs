//! DESIGN.md rule 4: one row read by COPY (the snapshot) and by pgoutput (the stream)
//! encodes to the same RowBinary bytes, for every kind of column.

mod common;

use std::borrow::Cow;

use bytes::BytesMut;
use common::{guide_settings, guide_source, PublicationShape};
use pgch::sink::rowbinary::{encode_value, ClampCounts};
use pgch::sink::types::MappingOptions;
use pgch::snapshot::plan::plan_table;
use pgch::source::catalog;
use pgch::source::columns::published_columns;
use pgch::source::connect;
use pgch::source::copy_text::decode_row;
use pgch::source::pgoutput::{self, ColumnValue, DecodeContext, Message};
use pgch::source::stream::{StreamEvent, StreamOptions};
use pgch::source::walsender::{SlotSnapshot, Walsender};
use pgch::testkit::postgres::PgCluster;

#[tokio::test]
async fn a_row_read_by_copy_and_by_pgoutput_encodes_to_the_same_bytes() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let db = &src.database;
    pg.sql(
        db,
        "CREATE EXTENSION IF NOT EXISTS hstore;
         CREATE TYPE color AS ENUM ('red', 'green');
         CREATE TABLE public.parity (
           id int PRIMARY KEY, b bool, i8 int8, f4 float4, f8 float8, n numeric(20,5), nu numeric,
           t text, c char(4), by bytea, u uuid, d date, ts timestamp, tz timestamptz, tm time, iv interval,
           jb jsonb, ip inet, e color, hs hstore, ai int[], atx text[], pt point);
         ALTER PUBLICATION clickpipes ADD TABLE public.parity;",
    )
    .unwrap();
    let settings = guide_settings(pg, &src, &[]);
    // The stream: a slot from before the insert.
    let mut w = Walsender::connect(&settings.source.endpoint).await.unwrap();
    let slot = w
        .create_slot(&settings.source.slot, false, SlotSnapshot::NoExport)
        .await
        .unwrap();
    w.close().await;
    pg.sql(
        db,
        r#"INSERT INTO public.parity VALUES (1, true, -9223372036854775808, 1.5e-10, 'NaN', -12345.67891, '1e-30',
           E'tab\there \\ back "quote" é', 'ab', '\x00ff0a5c', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
           '0099-01-01 BC', '2024-02-29 23:59:59.999999', '2024-06-01 12:00:00.5+02', '24:00:00', '-1 day 02:00:00',
           '{"k": [1, "x\ty"]}', '2001:db8::1/64', 'green', 'a=>1, b=>NULL', '{1,NULL,3}', '{"a,b","c\"d",NULL}', '(1,2)');"#,
    )
    .unwrap();
    let endpos: pgch::lsn::Lsn = pg
        .sql(db, "SELECT pg_current_wal_insert_lsn()")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // The plan (codecs) from the catalog, as the snapshot builds it.
    let client = connect::connect(&settings.source.endpoint).await.unwrap();
    let tables = catalog::published_tables(&client, &src.publication, pg.version_num)
        .await
        .unwrap();
    let table = tables.iter().find(|t| t.name == "parity").unwrap();
    let columns = published_columns(&client, table, pg.version_num)
        .await
        .unwrap();
    // Under the conservative map and under the one a 26.8+ server allows (wide dates,
    // `Time64`): the two paths agree in both.
    let wide = MappingOptions {
        server_has_time64: true,
        date_range: pgch::sink::rowbinary::DateRange::YEARS_1_TO_9999,
        ..MappingOptions::default()
    };
    let plans: Vec<_> = [MappingOptions::default(), wide]
        .iter()
        .map(|opts| {
            plan_table(
                table,
                "public_parity".into(),
                columns.clone(),
                opts,
                &Default::default(),
            )
            .unwrap()
        })
        .collect();

    // Snapshot side: COPY text, un-escaped.
    let copy = pg.sql(db, "COPY public.parity TO STDOUT").unwrap();
    let line = copy.trim_end_matches('\n').as_bytes();
    let mut fields: Vec<Option<Cow<'_, [u8]>>> = Vec::new();
    decode_row(line, plans[0].columns.len(), &mut fields).unwrap();

    // Stream side: the Insert's text values.
    let w = Walsender::connect(&settings.source.endpoint).await.unwrap();
    let mut stream = w
        .start(
            &settings.source.slot,
            slot.consistent_point,
            &settings.source.publication,
            StreamOptions::default(),
        )
        .await
        .unwrap();
    let mut streamed: Option<Vec<Option<Vec<u8>>>> = None;
    while streamed.is_none() {
        let event = stream.next().await.unwrap().unwrap();
        let StreamEvent::XLogData { payload, start, .. } = event else {
            continue;
        };
        assert!(start <= endpos || streamed.is_some());
        if let Message::Insert(insert) =
            pgoutput::decode(&payload, DecodeContext::OUTSIDE_STREAM).unwrap()
        {
            let values = insert
                .new
                .columns
                .iter()
                .map(|value| match value {
                    ColumnValue::Null => None,
                    ColumnValue::Text(b) => Some(b.to_vec()),
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            streamed = Some(values);
        }
    }
    stream.shutdown().await;
    let streamed = streamed.unwrap();

    for plan in &plans {
        let mut clamps = ClampCounts::default();
        let mut from_copy = BytesMut::new();
        for (f, m) in fields.iter().zip(&plan.mappings) {
            encode_value(&m.codec, f.as_deref(), &mut from_copy, &mut clamps).unwrap();
        }
        let mut from_stream = BytesMut::new();
        for (v, m) in streamed.iter().zip(&plan.mappings) {
            encode_value(&m.codec, v.as_deref(), &mut from_stream, &mut clamps).unwrap();
        }
        let types: Vec<String> = plan
            .spec
            .columns
            .iter()
            .map(|c| c.ch_type.clone())
            .collect();
        assert_eq!(
            from_stream,
            from_copy,
            "snapshot and stream must encode identically ({})",
            types.join(", ")
        );
        assert!(
            clamps.total() >= 2,
            "the BC date was clamped on both paths: {clamps:?}"
        );
    }
    assert!(plans[1]
        .spec
        .columns
        .iter()
        .any(|c| c.ch_type == "Nullable(Time64(6))"));
}
