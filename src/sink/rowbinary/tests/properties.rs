//! Properties of the encoder: no input panics and a failed value writes nothing;
//! integers, decimals (up to 76 digits) and bytea keep their exact values.

use bytes::BytesMut;
use proptest::prelude::*;

use super::{array, codec, dec, enc, plain};
use crate::sink::rowbinary::*;

/// A little-endian two's complement integer as decimal text (test reference).
fn le_to_decimal(bytes: &[u8]) -> String {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        let mut carry = true;
        for b in mag.iter_mut() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut().rev() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap()
}

/// (negative, integer digits, fraction digits, precision): a value of
/// `Decimal(precision, fraction digits)` as Postgres prints it, up to 76 digits.
fn decimal_case() -> impl Strategy<Value = (bool, String, String, u8)> {
    (1u8..=76)
        .prop_flat_map(|p| (Just(p), 0..=p))
        .prop_flat_map(|(p, s)| {
            let int = proptest::string::string_regex(&format!("[0-9]{{0,{}}}", p - s)).unwrap();
            let frac = proptest::string::string_regex(&format!("[0-9]{{{s}}}")).unwrap();
            (any::<bool>(), int, frac, Just(p))
        })
}

fn every_codec() -> Vec<Codec> {
    let range = DateRange::DOCUMENTED;
    let scalars = vec![
        ValueCodec::Scalar(Scalar::Bool),
        ValueCodec::Scalar(Scalar::Int16),
        ValueCodec::Scalar(Scalar::Int32),
        ValueCodec::Scalar(Scalar::Int64),
        ValueCodec::Scalar(Scalar::UInt32),
        ValueCodec::Scalar(Scalar::Float32),
        ValueCodec::Scalar(Scalar::Float64),
        ValueCodec::Decimal {
            precision: 9,
            scale: 2,
        },
        ValueCodec::Decimal {
            precision: 38,
            scale: 0,
        },
        ValueCodec::Decimal {
            precision: 76,
            scale: 38,
        },
        ValueCodec::Text,
        ValueCodec::Bytea,
        ValueCodec::Uuid,
        ValueCodec::Date(range),
        ValueCodec::DateTime64 {
            range,
            with_offset: true,
            precision: 6,
        },
        ValueCodec::DateTime64 {
            range,
            with_offset: false,
            precision: 6,
        },
        ValueCodec::Time64,
        ValueCodec::Hstore,
    ];
    let mut all: Vec<Codec> = scalars.iter().cloned().map(plain).collect();
    all.extend(
        scalars
            .iter()
            .cloned()
            .map(|v| codec(v, NullMode::Nullable, true)),
    );
    all.extend(
        scalars
            .into_iter()
            .flat_map(|v| [array(v.clone(), 1), array(v, 2)]),
    );
    all
}

proptest! {
    #[test]
    fn any_i64_encodes_little_endian(v in any::<i64>()) {
        let (bytes, _) = enc(&plain(ValueCodec::Scalar(Scalar::Int64)), Some(v.to_string().as_bytes())).unwrap();
        prop_assert_eq!(bytes, v.to_le_bytes().to_vec());
    }

    #[test]
    fn any_decimal_keeps_its_exact_value((negative, int, frac, precision) in decimal_case()) {
        let scale = frac.len() as u8;
        let text = if int.is_empty() && frac.is_empty() {
            "0".to_string()
        } else {
            format!("{}{int}.{frac}", if negative { "-" } else { "" })
        };
        let (bytes, _) = enc(&dec(precision, scale), Some(text.as_bytes())).unwrap();
        let width = match precision { 0..=9 => 4, 10..=18 => 8, 19..=38 => 16, _ => 32 };
        prop_assert_eq!(bytes.len(), width);
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        let want = match (digits.is_empty(), negative) {
            (true, _) => "0".to_string(),
            (false, true) => format!("-{digits}"),
            (false, false) => digits.to_string(),
        };
        prop_assert_eq!(le_to_decimal(&bytes), want);
    }

    #[test]
    fn any_bytes_as_bytea_are_stored_raw(v in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text: String = std::iter::once("\\x".to_string())
            .chain(v.iter().map(|b| format!("{b:02x}")))
            .collect();
        let (bytes, _) = enc(&plain(ValueCodec::Bytea), Some(text.as_bytes())).unwrap();
        let mut want = BytesMut::new();
        put_string(&mut want, &v);
        prop_assert_eq!(bytes, want.to_vec());
    }

    #[test]
    fn no_input_panics_and_failures_write_nothing(t in proptest::collection::vec(
        prop_oneof![
            Just(b'{'), Just(b'}'), Just(b'"'), Just(b'\\'), Just(b','), Just(b'-'), Just(b':'),
            Just(b' '), Just(b'.'), Just(b'='), Just(b'>'), b'0'..=b'9', any::<u8>()
        ],
        0..48,
    )) {
        for c in every_codec() {
            let mut out = BytesMut::from(&b"prefix"[..]);
            let mut clamps = ClampCounts::default();
            if encode_value(&c, Some(&t), &mut out, &mut clamps).is_err() {
                prop_assert_eq!(&out[..], b"prefix");
                prop_assert_eq!(clamps, ClampCounts::default());
            }
        }
    }
}
