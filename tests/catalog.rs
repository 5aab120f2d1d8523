//! The catalog as pgch reads it: published columns with resolved types and keys.

mod common;

use common::{guide_source, PublicationShape};
use pgch::source::catalog;
use pgch::source::columns::{published_columns, CatalogColumn};
use pgch::source::connect;
use pgch::source::row::{column, ReadError};
use pgch::testkit::postgres::PgCluster;

async fn columns_of(
    pg: &PgCluster,
    db: &str,
    publication: &str,
    table: &str,
) -> Vec<CatalogColumn> {
    let client = connect::connect(
        &common::settings_for(&pg.superuser_url(db), publication, &[])
            .source
            .endpoint,
    )
    .await
    .unwrap();
    let tables = catalog::published_tables(&client, publication, pg.version_num)
        .await
        .unwrap();
    let t = tables
        .iter()
        .find(|t| t.name == table)
        .unwrap_or_else(|| panic!("{table} not published: {tables:?}"));
    published_columns(&client, t, pg.version_num).await.unwrap()
}

#[tokio::test]
async fn domains_enums_arrays_and_generated_columns_resolve() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let db = &src.database;
    pg.sql(
        db,
        "CREATE DOMAIN positive_money AS numeric(12,2) NOT NULL CHECK (VALUE > 0);
         CREATE DOMAIN short_text AS varchar(20);
         CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE TABLE public.typed (
             b int, a text, price positive_money, label short_text, m mood NOT NULL,
             tags text[], grid int[][], total numeric, doubled int GENERATED ALWAYS AS (b * 2) STORED,
             PRIMARY KEY (b, a));
         ALTER PUBLICATION clickpipes ADD TABLE public.typed;",
    )
    .unwrap();
    let cols = columns_of(pg, db, &src.publication, "typed").await;
    let by = |n: &str| {
        cols.iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("no column {n}"))
    };
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["b", "a", "price", "label", "m", "tags", "grid", "total"],
        "generated column left out"
    );
    assert_eq!(
        (by("b").key_position, by("a").key_position),
        (Some(0), Some(1))
    );
    assert!(!by("price").is_key());
    let price = by("price");
    assert_eq!(
        (price.type_name.as_str(), price.type_oid),
        ("numeric", 1700)
    );
    assert_eq!(
        ((price.typmod - 4) >> 16, (price.typmod - 4) & 0xffff),
        (12, 2),
        "domain typmod"
    );
    assert!(price.not_null, "NOT NULL from the domain");
    assert_eq!(
        (by("label").type_name.as_str(), by("label").typmod),
        ("varchar", 24)
    );
    assert_eq!(by("m").type_kind, "e");
    let tags = by("tags").element.as_ref().unwrap();
    assert_eq!((tags.name.as_str(), tags.oid), ("text", 25));
    assert_eq!(by("grid").dims, 2);
    assert_eq!(by("total").typmod, -1);
}

#[tokio::test]
async fn keys_follow_the_replica_identity() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let db = &src.database;
    pg.sql(
        db,
        "CREATE TABLE public.by_index (id int PRIMARY KEY, code text NOT NULL, region text NOT NULL, v int);
         CREATE UNIQUE INDEX by_index_code ON public.by_index (region, code);
         ALTER TABLE public.by_index REPLICA IDENTITY USING INDEX by_index_code;
         CREATE TABLE public.keyless (x int, y text);
         ALTER TABLE public.keyless REPLICA IDENTITY FULL;
         ALTER PUBLICATION clickpipes ADD TABLE public.by_index, public.keyless;",
    )
    .unwrap();
    let cols = columns_of(pg, db, &src.publication, "by_index").await;
    let keys: Vec<(&str, Option<usize>)> = cols
        .iter()
        .map(|c| (c.name.as_str(), c.key_position))
        .collect();
    assert_eq!(
        keys,
        [
            ("id", None),
            ("code", Some(1)),
            ("region", Some(0)),
            ("v", None)
        ]
    );
    let cols = columns_of(pg, db, &src.publication, "keyless").await;
    assert!(
        cols.iter().all(|c| c.is_key()),
        "FULL without a key: every column"
    );
}

#[tokio::test]
async fn column_lists_limit_the_columns_on_15_and_later() {
    let pg = PgCluster::shared();
    if pg.version_num < 150000 {
        return; // column lists arrived in Postgres 15
    }
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let db = &src.database;
    pg.sql(
        db,
        "CREATE TABLE public.wide (id int PRIMARY KEY, public_part text, secret text);
         ALTER PUBLICATION clickpipes ADD TABLE public.wide (id, public_part);",
    )
    .unwrap();
    let cols = columns_of(pg, db, &src.publication, "wide").await;
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "public_part"]);
}

#[tokio::test]
async fn a_column_of_another_type_is_an_error_naming_the_read_not_a_panic() {
    let pg = PgCluster::shared();
    let client = connect::connect(
        &common::settings_for(&pg.superuser_url("postgres"), "unused", &[])
            .source
            .endpoint,
    )
    .await
    .unwrap();
    // What Postgres 18 did to pg_attribute.attndims: an int4 became an int2.
    let row = client
        .query_one("SELECT 1::int2 AS attndims, NULL::text AS label", &[])
        .await
        .unwrap();
    assert_eq!(
        column::<i16>(&row, 0, "reading the published columns").unwrap(),
        1
    );
    let wrong = column::<i32>(&row, 0, "reading the published columns").unwrap_err();
    let message = wrong.to_string();
    for part in [
        "reading the published columns",
        "column 0 (attndims)",
        "int2",
        "Postgres version",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(
        !ReadError::from(wrong).classify().is_retry(),
        "a column that does not convert would fail again"
    );
    let null = column::<String>(&row, 1, "reading a label").unwrap_err();
    assert!(null.to_string().contains("column 1 (label)"), "{null}");
    assert_eq!(
        column::<Option<String>>(&row, 1, "reading a label").unwrap(),
        None
    );
    let missing = column::<i16>(&row, 7, "reading a label").unwrap_err();
    assert!(missing.to_string().contains("column 7"), "{missing}");
}
