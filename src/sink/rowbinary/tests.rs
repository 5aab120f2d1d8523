//! The encoder against bytes ClickHouse itself produced: every expected hex string
//! below is ClickHouse 26.9's `hex(formatRowNoNewline('RowBinary', CAST(v AS T)))`
//! (chdb-core 26.9.0) for the value Postgres prints as the input text. Then clamping,
//! key columns, NULLs, errors, and properties (no input panics; a failed value leaves
//! the buffer as it was; exact decimals and integers: in `properties`).

mod properties;

use bytes::BytesMut;

use super::*;

fn codec(value: ValueCodec, nulls: NullMode, key: bool) -> Codec {
    Codec { value, nulls, key }
}

fn plain(value: ValueCodec) -> Codec {
    codec(value, NullMode::Reject, false)
}

fn dec(precision: u8, scale: u8) -> Codec {
    plain(ValueCodec::Decimal { precision, scale })
}

fn array(element: ValueCodec, dims: u32) -> Codec {
    codec(
        ValueCodec::Array {
            element: Box::new(element),
            dims,
            delimiter: b',',
        },
        NullMode::Empty,
        false,
    )
}

fn ts(with_offset: bool) -> Codec {
    plain(ValueCodec::DateTime64 {
        range: DateRange::DOCUMENTED,
        with_offset,
        precision: 6,
    })
}

fn date() -> Codec {
    plain(ValueCodec::Date(DateRange::DOCUMENTED))
}

fn enc(c: &Codec, value: Option<&[u8]>) -> Result<(Vec<u8>, ClampCounts), EncodeError> {
    let mut out = BytesMut::new();
    let mut clamps = ClampCounts::default();
    encode_value(c, value, &mut out, &mut clamps)?;
    Ok((out.to_vec(), clamps))
}

fn hex(c: &Codec, value: Option<&str>) -> String {
    match enc(c, value.map(str::as_bytes)) {
        Ok((bytes, _)) => bytes.iter().map(|b| format!("{b:02X}")).collect(),
        Err(e) => panic!("{value:?}: {e}"),
    }
}

fn err(c: &Codec, value: Option<&str>) -> String {
    match enc(c, value.map(str::as_bytes)) {
        Ok((bytes, _)) => panic!("{value:?} encoded as {bytes:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn scalars_match_clickhouse_rowbinary() {
    let cases: &[(Codec, &str, &str)] = &[
        (plain(ValueCodec::Scalar(Scalar::Int16)), "-32768", "0080"),
        (plain(ValueCodec::Scalar(Scalar::Int16)), "32767", "FF7F"),
        (
            plain(ValueCodec::Scalar(Scalar::Int32)),
            "-2147483648",
            "00000080",
        ),
        (
            plain(ValueCodec::Scalar(Scalar::Int64)),
            "-9223372036854775808",
            "0000000000000080",
        ),
        (
            plain(ValueCodec::Scalar(Scalar::Int64)),
            "9223372036854775807",
            "FFFFFFFFFFFFFF7F",
        ),
        (
            plain(ValueCodec::Scalar(Scalar::UInt32)),
            "4294967295",
            "FFFFFFFF",
        ),
        (plain(ValueCodec::Scalar(Scalar::Bool)), "t", "01"),
        (plain(ValueCodec::Scalar(Scalar::Bool)), "f", "00"),
        (
            plain(ValueCodec::Scalar(Scalar::Float32)),
            "NaN",
            "0000C07F",
        ),
        (
            plain(ValueCodec::Scalar(Scalar::Float32)),
            "Infinity",
            "0000807F",
        ),
        (
            plain(ValueCodec::Scalar(Scalar::Float32)),
            "-Infinity",
            "000080FF",
        ),
        (plain(ValueCodec::Scalar(Scalar::Float32)), "-0", "00000080"),
        (
            plain(ValueCodec::Scalar(Scalar::Float32)),
            "1.1754944e-38",
            "00008000",
        ),
        (
            plain(ValueCodec::Scalar(Scalar::Float64)),
            "5e-324",
            "0100000000000000",
        ),
        (
            plain(ValueCodec::Scalar(Scalar::Float64)),
            "1e+300",
            "9C7500883CE4377E",
        ),
        (
            plain(ValueCodec::Scalar(Scalar::Float64)),
            "-Infinity",
            "000000000000F0FF",
        ),
        (
            plain(ValueCodec::Scalar(Scalar::Float64)),
            "0.1",
            "9A9999999999B93F",
        ),
        (
            plain(ValueCodec::Uuid),
            "61f0c404-5cb3-11e7-907b-a6006ad3dba0",
            "E711B35C04C4F061A0DBD36A00A67B90",
        ),
        (date(), "2024-02-29", "464D0000"),
        (date(), "1970-01-01", "00000000"),
        (date(), "1900-01-01", "219CFFFF"),
        (date(), "2299-12-31", "D1D60100"),
        (
            ts(true),
            "2020-01-01 12:34:56.123456+00",
            "403ED64D139B0500",
        ),
        (
            ts(true),
            "1969-12-31 23:59:59.999999+00",
            "FFFFFFFFFFFFFFFF",
        ),
        (ts(false), "1900-01-01 00:00:00", "006043B7EF26F8FF"),
        (ts(false), "2299-12-31 23:59:59.999999", "FFBFECE449FF2400"),
        (plain(ValueCodec::Time64), "24:00:00", "0060D71D14000000"),
        (plain(ValueCodec::Time64), "12:00:00.12", "C084ED0E0A000000"),
    ];
    for (c, text, want) in cases {
        assert_eq!(hex(c, Some(text)), *want, "{text} as {}", c.value.ch_type());
    }
}

#[test]
fn decimals_match_clickhouse_rowbinary_at_every_width() {
    let nines = "9".repeat(76);
    let wide_negative = format!("-{}.{}", "1".repeat(38), "2".repeat(38));
    let cases: &[(Codec, &str, &str)] = &[
        (dec(12, 2), "-1234.50", "C61DFEFFFFFFFFFF"),
        (dec(9, 2), "0.01", "01000000"),
        (dec(18, 0), "999999999999999999", "FFFF63A7B3B6E00D"),
        (
            dec(38, 10),
            "-1234567890123456789012345678.0123456789",
            "EBBA9833B16FB63BECCCFD0F094FB6F6",
        ),
        (
            dec(76, 0),
            &nines,
            "FFFFFFFFFFFFFFFFFF0F9571F1A57577792965E8ABB46407B5159911A7CC1B16",
        ),
        (
            dec(76, 38),
            &wide_negative,
            "721CC771DCA6F0FED504C405B68F7AB180C2F45709B32DFFB2C4605326228BFD",
        ),
        // numeric(3,5) and numeric(3,-2) (Postgres 15+), mapped to Decimal(5,5) and Decimal(5,0).
        (dec(5, 5), "0.00123", "7B000000"),
        (dec(5, 0), "12300", "0C300000"),
        (dec(40, 2), "-0.01", &"FF".repeat(32)),
    ];
    for (c, text, want) in cases {
        assert_eq!(hex(c, Some(text)), *want, "{text} as {}", c.value.ch_type());
    }
}

#[test]
fn decimals_keep_every_digit_or_refuse() {
    // Postgres prints exactly `scale` decimals for numeric(p,s): nothing to round.
    assert_eq!(hex(&dec(12, 2), Some("-0.01")), "FFFFFFFFFFFFFFFF");
    assert_eq!(hex(&dec(12, 2), Some("-0.00")), "0000000000000000");
    assert_eq!(
        hex(&dec(12, 2), Some("9999999999.99")),
        hex(&dec(12, 2), Some("9999999999.990"))
    );
    assert_eq!(
        hex(&dec(12, 2), Some("1.5")),
        hex(&dec(12, 2), Some("1.50"))
    );
    assert_eq!(
        err(&dec(12, 2), Some("NaN")),
        "numeric value NaN cannot be stored in Decimal(12, 2): map the column to String"
    );
    assert!(err(&dec(12, 2), Some("Infinity")).contains("map the column to String"));
    assert!(err(&dec(12, 2), Some("-Infinity")).contains("map the column to String"));
    assert_eq!(
        err(&dec(12, 2), Some("12345678901.00")),
        "numeric value 12345678901.00 cannot be stored in Decimal(12, 2): it has 11 digits \
         before the point, the type holds 10; map the column to String"
    );
    assert!(err(&dec(12, 2), Some("1.005")).contains("storing it would round"));
    // The opt-in Decimal(76, 38) for unconstrained numeric refuses what it cannot hold.
    let hundred = "1".repeat(100);
    assert!(err(&dec(76, 38), Some(&hundred)).contains("100 digits before the point"));
    // 100 digits in a String column (numeric without typmod) stay exactly as printed.
    let (bytes, _) = enc(&plain(ValueCodec::Text), Some(hundred.as_bytes())).unwrap();
    assert_eq!(&bytes[..1], &[100]);
    assert_eq!(&bytes[1..], hundred.as_bytes());
}

#[test]
fn strings_and_nullables_match_clickhouse_rowbinary() {
    let text = plain(ValueCodec::Text);
    let long = "y".repeat(200);
    assert_eq!(hex(&text, Some(&long)), format!("C801{}", "79".repeat(200)));
    let nullable = codec(ValueCodec::Text, NullMode::Nullable, false);
    assert_eq!(hex(&nullable, None), "01");
    // LowCardinality(Nullable(String)) (an enum) is just Nullable(String) in RowBinary.
    assert_eq!(hex(&nullable, Some("x")), "000178");
    assert_eq!(
        hex(
            &codec(ValueCodec::Scalar(Scalar::Int32), NullMode::Nullable, false),
            Some("5")
        ),
        "0005000000"
    );
    // char(4) keeps its padding as printed.
    assert_eq!(hex(&text, Some("a   ")), "0461202020");
}

#[test]
fn bytea_is_stored_raw() {
    let all: Vec<u8> = (0..=255).collect();
    let text: String = std::iter::once("\\x".to_string())
        .chain(all.iter().map(|b| format!("{b:02x}")))
        .collect();
    let (bytes, _) = enc(&plain(ValueCodec::Bytea), Some(text.as_bytes())).unwrap();
    assert_eq!(&bytes[..2], &[0x80, 0x02]);
    assert_eq!(&bytes[2..], &all[..]);
    assert_eq!(hex(&plain(ValueCodec::Bytea), Some("\\x")), "00");
}

#[test]
fn arrays_and_hstore_match_clickhouse_rowbinary() {
    assert_eq!(
        hex(
            &array(ValueCodec::Scalar(Scalar::Int32), 1),
            Some("{1,NULL,3}")
        ),
        "030001000000010003000000"
    );
    assert_eq!(
        hex(
            &array(ValueCodec::Scalar(Scalar::Int32), 2),
            Some("{{1,2},{3,NULL}}")
        ),
        "02020001000000000200000002000300000001"
    );
    assert_eq!(
        hex(
            &array(ValueCodec::Text, 1),
            Some(r#"{"a\"b",NULL,"NULL",""}"#)
        ),
        "0400036122620100044E554C4C0000"
    );
    assert_eq!(
        hex(&array(ValueCodec::Text, 1), Some("{x,NULL}")),
        "0200017801"
    );
    let hstore = codec(ValueCodec::Hstore, NullMode::Empty, false);
    assert_eq!(
        hex(&hstore, Some(r#""a\"b"=>"c\\d", "k"=>NULL"#)),
        "02036122620003635C64016B01"
    );
    assert_eq!(hex(&hstore, Some("")), "00");
}

#[test]
fn array_elements_use_their_type_codec() {
    // Postgres 18: ARRAY['\x00ff'::bytea, NULL], ARRAY['a'::char(3)],
    // ARRAY['2020-01-01 10:00+02'::timestamptz], and a box[].
    assert_eq!(
        hex(&array(ValueCodec::Bytea, 1), Some(r#"{"\\x00ff",NULL}"#)),
        "02000200FF01"
    );
    assert_eq!(
        hex(&array(ValueCodec::Text, 1), Some(r#"{"a  "}"#)),
        "0100036120 20".replace(' ', "")
    );
    let tz = ValueCodec::DateTime64 {
        range: DateRange::DOCUMENTED,
        with_offset: true,
        precision: 6,
    };
    let one = hex(&ts(true), Some("2020-01-01 08:00:00+00"));
    assert_eq!(
        hex(&array(tz, 1), Some(r#"{"2020-01-01 08:00:00+00"}"#)),
        format!("0100{one}")
    );
    let boxes = codec(
        ValueCodec::Array {
            element: Box::new(ValueCodec::Text),
            dims: 1,
            delimiter: b';',
        },
        NullMode::Empty,
        false,
    );
    let (bytes, _) = enc(&boxes, Some(b"{(1,1),(0,0);(2,2),(1,1)}")).unwrap();
    assert_eq!(bytes, b"\x02\x00\x0b(1,1),(0,0)\x00\x0b(2,2),(1,1)");
    assert!(
        err(&array(ValueCodec::Scalar(Scalar::Int32), 1), Some("{1,x}"))
            .contains("malformed integer text \"x\"")
    );
}

#[test]
fn empty_null_and_reshaped_arrays() {
    let a = array(ValueCodec::Scalar(Scalar::Int32), 1);
    assert_eq!(hex(&a, Some("{}")), "00");
    assert_eq!(
        hex(&array(ValueCodec::Scalar(Scalar::Int32), 3), Some("{}")),
        "00"
    );
    let (bytes, clamps) = enc(&a, None).unwrap();
    assert_eq!(bytes, [0]);
    assert_eq!(clamps.get(ClampKind::NullAsEmpty), 1);
    let (bytes, clamps) = enc(&a, Some(b"[0:1]={7,8}")).unwrap();
    assert_eq!(bytes, enc(&a, Some(b"{7,8}")).unwrap().0);
    assert_eq!(clamps.get(ClampKind::ArrayBoundsDropped), 1);
    assert_eq!(
        err(&a, Some("{{1,2},{3,4}}")),
        "array value {{1,2},{3,4}} cannot be stored in Array(Nullable(Int32)): it has 2 dimensions, \
         the column 1 (Postgres does not enforce an array column's declared dimensions); \
         map the column to String"
    );
    assert!(
        err(&array(ValueCodec::Scalar(Scalar::Int32), 2), Some("{1,2}"))
            .contains("it has 1 dimensions, the column 2")
    );
    let key = Codec {
        key: true,
        ..array(ValueCodec::Scalar(Scalar::Int32), 1)
    };
    assert!(err(&key, None).starts_with("NULL cannot be stored in Array(Nullable(Int32))"));
    assert!(err(&key, Some("[0:0]={1}")).contains("lower bounds"));
}

#[test]
fn dates_clamp_to_the_range_and_are_counted() {
    let first = hex(&date(), Some("1900-01-01"));
    let last = hex(&date(), Some("2299-12-31"));
    let cases = [
        ("-infinity", &first, ClampKind::MinusInfinity),
        ("infinity", &last, ClampKind::Infinity),
        ("0044-03-15 BC", &first, ClampKind::Bc),
        ("4713-01-01 BC", &first, ClampKind::Bc),
        ("1899-12-31", &first, ClampKind::BeforeRange),
        ("0001-01-01", &first, ClampKind::BeforeRange),
        ("2300-01-01", &last, ClampKind::AfterRange),
        ("5874897-12-31", &last, ClampKind::AfterRange),
    ];
    for (text, want, kind) in cases {
        let (bytes, clamps) = enc(&date(), Some(text.as_bytes())).unwrap();
        let got: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(&got, want, "{text}");
        assert_eq!((clamps.get(kind), clamps.total()), (1, 1), "{text}");
    }
    // With the range ClickHouse 26.9 stores, 1850 and 0001 are kept.
    let wide = plain(ValueCodec::Date(DateRange::YEARS_1_TO_9999));
    let (bytes, clamps) = enc(&wide, Some(b"0001-01-01")).unwrap();
    assert_eq!(bytes, (-719_162i32).to_le_bytes());
    assert_eq!(clamps.total(), 0);
    let (_, clamps) = enc(&wide, Some(b"0001-12-31 BC")).unwrap();
    assert_eq!(clamps.get(ClampKind::Bc), 1);
}

#[test]
fn timestamps_clamp_to_the_range_and_are_counted() {
    let first = hex(&ts(false), Some("1900-01-01 00:00:00"));
    let last = hex(&ts(false), Some("2299-12-31 23:59:59.999999"));
    for (text, want, kind) in [
        ("-infinity", &first, ClampKind::MinusInfinity),
        ("infinity", &last, ClampKind::Infinity),
        ("0044-03-15 12:00:00+00 BC", &first, ClampKind::Bc),
        (
            "1899-12-31 23:59:59.999999+00",
            &first,
            ClampKind::BeforeRange,
        ),
        ("2300-01-01 00:00:00+00", &last, ClampKind::AfterRange),
        (
            "294276-12-31 23:59:59.999999+00",
            &last,
            ClampKind::AfterRange,
        ),
    ] {
        let (bytes, clamps) = enc(&ts(true), Some(text.as_bytes())).unwrap();
        let got: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(&got, want, "{text}");
        assert_eq!(clamps.get(kind), 1, "{text}");
    }
    let (_, clamps) = enc(&ts(true), Some(b"1900-01-01 00:00:00+00")).unwrap();
    assert_eq!(clamps.total(), 0);
}

#[test]
fn key_columns_are_never_clamped_nor_null() {
    let key_date = codec(
        ValueCodec::Date(DateRange::DOCUMENTED),
        NullMode::Reject,
        true,
    );
    assert_eq!(
        err(&key_date, Some("infinity")),
        "date value infinity of a key column is outside Date32's range 1900-01-01..2299-12-31; \
         key columns are never clamped (rows would merge)"
    );
    assert!(err(&key_date, Some("0044-03-15 BC")).contains("outside Date32's range"));
    let key_ts = Codec {
        key: true,
        ..ts(true)
    };
    assert!(err(&key_ts, Some("-infinity")).contains("DateTime64(6, 'UTC')'s range"));
    assert_eq!(hex(&key_date, Some("2024-02-29")), "464D0000");
    assert_eq!(
        err(&plain(ValueCodec::Scalar(Scalar::Int64)), None),
        "NULL cannot be stored in Int64: the column is NOT NULL or part of the key"
    );
}

#[test]
fn a_failed_value_leaves_buffer_and_counts_untouched() {
    let mut out = BytesMut::from(&b"row so far"[..]);
    let mut clamps = ClampCounts::default();
    let dates = array(ValueCodec::Date(DateRange::DOCUMENTED), 1);
    encode_value(&dates, Some(b"{infinity}"), &mut out, &mut clamps).unwrap();
    let (kept, counted) = (out.clone(), clamps);
    assert_eq!(counted.get(ClampKind::Infinity), 1);
    let failed = encode_value(
        &dates,
        Some(b"{infinity,-infinity,2024-02-30}"),
        &mut out,
        &mut clamps,
    );
    assert!(failed.is_err());
    assert_eq!((out, clamps), (kept, counted));
}

#[test]
fn messages_name_the_value_and_cut_long_ones() {
    let long = "x".repeat(500);
    let msg = err(&plain(ValueCodec::Scalar(Scalar::Int32)), Some(&long));
    assert!(
        msg.starts_with(&format!(
            "malformed integer text \"{}… (500 bytes)\"",
            "x".repeat(64)
        )),
        "{msg}"
    );
    assert!(msg.len() < 200, "{msg}");
    assert_eq!(snippet(b"a\nb\xff"), "a\\nb\u{fffd}");
    assert!(err(&plain(ValueCodec::Uuid), Some("nope")).contains("malformed uuid text \"nope\""));
}

#[test]
fn leb128_matches_the_spec() {
    for (n, want) in [
        (0u64, &[0x00][..]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (300, &[0xac, 0x02]),
        (16_384, &[0x80, 0x80, 0x01]),
        (
            u64::MAX,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
    ] {
        let mut out = BytesMut::new();
        put_leb128(&mut out, n);
        assert_eq!(&out[..], want, "{n}");
    }
}

#[test]
fn date_ranges_and_clamp_labels() {
    assert_eq!(DateRange::default().to_string(), "1900-01-01..2299-12-31");
    assert_eq!(
        DateRange::YEARS_1_TO_9999.to_string(),
        "0001-01-01..9999-12-31"
    );
    assert_eq!(DateRange::years(1900, 2299), Some(DateRange::DOCUMENTED));
    assert_eq!(DateRange::years(0, 10), None);
    assert_eq!(DateRange::years(2000, 1999), None);
    let labels: Vec<&str> = ClampKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(labels.len(), 7);
    let mut a = ClampCounts::default();
    a.add(ClampKind::Bc);
    let mut b = ClampCounts::default();
    b.merge(&a);
    b.merge(&a);
    assert_eq!(
        b.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(),
        vec![(ClampKind::Bc, 2)]
    );
}
