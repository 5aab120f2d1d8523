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
use crate::source::row::ReadError;

use super::error::ApplyError;
use crate::schema::{add_column_sql, is_safe_widening, AddColumnError};

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
    let mut plan = plan_table(
        &old.source,
        old.dest.clone(),
        catalog.clone(),
        mapping,
        &still_published(old, &catalog),
    )
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
    let written = plan.columns.clone();
    for (index, col) in written.iter().enumerate() {
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
            statements.push(
                add_column_sql(pg, &old.source, col, ch_type, &table_sql)
                    .await
                    .map_err(from_add_column)?,
            );
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
        let excluded = old.options.exclude_columns.contains(&sent.name);
        let known = catalog
            .iter()
            .chain(&old.published)
            .find(|c| c.name == sent.name && (excluded || existing.contains_key(&c.name)));
        match known {
            Some(c) => columns.push(c.clone()),
            None => return Ok(None),
        }
    }
    Ok(plan_table(
        &old.source,
        old.dest.clone(),
        columns.clone(),
        mapping,
        &still_published(old, &columns),
    )
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

/// The table's layout for its new columns. A left-out column stays out whatever
/// happens to it: renamed, under its new name (found by attnum); dropped, under its old
/// name (one added again with it stays out); and a new column taking a left-out name is
/// left out too. A type override follows its column's renames and goes with it.
fn still_published(old: &TablePlan, columns: &[CatalogColumn]) -> crate::config::TableOptions {
    let renamed = |name: &String| -> Option<String> {
        let attnum = old.published.iter().find(|c| &c.name == name)?.attnum;
        columns
            .iter()
            .find(|c| c.attnum == attnum)
            .map(|c| c.name.clone())
    };
    let mut options = old.options.clone();
    let mut excluded: Vec<String> = Vec::new();
    for name in &old.options.exclude_columns {
        for kept in [Some(name.clone()), renamed(name)].into_iter().flatten() {
            if !excluded.contains(&kept) {
                excluded.push(kept);
            }
        }
    }
    options.exclude_columns = excluded;
    options.column_types = old
        .options
        .column_types
        .iter()
        .filter_map(|(name, ty)| {
            let now = if columns.iter().any(|c| &c.name == name) {
                name.clone()
            } else {
                renamed(name)?
            };
            Some((now, ty.clone()))
        })
        .collect();
    options
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

/// A failed catalog read about `table`.
fn catalog_error(table: &str, source: impl Into<ReadError>) -> ApplyError {
    ApplyError::Catalog {
        table: table.to_string(),
        source: source.into(),
    }
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

/// An added column pgch cannot follow: a catalog failure as before, a rewrite as a
/// shape change that needs the table resynced.
fn from_add_column(e: AddColumnError) -> ApplyError {
    match e {
        AddColumnError::Catalog { table, source } => ApplyError::Catalog { table, source },
        AddColumnError::Rewritten { table, column } => ApplyError::SchemaChanged {
            table,
            detail: format!(
                "column {column} was added with a volatile default, which rewrote the table without streaming the values"
            ),
        },
    }
}
