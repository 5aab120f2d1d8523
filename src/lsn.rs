//! PostgreSQL log sequence numbers (LSNs).
//!
//! An LSN is a byte position in the write-ahead log. pgch uses LSNs to say how far
//! it has read from the replication slot, how far ClickHouse has durably applied,
//! and what to confirm back to the server. Postgres writes them as two hex halves,
//! `16/B374D848`; this module speaks exactly that form, on the wire of config files,
//! logs and state files (serde uses the text form too, so a state file stays readable).

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Largest number of hex digits Postgres accepts in either half of an LSN
/// (`MAXPG_LSNCOMPONENT` in `pg_lsn.c`).
const MAX_HALF_DIGITS: usize = 8;

/// A position in the PostgreSQL write-ahead log.
///
/// A newtype rather than a bare `u64` so an LSN cannot be confused with a byte count,
/// a transaction id or a timestamp, and so it prints the way Postgres prints it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(u64);

impl Lsn {
    /// The invalid / "no position yet" LSN (`0/0`, Postgres's `InvalidXLogRecPtr`);
    /// asking a slot to start from it means "from wherever the slot is".
    pub const ZERO: Lsn = Lsn(0);

    /// Wraps a raw WAL position; `const` so LSN constants can be written in code.
    pub const fn new(position: u64) -> Self {
        Lsn(position)
    }

    /// The raw 64-bit WAL position, as the replication protocol sends it.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether this is [`Lsn::ZERO`], which Postgres uses to mean "no LSN".
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// How many bytes of WAL lie from `earlier` up to `self`, for lag metrics;
    /// `None` when `earlier` is in fact later than `self`.
    pub const fn distance_from(self, earlier: Lsn) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }

    /// The position `bytes` further on, or `None` if that would overflow the WAL
    /// address space (a corrupt value, never a real position).
    pub const fn checked_add(self, bytes: u64) -> Option<Lsn> {
        match self.0.checked_add(bytes) {
            Some(position) => Some(Lsn(position)),
            None => None,
        }
    }

    /// The high 32 bits, printed before the `/`.
    const fn high_half(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The low 32 bits, printed after the `/`.
    const fn low_half(self) -> u32 {
        self.0 as u32
    }
}

impl From<u64> for Lsn {
    /// Lets raw positions from the wire become LSNs without ceremony.
    fn from(position: u64) -> Self {
        Lsn(position)
    }
}

impl From<Lsn> for u64 {
    /// Lets an LSN go back onto the wire as its raw position.
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

impl fmt::Display for Lsn {
    /// Postgres's form: upper-case hex halves without leading zeros, `16/B374D848`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.high_half(), self.low_half())
    }
}

impl fmt::Debug for Lsn {
    /// Shows the Postgres form, which is what anyone comparing with server logs wants.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

/// Which half of an `X/Y` LSN a parse error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsnHalf {
    /// The part before the `/` (high 32 bits).
    High,
    /// The part after the `/` (low 32 bits).
    Low,
}

impl fmt::Display for LsnHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LsnHalf::High => "high",
            LsnHalf::Low => "low",
        })
    }
}

/// Why a string is not an LSN in Postgres's `X/Y` form; each variant names the
/// problem so a bad config value or state file can be fixed without guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseLsnError {
    /// The input was the empty string.
    #[error("empty string is not an LSN (expected hex X/Y, e.g. 16/B374D848)")]
    Empty,
    /// There is no `/` between the two halves.
    #[error(
        "LSN {input:?} has no '/' between its high and low halves (expected e.g. 16/B374D848)"
    )]
    MissingSeparator {
        /// The text that was parsed.
        input: String,
    },
    /// One half has no digits at all.
    #[error("LSN {input:?} has an empty {half} half")]
    EmptyHalf {
        /// The text that was parsed.
        input: String,
        /// Which half is empty.
        half: LsnHalf,
    },
    /// One half has more than 8 hex digits, so it cannot fit in 32 bits.
    #[error("LSN {input:?} has more than 8 hex digits in its {half} half")]
    TooManyDigits {
        /// The text that was parsed.
        input: String,
        /// Which half is too long.
        half: LsnHalf,
    },
    /// One half contains a character that is not a hex digit (a second `/` included).
    #[error("LSN {input:?} has {character:?}, not a hex digit, in its {half} half")]
    InvalidDigit {
        /// The text that was parsed.
        input: String,
        /// Which half holds the bad character.
        half: LsnHalf,
        /// The offending character.
        character: char,
    },
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    /// Accepts what Postgres's `pg_lsn` input accepts: 1–8 hex digits of either case
    /// on each side of a single `/`, leading zeros allowed, no whitespace.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(ParseLsnError::Empty);
        }
        let (high, low) = input
            .split_once('/')
            .ok_or_else(|| ParseLsnError::MissingSeparator {
                input: input.to_owned(),
            })?;
        let high = parse_half(input, high, LsnHalf::High)?;
        let low = parse_half(input, low, LsnHalf::Low)?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

/// Parses one hex half of an LSN, reporting problems against the whole `input`.
fn parse_half(input: &str, digits: &str, half: LsnHalf) -> Result<u32, ParseLsnError> {
    if let Some(character) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(ParseLsnError::InvalidDigit {
            input: input.to_owned(),
            half,
            character,
        });
    }
    if digits.is_empty() {
        return Err(ParseLsnError::EmptyHalf {
            input: input.to_owned(),
            half,
        });
    }
    if digits.len() > MAX_HALF_DIGITS {
        return Err(ParseLsnError::TooManyDigits {
            input: input.to_owned(),
            half,
        });
    }
    // Only 1..=8 ASCII hex digits remain, which always fit in a u32.
    u32::from_str_radix(digits, 16).map_err(|_| ParseLsnError::TooManyDigits {
        input: input.to_owned(),
        half,
    })
}

impl Serialize for Lsn {
    /// Serializes as the `X/Y` text so state files and JSON logs read like Postgres.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    /// Reads the `X/Y` text written by [`Serialize`]; anything else is an error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(LsnVisitor)
    }
}

/// serde visitor that parses the `X/Y` text form.
struct LsnVisitor;

impl Visitor<'_> for LsnVisitor {
    type Value = Lsn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a PostgreSQL LSN in X/Y hex form, e.g. \"16/B374D848\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Lsn, E> {
        text.parse().map_err(E::custom)
    }
}

/// An LSN that only moves forward.
///
/// Progress markers (the flushed position we confirm to the slot, the applied
/// position in ClickHouse) must never go backwards: the server may resend older
/// data after a reconnect, and confirming a lower LSN would be wrong at best.
/// This wrapper makes "take the max" the only way to update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MonotonicLsn(Lsn);

impl MonotonicLsn {
    /// Starts at `start` (usually the slot's confirmed position, or [`Lsn::ZERO`]).
    pub const fn new(start: Lsn) -> Self {
        MonotonicLsn(start)
    }

    /// The highest LSN seen so far.
    pub const fn get(self) -> Lsn {
        self.0
    }

    /// Moves to `lsn` if it is higher than the current value and says whether it
    /// moved; an equal or lower value is ignored, so callers can report progress
    /// without first checking order themselves.
    pub fn advance(&mut self, lsn: Lsn) -> bool {
        if lsn > self.0 {
            self.0 = lsn;
            true
        } else {
            false
        }
    }
}

impl From<Lsn> for MonotonicLsn {
    /// Starts a monotonic marker at a known position.
    fn from(start: Lsn) -> Self {
        MonotonicLsn::new(start)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Lsn, ParseLsnError> {
        text.parse()
    }

    #[test]
    fn displays_in_postgres_form() {
        assert_eq!(Lsn::new(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn::ZERO.to_string(), "0/0");
        assert_eq!(Lsn::new(0xA).to_string(), "0/A");
        assert_eq!(Lsn::new(1 << 32).to_string(), "1/0");
        assert_eq!(Lsn::new(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn debug_shows_postgres_form() {
        assert_eq!(format!("{:?}", Lsn::new(0x1_0000_00FF)), "Lsn(1/FF)");
    }

    #[test]
    fn parses_postgres_form() {
        assert_eq!(parse("16/B374D848"), Ok(Lsn::new(0x16_B374_D848)));
        assert_eq!(parse("0/0"), Ok(Lsn::ZERO));
        assert_eq!(parse("FFFFFFFF/FFFFFFFF"), Ok(Lsn::new(u64::MAX)));
    }

    #[test]
    fn parses_lower_case_and_leading_zeros_like_postgres() {
        assert_eq!(parse("16/b374d848"), Ok(Lsn::new(0x16_B374_D848)));
        assert_eq!(parse("00000016/0000000A"), Ok(Lsn::new(0x16_0000_000A)));
    }

    #[test]
    fn rejects_empty_string() {
        assert_eq!(parse(""), Err(ParseLsnError::Empty));
    }

    #[test]
    fn rejects_missing_separator() {
        assert_eq!(
            parse("16B374D848"),
            Err(ParseLsnError::MissingSeparator {
                input: "16B374D848".into()
            })
        );
    }

    #[test]
    fn rejects_empty_halves() {
        assert_eq!(
            parse("/1"),
            Err(ParseLsnError::EmptyHalf {
                input: "/1".into(),
                half: LsnHalf::High
            })
        );
        assert_eq!(
            parse("1/"),
            Err(ParseLsnError::EmptyHalf {
                input: "1/".into(),
                half: LsnHalf::Low
            })
        );
    }

    #[test]
    fn rejects_halves_longer_than_eight_digits() {
        assert_eq!(
            parse("123456789/0"),
            Err(ParseLsnError::TooManyDigits {
                input: "123456789/0".into(),
                half: LsnHalf::High
            })
        );
        assert_eq!(
            parse("0/000000000"),
            Err(ParseLsnError::TooManyDigits {
                input: "0/000000000".into(),
                half: LsnHalf::Low
            })
        );
    }

    #[test]
    fn rejects_non_hex_characters_whitespace_signs_and_extra_slashes() {
        for (text, half, character) in [
            ("G/0", LsnHalf::High, 'G'),
            ("0/1 ", LsnHalf::Low, ' '),
            (" 0/1", LsnHalf::High, ' '),
            ("+1/0", LsnHalf::High, '+'),
            ("1/2/3", LsnHalf::Low, '/'),
            ("0x1/0", LsnHalf::High, 'x'),
        ] {
            assert_eq!(
                parse(text),
                Err(ParseLsnError::InvalidDigit {
                    input: text.into(),
                    half,
                    character
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        let message = parse("12/XYZ").unwrap_err().to_string();
        assert_eq!(
            message,
            "LSN \"12/XYZ\" has 'X', not a hex digit, in its low half"
        );
        let message = parse("12").unwrap_err().to_string();
        assert!(message.contains("no '/'"), "{message}");
    }

    #[test]
    fn serde_uses_text_form() {
        let lsn = Lsn::new(0x16_B374_D848);
        let json = serde_json::to_string(&lsn).unwrap();
        assert_eq!(json, "\"16/B374D848\"");
        assert_eq!(serde_json::from_str::<Lsn>(&json).unwrap(), lsn);
    }

    #[test]
    fn serde_rejects_bad_text_and_numbers() {
        let error = serde_json::from_str::<Lsn>("\"16-B3\"").unwrap_err();
        assert!(error.to_string().contains("no '/'"), "{error}");
        assert!(serde_json::from_str::<Lsn>("42").is_err());
    }

    #[test]
    fn converts_to_and_from_u64() {
        let lsn = Lsn::from(0x1234_u64);
        assert_eq!(lsn.as_u64(), 0x1234);
        assert_eq!(u64::from(lsn), 0x1234);
    }

    #[test]
    fn orders_by_position() {
        assert!(Lsn::new(1 << 32) > Lsn::new(0xFFFF_FFFF));
        assert_eq!(Lsn::default(), Lsn::ZERO);
        assert!(Lsn::ZERO.is_zero());
        assert!(!Lsn::new(1).is_zero());
    }

    #[test]
    fn distance_is_checked() {
        let earlier = Lsn::new(0x1_0000_0000);
        let later = Lsn::new(0x1_0000_0100);
        assert_eq!(later.distance_from(earlier), Some(0x100));
        assert_eq!(later.distance_from(later), Some(0));
        assert_eq!(earlier.distance_from(later), None);
    }

    #[test]
    fn addition_is_checked() {
        assert_eq!(Lsn::new(10).checked_add(5), Some(Lsn::new(15)));
        assert_eq!(Lsn::new(u64::MAX).checked_add(1), None);
    }

    #[test]
    fn monotonic_lsn_only_moves_up() {
        let mut marker = MonotonicLsn::new(Lsn::new(100));
        assert!(!marker.advance(Lsn::new(50)));
        assert_eq!(marker.get(), Lsn::new(100));
        assert!(!marker.advance(Lsn::new(100)));
        assert!(marker.advance(Lsn::new(101)));
        assert_eq!(marker.get(), Lsn::new(101));
        assert!(!marker.advance(Lsn::ZERO));
        assert_eq!(marker.get(), Lsn::new(101));
    }

    #[test]
    fn monotonic_lsn_starts_at_zero_by_default() {
        let mut marker = MonotonicLsn::default();
        assert_eq!(marker.get(), Lsn::ZERO);
        assert!(!marker.advance(Lsn::ZERO));
        assert!(marker.advance(Lsn::new(1)));
        assert_eq!(MonotonicLsn::from(Lsn::new(7)).get(), Lsn::new(7));
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(position in any::<u64>()) {
            let lsn = Lsn::new(position);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
        }

        #[test]
        fn display_has_no_leading_zeros_or_lower_case(position in any::<u64>()) {
            let text = Lsn::new(position).to_string();
            for half in text.split('/') {
                prop_assert!(half == "0" || !half.starts_with('0'), "{}", text);
                prop_assert!(!half.chars().any(|c| c.is_ascii_lowercase()), "{}", text);
            }
        }

        #[test]
        fn parse_never_panics(text in ".{0,24}") {
            let _ = text.parse::<Lsn>();
        }

        #[test]
        fn monotonic_lsn_holds_the_maximum(values in proptest::collection::vec(any::<u64>(), 0..32)) {
            let mut marker = MonotonicLsn::default();
            for &value in &values {
                let before = marker.get();
                let moved = marker.advance(Lsn::new(value));
                prop_assert_eq!(moved, Lsn::new(value) > before);
            }
            let max = values.iter().copied().max().unwrap_or(0);
            prop_assert_eq!(marker.get(), Lsn::new(max));
        }
    }
}
