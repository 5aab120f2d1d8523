//! The slot poller: every `metrics.slot_poll_secs` it reads the slot from
//! `pg_replication_slots` and `max_slot_wal_keep_size` from `pg_settings` on its own
//! connection, publishes the figures, warns as the retained WAL nears the limit, and
//! tells `/readyz` when the slot is lost or past the upper warning ratio.
//!
//! Why its own connection and plain SQL: the figures must keep coming while the
//! pipeline is stuck (that is when they matter), and the queries must work for the
//! guide's non-superuser with `REPLICATION`: `pg_replication_slots`, `pg_settings` and
//! `pg_current_wal_lsn()` are readable by every role. A failed poll is counted
//! (`pgch_errors_total{kind="slot_poll"}`) and retried on the next tick; it never stops
//! pgch.

use std::time::Duration;

use tokio_postgres::Client;

use super::{global, health, DecodingStats, SlotFigures};
use crate::config::{PgEndpoint, Settings};
use crate::source::connect;
use crate::source::row::{column, ColumnError};

/// Task name for heartbeats.
pub const TASK: &str = "slot_poller";
/// Error kind of a failed poll.
pub const ERROR_KIND: &str = "slot_poll";

/// Starts the poller for the configured slot; abort the handle to stop it.
pub fn spawn(settings: &Settings) -> tokio::task::JoinHandle<()> {
    let endpoint = settings.source.endpoint.clone();
    let slot = settings.source.slot.clone();
    let every = settings.metrics.slot_poll;
    let warnings = Warnings::new(settings.metrics.warn_ratios.clone());
    tokio::spawn(run(endpoint, slot, every, warnings))
}

async fn run(endpoint: PgEndpoint, slot: String, every: Duration, mut warnings: Warnings) {
    let mut conn: Option<(Client, u32)> = None;
    let mut failing = false;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        health::heartbeat(TASK);
        let polled = tokio::time::timeout(every.max(Duration::from_secs(10)), async {
            if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
                conn = None;
                let client = connect::connect(&endpoint)
                    .await
                    .map_err(|e| e.to_string())?;
                let version = server_version(&client).await?;
                conn = Some((client, version));
            }
            match &conn {
                Some((client, version)) => poll(client, *version, &slot).await,
                None => Err("no connection".to_string()),
            }
        })
        .await
        .unwrap_or_else(|_| Err("the slot query timed out".to_string()));
        match polled {
            Ok(figures) => {
                if failing {
                    tracing::info!(slot = %slot, "slot metrics are being read again");
                    failing = false;
                }
                global().slot(&slot, figures.as_ref());
                let problem = warnings.observe(&slot, figures.as_ref());
                health::set_slot_problem(problem);
            }
            Err(e) => {
                global().error(ERROR_KIND);
                conn = None;
                if !failing {
                    tracing::warn!(slot = %slot, error = %e, "cannot read the slot's figures; retrying every {}s", every.as_secs());
                    failing = true;
                }
            }
        }
    }
}

async fn server_version(client: &Client) -> Result<u32, String> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| e.to_string())?;
    let v: i32 = column(&row, 0, "reading server_version_num").map_err(|e| e.to_string())?;
    u32::try_from(v).map_err(|_| format!("bad server_version_num {v}"))
}

/// Reads the slot; `None` when it does not exist (not created yet, or dropped). Shared
/// with `pgch status`, so both show the same figures.
pub async fn poll(
    client: &Client,
    version: u32,
    slot: &str,
) -> Result<Option<SlotFigures>, String> {
    let pg13 = version >= 130_000;
    let stats = if version >= 140_000 {
        "s.spill_txns, s.spill_bytes, s.stream_txns, s.stream_bytes, s.total_bytes"
    } else {
        "NULL::int8, NULL::int8, NULL::int8, NULL::int8, NULL::int8"
    };
    let join = if version >= 140_000 {
        "LEFT JOIN pg_catalog.pg_stat_replication_slots s ON s.slot_name = r.slot_name"
    } else {
        ""
    };
    let failover = if version >= 170_000 {
        "r.failover"
    } else {
        "NULL::bool"
    };
    let sql = format!(
        "SELECT ({wal} - r.restart_lsn)::int8, \
                ({wal} - r.confirmed_flush_lsn)::int8, \
                r.active, {status}, {safe}, \
                (SELECT setting || ' ' || coalesce(unit, '') FROM pg_catalog.pg_settings \
                  WHERE name = 'max_slot_wal_keep_size'), {stats}, {failover} \
           FROM pg_catalog.pg_replication_slots r {join} WHERE r.slot_name = $1",
        wal = crate::source::WAL_POSITION_SQL,
        status = if pg13 {
            "r.wal_status::text"
        } else {
            "NULL::text"
        },
        safe = if pg13 {
            "r.safe_wal_size::int8"
        } else {
            "NULL::int8"
        },
    );
    let row = client
        .query_opt(&sql, &[&slot])
        .await
        .map_err(|e| e.to_string())?;
    let Some(row) = row else { return Ok(None) };
    figures(&row).map(Some).map_err(|e| e.to_string())
}

/// The figures from a row of [`poll`]'s query.
fn figures(row: &tokio_postgres::Row) -> Result<SlotFigures, ColumnError> {
    const WHAT: &str = "reading the slot's figures (pg_replication_slots, pg_settings)";
    let max_keep: Option<String> = column(row, 5, WHAT)?;
    Ok(SlotFigures {
        retained_bytes: column(row, 0, WHAT)?,
        unconfirmed_bytes: column(row, 1, WHAT)?,
        active: column(row, 2, WHAT)?,
        wal_status: column(row, 3, WHAT)?,
        safe_wal_bytes: column(row, 4, WHAT)?,
        max_keep_bytes: max_keep.as_deref().and_then(setting_bytes),
        decoding: match column::<Option<i64>>(row, 6, WHAT)? {
            Some(spilled_transactions) => Some(DecodingStats {
                spilled_transactions,
                spilled_bytes: column::<Option<i64>>(row, 7, WHAT)?.unwrap_or(0),
                streamed_transactions: column::<Option<i64>>(row, 8, WHAT)?.unwrap_or(0),
                streamed_bytes: column::<Option<i64>>(row, 9, WHAT)?.unwrap_or(0),
                decoded_bytes: column::<Option<i64>>(row, 10, WHAT)?.unwrap_or(0),
            }),
            None => None,
        },
        failover: column(row, 11, WHAT)?,
    })
}

/// `max_slot_wal_keep_size` from `pg_settings` ("setting unit", e.g. `"1024 MB"`) in
/// bytes; −1 (unlimited) stays −1.
pub fn setting_bytes(setting_and_unit: &str) -> Option<i64> {
    let mut parts = setting_and_unit.split_whitespace();
    let value: i64 = parts.next()?.parse().ok()?;
    if value < 0 {
        return Some(-1);
    }
    let unit = parts.next().unwrap_or("");
    // A unit may carry a multiplier, e.g. "8kB" for block-sized settings.
    let digits: String = unit.chars().take_while(|c| c.is_ascii_digit()).collect();
    let factor: i64 = if digits.is_empty() {
        1
    } else {
        digits.parse().ok()?
    };
    let scale: i64 = match unit.get(digits.len()..)? {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    value.checked_mul(factor)?.checked_mul(scale)
}

/// Remembers which warning ratio was crossed last, so each upward crossing logs once.
#[derive(Debug)]
pub struct Warnings {
    ratios: Vec<f64>,
    /// How many of `ratios` the last reading was at or above.
    level: usize,
    last_status: Option<String>,
}

impl Warnings {
    /// `ratios` strictly increasing (validated by the config).
    pub fn new(ratios: Vec<f64>) -> Warnings {
        Warnings {
            ratios,
            level: 0,
            last_status: None,
        }
    }

    /// The thresholds newly crossed upward by `ratio` (empty when none); falling back
    /// under a threshold re-arms it.
    pub fn crossed(&mut self, ratio: Option<f64>) -> Vec<f64> {
        let Some(r) = ratio else {
            self.level = 0;
            return Vec::new();
        };
        let level = self.ratios.iter().filter(|t| r >= **t).count();
        let crossed = self
            .ratios
            .iter()
            .skip(self.level)
            .take(level.saturating_sub(self.level))
            .copied()
            .collect();
        self.level = level;
        crossed
    }

    /// Logs crossings and `wal_status` changes; returns the slot's problem for `/readyz`.
    pub fn observe(&mut self, slot: &str, figures: Option<&SlotFigures>) -> Option<String> {
        let Some(f) = figures else {
            self.crossed(None);
            return None;
        };
        let ratio = f.ratio();
        let crossed = self.crossed(ratio);
        if let (Some(r), Some(&t)) = (ratio, crossed.last()) {
            tracing::warn!(
                slot,
                retained_bytes = f.retained_bytes.unwrap_or(0),
                max_slot_wal_keep_size_bytes = f.max_keep_bytes.unwrap_or(0),
                ratio = %format!("{r:.2}"),
                threshold = %format!("{t:.2}"),
                "the slot retains {:.0}% of max_slot_wal_keep_size (warning at {:.0}%): at 100% Postgres invalidates it and a full resync is needed. \
                 Check that pgch is applying (ClickHouse reachable, pgch_errors_total, pgch_lag_seconds), or raise max_slot_wal_keep_size",
                r * 100.0,
                t * 100.0
            );
        }
        if f.wal_status != self.last_status {
            if let Some(s) = f.wal_status.as_deref() {
                if s == "unreserved" || s == "lost" {
                    tracing::warn!(
                        slot,
                        wal_status = s,
                        "the slot's wal_status is {s}: {}",
                        if s == "lost" {
                            "its WAL was removed; pgch cannot continue from it — run `pgch resync`"
                        } else {
                            "it retains more than max_slot_wal_keep_size and is lost at the next checkpoint unless pgch catches up"
                        }
                    );
                }
            }
            self.last_status = f.wal_status.clone();
        }
        if f.wal_status.as_deref() == Some("lost") {
            return Some(format!(
                "replication slot {slot} is lost (wal_status = lost): run `pgch resync`"
            ));
        }
        match (ratio, self.ratios.last()) {
            (Some(r), Some(&top)) if r >= top => Some(format!(
                "replication slot {slot} retains {:.0}% of max_slot_wal_keep_size (limit for ready: {:.0}%)",
                r * 100.0,
                top * 100.0
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_units_become_bytes() {
        assert_eq!(setting_bytes("-1 MB"), Some(-1));
        assert_eq!(setting_bytes("1024 MB"), Some(1 << 30));
        assert_eq!(setting_bytes("0 MB"), Some(0));
        assert_eq!(setting_bytes("2 8kB"), Some(16 * 1024));
        assert_eq!(setting_bytes("5 "), Some(5));
        assert_eq!(setting_bytes("5 parsecs"), None);
        assert_eq!(setting_bytes(""), None);
    }

    #[test]
    fn each_threshold_warns_once_per_upward_crossing() {
        let mut w = Warnings::new(vec![0.5, 0.8]);
        assert!(w.crossed(Some(0.1)).is_empty());
        assert_eq!(w.crossed(Some(0.6)), vec![0.5]);
        assert!(w.crossed(Some(0.7)).is_empty());
        assert_eq!(w.crossed(Some(0.95)), vec![0.8]);
        assert!(w.crossed(Some(1.2)).is_empty());
        assert!(w.crossed(Some(0.6)).is_empty(), "falling warns nothing");
        assert_eq!(w.crossed(Some(0.9)), vec![0.8], "re-armed after falling");
        assert!(w.crossed(Some(0.0)).is_empty());
        assert_eq!(w.crossed(Some(0.85)), vec![0.5, 0.8], "a jump crosses both");
        assert!(w.crossed(None).is_empty());
        assert_eq!(w.crossed(Some(0.55)), vec![0.5]);
    }

    #[test]
    fn lost_or_past_the_top_ratio_is_a_readiness_problem() {
        let mut w = Warnings::new(vec![0.5, 0.8]);
        let fig = |retained, status: &str| SlotFigures {
            retained_bytes: Some(retained),
            max_keep_bytes: Some(100),
            wal_status: Some(status.to_string()),
            ..Default::default()
        };
        assert_eq!(w.observe("s", Some(&fig(10, "reserved"))), None);
        assert_eq!(w.observe("s", Some(&fig(60, "reserved"))), None);
        assert!(w
            .observe("s", Some(&fig(85, "reserved")))
            .is_some_and(|p| p.contains("85%")));
        let lost = SlotFigures {
            wal_status: Some("lost".into()),
            max_keep_bytes: Some(100),
            ..Default::default()
        };
        assert!(w
            .observe("s", Some(&lost))
            .is_some_and(|p| p.contains("pgch resync")));
        assert_eq!(w.observe("s", None), None);
        let unlimited = SlotFigures {
            retained_bytes: Some(1 << 40),
            max_keep_bytes: Some(-1),
            ..Default::default()
        };
        assert_eq!(unlimited.ratio(), None);
        assert_eq!(w.observe("s", Some(&unlimited)), None);
    }
}
