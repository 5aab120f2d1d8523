//! Unchanged TOAST values the batch could not supply, read from Postgres by key
//! (DESIGN.md rule 6), many keys per query.
//!
//! An UPDATE that leaves a TOASTed column alone sends it as "unchanged"; when no earlier
//! image of the row is in the batch, the current value is read by the row's replica
//! identity key. Keys are compared as Postgres' text output (the session settings are
//! pinned, so it is the text pgoutput sent), values are read with the type's output
//! function, as the stream sends them. A row gone by now is superseded by its later
//! delete, so its cell becomes a placeholder harmlessly. Read committed sees every
//! commit the stream has delivered; with synchronous replication the stream can run
//! ahead of visibility, which is not handled yet.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::apply::ApplyError;
use crate::pipeline::batch::{Cell, TableBatch};
use crate::snapshot::plan::TablePlan;
use crate::source::catalog::quote_ident;
use crate::source::row::column;

/// Keys per query: a few hundred keep the statement and its parameters small.
const KEYS_PER_QUERY: usize = 500;

type Key = Vec<Option<Bytes>>;

/// Fills every unresolved cell of `batch` from Postgres.
pub async fn resolve(
    pg: &tokio_postgres::Client,
    plan: &TablePlan,
    batch: &mut TableBatch,
) -> Result<(), ApplyError> {
    let missing = batch.unresolved();
    if missing.is_empty() {
        return Ok(());
    }
    let key_cols: Vec<usize> = plan
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key())
        .map(|(i, _)| i)
        .collect();
    let wanted: Vec<usize> = missing
        .iter()
        .map(|(_, c, _)| *c)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let keys: Vec<Key> = {
        let mut seen = BTreeSet::new();
        missing
            .iter()
            .filter(|(_, _, k)| seen.insert(k.clone()))
            .map(|(_, _, k)| k.clone())
            .collect()
    };
    let mut found: HashMap<Key, Vec<Option<String>>> = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_QUERY) {
        let sql = select_sql(plan, &key_cols, &wanted, chunk.len());
        let params: Vec<Option<String>> = chunk
            .iter()
            .flat_map(|k| {
                k.iter()
                    .map(|v| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
            })
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = pg
            .query(&sql, &refs)
            .await
            .map_err(|source| ApplyError::Toast {
                table: plan.source.display(),
                source: source.into(),
            })?;
        for row in rows {
            let text = |i: usize| {
                column::<Option<String>>(&row, i, "reading unchanged TOAST values by key").map_err(
                    |e| ApplyError::Toast {
                        table: plan.source.display(),
                        source: e.into(),
                    },
                )
            };
            let key: Key = (0..key_cols.len())
                .map(|i| text(i).map(|v| v.map(Bytes::from)))
                .collect::<Result<_, _>>()?;
            let values = (key_cols.len()..key_cols.len() + wanted.len())
                .map(text)
                .collect::<Result<_, _>>()?;
            found.insert(key, values);
        }
    }
    for (row, column, key) in missing {
        let cell = found
            .get(&key)
            .and_then(|values| {
                let at = wanted.iter().position(|&c| c == column)?;
                values.get(at).cloned()
            })
            .map(|v| match v {
                Some(text) => Cell::Text(Bytes::from(text)),
                // NULL now: the row was updated after this change; that later image
                // (with a higher version) wins, so any valid value will do here.
                None => Cell::Placeholder,
            })
            .unwrap_or(Cell::Placeholder);
        batch.resolve(row, column, cell);
    }
    Ok(())
}

/// `SELECT <keys as text>, <wanted columns as text> FROM t WHERE (k…) IN ((…), …)`.
fn select_sql(plan: &TablePlan, key_cols: &[usize], wanted: &[usize], keys: usize) -> String {
    let as_text = |i: usize| {
        let c = quote_ident(&plan.columns[i].name);
        format!("CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END")
    };
    let select: Vec<String> = key_cols.iter().chain(wanted).map(|&i| as_text(i)).collect();
    let tuple: Vec<String> = key_cols
        .iter()
        .map(|&k| quote_ident(&plan.columns[k].name))
        .collect();
    let mut n = 0;
    let values: Vec<String> = (0..keys)
        .map(|_| {
            let cells: Vec<String> = key_cols
                .iter()
                .map(|&k| {
                    n += 1;
                    format!("${n}::text::{}", plan.columns[k].type_name)
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    format!(
        "SELECT {} FROM {} WHERE ({}) IN ({})",
        select.join(", "),
        plan.source.qualified(),
        tuple.join(", "),
        values.join(", ")
    )
}
