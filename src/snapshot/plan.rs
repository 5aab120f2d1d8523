//! From a published table to its ClickHouse table: destination name, column types and
//! codecs, and the ORDER BY key (DESIGN.md rules 2 and 10).

use crate::sink::ddl::{ColumnSpec, TableSpec, MULTISET_COLUMNS, SYSTEM_COLUMNS};
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
    pub columns: Vec<CatalogColumn>,
    pub mappings: Vec<ColumnMapping>,
    pub spec: TableSpec,
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

/// Plans one table.
pub fn plan_table(
    source: &PublishedTable,
    dest: String,
    columns: Vec<CatalogColumn>,
    opts: &MappingOptions,
) -> Result<TablePlan, PlanError> {
    if columns.is_empty() {
        return Err(PlanError::NoColumns(source.display()));
    }
    let keyless_full = source.replica_identity == ReplicaIdentity::Full && !source.has_primary_key;
    let mut mappings = Vec::with_capacity(columns.len());
    let mut specs = Vec::with_capacity(columns.len());
    let mut next_sortable = 0;
    for c in &columns {
        // A keyless FULL table orders by all its columns, which may be NULL (rule 10).
        let is_key = c.is_key() && !keyless_full;
        let mapping = map_column(&pg_type(c), c.not_null, is_key, opts).map_err(|source_err| {
            PlanError::Mapping {
                table: source.display(),
                column: c.name.clone(),
                source: source_err,
            }
        })?;
        let ch_type = mapping.ch.ddl();
        let order_position = if keyless_full {
            mapping.ch.orderable().then(|| {
                next_sortable += 1;
                next_sortable - 1
            })
        } else {
            c.key_position
        };
        specs.push(ColumnSpec {
            name: c.name.clone(),
            ch_type,
            order_position,
        });
        mappings.push(mapping);
    }
    Ok(TablePlan {
        source: source.clone(),
        spec: TableSpec {
            name: dest.clone(),
            columns: specs,
            nullable_key: keyless_full,
            multiset: keyless_full,
            source: source.display(),
        },
        dest,
        columns,
        mappings,
    })
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
        let mut plan = plan_table(&table(), "public_t".into(), columns, &time64()).unwrap();
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
}
