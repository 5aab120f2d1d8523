//! `pgch check`'s view of the `[[tables]]` layouts: each configured table planned
//! against the publication as `pgch run` would plan it, so an unknown table or column,
//! an excluded key or a sort column a delete could not carry is reported before
//! anything is created.

use crate::check_result::CheckResult;
use crate::config::Settings;
use crate::source::catalog::{self, PublishedTable};
use crate::source::connect;
use crate::source::row::column;

use super::{plan_one, SnapshotError, SnapshotOptions};

/// One line per configured `[[tables]]` entry (none when there are none).
pub async fn layout_checks(settings: &Settings) -> Vec<CheckResult> {
    let configured: Vec<&String> = settings
        .destination
        .table_options
        .keys()
        .chain(settings.destination.table_names.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if configured.is_empty() {
        return Vec::new();
    }
    match plan_configured(settings, &configured).await {
        Ok(results) => results,
        Err(e) => vec![CheckResult::failed(
            "table_layouts",
            format!("could not read the published tables to check [[tables]]: {e}"),
            "fix the source checks above first",
        )],
    }
}

async fn plan_configured(
    settings: &Settings,
    configured: &[&String],
) -> Result<Vec<CheckResult>, SnapshotError> {
    let pg = connect::connect(&settings.source.endpoint).await?;
    let row = pg
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(SnapshotError::Catalog)?;
    let version = column::<i32>(&row, 0, "reading server_version_num")? as u32;
    let tables = catalog::published_tables(&pg, &settings.source.publication, version).await?;
    let opts = SnapshotOptions::from_settings(settings);
    let mut out = Vec::new();
    for name in configured {
        let Some(table) = tables.iter().find(|t| &&t.display() == name) else {
            out.push(unpublished(settings, name));
            continue;
        };
        out.push(match plan_one(&pg, settings, &opts, table, version).await {
            Ok(plan) => CheckResult::ok("table_layouts", describe(table, &plan)),
            Err(SnapshotError::Plan(e)) => CheckResult::failed(
                "table_layouts",
                e.to_string(),
                "correct the [[tables]] entry (README: Per-table mapping)",
            ),
            Err(e) => return Err(e),
        });
    }
    Ok(out)
}

fn unpublished(settings: &Settings, name: &str) -> CheckResult {
    CheckResult::warning(
        "table_layouts",
        format!(
            "[[tables]] names {name}, which publication \"{}\" does not list: its settings apply only if it joins",
            settings.source.publication
        ),
        "check the spelling (schema.table, unquoted), or add the table to the publication",
    )
}

fn describe(table: &PublishedTable, plan: &super::plan::TablePlan) -> String {
    let mut order: Vec<&crate::sink::ddl::ColumnSpec> = plan
        .spec
        .columns
        .iter()
        .filter(|c| c.order_position.is_some())
        .collect();
    order.sort_by_key(|c| c.order_position);
    let order: Vec<&str> = order.iter().map(|c| c.name.as_str()).collect();
    let mut text = if plan.is_history() {
        format!(
            "{} -> {}: history of changes, ORDER BY (_lsn, _seq)",
            table.display(),
            plan.dest
        )
    } else {
        format!(
            "{} -> {}: ORDER BY ({})",
            table.display(),
            plan.dest,
            order.join(", ")
        )
    };
    if let Some(p) = &plan.spec.partition_by {
        text.push_str(&format!(", PARTITION BY {p}"));
    }
    if !plan.options.exclude_columns.is_empty() {
        text.push_str(&format!(
            ", left out: {}",
            plan.options.exclude_columns.join(", ")
        ));
    }
    text
}
