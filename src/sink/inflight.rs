//! pgch's inserts running in ClickHouse, found by their `query_id`: a TRUNCATE, a live
//! resync's exchange and a keyless table's fresh copy must not race an insert that a
//! cancelled copy or an abandoned retry left running.

use std::time::{Duration, Instant};

use crate::config::DestinationSettings;
use crate::sink::client as ch_client;
use crate::sink::preflight::escape_string;

/// The start of every copy insert's `query_id` for a destination table.
pub fn copy_query_prefix(table: &str) -> String {
    format!("pgch-copy-{table}-")
}

/// The start of every stream insert's `query_id` for a destination table.
pub fn stream_query_prefix(table: &str) -> String {
    format!("pgch-cdc-{table}-")
}

/// Waits until ClickHouse runs no insert of `table` any more: a copy (or a stream
/// insert attempt) abandoned by its client may still be finishing on the server, and
/// must not land after a TRUNCATE or an exchange. Servers that cannot tell (no
/// `system.processes`) are taken at their word; after a minute pgch goes on, warning.
pub async fn wait_for_inserts(ch: &clickhouse::Client, dest: &DestinationSettings, table: &str) {
    // Copies, and attempts of stream inserts abandoned by a retry, of this table.
    let sql = format!(
        "SELECT count() FROM system.processes WHERE startsWith(query_id, '{}') OR startsWith(query_id, '{}')",
        escape_string(&copy_query_prefix(table)),
        escape_string(&stream_query_prefix(table))
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match ch_client::query_text(ch, dest, &sql).await {
            Ok(n) if n.trim() == "0" => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list running ClickHouse queries");
                return;
            }
        }
    }
    tracing::warn!(
        table,
        "an abandoned insert still runs in ClickHouse after 60 s; going on anyway"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_and_stream_prefixes_do_not_overlap() {
        assert!(!copy_query_prefix("t").starts_with(&stream_query_prefix("t")));
        assert!(!stream_query_prefix("t").starts_with(&copy_query_prefix("t")));
        // One table's prefix never matches a longer name's inserts by accident.
        assert!(!stream_query_prefix("t_1").starts_with(&stream_query_prefix("t")));
    }
}
