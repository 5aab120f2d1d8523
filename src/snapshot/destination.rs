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
    check_collisions(&all, settings.destination.create_views)?;
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

/// Two tables may not share a destination name, nor a table take the name of another's
/// `<table>_current` view.
pub(super) fn check_collisions(plans: &[TablePlan], views: bool) -> Result<(), SnapshotError> {
    let mut seen: BTreeMap<String, &TablePlan> = BTreeMap::new();
    for p in plans {
        if let Some(other) = seen.insert(p.dest.clone(), p) {
            return Err(SnapshotError::NameCollision(format!(
                "{} and {} both map to {}",
                other.source.display(),
                p.source.display(),
                p.dest
            )));
        }
    }
    for p in plans
        .iter()
        .filter(|p| !p.is_history() && (views || p.is_multiset()))
    {
        let view = ddl::current_view_name(&p.dest);
        if let Some(other) = seen.get(&view) {
            return Err(SnapshotError::NameCollision(format!(
                "{} maps to {view}, the name of the view of {} (set destination.create_views = false, or give it another [[tables]] destination)",
                other.source.display(),
                p.source.display(),
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
        check_mapping(done, plan)?;
        check_compatible(ch, settings, plan).await?;
    }
    if !owned {
        // Claimed before it is created: a crash between the two must not leave a table
        // the next start takes for someone else's.
        state
            .put(&keys::table_owned(&plan.dest), &plan.source.display())
            .await?;
    }
    // Recorded before the table is made, as the claim: a crash in between must not
    // leave a table whose layout the next start takes for a changed mapping.
    record_mapping(state, done, plan).await?;
    ch_client::execute(
        ch,
        dest,
        &ddl::create_table_sql(&dest.database, &plan.spec, dest.cluster.as_deref()),
    )
    .await?;
    Ok(refresh_view(ch, dest, plan).await?)
}

/// Makes (or remakes, after its columns changed) the table's `<table>_current` view: a
/// multiset's always (it is how such a table reads as Postgres holds it), a keyed
/// table's when `destination.create_views` is on. A resync's shadow gets none.
pub async fn refresh_view(
    ch: &clickhouse::Client,
    dest: &crate::config::DestinationSettings,
    plan: &TablePlan,
) -> Result<(), ch_client::SinkError> {
    let wanted = plan.is_multiset() || dest.create_views;
    if crate::sink::names::is_shadow(&plan.dest) || plan.is_history() || !wanted {
        return Ok(());
    }
    let sql = ddl::view_sql(&dest.database, &plan.spec, dest.cluster.as_deref());
    ch_client::execute(ch, dest, &sql).await
}

/// An existing table was made with the layout recorded for it; another one needs a
/// resync (the sort key, partitions and columns of a ClickHouse table are fixed).
fn check_mapping(done: &BTreeMap<String, String>, plan: &TablePlan) -> Result<(), SnapshotError> {
    let recorded = done
        .get(&keys::mapping(&plan.dest))
        .map(String::as_str)
        .unwrap_or("");
    let wanted = plan.options.fingerprint();
    if recorded == wanted {
        return Ok(());
    }
    let describe = |f: &str| {
        if f.is_empty() {
            "the default layout".to_string()
        } else {
            format!("({f})")
        }
    };
    Err(SnapshotError::MappingChanged {
        source_table: plan.source.display(),
        table: plan.dest.clone(),
        was: describe(recorded),
        now: describe(&wanted),
    })
}

/// Records the layout a table is now made with, when it differs from the record.
pub async fn record_mapping(
    state: &StateStore<'_>,
    done: &BTreeMap<String, String>,
    plan: &TablePlan,
) -> Result<(), SnapshotError> {
    let key = keys::mapping(&plan.dest);
    let wanted = plan.options.fingerprint();
    if done.get(&key).map(String::as_str).unwrap_or("") != wanted {
        state.put(&key, &wanted).await?;
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
    let made_as_history = existing.contains_key("_op") && !existing.contains_key("_is_deleted");
    if plan.is_history() != made_as_history {
        return Err(incompatible(if plan.is_history() {
            "is not a history table (no `_op` column): the mapping asks for one".into()
        } else {
            "is a history table (it has `_op`): the mapping asks for the current rows".into()
        }));
    }
    if plan.is_multiset() && !plan.is_history() && !existing.contains_key("_sign") {
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
