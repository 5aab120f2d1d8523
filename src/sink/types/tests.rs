//! The type map: ClickHouse type text for every Postgres type, nullability and keys,
//! numeric typmods as Postgres 18 stores them, arrays, and mapped columns encoding
//! values end to end.

use bytes::BytesMut;

use super::*;
use crate::sink::rowbinary::{encode_value, ClampCounts, ClampKind};

fn ddl(pg: &PgType, not_null: bool) -> String {
    map_column(pg, not_null, false, &MappingOptions::default())
        .unwrap()
        .ch
        .ddl()
}

fn user_type(name: &str) -> PgType {
    PgType::base(16_500, name)
}

fn enum_type() -> PgType {
    PgType {
        kind: PgTypeKind::Enum,
        ..user_type("mood")
    }
}

#[test]
fn every_type_maps_as_types_md_says() {
    let cases: Vec<(PgType, &str)> = vec![
        (PgType::base(oid::BOOL, "bool"), "Bool"),
        (PgType::base(oid::INT2, "int2"), "Int16"),
        (PgType::base(oid::INT4, "int4"), "Int32"),
        (PgType::base(oid::INT8, "int8"), "Int64"),
        (PgType::base(oid::OID, "oid"), "UInt32"),
        (PgType::base(oid::XID, "xid"), "UInt32"),
        (PgType::base(oid::FLOAT4, "float4"), "Float32"),
        (PgType::base(oid::FLOAT8, "float8"), "Float64"),
        (PgType::numeric(12, 2), "Decimal(12, 2)"),
        (PgType::base(oid::NUMERIC, "numeric"), "String"),
        (PgType::base(oid::MONEY, "money"), "String"),
        (PgType::base(oid::TEXT, "text"), "String"),
        (
            PgType::base(oid::VARCHAR, "varchar").with_typmod(14),
            "String",
        ),
        (PgType::base(oid::BPCHAR, "bpchar").with_typmod(8), "String"),
        (PgType::base(oid::NAME, "name"), "String"),
        (PgType::base(oid::CHAR, "char"), "String"),
        (user_type("citext"), "String"),
        (PgType::base(oid::BYTEA, "bytea"), "String"),
        (PgType::base(oid::UUID, "uuid"), "UUID"),
        (PgType::base(oid::DATE, "date"), "Date32"),
        (
            PgType::base(oid::TIMESTAMP, "timestamp").with_typmod(3),
            "DateTime64(6)",
        ),
        (
            PgType::base(oid::TIMESTAMPTZ, "timestamptz"),
            "DateTime64(6, 'UTC')",
        ),
        (PgType::base(oid::TIME, "time"), "String"),
        (PgType::base(oid::TIMETZ, "timetz"), "String"),
        (PgType::base(oid::INTERVAL, "interval"), "String"),
        (PgType::base(oid::JSON, "json"), "String"),
        (PgType::base(oid::JSONB, "jsonb"), "String"),
        (PgType::base(oid::INET, "inet"), "String"),
        (PgType::base(oid::CIDR, "cidr"), "String"),
        (PgType::base(oid::MACADDR, "macaddr"), "String"),
        (PgType::base(oid::MACADDR8, "macaddr8"), "String"),
        (PgType::base(oid::BIT, "bit"), "String"),
        (PgType::base(oid::VARBIT, "varbit"), "String"),
        (PgType::base(oid::XML, "xml"), "String"),
        (PgType::base(oid::POINT, "point"), "String"),
        (PgType::base(oid::INT4RANGE, "int4range"), "String"),
        (PgType::base(oid::TSVECTOR, "tsvector"), "String"),
        (user_type("my_composite"), "String"),
        (enum_type(), "LowCardinality(String)"),
        (user_type("hstore"), "Map(String, Nullable(String))"),
    ];
    for (pg, want) in &cases {
        assert_eq!(ddl(pg, true), *want, "{} NOT NULL", pg.name);
        let nullable = match *want {
            "Map(String, Nullable(String))" => want.to_string(),
            "LowCardinality(String)" => "LowCardinality(Nullable(String))".to_string(),
            w => format!("Nullable({w})"),
        };
        assert_eq!(ddl(pg, false), nullable, "{}", pg.name);
    }
}

#[test]
fn options_switch_time_json_and_unconstrained_numeric() {
    let opts = MappingOptions {
        server_has_time64: true,
        numeric_unconstrained_as_decimal: true,
        json_native: true,
        ..MappingOptions::default()
    };
    let map = |pg: &PgType, key: bool| map_column(pg, false, key, &opts).unwrap();
    assert_eq!(
        map(&PgType::base(oid::TIME, "time"), false).ch.ddl(),
        "Nullable(Time64(6))"
    );
    assert_eq!(
        map(&PgType::base(oid::NUMERIC, "numeric"), false).ch.ddl(),
        "Nullable(Decimal(76, 38))"
    );
    assert_eq!(
        map(&PgType::numeric(12, 2), false).ch.ddl(),
        "Nullable(Decimal(12, 2))"
    );
    let json = map(&PgType::base(oid::JSONB, "jsonb"), false);
    assert_eq!(json.ch.ddl(), "Nullable(JSON)");
    assert!(json.ch.needs_json_as_string() && !json.ch.orderable());
    // A key column keeps String: JSON cannot be sorted.
    assert_eq!(
        map(&PgType::base(oid::JSONB, "jsonb"), true).ch.ddl(),
        "String"
    );
    let forced = MappingOptions {
        force_string: true,
        ..MappingOptions::default()
    };
    let m = map_column(&PgType::numeric(12, 2), false, false, &forced).unwrap();
    assert_eq!(
        (m.ch.ddl(), m.codec.value),
        ("Nullable(String)".into(), ValueCodec::Text)
    );
}

#[test]
fn numeric_typmods_as_postgres_stores_them() {
    // atttypmod of numeric(3,-2), numeric(3,5), numeric(76,38), numeric(10,3)[] on PG 18.
    assert_eq!(numeric_decimal(198_658), Ok(Some((5, 0))));
    assert_eq!(numeric_decimal(196_617), Ok(Some((5, 5))));
    assert_eq!(numeric_decimal(4_980_778), Ok(Some((76, 38))));
    assert_eq!(numeric_decimal(655_367), Ok(Some((10, 3))));
    assert_eq!(numeric_decimal(-1), Ok(None));
    assert_eq!(PgType::numeric(3, -2).typmod, 198_658);
    assert_eq!(ddl(&PgType::numeric(76, 0), true), "Decimal(76, 0)");
    assert_eq!(ddl(&PgType::numeric(77, 0), true), "String");
    assert_eq!(ddl(&PgType::numeric(1000, 500), true), "String");
    assert_eq!(ddl(&PgType::numeric(75, -1), true), "Decimal(76, 0)");
    assert_eq!(ddl(&PgType::numeric(76, -1), true), "String");
    assert_eq!(ddl(&PgType::numeric(1, 1), true), "Decimal(1, 1)");
    assert_eq!(ddl(&PgType::numeric(5, 1000), true), "String");
    let bad = PgType::base(oid::NUMERIC, "numeric").with_typmod(4);
    assert_eq!(
        map_column(&bad, true, false, &MappingOptions::default())
            .unwrap_err()
            .to_string(),
        "numeric typmod 4 is not valid (precision must be 1 to 1000)"
    );
}

#[test]
fn arrays_nest_per_dimension_and_fall_back_to_string() {
    let int4 = || PgType::base(oid::INT4, "int4");
    let arr = |element: PgType, dims| PgType::array(1007, "_x", element, dims);
    assert_eq!(ddl(&arr(int4(), 1), false), "Array(Nullable(Int32))");
    assert_eq!(ddl(&arr(int4(), 0), true), "Array(Nullable(Int32))");
    assert_eq!(ddl(&arr(int4(), 2), false), "Array(Array(Nullable(Int32)))");
    assert_eq!(
        ddl(&arr(int4(), 3), false),
        "Array(Array(Array(Nullable(Int32))))"
    );
    // numeric(10,3)[]: the typmod comes with the array column.
    let numeric = PgType::array(1231, "_numeric", PgType::base(oid::NUMERIC, "numeric"), 1)
        .with_typmod(655_367);
    assert_eq!(ddl(&numeric, false), "Array(Nullable(Decimal(10, 3)))");
    assert_eq!(
        ddl(&arr(enum_type(), 1), false),
        "Array(LowCardinality(Nullable(String)))"
    );
    assert_eq!(
        ddl(&arr(user_type("citext"), 1), false),
        "Array(Nullable(String))"
    );
    assert_eq!(
        ddl(&arr(PgType::base(oid::TIME, "time"), 1), false),
        "Array(Nullable(String))"
    );
    assert_eq!(
        ddl(&arr(PgType::base(oid::BYTEA, "bytea"), 1), false),
        "Array(Nullable(String))"
    );
    assert_eq!(
        ddl(&arr(PgType::base(oid::UUID, "uuid"), 1), false),
        "Array(Nullable(UUID))"
    );
    // Elements whose delimiter is unknown (extension and user types) or that cannot be
    // Nullable (hstore): the whole array as its text.
    assert_eq!(
        ddl(&arr(user_type("geometry"), 1), false),
        "Nullable(String)"
    );
    assert_eq!(ddl(&arr(user_type("hstore"), 1), false), "Nullable(String)");
    assert_eq!(ddl(&arr(user_type("my_composite"), 1), true), "String");
    let int2vector = PgType::array(
        oid::INT2VECTOR,
        "int2vector",
        PgType::base(oid::INT2, "int2"),
        0,
    );
    assert_eq!(ddl(&int2vector, false), "Nullable(String)");
    let boxes = map_column(
        &arr(PgType::base(oid::BOX, "box"), 1),
        false,
        false,
        &MappingOptions::default(),
    )
    .unwrap();
    assert!(matches!(
        boxes.codec.value,
        ValueCodec::Array {
            delimiter: b';',
            ..
        }
    ));
    // json_native does not reach into arrays.
    let opts = MappingOptions {
        json_native: true,
        ..MappingOptions::default()
    };
    let json = map_column(
        &arr(PgType::base(oid::JSON, "json"), 1),
        false,
        false,
        &opts,
    )
    .unwrap();
    assert_eq!(json.ch.ddl(), "Array(Nullable(String))");
}

#[test]
fn key_columns_are_never_nullable_and_never_maps_or_arrays() {
    let opts = MappingOptions::default();
    let key = map_column(&PgType::base(oid::INT8, "int8"), false, true, &opts).unwrap();
    assert_eq!(key.ch.ddl(), "Int64");
    assert_eq!((key.codec.nulls, key.codec.key), (NullMode::Reject, true));
    let e = map_column(&enum_type(), false, true, &opts).unwrap();
    assert_eq!(e.ch.ddl(), "LowCardinality(String)");
    let array = PgType::array(1007, "_int4", PgType::base(oid::INT4, "int4"), 1);
    assert_eq!(
        map_column(&array, true, true, &opts)
            .unwrap_err()
            .to_string(),
        "key column of type _int4 cannot be mapped to Array(Nullable(Int32)): ClickHouse has no \
         non-Nullable array of nullable elements, and a NULL array cannot be stored; map the \
         column to String (its text output) or change the replica identity"
    );
    let hstore = map_column(&user_type("hstore"), true, true, &opts).unwrap_err();
    assert!(hstore.to_string().contains("a Map cannot be a sorting key"));
    let forced = MappingOptions {
        force_string: true,
        ..MappingOptions::default()
    };
    assert_eq!(
        map_column(&array, true, true, &forced).unwrap().ch.ddl(),
        "String"
    );
}

#[test]
fn arrays_and_hstore_are_never_nullable() {
    let opts = MappingOptions::default();
    let hstore = map_column(&user_type("hstore"), false, false, &opts).unwrap();
    assert_eq!(hstore.codec.nulls, NullMode::Empty);
    assert!(!hstore.ch.orderable());
    let array = PgType::array(1007, "_int4", PgType::base(oid::INT4, "int4"), 1);
    let a = map_column(&array, false, false, &opts).unwrap();
    assert_eq!(a.codec.nulls, NullMode::Empty);
    assert!(a.ch.orderable() && a.ch.has_nullable());
}

#[test]
fn chtype_ddl_and_helpers() {
    let lc = ChType::LowCardinality(Box::new(ChType::String));
    assert_eq!(
        lc.clone().nullable().ddl(),
        "LowCardinality(Nullable(String))"
    );
    assert_eq!(lc.clone().nullable().nullable(), lc.nullable());
    assert_eq!(
        ChType::Scalar(Scalar::Int32).nullable().nullable().ddl(),
        "Nullable(Int32)"
    );
    assert!(!ChType::Scalar(Scalar::Int32).has_nullable());
    assert!(ChType::Array(Box::new(ChType::Json.nullable())).needs_json_as_string());
    assert_eq!(
        format!(
            "{}",
            ChType::DateTime64 {
                utc: true,
                precision: 6
            }
        ),
        "DateTime64(6, 'UTC')"
    );
}

/// Maps a column and encodes one value through it.
fn encode(
    pg: &PgType,
    not_null: bool,
    is_key: bool,
    value: Option<&str>,
) -> Result<Vec<u8>, String> {
    let m =
        map_column(pg, not_null, is_key, &MappingOptions::default()).map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    let mut clamps = ClampCounts::default();
    encode_value(&m.codec, value.map(str::as_bytes), &mut out, &mut clamps)
        .map_err(|e| e.to_string())?;
    Ok(out.to_vec())
}

#[test]
fn mapped_columns_encode_end_to_end() {
    let money = PgType::numeric(12, 2);
    assert_eq!(
        encode(&money, false, false, Some("-1234.50")).unwrap()[0],
        0
    );
    assert_eq!(encode(&money, false, false, None).unwrap(), vec![1]);
    assert_eq!(
        encode(&money, true, false, Some("NaN")).unwrap_err(),
        "numeric value NaN cannot be stored in Decimal(12, 2): map the column to String"
    );
    // numeric without typmod is a String: NaN and 100 digits are stored as printed.
    let any = PgType::base(oid::NUMERIC, "numeric");
    assert_eq!(encode(&any, true, false, Some("NaN")).unwrap(), b"\x03NaN");
    let status = enum_type();
    assert_eq!(
        encode(&status, false, false, Some("happy")).unwrap(),
        b"\x00\x05happy"
    );
    let bpchar = PgType::base(oid::BPCHAR, "bpchar").with_typmod(8);
    assert_eq!(
        encode(&bpchar, true, false, Some("ab  ")).unwrap(),
        b"\x04ab  "
    );
    let day = PgType::base(oid::DATE, "date");
    assert!(encode(&day, true, true, Some("infinity"))
        .unwrap_err()
        .contains("never clamped"));
    assert_eq!(
        encode(&day, false, false, Some("infinity")).unwrap(),
        [0, 0xd1, 0xd6, 0x01, 0x00]
    );
    let hstore = user_type("hstore");
    assert_eq!(encode(&hstore, false, false, None).unwrap(), [0]);
    let dims = PgType::array(1007, "_int4", PgType::base(oid::INT4, "int4"), 2);
    assert!(encode(&dims, false, false, Some("{1,2}"))
        .unwrap_err()
        .contains("it has 1 dimensions, the column 2"));
    let mut clamps = ClampCounts::default();
    let m = map_column(&dims, false, false, &MappingOptions::default()).unwrap();
    encode_value(&m.codec, None, &mut BytesMut::new(), &mut clamps).unwrap();
    assert_eq!(clamps.get(ClampKind::NullAsEmpty), 1);
}

mod overrides {
    use super::*;
    use crate::sink::types::overrides::TypeOverride;

    fn over(
        text: &str,
        pg: &PgType,
        not_null: bool,
        is_key: bool,
    ) -> Result<ColumnMapping, MappingError> {
        let opts = MappingOptions {
            server_has_json: true,
            ..MappingOptions::default()
        };
        TypeOverride::parse(text)?.map(pg, not_null, is_key, &opts)
    }

    fn encoded(m: &ColumnMapping, value: &str) -> Result<Vec<u8>, String> {
        let mut out = BytesMut::new();
        let mut clamps = ClampCounts::default();
        encode_value(&m.codec, Some(value.as_bytes()), &mut out, &mut clamps)
            .map(|()| out.to_vec())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_override_maps_the_types_it_suits_and_refuses_the_rest() {
        let numeric = PgType::base(oid::NUMERIC, "numeric");
        let text = PgType::base(oid::TEXT, "text");
        let jsonb = PgType::base(oid::JSONB, "jsonb");
        let ts = PgType::base(oid::TIMESTAMP, "timestamp");
        let tstz = PgType::base(oid::TIMESTAMPTZ, "timestamptz");
        let ddl = |m: Result<ColumnMapping, MappingError>| m.unwrap().ch.ddl();
        assert_eq!(
            ddl(over("Decimal( 12 , 2 )", &numeric, false, false)),
            "Nullable(Decimal(12, 2))"
        );
        assert_eq!(ddl(over("String", &numeric, true, false)), "String");
        assert_eq!(ddl(over("JSON", &jsonb, false, false)), "Nullable(JSON)");
        assert_eq!(
            ddl(over("DateTime64(3)", &ts, true, false)),
            "DateTime64(3)"
        );
        assert_eq!(
            ddl(over("DateTime64(0)", &tstz, false, false)),
            "Nullable(DateTime64(0, 'UTC'))"
        );
        assert_eq!(
            ddl(over("LowCardinality(String)", &text, false, false)),
            "LowCardinality(Nullable(String))"
        );
        assert_eq!(
            ddl(over("LowCardinality(String)", &text, false, true)),
            "LowCardinality(String)"
        );

        let refused = |m: Result<ColumnMapping, MappingError>| m.unwrap_err().to_string();
        assert!(
            refused(over("Decimal(12, 2)", &text, false, false)).contains("only a numeric column")
        );
        assert!(refused(over("JSON", &jsonb, false, true)).contains("sort key"));
        assert!(
            refused(over("LowCardinality(String)", &ts, false, false)).contains("stored as text")
        );
        assert!(refused(over("DateTime64(3)", &numeric, false, false)).contains("timestamp"));
        for unknown in [
            "Int8",
            "Decimal(80, 2)",
            "Decimal(5, 6)",
            "DateTime64(9)",
            "decimal(5,2)",
        ] {
            assert!(
                refused(over(unknown, &numeric, false, false)).contains("choose from"),
                "{unknown}"
            );
        }
        let no_json = TypeOverride::Json.map(&jsonb, false, false, &MappingOptions::default());
        assert!(refused(no_json).contains("no JSON type"));
    }

    #[test]
    fn a_value_the_override_cannot_hold_is_refused_by_name_never_cut() {
        let numeric = PgType::base(oid::NUMERIC, "numeric");
        let small = over("Decimal(5, 2)", &numeric, false, false).unwrap();
        assert_eq!(encoded(&small, "123.45").unwrap().len(), 1 + 4);
        let err = encoded(&small, "1234.5").unwrap_err();
        assert!(
            err.contains("1234.5") && err.contains("Decimal(5, 2)"),
            "{err}"
        );
        assert!(encoded(&small, "1.234")
            .unwrap_err()
            .contains("would round"));
        assert!(encoded(&small, "NaN").is_err());

        let ts = PgType::base(oid::TIMESTAMP, "timestamp");
        let millis = over("DateTime64(3)", &ts, true, false).unwrap();
        assert_eq!(
            encoded(&millis, "1970-01-01 00:00:01.5").unwrap(),
            1500i64.to_le_bytes().to_vec()
        );
        let err = encoded(&millis, "2026-01-01 10:00:00.123456").unwrap_err();
        assert!(
            err.contains("2026-01-01 10:00:00.123456") && err.contains("truncate"),
            "{err}"
        );
        // Clamped ends (counted) need no exactness.
        assert!(encoded(&millis, "infinity").is_ok());
    }
}
