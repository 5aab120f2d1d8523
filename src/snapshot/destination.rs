//! The destination side of the copy: each planned table's ClickHouse table created, or an
//! existing one checked and brought in line, before any row is written to it — by the
//! copy at start and by tables that join the publication later.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Settings;
use crate::sink::client::{self as ch_client};
use crate::sink::ddl;
use crate::sink::preflight::escape_string;
use crate::sink::state::{keys, StateStore};
use crate::source::connect;

use super::plan::TablePlan;
use super::{Prepared, SnapshotError};

/// Creates (or checks) the ClickHouse tables of planned tables.
pub async fn prepare_plans(
    settings: &Settings,
    plans: Vec<TablePlan>,
    version: u32,
) -> Result<Prepared, SnapshotError> {
    let dest = &settings.destination;
    let ch = ch_client::client(dest, false);
    ch_client::execute(
        &ch,
        dest,
        &ddl::create_database_sql(&dest.database, dest.cluster.as_deref()),
    )
    .await?;
    let state = StateStore::open(dest, &settings.source.slot).await?;
    let done = state.load().await?;
    let mut plans = plans;
    for plan in &mut plans {
        ensure_table(&ch, settings, &state, &done, plan).await?;
    }
    Ok(Prepared {
        plans: plans.into_iter().map(Arc::new).collect(),
        server_version: version,
    })
}

/// Creates (or checks) the ClickHouse tables of tables that joined the publication
/// after the start, colliding with none of `existing` destination names.
pub async fn prepare_joined(
    settings: &Settings,
    plans: Vec<TablePlan>,
    existing: &[Arc<TablePlan>],
    server_version: u32,
) -> Result<Prepared, SnapshotError> {
    let mut all: Vec<TablePlan> = existing.iter().map(|p| p.as_ref().clone()).collect();
    all.extend(plans.iter().cloned());
    check_collisions(&all)?;
    let dest = &settings.destination;
    let ch = ch_client::client(dest, false);
    let state = StateStore::open(dest, &settings.source.slot).await?;
    let done = state.load().await?;
    let mut plans = plans;
    for plan in &mut plans {
        ensure_table(&ch, settings, &state, &done, plan).await?;
    }
    Ok(Prepared {
        plans: plans.into_iter().map(Arc::new).collect(),
        server_version,
    })
}

pub(super) fn check_collisions(plans: &[TablePlan]) -> Result<(), SnapshotError> {
    let mut seen: BTreeMap<&str, &TablePlan> = BTreeMap::new();
    for p in plans {
        if let Some(other) = seen.insert(&p.dest, p) {
            return Err(SnapshotError::NameCollision(format!(
                "{} and {} both map to {}",
                other.source.display(),
                p.source.display(),
                p.dest
            )));
        }
    }
    Ok(())
}

/// Creates the table, or accepts an existing one only when the state says it is ours.
async fn ensure_table(
    ch: &clickhouse::Client,
    settings: &Settings,
    state: &StateStore<'_>,
    done: &BTreeMap<String, String>,
    plan: &mut TablePlan,
) -> Result<(), SnapshotError> {
    let dest = &settings.destination;
    let exists = ch_client::query_text(
        ch,
        dest,
        &format!(
            "SELECT count() FROM system.tables WHERE database = '{}' AND name = '{}'",
            escape_string(&dest.database),
            escape_string(&plan.dest)
        ),
    )
    .await?;
    let owned = done.contains_key(&keys::table_owned(&plan.dest));
    if exists.trim() != "0" {
        if !owned {
            return Err(SnapshotError::ForeignTable {
                database: dest.database.clone(),
                table: plan.dest.clone(),
                slot: settings.source.slot.clone(),
            });
        }
        check_compatible(ch, settings, plan).await?;
    }
    if !owned {
        // Claimed before it is created: a crash between the two must not leave a table
        // the next start takes for someone else's.
        state
            .put(&keys::table_owned(&plan.dest), &plan.source.display())
            .await?;
    }
    ch_client::execute(
        ch,
        dest,
        &ddl::create_table_sql(&dest.database, &plan.spec, dest.cluster.as_deref()),
    )
    .await?;
    if plan.is_multiset() && !crate::sink::names::is_shadow(&plan.dest) {
        // How a multiset reads as Postgres holds it (README: keyless tables).
        let sql = ddl::current_view_sql(&dest.database, &plan.spec, dest.cluster.as_deref());
        ch_client::execute(ch, dest, &sql).await?;
    }
    Ok(())
}

/// An existing table must have every planned column with the planned type; columns
/// dropped in Postgres may stay (DESIGN.md rule 9). Changes made while pgch was away are
/// followed where that is unambiguous: a wider type is applied, and columns Postgres
/// added are added (with the value existing rows hold) when ClickHouse has no column
/// the plan lacks — otherwise a missing column might be a renamed one, whose values a
/// new empty column would hide. A column made in a form pgch still writes losslessly (a
/// `time` stored as `String` before pgch asked the server for `Time64`) keeps it: the
/// plan maps it that way again, and `pgch resync` of the table moves it to the richer
/// type ([`TablePlan::keep_existing_form`]).
async fn check_compatible(
    ch: &clickhouse::Client,
    settings: &Settings,
    plan: &mut TablePlan,
) -> Result<(), SnapshotError> {
    use crate::schema::{add_column_sql, is_safe_widening};
    let dest = &settings.destination;
    let text = ch_client::query_text(
        ch,
        dest,
        &format!(
            "SELECT name, type FROM system.columns WHERE database = '{}' AND table = '{}'",
            escape_string(&dest.database),
            escape_string(&plan.dest)
        ),
    )
    .await?;
    let existing: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, t)| (unescape_tsv(n), unescape_tsv(t)))
        .collect();
    let table = format!("{}.{}", dest.database, plan.dest);
    let source_table = plan.source.display();
    let incompatible = |problem: String| SnapshotError::IncompatibleTable {
        table: table.clone(),
        problem,
        source_table: source_table.clone(),
    };
    let unexplained: Vec<&String> = existing
        .keys()
        .filter(|n| !n.starts_with('_') && !plan.spec.columns.iter().any(|c| &c.name == *n))
        .collect();
    if plan.is_multiset() && !existing.contains_key("_sign") {
        return Err(incompatible(
            "is a keyless table written before pgch kept such tables as multisets (no `_sign` column), where equal rows collapse".into(),
        ));
    }
    let table_sql = format!(
        "{}.{}",
        crate::sink::preflight::quote_ident(&dest.database),
        crate::sink::preflight::quote_ident(&plan.dest)
    );
    let mut statements = Vec::new();
    for index in 0..plan.columns.len() {
        if let Some(found) = existing.get(&plan.spec.columns[index].name) {
            let planned = plan.spec.columns[index].ch_type.clone();
            if *found != planned && plan.keep_existing_form(index, found)? {
                tracing::info!(table = %table, column = %plan.spec.columns[index].name, kept = %found, instead_of = %planned, "keeping the column's existing form; `pgch resync` the table for the richer type");
            }
        }
        let (col, spec) = (&plan.columns[index], &plan.spec.columns[index]);
        match existing.get(&spec.name) {
            None if unexplained.is_empty() => {
                let pg = connect::connect(&settings.source.endpoint).await?;
                let sql = add_column_sql(&pg, &plan.source, col, &spec.ch_type, &table_sql)
                    .await
                    .map_err(|e| incompatible(e.to_string()))?;
                statements.push(sql);
            }
            None => {
                return Err(incompatible(format!(
                    "has no column `{}` (expected {}) but has `{}`, which Postgres no longer publishes: a rename cannot be told from a drop and an add",
                    spec.name,
                    spec.ch_type,
                    unexplained.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("`, `")
                )))
            }
            Some(found) if *found == spec.ch_type => {}
            Some(found) if is_safe_widening(found, &spec.ch_type) => statements.push(format!(
                "ALTER TABLE {table_sql} MODIFY COLUMN {} {}",
                crate::sink::preflight::quote_ident(&spec.name),
                spec.ch_type
            )),
            Some(found) => {
                return Err(incompatible(format!(
                    "column `{}` is {found}, but Postgres' {} needs {}",
                    spec.name,
                    plan.source.display(),
                    spec.ch_type
                )))
            }
        }
    }
    for sql in statements {
        tracing::info!(table = %table, statement = %sql, "following a schema change made while pgch was stopped");
        ch_client::execute(ch, dest, &sql).await?;
    }
    Ok(())
}

fn unescape_tsv(field: &str) -> String {
    field
        .replace("\\t", "\t")
        .replace("\\n", "\n")
        .replace("\\\\", "\\")
        .replace("\\'", "'")
}
