//! The published columns of each table, with their (domain-resolved) types, nullability
//! and replica identity key membership — what the ClickHouse table and the copy are
//! built from. Column lists (Postgres 15+) and generated columns (not published before
//! Postgres 18) are applied here, so the copy mirrors the publication (DESIGN.md rule 4).

use tokio_postgres::Client;

use super::catalog::{PublishedTable, ReplicaIdentity};
use super::row::{column, ReadError};

impl CatalogColumn {
    /// Whether the column is part of the replica identity key.
    pub fn is_key(&self) -> bool {
        self.key_position.is_some()
    }
}

/// One published column as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogColumn {
    /// Stable across renames: how a rename is recognised later.
    pub attnum: i16,
    pub name: String,
    /// The base type (domains resolved).
    pub type_oid: u32,
    pub type_name: String,
    /// `b` base, `e` enum, `c` composite, `r` range, `m` multirange, `p` pseudo.
    pub type_kind: String,
    pub typmod: i32,
    /// For arrays: the element's base type.
    pub element: Option<ElementType>,
    /// `attndims` (not enforced by Postgres; 0 when unknown).
    pub dims: u32,
    /// `NOT NULL` on the column or on its domain.
    pub not_null: bool,
    /// Position in the replica identity key (DESIGN.md rule 2), `None` when not a key column.
    pub key_position: Option<usize>,
    /// `atttypid` and `atttypmod` as they are (a domain not resolved): what a Relation
    /// message names, so the stream's first Relation can be compared with the plan.
    pub sent_type: (u32, i32),
}

/// The element type of an array column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementType {
    pub oid: u32,
    pub name: String,
    pub kind: String,
    pub typmod: i32,
}

/// Reads the published columns of `table` in attnum order.
pub async fn published_columns(
    client: &Client,
    table: &PublishedTable,
    server_version: u32,
) -> Result<Vec<CatalogColumn>, ReadError> {
    const WHAT: &str = "reading the published columns (pg_attribute, pg_type)";
    // Generated columns are published from Postgres 18 only when the publication
    // asks for them; pgch leaves them out before 18 (the stream never carries them).
    let generated = if server_version >= 120000 {
        "a.attgenerated = ''"
    } else {
        "true"
    };
    let sql = format!(
        "WITH RECURSIVE dom AS ( \
           SELECT t.oid AS start, t.oid, t.typbasetype, t.typtypmod, t.typnotnull, t.typtype \
             FROM pg_catalog.pg_type t \
           UNION ALL \
           SELECT d.start, b.oid, b.typbasetype, CASE WHEN d.typtypmod <> -1 THEN d.typtypmod ELSE b.typtypmod END, \
                  d.typnotnull OR b.typnotnull, b.typtype \
             FROM dom d JOIN pg_catalog.pg_type b ON b.oid = d.typbasetype WHERE d.typtype = 'd' \
         ), base AS ( \
           SELECT start, oid, typtypmod, typnotnull FROM dom WHERE typtype <> 'd' \
         ) \
         SELECT a.attnum, a.attname::text, bt.oid, bt.typname::text, bt.typtype::text, \
                CASE WHEN a.atttypmod <> -1 THEN a.atttypmod ELSE coalesce(b.typtypmod, -1) END, \
                a.attnotnull OR coalesce(b.typnotnull, false), a.attndims::int4, \
                et.oid, et.typname::text, et.typtype::text, coalesce(eb.typtypmod, -1), \
                a.atttypid, a.atttypmod \
           FROM pg_catalog.pg_attribute a \
           JOIN base b ON b.start = a.atttypid \
           JOIN pg_catalog.pg_type bt ON bt.oid = b.oid \
           LEFT JOIN base eb ON eb.start = nullif(bt.typelem, 0) AND bt.typcategory = 'A' \
           LEFT JOIN pg_catalog.pg_type et ON et.oid = eb.oid \
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND {generated} \
          ORDER BY a.attnum"
    );
    let rows = client.query(&sql, &[&table.oid]).await?;
    let key_attnums = key_columns(client, table).await?;
    let mut columns = Vec::with_capacity(rows.len());
    for r in rows {
        let attnum: i16 = column(&r, 0, WHAT)?;
        let name: String = column(&r, 1, WHAT)?;
        if let Some(list) = &table.column_list {
            if !list.contains(&name) {
                continue;
            }
        }
        let element_oid: Option<u32> = column(&r, 8, WHAT)?;
        let element = match element_oid {
            Some(oid) => Some(ElementType {
                oid,
                name: column(&r, 9, WHAT)?,
                kind: column(&r, 10, WHAT)?,
                typmod: column(&r, 11, WHAT)?,
            }),
            None => None,
        };
        columns.push(CatalogColumn {
            attnum,
            name,
            type_oid: column(&r, 2, WHAT)?,
            type_name: column(&r, 3, WHAT)?,
            type_kind: column(&r, 4, WHAT)?,
            typmod: column(&r, 5, WHAT)?,
            not_null: column(&r, 6, WHAT)?,
            dims: u32::try_from(column::<i32>(&r, 7, WHAT)?).unwrap_or(0),
            element,
            key_position: key_attnums.iter().position(|k| *k == attnum),
            sent_type: (column(&r, 12, WHAT)?, column(&r, 13, WHAT)?),
        });
    }
    // FULL without a primary key: every column is the key (rule 10).
    if table.replica_identity == ReplicaIdentity::Full && key_attnums.is_empty() {
        for (i, c) in columns.iter_mut().enumerate() {
            c.key_position = Some(i);
        }
    }
    Ok(columns)
}

/// The attnums of the replica identity key: the (non-deferrable) primary key under
/// DEFAULT, the chosen index under USING INDEX, the primary key if any under FULL.
async fn key_columns(client: &Client, table: &PublishedTable) -> Result<Vec<i16>, ReadError> {
    let condition = match table.replica_identity {
        ReplicaIdentity::Index => "i.indisreplident",
        ReplicaIdentity::Default | ReplicaIdentity::Full => {
            "i.indisprimary AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k \
              WHERE k.conindid = i.indexrelid AND k.condeferrable)"
        }
        ReplicaIdentity::Nothing => return Ok(Vec::new()),
    };
    let sql = format!(
        "SELECT k.attnum::int2 FROM pg_catalog.pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
          WHERE i.indrelid = $1 AND {condition} ORDER BY k.n"
    );
    let rows = client.query(&sql, &[&table.oid]).await?;
    let mut attnums = Vec::with_capacity(rows.len());
    for r in &rows {
        attnums.push(column(r, 0, "reading the replica identity key (pg_index)")?);
    }
    Ok(attnums)
}
