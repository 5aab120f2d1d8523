//! The placeholder value of a column: what a delete marker row writes for the columns
//! its old tuple does not carry (DESIGN.md rule 2: a delete writes the key with
//! `_is_deleted = 1`; under `REPLICA IDENTITY DEFAULT` the old tuple holds only the key,
//! so every other column needs some valid value).
//!
//! A `Nullable` column gets NULL; anything else the zero of its type, byte for byte
//! what [`super::encode_value`] writes for the zero value's Postgres text (checked in
//! the tests below for every [`ValueCodec`] the type map builds):
//!
//! | codec | ClickHouse type | placeholder | Postgres text it equals |
//! |---|---|---|---|
//! | `Bool` | `Bool` | `00` | `f` |
//! | `Int16` / `Int32` / `Int64` / `UInt32` | same | 2/4/8/4 zero bytes | `0` |
//! | `Float32` / `Float64` | same | 4/8 zero bytes (+0.0) | `0` |
//! | `Decimal { precision, .. }` | `Decimal(P, S)` | 4/8/16/32 zero bytes (P ≤ 9/18/38/76) | `0` |
//! | `Text`, `Bytea` | `String`, `LowCardinality(String)` | `00` (empty) | `''`, `\x` |
//! | `Uuid` | `UUID` | 16 zero bytes | `00000000-0000-0000-0000-000000000000` |
//! | `Date(range)` | `Date32` | day 0 (1970-01-01), clamped into `range` | `1970-01-01` |
//! | `DateTime64 { range, .. }` | `DateTime64(6[, 'UTC'])` | 0 µs (the epoch), clamped into `range` | `1970-01-01 00:00:00[+00]` |
//! | `Time64` | `Time64(6)` | 0 µs | `00:00:00` |
//! | `Array { .. }`, `Hstore` | `Array(…)`, `Map(…)` | `00` (empty; never Nullable) | `{}`, `''` |
//!
//! Every one of these is also ClickHouse's own default of the type
//! (`defaultValueOfTypeName`), except `Date32`, whose default there is its first day,
//! 1900-01-01; day 0 is as valid and is what a date column's zero text encodes to.

use bytes::{BufMut, BytesMut};

use super::{put_leb128, Codec, DateRange, NullMode, Scalar, ValueCodec};

/// Appends the placeholder of `codec`'s column to `out`: NULL (`01`) for a `Nullable`
/// column, else the zero (empty, epoch) value of its type. Never fails, counts no clamp.
///
/// A `JSON` column (the opt-in `json_native` mapping) has the `Text` codec, like a
/// `String`, so it gets the empty string too when it is not `Nullable` — which
/// ClickHouse refuses as JSON ("Cannot parse JSON object"). For a non-Nullable
/// [`crate::sink::types::ChType::Json`] column write `put_string(out, b"{}")` instead.
pub fn encode_placeholder(codec: &Codec, out: &mut BytesMut) {
    match codec.nulls {
        NullMode::Nullable => out.put_u8(1),
        NullMode::Empty | NullMode::Reject => zero(&codec.value, out),
    }
}

/// The zero value of `value`'s type (never NULL).
fn zero(value: &ValueCodec, out: &mut BytesMut) {
    match value {
        ValueCodec::Scalar(Scalar::Bool) => out.put_u8(0),
        ValueCodec::Scalar(Scalar::Int16) => out.put_i16_le(0),
        ValueCodec::Scalar(Scalar::Int32) => out.put_i32_le(0),
        ValueCodec::Scalar(Scalar::Int64) => out.put_i64_le(0),
        ValueCodec::Scalar(Scalar::UInt32) => out.put_u32_le(0),
        ValueCodec::Scalar(Scalar::Float32) => out.put_f32_le(0.0),
        ValueCodec::Scalar(Scalar::Float64) => out.put_f64_le(0.0),
        // The width `decimal::put_decimal` writes: Int32/Int64/Int128/Int256.
        ValueCodec::Decimal { precision, .. } => {
            let width = match precision {
                0..=9 => 4,
                10..=18 => 8,
                19..=38 => 16,
                _ => 32,
            };
            out.put_bytes(0, width);
        }
        ValueCodec::Text | ValueCodec::Bytea => put_leb128(out, 0),
        ValueCodec::Uuid => out.put_bytes(0, 16),
        ValueCodec::Date(range) => out.put_i32_le(epoch_day(range)),
        ValueCodec::DateTime64 {
            range, precision, ..
        } => out.put_i64_le(epoch_micros(range) / sub_second_divisor(*precision)),
        ValueCodec::Time64 => out.put_i64_le(0),
        ValueCodec::Array { .. } | ValueCodec::Hstore => put_leb128(out, 0),
    }
}

/// Day 0 (1970-01-01) moved into `range`, as the encoder clamps `1970-01-01`.
fn epoch_day(range: &DateRange) -> i32 {
    // Not `i32::clamp`: it panics on an empty (inverted) range.
    if 0 < range.first_day {
        range.first_day
    } else if 0 > range.last_day {
        range.last_day
    } else {
        0
    }
}

/// Microsecond 0 (the epoch) moved into `range`, as the encoder clamps it.
/// Microseconds per unit of a `DateTime64(precision)` (1 at 6, 1000 at 3).
pub fn sub_second_divisor(precision: u8) -> i64 {
    10i64.pow(u32::from(6u8.saturating_sub(precision.min(6))))
}

fn epoch_micros(range: &DateRange) -> i64 {
    let (first, last) = range.micros();
    let micros = if 0 < first {
        first
    } else if 0 > last {
        last
    } else {
        0
    };
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::sink::rowbinary::{encode_value, ClampCounts};
    use crate::sink::types::{map_column, oid, ColumnMapping, MappingOptions, PgType, PgTypeKind};

    fn placeholder(codec: &Codec) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_placeholder(codec, &mut out);
        out.to_vec()
    }

    fn encoded(codec: &Codec, text: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        let mut clamps = ClampCounts::default();
        encode_value(codec, Some(text.as_bytes()), &mut out, &mut clamps)
            .unwrap_or_else(|e| panic!("{text:?} as {:?}: {e}", codec.value));
        out.to_vec()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }

    fn map(pg: &PgType, not_null: bool, opts: &MappingOptions) -> ColumnMapping {
        map_column(pg, not_null, false, opts).unwrap()
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

    fn arr(oid: u32, name: &str, element: PgType, dims: u32) -> PgType {
        PgType::array(oid, name, element, dims)
    }

    /// The variant's name: an exhaustive match, so a new variant fails to compile here
    /// until it has a placeholder and a case below.
    fn variant(v: &ValueCodec) -> &'static str {
        match v {
            ValueCodec::Scalar(Scalar::Bool) => "Bool",
            ValueCodec::Scalar(Scalar::Int16) => "Int16",
            ValueCodec::Scalar(Scalar::Int32) => "Int32",
            ValueCodec::Scalar(Scalar::Int64) => "Int64",
            ValueCodec::Scalar(Scalar::UInt32) => "UInt32",
            ValueCodec::Scalar(Scalar::Float32) => "Float32",
            ValueCodec::Scalar(Scalar::Float64) => "Float64",
            ValueCodec::Decimal { .. } => "Decimal",
            ValueCodec::Text => "Text",
            ValueCodec::Bytea => "Bytea",
            ValueCodec::Uuid => "Uuid",
            ValueCodec::Date(_) => "Date",
            ValueCodec::DateTime64 { .. } => "DateTime64",
            ValueCodec::Time64 => "Time64",
            ValueCodec::Array { .. } => "Array",
            ValueCodec::Hstore => "Hstore",
        }
    }

    const ALL_VARIANTS: [&str; 16] = [
        "Bool",
        "Int16",
        "Int32",
        "Int64",
        "UInt32",
        "Float32",
        "Float64",
        "Decimal",
        "Text",
        "Bytea",
        "Uuid",
        "Date",
        "DateTime64",
        "Time64",
        "Array",
        "Hstore",
    ];

    /// A Postgres type, mapping options, the Postgres text of its zero value, the
    /// ClickHouse type the map gives (NOT NULL) and the placeholder's bytes.
    struct Case {
        pg: PgType,
        opts: MappingOptions,
        zero_text: &'static str,
        ch: &'static str,
        hex: String,
    }

    fn case(pg: PgType, zero_text: &'static str, ch: &'static str, hex: &str) -> Case {
        Case {
            pg,
            opts: MappingOptions::default(),
            zero_text,
            ch,
            hex: hex.into(),
        }
    }

    /// Every expected hex except `Date32`'s is ClickHouse 26.9's
    /// `hex(formatRowNoNewline('RowBinary', defaultValueOfTypeName(T)))` (chdb-core
    /// 26.9.0); ClickHouse's `Date32` default is 1900-01-01 (`219CFFFF`), the
    /// placeholder day 0.
    fn cases() -> Vec<Case> {
        let time64 = MappingOptions {
            server_has_time64: true,
            ..MappingOptions::default()
        };
        let wide_numeric = MappingOptions {
            numeric_unconstrained_as_decimal: true,
            ..MappingOptions::default()
        };
        let forced = MappingOptions {
            force_string: true,
            ..MappingOptions::default()
        };
        let int4 = PgType::base(oid::INT4, "int4");
        let text = PgType::base(oid::TEXT, "text");
        vec![
            case(PgType::base(oid::BOOL, "bool"), "f", "Bool", "00"),
            case(PgType::base(oid::INT2, "int2"), "0", "Int16", "0000"),
            case(int4.clone(), "0", "Int32", "00000000"),
            case(
                PgType::base(oid::INT8, "int8"),
                "0",
                "Int64",
                "0000000000000000",
            ),
            case(PgType::base(oid::OID, "oid"), "0", "UInt32", "00000000"),
            case(PgType::base(oid::XID, "xid"), "0", "UInt32", "00000000"),
            case(
                PgType::base(oid::FLOAT4, "float4"),
                "0",
                "Float32",
                "00000000",
            ),
            case(
                PgType::base(oid::FLOAT8, "float8"),
                "0",
                "Float64",
                "0000000000000000",
            ),
            case(PgType::numeric(9, 2), "0", "Decimal(9, 2)", "00000000"),
            case(
                PgType::numeric(18, 4),
                "0",
                "Decimal(18, 4)",
                "0000000000000000",
            ),
            case(
                PgType::numeric(38, 10),
                "0",
                "Decimal(38, 10)",
                &"00".repeat(16),
            ),
            case(
                PgType::numeric(76, 20),
                "0",
                "Decimal(76, 20)",
                &"00".repeat(32),
            ),
            Case {
                opts: wide_numeric,
                ..case(
                    PgType::base(oid::NUMERIC, "numeric"),
                    "0",
                    "Decimal(76, 38)",
                    &"00".repeat(32),
                )
            },
            case(PgType::base(oid::NUMERIC, "numeric"), "", "String", "00"),
            case(text.clone(), "", "String", "00"),
            case(
                PgType::base(oid::VARCHAR, "varchar").with_typmod(14),
                "",
                "String",
                "00",
            ),
            case(user_type("citext"), "", "String", "00"),
            case(PgType::base(oid::INTERVAL, "interval"), "", "String", "00"),
            case(PgType::base(oid::TIME, "time"), "", "String", "00"),
            case(enum_type(), "", "LowCardinality(String)", "00"),
            Case {
                opts: forced,
                ..case(PgType::base(oid::UUID, "uuid"), "", "String", "00")
            },
            case(PgType::base(oid::BYTEA, "bytea"), "\\x", "String", "00"),
            case(
                PgType::base(oid::UUID, "uuid"),
                "00000000-0000-0000-0000-000000000000",
                "UUID",
                "00000000000000000000000000000000",
            ),
            case(
                PgType::base(oid::DATE, "date"),
                "1970-01-01",
                "Date32",
                "00000000",
            ),
            case(
                PgType::base(oid::TIMESTAMP, "timestamp"),
                "1970-01-01 00:00:00",
                "DateTime64(6)",
                "0000000000000000",
            ),
            case(
                PgType::base(oid::TIMESTAMPTZ, "timestamptz"),
                "1970-01-01 00:00:00+00",
                "DateTime64(6, 'UTC')",
                "0000000000000000",
            ),
            Case {
                opts: time64,
                ..case(
                    PgType::base(oid::TIME, "time"),
                    "00:00:00",
                    "Time64(6)",
                    "0000000000000000",
                )
            },
            case(
                arr(1007, "_int4", int4, 1),
                "{}",
                "Array(Nullable(Int32))",
                "00",
            ),
            case(
                arr(1009, "_text", text, 2),
                "{}",
                "Array(Array(Nullable(String)))",
                "00",
            ),
            case(
                arr(1020, "_box", PgType::base(oid::BOX, "box"), 1),
                "{}",
                "Array(Nullable(String))",
                "00",
            ),
            case(
                arr(1231, "_numeric", PgType::numeric(12, 2), 1),
                "{}",
                "Array(Nullable(Decimal(12, 2)))",
                "00",
            ),
            case(
                user_type("hstore"),
                "",
                "Map(String, Nullable(String))",
                "00",
            ),
        ]
    }

    #[test]
    fn every_codec_the_map_builds_gets_its_types_zero() {
        let mut seen = BTreeSet::new();
        for c in cases() {
            let m = map(&c.pg, true, &c.opts);
            assert_eq!(m.ch.ddl(), c.ch, "{}", c.pg.name);
            seen.insert(variant(&m.codec.value));
            let bytes = placeholder(&m.codec);
            assert_eq!(hex(&bytes), c.hex, "{} → {}", c.pg.name, c.ch);
            assert_eq!(
                bytes,
                encoded(&m.codec, c.zero_text),
                "{} → {}: placeholder vs encode_value({:?})",
                c.pg.name,
                c.ch,
                c.zero_text
            );
        }
        let all: BTreeSet<_> = ALL_VARIANTS.into_iter().collect();
        assert_eq!(seen, all, "every ValueCodec variant has a case");
    }

    #[test]
    fn a_nullable_column_gives_exactly_null() {
        let mut nullable = 0;
        for c in cases() {
            let m = map(&c.pg, false, &c.opts);
            match m.codec.nulls {
                NullMode::Nullable => {
                    nullable += 1;
                    assert_eq!(placeholder(&m.codec), [1], "{}", c.pg.name);
                    assert_eq!(placeholder(&m.codec), encoded_null(&m.codec));
                }
                // Arrays and maps are never Nullable: empty, as when NOT NULL.
                NullMode::Empty => {
                    assert_eq!(hex(&placeholder(&m.codec)), c.hex, "{}", c.pg.name);
                    assert_eq!(placeholder(&m.codec), encoded(&m.codec, c.zero_text));
                }
                NullMode::Reject => panic!("{} is neither NOT NULL nor a key", c.pg.name),
            }
        }
        assert!(nullable >= 25, "{nullable}");
    }

    fn encoded_null(codec: &Codec) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_value(codec, None, &mut out, &mut ClampCounts::default()).unwrap();
        out.to_vec()
    }

    #[test]
    fn key_columns_get_the_zero_too() {
        for c in cases() {
            let Ok(m) = map_column(&c.pg, false, true, &c.opts) else {
                continue; // arrays and hstore cannot be keys
            };
            assert!(m.codec.key);
            assert_eq!(hex(&placeholder(&m.codec)), c.hex, "{}", c.pg.name);
        }
    }

    #[test]
    fn decimal_widths_follow_precision() {
        for (precision, width) in [(1, 4), (9, 4), (10, 8), (18, 8), (19, 16), (38, 16)] {
            let codec = map(&PgType::numeric(precision, 0), true, &Default::default()).codec;
            assert_eq!(placeholder(&codec), vec![0; width], "numeric({precision})");
            assert_eq!(placeholder(&codec), encoded(&codec, "0"));
        }
        for (precision, width) in [(39, 32), (76, 32)] {
            let codec = map(&PgType::numeric(precision, 0), true, &Default::default()).codec;
            assert_eq!(placeholder(&codec), vec![0; width], "numeric({precision})");
            assert_eq!(placeholder(&codec), encoded(&codec, "0"));
        }
    }

    #[test]
    fn dates_and_timestamps_clamp_the_epoch_into_the_range() {
        let ranges = [
            DateRange::DOCUMENTED,
            DateRange::YEARS_1_TO_9999,
            DateRange::years(2000, 2100).unwrap(),
            DateRange::years(1900, 1950).unwrap(),
        ];
        for range in ranges {
            let opts = MappingOptions {
                date_range: range,
                ..MappingOptions::default()
            };
            for (pg, text) in [
                (PgType::base(oid::DATE, "date"), "1970-01-01"),
                (
                    PgType::base(oid::TIMESTAMP, "timestamp"),
                    "1970-01-01 00:00:00",
                ),
                (
                    PgType::base(oid::TIMESTAMPTZ, "timestamptz"),
                    "1970-01-01 00:00:00+00",
                ),
            ] {
                let codec = map(&pg, true, &opts).codec;
                assert_eq!(placeholder(&codec), encoded(&codec, text), "{range} {text}");
            }
        }
        let after = plain(ValueCodec::Date(DateRange::years(2000, 2100).unwrap()));
        assert_eq!(placeholder(&after), encoded(&after, "2000-01-01"));
        let before = plain(ValueCodec::Date(DateRange::years(1900, 1950).unwrap()));
        assert_eq!(placeholder(&before), encoded(&before, "1950-12-31"));
    }

    fn plain(value: ValueCodec) -> Codec {
        Codec {
            value,
            nulls: NullMode::Reject,
            key: false,
        }
    }

    #[test]
    fn an_inverted_range_does_not_panic() {
        let inverted = DateRange {
            first_day: 10,
            last_day: -10,
        };
        assert_eq!(
            placeholder(&plain(ValueCodec::Date(inverted))),
            10i32.to_le_bytes()
        );
        let ts = plain(ValueCodec::DateTime64 {
            range: inverted,
            with_offset: false,
            precision: 6,
        });
        assert_eq!(placeholder(&ts).len(), 8);
    }

    #[test]
    fn it_appends() {
        let codec = map(&PgType::base(oid::INT4, "int4"), true, &Default::default()).codec;
        let mut out = BytesMut::from(&b"ab"[..]);
        encode_placeholder(&codec, &mut out);
        encode_placeholder(&codec, &mut out);
        assert_eq!(&out[..], b"ab\0\0\0\0\0\0\0\0");
    }
}
