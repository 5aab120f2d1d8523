//! ClickHouse DDL: the destination database and one table per source table,
//! `ReplacingMergeTree(_version, _is_deleted)` ordered by the replica identity key
//! (DESIGN.md rules 2 and 10), with `ON CLUSTER` and the `Replicated` engine when a
//! cluster is configured. Pure: statements in, no I/O.

use super::preflight::{escape_string, quote_ident};

/// The system columns every pgch table has, after the source's columns.
pub const SYSTEM_COLUMNS: &[(&str, &str)] = &[
    ("_version", "UInt64"),
    ("_is_deleted", "UInt8"),
    ("_synced_at", "DateTime64(6) DEFAULT now64(6)"),
];

/// The columns a multiset table (keyless, `REPLICA IDENTITY FULL`) has after
/// [`SYSTEM_COLUMNS`]: with `_version` they name the change a row stands for (so a
/// replay replaces it instead of adding to it), and `_sign` says whether it adds a copy
/// of the row or removes one.
pub const MULTISET_COLUMNS: &[(&str, &str)] = &[("_seq", "UInt64"), ("_sign", "Int8")];

/// The columns of a history table (`[[tables]] mode = "history"`) after the source's:
/// the change a row stands for — its WAL position and its place among the table's
/// changes there (which make a replayed change replace itself), what it did, and which
/// transaction, committed when.
pub const HISTORY_COLUMNS: &[(&str, &str)] = &[
    ("_lsn", "UInt64"),
    ("_seq", "UInt64"),
    (
        "_op",
        "Enum8('snapshot' = 0, 'insert' = 1, 'update' = 2, 'delete' = 3)",
    ),
    ("_xid", "UInt32"),
    ("_commit_time", "DateTime64(6, 'UTC')"),
    ("_synced_at", "DateTime64(6) DEFAULT now64(6)"),
];

/// One destination column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    /// ClickHouse type text, e.g. `Nullable(Decimal(12, 2))`.
    pub ch_type: String,
    /// Position in `ORDER BY`, `None` when not part of it.
    pub order_position: Option<usize>,
}

/// One destination table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    pub columns: Vec<ColumnSpec>,
    /// A keyless `REPLICA IDENTITY FULL` table: ordered by nullable columns (rule 10).
    pub nullable_key: bool,
    /// Every change a row of its own, `_sign` ±1 ([`MULTISET_COLUMNS`]).
    pub multiset: bool,
    /// A comment naming the source table.
    pub source: String,
    /// A `PARTITION BY` expression (`[[tables]] partition_by`).
    pub partition_by: Option<String>,
    /// An append-only history of changes ([`HISTORY_COLUMNS`]), ordered by change.
    pub history: bool,
}

/// `CREATE DATABASE IF NOT EXISTS`, on the cluster when one is configured.
pub fn create_database_sql(database: &str, cluster: Option<&str>) -> String {
    format!(
        "CREATE DATABASE IF NOT EXISTS {}{}",
        quote_ident(database),
        on_cluster(cluster)
    )
}

fn on_cluster(cluster: Option<&str>) -> String {
    cluster
        .map(|c| format!(" ON CLUSTER {}", quote_ident(c)))
        .unwrap_or_default()
}

/// The `CREATE TABLE IF NOT EXISTS` statement of a destination table.
pub fn create_table_sql(database: &str, table: &TableSpec, cluster: Option<&str>) -> String {
    if table.history {
        return create_history_sql(database, table, cluster);
    }
    let mut cols: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.ch_type))
        .collect();
    let system = SYSTEM_COLUMNS
        .iter()
        .chain(MULTISET_COLUMNS.iter().filter(|_| table.multiset));
    cols.extend(system.map(|(n, t)| format!("{} {t}", quote_ident(n))));
    let mut order: Vec<&ColumnSpec> = table
        .columns
        .iter()
        .filter(|c| c.order_position.is_some())
        .collect();
    order.sort_by_key(|c| c.order_position);
    let mut order: Vec<String> = order.iter().map(|c| quote_ident(&c.name)).collect();
    if table.multiset {
        // The change a row stands for makes it unique: equal rows stay apart.
        order.extend(["_version", "_seq"].map(quote_ident));
    }
    let order_by = if order.is_empty() {
        "tuple()".to_string()
    } else {
        format!("({})", order.join(", "))
    };
    let engine = replacing_engine(cluster, "_version, _is_deleted");
    let partition = partition_clause(table);
    let settings = if table.nullable_key {
        " SETTINGS allow_nullable_key = 1"
    } else {
        ""
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{}{} ({}) ENGINE = {engine}{partition} ORDER BY {order_by}{settings} COMMENT '{}'",
        quote_ident(database),
        quote_ident(&table.name),
        on_cluster(cluster),
        cols.join(", "),
        escape_string(&format!("pgch: {}", table.source)),
    )
}

/// `ReplacingMergeTree(args)`, replicated on a cluster; no parentheses without args.
fn replacing_engine(cluster: Option<&str>, args: &str) -> String {
    match (cluster, args) {
        (None, "") => "ReplacingMergeTree".to_string(),
        (None, _) => format!("ReplacingMergeTree({args})"),
        (Some(_), "") => "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')".to_string(),
        (Some(_), _) => format!("ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{{database}}/{{table}}', '{{replica}}', {args})"),
    }
}

/// ` PARTITION BY <expr>` when the table has one.
fn partition_clause(table: &TableSpec) -> String {
    table
        .partition_by
        .as_deref()
        .map(|p| format!(" PARTITION BY {p}"))
        .unwrap_or_default()
}

/// A history table: every change once, ordered by change. `ReplacingMergeTree` without
/// a version only so that a change written again after a crash (same `_lsn`, `_seq`)
/// replaces itself; nothing else ever shares a sort key.
fn create_history_sql(database: &str, table: &TableSpec, cluster: Option<&str>) -> String {
    let cols: Vec<String> = table
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.ch_type.as_str()))
        .chain(HISTORY_COLUMNS.iter().copied())
        .map(|(n, t)| format!("{} {t}", quote_ident(n)))
        .collect();
    let engine = replacing_engine(cluster, "");
    let partition = partition_clause(table);
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{}{} ({}) ENGINE = {engine}{partition} ORDER BY (`_lsn`, `_seq`) COMMENT '{}'",
        quote_ident(database),
        quote_ident(&table.name),
        on_cluster(cluster),
        cols.join(", "),
        escape_string(&format!("pgch history: {}", table.source)),
    )
}

/// The name of the view that shows a multiset table as Postgres holds it.
pub fn current_view_name(table: &str) -> String {
    format!("{table}_current")
}

/// The `<table>_current` view of any table: a keyed table's live rows
/// ([`keyed_view_sql`]) or a multiset's copies ([`current_view_sql`]).
pub fn view_sql(database: &str, table: &TableSpec, cluster: Option<&str>) -> String {
    if table.multiset {
        current_view_sql(database, table, cluster)
    } else {
        keyed_view_sql(database, table, cluster)
    }
}

/// `CREATE OR REPLACE VIEW <table>_current`: a keyed table as Postgres holds it — the
/// latest version of each row (`FINAL`), deleted rows left out, system columns hidden.
pub fn keyed_view_sql(database: &str, table: &TableSpec, cluster: Option<&str>) -> String {
    let cols = source_columns(table);
    format!(
        "CREATE OR REPLACE VIEW {db}.{}{} AS SELECT {cols} FROM {db}.{} FINAL WHERE _is_deleted = 0",
        quote_ident(&current_view_name(&table.name)),
        on_cluster(cluster),
        quote_ident(&table.name),
        db = quote_ident(database),
    )
}

/// `CREATE OR REPLACE VIEW <table>_current`: a multiset table's rows, each distinct row
/// repeated as many times as Postgres holds it (the sum of its `_sign`s under `FINAL`,
/// which drops replayed changes), system columns hidden.
pub fn current_view_sql(database: &str, table: &TableSpec, cluster: Option<&str>) -> String {
    let cols = source_columns(table);
    format!(
        "CREATE OR REPLACE VIEW {db}.{}{} AS SELECT {cols} FROM (SELECT {cols}, sum(_sign) AS _copies FROM {db}.{} FINAL GROUP BY {cols}) ARRAY JOIN range(toUInt64(greatest(_copies, 0))) AS _copy",
        quote_ident(&current_view_name(&table.name)),
        on_cluster(cluster),
        quote_ident(&table.name),
        db = quote_ident(database),
    )
}

/// The source's columns, quoted, as a view selects them (system columns hidden).
fn source_columns(table: &TableSpec) -> String {
    table
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `DROP TABLE IF EXISTS … SYNC`: `SYNC` so the table's data (and, on a cluster, its
/// replication path) is gone before a table of the same name is created again.
pub fn drop_table_sql(database: &str, table: &str, cluster: Option<&str>) -> String {
    format!(
        "DROP TABLE IF EXISTS {}.{}{} SYNC",
        quote_ident(database),
        quote_ident(table),
        on_cluster(cluster)
    )
}

/// `EXCHANGE TABLES a AND b`: swaps two tables atomically (Atomic databases).
pub fn exchange_tables_sql(database: &str, a: &str, b: &str, cluster: Option<&str>) -> String {
    format!(
        "EXCHANGE TABLES {db}.{} AND {db}.{}{}",
        quote_ident(a),
        quote_ident(b),
        on_cluster(cluster),
        db = quote_ident(database)
    )
}

/// `RENAME TABLE a TO b[, c TO d…]`, applied in order.
pub fn rename_tables_sql(database: &str, pairs: &[(&str, &str)], cluster: Option<&str>) -> String {
    let db = quote_ident(database);
    let renames: Vec<String> = pairs
        .iter()
        .map(|(from, to)| format!("{db}.{} TO {db}.{}", quote_ident(from), quote_ident(to)))
        .collect();
    format!("RENAME TABLE {}{}", renames.join(", "), on_cluster(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TableSpec {
        TableSpec {
            name: "public_orders".into(),
            columns: vec![
                ColumnSpec {
                    name: "id".into(),
                    ch_type: "Int64".into(),
                    order_position: Some(1),
                },
                ColumnSpec {
                    name: "region".into(),
                    ch_type: "String".into(),
                    order_position: Some(0),
                },
                ColumnSpec {
                    name: "total".into(),
                    ch_type: "Nullable(Decimal(12, 2))".into(),
                    order_position: None,
                },
            ],
            nullable_key: false,
            multiset: false,
            source: "public.orders".into(),
            partition_by: None,
            history: false,
        }
    }

    #[test]
    fn multisets_are_ordered_by_their_values_then_the_change_and_read_through_a_view() {
        let mut s = spec();
        s.multiset = true;
        let sql = create_table_sql("pgch", &s, None);
        assert!(
            sql.contains(
                "`_synced_at` DateTime64(6) DEFAULT now64(6), `_seq` UInt64, `_sign` Int8)"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("ORDER BY (`region`, `id`, `_version`, `_seq`)"),
            "{sql}"
        );
        assert_eq!(
            current_view_sql("pgch", &s, None),
            "CREATE OR REPLACE VIEW `pgch`.`public_orders_current` AS SELECT `id`, `region`, `total` \
             FROM (SELECT `id`, `region`, `total`, sum(_sign) AS _copies FROM `pgch`.`public_orders` FINAL \
             GROUP BY `id`, `region`, `total`) ARRAY JOIN range(toUInt64(greatest(_copies, 0))) AS _copy"
        );
    }

    #[test]
    fn tables_are_replacing_merge_trees_ordered_by_the_key() {
        assert_eq!(
            create_table_sql("pgch", &spec(), None),
            "CREATE TABLE IF NOT EXISTS `pgch`.`public_orders` (`id` Int64, `region` String, \
             `total` Nullable(Decimal(12, 2)), `_version` UInt64, `_is_deleted` UInt8, \
             `_synced_at` DateTime64(6) DEFAULT now64(6)) ENGINE = ReplacingMergeTree(_version, _is_deleted) \
             ORDER BY (`region`, `id`) COMMENT 'pgch: public.orders'"
        );
    }

    #[test]
    fn a_partition_key_goes_between_the_engine_and_the_sort_key_and_views_hide_deletes() {
        let mut s = spec();
        s.partition_by = Some("cityHash64(`region`) % 4".into());
        let sql = create_table_sql("pgch", &s, None);
        assert!(
            sql.contains(
                "ENGINE = ReplacingMergeTree(_version, _is_deleted) PARTITION BY cityHash64(`region`) % 4 ORDER BY (`region`, `id`)"
            ),
            "{sql}"
        );
        assert_eq!(
            view_sql("pgch", &s, None),
            "CREATE OR REPLACE VIEW `pgch`.`public_orders_current` AS SELECT `id`, `region`, `total` \
             FROM `pgch`.`public_orders` FINAL WHERE _is_deleted = 0"
        );
    }

    #[test]
    fn a_history_is_ordered_by_change_with_what_each_change_did() {
        let mut s = spec();
        s.history = true;
        s.partition_by = Some("toYYYYMM(_commit_time)".into());
        assert_eq!(
            create_table_sql("pgch", &s, None),
            "CREATE TABLE IF NOT EXISTS `pgch`.`public_orders` (`id` Int64, `region` String, \
             `total` Nullable(Decimal(12, 2)), `_lsn` UInt64, `_seq` UInt64, \
             `_op` Enum8('snapshot' = 0, 'insert' = 1, 'update' = 2, 'delete' = 3), `_xid` UInt32, \
             `_commit_time` DateTime64(6, 'UTC'), `_synced_at` DateTime64(6) DEFAULT now64(6)) \
             ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(_commit_time) ORDER BY (`_lsn`, `_seq`) \
             COMMENT 'pgch history: public.orders'"
        );
    }

    #[test]
    fn clusters_use_the_replicated_engine_and_keyless_tables_nullable_keys() {
        let mut s = spec();
        s.nullable_key = true;
        let sql = create_table_sql("pgch", &s, Some("main"));
        assert!(sql.contains("`public_orders` ON CLUSTER `main` ("), "{sql}");
        assert!(sql.contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', _version, _is_deleted)"), "{sql}");
        assert!(sql.contains("SETTINGS allow_nullable_key = 1"), "{sql}");
        assert_eq!(
            create_database_sql("pgch", Some("main")),
            "CREATE DATABASE IF NOT EXISTS `pgch` ON CLUSTER `main`"
        );
    }

    #[test]
    fn shadow_swaps_are_exchange_or_ordered_renames() {
        assert_eq!(
            exchange_tables_sql("pgch", "t", "t__s", None),
            "EXCHANGE TABLES `pgch`.`t` AND `pgch`.`t__s`"
        );
        assert_eq!(
            rename_tables_sql("pgch", &[("t", "t_old"), ("t__s", "t")], Some("main")),
            "RENAME TABLE `pgch`.`t` TO `pgch`.`t_old`, `pgch`.`t__s` TO `pgch`.`t` ON CLUSTER `main`"
        );
        assert_eq!(
            drop_table_sql("pgch", "t__s", None),
            "DROP TABLE IF EXISTS `pgch`.`t__s` SYNC"
        );
    }
}
