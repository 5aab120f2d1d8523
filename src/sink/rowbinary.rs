//! The RowBinary encoder: one Postgres value, as text, in; its ClickHouse RowBinary
//! bytes appended to a `BytesMut`. Pure and server-free.
//!
//! ```text
//!  COPY … TO STDOUT (text, un-escaped) ─┐
//!                                       ├─ same text ─▶ encode_value(codec) ─▶ same bytes
//!  pgoutput 't' tuple value ────────────┘
//! ```
//!
//! Both paths hand over exactly Postgres' text output under the pinned session settings
//! (see [`crate::sink::pgtext`]), and nothing here depends on which path a value came
//! from, so the snapshot and the stream write byte-identical rows (DESIGN.md rule 4).
//!
//! **RowBinary, as ClickHouse reads it** (each checked against ClickHouse 26.9's own
//! `formatRow('RowBinary', …)` output; see the tests): `Nullable(T)` is a byte, 1 for
//! NULL, then `T` unless NULL; `String` a LEB128 length then the bytes; `Bool` one
//! byte; integers and IEEE floats little-endian; `Decimal(P, S)` the value × 10^S as
//! Int32/Int64/Int128/Int256 (P ≤ 9/18/38/76) little-endian; `UUID` two little-endian
//! UInt64, the high half (text bytes 0-7) first, so each half's bytes are reversed
//! from text order; `Date32` Int32 days since 1970-01-01; `DateTime64(6)` and
//! `Time64(6)` Int64 microseconds; `Array` a LEB128 count then the elements; `Map` a
//! LEB128 count then key, value, key, value…; `LowCardinality(T)` just `T`.
//!
//! **What cannot be stored exactly** is stored on purpose and counted in
//! [`ClampCounts`] (for a metric): dates and timestamps outside ClickHouse's range
//! (BC, ±infinity, beyond the [`DateRange`]) clamp to its ends; a NULL array or hstore
//! becomes empty (ClickHouse has no Nullable Array or Map); an array's lower bounds
//! other than 1 are dropped. A key column ([`Codec::key`]) is never altered: those
//! values are errors there. Anything else that does not fit — `NaN` in a Decimal, a
//! 2-D value in a 1-D Array column — is an [`EncodeError`] that says what to do.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod clamp;
mod codec;
mod decimal;
mod error;
mod placeholder;
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests;

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use crate::sink::pgtext::{self, ArrayDim, Numeric, PgDate, PgTimestamp, TextError};

pub use clamp::{ClampCounts, ClampKind};
pub use codec::{Codec, DateRange, NullMode, Scalar, ValueCodec};
pub use decimal::{DecimalOverflow, MAX_PRECISION};
pub use error::{snippet, EncodeError};
pub use placeholder::encode_placeholder;

/// Days since 1970-01-01 of 0001-01-01: anything earlier is BC.
const FIRST_AD_DAY: i64 = pgtext::days_from_civil(1, 1, 1);

/// Appends `n` as an unsigned LEB128 varint (RowBinary's lengths and counts).
pub fn put_leb128<B: BufMut>(out: &mut B, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// Appends a RowBinary `String`.
pub fn put_string<B: BufMut>(out: &mut B, s: &[u8]) {
    put_leb128(out, s.len() as u64);
    out.put_slice(s);
}

/// Appends one value (`None` is SQL NULL) to `out` as `codec` says. On error `out` and
/// `clamps` are left as they were.
pub fn encode_value(
    codec: &Codec,
    value: Option<&[u8]>,
    out: &mut BytesMut,
    clamps: &mut ClampCounts,
) -> Result<(), EncodeError> {
    let start = out.len();
    let before = *clamps;
    let enc = Encoder {
        key: codec.key,
        clamps,
    };
    let result = enc.top(codec, value, out);
    if result.is_err() {
        out.truncate(start);
        *clamps = before;
    }
    result
}

struct Encoder<'c> {
    key: bool,
    clamps: &'c mut ClampCounts,
}

impl Encoder<'_> {
    fn top(
        mut self,
        codec: &Codec,
        value: Option<&[u8]>,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let emptiable = matches!(codec.value, ValueCodec::Array { .. } | ValueCodec::Hstore);
        match (value, codec.nulls) {
            (None, NullMode::Nullable) => {
                out.put_u8(1);
                Ok(())
            }
            (None, NullMode::Empty) if emptiable && !self.key => {
                self.clamps.add(ClampKind::NullAsEmpty);
                put_leb128(out, 0);
                Ok(())
            }
            (None, _) => Err(EncodeError::Null {
                ch_type: codec.value.ch_type(),
            }),
            (Some(t), nulls) => {
                if nulls == NullMode::Nullable {
                    out.put_u8(0);
                }
                self.value(&codec.value, t, out)
            }
        }
    }

    fn value(
        &mut self,
        codec: &ValueCodec,
        t: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let malformed = |problem: TextError| EncodeError::Malformed {
            what: codec.what(),
            value: snippet(t),
            problem,
        };
        match codec {
            ValueCodec::Scalar(Scalar::Bool) => {
                out.put_u8(u8::from(pgtext::parse_bool(t).map_err(malformed)?))
            }
            ValueCodec::Scalar(Scalar::Int16) => {
                out.put_i16_le(pgtext::parse_int(t).map_err(malformed)?)
            }
            ValueCodec::Scalar(Scalar::Int32) => {
                out.put_i32_le(pgtext::parse_int(t).map_err(malformed)?)
            }
            ValueCodec::Scalar(Scalar::Int64) => {
                out.put_i64_le(pgtext::parse_int(t).map_err(malformed)?)
            }
            ValueCodec::Scalar(Scalar::UInt32) => {
                out.put_u32_le(pgtext::parse_int(t).map_err(malformed)?)
            }
            ValueCodec::Scalar(Scalar::Float32) => {
                out.put_f32_le(pgtext::parse_f32(t).map_err(malformed)?)
            }
            ValueCodec::Scalar(Scalar::Float64) => {
                out.put_f64_le(pgtext::parse_f64(t).map_err(malformed)?)
            }
            ValueCodec::Decimal { precision, scale } => {
                let does_not_fit = |detail: String| EncodeError::DoesNotFit {
                    what: "numeric",
                    value: snippet(t),
                    ch_type: codec.ch_type(),
                    detail,
                };
                match pgtext::parse_numeric(t).map_err(malformed)? {
                    Numeric::Finite(d) => decimal::put_decimal(&d, *precision, *scale, out)
                        .map_err(|e| does_not_fit(format!("{e}; map the column to String")))?,
                    _ => return Err(does_not_fit("map the column to String".into())),
                }
            }
            ValueCodec::Text => put_string(out, t),
            ValueCodec::Bytea => {
                let len = pgtext::bytea_len(t).map_err(malformed)?;
                put_leb128(out, len as u64);
                pgtext::decode_bytea_into(t, out).map_err(malformed)?;
            }
            ValueCodec::Uuid => {
                let b = pgtext::parse_uuid(t).map_err(malformed)?;
                let (high, low) = b.split_at(8);
                for half in [high, low] {
                    for byte in half.iter().rev() {
                        out.put_u8(*byte);
                    }
                }
            }
            ValueCodec::Date(range) => {
                let date = pgtext::parse_date(t).map_err(malformed)?;
                let days = self.date(date, range, codec, t)?;
                out.put_i32_le(days);
            }
            ValueCodec::DateTime64 {
                range,
                with_offset,
                precision,
            } => {
                let ts = pgtext::parse_timestamp(t, *with_offset).map_err(malformed)?;
                let micros = self.timestamp(ts, range, codec, t)?;
                let per_unit = placeholder::sub_second_divisor(*precision);
                let exact = matches!(ts, PgTimestamp::Micros(m) if m == i128::from(micros));
                if exact && micros % per_unit != 0 {
                    return Err(EncodeError::DoesNotFit {
                        what: "timestamp",
                        value: snippet(t),
                        ch_type: codec.ch_type(),
                        detail: format!(
                            "it has more than {precision} digits after the second (storing it would truncate); map the column to DateTime64(6)"
                        ),
                    });
                }
                // Clamped values (counted) are lossy already: they go to the unit below.
                out.put_i64_le(micros.div_euclid(per_unit));
            }
            ValueCodec::Time64 => out.put_i64_le(pgtext::parse_time(t).map_err(malformed)?),
            ValueCodec::Array {
                element,
                dims,
                delimiter,
            } => self.array(element, (*dims).max(1), *delimiter, codec, t, out)?,
            ValueCodec::Hstore => {
                let pairs = pgtext::parse_hstore(t).map_err(malformed)?;
                put_leb128(out, pairs.len() as u64);
                for (key, value) in &pairs {
                    put_string(out, key);
                    match value {
                        None => out.put_u8(1),
                        Some(v) => {
                            out.put_u8(0);
                            put_string(out, v);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts a clamp, or refuses it for a key column.
    fn clamp(
        &mut self,
        kind: ClampKind,
        range: &DateRange,
        codec: &ValueCodec,
        t: &[u8],
    ) -> Result<(), EncodeError> {
        if self.key {
            return Err(EncodeError::KeyClamp {
                what: codec.what(),
                value: snippet(t),
                ch_type: codec.ch_type(),
                range: *range,
            });
        }
        self.clamps.add(kind);
        Ok(())
    }

    fn date(
        &mut self,
        date: PgDate,
        range: &DateRange,
        codec: &ValueCodec,
        t: &[u8],
    ) -> Result<i32, EncodeError> {
        let (first, last) = (i64::from(range.first_day), i64::from(range.last_day));
        let (kind, days) = match date {
            PgDate::NegInfinity => (ClampKind::MinusInfinity, first),
            PgDate::Infinity => (ClampKind::Infinity, last),
            PgDate::Days(d) if d < FIRST_AD_DAY && d < first => (ClampKind::Bc, first),
            PgDate::Days(d) if d < first => (ClampKind::BeforeRange, first),
            PgDate::Days(d) if d > last => (ClampKind::AfterRange, last),
            PgDate::Days(d) => return Ok(clamp_i32(d)),
        };
        self.clamp(kind, range, codec, t)?;
        Ok(clamp_i32(days))
    }

    fn timestamp(
        &mut self,
        ts: PgTimestamp,
        range: &DateRange,
        codec: &ValueCodec,
        t: &[u8],
    ) -> Result<i64, EncodeError> {
        let (first, last) = range.micros();
        let first_ad = i128::from(FIRST_AD_DAY) * i128::from(pgtext::MICROS_PER_DAY);
        let (kind, micros) = match ts {
            PgTimestamp::NegInfinity => (ClampKind::MinusInfinity, first),
            PgTimestamp::Infinity => (ClampKind::Infinity, last),
            PgTimestamp::Micros(m) if m < first_ad && m < first => (ClampKind::Bc, first),
            PgTimestamp::Micros(m) if m < first => (ClampKind::BeforeRange, first),
            PgTimestamp::Micros(m) if m > last => (ClampKind::AfterRange, last),
            PgTimestamp::Micros(m) => return Ok(clamp_i64(m)),
        };
        self.clamp(kind, range, codec, t)?;
        Ok(clamp_i64(micros))
    }

    fn array(
        &mut self,
        element: &ValueCodec,
        dims: u32,
        delimiter: u8,
        codec: &ValueCodec,
        t: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let array =
            pgtext::parse_array(t, delimiter).map_err(|problem| EncodeError::Malformed {
                what: "array",
                value: snippet(t),
                problem,
            })?;
        if array.dims.is_empty() {
            put_leb128(out, 0);
            return Ok(());
        }
        if array.dims.len() != dims as usize {
            return Err(EncodeError::DoesNotFit {
                what: "array",
                value: snippet(t),
                ch_type: codec.ch_type(),
                detail: format!(
                    "it has {} dimensions, the column {dims} (Postgres does not enforce an array column's \
                     declared dimensions); map the column to String",
                    array.dims.len()
                ),
            });
        }
        if !array.default_bounds() {
            if self.key {
                return Err(EncodeError::KeyArrayBounds { value: snippet(t) });
            }
            self.clamps.add(ClampKind::ArrayBoundsDropped);
        }
        self.level(element, &array.dims, &array.elements, out)
    }

    /// One level of a (nested) array: its length, then its sub-arrays or elements.
    fn level(
        &mut self,
        element: &ValueCodec,
        dims: &[ArrayDim],
        elements: &[Option<Cow<'_, [u8]>>],
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let Some((dim, inner)) = dims.split_first() else {
            return Ok(());
        };
        put_leb128(out, dim.len as u64);
        if inner.is_empty() {
            for e in elements {
                match e {
                    None => out.put_u8(1),
                    Some(v) => {
                        out.put_u8(0);
                        self.value(element, v, out)?;
                    }
                }
            }
            return Ok(());
        }
        let stride: usize = inner.iter().map(|d| d.len).product();
        if stride == 0 {
            return Ok(());
        }
        for sub in elements.chunks_exact(stride) {
            self.level(element, inner, sub, out)?;
        }
        Ok(())
    }
}

fn clamp_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}
