//! From a published table to its ClickHouse table: destination name, column types and
//! codecs, and the ORDER BY key (DESIGN.md rules 2 and 10).

use crate::config::TableOptions;
use crate::sink::ddl::{ColumnSpec, TableSpec, HISTORY_COLUMNS, MULTISET_COLUMNS, SYSTEM_COLUMNS};
use crate::sink::types::overrides::TypeOverride;
use crate::sink::types::{
    map_column, ColumnMapping, MappingError, MappingOptions, PgType, PgTypeKind,
};
use crate::source::catalog::{PublishedTable, ReplicaIdentity};
use crate::source::columns::CatalogColumn;

/// Everything needed to create, copy and stream one table.
#[derive(Clone, Debug)]
pub struct TablePlan {
    pub source: PublishedTable,
    /// The ClickHouse table name.
    pub dest: String,
    /// The columns pgch writes: the published ones less `exclude_columns`.
    pub columns: Vec<CatalogColumn>,
    /// Every published column, as the stream's tuples and Relation messages carry them.
    pub published: Vec<CatalogColumn>,
    pub mappings: Vec<ColumnMapping>,
    pub spec: TableSpec,
    /// The `[[tables]]` layout it was planned with (recorded with the table).
    pub options: TableOptions,
}

impl TablePlan {
    /// Positions of the replica identity key columns: how a row image is keyed.
    pub fn key_columns(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key())
            .map(|(i, _)| i)
            .collect()
    }

    /// Where each written column sits in the stream's tuples, when columns are left out
    /// (`None`: every published column is written, in order).
    pub fn projection(&self) -> Option<Vec<usize>> {
        if self.published.len() == self.columns.len() {
            return None;
        }
        Some(
            self.published
                .iter()
                .enumerate()
                .filter(|(_, p)| self.columns.iter().any(|c| c.attnum == p.attnum))
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// Whether a column is ClickHouse `JSON` (its inserts read it from strings).
    pub fn has_json(&self) -> bool {
        self.mappings.iter().any(|m| m.ch.needs_json_as_string())
    }

    /// Positions of the ClickHouse sort columns (`order_by`, then the key): what a
    /// delete marker must carry with the row's real values to meet its row, and what an
    /// UPDATE that changes them must leave a marker for.
    pub fn sort_columns(&self) -> Vec<usize> {
        self.spec
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.order_position.is_some())
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether the table is an append-only history of changes (`mode = "history"`):
    /// copied and streamed like a multiset (a held snapshot, every change a row named
    /// by its commit and position), written with [`HISTORY_COLUMNS`].
    pub fn is_history(&self) -> bool {
        self.spec.history
    }

    /// Whether the table is replicated as a multiset (no usable key under `REPLICA
    /// IDENTITY FULL`): every change a row of its own, `_sign` ±1 (see
    /// [`crate::pipeline::batch`]).
    pub fn is_multiset(&self) -> bool {
        self.spec.multiset
    }

    /// The columns every insert into the table writes, in order: the source's, then
    /// `_version`, `_is_deleted`, and for a multiset `_seq`, `_sign`.
    pub fn insert_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        if self.is_history() {
            // All but `_synced_at`, which ClickHouse fills.
            let written = HISTORY_COLUMNS.len() - 1;
            columns.extend(
                HISTORY_COLUMNS
                    .iter()
                    .take(written)
                    .map(|(n, _)| n.to_string()),
            );
            return columns;
        }
        columns.extend(SYSTEM_COLUMNS.iter().take(2).map(|(n, _)| n.to_string()));
        if self.is_multiset() {
            columns.extend(MULTISET_COLUMNS.iter().map(|(n, _)| n.to_string()));
        }
        columns
    }

    /// Maps column `index` the way an existing ClickHouse column of type `found` was
    /// made, when that is a form pgch writes losslessly: the conservative map (before
    /// the server was asked: `time` as `String`, `time[]` as `Array(Nullable(String))`)
    /// or the column's text. Returns whether it did; the plan is unchanged otherwise.
    pub fn keep_existing_form(&mut self, index: usize, found: &str) -> Result<bool, PlanError> {
        let Some(column) = self.columns.get(index) else {
            return Ok(false);
        };
        let is_key = column.is_key() && !self.spec.multiset;
        // Only the form the type map gives without the server's capabilities: a text
        // form of any type would also match a column whose Postgres type changed
        // (text -> int), hiding a change that needs a resync.
        let conservative = MappingOptions::default();
        let mapping = map_column(&pg_type(column), column.not_null, is_key, &conservative)
            .map_err(|source| PlanError::Mapping {
                table: self.source.display(),
                column: column.name.clone(),
                source,
            })?;
        if mapping.ch.ddl() != found {
            return Ok(false);
        }
        self.spec.columns[index].ch_type = found.to_string();
        self.mappings[index] = mapping;
        Ok(true)
    }

    /// The same plan writing to another ClickHouse table (a resync's shadow): same
    /// columns, types and key, so the two tables can be exchanged.
    pub fn with_dest(&self, dest: &str) -> TablePlan {
        let mut plan = self.clone();
        plan.dest = dest.to_string();
        plan.spec.name = dest.to_string();
        plan
    }
}

/// Why a table cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{table}.{column}: {source}")]
    Mapping {
        table: String,
        column: String,
        source: MappingError,
    },
    #[error("{0} has no published columns")]
    NoColumns(String),
    #[error("[[tables]] mode = \"history\" for {0} needs REPLICA IDENTITY FULL, so that every UPDATE and DELETE carries the whole old row and each history row holds the values of its change: run `ALTER TABLE {0} REPLICA IDENTITY FULL`")]
    HistoryNeedsFullIdentity(String),
    #[error("[[tables]] mode = \"history\" for {0}: a partitioned table cannot be a history yet (its copied rows would be named by ctids, which repeat across partitions); publish its partitions as tables of their own, or use mode = \"current\"")]
    HistoryPartitioned(String),
    #[error("[[tables]] column_types of {table} names `{column}`, which {table} does not publish")]
    UnknownTypedColumn { table: String, column: String },
    #[error("[[tables]] exclude_columns of {table} names `{column}`, which {table} does not publish (a misspelt name would let the column through)")]
    UnknownExcludedColumn { table: String, column: String },
    #[error("[[tables]] exclude_columns of {table}: `{column}` is in its replica identity key, which every row image needs to be deduplicated and deleted; leave it in")]
    ExcludedKeyColumn { table: String, column: String },
    #[error("[[tables]] order_by of {table} names `{column}`, which {table} does not publish")]
    UnknownSortColumn { table: String, column: String },
    #[error("[[tables]] order_by of {table}: `{column}` is {ch_type} in ClickHouse, which cannot be a sort key")]
    SortColumnNotOrderable {
        table: String,
        column: String,
        ch_type: String,
    },
    #[error("[[tables]] order_by of {table}: `{column}` is not in its replica identity key, so a DELETE (or an UPDATE moving the row) does not carry its old value and the delete marker could never meet its row; run `ALTER TABLE {table} REPLICA IDENTITY FULL` (then every change carries the whole old row), or leave `{column}` out of order_by")]
    SortNeedsFullIdentity { table: String, column: String },
    #[error("[[tables]] partition_by of {table} uses `{what}`, whose value differs when a change is written again after a crash: the replay would land in another partition and never replace the first write; partition by the table's columns")]
    PartitionNotRepeatable { table: String, what: String },
    #[error("[[tables]] partition_by of {table} uses `{column}`, which is not a sort column: ReplacingMergeTree collapses a row's versions only within one partition and a delete marker carries only the sort columns; partition by order_by or key columns")]
    PartitionOutsideSort { table: String, column: String },
}

/// The Postgres type of a catalog column, as the type map wants it.
pub fn pg_type(c: &CatalogColumn) -> PgType {
    let kind = match &c.element {
        Some(e) => PgTypeKind::Array {
            element: Box::new(PgType {
                oid: e.oid,
                typmod: e.typmod,
                name: e.name.clone(),
                kind: if e.kind == "e" {
                    PgTypeKind::Enum
                } else {
                    PgTypeKind::Base
                },
            }),
            dims: c.dims,
        },
        None if c.type_kind == "e" => PgTypeKind::Enum,
        None => PgTypeKind::Base,
    };
    PgType {
        oid: c.type_oid,
        typmod: c.typmod,
        name: c.type_name.clone(),
        kind,
    }
}

/// Plans one table with the `[[tables]]` layout `layout`.
pub fn plan_table(
    source: &PublishedTable,
    dest: String,
    columns: Vec<CatalogColumn>,
    opts: &MappingOptions,
    layout: &TableOptions,
) -> Result<TablePlan, PlanError> {
    if columns.is_empty() {
        return Err(PlanError::NoColumns(source.display()));
    }
    let keyless_full = source.replica_identity == ReplicaIdentity::Full && !source.has_primary_key;
    if layout.history && source.replica_identity != ReplicaIdentity::Full {
        return Err(PlanError::HistoryNeedsFullIdentity(source.display()));
    }
    // Tables whose every change is a row of its own: keyless multisets and histories.
    let change_rows = keyless_full || layout.history;
    if layout.history && source.relkind == "p" {
        // Copied rows are named by ctid, which is unique only within one leaf.
        return Err(PlanError::HistoryPartitioned(source.display()));
    }
    let published = columns;
    let columns = written_columns(source, &published, layout, keyless_full)?;
    let mut mappings = Vec::with_capacity(columns.len());
    let mut specs = Vec::with_capacity(columns.len());
    for c in &columns {
        // A keyless FULL table orders by all its columns, which may be NULL (rule 10);
        // a history by change.
        let is_key = c.is_key() && !change_rows;
        let mapping = match layout.column_types.get(&c.name) {
            Some(text) => {
                TypeOverride::parse(text).and_then(|o| o.map(&pg_type(c), c.not_null, is_key, opts))
            }
            None => map_column(&pg_type(c), c.not_null, is_key, opts),
        }
        .map_err(|source_err| PlanError::Mapping {
            table: source.display(),
            column: c.name.clone(),
            source: source_err,
        })?;
        specs.push(ColumnSpec {
            name: c.name.clone(),
            ch_type: mapping.ch.ddl(),
            order_position: None,
        });
        mappings.push(mapping);
    }
    let order = if layout.history {
        Vec::new()
    } else {
        sort_order(source, &columns, &mappings, layout, keyless_full)?
    };
    for (position, &index) in order.iter().enumerate() {
        specs[index].order_position = Some(position);
    }
    let nullable_sort = order.iter().any(|&i| mappings[i].ch.has_nullable());
    if let Some(expr) = &layout.partition_by {
        check_deterministic(source, expr)?;
        // A history row never meets another version: only a replay of itself, which
        // holds the same values.
        if !layout.history {
            check_partition(source, &specs, expr)?;
        }
    }
    Ok(TablePlan {
        source: source.clone(),
        spec: TableSpec {
            name: dest.clone(),
            columns: specs,
            nullable_key: !layout.history && (keyless_full || nullable_sort),
            multiset: change_rows,
            source: source.display(),
            partition_by: layout.partition_by.clone(),
            history: layout.history,
        },
        dest,
        columns,
        published,
        mappings,
        options: layout.clone(),
    })
}

/// The names a `[[tables]]` entry gives must be published columns: a misspelt
/// `exclude_columns` entry would let the column through. Checked when a table is
/// planned at start and by `pgch check`; the stream follows renames and drops itself.
pub fn check_layout_names(
    source: &PublishedTable,
    published: &[CatalogColumn],
    layout: &TableOptions,
) -> Result<(), PlanError> {
    let unknown = |name: &&String| !published.iter().any(|c| &c.name == *name);
    if let Some(name) = layout.exclude_columns.iter().find(unknown) {
        return Err(PlanError::UnknownExcludedColumn {
            table: source.display(),
            column: name.clone(),
        });
    }
    if let Some(name) = layout.column_types.keys().find(unknown) {
        return Err(PlanError::UnknownTypedColumn {
            table: source.display(),
            column: name.clone(),
        });
    }
    Ok(())
}

/// The published columns less `exclude_columns`; a left-out column must not be a key
/// column.
fn written_columns(
    source: &PublishedTable,
    published: &[CatalogColumn],
    layout: &TableOptions,
    keyless_full: bool,
) -> Result<Vec<CatalogColumn>, PlanError> {
    // Names not published are checked at start ([`check_layout_names`]); while
    // streaming they are left-out columns Postgres dropped, kept so one added again
    // under that name stays out.
    for name in &layout.exclude_columns {
        let Some(c) = published.iter().find(|c| &c.name == name) else {
            continue;
        };
        if c.is_key() && !keyless_full {
            return Err(PlanError::ExcludedKeyColumn {
                table: source.display(),
                column: name.clone(),
            });
        }
    }
    let kept: Vec<CatalogColumn> = published
        .iter()
        .filter(|c| !layout.exclude_columns.contains(&c.name))
        .cloned()
        .collect();
    if kept.is_empty() {
        return Err(PlanError::NoColumns(source.display()));
    }
    Ok(kept)
}

/// Column positions in ClickHouse sort order: the configured `order_by` first, then the
/// replica identity key (a keyed table) or every other sortable column (a multiset).
fn sort_order(
    source: &PublishedTable,
    columns: &[CatalogColumn],
    mappings: &[ColumnMapping],
    layout: &TableOptions,
    keyless_full: bool,
) -> Result<Vec<usize>, PlanError> {
    let table = source.display();
    let mut order = Vec::new();
    for name in &layout.order_by {
        let Some(index) = columns.iter().position(|c| &c.name == name) else {
            return Err(PlanError::UnknownSortColumn {
                table,
                column: name.clone(),
            });
        };
        if !mappings[index].ch.orderable() {
            return Err(PlanError::SortColumnNotOrderable {
                table,
                column: name.clone(),
                ch_type: mappings[index].ch.ddl(),
            });
        }
        let carried = keyless_full
            || columns[index].is_key()
            || source.replica_identity == ReplicaIdentity::Full;
        if !carried {
            return Err(PlanError::SortNeedsFullIdentity {
                table,
                column: name.clone(),
            });
        }
        order.push(index);
    }
    let rest: Vec<usize> = if keyless_full {
        (0..columns.len())
            .filter(|&i| mappings[i].ch.orderable())
            .collect()
    } else {
        let mut key: Vec<(usize, usize)> = columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.key_position.map(|p| (p, i)))
            .collect();
        key.sort();
        key.into_iter().map(|(_, i)| i).collect()
    };
    order.extend(
        rest.into_iter()
            .filter(|i| !layout.order_by.contains(&columns[*i].name)),
    );
    Ok(order)
}

/// What a partition key must not read: a value that differs when a change is written
/// again after a crash would put the replay in another partition, where it never
/// replaces the first write.
const NOT_REPEATABLE: &[&str] = &[
    "_synced_at",
    "now",
    "now64",
    "nowInBlock",
    "today",
    "yesterday",
    "rand",
    "rand32",
    "rand64",
    "randConstant",
    "generateUUIDv4",
    "generateUUIDv7",
];

fn check_deterministic(source: &PublishedTable, expr: &str) -> Result<(), PlanError> {
    match identifiers(expr)
        .into_iter()
        .find(|name| NOT_REPEATABLE.contains(&name.as_str()))
    {
        Some(name) => Err(PlanError::PartitionNotRepeatable {
            table: source.display(),
            what: name,
        }),
        None => Ok(()),
    }
}

/// A partition key may use only sort columns: ReplacingMergeTree merges a row's
/// versions within one partition, and a delete marker holds real values only there.
fn check_partition(
    source: &PublishedTable,
    specs: &[ColumnSpec],
    expr: &str,
) -> Result<(), PlanError> {
    let system = ["_version", "_is_deleted", "_synced_at", "_seq", "_sign"];
    for name in identifiers(expr) {
        let outside = match specs.iter().find(|c| c.name == name) {
            Some(c) => c.order_position.is_none(),
            None => system.contains(&name.as_str()),
        };
        if outside {
            return Err(PlanError::PartitionOutsideSort {
                table: source.display(),
                column: name,
            });
        }
    }
    Ok(())
}

/// The identifiers of a ClickHouse expression (bare or in backticks), string literals
/// skipped: enough to tell which columns a partition key reads.
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == '\'' {
                        break;
                    }
                }
            }
            '`' | '"' => {
                let name: String = chars.by_ref().take_while(|&d| d != c).collect();
                out.push(name);
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut name = c.to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' {
                        name.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(name);
            }
            c if c.is_ascii_digit() => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_alphanumeric() || *d == '_' || *d == '.')
                {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::types::oid;
    use crate::source::columns::ElementType;

    fn table() -> PublishedTable {
        PublishedTable::sample("public", "t")
    }

    fn column(attnum: i16, name: &str, type_oid: u32, type_name: &str) -> CatalogColumn {
        CatalogColumn {
            attnum,
            name: name.into(),
            type_oid,
            type_name: type_name.into(),
            type_kind: "b".into(),
            typmod: -1,
            element: None,
            dims: 0,
            not_null: false,
            key_position: (attnum == 1).then_some(0),
            sent_type: (type_oid, -1),
        }
    }

    fn time64() -> MappingOptions {
        MappingOptions {
            server_has_time64: true,
            ..MappingOptions::default()
        }
    }

    #[test]
    fn a_time_column_made_as_text_keeps_its_text_form() {
        let mut times = column(3, "tms", 1183, "_time");
        times.element = Some(ElementType {
            oid: oid::TIME,
            typmod: -1,
            name: "time".into(),
            kind: "b".into(),
        });
        times.dims = 1;
        let columns = vec![
            column(1, "id", oid::INT4, "int4"),
            column(2, "tm", oid::TIME, "time"),
            times,
        ];
        let mut plan = plan_table(
            &table(),
            "public_t".into(),
            columns,
            &time64(),
            &TableOptions::default(),
        )
        .unwrap();
        assert_eq!(plan.spec.columns[1].ch_type, "Nullable(Time64(6))");
        assert_eq!(plan.spec.columns[2].ch_type, "Array(Nullable(Time64(6)))");

        assert!(plan.keep_existing_form(1, "Nullable(String)").unwrap());
        assert_eq!(plan.spec.columns[1].ch_type, "Nullable(String)");
        assert_eq!(plan.mappings[1].ch.ddl(), "Nullable(String)");
        assert!(plan
            .keep_existing_form(2, "Array(Nullable(String))")
            .unwrap());
        assert_eq!(plan.spec.columns[2].ch_type, "Array(Nullable(String))");
        // A type pgch never wrote for the column is not taken: not an int as text.
        assert!(!plan.keep_existing_form(0, "Nullable(String)").unwrap());
        assert!(!plan.keep_existing_form(0, "String").unwrap());
        assert!(!plan.keep_existing_form(1, "Int64").unwrap());
        assert_eq!(plan.spec.columns[1].ch_type, "Nullable(String)");
    }

    fn orders() -> Vec<CatalogColumn> {
        let mut region = column(2, "region", oid::TEXT, "text");
        region.not_null = true;
        vec![
            column(1, "id", oid::INT4, "int4"),
            region,
            column(3, "note", oid::TEXT, "text"),
            column(4, "secret", oid::TEXT, "text"),
        ]
    }

    fn layout(order_by: &[&str], partition_by: Option<&str>, exclude: &[&str]) -> TableOptions {
        TableOptions {
            order_by: order_by.iter().map(|s| s.to_string()).collect(),
            partition_by: partition_by.map(str::to_string),
            exclude_columns: exclude.iter().map(|s| s.to_string()).collect(),
            column_types: Default::default(),
            history: false,
        }
    }

    fn plan(source: &PublishedTable, layout: &TableOptions) -> Result<TablePlan, PlanError> {
        check_layout_names(source, &orders(), layout)?;
        plan_table(source, "public_t".into(), orders(), &time64(), layout)
    }

    #[test]
    fn order_by_columns_lead_and_the_key_follows_when_deletes_carry_them() {
        let mut full = table();
        full.replica_identity = ReplicaIdentity::Full;
        let p = plan(
            &full,
            &layout(&["region", "note"], Some("cityHash64(`region`) % 4"), &[]),
        )
        .unwrap();
        let order: Vec<(&str, Option<usize>)> = p
            .spec
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.order_position))
            .collect();
        assert_eq!(
            order,
            vec![
                ("id", Some(2)),
                ("region", Some(0)),
                ("note", Some(1)),
                ("secret", None)
            ]
        );
        assert_eq!(p.sort_columns(), vec![0, 1, 2]);
        assert_eq!(p.key_columns(), vec![0]);
        // `note` is Nullable: the sort key needs allow_nullable_key.
        assert!(p.spec.nullable_key);
        assert_eq!(
            p.spec.partition_by.as_deref(),
            Some("cityHash64(`region`) % 4")
        );

        // Under the default identity a DELETE carries only the key (PeerDB #2058).
        let err = plan(&table(), &layout(&["region"], None, &[])).unwrap_err();
        assert!(
            matches!(err, PlanError::SortNeedsFullIdentity { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("REPLICA IDENTITY FULL"), "{err}");
        // The key itself may lead in any order.
        assert!(plan(&table(), &layout(&["id"], Some("id % 8"), &[])).is_ok());
        let err = plan(&full, &layout(&["nope"], None, &[])).unwrap_err();
        assert!(matches!(err, PlanError::UnknownSortColumn { .. }), "{err}");
    }

    #[test]
    fn a_partition_key_may_read_only_sort_columns() {
        let mut full = table();
        full.replica_identity = ReplicaIdentity::Full;
        for bad in ["note", "lower(`secret`)", "_version % 2", "\"secret\""] {
            let err = plan(&full, &layout(&["region"], Some(bad), &[])).unwrap_err();
            assert!(
                matches!(err, PlanError::PartitionOutsideSort { .. }),
                "{bad}: {err}"
            );
        }
        for unrepeatable in ["toYYYYMM(_synced_at)", "toYYYYMM(now())", "rand() % 4"] {
            let err = plan(&full, &layout(&["region"], Some(unrepeatable), &[])).unwrap_err();
            assert!(
                matches!(err, PlanError::PartitionNotRepeatable { .. }),
                "{unrepeatable}: {err}"
            );
        }
        // Functions, literals (even ones naming a column) and sort columns are fine.
        for good in [
            "id % 4",
            "substring(region, 1, 2)",
            "if(region = 'note', 1, 2)",
            "tuple()",
        ] {
            assert!(
                plan(&full, &layout(&["region"], Some(good), &[])).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn excluded_columns_are_neither_written_nor_keys_and_the_stream_skips_them() {
        let p = plan(&table(), &layout(&[], None, &["secret", "note"])).unwrap();
        let names: Vec<&str> = p.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["id", "region"]);
        assert_eq!(p.spec.columns.len(), 2);
        assert_eq!(p.published.len(), 4);
        assert_eq!(p.projection(), Some(vec![0, 1]));
        assert_eq!(p.options.fingerprint(), "exclude_columns=[note, secret]");
        assert!(plan(&table(), &TableOptions::default())
            .unwrap()
            .projection()
            .is_none());
        let err = plan(&table(), &layout(&[], None, &["id"])).unwrap_err();
        assert!(matches!(err, PlanError::ExcludedKeyColumn { .. }), "{err}");
        let err = plan(&table(), &layout(&[], None, &["pasword"])).unwrap_err();
        assert!(
            matches!(err, PlanError::UnknownExcludedColumn { .. }),
            "{err}"
        );
    }
}
