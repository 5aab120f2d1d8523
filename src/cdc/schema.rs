//! Schema changes that arrive as a new Relation message (DESIGN.md rule 9): the
//! ClickHouse table is brought to the new shape before any row that carries it.
//!
//! ```text
//!   column by attnum:  same name, same type          -> nothing
//!                      new name                      -> RENAME COLUMN
//!                      wider type (int4 -> int8 …)   -> MODIFY COLUMN
//!                      other type change             -> resync of the table
//!   new attnum                                       -> ADD COLUMN … DEFAULT <what existing rows hold>
//!   attnum gone                                      -> kept in ClickHouse
//!   replica identity key changed                     -> resync of the table
//! ```
//!
//! What existing rows hold for an added column is Postgres' "missing value"
//! (`pg_attribute.attmissingval`, set by `ADD COLUMN … DEFAULT <constant>` without a
//! rewrite). A column added with a volatile default rewrote the table without streaming
//! the values: that needs a resync. The catalog is read when the Relation message
//! arrives, which is normally right after the ALTER; if the table changed again since,
//! the message and the catalog disagree and pgch asks for a resync rather than guess.

use std::collections::BTreeMap;

use crate::config::DestinationSettings;
use crate::sink::client as ch_client;
use crate::sink::preflight::{escape_string, quote_ident as ch_quote};
use crate::sink::types::MappingOptions;
use crate::snapshot::plan::{plan_table, TablePlan};
use crate::source::columns::{published_columns, CatalogColumn};
use crate::source::pgoutput::Relation;
use crate::source::row::{column, ColumnError, ReadError};

use super::apply::ApplyError;

/// The table as the Relation message describes it, planned, and the DDL that brings
/// ClickHouse there.
#[derive(Debug)]
pub struct Reshape {
    pub plan: TablePlan,
    pub statements: Vec<String>,
    /// An older shape replayed as it is: the catalog's current columns are unchanged.
    pub replayed: bool,
}

/// How tables are planned: the source's catalog version and the destination's type map
/// (the same the snapshot used, so a shape change keeps both paths encoding alike).
#[derive(Clone, Copy, Debug)]
pub struct Planning<'a> {
    pub server_version: u32,
    pub mapping: &'a MappingOptions,
}

/// Plans the ClickHouse changes for `relation`, which differs from `old`; `live` are the
/// table's columns as the catalog last showed them (a ClickHouse column of the same
/// name that is not live is a dropped one).
pub async fn reshape(
    pg: &tokio_postgres::Client,
    ch: &clickhouse::Client,
    dest: &DestinationSettings,
    old: &TablePlan,
    live: &std::collections::BTreeSet<String>,
    relation: &Relation,
    planning: Planning<'_>,
) -> Result<Reshape, ApplyError> {
    let (server_version, mapping) = (planning.server_version, planning.mapping);
    let table = old.source.display();
    let resync = |detail: String| ApplyError::SchemaChanged {
        table: table.clone(),
        detail,
    };
    let catalog = published_columns(pg, &old.source, server_version)
        .await
        .map_err(|source| catalog_error(&table, source))?;
    let names: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
    let current: Vec<&str> = catalog.iter().map(|c| c.name.as_str()).collect();
    if names != current {
        return replayed_shape(ch, dest, old, &catalog, relation, mapping)
            .await?
            .ok_or_else(|| {
                resync(format!(
                    "the stream sends columns ({}) but the catalog now has ({}), and ClickHouse cannot take the stream's shape as it is",
                    names.join(", "),
                    current.join(", ")
                ))
            });
    }
    let mut plan = plan_table(&old.source, old.dest.clone(), catalog.clone(), mapping)
        .map_err(|e| resync(e.to_string()))?;
    let key = |cols: &[CatalogColumn]| -> Vec<i16> {
        let mut k: Vec<(usize, i16)> = cols
            .iter()
            .filter_map(|c| c.key_position.map(|p| (p, c.attnum)))
            .collect();
        k.sort();
        k.into_iter().map(|(_, a)| a).collect()
    };
    if key(&old.columns) != key(&catalog) {
        return Err(resync("its replica identity key changed".into()));
    }
    let existing = ch_columns(ch, dest, &old.dest).await?;
    let by_attnum: BTreeMap<i16, &CatalogColumn> =
        old.columns.iter().map(|c| (c.attnum, c)).collect();
    let table_sql = format!("{}.{}", ch_quote(&dest.database), ch_quote(&old.dest));
    let mut statements = Vec::new();
    for (index, col) in catalog.iter().enumerate() {
        let mut name_in_ch = col.name.clone();
        if let Some(before) = by_attnum.get(&col.attnum) {
            if before.name != col.name && existing.contains_key(&before.name) {
                statements.push(format!(
                    "ALTER TABLE {table_sql} RENAME COLUMN {} TO {}",
                    ch_quote(&before.name),
                    ch_quote(&col.name)
                ));
            }
        } else if !existing.contains_key(&col.name) {
            let ch_type = &plan.spec.columns[index].ch_type;
            statements.push(add_column_sql(pg, &old.source, col, ch_type, &table_sql).await?);
            continue;
        } else if !live.contains(&col.name) {
            // A new column named like one dropped earlier (kept in ClickHouse): its old
            // values would show where Postgres has the new column's.
            return Err(resync(format!(
                "column {} was added with the name of a dropped column that ClickHouse still holds",
                col.name
            )));
        } else {
            name_in_ch = col.name.clone();
        }
        let renamed_from = by_attnum
            .get(&col.attnum)
            .map(|b| b.name.clone())
            .unwrap_or_else(|| name_in_ch.clone());
        let ch_type = existing
            .get(&col.name)
            .or_else(|| existing.get(&renamed_from))
            .cloned()
            .unwrap_or_default();
        if ch_type != plan.spec.columns[index].ch_type {
            // A column kept in an earlier lossless form (`time` as `String`) stays so.
            plan.keep_existing_form(index, &ch_type)
                .map_err(|e| resync(e.to_string()))?;
        }
        let spec = &plan.spec.columns[index];
        if ch_type == spec.ch_type {
            continue;
        }
        if is_safe_widening(&ch_type, &spec.ch_type) {
            statements.push(format!(
                "ALTER TABLE {table_sql} MODIFY COLUMN {} {}",
                ch_quote(&col.name),
                spec.ch_type
            ));
        } else {
            return Err(resync(format!(
                "column {} changed from {ch_type} to {}, which is not a widening that keeps every value",
                col.name, spec.ch_type
            )));
        }
    }
    Ok(Reshape {
        plan,
        statements,
        replayed: false,
    })
}

/// An older shape than the catalog's — changes replayed after a reconnect or restart,
/// from before an `ALTER` pgch already followed: written as they are when ClickHouse has
/// every column they carry (columns added since take their default there). `None` when
/// it has not (a column renamed or dropped since): the caller asks for a resync.
async fn replayed_shape(
    ch: &clickhouse::Client,
    dest: &DestinationSettings,
    old: &TablePlan,
    catalog: &[CatalogColumn],
    relation: &Relation,
    mapping: &MappingOptions,
) -> Result<Option<Reshape>, ApplyError> {
    let existing = ch_columns(ch, dest, &old.dest).await?;
    let mut columns = Vec::with_capacity(relation.columns.len());
    for sent in &relation.columns {
        let known = catalog
            .iter()
            .chain(&old.columns)
            .find(|c| c.name == sent.name && existing.contains_key(&c.name));
        match known {
            Some(c) => columns.push(c.clone()),
            None => return Ok(None),
        }
    }
    Ok(plan_table(&old.source, old.dest.clone(), columns, mapping)
        .ok()
        .map(|mut plan| {
            keep_existing_forms(&mut plan, &existing);
            Reshape {
                plan,
                statements: Vec::new(),
                replayed: true,
            }
        }))
}

/// Keeps every column ClickHouse holds in an earlier lossless form in that form.
fn keep_existing_forms(plan: &mut TablePlan, existing: &BTreeMap<String, String>) {
    for index in 0..plan.columns.len() {
        let Some(found) = existing.get(&plan.spec.columns[index].name) else {
            continue;
        };
        if *found != plan.spec.columns[index].ch_type {
            // Other differences are left as the catalog plans them: the replayed
            // changes predate a change pgch already followed.
            let _ = plan.keep_existing_form(index, found);
        }
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
) -> Result<String, ApplyError> {
    let table = source.display();
    let clause = match missing_value(pg, source.oid, col.attnum, &table).await? {
        Missing::Null => String::new(),
        Missing::Value(v) => format!(" DEFAULT {}", default_literal(ch_type, &v)),
        Missing::Rewritten => {
            return Err(ApplyError::SchemaChanged {
                table,
                detail: format!(
                    "column {} was added with a volatile default, which rewrote the table without streaming the values",
                    col.name
                ),
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
) -> Result<Missing, ApplyError> {
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
) -> Result<Option<String>, ApplyError> {
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

/// A failed catalog read about `table`.
fn catalog_error(table: &str, source: impl Into<ReadError>) -> ApplyError {
    ApplyError::Catalog {
        table: table.to_string(),
        source: source.into(),
    }
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

async fn ch_columns(
    ch: &clickhouse::Client,
    dest: &DestinationSettings,
    table: &str,
) -> Result<BTreeMap<String, String>, ApplyError> {
    let text = ch_client::query_text(
        ch,
        dest,
        &format!(
            "SELECT name, type FROM system.columns WHERE database = '{}' AND table = '{}' FORMAT JSONCompactEachRow",
            escape_string(&dest.database),
            escape_string(table)
        ),
    )
    .await?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<(String, String)>(l).ok())
        .collect())
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
