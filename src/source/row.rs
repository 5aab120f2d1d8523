//! Reading the columns of a Postgres answer without panicking.
//!
//! `tokio_postgres::Row::get` panics when a column does not convert to the Rust type
//! asked for, so a catalog column whose type a new Postgres changed (Postgres 18 made
//! `pg_attribute.attndims` an `int2`) would crash pgch. [`column`] returns a
//! [`ColumnError`] instead, which names the read and the column.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::error::{self, Class};

/// A column of a Postgres answer that did not convert to the type pgch reads it as:
/// which read, which column and why, so the operator can tell an unsupported Postgres
/// version from a bug.
#[derive(Debug, thiserror::Error)]
#[error("{what}: column {column} cannot be read: {detail}; this Postgres version may not be supported by pgch")]
pub struct ColumnError {
    /// What the query was for, e.g. "reading the published columns".
    pub what: &'static str,
    /// The column's position and, when known, its name, e.g. `7 (attndims)`.
    pub column: String,
    /// Why it did not convert (e.g. the Rust and Postgres types).
    pub detail: String,
    /// The conversion error from tokio-postgres.
    #[source]
    pub source: tokio_postgres::Error,
}

impl ColumnError {
    fn new(row: &Row, idx: usize, what: &'static str, source: tokio_postgres::Error) -> Self {
        let column = match row.columns().get(idx) {
            Some(c) => format!("{idx} ({})", c.name()),
            None => idx.to_string(),
        };
        // tokio-postgres says "error deserializing column N: <cause>"; the cause is the
        // useful part, the column is named above.
        let detail = std::error::Error::source(&source)
            .map(ToString::to_string)
            .unwrap_or_else(|| source.to_string());
        ColumnError {
            what,
            column,
            detail,
            source,
        }
    }
}

/// Column `idx` of `row` as `T`, or an error naming `what` the query was for and the
/// column: the non-panicking `Row::get`.
pub fn column<'a, T: FromSql<'a>>(
    row: &'a Row,
    idx: usize,
    what: &'static str,
) -> Result<T, ColumnError> {
    row.try_get(idx)
        .map_err(|source| ColumnError::new(row, idx, what, source))
}

/// A read from Postgres that failed: the query itself, or a column of its answer. Kept
/// apart so that a lost connection is retried while an unreadable column is not.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Column(#[from] ColumnError),
}

impl ReadError {
    /// Retry or stop (see [`crate::error`]): an unreadable column would fail again the
    /// same way, and its message says what it is.
    pub fn classify(&self) -> Class {
        match self {
            ReadError::Query(e) => error::tokio_postgres(e),
            ReadError::Column(_) => Class::Fatal { fix: String::new() },
        }
    }
}
