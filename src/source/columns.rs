//! The published columns of each table, with their (domain-resolved) types, nullability
//! and replica identity key membership — what the ClickHouse table and the copy are
//! built from. Column lists (Postgres 15+) and generated columns (not published before
//! Postgres 18) are applied here, so the copy mirrors the publication (DESIGN.md rule 4).

use tokio_postgres::Client;

use super::catalog::{PublishedTable, ReplicaIdentity};

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
) -> Result<Vec<CatalogColumn>, tokio_postgres::Error> {
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
                et.oid, et.typname::text, et.typtype::text, coalesce(eb.typtypmod, -1) \
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
        let attnum: i16 = r.get(0);
        let name: String = r.get(1);
        if let Some(list) = &table.column_list {
            if !list.contains(&name) {
                continue;
            }
        }
        let element_oid: Option<u32> = r.get(8);
        columns.push(CatalogColumn {
            attnum,
            name,
            type_oid: r.get(2),
            type_name: r.get(3),
            type_kind: r.get(4),
            typmod: r.get(5),
            not_null: r.get(6),
            dims: u32::try_from(r.get::<_, i32>(7)).unwrap_or(0),
            element: element_oid.map(|oid| ElementType {
                oid,
                name: r.get(9),
                kind: r.get(10),
                typmod: r.get(11),
            }),
            key_position: key_attnums.iter().position(|k| *k == attnum),
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
async fn key_columns(
    client: &Client,
    table: &PublishedTable,
) -> Result<Vec<i16>, tokio_postgres::Error> {
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
    Ok(rows.iter().map(|r| r.get::<_, i16>(0)).collect())
}
