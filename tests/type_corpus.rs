//! The type corpus: a column of every type in TYPES.md, filled with NULLs, empties and
//! extremes, copied by the snapshot; then every value in ClickHouse is compared with
//! Postgres' value, column by column, as canonical text (hex-encoded so nothing is lost
//! to escaping). Deliberate clamps are applied on the Postgres side of the comparison
//! and counted.

mod common;

use common::{guide_settings, guide_source, PublicationShape};
use pgch::sink::rowbinary::ClampKind;
use pgch::snapshot::{self, SnapshotOptions};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

const SETUP: &str = r#"
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN price AS numeric(12,2);
CREATE TYPE pair AS (a int, b text);
CREATE TABLE public.corpus (
  id int PRIMARY KEY,
  b bool, i2 int2, i4 int4, i8 int8, o oid, f4 float4, f8 float8,
  n numeric(12,2), nbig numeric(76,20), nu numeric, m money,
  t text, vc varchar(10), c char(5), nm name, ci citext,
  by bytea, u uuid, d date, ts timestamp, tz timestamptz, tm time, ttz timetz, iv interval,
  j json, jb jsonb, ip inet, net cidr, mac macaddr, mac8 macaddr8,
  e mood, hs hstore, ai int[], atx text[], a2 int[][], dm price,
  pt point, rg int4range, x xml, bt bit(3), vb varbit, tv tsvector, cp pair);
INSERT INTO public.corpus (id) VALUES (1);  -- every column NULL
INSERT INTO public.corpus VALUES (2,
  true, 32767, 2147483647, 9223372036854775807, 4294967295, 'NaN', 'Infinity',
  9999999999.99, 12345678901234567890123456789012345678901234567890123456.12345678901234567890,
  ('1' || repeat('0', 99))::numeric, 1234.56,
  '', '', 'ab', 'name', 'MiXeD',
  '', '00000000-0000-0000-0000-000000000000', '1899-12-31', '1900-01-01 00:00:00', '2299-12-31 23:59:59.999999+00',
  '24:00:00', '01:02:03+05:30', '1 year 2 mons -3 days 04:05:06.789',
  '{}', '{"a": {"b": [1, 2, {"c": null}]}}', '::1', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
  'sad', '', '{}', '{}', '{{1,2},{3,4}}', 0.01,
  '(1.5,-2)', '[1,10)', '<a>x</a>', B'101', B'', 'a fat cat', ROW(1, 'x'));
INSERT INTO public.corpus VALUES (3,
  false, -32768, -2147483648, -9223372036854775808, 0, '-Infinity', '-1.7976931348623157e308',
  -9999999999.99, -0.00000000000000000001,
  'NaN', -0.01,
  (SELECT string_agg(chr(g), '') FROM generate_series(1, 2047) g), 'x', 'a', 'x', 'ß',
  (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex') FROM generate_series(0, 255) g),
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '0044-03-15 BC', '2024-02-29 12:34:56.123456', '1969-07-20 20:17:40+00',
  '00:00:00', '23:59:59.999999-12', '-178000000 years',
  '[1, "two", null]', '[]', '192.168.1.1/24', '::/0', 'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff',
  'happy', 'a=>1, "b c"=>NULL, "q\"uote"=>"x\\y"', '{1,NULL,-3}', '{"a b","q\"uote","back\\slash",NULL,"NULL",""}',
  '{{NULL,2},{3,NULL}}', -0.5,
  '(0,0)', 'empty', '<?xml version="1.0"?><r/>', B'000', B'1111', '''quoted'' lexeme:1A', ROW(NULL, NULL));
INSERT INTO public.corpus VALUES (4,
  NULL, 0, 0, 0, 1, 1.17549435e-38, 4.9e-324,
  0.5, 0,
  'Infinity', 0,
  'emoji 😀 and tab	and newline
end', 'абв', '', '', '',
  '\x00', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'infinity', '-infinity', 'infinity',
  '12:00:00.5', NULL, '0',
  'null', '"s"', NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, '{}', NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL);
ALTER PUBLICATION clickpipes ADD TABLE public.corpus;
"#;

/// (column, Postgres text expression, ClickHouse text expression). Both sides must
/// print the same text; clamps are applied on the Postgres side.
fn comparisons() -> Vec<(&'static str, &'static str, &'static str)> {
    // The server holds years 1..9999 (ClickHouse 26.8+): only BC and ±infinity clamp.
    let clamp_date = "CASE WHEN d < '0001-01-01' THEN '0001-01-01' WHEN d > '9999-12-31' THEN '9999-12-31' ELSE d::text END";
    let clamp_ts = "CASE WHEN ts < '0001-01-01' THEN '0001-01-01 00:00:00.000000' WHEN ts > '9999-12-31 23:59:59.999999' THEN '9999-12-31 23:59:59.999999' ELSE to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US') END";
    let clamp_tz = "CASE WHEN tz < '0001-01-01+00' THEN '0001-01-01 00:00:00.000000' WHEN tz > '9999-12-31 23:59:59.999999+00' THEN '9999-12-31 23:59:59.999999' ELSE to_char(tz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') END";
    let as_text = |c: &'static str| -> (&'static str, &'static str, &'static str) {
        (
            c,
            Box::leak(format!("{c}::text").into_boxed_str()),
            Box::leak(format!("toString({c})").into_boxed_str()),
        )
    };
    let mut v = vec![
        ("b", "b::text", "toString(b)"),
        as_text("i2"),
        as_text("i4"),
        as_text("i8"),
        as_text("o"),
        // Floats bit for bit (NaN and infinities included).
        ("f4", "encode(float4send(f4), 'hex')", "leftPad(lower(hex(reinterpretAsUInt32(f4))), 8, '0')"),
        ("f8", "encode(float8send(f8), 'hex')", "leftPad(lower(hex(reinterpretAsUInt64(f8))), 16, '0')"),
        // Decimals at their full scale, as Postgres prints them.
        ("n", "n::text", "toDecimalString(n, 2)"),
        ("nbig", "nbig::text", "toDecimalString(nbig, 20)"),
        ("dm", "dm::text", "toDecimalString(dm, 2)"),
        ("by", "encode(by, 'hex')", "lower(hex(by))"),
        as_text("u"),
        ("d", clamp_date, "toString(d)"),
        ("ts", clamp_ts, "toString(ts)"),
        ("tz", clamp_tz, "toString(tz)"),
        // Time64(6), 24:00:00 included.
        ("tm", "to_char(tm::interval, 'HH24:MI:SS.US')", "toString(tm)"),
        as_text("e"),
        (
            "hs",
            "coalesce((SELECT string_agg(key || '=' || coalesce(value, '<null>'), ',' ORDER BY key) FROM each(hs)), '')",
            "arrayStringConcat(arrayMap(k -> concat(k, '=', ifNull(hs[k], '<null>')), arraySort(mapKeys(hs))), ',')",
        ),
        (
            "ai",
            "coalesce(array_to_string(ai, ',', '<null>'), '')",
            "arrayStringConcat(arrayMap(x -> ifNull(toString(x), '<null>'), ai), ',')",
        ),
        (
            "atx",
            "coalesce(array_to_string(atx, '|', '<null>'), '')",
            "arrayStringConcat(arrayMap(x -> ifNull(x, '<null>'), atx), '|')",
        ),
        (
            "a2",
            "coalesce(a2::text, '{}')",
            "replaceAll(replaceAll(toString(a2), '[', '{'), ']', '}')",
        ),
    ];
    // Everything stored as Postgres' own text output: the type's output function, which
    // `format('%s', …)` calls (a `::text` cast may differ: char(n) padding, inet masks,
    // xml declarations). The NULL test goes through ::text because a composite whose
    // fields are all NULL `IS NULL` in SQL, though the value is `(,)`.
    for c in [
        "nu", "m", "t", "vc", "c", "nm", "ci", "ttz", "iv", "j", "jb", "ip", "net", "mac", "mac8",
        "pt", "rg", "x", "bt", "vb", "tv", "cp",
    ] {
        let pg_expr = format!("CASE WHEN {c}::text IS NULL THEN NULL ELSE format('%s', {c}) END");
        v.push((c, Box::leak(pg_expr.into_boxed_str()), c));
    }
    v
}

#[tokio::test]
async fn every_type_arrives_equal_to_postgres() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(&src.database, SETUP).unwrap();
    let settings = guide_settings(pg, &src, &[("PGCH__PIPELINE__MODE", "snapshot_only")]);
    // The type map the server allows, as `pgch run` asks for it.
    let opts = SnapshotOptions::for_destination(&settings).await.unwrap();
    let report = snapshot::run(&settings, &opts).await.unwrap();
    let ch = ClickHouse::shared();
    let db = &settings.destination.database;
    let mut mismatches = Vec::new();
    for (col, pg_expr, ch_expr) in comparisons() {
        let pg_out = pg
            .sql(
                &src.database,
                &format!(
                    "SELECT id || ':' || coalesce(encode(convert_to(({pg_expr})::text, 'UTF8'), 'hex'), 'NULL') FROM public.corpus ORDER BY id"
                ),
            )
            .unwrap();
        let ch_out = ch
            .query(&format!(
                "SELECT concat(toString(id), ':', ifNull(lower(hex({ch_expr})), 'NULL')) FROM `{db}`.`public_corpus` FINAL ORDER BY id \
                 SETTINGS output_format_decimal_trailing_zeros = 1"
            ))
            .await
            .unwrap_or_else(|e| panic!("{col}: {e}"));
        if pg_out.trim() != ch_out.trim() {
            let short = |s: &str| {
                s.trim()
                    .replace('\n', " ")
                    .chars()
                    .take(300)
                    .collect::<String>()
            };
            mismatches.push(format!(
                "{col}:\n  postgres:   {}\n  clickhouse: {}",
                short(&pg_out),
                short(&ch_out)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} column(s) differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );

    // Deliberate clamps, counted: 0044 BC (a date), ±infinity; 1899-12-31 is held.
    let clamps = report.clamps;
    assert!(clamps.get(ClampKind::Bc) >= 1, "{clamps:?}");
    assert_eq!(clamps.get(ClampKind::BeforeRange), 0, "{clamps:?}");
    assert!(clamps.get(ClampKind::Infinity) >= 2, "{clamps:?}");
    assert!(clamps.get(ClampKind::MinusInfinity) >= 1, "{clamps:?}");
    assert!(
        clamps.get(ClampKind::NullAsEmpty) >= 1,
        "NULL arrays and hstores are stored empty: {clamps:?}"
    );
}

#[tokio::test]
async fn numeric_nan_in_a_decimal_column_fails_loudly_naming_the_column() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.prices (id int PRIMARY KEY, p numeric(12,2));
         INSERT INTO public.prices VALUES (1, 1.5), (2, 'NaN');
         ALTER PUBLICATION clickpipes ADD TABLE public.prices;",
    )
    .unwrap();
    let settings = guide_settings(pg, &src, &[("PGCH__PIPELINE__MODE", "snapshot_only")]);
    let err = snapshot::run(&settings, &SnapshotOptions::from_settings(&settings))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("public.prices.p"), "{err}");
    assert!(err.contains("NaN") && err.contains("String"), "{err}");
}
