//! Parsers against the text Postgres 18 printed for these values under pgch's session
//! settings (checked with psql), edge cases, and properties: no input panics; what
//! `int8out`, `byteaout` and `array_out` print parses back to the value.

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

fn days(y: i64, m: u32, d: u32) -> PgDate {
    PgDate::Days(days_from_civil(y, m, d))
}

fn micros(y: i64, m: u32, d: u32, h: i64, min: i64, s: i64, us: i64) -> PgTimestamp {
    let day = i128::from(days_from_civil(y, m, d));
    PgTimestamp::Micros(
        day * i128::from(MICROS_PER_DAY) + i128::from(((h * 60 + min) * 60 + s) * 1_000_000 + us),
    )
}

fn b(s: &str) -> Cow<'_, [u8]> {
    Cow::Borrowed(s.as_bytes())
}

#[test]
fn bools_are_t_and_f_only() {
    assert_eq!(parse_bool(b"t"), Ok(true));
    assert_eq!(parse_bool(b"f"), Ok(false));
    for bad in [&b"true"[..], b"T", b"", b"1"] {
        assert!(parse_bool(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn integers_keep_their_extremes_and_refuse_overflow() {
    assert_eq!(parse_int::<i16>(b"-32768"), Ok(i16::MIN));
    assert_eq!(parse_int::<i16>(b"32767"), Ok(i16::MAX));
    assert!(parse_int::<i16>(b"32768").is_err());
    assert_eq!(parse_int::<i32>(b"-2147483648"), Ok(i32::MIN));
    assert_eq!(parse_int::<i64>(b"-9223372036854775808"), Ok(i64::MIN));
    assert_eq!(parse_int::<i64>(b"9223372036854775807"), Ok(i64::MAX));
    assert!(parse_int::<i64>(b"9223372036854775808").is_err());
    assert_eq!(parse_int::<u32>(b"4294967295"), Ok(u32::MAX));
    assert!(parse_int::<u32>(b"-1").is_err());
    for bad in [&b""[..], b" 1", b"1 ", b"1.0", b"0x10", b"\xff"] {
        assert!(parse_int::<i32>(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn floats_keep_nan_infinities_negative_zero_and_every_bit() {
    assert!(parse_f64(b"NaN").unwrap().is_nan());
    assert!(parse_f32(b"NaN").unwrap().is_nan());
    assert_eq!(parse_f64(b"Infinity"), Ok(f64::INFINITY));
    assert_eq!(parse_f32(b"-Infinity"), Ok(f32::NEG_INFINITY));
    assert_eq!(parse_f64(b"-0").unwrap().to_bits(), (-0.0f64).to_bits());
    // extra_float_digits=3 on Postgres 12+: the shortest text that reads back exactly.
    assert_eq!(parse_f64(b"1e+300"), Ok(1e300));
    assert_eq!(parse_f64(b"5e-324"), Ok(f64::from_bits(1)));
    assert_eq!(
        parse_f64(b"1.2345678901234568e+17"),
        Ok(123456789012345678.0)
    );
    assert_eq!(parse_f32(b"1e-45"), Ok(f32::from_bits(1)));
    assert_eq!(parse_f32(b"3.4028235e+38"), Ok(f32::MAX));
    assert_eq!(parse_f32(b"1.1754944e-38"), Ok(f32::MIN_POSITIVE));
    assert_eq!(parse_f64(b"0.1"), Ok(0.1));
    for bad in [&b"inf"[..], b"nan", b"infinity", b"", b"1,5", b" 1", b"e"] {
        assert!(parse_f64(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn numerics_keep_every_digit() {
    let Numeric::Finite(d) = parse_numeric(b"-1234.500").unwrap() else {
        panic!("finite");
    };
    assert!(d.negative);
    assert_eq!(d.int_digits, b"1234");
    assert_eq!(d.frac_digits, b"500");
    assert_eq!(parse_numeric(b"NaN"), Ok(Numeric::NaN));
    assert_eq!(parse_numeric(b"Infinity"), Ok(Numeric::Infinity));
    assert_eq!(parse_numeric(b"-Infinity"), Ok(Numeric::NegInfinity));
    let hundred = "1".repeat(100);
    let Numeric::Finite(d) = parse_numeric(hundred.as_bytes()).unwrap() else {
        panic!("finite");
    };
    assert_eq!(d.int_digits.len(), 100);
    for bad in [
        &b""[..],
        b"-",
        b".",
        b"1e5",
        b"1.2.3",
        b"--1",
        b"nan",
        b" 1",
    ] {
        assert!(parse_numeric(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn dates_cover_bc_infinities_and_five_digit_years() {
    assert_eq!(parse_date(b"1970-01-01"), Ok(PgDate::Days(0)));
    assert_eq!(parse_date(b"2024-02-29"), Ok(PgDate::Days(19782)));
    assert_eq!(parse_date(b"1900-01-01"), Ok(PgDate::Days(-25567)));
    assert_eq!(parse_date(b"infinity"), Ok(PgDate::Infinity));
    assert_eq!(parse_date(b"-infinity"), Ok(PgDate::NegInfinity));
    // 1 BC is year 0 and a leap year; 4713 BC is Postgres' first year.
    assert_eq!(parse_date(b"0001-12-31 BC"), Ok(days(0, 12, 31)));
    assert_eq!(parse_date(b"0001-02-29 BC"), Ok(days(0, 2, 29)));
    assert_eq!(parse_date(b"4713-01-01 BC"), Ok(days(-4712, 1, 1)));
    assert_eq!(parse_date(b"5874897-12-31"), Ok(days(5_874_897, 12, 31)));
    assert_eq!(parse_date(b"10000-01-01"), Ok(days(10000, 1, 1)));
    for bad in [
        &b"2023-02-29"[..],
        b"1900-02-29",
        b"2024-13-01",
        b"2024-00-10",
        b"2024-04-31",
        b"0000-01-01",
        b"2024-1-01",
        b"2024-01-01 AD",
        b"2024-01-01 ",
        b"Infinity",
        b"",
    ] {
        assert!(parse_date(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn civil_days_round_trip_and_print_like_postgres() {
    for d in (-2_500_000i64..3_000_000).step_by(997) {
        let (y, m, day) = civil_from_days(d);
        assert_eq!(days_from_civil(y, m, day), d);
    }
    assert_eq!(format_date(0), "1970-01-01");
    assert_eq!(format_date(days_from_civil(-43, 3, 15)), "0044-03-15 BC");
    assert_eq!(format_date(days_from_civil(12345, 6, 7)), "12345-06-07");
}

#[test]
fn timestamps_apply_offsets_microseconds_and_bc() {
    assert_eq!(
        parse_timestamp(b"2020-01-01 12:34:56.123456", false),
        Ok(micros(2020, 1, 1, 12, 34, 56, 123_456))
    );
    assert_eq!(
        parse_timestamp(b"2020-01-01 12:34:56.5", false),
        Ok(micros(2020, 1, 1, 12, 34, 56, 500_000))
    );
    assert_eq!(
        parse_timestamp(b"1969-12-31 23:59:59.999999+00", true),
        Ok(PgTimestamp::Micros(-1))
    );
    // What Postgres prints for '2020-01-01 00:00:00.000001+05:30' with TimeZone=UTC,
    // and the same instant with its offset.
    assert_eq!(
        parse_timestamp(b"2019-12-31 18:30:00.000001+00", true),
        parse_timestamp(b"2020-01-01 00:00:00.000001+05:30", true)
    );
    assert_eq!(
        parse_timestamp(b"2020-01-01 00:00:00-08", true),
        Ok(micros(2020, 1, 1, 8, 0, 0, 0))
    );
    // Local mean time offsets have seconds (Europe/Paris before 1911).
    assert_eq!(
        parse_timestamp(b"1800-01-01 00:00:00+00:09:21", true),
        Ok(micros(1799, 12, 31, 23, 50, 39, 0))
    );
    assert_eq!(
        parse_timestamp(b"0044-03-15 12:00:00.5+00 BC", true),
        Ok(micros(-43, 3, 15, 12, 0, 0, 500_000))
    );
    assert_eq!(
        parse_timestamp(b"294276-12-31 23:59:59.999999", false),
        Ok(micros(294_276, 12, 31, 23, 59, 59, 999_999))
    );
    assert_eq!(
        parse_timestamp(b"infinity", true),
        Ok(PgTimestamp::Infinity)
    );
    assert_eq!(
        parse_timestamp(b"-infinity", false),
        Ok(PgTimestamp::NegInfinity)
    );
    for (bad, tz) in [
        (&b"2020-01-01 12:00:00+00"[..], false),
        (b"2020-01-01 12:00:00", true),
        (b"2020-01-01T12:00:00", false),
        (b"2020-01-01 24:00:00", false),
        (b"2020-01-01 12:60:00", false),
        (b"2020-01-01 12:00:00.1234567", false),
        (b"2020-01-01 12:00:00.", false),
        (b"2020-01-01 12:00", false),
        (b"2020-01-01 12:00:00+1", true),
        (b"2020-01-01 12:00:00 BC+00", true),
    ] {
        assert!(
            parse_timestamp(bad, tz).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn times_reach_24_00_00_and_no_further() {
    assert_eq!(parse_time(b"00:00:00"), Ok(0));
    assert_eq!(parse_time(b"12:00:00.12"), Ok(43_200_120_000));
    assert_eq!(parse_time(b"23:59:59.999999"), Ok(MICROS_PER_DAY - 1));
    assert_eq!(parse_time(b"24:00:00"), Ok(MICROS_PER_DAY));
    for bad in [
        &b"24:00:00.000001"[..],
        b"24:00:01",
        b"25:00:00",
        b"12:00",
        b"12:00:00+00",
    ] {
        assert!(parse_time(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn uuids_are_their_bytes_in_text_order() {
    assert_eq!(
        parse_uuid(b"61f0c404-5cb3-11e7-907b-a6006ad3dba0"),
        Ok([
            0x61, 0xf0, 0xc4, 0x04, 0x5c, 0xb3, 0x11, 0xe7, 0x90, 0x7b, 0xa6, 0x00, 0x6a, 0xd3,
            0xdb, 0xa0
        ])
    );
    assert_eq!(
        parse_uuid(b"61F0C404-5CB3-11E7-907B-A6006AD3DBA0"),
        parse_uuid(b"61f0c404-5cb3-11e7-907b-a6006ad3dba0")
    );
    for bad in [
        &b"61f0c4045cb311e7907ba6006ad3dba0"[..],
        b"61f0c404-5cb3-11e7-907b-a6006ad3dbag",
        b"61f0c404x5cb3-11e7-907b-a6006ad3dba0",
        b"{61f0c404-5cb3-11e7-907b-a6006ad3dba0}",
    ] {
        assert!(parse_uuid(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn bytea_hex_and_escape_formats_decode_every_byte() {
    let all: Vec<u8> = (0..=255).collect();
    let hex: String = std::iter::once("\\x".to_string())
        .chain(all.iter().map(|b| format!("{b:02x}")))
        .collect();
    assert_eq!(decode_bytea(hex.as_bytes()), Ok(all.clone()));
    assert_eq!(bytea_len(hex.as_bytes()), Ok(256));
    assert_eq!(decode_bytea(b"\\x"), Ok(vec![]));
    assert_eq!(decode_bytea(b"\\x00FF"), Ok(vec![0, 255]));
    // bytea_output=escape, should a session ever use it.
    assert_eq!(
        decode_bytea(b"a\\\\b\\000\\377"),
        Ok(b"a\\b\x00\xff".to_vec())
    );
    assert_eq!(bytea_len(b"a\\\\b\\000\\377"), Ok(5));
    for bad in [&b"\\x0"[..], b"\\x0g", b"\\xzz", b"\\", b"\\400", b"\\12"] {
        assert!(
            decode_bytea(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn arrays_unquote_unescape_and_tell_null_from_the_string_null() {
    // Postgres 18: select '{1,NULL,"NULL",""," x ","a\"b","c\\d","{}","a,b",NULL,"NuLL"}'::text[]
    let a = parse_array(
        br#"{1,NULL,"NULL",""," x ","a\"b","c\\d","{}","a,b",NULL,"NuLL"}"#,
        b',',
    )
    .unwrap();
    assert_eq!(a.dims, vec![ArrayDim { lower: 1, len: 11 }]);
    assert_eq!(
        a.elements,
        vec![
            Some(b("1")),
            None,
            Some(b("NULL")),
            Some(b("")),
            Some(b(" x ")),
            Some(b("a\"b")),
            Some(b("c\\d")),
            Some(b("{}")),
            Some(b("a,b")),
            None,
            Some(b("NuLL")),
        ]
    );
    // Quoted text without escapes is borrowed, not copied.
    assert!(matches!(a.elements[2], Some(Cow::Borrowed(_))));
    let lower_null = parse_array(b"{null,Null}", b',').unwrap();
    assert_eq!(lower_null.elements, vec![None, None]);
}

#[test]
fn arrays_keep_their_shape_bounds_and_emptiness() {
    let empty = parse_array(b"{}", b',').unwrap();
    assert!(empty.dims.is_empty() && empty.elements.is_empty());
    let m = parse_array(b"[0:1][2:3]={{1,2},{3,4}}", b',').unwrap();
    assert_eq!(
        m.dims,
        vec![ArrayDim { lower: 0, len: 2 }, ArrayDim { lower: 2, len: 2 }]
    );
    assert!(!m.default_bounds());
    assert_eq!(m.elements.len(), 4);
    let deep = parse_array(b"{{{1}}}", b',').unwrap();
    assert_eq!(deep.dims.len(), 3);
    assert!(deep.default_bounds());
    let neg = parse_array(b"[-2:-1]={a,b}", b',').unwrap();
    assert_eq!(neg.dims, vec![ArrayDim { lower: -2, len: 2 }]);
    // Lenient about the white space array_in allows; inner spaces are kept.
    let ws = parse_array(b" { \"x\" , y z , w\\ } ", b',').unwrap();
    assert_eq!(
        ws.elements,
        vec![Some(b("x")), Some(b("y z")), Some(b("w "))]
    );
    let escaped = parse_array(br"{a\\b,\NULL,a \{b}", b',').unwrap();
    assert_eq!(
        escaped.elements,
        vec![Some(b("a\\b")), Some(b("NULL")), Some(b("a {b"))]
    );
}

#[test]
fn box_arrays_split_on_semicolons() {
    // Postgres 18: select ARRAY['(1,1),(0,0)'::box, '(2,2),(1,1)'::box, NULL]
    let a = parse_array(b"{(1,1),(0,0);(2,2),(1,1);NULL}", b';').unwrap();
    assert_eq!(
        a.elements,
        vec![Some(b("(1,1),(0,0)")), Some(b("(2,2),(1,1)")), None]
    );
}

#[test]
fn malformed_arrays_are_errors() {
    for bad in [
        &b""[..],
        b"1,2",
        b"{1,2",
        b"{1,,2}",
        b"{1,}",
        b"{,1}",
        b"{{1,2},{3}}",
        b"{{1},2}",
        b"{1,{2}}",
        b"{{}}",
        b"{1} x",
        b"{\"a}",
        b"{a\"b}",
        b"{{{{{{{1}}}}}}}",
        b"[1:3]={1,2}",
        b"[1:2]{1,2}",
        b"[2:1]={}",
        b"{1}}",
        b"{a\\}",
    ] {
        assert!(
            parse_array(bad, b',').is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let six = parse_array(b"{{{{{{1}}}}}}", b',').unwrap();
    assert_eq!(six.dims.len(), 6);
}

#[test]
fn hstores_unquote_unescape_and_keep_null_values() {
    // Postgres 18: select hstore('a"b', 'c\d'), 'a=>1, b=>NULL, "c d"=>"NULL", ""=>""'::hstore
    assert_eq!(
        parse_hstore(br#""a\"b"=>"c\\d""#).unwrap(),
        vec![(b("a\"b"), Some(b("c\\d")))]
    );
    assert_eq!(
        parse_hstore(br#"""=>"", "a"=>"1", "b"=>NULL, "c d"=>"NULL""#).unwrap(),
        vec![
            (b(""), Some(b(""))),
            (b("a"), Some(b("1"))),
            (b("b"), None),
            (b("c d"), Some(b("NULL"))),
        ]
    );
    assert_eq!(parse_hstore(b"").unwrap(), vec![]);
    assert_eq!(
        parse_hstore(b"a=>b, x => null,\\NULL=>\\NULL").unwrap(),
        vec![
            (b("a"), Some(b("b"))),
            (b("x"), None),
            (b("NULL"), Some(b("NULL"))),
        ]
    );
    for bad in [
        &b"\"a\""[..],
        b"\"a\"=>",
        b"\"a\"=\"b\"",
        b"\"a\"=>\"b",
        b"\"a\"=>\"b\" \"c\"=>\"d\"",
        b"a=>b\\",
    ] {
        assert!(
            parse_hstore(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// What `array_out` prints for a one-dimensional text array.
fn array_out(elements: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match e {
            None => out.extend_from_slice(b"NULL"),
            Some(v) => {
                let quote = v.is_empty()
                    || v.eq_ignore_ascii_case(b"NULL")
                    || v.iter().any(|c| {
                        matches!(
                            c,
                            b'{' | b'}'
                                | b','
                                | b'"'
                                | b'\\'
                                | b' '
                                | b'\t'
                                | b'\n'
                                | b'\r'
                                | 0x0b
                                | 0x0c
                        )
                    });
                if quote {
                    out.push(b'"');
                }
                for &c in v {
                    if quote && (c == b'"' || c == b'\\') {
                        out.push(b'\\');
                    }
                    out.push(c);
                }
                if quote {
                    out.push(b'"');
                }
            }
        }
    }
    out.push(b'}');
    out
}

proptest! {
    #[test]
    fn any_i64_text_round_trips(v in any::<i64>()) {
        prop_assert_eq!(parse_int::<i64>(v.to_string().as_bytes()), Ok(v));
    }

    #[test]
    fn any_f64_printed_shortest_round_trips(bits in any::<u64>()) {
        let v = f64::from_bits(bits);
        prop_assume!(v.is_finite());
        let text = format!("{v:e}");
        prop_assert_eq!(parse_f64(text.as_bytes()).map(f64::to_bits), Ok(bits));
    }

    #[test]
    fn any_bytes_as_bytea_hex_round_trip(v in proptest::collection::vec(any::<u8>(), 0..300)) {
        let hex: String = std::iter::once("\\x".to_string())
            .chain(v.iter().map(|b| format!("{b:02x}")))
            .collect();
        prop_assert_eq!(decode_bytea(hex.as_bytes()), Ok(v));
    }

    #[test]
    fn any_text_array_as_printed_round_trips(
        elements in proptest::collection::vec(
            proptest::option::of(proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(b','), Just(b' '), Just(b'{'), Just(b'N'), any::<u8>()],
                0..6,
            )),
            1..8,
        )
    ) {
        let text = array_out(&elements);
        let parsed = parse_array(&text, b',').unwrap();
        let got: Vec<Option<Vec<u8>>> =
            parsed.elements.iter().map(|e| e.as_ref().map(|c| c.to_vec())).collect();
        prop_assert_eq!(got, elements);
    }

    #[test]
    fn any_date_printed_round_trips(d in -2_451_545i64..2_145_000_000) {
        prop_assert_eq!(parse_date(format_date(d).as_bytes()), Ok(PgDate::Days(d)));
    }

    #[test]
    fn no_input_panics_any_parser(t in proptest::collection::vec(
        prop_oneof![
            Just(b'{'), Just(b'}'), Just(b'"'), Just(b'\\'), Just(b','), Just(b'['), Just(b']'),
            Just(b':'), Just(b'='), Just(b'>'), Just(b'-'), Just(b' '), Just(b'.'), Just(b'+'),
            b'0'..=b'9', any::<u8>()
        ],
        0..40,
    )) {
        let _ = parse_bool(&t);
        let _ = parse_int::<i64>(&t);
        let _ = parse_f32(&t);
        let _ = parse_f64(&t);
        let _ = parse_numeric(&t);
        let _ = parse_date(&t);
        let _ = parse_timestamp(&t, true);
        let _ = parse_timestamp(&t, false);
        let _ = parse_time(&t);
        let _ = parse_uuid(&t);
        let _ = bytea_len(&t);
        let _ = decode_bytea(&t);
        let _ = parse_array(&t, b',');
        let _ = parse_array(&t, b';');
        let _ = parse_hstore(&t);
    }
}
