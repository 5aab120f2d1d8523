//! pgch's own state, kept in ClickHouse next to the data (`_pgch_state` in the
//! destination database): the source's `system_identifier`, the slot and its consistent
//! point, the snapshot xmax recorded at slot creation, which tables belong to this slot,
//! and which copy partitions are done (DESIGN.md rules 1 and 3).
//!
//! Keeping it with the data means a restored or replaced ClickHouse cannot silently
//! disagree with it. Entries are versioned by write time, so a key's latest write wins.

use std::collections::BTreeMap;

use clickhouse::Client;
use serde::Deserialize;

use super::client::{self, SinkError};
use super::preflight::quote_ident;
use crate::config::DestinationSettings;

/// The state table's name.
pub const STATE_TABLE: &str = "_pgch_state";

/// Well-known keys.
pub mod keys {
    /// The source cluster's `system_identifier` (IDENTIFY_SYSTEM).
    pub const SYSTEM_IDENTIFIER: &str = "system_identifier";
    /// Written just before the slot is created: a slot found with this mark and no
    /// `system_identifier` was made by a pgch that died before recording it.
    pub const SLOT_CREATING: &str = "slot_creating";
    /// The slot's consistent point at creation.
    pub const CONSISTENT_POINT: &str = "consistent_point";
    /// xmax of the snapshot taken right after the slot was created.
    pub const SNAPSHOT_XMAX: &str = "snapshot_xmax";

    /// `copy/<table>/<partition>`: a finished copy partition.
    pub fn copy_done(table: &str, partition: &str) -> String {
        format!("copy/{table}/{partition}")
    }

    /// `complete/<table>`: the table needs no more copying (a TRUNCATE emptied it; the
    /// stream carries everything since).
    pub fn snapshot_complete(table: &str) -> String {
        format!("complete/{table}")
    }

    /// `table/<table>`: the ClickHouse table belongs to this slot.
    pub fn table_owned(table: &str) -> String {
        format!("table/{table}")
    }

    /// `mapping/<table>`: the `[[tables]]` layout the ClickHouse table was made with
    /// ([`crate::config::TableOptions::fingerprint`]); absent means the default.
    pub fn mapping(table: &str) -> String {
        format!("mapping/{table}")
    }

    /// `member/<table>`: how the source table was a member of the publication when
    /// pgch last looked (`pg_publication_rel` / `pg_publication_namespace` row oids); a
    /// table found a member only by new paths left and joined again meanwhile.
    pub fn membership(table: &str) -> String {
        format!("member/{table}")
    }

    /// `tree/<table>`: the leaves of a partitioned source table whose rows are in its
    /// ClickHouse table, so a start notices leaves attached, detached or truncated while
    /// pgch was stopped.
    pub fn partition_tree(table: &str) -> String {
        format!("tree/{table}")
    }

    /// `copied/<schema.table>`: the WAL position read just before the snapshot of the
    /// table's last resync copy. Changes of transactions committed at or before it are in
    /// that copy; replaying them from an older confirmed position would bring back rows
    /// deleted while the table was not published (left, or a leaf detached).
    pub fn copied_through(source: &str) -> String {
        format!("copied/{source}")
    }

    /// `seen/<schema.table>`: the snapshot of a multiset (keyless) table's last copy
    /// ([`crate::snapshot::visibility::CopyVisibility`]), written before the copy
    /// inserts anything: the stream skips the transactions it saw, also after a restart.
    pub fn copy_visibility(source: &str) -> String {
        format!("seen/{source}")
    }

    /// Prefix of every `copy/…` key of one table.
    pub fn copy_prefix(table: &str) -> String {
        format!("copy/{table}/")
    }

    /// Present while a `pgch resync` is unfinished: its scope, as JSON. `pgch run`
    /// refuses to start while it exists (a half-done resync is not a consistent state).
    pub const RESYNC: &str = "resync";
    /// Written once an unfinished full resync has made and recorded its new slot: the
    /// slot's consistent point. A rerun keeps that slot instead of making another.
    pub const RESYNC_SLOT: &str = "resync/slot";

    /// `resync/done/<table>`: the unfinished resync has already exchanged this table.
    pub fn resync_done(table: &str) -> String {
        format!("resync/done/{table}")
    }
}

/// The value that marks a key as forgotten: [`StateStore::load`] leaves such keys out.
/// No live key is ever written with an empty value.
const TOMBSTONE: &str = "";

/// Keys written (or forgotten) per insert.
const KEYS_PER_INSERT: usize = 1000;

/// Reads and writes the state of one slot.
pub struct StateStore<'a> {
    client: Client,
    settings: &'a DestinationSettings,
    slot: String,
}

#[derive(Deserialize)]
struct Entry {
    key: String,
    value: String,
}

impl<'a> StateStore<'a> {
    /// Creates the state table when missing (the database must exist).
    pub async fn open(
        settings: &'a DestinationSettings,
        slot: &str,
    ) -> Result<StateStore<'a>, SinkError> {
        let client = client::client(settings, true).with_setting("async_insert", "0");
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {db}.{table} (slot String, key String, value String, \
             updated_at DateTime64(6) DEFAULT now64(6)) \
             ENGINE = ReplacingMergeTree(updated_at) ORDER BY (slot, key)",
            db = quote_ident(&settings.database),
            table = quote_ident(STATE_TABLE)
        );
        client::execute(&client, settings, &sql).await?;
        Ok(StateStore {
            client,
            settings,
            slot: slot.to_string(),
        })
    }

    /// Every key of this slot with its latest value.
    pub async fn load(&self) -> Result<BTreeMap<String, String>, SinkError> {
        let sql = format!(
            "SELECT key, argMax(value, updated_at) AS value FROM {}.{} WHERE slot = ? GROUP BY key FORMAT JSONEachRow",
            quote_ident(&self.settings.database),
            quote_ident(STATE_TABLE)
        );
        let run = async {
            let mut cursor = self
                .client
                .query(&sql)
                .bind(&self.slot)
                .fetch_bytes("JSONEachRow")?;
            cursor.collect().await
        };
        let bytes = run.await.map_err(|e| client::describe(self.settings, &e))?;
        let mut out = BTreeMap::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let entry: Entry = serde_json::from_slice(line).map_err(|e| SinkError::Other {
                url: self.settings.url.clone(),
                cause: format!("unreadable {STATE_TABLE} row: {e}"),
            })?;
            if entry.value != TOMBSTONE {
                out.insert(entry.key, entry.value);
            }
        }
        Ok(out)
    }

    /// Forgets keys (one durable insert of tombstones: no mutation, so it works the
    /// same on every server and cannot be half-applied).
    pub async fn forget(&self, keys: &[String]) -> Result<(), SinkError> {
        let entries: Vec<(String, String)> = keys
            .iter()
            .map(|k| (k.clone(), TOMBSTONE.to_string()))
            .collect();
        self.put_many(&entries).await
    }

    /// Writes many keys in one durable insert per [`KEYS_PER_INSERT`]: a copy of 500
    /// tables records them all at the cost of one.
    pub async fn put_many(&self, entries: &[(String, String)]) -> Result<(), SinkError> {
        for chunk in entries.chunks(KEYS_PER_INSERT) {
            // Bound, not spliced: the crate reads every `?` in the text as a placeholder.
            let rows = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO {}.{} (slot, key, value) VALUES {rows}",
                quote_ident(&self.settings.database),
                quote_ident(STATE_TABLE),
            );
            let mut query = self.client.query(&sql);
            for (key, value) in chunk {
                query = query.bind(&self.slot).bind(key).bind(value);
            }
            query
                .execute()
                .await
                .map_err(|e| client::describe(self.settings, &e))?;
        }
        Ok(())
    }

    /// Every key of this slot that starts with `prefix`.
    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        Ok(self
            .load()
            .await?
            .into_keys()
            .filter(|k| k.starts_with(prefix))
            .collect())
    }

    /// Writes one key (durably: no async insert). An empty value reads as forgotten.
    pub async fn put(&self, key: &str, value: &str) -> Result<(), SinkError> {
        let sql = format!(
            "INSERT INTO {}.{} (slot, key, value) VALUES (?, ?, ?)",
            quote_ident(&self.settings.database),
            quote_ident(STATE_TABLE)
        );
        self.client
            .query(&sql)
            .bind(&self.slot)
            .bind(key)
            .bind(value)
            .execute()
            .await
            .map_err(|e| client::describe(self.settings, &e))
    }
}
