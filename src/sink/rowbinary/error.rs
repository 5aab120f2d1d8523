//! Why a value could not be encoded.

use super::DateRange;
use crate::sink::pgtext::TextError;

/// Why a value could not be encoded. The caller adds the table and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The text is not what Postgres prints for the type the column was mapped from.
    #[error("malformed {what} text \"{value}\": {problem}")]
    Malformed {
        what: &'static str,
        value: String,
        problem: TextError,
    },
    /// A valid value the ClickHouse type cannot hold.
    #[error("{what} value {value} cannot be stored in {ch_type}: {detail}")]
    DoesNotFit {
        what: &'static str,
        value: String,
        ch_type: String,
        detail: String,
    },
    /// NULL in a column that is neither Nullable nor an Array or Map.
    #[error("NULL cannot be stored in {ch_type}: the column is NOT NULL or part of the key")]
    Null { ch_type: String },
    /// A value a key column would have to clamp.
    #[error(
        "{what} value {value} of a key column is outside {ch_type}'s range {range}; \
         key columns are never clamped (rows would merge)"
    )]
    KeyClamp {
        what: &'static str,
        value: String,
        ch_type: String,
        range: DateRange,
    },
    /// An array with lower bounds other than 1 in a key column.
    #[error(
        "array {value} of a key column has lower bounds other than 1, which ClickHouse cannot keep"
    )]
    KeyArrayBounds { value: String },
}

/// At most this many characters of a value go into a message.
const SNIPPET_CHARS: usize = 64;

/// A value for a message: lossy UTF-8, escaped, cut after 64 characters.
pub fn snippet(t: &[u8]) -> String {
    let text = String::from_utf8_lossy(t);
    let mut out: String = text
        .chars()
        .take(SNIPPET_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(SNIPPET_CHARS).is_some() {
        out.push_str(&format!("… ({} bytes)", t.len()));
    }
    out
}
