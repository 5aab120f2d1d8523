//! Schema knowledge the copy and the stream share: how a column Postgres added becomes
//! an `ADD COLUMN` (with the value the rows that existed before hold), and which type
//! changes ClickHouse can apply keeping every value. Both a shape change arriving in the
//! stream ([`crate::cdc::schema`]) and one found at start, made while pgch was stopped
//! ([`crate::snapshot::destination`]), decide with these — so they cannot disagree.

use crate::sink::preflight::{escape_string, quote_ident as ch_quote};
use crate::source::columns::CatalogColumn;
use crate::source::row::{column, ColumnError, ReadError};

/// Why an added column cannot be followed by `ADD COLUMN`.
#[derive(Debug, thiserror::Error)]
pub enum AddColumnError {
    #[error("reading the catalog of {table} failed: {source}")]
    Catalog { table: String, source: ReadError },
    /// The values the existing rows hold were written by a rewrite the stream does not
    /// carry: only a resync of the table brings them.
    #[error("column {column} of {table} was added with a volatile default, which rewrote the table without streaming the values")]
    Rewritten { table: String, column: String },
}

/// A failed catalog read about `table`.
fn catalog_error(table: &str, source: impl Into<ReadError>) -> AddColumnError {
    AddColumnError::Catalog {
        table: table.to_string(),
        source: source.into(),
    }
}

/// `ALTER TABLE … ADD COLUMN` for a column Postgres added, with the value the rows that
/// existed before hold as its DEFAULT; a resync error when that value was written by a
/// rewrite (volatile default) that the stream does not carry.
pub async fn add_column_sql(
    pg: &tokio_postgres::Client,
    source: &crate::source::catalog::PublishedTable,
    col: &CatalogColumn,
    ch_type: &str,
    table_sql: &str,
) -> Result<String, AddColumnError> {
    let table = source.display();
    let clause = match missing_value(pg, source.oid, col.attnum, &table).await? {
        Missing::Null => String::new(),
        Missing::Value(v) => format!(" DEFAULT {}", default_literal(ch_type, &v)),
        Missing::Rewritten => {
            return Err(AddColumnError::Rewritten {
                table,
                column: col.name.clone(),
            })
        }
    };
    Ok(format!(
        "ALTER TABLE {table_sql} ADD COLUMN IF NOT EXISTS {} {ch_type}{clause}",
        ch_quote(&col.name)
    ))
}

/// What the rows that existed before `ADD COLUMN` hold in it.
#[derive(Debug, PartialEq, Eq)]
enum Missing {
    Null,
    Value(String),
    /// A default was applied by rewriting the table (volatile default).
    Rewritten,
}

async fn missing_value(
    pg: &tokio_postgres::Client,
    table_oid: u32,
    attnum: i16,
    table: &str,
) -> Result<Missing, AddColumnError> {
    let row = pg
        .query_one(
            "SELECT a.atthasmissing, (a.attmissingval::text::text[])[1], a.atthasdef,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = a.attrelid AND c.reltuples <> 0)
               FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::oid AND a.attnum = $2",
            &[&table_oid, &attnum],
        )
        .await
        .map_err(|source| catalog_error(table, source))?;
    const WHAT: &str = "reading a new column's missing value (pg_attribute)";
    let read = || -> Result<(bool, Option<String>, bool, bool), ColumnError> {
        Ok((
            column(&row, 0, WHAT)?,
            column(&row, 1, WHAT)?,
            column(&row, 2, WHAT)?,
            column(&row, 3, WHAT)?,
        ))
    };
    let (has_missing, value, has_default, may_have_rows) =
        read().map_err(|e| catalog_error(table, e))?;
    Ok(match (has_missing, value, has_default) {
        (true, Some(v), _) => Missing::Value(v),
        (true, None, _) | (false, _, false) => Missing::Null,
        (false, _, true) => match constant_default(pg, table_oid, attnum, table).await? {
            // A rewrite since (a type change, VACUUM FULL) wrote the default into every
            // row and cleared the missing value; a constant default is that value.
            Some(v) => Missing::Value(v),
            None if may_have_rows => Missing::Rewritten,
            None => Missing::Null,
        },
    })
}

/// The value of the column's default when it is a plain constant, as text.
async fn constant_default(
    pg: &tokio_postgres::Client,
    table_oid: u32,
    attnum: i16,
    table: &str,
) -> Result<Option<String>, AddColumnError> {
    let catalog = |source: tokio_postgres::Error| catalog_error(table, source);
    let row = pg
        .query_opt(
            "SELECT pg_get_expr(d.adbin, d.adrelid), format_type(a.atttypid, a.atttypmod)
               FROM pg_catalog.pg_attrdef d
               JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
              WHERE d.adrelid = $1::oid AND d.adnum = $2 AND d.adbin::text LIKE '{CONST %'",
            &[&table_oid, &attnum],
        )
        .await
        .map_err(catalog)?;
    let Some(row) = row else {
        return Ok(None);
    };
    const WHAT: &str = "reading a column's default (pg_attrdef)";
    let read = |i| column::<String>(&row, i, WHAT).map_err(|e| catalog_error(table, e));
    let (expr, ty) = (read(0)?, read(1)?);
    let value = pg
        .query_one(&format!("SELECT format('%s', ({expr})::{ty})"), &[])
        .await
        .map_err(catalog)?;
    column(&value, 0, "evaluating a column's constant default").map_err(|e| catalog_error(table, e))
}

/// A ClickHouse expression for Postgres' text of a value, as a column DEFAULT.
pub fn default_literal(ch_type: &str, text: &str) -> String {
    let inner = ch_type
        .strip_prefix("Nullable(")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(ch_type);
    let quoted = format!("'{}'", escape_string(text));
    if inner == "Bool" {
        return if text == "t" { "true" } else { "false" }.into();
    }
    if let Some(args) = inner.strip_prefix("DateTime64(") {
        let precision = args.split(',').next().unwrap_or("6").trim();
        return format!("parseDateTime64BestEffort({quoted}, {precision}, 'UTC')");
    }
    format!("CAST({quoted} AS {inner})")
}

/// Whether ClickHouse can change a column from `old` to `new` keeping every value:
/// integer widening, more decimal digits at the same scale, Nullable added.
pub fn is_safe_widening(old: &str, new: &str) -> bool {
    let unwrap = |t: &str| -> (bool, String) {
        match t
            .strip_prefix("Nullable(")
            .and_then(|t| t.strip_suffix(')'))
        {
            Some(inner) => (true, inner.to_string()),
            None => (false, t.to_string()),
        }
    };
    let ((old_null, old), (new_null, new)) = (unwrap(old), unwrap(new));
    if old_null && !new_null {
        return false;
    }
    if old == new {
        return true;
    }
    let int_rank = |t: &str| {
        ["Int16", "Int32", "Int64", "Int128"]
            .iter()
            .position(|x| *x == t)
    };
    if let (Some(a), Some(b)) = (int_rank(&old), int_rank(&new)) {
        return b >= a;
    }
    let decimal = |t: &str| -> Option<(u32, u32)> {
        let args = t.strip_prefix("Decimal(")?.strip_suffix(')')?;
        let (p, s) = args.split_once(',')?;
        Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
    };
    if let (Some((p1, s1)), Some((p2, s2))) = (decimal(&old), decimal(&new)) {
        return s1 == s2 && p2 >= p1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widenings_keep_every_value_and_nothing_else_passes() {
        assert!(is_safe_widening("Int32", "Int64"));
        assert!(is_safe_widening("Nullable(Int16)", "Nullable(Int64)"));
        assert!(is_safe_widening("Int32", "Nullable(Int64)"));
        assert!(is_safe_widening("Decimal(12, 2)", "Decimal(18, 2)"));
        assert!(!is_safe_widening("Decimal(12, 2)", "Decimal(18, 3)"));
        assert!(!is_safe_widening("Int64", "Int32"));
        assert!(!is_safe_widening("Nullable(Int32)", "Int64"));
        assert!(!is_safe_widening("String", "Int64"));
    }

    #[test]
    fn defaults_are_literals_clickhouse_parses() {
        assert_eq!(
            default_literal("String", "it's"),
            "CAST('it\\'s' AS String)"
        );
        assert_eq!(default_literal("Nullable(Bool)", "t"), "true");
        assert_eq!(
            default_literal("DateTime64(6, 'UTC')", "2020-01-01 00:00:00+00"),
            "parseDateTime64BestEffort('2020-01-01 00:00:00+00', 6, 'UTC')"
        );
        assert_eq!(default_literal("Int32", "5"), "CAST('5' AS Int32)");
    }
}
