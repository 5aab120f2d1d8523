//! What the publication holds: its options and its tables with their replica identity
//! and keys, read with queries that the guide's non-superuser may run.

use tokio_postgres::Client;

use super::row::{column, ReadError};

/// A publication as `pg_publication` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub name: String,
    pub all_tables: bool,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
    /// `publish_via_partition_root` (Postgres 13+; always false on 12).
    pub via_root: bool,
    /// The schemas of `FOR TABLES IN SCHEMA` (Postgres 15+): tables created there later
    /// join by themselves, so an empty list of tables is a wait, not a mistake.
    pub schemas: Vec<String>,
}

impl Publication {
    /// Whether tables join without an `ALTER PUBLICATION` (`FOR ALL TABLES`, or a
    /// schema publication): then an empty publication waits for its first table.
    pub fn grows_by_itself(&self) -> bool {
        self.all_tables || !self.schemas.is_empty()
    }

    /// Where its future tables come from, for messages.
    pub fn where_tables_appear(&self) -> String {
        if self.all_tables {
            "any schema".to_string()
        } else {
            format!("schema {}", self.schemas.join(", "))
        }
    }
}

/// Replica identity (`pg_class.relreplident`): what the old key of an UPDATE/DELETE carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaIdentity {
    Default,
    Nothing,
    Full,
    Index,
}

impl ReplicaIdentity {
    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "d" => ReplicaIdentity::Default,
            "n" => ReplicaIdentity::Nothing,
            "f" => ReplicaIdentity::Full,
            "i" => ReplicaIdentity::Index,
            _ => return None,
        })
    }
}

/// A published table with what the checks and the copy need to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `r` ordinary, `p` partitioned.
    pub relkind: String,
    pub is_partition: bool,
    pub replica_identity: ReplicaIdentity,
    pub has_primary_key: bool,
    /// Postgres ignores a DEFERRABLE primary key as replica identity.
    pub primary_key_deferrable: bool,
    /// Under `USING INDEX`: whether the chosen index exists.
    pub has_identity_index: bool,
    pub can_select: bool,
    pub schema_usage: bool,
    /// Row filter (Postgres 15+), as Postgres prints it.
    pub row_filter: Option<String>,
    /// Published columns when the publication has a column list (Postgres 15+).
    pub column_list: Option<Vec<String>>,
}

impl PublishedTable {
    /// `"schema"."table"`, quoted for Postgres.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
    /// `schema.table` unquoted, for messages.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// An ordinary table with a primary key that pgch may read: the unit tests' fixture.
    #[cfg(test)]
    pub(crate) fn sample(schema: &str, name: &str) -> PublishedTable {
        PublishedTable {
            oid: 1,
            schema: schema.into(),
            name: name.into(),
            relkind: "r".into(),
            is_partition: false,
            replica_identity: ReplicaIdentity::Default,
            has_primary_key: true,
            primary_key_deferrable: false,
            has_identity_index: false,
            can_select: true,
            schema_usage: true,
            row_filter: None,
            column_list: None,
        }
    }
}

/// Quotes a Postgres identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a Postgres string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Reads the publication, or `None` when it does not exist.
pub async fn publication(
    client: &Client,
    name: &str,
    server_version: u32,
) -> Result<Option<Publication>, ReadError> {
    const WHAT: &str = "reading the publication (pg_publication)";
    let via_root = if server_version >= 130000 {
        "pubviaroot"
    } else {
        "false"
    };
    let sql = format!(
        "SELECT pubname::text, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, {via_root} \
         FROM pg_catalog.pg_publication WHERE pubname = $1"
    );
    let Some(r) = client.query_opt(&sql, &[&name]).await? else {
        return Ok(None);
    };
    let schemas = if server_version >= 150000 {
        client
            .query(
                "SELECT n.nspname::text FROM pg_catalog.pg_publication_namespace pn \
                 JOIN pg_catalog.pg_publication p ON p.oid = pn.pnpubid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid \
                 WHERE p.pubname = $1 ORDER BY 1",
                &[&name],
            )
            .await?
            .iter()
            .map(|row| column::<String>(row, 0, "reading the publication's schemas"))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    Ok(Some(Publication {
        schemas,
        name: column(&r, 0, WHAT)?,
        all_tables: column(&r, 1, WHAT)?,
        insert: column(&r, 2, WHAT)?,
        update: column(&r, 3, WHAT)?,
        delete: column(&r, 4, WHAT)?,
        truncate: column(&r, 5, WHAT)?,
        via_root: column(&r, 6, WHAT)?,
    }))
}

/// The publication's tables, as `pg_publication_tables` lists them (leaf partitions
/// unless `publish_via_partition_root`).
pub async fn published_tables(
    client: &Client,
    publication: &str,
    server_version: u32,
) -> Result<Vec<PublishedTable>, ReadError> {
    let (row_filter, column_list) = if server_version >= 150000 {
        (
            "pt.rowfilter",
            "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr \
               JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid \
               WHERE p.pubname = $1 AND pr.prrelid = c.oid AND pr.prattrs IS NOT NULL) \
             THEN pt.attnames::text[] END",
        )
    } else {
        ("NULL::text", "NULL::text[]")
    };
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relispartition, \
                c.relreplident::text, \
                EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k \
                        WHERE k.conrelid = c.oid AND k.contype = 'p' AND k.condeferrable), \
                EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident), \
                has_table_privilege(c.oid, 'SELECT'), \
                has_schema_privilege(n.oid, 'USAGE'), \
                {row_filter}, {column_list} \
         FROM pg_catalog.pg_publication_tables pt \
         JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
         WHERE pt.pubname = $1 \
         ORDER BY n.nspname, c.relname"
    );
    let rows = client.query(&sql, &[&publication]).await?;
    let mut tables = Vec::with_capacity(rows.len());
    const WHAT: &str = "reading the publication's tables";
    for r in rows {
        let ident: String = column(&r, 5, WHAT)?;
        let columns: Option<Vec<String>> = column(&r, 12, WHAT)?;
        tables.push(PublishedTable {
            oid: column(&r, 0, WHAT)?,
            schema: column(&r, 1, WHAT)?,
            name: column(&r, 2, WHAT)?,
            relkind: column(&r, 3, WHAT)?,
            is_partition: column(&r, 4, WHAT)?,
            replica_identity: ReplicaIdentity::from_code(&ident)
                .unwrap_or(ReplicaIdentity::Default),
            has_primary_key: column(&r, 6, WHAT)?,
            primary_key_deferrable: column(&r, 7, WHAT)?,
            has_identity_index: column(&r, 8, WHAT)?,
            can_select: column(&r, 9, WHAT)?,
            schema_usage: column(&r, 10, WHAT)?,
            row_filter: column(&r, 11, WHAT)?,
            column_list: columns,
        });
    }
    Ok(tables)
}

/// The default ClickHouse table name for a source table: `<schema>_<table>`.
pub fn destination_name(schema: &str, table: &str) -> String {
    format!("{schema}_{table}")
}
