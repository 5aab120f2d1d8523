//! The shadow table of a resync and the swap that publishes it.
//!
//! ```text
//!   <dest>__pgch_resync  (created like <dest>, filled by a fresh copy)
//!        │ EXCHANGE TABLES <dest> AND <dest>__pgch_resync     (atomic)
//!        ▼
//!   <dest> = fresh copy only;  <dest>__pgch_resync = the old rows ─► DROP … SYNC
//! ```
//!
//! Readers of `<dest>` see the old complete table until the exchange and the new
//! complete table after it, never a half-copied one, and no old row survives the swap.
//! Servers that cannot `EXCHANGE` (an `Ordinary` database) swap by `RENAME` through a
//! temporary name: not atomic, so a reader may briefly find no table; that is logged.

use clickhouse::Client;

use crate::config::DestinationSettings;
use crate::sink::client::{self as ch_client, SinkError};
use crate::sink::ddl;
pub use crate::sink::names::{parked_name, shadow_name};
use crate::sink::preflight::escape_string;

/// ClickHouse codes that mean "EXCHANGE is not possible here": UNSUPPORTED_METHOD,
/// NOT_IMPLEMENTED (an Ordinary database), SYNTAX_ERROR (a server older than 20.x).
const EXCHANGE_UNSUPPORTED: &[u32] = &[1, 48, 62];

/// How the fresh copy became the destination table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swap {
    /// `EXCHANGE TABLES`: atomic.
    Exchanged,
    /// `RENAME` through a temporary name (no EXCHANGE support).
    Renamed,
    /// There was no destination table: the shadow was renamed to it.
    Created,
}

impl Swap {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Swap::Exchanged => "exchanged",
            Swap::Renamed => "renamed",
            Swap::Created => "created",
        }
    }
}

/// Whether a table exists in the destination database.
pub async fn exists(
    ch: &Client,
    dest: &DestinationSettings,
    table: &str,
) -> Result<bool, SinkError> {
    let count = ch_client::query_text(
        ch,
        dest,
        &format!(
            "SELECT count() FROM system.tables WHERE database = '{}' AND name = '{}'",
            escape_string(&dest.database),
            escape_string(table)
        ),
    )
    .await?;
    Ok(count.trim() != "0")
}

/// Drops a table if it exists.
pub async fn drop(ch: &Client, dest: &DestinationSettings, table: &str) -> Result<(), SinkError> {
    ch_client::execute(
        ch,
        dest,
        &ddl::drop_table_sql(&dest.database, table, dest.cluster.as_deref()),
    )
    .await
}

/// Undoes what an interrupted RENAME fallback left: the old table parked under
/// [`parked_name`]. If the destination is missing, the parked table is put back (its
/// rows are the old complete content readers had); otherwise it is dropped.
pub async fn recover_parked(
    ch: &Client,
    dest: &DestinationSettings,
    table: &str,
) -> Result<(), SinkError> {
    let parked = parked_name(table);
    if !exists(ch, dest, &parked).await? {
        return Ok(());
    }
    if exists(ch, dest, table).await? {
        tracing::info!(table = %parked, "dropping the table an interrupted resync parked");
        return drop(ch, dest, &parked).await;
    }
    tracing::warn!(table = %table, "putting back the table an interrupted resync parked");
    ch_client::execute(
        ch,
        dest,
        &ddl::rename_tables_sql(
            &dest.database,
            &[(parked.as_str(), table)],
            dest.cluster.as_deref(),
        ),
    )
    .await
}

/// Makes the filled shadow the destination table; the old rows end up in the shadow.
pub async fn swap(
    ch: &Client,
    dest: &DestinationSettings,
    table: &str,
    dest_exists: bool,
) -> Result<Swap, SinkError> {
    let shadow = shadow_name(table);
    let cluster = dest.cluster.as_deref();
    if !dest_exists {
        let sql = ddl::rename_tables_sql(&dest.database, &[(shadow.as_str(), table)], cluster);
        ch_client::execute(ch, dest, &sql).await?;
        return Ok(Swap::Created);
    }
    let sql = ddl::exchange_tables_sql(&dest.database, table, &shadow, cluster);
    match ch_client::execute(ch, dest, &sql).await {
        Ok(()) => Ok(Swap::Exchanged),
        Err(SinkError::Server { code, message, .. }) if EXCHANGE_UNSUPPORTED.contains(&code) => {
            tracing::warn!(
                table = %table,
                code,
                reason = %message.lines().next().unwrap_or_default(),
                "this ClickHouse cannot EXCHANGE TABLES (use an Atomic database to make the swap atomic): \
                 swapping by RENAME through a temporary name; readers may briefly find no table"
            );
            let parked = parked_name(table);
            let sql = ddl::rename_tables_sql(
                &dest.database,
                &[
                    (table, parked.as_str()),
                    (shadow.as_str(), table),
                    (parked.as_str(), shadow.as_str()),
                ],
                cluster,
            );
            ch_client::execute(ch, dest, &sql).await?;
            Ok(Swap::Renamed)
        }
        Err(e) => Err(e),
    }
}
