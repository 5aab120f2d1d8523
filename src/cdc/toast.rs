//! Unchanged TOAST values the batch could not supply, read from Postgres by key
//! (DESIGN.md rule 6), many keys per query.
//!
//! An UPDATE that leaves a TOASTed column alone sends it as "unchanged"; when no earlier
//! image of the row is in the batch, the current value is read by the row's replica
//! identity key. Keys are compared as Postgres' text output (the session settings are
//! pinned, so it is the text pgoutput sent), values are read with the type's output
//! function, as the stream sends them. A row gone by now is superseded by its later
//! delete, so its cell becomes a placeholder harmlessly.
//!
//! The read must see the transactions that made the changes: with synchronous
//! replication the walsender can send a commit before it is visible to other sessions.
//! Each query therefore checks, in its own snapshot, that every transaction whose
//! UPDATE left a value unchanged is visible, and returns no rows (to be asked again
//! shortly) while one is not.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::ApplyError;
use crate::pipeline::batch::{Cell, TableBatch};
use crate::snapshot::plan::TablePlan;
use crate::source::catalog::quote_ident;
use crate::source::row::column;

/// Keys per query: a few hundred keep the statement and its parameters small.
const KEYS_PER_QUERY: usize = 500;

/// How long a query waits for the changes' transactions to become visible before the
/// session is given up (and the changes read again from the slot).
const VISIBILITY_WAIT: Duration = Duration::from_secs(30);

type Key = Vec<Option<Bytes>>;

/// Fills every unresolved cell of `batch` from Postgres, in snapshots that see the
/// transactions `xids` (those whose UPDATEs left a TOASTed value unchanged).
pub async fn resolve(
    pg: &tokio_postgres::Client,
    plan: &TablePlan,
    batch: &mut TableBatch,
    xids: &BTreeSet<u32>,
) -> Result<(), ApplyError> {
    let missing = batch.unresolved();
    if missing.is_empty() {
        return Ok(());
    }
    let key_cols: Vec<usize> = plan.key_columns();
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
    let xid_array = format!(
        "{{{}}}",
        xids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    for chunk in keys.chunks(KEYS_PER_QUERY) {
        let sql = visible_select_sql(&select_sql(plan, &key_cols, &wanted, chunk.len()));
        let params: Vec<Option<String>> = std::iter::once(Some(xid_array.clone()))
            .chain(chunk.iter().flat_map(|k| {
                k.iter()
                    .map(|v| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
            }))
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = read_when_visible(pg, plan, &sql, &refs).await?;
        for row in rows {
            let text = |i: usize| {
                column::<Option<String>>(&row, i, "reading unchanged TOAST values by key").map_err(
                    |e| ApplyError::Toast {
                        table: plan.source.display(),
                        source: e.into(),
                    },
                )
            };
            // Columns 0 and 1 are the visibility verdict and the match mark.
            let key: Key = (2..2 + key_cols.len())
                .map(|i| text(i).map(|v| v.map(Bytes::from)))
                .collect::<Result<_, _>>()?;
            let values = (2 + key_cols.len()..2 + key_cols.len() + wanted.len())
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

/// Runs the read until its snapshot sees every listed transaction; returns the matched
/// rows.
async fn read_when_visible(
    pg: &tokio_postgres::Client,
    plan: &TablePlan,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, ApplyError> {
    let failed = |source: crate::source::row::ReadError| ApplyError::Toast {
        table: plan.source.display(),
        source,
    };
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let rows = pg.query(sql, params).await.map_err(|e| failed(e.into()))?;
        let visible = match rows.first() {
            Some(row) => column::<bool>(row, 0, "checking the changes' visibility")
                .map_err(|e| failed(e.into()))?,
            None => true,
        };
        if visible {
            let mut matched = Vec::with_capacity(rows.len());
            for row in rows {
                let hit: Option<bool> = column(&row, 1, "reading unchanged TOAST values by key")
                    .map_err(|e| failed(e.into()))?;
                if hit == Some(true) {
                    matched.push(row);
                }
            }
            return Ok(matched);
        }
        if started.elapsed() > VISIBILITY_WAIT {
            return Err(ApplyError::NotVisible {
                table: plan.source.display(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Wraps a key read so that one statement (one snapshot) also says whether the
/// transactions in `$1` (32-bit xids as sent in Begin, widened with the snapshot's
/// epoch) are visible: `(visible, matched, …)` rows, or a single `(false, NULL, …)`.
fn visible_select_sql(select: &str) -> String {
    format!(
        "SELECT vis.visible, r.* FROM ( \
           SELECT coalesce(bool_and(txid_visible_in_snapshot( \
             (((txid_snapshot_xmax(snap.s) >> 32) \
               - CASE WHEN x > (txid_snapshot_xmax(snap.s) & 4294967295) THEN 1 ELSE 0 END) << 32) | x, \
             snap.s)), true) AS visible \
           FROM (SELECT txid_current_snapshot() AS s) snap \
           LEFT JOIN unnest($1::text::int8[]) AS x ON true \
         ) vis LEFT JOIN ({select}) r ON vis.visible"
    )
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
    // $1 is the array of transaction ids (see `visible_select_sql`).
    let mut n = 1;
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
        "SELECT true AS matched, {} FROM {} WHERE ({}) IN ({})",
        select.join(", "),
        plan.source.qualified(),
        tuple.join(", "),
        values.join(", ")
    )
}
