//! Parsers of PostgreSQL's text output, as pgch receives it from both paths: `COPY …
//! TO STDOUT` in text format (once COPY's own backslash escaping is undone) and
//! pgoutput's text tuple values. Both carry exactly what the type's output function
//! prints under the session settings pgch pins on every connection (DESIGN.md rule 4):
//!
//! ```text
//! DateStyle=ISO  IntervalStyle=postgres  TimeZone=UTC  extra_float_digits=3  bytea_output=hex
//! ```
//!
//! so one parser serves both paths and the snapshot and the stream encode the same
//! value to the same bytes.
//!
//! The parsers are exact: no value goes through a float unless it is a float, numbers
//! keep every digit ([`DecimalText`] hands back the digit strings), dates and times are
//! plain integer arithmetic on the proleptic Gregorian calendar Postgres uses (year 0 is
//! 1 BC). They accept what the output functions print and a little more where it costs
//! nothing (an offset with seconds, `bytea` in the escape format, whitespace inside
//! arrays), and reject everything else with a [`TextError`] naming the problem and its
//! byte offset — never a panic, whatever the input.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod array;
mod hstore;
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests;

use std::str::FromStr;

use bytes::BufMut;

pub use array::{parse_array, ArrayDim, PgArray};
pub use hstore::{parse_hstore, HstorePair};

/// Why a text value could not be parsed, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset}")]
pub struct TextError {
    /// What was wrong.
    pub reason: &'static str,
    /// Byte offset into the value's text.
    pub offset: usize,
}

pub(crate) fn err<T>(reason: &'static str, offset: usize) -> Result<T, TextError> {
    Err(TextError { reason, offset })
}

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;
const MICROS_PER_SECOND: i64 = 1_000_000;

/// `bool`: `t` or `f`.
pub fn parse_bool(t: &[u8]) -> Result<bool, TextError> {
    match t {
        b"t" => Ok(true),
        b"f" => Ok(false),
        _ => err("expected t or f", 0),
    }
}

/// `int2`, `int4`, `int8`, `oid`, `xid`: a decimal integer of the width asked for.
pub fn parse_int<T: FromStr>(t: &[u8]) -> Result<T, TextError> {
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse::<T>().ok())
        .ok_or(TextError {
            reason: "not an integer of this width",
            offset: 0,
        })
}

/// `float8`, including `NaN`, `Infinity`, `-Infinity` and exponent forms (`1e+300`).
pub fn parse_f64(t: &[u8]) -> Result<f64, TextError> {
    parse_float(t, f64::NAN, f64::INFINITY, f64::NEG_INFINITY)
}

/// `float4`, parsed straight to `f32` (never through `f64`: no double rounding).
pub fn parse_f32(t: &[u8]) -> Result<f32, TextError> {
    parse_float(t, f32::NAN, f32::INFINITY, f32::NEG_INFINITY)
}

fn parse_float<F: FromStr>(t: &[u8], nan: F, inf: F, neg_inf: F) -> Result<F, TextError> {
    match t {
        b"NaN" => return Ok(nan),
        b"Infinity" => return Ok(inf),
        b"-Infinity" => return Ok(neg_inf),
        _ => {}
    }
    // Rust's parser also takes `inf` and `nan`; Postgres prints neither.
    if let Some(i) = t
        .iter()
        .position(|b| !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return err("unexpected character in a float", i);
    }
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse::<F>().ok())
        .ok_or(TextError {
            reason: "not a float",
            offset: 0,
        })
}

/// A `numeric` value as printed: Postgres never uses an exponent for `numeric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numeric<'a> {
    NaN,
    Infinity,
    NegInfinity,
    Finite(DecimalText<'a>),
}

/// The digits of a finite `numeric`, exactly as printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecimalText<'a> {
    pub negative: bool,
    /// ASCII digits before the point (may be empty or have leading zeros).
    pub int_digits: &'a [u8],
    /// ASCII digits after the point (may be empty).
    pub frac_digits: &'a [u8],
}

/// `numeric`: `-12.340`, `0`, `NaN`, `Infinity`, `-Infinity`.
pub fn parse_numeric(t: &[u8]) -> Result<Numeric<'_>, TextError> {
    match t {
        b"NaN" => return Ok(Numeric::NaN),
        b"Infinity" => return Ok(Numeric::Infinity),
        b"-Infinity" => return Ok(Numeric::NegInfinity),
        _ => {}
    }
    let (negative, body, skip) = match t.split_first() {
        Some((b'-', rest)) => (true, rest, 1),
        Some((b'+', rest)) => (false, rest, 1),
        _ => (false, t, 0),
    };
    let (int_digits, frac_digits) = match body.iter().position(|&b| b == b'.') {
        Some(dot) => (
            body.get(..dot).unwrap_or_default(),
            body.get(dot.saturating_add(1)..).unwrap_or_default(),
        ),
        None => (body, &[][..]),
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return err("no digits in a numeric", skip);
    }
    if let Some(i) = int_digits.iter().position(|b| !b.is_ascii_digit()) {
        return err("unexpected character in a numeric", skip.saturating_add(i));
    }
    if let Some(i) = frac_digits.iter().position(|b| !b.is_ascii_digit()) {
        let at = skip
            .saturating_add(int_digits.len())
            .saturating_add(1)
            .saturating_add(i);
        return err("unexpected character in a numeric", at);
    }
    Ok(Numeric::Finite(DecimalText {
        negative,
        int_digits,
        frac_digits,
    }))
}

/// A `date`: days since 1970-01-01 on the proleptic Gregorian calendar, or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgDate {
    NegInfinity,
    Days(i64),
    Infinity,
}

/// A `timestamp` or `timestamptz`: microseconds since 1970-01-01 00:00:00 UTC (`i128`:
/// Postgres' range, 4713 BC to 294276 AD, slightly exceeds `i64` from the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTimestamp {
    NegInfinity,
    Micros(i128),
    Infinity,
}

/// `date` in ISO style: `2024-02-29`, `0044-03-15 BC`, `10000-01-01`, `±infinity`.
pub fn parse_date(t: &[u8]) -> Result<PgDate, TextError> {
    match t {
        b"infinity" => return Ok(PgDate::Infinity),
        b"-infinity" => return Ok(PgDate::NegInfinity),
        _ => {}
    }
    let mut c = Cursor::new(t);
    let (year, month, day) = c.ymd()?;
    let bc = c.bc_suffix();
    c.end()?;
    Ok(PgDate::Days(days_of(year, month, day, bc, &c)?))
}

/// `timestamp` (`with_offset = false`) or `timestamptz` (`true`) in ISO style:
/// `2024-01-02 03:04:05.123456`, then for `timestamptz` an offset `+HH[:MM[:SS]]`,
/// then ` BC` if so; or `±infinity`. The offset is applied: the result is UTC.
pub fn parse_timestamp(t: &[u8], with_offset: bool) -> Result<PgTimestamp, TextError> {
    match t {
        b"infinity" => return Ok(PgTimestamp::Infinity),
        b"-infinity" => return Ok(PgTimestamp::NegInfinity),
        _ => {}
    }
    let mut c = Cursor::new(t);
    let (year, month, day) = c.ymd()?;
    c.expect(b' ', "expected a space between date and time")?;
    let tod = c.time_of_day(false)?;
    let offset_secs = if with_offset { c.offset()? } else { 0 };
    let bc = c.bc_suffix();
    c.end()?;
    let days = days_of(year, month, day, bc, &c)?;
    let micros = i128::from(days) * i128::from(MICROS_PER_DAY) + i128::from(tod)
        - i128::from(offset_secs) * i128::from(MICROS_PER_SECOND);
    Ok(PgTimestamp::Micros(micros))
}

/// `time`: `HH:MM:SS[.ffffff]` as microseconds since midnight; `24:00:00` is valid.
pub fn parse_time(t: &[u8]) -> Result<i64, TextError> {
    let mut c = Cursor::new(t);
    let micros = c.time_of_day(true)?;
    c.end()?;
    Ok(micros)
}

/// `uuid`: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case) as its 16 bytes in
/// text order.
pub fn parse_uuid(t: &[u8]) -> Result<[u8; 16], TextError> {
    /// Where each byte's two hex digits start.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    if t.len() != 36 {
        return err("a uuid has 36 characters", t.len().min(36));
    }
    for i in [8, 13, 18, 23] {
        if t.get(i) != Some(&b'-') {
            return err("expected - in a uuid", i);
        }
    }
    let digit = |i: usize| t.get(i).map_or(0xff, |&b| hex_lookup(b));
    let mut out = [0u8; 16];
    let mut bad = 0u8;
    for (byte, &at) in out.iter_mut().zip(&AT) {
        let (hi, lo) = (digit(at), digit(at + 1));
        bad |= (hi | lo) & 0x80;
        *byte = (hi << 4) | (lo & 0x0f);
    }
    if bad != 0 {
        let offset = (0..36)
            .find(|&i| !matches!(i, 8 | 13 | 18 | 23) && digit(i) == 0xff)
            .unwrap_or(0);
        return err("not a hex digit", offset);
    }
    Ok(out)
}

/// The value of a hex digit, 0xff for anything else.
fn hex_lookup(b: u8) -> u8 {
    HEX.get(usize::from(b)).copied().unwrap_or(0xff)
}

/// Hex digit values, 0xff for anything else. (Built at compile time, where an index
/// out of bounds is a compile error, not a panic.)
#[allow(clippy::indexing_slicing)]
const HEX: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = match i as u8 {
            b @ b'0'..=b'9' => b - b'0',
            b @ b'a'..=b'f' => b - b'a' + 10,
            b @ b'A'..=b'F' => b - b'A' + 10,
            _ => 0xff,
        };
        i += 1;
    }
    table
};

/// The length of a `bytea` once decoded: `\x0a1b…` (hex, what pgch asks for) or the
/// escape format (`\\`, `\ooo`, other bytes as is). For hex only the shape is checked
/// here; [`decode_bytea_into`] checks every digit.
pub fn bytea_len(t: &[u8]) -> Result<usize, TextError> {
    if let Some(hex) = t.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return err("odd number of hex digits in a bytea", t.len());
        }
        return Ok(hex.len() / 2);
    }
    let mut len = 0usize;
    let mut i = 0usize;
    while i < t.len() {
        i = i.saturating_add(escape_step(t, i)?.1);
        len = len.saturating_add(1);
    }
    Ok(len)
}

/// Decodes a `bytea` (see [`bytea_len`]) and appends the raw bytes to `out`.
pub fn decode_bytea_into<B: BufMut>(t: &[u8], out: &mut B) -> Result<(), TextError> {
    if let Some(hex) = t.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return err("odd number of hex digits in a bytea", t.len());
        }
        for (n, pair) in hex.chunks_exact(2).enumerate() {
            let at = n.saturating_mul(2).saturating_add(2);
            match pair {
                [hi, lo] => match (hex_value(*hi), hex_value(*lo)) {
                    (Some(hi), Some(lo)) => out.put_u8((hi << 4) | lo),
                    (None, _) => return err("not a hex digit in a bytea", at),
                    (_, None) => return err("not a hex digit in a bytea", at.saturating_add(1)),
                },
                _ => return err("odd number of hex digits in a bytea", at),
            }
        }
        return Ok(());
    }
    let mut i = 0usize;
    while i < t.len() {
        let (byte, step) = escape_step(t, i)?;
        out.put_u8(byte);
        i = i.saturating_add(step);
    }
    Ok(())
}

/// Decodes a `bytea` into a new vector.
pub fn decode_bytea(t: &[u8]) -> Result<Vec<u8>, TextError> {
    let mut out = Vec::with_capacity(bytea_len(t)?);
    decode_bytea_into(t, &mut out)?;
    Ok(out)
}

/// One byte of the `bytea` escape format at `i`: the byte and how many input bytes it took.
fn escape_step(t: &[u8], i: usize) -> Result<(u8, usize), TextError> {
    match t.get(i..).unwrap_or_default() {
        [b'\\', b'\\', ..] => Ok((b'\\', 2)),
        [b'\\', a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] => {
            Ok((((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'), 4))
        }
        [b'\\', ..] => err("invalid escape in a bytea", i),
        [b, ..] => Ok((*b, 1)),
        [] => err("unexpected end of a bytea", i),
    }
}

pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (`year` astronomical: 0 is 1 BC).
/// Exact for any `year` in ±10^12.
pub const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (astronomical year, month, day).
pub const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// `YYYY-MM-DD` (with ` BC` for years ≤ 0) of a day count, as Postgres prints dates.
pub fn format_date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    if year <= 0 {
        format!("{:04}-{month:02}-{day:02} BC", 1 - year)
    } else {
        format!("{year:04}-{month:02}-{day:02}")
    }
}

fn is_leap(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Checks a printed date and turns it into days; `year` as printed (≥ 1), `bc` flips it.
fn days_of(year: i64, month: u32, day: u32, bc: bool, c: &Cursor) -> Result<i64, TextError> {
    if year == 0 {
        return err("year 0 does not exist (1 BC comes before 1 AD)", 0);
    }
    let year = if bc { 1 - year } else { year };
    if day > days_in_month(year, month) {
        return err("day out of range for its month", c.date_end);
    }
    Ok(days_from_civil(year, month, day))
}

/// A position in a date/time text.
struct Cursor<'a> {
    t: &'a [u8],
    pos: usize,
    /// Where the date part ended (for error offsets).
    date_end: usize,
}

impl<'a> Cursor<'a> {
    fn new(t: &'a [u8]) -> Self {
        Cursor {
            t,
            pos: 0,
            date_end: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.t.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8, reason: &'static str) -> Result<(), TextError> {
        if self.peek() == Some(b) {
            self.pos = self.pos.saturating_add(1);
            Ok(())
        } else {
            err(reason, self.pos)
        }
    }

    /// Between `min` and `max` (≤ 12) ASCII digits as a number.
    fn digits(&mut self, min: usize, max: usize, what: &'static str) -> Result<i64, TextError> {
        let start = self.pos;
        let mut value = 0i64;
        while let Some(b @ b'0'..=b'9') = self.peek() {
            if self.pos.saturating_sub(start) == max {
                return err("too many digits", self.pos);
            }
            value = value * 10 + i64::from(b - b'0');
            self.pos = self.pos.saturating_add(1);
        }
        if self.pos.saturating_sub(start) < min {
            return err(what, start);
        }
        Ok(value)
    }

    /// A two-digit field no larger than `max`.
    fn field(&mut self, max: i64, what: &'static str) -> Result<i64, TextError> {
        let start = self.pos;
        let v = self.digits(2, 2, what)?;
        if v > max {
            return err(what, start);
        }
        Ok(v)
    }

    /// `Y…Y-MM-DD`: (year as printed, month, day).
    fn ymd(&mut self) -> Result<(i64, u32, u32), TextError> {
        let year = self.digits(1, 9, "expected a year")?;
        self.expect(b'-', "expected - after the year")?;
        let month_at = self.pos;
        let month = self.field(12, "expected a month 01-12")?;
        if month == 0 {
            return err("expected a month 01-12", month_at);
        }
        self.expect(b'-', "expected - after the month")?;
        let day_at = self.pos;
        let day = self.field(31, "expected a day 01-31")?;
        if day == 0 {
            return err("expected a day 01-31", day_at);
        }
        self.date_end = day_at;
        // Both fit: checked against 12 and 31 above.
        Ok((year, month as u32, day as u32))
    }

    /// `HH:MM:SS[.f{1,6}]` as microseconds; `24:00:00` only when `allow_24`.
    fn time_of_day(&mut self, allow_24: bool) -> Result<i64, TextError> {
        let hour_at = self.pos;
        let hour = self.field(if allow_24 { 24 } else { 23 }, "expected an hour")?;
        self.expect(b':', "expected : after the hour")?;
        let minute = self.field(59, "expected minutes 00-59")?;
        self.expect(b':', "expected : after the minutes")?;
        let second = self.field(59, "expected seconds 00-59")?;
        let mut micros = 0i64;
        if self.peek() == Some(b'.') {
            self.pos = self.pos.saturating_add(1);
            let start = self.pos;
            let frac = self.digits(1, 6, "expected fractional seconds")?;
            let n = self.pos.saturating_sub(start);
            micros = frac * 10i64.pow(6u32.saturating_sub(n as u32));
        }
        let total = ((hour * 60 + minute) * 60 + second) * MICROS_PER_SECOND + micros;
        if total > MICROS_PER_DAY {
            return err("a time of day cannot pass 24:00:00", hour_at);
        }
        Ok(total)
    }

    /// `+HH[:MM[:SS]]` or `-…` as seconds east of UTC.
    fn offset(&mut self) -> Result<i64, TextError> {
        let sign = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return err("expected a UTC offset (+HH)", self.pos),
        };
        self.pos = self.pos.saturating_add(1);
        let hours = self.digits(2, 2, "expected offset hours")?;
        let mut minutes = 0;
        let mut seconds = 0;
        if self.peek() == Some(b':') {
            self.pos = self.pos.saturating_add(1);
            minutes = self.field(59, "expected offset minutes")?;
            if self.peek() == Some(b':') {
                self.pos = self.pos.saturating_add(1);
                seconds = self.field(59, "expected offset seconds")?;
            }
        }
        Ok(sign * (hours * 3600 + minutes * 60 + seconds))
    }

    fn bc_suffix(&mut self) -> bool {
        if self.t.get(self.pos..) == Some(b" BC") {
            self.pos = self.pos.saturating_add(3);
            true
        } else {
            false
        }
    }

    fn end(&self) -> Result<(), TextError> {
        if self.pos == self.t.len() {
            Ok(())
        } else {
            err("unexpected text after the value", self.pos)
        }
    }
}
