//! The Postgres → ClickHouse type map (TYPES.md): for each published column, the
//! ClickHouse type for `CREATE TABLE` and the [`Codec`] that encodes its values.
//!
//! Lossless first: a native ClickHouse type is used only where it holds every value
//! Postgres can (or, for dates, where the few it cannot are clamped and counted);
//! everything else is a `String` of Postgres' text output, byte for byte. The map is
//! decided from the type alone (never from values seen so far), so a column's
//! ClickHouse type never depends on which rows came first.
//!
//! | Postgres | ClickHouse |
//! |---|---|
//! | `bool` | `Bool` |
//! | `int2` / `int4` / `int8` | `Int16` / `Int32` / `Int64` |
//! | `oid`, `xid` | `UInt32` |
//! | `float4` / `float8` | `Float32` / `Float64` |
//! | `numeric(p, s)` | `Decimal(P, S)` when it fits 76 digits (see [`numeric_decimal`]), else `String` |
//! | `numeric` | `String`, or opt-in `Decimal(76, 38)` |
//! | `bytea` | `String` (raw bytes) |
//! | `uuid` | `UUID` |
//! | `date` | `Date32` |
//! | `timestamp` / `timestamptz` | `DateTime64(6)` / `DateTime64(6, 'UTC')` |
//! | `time` | `Time64(6)` when the server has it, else `String` |
//! | `json`, `jsonb` | `String`, or opt-in `JSON` |
//! | enums | `LowCardinality(String)` |
//! | `hstore` | `Map(String, Nullable(String))` |
//! | arrays of built-in types, enums, `citext` | `Array(Nullable(T))`, nested per dimension |
//! | anything else | `String` |
//!
//! Nullability: `Nullable(T)` unless `NOT NULL`; key columns never. `Array` and `Map`
//! are never Nullable (ClickHouse has no such types): NULL is stored empty.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod overrides;
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests;

use std::fmt;

pub use crate::sink::rowbinary::Scalar;
use crate::sink::rowbinary::{Codec, DateRange, NullMode, ValueCodec, MAX_PRECISION};

/// OIDs of the built-in types the map knows (fixed in every Postgres since 12).
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT2VECTOR: u32 = 22;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const XID: u32 = 28;
    pub const OIDVECTOR: u32 = 30;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const POINT: u32 = 600;
    pub const BOX: u32 = 603;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const TSVECTOR: u32 = 3614;
    pub const JSONB: u32 = 3802;
    pub const INT4RANGE: u32 = 3904;
    /// Postgres' `FirstNormalObjectId`: every OID below is built in, every type at or
    /// above comes from an extension or the user.
    pub const FIRST_NORMAL: u32 = 16384;
}

/// A column's type as the catalog gives it (domains already replaced by their base).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgType {
    pub oid: u32,
    /// `atttypmod` (-1 when none). For an array, the element's typmod may be here.
    pub typmod: i32,
    /// `pg_type.typname`: `int4`, `numeric`, `_int4`, `hstore`, `citext`…
    pub name: String,
    pub kind: PgTypeKind,
}

/// What sort of type it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTypeKind {
    /// Base types, and everything that is not an enum or an array (composites,
    /// ranges, multiranges…: their text output).
    Base,
    Enum,
    Array {
        element: Box<PgType>,
        /// `attndims`; 0 when unknown (read as 1). Postgres does not enforce it.
        dims: u32,
    },
}

impl PgType {
    /// A base type without typmod.
    pub fn base(oid: u32, name: &str) -> PgType {
        PgType {
            oid,
            typmod: -1,
            name: name.into(),
            kind: PgTypeKind::Base,
        }
    }

    /// This type with `typmod`.
    pub fn with_typmod(mut self, typmod: i32) -> PgType {
        self.typmod = typmod;
        self
    }

    /// `numeric(precision, scale)` (scale may be negative or above precision, PG 15+).
    pub fn numeric(precision: i32, scale: i32) -> PgType {
        PgType::base(oid::NUMERIC, "numeric").with_typmod(((precision << 16) | (scale & 0x7ff)) + 4)
    }

    /// An array of `element` (OID and name of the array type given).
    pub fn array(oid: u32, name: &str, element: PgType, dims: u32) -> PgType {
        PgType {
            oid,
            typmod: -1,
            name: name.into(),
            kind: PgTypeKind::Array {
                element: Box::new(element),
                dims,
            },
        }
    }
}

/// A ClickHouse column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChType {
    Scalar(Scalar),
    /// `precision` 1..=76, `scale` ≤ `precision`.
    Decimal {
        precision: u8,
        scale: u8,
    },
    String,
    Uuid,
    Date32,
    /// `DateTime64(P)`, or `DateTime64(P, 'UTC')` when `utc`; P is 6 (Postgres'
    /// microseconds) unless a `column_types` override asks for fewer digits.
    DateTime64 {
        utc: bool,
        precision: u8,
    },
    /// `Time64(6)`.
    Time64,
    /// `JSON` (inserted from RowBinary strings: see [`ChType::needs_json_as_string`]).
    Json,
    LowCardinality(Box<ChType>),
    Map(Box<ChType>, Box<ChType>),
    Array(Box<ChType>),
    Nullable(Box<ChType>),
}

impl ChType {
    /// The type as ClickHouse spells it in DDL, e.g. `Nullable(Decimal(12, 2))`.
    pub fn ddl(&self) -> String {
        self.to_string()
    }

    /// `Nullable(self)`, written `LowCardinality(Nullable(T))` for a LowCardinality.
    pub fn nullable(self) -> ChType {
        match self {
            ChType::LowCardinality(inner) => ChType::LowCardinality(Box::new(inner.nullable())),
            n @ ChType::Nullable(_) => n,
            other => ChType::Nullable(Box::new(other)),
        }
    }

    /// Whether the type may appear in `ORDER BY` (with `allow_nullable_key = 1` where it
    /// is or holds Nullable): not `Map` or `JSON` (DESIGN.md rule 10).
    pub fn orderable(&self) -> bool {
        match self {
            ChType::Map(..) | ChType::Json => false,
            ChType::LowCardinality(t) | ChType::Array(t) | ChType::Nullable(t) => t.orderable(),
            _ => true,
        }
    }

    /// Whether it is or holds a Nullable (then it needs `allow_nullable_key = 1` to be
    /// in `ORDER BY`).
    pub fn has_nullable(&self) -> bool {
        match self {
            ChType::Nullable(_) => true,
            ChType::LowCardinality(t) | ChType::Array(t) => t.has_nullable(),
            ChType::Map(k, v) => k.has_nullable() || v.has_nullable(),
            _ => false,
        }
    }

    /// Whether inserting it from RowBinary needs the setting
    /// `input_format_binary_read_json_as_string = 1` (the codec writes JSON as text).
    pub fn needs_json_as_string(&self) -> bool {
        match self {
            ChType::Json => true,
            ChType::LowCardinality(t) | ChType::Array(t) | ChType::Nullable(t) => {
                t.needs_json_as_string()
            }
            ChType::Map(k, v) => k.needs_json_as_string() || v.needs_json_as_string(),
            _ => false,
        }
    }
}

impl fmt::Display for ChType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChType::Scalar(t) => f.write_str(t.name()),
            ChType::Decimal { precision, scale } => write!(f, "Decimal({precision}, {scale})"),
            ChType::String => f.write_str("String"),
            ChType::Uuid => f.write_str("UUID"),
            ChType::Date32 => f.write_str("Date32"),
            ChType::DateTime64 {
                utc: false,
                precision,
            } => write!(f, "DateTime64({precision})"),
            ChType::DateTime64 {
                utc: true,
                precision,
            } => write!(f, "DateTime64({precision}, 'UTC')"),
            ChType::Time64 => f.write_str("Time64(6)"),
            ChType::Json => f.write_str("JSON"),
            ChType::LowCardinality(t) => write!(f, "LowCardinality({t})"),
            ChType::Map(k, v) => write!(f, "Map({k}, {v})"),
            ChType::Array(t) => write!(f, "Array({t})"),
            ChType::Nullable(t) => write!(f, "Nullable({t})"),
        }
    }
}

/// Choices the type alone cannot make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingOptions {
    /// The server has `Time64` (ClickHouse ≥ 25.6 with `enable_time_time64_type`):
    /// `time` → `Time64(6)`; else `String`.
    pub server_has_time64: bool,
    /// `numeric` without typmod → `Decimal(76, 38)` instead of `String`; a value with
    /// more than 38 integer or fractional digits is then an encode error.
    pub numeric_unconstrained_as_decimal: bool,
    /// `json`/`jsonb` (not arrays of them, not key columns) → `JSON` instead of `String`:
    /// ClickHouse ≥ 25.3; ClickHouse re-normalises the document (key order, duplicate
    /// keys, number forms), so it is not byte-for-byte.
    pub json_native: bool,
    /// The range `Date32` and `DateTime64` store; values beyond clamp to its ends.
    pub date_range: DateRange,
    /// The server has the `JSON` type (ClickHouse 25.3+): a `column_types` override
    /// may ask for it.
    pub server_has_json: bool,
    /// Map the column to `String` (its text output) whatever its type: the per-column
    /// escape hatch (e.g. for `numeric` holding `NaN`, or a key array).
    pub force_string: bool,
}

impl Default for MappingOptions {
    fn default() -> Self {
        MappingOptions {
            server_has_time64: false,
            numeric_unconstrained_as_decimal: false,
            json_native: false,
            date_range: DateRange::DOCUMENTED,
            server_has_json: false,
            force_string: false,
        }
    }
}

/// A column's ClickHouse type and how to encode its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    pub ch: ChType,
    pub codec: Codec,
}

/// Why a column cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A key column whose ClickHouse type cannot be a non-Nullable sorting key.
    #[error(
        "key column of type {pg_type} cannot be mapped to {ch_type}: {why}; \
         map the column to String (its text output) or change the replica identity"
    )]
    KeyType {
        pg_type: String,
        ch_type: String,
        why: &'static str,
    },
    /// A `column_types` value pgch does not know.
    #[error(
        "column type `{text}` is not one pgch can map to; choose from {}",
        overrides::OVERRIDES
    )]
    UnknownOverride { text: String },
    /// A `column_types` value that does not suit the column's Postgres type.
    #[error("column type {requested} does not suit a {pg_type} column: {why}")]
    UnsuitableOverride {
        requested: String,
        pg_type: String,
        why: &'static str,
    },
    /// A `numeric` typmod Postgres would not have made.
    #[error("numeric typmod {typmod} is not valid (precision must be 1 to 1000)")]
    NumericTypmod { typmod: i32 },
}

/// Maps one column. `not_null`: `NOT NULL` on the column or its domain; `is_key`: part
/// of the replica identity key (never Nullable, never clamped).
pub fn map_column(
    pg: &PgType,
    not_null: bool,
    is_key: bool,
    opts: &MappingOptions,
) -> Result<ColumnMapping, MappingError> {
    if opts.force_string {
        return Ok(finish(ChType::String, ValueCodec::Text, not_null, is_key));
    }
    match &pg.kind {
        PgTypeKind::Array { element, dims }
            if !matches!(pg.oid, oid::INT2VECTOR | oid::OIDVECTOR) =>
        {
            let Some((ch, value)) = array_mapping(element, *dims, pg.typmod, opts)? else {
                return Ok(finish(ChType::String, ValueCodec::Text, not_null, is_key));
            };
            if is_key {
                return Err(key_error(pg, &ch, "ClickHouse has no non-Nullable array of nullable elements, and a NULL array cannot be stored"));
            }
            Ok(ColumnMapping {
                ch,
                codec: Codec {
                    value,
                    nulls: NullMode::Empty,
                    key: false,
                },
            })
        }
        _ if pg.kind == PgTypeKind::Base && pg.name == "hstore" && pg.oid >= oid::FIRST_NORMAL => {
            let ch = hstore_type();
            if is_key {
                return Err(key_error(
                    pg,
                    &ch,
                    "a Map cannot be a sorting key, and a NULL hstore cannot be stored",
                ));
            }
            Ok(ColumnMapping {
                ch,
                codec: Codec {
                    value: ValueCodec::Hstore,
                    nulls: NullMode::Empty,
                    key: false,
                },
            })
        }
        _ => {
            let (ch, value) = scalar_mapping(pg, pg.typmod, is_key, opts)?;
            Ok(finish(ch, value, not_null, is_key))
        }
    }
}

fn hstore_type() -> ChType {
    ChType::Map(
        Box::new(ChType::String),
        Box::new(ChType::String.nullable()),
    )
}

fn key_error(pg: &PgType, ch: &ChType, why: &'static str) -> MappingError {
    MappingError::KeyType {
        pg_type: pg.name.clone(),
        ch_type: ch.ddl(),
        why,
    }
}

/// Wraps a scalar in `Nullable` unless it is NOT NULL or a key.
fn finish(ch: ChType, value: ValueCodec, not_null: bool, is_key: bool) -> ColumnMapping {
    let nullable = !not_null && !is_key;
    ColumnMapping {
        ch: if nullable { ch.nullable() } else { ch },
        codec: Codec {
            value,
            nulls: if nullable {
                NullMode::Nullable
            } else {
                NullMode::Reject
            },
            key: is_key,
        },
    }
}

/// The (non-Nullable) type and codec of a scalar, i.e. anything but an array or hstore.
fn scalar_mapping(
    pg: &PgType,
    typmod: i32,
    is_key: bool,
    opts: &MappingOptions,
) -> Result<(ChType, ValueCodec), MappingError> {
    let text = (ChType::String, ValueCodec::Text);
    if pg.kind == PgTypeKind::Enum {
        return Ok((
            ChType::LowCardinality(Box::new(ChType::String)),
            ValueCodec::Text,
        ));
    }
    if pg.kind != PgTypeKind::Base {
        return Ok(text);
    }
    Ok(match pg.oid {
        oid::BOOL => scalar(Scalar::Bool),
        oid::INT2 => scalar(Scalar::Int16),
        oid::INT4 => scalar(Scalar::Int32),
        oid::INT8 => scalar(Scalar::Int64),
        oid::OID | oid::XID => scalar(Scalar::UInt32),
        oid::FLOAT4 => scalar(Scalar::Float32),
        oid::FLOAT8 => scalar(Scalar::Float64),
        oid::NUMERIC => match numeric_decimal(typmod)? {
            Some((precision, scale)) => decimal(precision, scale),
            None if typmod < 0 && opts.numeric_unconstrained_as_decimal => {
                decimal(MAX_PRECISION, 38)
            }
            None => text,
        },
        oid::BYTEA => (ChType::String, ValueCodec::Bytea),
        oid::UUID => (ChType::Uuid, ValueCodec::Uuid),
        oid::DATE => (ChType::Date32, ValueCodec::Date(opts.date_range)),
        oid::TIMESTAMP | oid::TIMESTAMPTZ => {
            let utc = pg.oid == oid::TIMESTAMPTZ;
            (
                ChType::DateTime64 { utc, precision: 6 },
                ValueCodec::DateTime64 {
                    range: opts.date_range,
                    with_offset: utc,
                    precision: 6,
                },
            )
        }
        oid::TIME if opts.server_has_time64 => (ChType::Time64, ValueCodec::Time64),
        oid::JSON | oid::JSONB if opts.json_native && !is_key => (ChType::Json, ValueCodec::Text),
        _ => text,
    })
}

/// A fixed-width type: the same in the table and in the encoding.
fn scalar(t: Scalar) -> (ChType, ValueCodec) {
    (ChType::Scalar(t), ValueCodec::Scalar(t))
}

fn decimal(precision: u8, scale: u8) -> (ChType, ValueCodec) {
    (
        ChType::Decimal { precision, scale },
        ValueCodec::Decimal { precision, scale },
    )
}

/// The `Decimal(P, S)` that holds every value of `numeric` with this typmod, or `None`
/// when there is no typmod or no Decimal is wide enough (then `String`).
///
/// The typmod is `((precision << 16) | (scale & 0x7ff)) + 4`, scale an 11-bit signed
/// number (Postgres 15+ allows -1000..=1000, also above the precision). Values have at
/// most `p - s` integer digits and `s` fractional digits, so:
/// `numeric(p, s)` with 0 ≤ s ≤ p → `Decimal(p, s)`; s > p (e.g. `numeric(3, 5)`,
/// |v| < 0.01) → `Decimal(s, s)`; s < 0 (e.g. `numeric(3, -2)`, multiples of 100 up to
/// 99900, printed without a point) → `Decimal(p - s, 0)`. Above 76 digits → `None`.
pub fn numeric_decimal(typmod: i32) -> Result<Option<(u8, u8)>, MappingError> {
    if typmod < 4 {
        return Ok(None);
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    if !(1..=1000).contains(&precision) {
        return Err(MappingError::NumericTypmod { typmod });
    }
    let int_digits = (precision - scale).max(0);
    let frac_digits = scale.max(0);
    let total = int_digits + frac_digits;
    if total == 0 || total > i32::from(MAX_PRECISION) {
        return Ok(None);
    }
    match (u8::try_from(total), u8::try_from(frac_digits)) {
        (Ok(p), Ok(s)) => Ok(Some((p, s))),
        _ => Ok(None),
    }
}

/// The type and codec of an array column, or `None` when it is stored as `String`:
/// elements whose text cannot be split safely (extension and user types other than
/// enums and `citext`, whose `typdelim` pgch does not know) or that cannot be
/// `Nullable` inside an `Array` (`hstore`).
fn array_mapping(
    element: &PgType,
    dims: u32,
    array_typmod: i32,
    opts: &MappingOptions,
) -> Result<Option<(ChType, ValueCodec)>, MappingError> {
    let known = match element.kind {
        PgTypeKind::Enum => true,
        PgTypeKind::Base => element.oid < oid::FIRST_NORMAL || element.name == "citext",
        PgTypeKind::Array { .. } => false,
    };
    if !known || matches!(element.oid, oid::INT2VECTOR | oid::OIDVECTOR) {
        return Ok(None);
    }
    // A `numeric(10,2)[]` column carries the element's typmod as its own.
    let typmod = if element.typmod >= 0 {
        element.typmod
    } else {
        array_typmod
    };
    let element_opts = MappingOptions {
        json_native: false,
        ..opts.clone()
    };
    let (ch, value) = scalar_mapping(element, typmod, false, &element_opts)?;
    // Postgres arrays have at most 6 dimensions (MAXDIM); 0 means unknown.
    let dims = dims.clamp(1, 6);
    let mut ch = ch.nullable();
    for _ in 0..dims {
        ch = ChType::Array(Box::new(ch));
    }
    let delimiter = if element.oid == oid::BOX { b';' } else { b',' };
    Ok(Some((
        ch,
        ValueCodec::Array {
            element: Box::new(value),
            dims,
            delimiter,
        },
    )))
}
