//! `[[tables]] column_types`: a per-column ClickHouse type instead of the map's choice,
//! from a small documented set, each accepted only for the Postgres types it suits.
//! What such a type cannot hold is an encode error naming the value (never a silent
//! truncation): a `numeric` too wide for the `Decimal`, a timestamp with more digits
//! than `DateTime64(P)` keeps.
//!
//! | override | for | values it cannot hold |
//! |---|---|---|
//! | `String` | any type | none (Postgres' text output) |
//! | `LowCardinality(String)` | types stored as text (`text`, `varchar`, enums, …) | none |
//! | `Decimal(P, S)` | `numeric` | more than P − S integer or S fractional digits, NaN, ±Infinity |
//! | `JSON` | `json`, `jsonb` (not keys; ClickHouse 25.3+) | none (re-normalised) |
//! | `DateTime64(P)`, P 0–6 | `timestamp`, `timestamptz` | more than P digits after the second |

use super::{
    finish, map_column, oid, ChType, ColumnMapping, MappingError, MappingOptions, PgType,
    PgTypeKind, ValueCodec, MAX_PRECISION,
};

/// One `column_types` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeOverride {
    String,
    LowCardinalityString,
    Decimal { precision: u8, scale: u8 },
    Json,
    DateTime64 { precision: u8 },
}

/// The overrides pgch knows, for messages.
pub const OVERRIDES: &str =
    "String, LowCardinality(String), Decimal(P, S), JSON, DateTime64(P) with P 0 to 6";

impl TypeOverride {
    /// Reads an override as a user writes it (spaces anywhere).
    pub fn parse(text: &str) -> Result<TypeOverride, MappingError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let unknown = || MappingError::UnknownOverride {
            text: text.to_string(),
        };
        let args = |prefix: &str| -> Option<Vec<u8>> {
            let inner = compact.strip_prefix(prefix)?.strip_suffix(')')?;
            inner.split(',').map(|n| n.parse().ok()).collect()
        };
        Ok(match compact.as_str() {
            "String" => TypeOverride::String,
            "LowCardinality(String)" => TypeOverride::LowCardinalityString,
            "JSON" => TypeOverride::Json,
            _ if compact.starts_with("Decimal(") => match args("Decimal(").as_deref() {
                Some(&[precision, scale])
                    if (1..=MAX_PRECISION).contains(&precision) && scale <= precision =>
                {
                    TypeOverride::Decimal { precision, scale }
                }
                _ => return Err(unknown()),
            },
            _ if compact.starts_with("DateTime64(") => match args("DateTime64(").as_deref() {
                Some(&[precision]) if precision <= 6 => TypeOverride::DateTime64 { precision },
                _ => return Err(unknown()),
            },
            _ => return Err(unknown()),
        })
    }

    /// The column mapped to this type, when it suits the column's Postgres type.
    pub fn map(
        self,
        pg: &PgType,
        not_null: bool,
        is_key: bool,
        opts: &MappingOptions,
    ) -> Result<ColumnMapping, MappingError> {
        let unsuitable = |why: &'static str| MappingError::UnsuitableOverride {
            requested: self.to_string(),
            pg_type: pg.name.clone(),
            why,
        };
        let base = !matches!(pg.kind, PgTypeKind::Array { .. });
        match self {
            TypeOverride::String => {
                let forced = MappingOptions {
                    force_string: true,
                    ..opts.clone()
                };
                map_column(pg, not_null, is_key, &forced)
            }
            TypeOverride::LowCardinalityString => {
                let plain = map_column(pg, not_null, is_key, opts)?;
                let as_text = plain.codec.value == ValueCodec::Text
                    && matches!(
                        strip_nullable(&plain.ch),
                        ChType::String | ChType::LowCardinality(_)
                    );
                if !as_text {
                    return Err(unsuitable(
                        "only a column stored as text (text, varchar, an enum…) can be LowCardinality(String)",
                    ));
                }
                Ok(finish(
                    ChType::LowCardinality(Box::new(ChType::String)),
                    ValueCodec::Text,
                    not_null,
                    is_key,
                ))
            }
            TypeOverride::Decimal { precision, scale } => {
                if !base || pg.oid != oid::NUMERIC {
                    return Err(unsuitable("only a numeric column can be a Decimal"));
                }
                Ok(finish(
                    ChType::Decimal { precision, scale },
                    ValueCodec::Decimal { precision, scale },
                    not_null,
                    is_key,
                ))
            }
            TypeOverride::Json => {
                if !base || !matches!(pg.oid, oid::JSON | oid::JSONB) {
                    return Err(unsuitable("only a json or jsonb column can be JSON"));
                }
                if is_key {
                    return Err(unsuitable("JSON cannot be part of a sort key"));
                }
                if !opts.server_has_json {
                    return Err(unsuitable(
                        "this ClickHouse has no JSON type (25.3 and later have it)",
                    ));
                }
                Ok(finish(ChType::Json, ValueCodec::Text, not_null, is_key))
            }
            TypeOverride::DateTime64 { precision } => {
                if !base || !matches!(pg.oid, oid::TIMESTAMP | oid::TIMESTAMPTZ) {
                    return Err(unsuitable(
                        "only a timestamp or timestamptz column can be a DateTime64",
                    ));
                }
                let utc = pg.oid == oid::TIMESTAMPTZ;
                Ok(finish(
                    ChType::DateTime64 { utc, precision },
                    ValueCodec::DateTime64 {
                        range: opts.date_range,
                        with_offset: utc,
                        precision,
                    },
                    not_null,
                    is_key,
                ))
            }
        }
    }
}

impl std::fmt::Display for TypeOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TypeOverride::String => f.write_str("String"),
            TypeOverride::LowCardinalityString => f.write_str("LowCardinality(String)"),
            TypeOverride::Decimal { precision, scale } => {
                write!(f, "Decimal({precision}, {scale})")
            }
            TypeOverride::Json => f.write_str("JSON"),
            TypeOverride::DateTime64 { precision } => write!(f, "DateTime64({precision})"),
        }
    }
}

fn strip_nullable(t: &ChType) -> &ChType {
    match t {
        ChType::Nullable(inner) => inner,
        other => other,
    }
}
