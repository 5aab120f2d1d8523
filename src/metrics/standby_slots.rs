//! The standby watcher: every `metrics.slot_poll_secs` it asks each standby of
//! `source.standby_urls` whether it holds a synced, valid copy of pgch's slot, and
//! publishes how many do (`pgch_slot_synced_on_standbys`). It is what tells the
//! operator, before a failover, whether the failover would cost a resync.
//!
//! A standby that cannot be read does not count (a failover to it is not known to keep
//! the slot); the failure is counted (`pgch_errors_total{kind="standby_poll"}`), logged
//! once, and retried on the next tick. It never stops pgch.

use std::time::Duration;

use tokio_postgres::Client;

use super::global;
use crate::config::{PgEndpoint, Settings};
use crate::source::connect;

/// Error kind of a failed standby reading.
pub const ERROR_KIND: &str = "standby_poll";

/// Whether a slot copy is one a promotion would keep: synced from the primary, not
/// temporary, not invalidated (Postgres 17+).
const SYNCED_SQL: &str = "SELECT count(*) FROM pg_catalog.pg_replication_slots \
     WHERE slot_name = $1 AND synced AND NOT temporary AND invalidation_reason IS NULL";

/// Starts the watcher when standbys are configured; abort the handle to stop it.
pub fn spawn(settings: &Settings) -> Option<tokio::task::JoinHandle<()>> {
    let standbys = settings.source.standbys.clone();
    if standbys.is_empty() {
        return None;
    }
    let slot = settings.source.slot.clone();
    let every = settings.metrics.slot_poll;
    Some(tokio::spawn(run(standbys, slot, every)))
}

struct Watched {
    endpoint: PgEndpoint,
    client: Option<Client>,
    failing: bool,
}

async fn run(standbys: Vec<PgEndpoint>, slot: String, every: Duration) {
    let mut watched: Vec<Watched> = standbys
        .into_iter()
        .map(|endpoint| Watched {
            endpoint,
            client: None,
            failing: false,
        })
        .collect();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut synced = 0;
        for w in &mut watched {
            let read = tokio::time::timeout(every.max(Duration::from_secs(10)), read(w, &slot))
                .await
                .unwrap_or_else(|_| Err("the standby did not answer in time".to_string()));
            match read {
                Ok(has) => {
                    if w.failing {
                        tracing::info!(standby = %w.endpoint.address(), "the standby's slots are being read again");
                        w.failing = false;
                    }
                    synced += i64::from(has);
                }
                Err(e) => {
                    global().error(ERROR_KIND);
                    w.client = None;
                    if !w.failing {
                        tracing::warn!(standby = %w.endpoint.address(), slot = %slot, error = %e, "cannot read whether the standby keeps the slot; it does not count as synced");
                        w.failing = true;
                    }
                }
            }
        }
        global().synced_on_standbys(&slot, Some(synced));
    }
}

/// Whether the standby holds a synced copy of `slot`, connecting first if needed.
async fn read(w: &mut Watched, slot: &str) -> Result<bool, String> {
    if w.client.as_ref().is_none_or(Client::is_closed) {
        w.client = None;
        let client = connect::connect(&w.endpoint)
            .await
            .map_err(|e| e.to_string())?;
        w.client = Some(client);
    }
    let client = w.client.as_ref().ok_or("no connection")?;
    let row = client
        .query_one(SYNCED_SQL, &[&slot])
        .await
        .map_err(|e| e.to_string())?;
    let n: i64 = row.try_get(0).map_err(|e| e.to_string())?;
    Ok(n > 0)
}
