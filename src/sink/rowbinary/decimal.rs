//! Exact `numeric` → `Decimal(P, S)`: the value × 10^S as a little-endian two's
//! complement integer of Decimal's width — Int32 (P ≤ 9), Int64 (P ≤ 18), Int128
//! (P ≤ 38) or Int256 (P ≤ 76). Straight from the digit strings, never through a
//! float; up to 38 digits in a `u128`, beyond in four `u64` limbs.

use bytes::{BufMut, BytesMut};

use crate::sink::pgtext::DecimalText;

/// ClickHouse's largest Decimal precision (Decimal256).
pub const MAX_PRECISION: u8 = 76;

/// Why a finite value does not fit a Decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalOverflow {
    /// More integer digits than P − S.
    IntegerDigits { have: usize, max: usize },
    /// Non-zero digits beyond S after the point: storing it would round.
    FractionDigits { have: usize, max: usize },
    /// P is 0 or above 76.
    Precision,
}

impl std::fmt::Display for DecimalOverflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecimalOverflow::IntegerDigits { have, max } => {
                write!(f, "it has {have} digits before the point, the type holds {max}")
            }
            DecimalOverflow::FractionDigits { have, max } => write!(
                f,
                "it has {have} digits after the point, the type keeps {max} (storing it would round)"
            ),
            DecimalOverflow::Precision => write!(f, "the precision is not 1 to 76"),
        }
    }
}

/// Appends `d` as a `Decimal(precision, scale)` value.
pub fn put_decimal(
    d: &DecimalText<'_>,
    precision: u8,
    scale: u8,
    out: &mut BytesMut,
) -> Result<(), DecimalOverflow> {
    if precision == 0 || precision > MAX_PRECISION || scale > precision {
        return Err(DecimalOverflow::Precision);
    }
    let scale = usize::from(scale);
    let max_int = usize::from(precision).saturating_sub(scale);
    let int = trim_leading_zeros(d.int_digits);
    if int.len() > max_int {
        return Err(DecimalOverflow::IntegerDigits {
            have: int.len(),
            max: max_int,
        });
    }
    let significant = trim_trailing_zeros(d.frac_digits);
    if significant.len() > scale {
        return Err(DecimalOverflow::FractionDigits {
            have: significant.len(),
            max: scale,
        });
    }
    // Every digit of the value × 10^S: the integer part, the fraction, zero padding.
    let frac = d.frac_digits.get(..scale).unwrap_or(d.frac_digits);
    let padding = scale.saturating_sub(frac.len());
    let digits = int
        .iter()
        .chain(frac)
        .map(|b| b.wrapping_sub(b'0'))
        .chain(std::iter::repeat_n(0u8, padding));
    if precision <= 38 {
        // At most 38 digits: below 10^38 < 2^127.
        let mut v: i128 = 0;
        for digit in digits {
            v = v.wrapping_mul(10).wrapping_add(i128::from(digit));
        }
        if d.negative {
            v = v.wrapping_neg();
        }
        // The width's range holds every value of `precision` digits, so the casts
        // below are exact.
        match precision {
            0..=9 => out.put_i32_le(v as i32),
            10..=18 => out.put_i64_le(v as i64),
            _ => out.put_i128_le(v),
        }
    } else {
        // At most 76 digits: below 10^76 < 2^253.
        let mut limbs = [0u64; 4];
        for digit in digits {
            mul10_add(&mut limbs, digit);
        }
        if d.negative {
            negate(&mut limbs);
        }
        for limb in limbs {
            out.put_u64_le(limb);
        }
    }
    Ok(())
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let first = digits
        .iter()
        .position(|&b| b != b'0')
        .unwrap_or(digits.len());
    digits.get(first..).unwrap_or_default()
}

fn trim_trailing_zeros(digits: &[u8]) -> &[u8] {
    let end = digits
        .iter()
        .rposition(|&b| b != b'0')
        .map_or(0, |i| i.saturating_add(1));
    digits.get(..end).unwrap_or_default()
}

/// `limbs = limbs × 10 + digit` on a little-endian 256-bit number (wrapping).
fn mul10_add(limbs: &mut [u64; 4], digit: u8) {
    let mut carry = u128::from(digit);
    for limb in limbs.iter_mut() {
        let wide = u128::from(*limb) * 10 + carry;
        *limb = wide as u64;
        carry = wide >> 64;
    }
}

/// Two's complement negation of a little-endian 256-bit number.
fn negate(limbs: &mut [u64; 4]) {
    let mut carry = true;
    for limb in limbs.iter_mut() {
        let (v, c) = (!*limb).overflowing_add(u64::from(carry));
        *limb = v;
        carry = c;
    }
}
