//! How a column is encoded: the codec [`crate::sink::types::map_column`] builds and
//! [`super::encode_value`] follows, and the date range ClickHouse stores.

use std::fmt;

use crate::sink::pgtext;

/// How one column is encoded: built by [`crate::sink::types::map_column`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub value: ValueCodec,
    pub nulls: NullMode,
    /// A replica identity key column: never clamped, never NULL.
    pub key: bool,
}

/// What a NULL becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullMode {
    /// `Nullable(T)`: a flag byte before every value.
    Nullable,
    /// An `Array` or `Map` column (never Nullable in ClickHouse): NULL is stored
    /// empty and counted as [`super::ClampKind::NullAsEmpty`].
    Empty,
    /// `NOT NULL` or key: NULL is an error.
    Reject,
}

/// The fixed-width ClickHouse types, one vocabulary for the type map
/// ([`crate::sink::types::ChType::Scalar`]) and the encoder ([`ValueCodec::Scalar`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    Bool,
    Int16,
    Int32,
    Int64,
    UInt32,
    Float32,
    Float64,
}

impl Scalar {
    /// The type as ClickHouse spells it.
    pub fn name(self) -> &'static str {
        match self {
            Scalar::Bool => "Bool",
            Scalar::Int16 => "Int16",
            Scalar::Int32 => "Int32",
            Scalar::Int64 => "Int64",
            Scalar::UInt32 => "UInt32",
            Scalar::Float32 => "Float32",
            Scalar::Float64 => "Float64",
        }
    }
}

/// The value's encoding, without its NULL handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueCodec {
    Scalar(Scalar),
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// `String` holding the text as Postgres prints it.
    Text,
    /// `String` holding a `bytea`'s raw bytes (decoded from `\x…`).
    Bytea,
    Uuid,
    /// `Date32`.
    Date(DateRange),
    /// `DateTime64(6[, 'UTC'])`; `with_offset` for `timestamptz` text.
    DateTime64 {
        range: DateRange,
        with_offset: bool,
        /// Digits after the second, 0..=6: below 6 a value with more is refused
        /// (storing it would truncate).
        precision: u8,
    },
    /// `Time64(6)`.
    Time64,
    /// `dims` nested `Array`s of `Nullable(element)`.
    Array {
        element: Box<ValueCodec>,
        dims: u32,
        /// The element type's `typdelim`: `;` for `box`, else `,`.
        delimiter: u8,
    },
    /// `Map(String, Nullable(String))`.
    Hstore,
}

impl ValueCodec {
    /// The ClickHouse type written (without Nullable), for messages.
    pub fn ch_type(&self) -> String {
        match self {
            ValueCodec::Scalar(t) => t.name().into(),
            ValueCodec::Decimal { precision, scale } => format!("Decimal({precision}, {scale})"),
            ValueCodec::Text | ValueCodec::Bytea => "String".into(),
            ValueCodec::Uuid => "UUID".into(),
            ValueCodec::Date(_) => "Date32".into(),
            ValueCodec::DateTime64 {
                with_offset: false,
                precision,
                ..
            } => format!("DateTime64({precision})"),
            ValueCodec::DateTime64 { precision, .. } => format!("DateTime64({precision}, 'UTC')"),
            ValueCodec::Time64 => "Time64(6)".into(),
            ValueCodec::Array { element, dims, .. } => {
                let mut s = format!("Nullable({})", element.ch_type());
                for _ in 0..(*dims).clamp(1, 6) {
                    s = format!("Array({s})");
                }
                s
            }
            ValueCodec::Hstore => "Map(String, Nullable(String))".into(),
        }
    }

    /// What the Postgres text is, for messages.
    pub(super) fn what(&self) -> &'static str {
        match self {
            ValueCodec::Scalar(Scalar::Bool) => "bool",
            ValueCodec::Scalar(Scalar::Int16)
            | ValueCodec::Scalar(Scalar::Int32)
            | ValueCodec::Scalar(Scalar::Int64)
            | ValueCodec::Scalar(Scalar::UInt32) => "integer",
            ValueCodec::Scalar(Scalar::Float32) | ValueCodec::Scalar(Scalar::Float64) => "float",
            ValueCodec::Decimal { .. } => "numeric",
            ValueCodec::Text => "text",
            ValueCodec::Bytea => "bytea",
            ValueCodec::Uuid => "uuid",
            ValueCodec::Date(_) => "date",
            ValueCodec::DateTime64 { .. } => "timestamp",
            ValueCodec::Time64 => "time",
            ValueCodec::Array { .. } => "array",
            ValueCodec::Hstore => "hstore",
        }
    }
}

/// An inclusive range of days since 1970-01-01 that a ClickHouse server stores for
/// `Date32` and (with the whole last day) `DateTime64`; values beyond clamp to its ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub first_day: i32,
    pub last_day: i32,
}

impl DateRange {
    /// 1900-01-01..2299-12-31: `Date32`'s and `DateTime64`'s range in ClickHouse's
    /// documentation. The default.
    pub const DOCUMENTED: DateRange = DateRange {
        first_day: pgtext::days_from_civil(1900, 1, 1) as i32,
        last_day: pgtext::days_from_civil(2299, 12, 31) as i32,
    };
    /// 0001-01-01..9999-12-31: what ClickHouse 26.9 (chdb-core 26.9.0) was seen to
    /// store and print for both `Date32` and `DateTime64` (TYPES.md's claim for 26.x).
    pub const YEARS_1_TO_9999: DateRange = DateRange {
        first_day: pgtext::days_from_civil(1, 1, 1) as i32,
        last_day: pgtext::days_from_civil(9999, 12, 31) as i32,
    };

    /// From the first day of `first_year` to the last day of `last_year` (AD years,
    /// 1..=99999); `None` when empty or out of those bounds.
    pub fn years(first_year: u32, last_year: u32) -> Option<DateRange> {
        if first_year == 0 || last_year > 99_999 || first_year > last_year {
            return None;
        }
        Some(DateRange {
            first_day: i32::try_from(pgtext::days_from_civil(i64::from(first_year), 1, 1)).ok()?,
            last_day: i32::try_from(pgtext::days_from_civil(i64::from(last_year), 12, 31)).ok()?,
        })
    }

    /// The first and last microsecond of the range since the Unix epoch: the
    /// `DateTime64(6)` values it allows.
    pub fn micros(&self) -> (i128, i128) {
        let day = i128::from(pgtext::MICROS_PER_DAY);
        (
            i128::from(self.first_day) * day,
            (i128::from(self.last_day) + 1) * day - 1,
        )
    }
}

impl Default for DateRange {
    fn default() -> Self {
        DateRange::DOCUMENTED
    }
}

impl fmt::Display for DateRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}..{}",
            pgtext::format_date(i64::from(self.first_day)),
            pgtext::format_date(i64::from(self.last_day))
        )
    }
}
