//! Publication and table checks: actions, tables, SELECT, replica identity, partitions,
//! destination names, row filters and column lists.

use crate::check_result::CheckResult;

/// Destination table names by source `schema.table`, where the config overrides them.
pub type TableNames = std::collections::BTreeMap<String, String>;
use crate::source::catalog::{self, quote_ident, Publication, PublishedTable, ReplicaIdentity};

/// One line describing the publication.
pub(super) fn describe_publication(p: &Publication) -> String {
    format!(
        "\"{}\" exists{}{}",
        p.name,
        if p.all_tables {
            " (FOR ALL TABLES)"
        } else {
            ""
        },
        if p.via_root {
            ", publish_via_partition_root"
        } else {
            ""
        }
    )
}

/// Missing actions mean changes that never reach ClickHouse.
pub fn judge_publication_actions(p: &Publication) -> CheckResult {
    let missing: Vec<&str> = [
        ("insert", p.insert),
        ("update", p.update),
        ("delete", p.delete),
        ("truncate", p.truncate),
    ]
    .iter()
    .filter(|(_, on)| !on)
    .map(|(name, _)| *name)
    .collect();
    if missing.is_empty() {
        return CheckResult::ok(
            "publication_actions",
            "publishes insert, update, delete, truncate",
        );
    }
    CheckResult::warning(
        "publication_actions",
        format!(
            "publication does not publish {}: those changes never reach ClickHouse and the tables drift apart",
            missing.join(", ")
        ),
        format!(
            "ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate');",
            quote_ident(&p.name)
        ),
    )
}

/// Per-table checks: there are tables, they can be read, they have a usable key, their
/// destination names do not collide, partitioned tables go through their root.
pub fn table_checks(
    publication: &Publication,
    tables: &[PublishedTable],
    user: &str,
    server_version: u32,
    names: &TableNames,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    if tables.is_empty() && publication.grows_by_itself() {
        out.push(CheckResult::warning(
            "publication_tables",
            format!(
                "publication \"{}\" lists no tables yet: tables created in {} will be copied and streamed when they appear",
                publication.name,
                publication.where_tables_appear()
            ),
            "none needed if the tables come later (migrations); otherwise create them in the publication's schema",
        ));
        return out;
    }
    if tables.is_empty() {
        out.push(CheckResult::failed(
            "publication_tables",
            format!("publication \"{}\" lists no tables", publication.name),
            format!(
                "ALTER PUBLICATION {} ADD TABLE <tables>;",
                quote_ident(&publication.name)
            ),
        ));
        return out;
    }
    let listed: Vec<String> = tables.iter().map(PublishedTable::display).collect();
    out.push(CheckResult::ok(
        "publication_tables",
        format!("{} table(s): {}", tables.len(), abbreviate(&listed, 10)),
    ));
    out.extend(privilege_checks(tables, user));
    out.extend(replica_identity_checks(tables));
    out.extend(partition_checks(publication, tables, server_version));
    out.push(name_collision_check(tables, names));
    out.extend(filter_reports(tables));
    out
}

fn abbreviate(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!(
            "{}, … and {} more",
            items[..max].join(", "),
            items.len() - max
        )
    }
}

fn privilege_checks(tables: &[PublishedTable], user: &str) -> Vec<CheckResult> {
    let missing: Vec<&PublishedTable> = tables
        .iter()
        .filter(|t| !t.can_select || !t.schema_usage)
        .collect();
    if missing.is_empty() {
        return vec![CheckResult::ok(
            "select_privilege",
            "SELECT on every published table",
        )];
    }
    missing
        .iter()
        .map(|t| {
            let what = if t.schema_usage { "SELECT on the table" } else { "USAGE on its schema" };
            CheckResult::failed(
                "select_privilege",
                format!("\"{user}\" lacks {what} {}", t.display()),
                format!(
                    "GRANT USAGE ON SCHEMA {s} TO {u}; GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {u}; ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO {u};",
                    s = quote_ident(&t.schema),
                    u = quote_ident(user)
                ),
            )
        })
        .collect()
}

fn replica_identity_checks(tables: &[PublishedTable]) -> Vec<CheckResult> {
    let mut out: Vec<CheckResult> = tables.iter().filter_map(judge_replica_identity).collect();
    if out
        .iter()
        .all(|c| c.outcome != crate::check_result::Outcome::Failed)
    {
        out.insert(
            0,
            CheckResult::ok(
                "replica_identity",
                "every published table has a usable replica identity",
            ),
        );
    }
    out
}

/// A table's replica identity decides whether updates and deletes carry a key.
pub fn judge_replica_identity(t: &PublishedTable) -> Option<CheckResult> {
    let both_fixes = format!(
        "ALTER TABLE {q} ADD PRIMARY KEY (<columns>); or ALTER TABLE {q} REPLICA IDENTITY FULL;",
        q = t.qualified()
    );
    match t.replica_identity {
        ReplicaIdentity::Full if !t.has_primary_key => Some(CheckResult::warning(
            "replica_identity",
            format!("{} has no primary key and REPLICA IDENTITY FULL: it is kept exactly, equal rows included, as a multiset — every change a row of its own (the ClickHouse table grows with every change; query its `_current` view), copied in one snapshot by one worker", t.display()),
            format!("add a primary key if the table has one: ALTER TABLE {} ADD PRIMARY KEY (<columns>);", t.qualified()),
        )),
        ReplicaIdentity::Full => None,
        ReplicaIdentity::Index if t.has_identity_index => None,
        ReplicaIdentity::Index => Some(CheckResult::failed(
            "replica_identity",
            format!("{} has REPLICA IDENTITY USING INDEX, but the index is gone", t.display()),
            both_fixes,
        )),
        ReplicaIdentity::Default if t.has_primary_key && t.primary_key_deferrable => Some(CheckResult::failed(
            "replica_identity",
            format!("{}: its primary key is DEFERRABLE, which Postgres cannot use as replica identity, so updates and deletes carry no key", t.display()),
            format!(
                "make the primary key NOT DEFERRABLE (ALTER TABLE {q} ALTER CONSTRAINT <pkey> NOT DEFERRABLE on Postgres 18+, else drop and re-add it), or ALTER TABLE {q} REPLICA IDENTITY FULL;",
                q = t.qualified()
            ),
        )),
        ReplicaIdentity::Default if t.has_primary_key => None,
        ReplicaIdentity::Default => Some(CheckResult::failed(
            "replica_identity",
            format!("{} has neither a primary key nor REPLICA IDENTITY FULL: its updates and deletes cannot be replicated", t.display()),
            both_fixes,
        )),
        ReplicaIdentity::Nothing => Some(CheckResult::failed(
            "replica_identity",
            format!("{} has REPLICA IDENTITY NOTHING: its updates and deletes cannot be replicated", t.display()),
            both_fixes,
        )),
    }
}

fn partition_checks(
    p: &Publication,
    tables: &[PublishedTable],
    server_version: u32,
) -> Vec<CheckResult> {
    let leaves: Vec<String> = tables
        .iter()
        .filter(|t| t.is_partition)
        .map(PublishedTable::display)
        .collect();
    if leaves.is_empty() || p.via_root {
        return Vec::new();
    }
    if server_version < 130000 {
        return vec![CheckResult::warning(
            "partitioned_tables",
            format!("partitions published as separate tables: {} (Postgres 12 cannot publish through the partition root)", abbreviate(&leaves, 10)),
            "each partition becomes its own ClickHouse table; upgrade to Postgres 13+ and set publish_via_partition_root = true to replicate the parent as one table",
        )];
    }
    vec![CheckResult::failed(
        "partitioned_tables",
        format!(
            "partitions are published without publish_via_partition_root: {}",
            abbreviate(&leaves, 10)
        ),
        format!(
            "ALTER PUBLICATION {} SET (publish_via_partition_root = true);",
            quote_ident(&p.name)
        ),
    )]
}

/// Two source tables must not map to the same ClickHouse table (`a_b.c` and `a.b_c`).
pub fn name_collision_check(tables: &[PublishedTable], names: &TableNames) -> CheckResult {
    let mut by_dest: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for t in tables {
        by_dest
            .entry(
                names
                    .get(&t.display())
                    .cloned()
                    .unwrap_or_else(|| catalog::destination_name(&t.schema, &t.name)),
            )
            .or_default()
            .push(t.display());
    }
    let collisions: Vec<String> = by_dest
        .iter()
        .filter(|(_, sources)| sources.len() > 1)
        .map(|(dest, sources)| format!("{} all map to {dest}", sources.join(" and ")))
        .collect();
    if collisions.is_empty() {
        CheckResult::ok(
            "destination_names",
            "every table maps to its own ClickHouse table",
        )
    } else {
        CheckResult::failed(
            "destination_names",
            format!("destination names collide: {}", collisions.join("; ")),
            "give one of them its own name: [[tables]] source = \"schema.table\" destination = \"name\"",
        )
    }
}

fn filter_reports(tables: &[PublishedTable]) -> Vec<CheckResult> {
    tables
        .iter()
        .filter(|t| t.row_filter.is_some() || t.column_list.is_some())
        .map(|t| {
            let mut parts = Vec::new();
            if let Some(f) = &t.row_filter {
                parts.push(format!("row filter {f}"));
            }
            if let Some(cols) = &t.column_list {
                parts.push(format!("columns ({})", cols.join(", ")));
            }
            CheckResult::ok(
                "publication_filters",
                format!(
                    "{}: {} (the copy applies them as the stream does)",
                    t.display(),
                    parts.join("; ")
                ),
            )
        })
        .collect()
}
