//! `pgch status` and the status page: what pgch is doing, read from where it keeps its
//! truth — the slot in Postgres, `_pgch_state` and the tables in ClickHouse, and the
//! running process's own health — so it answers the same whether pgch runs or not.
//!
//! ```text
//!   Postgres (slot, publication, sizes) ─┐
//!   ClickHouse (_pgch_state, tables)    ─┼─► Status ─► judge ─► text / JSON / HTML
//!   running pgch (/metrics, /healthz)   ─┘
//! ```
//!
//! Collecting does I/O ([`collect`]); judging and rendering are pure ([`judge`],
//! [`render`]), so the rules and the page are tested without servers.

pub mod collect;
pub mod page;
pub mod prom;
pub mod render;

use serde::Serialize;

pub use collect::{collect, HealthSource};

/// How the operator should feel: the exit code of `pgch status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Copying or streaming as it should.
    Healthy,
    /// Works, but someone should look (pgch stopped while its slot retains WAL, a slot
    /// near its limit, a resync pending).
    Attention,
    /// Data is or will be lost or stuck without a fix (slot lost, a server unreachable,
    /// pgch failed).
    Broken,
}

impl Level {
    /// The process exit code: 0 healthy, 1 attention, 2 broken.
    pub fn exit_code(self) -> i32 {
        match self {
            Level::Healthy => 0,
            Level::Attention => 1,
            Level::Broken => 2,
        }
    }

    /// The word shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Healthy => "healthy",
            Level::Attention => "attention",
            Level::Broken => "broken",
        }
    }
}

/// Everything `pgch status` knows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub slot_name: String,
    pub publication: String,
    pub database: String,
    /// Why the source could not be read; the slot and table facts are then missing.
    pub source_error: Option<String>,
    /// Why ClickHouse could not be read.
    pub destination_error: Option<String>,
    /// Whether `_pgch_state` holds a record of this slot (pgch ran here before).
    pub state_recorded: bool,
    pub slot: Option<SlotStatus>,
    /// Set while a `pgch resync` is unfinished: its scope.
    pub resync_pending: Option<String>,
    pub tables: Vec<TableStatus>,
    pub pgch: PgchStatus,
    /// Filled by [`judge`].
    pub level: Option<Level>,
    pub reasons: Vec<Reason>,
}

/// One finding of [`judge`] and what to do about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    pub level: Level,
    pub message: String,
}

/// The replication slot as Postgres reports it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SlotStatus {
    pub exists: bool,
    pub active: bool,
    pub confirmed_lsn: Option<String>,
    /// WAL the slot holds on the server (`pg_current_wal_lsn() - restart_lsn`).
    pub retained_bytes: Option<i64>,
    /// `max_slot_wal_keep_size` in bytes; −1 unlimited; absent on Postgres 12.
    pub max_keep_bytes: Option<i64>,
    pub retained_ratio: Option<f64>,
    pub wal_status: Option<String>,
    pub safe_wal_bytes: Option<i64>,
    /// The slot's `failover` flag (Postgres 17+); absent where the server has none.
    pub failover: Option<bool>,
    /// Whether pgch is configured to want a failover slot.
    pub failover_wanted: bool,
}

/// Where one published (or formerly published) table stands.
#[derive(Clone, Debug, Serialize)]
pub struct TableStatus {
    /// `schema.table` in Postgres.
    pub source: String,
    /// The ClickHouse table.
    pub destination: String,
    pub state: TableState,
    pub partitions_done: Option<u64>,
    pub partitions_total: Option<u64>,
    /// Rows copied by the running copy (from the running pgch's metrics).
    pub rows_copied: Option<u64>,
    /// Postgres' estimate of the table's rows.
    pub rows_estimated: Option<u64>,
    /// Rows ClickHouse stores (every version until merges fold them).
    pub rows_stored: Option<u64>,
    /// The LSN of the newest change applied to the table (its highest `_version`).
    pub last_change_lsn: Option<String>,
}

/// The states a table moves through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    /// Published, but no ClickHouse table of this slot yet: copied at the next start
    /// (or, while pgch runs, as soon as it notices the table joined).
    NotCopied,
    /// Its copy has partitions left.
    Copying,
    /// Copied; the stream carries its changes while pgch runs.
    Copied,
    /// Copied, and the running pgch is streaming.
    Streaming,
    /// Inside an unfinished `pgch resync`.
    ResyncPending,
    /// Its ClickHouse table belongs to this slot, but the publication no longer lists it.
    LeftPublication,
}

impl TableState {
    /// The words shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            TableState::NotCopied => "not copied yet",
            TableState::Copying => "copying",
            TableState::Copied => "copied",
            TableState::Streaming => "streaming",
            TableState::ResyncPending => "resync pending",
            TableState::LeftPublication => "left the publication",
        }
    }
}

/// The pgch process behind the metrics listener, when one answers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PgchStatus {
    /// Where pgch's endpoint was looked for.
    pub endpoint: String,
    pub running: bool,
    pub phase: Option<String>,
    /// `/healthz`: the process is not wedged and recorded no fatal error.
    pub live: Option<bool>,
    /// `/readyz`: doing the job of its mode.
    pub ready: Option<bool>,
    /// Why it is not live or not ready, one sentence each.
    pub problems: Vec<String>,
    pub lag_seconds: Option<f64>,
    pub acknowledged_lsn: Option<String>,
    /// Bytes of changes held in the pipeline.
    pub pipeline_memory_bytes: Option<u64>,
}

/// Above this share of `max_slot_wal_keep_size` the slot wants attention.
pub const ATTENTION_RATIO: f64 = 0.5;

/// Fills `level` and `reasons` from the facts: the rules of the exit code.
pub fn judge(status: &mut Status) {
    let mut reasons = Vec::new();
    let mut say = |level: Level, message: String| reasons.push(Reason { level, message });
    if let Some(e) = &status.source_error {
        say(Level::Broken, format!("the source cannot be read: {e}"));
    }
    if let Some(e) = &status.destination_error {
        say(Level::Broken, format!("ClickHouse cannot be read: {e}"));
    }
    if let Some(slot) = &status.slot {
        judge_slot(slot, status.state_recorded, &status.slot_name, &mut say);
    }
    if let Some(scope) = &status.resync_pending {
        say(
            Level::Attention,
            format!("a `pgch resync` ({scope}) is unfinished: run it again to finish it"),
        );
    }
    let pgch = &status.pgch;
    if pgch.running {
        if pgch.live == Some(false) {
            say(
                Level::Broken,
                format!("pgch is not live: {}", pgch.problems.join("; ")),
            );
        } else if pgch.ready == Some(false) && pgch.phase.as_deref() == Some("streaming") {
            say(
                Level::Attention,
                format!("pgch is not ready: {}", pgch.problems.join("; ")),
            );
        }
    } else if status.slot.as_ref().is_some_and(|s| s.exists) {
        say(
            Level::Attention,
            format!(
                "pgch is not running (nothing answers at {}): its slot retains WAL until it runs again",
                pgch.endpoint
            ),
        );
    }
    let left: Vec<&str> = status
        .tables
        .iter()
        .filter(|t| t.state == TableState::LeftPublication)
        .map(|t| t.source.as_str())
        .collect();
    if !left.is_empty() {
        say(
            Level::Attention,
            format!(
                "{} left the publication: their ClickHouse tables stop changing (add them again and `pgch resync --table`, or drop them)",
                left.join(", ")
            ),
        );
    }
    status.level = Some(
        reasons
            .iter()
            .map(|r| r.level)
            .max()
            .unwrap_or(Level::Healthy),
    );
    status.reasons = reasons;
}

fn judge_slot(
    slot: &SlotStatus,
    state_recorded: bool,
    name: &str,
    say: &mut impl FnMut(Level, String),
) {
    if !slot.exists {
        if state_recorded {
            say(Level::Broken, format!("the slot \"{name}\" is gone but _pgch_state records it (dropped, or a failover to a server without it): run `pgch resync`"));
        } else {
            say(
                Level::Attention,
                format!("no slot \"{name}\" yet: `pgch run` creates it"),
            );
        }
        return;
    }
    match slot.wal_status.as_deref() {
        Some("lost") => say(Level::Broken, format!("the slot \"{name}\" was invalidated (wal_status lost): the WAL it needed is gone; run `pgch resync`")),
        Some("unreserved") => say(Level::Attention, format!("the slot \"{name}\" is past max_slot_wal_keep_size (wal_status unreserved): it is invalidated at the next checkpoint unless pgch catches up")),
        _ => {}
    }
    if let Some(ratio) = slot.retained_ratio {
        if ratio >= ATTENTION_RATIO && slot.wal_status.as_deref() != Some("lost") {
            say(
                Level::Attention,
                format!(
                    "the slot retains {:.0}% of max_slot_wal_keep_size",
                    ratio * 100.0
                ),
            );
        }
    }
    if slot.failover_wanted && slot.failover == Some(false) {
        say(Level::Attention, format!("the slot \"{name}\" is not a failover slot: a failover loses it (ALTER_REPLICATION_SLOT {name} (FAILOVER true), or `source.failover_slot = false` to accept that)"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(exists: bool) -> SlotStatus {
        SlotStatus {
            exists,
            active: true,
            wal_status: Some("reserved".into()),
            ..SlotStatus::default()
        }
    }

    fn running() -> PgchStatus {
        PgchStatus {
            endpoint: "127.0.0.1:9187".into(),
            running: true,
            phase: Some("streaming".into()),
            live: Some(true),
            ready: Some(true),
            ..PgchStatus::default()
        }
    }

    fn judged(mut s: Status) -> (Level, Vec<String>) {
        judge(&mut s);
        let reasons = s.reasons.iter().map(|r| r.message.clone()).collect();
        (s.level.unwrap_or(Level::Broken), reasons)
    }

    #[test]
    fn a_running_streaming_pgch_with_a_healthy_slot_is_healthy() {
        let s = Status {
            slot: Some(slot(true)),
            state_recorded: true,
            pgch: running(),
            ..Status::default()
        };
        assert_eq!(judged(s), (Level::Healthy, vec![]));
    }

    #[test]
    fn a_stopped_pgch_whose_slot_holds_wal_wants_attention() {
        let s = Status {
            slot: Some(slot(true)),
            state_recorded: true,
            ..Status::default()
        };
        let (level, reasons) = judged(s);
        assert_eq!(level, Level::Attention);
        assert!(reasons[0].contains("not running"), "{reasons:?}");
    }

    #[test]
    fn a_lost_or_missing_recorded_slot_is_broken_and_names_the_resync() {
        let mut lost = slot(true);
        lost.wal_status = Some("lost".into());
        for slot in [lost, slot(false)] {
            let s = Status {
                slot: Some(slot),
                state_recorded: true,
                pgch: running(),
                ..Status::default()
            };
            let (level, reasons) = judged(s);
            assert_eq!(level, Level::Broken);
            assert!(reasons[0].contains("pgch resync"), "{reasons:?}");
        }
    }

    #[test]
    fn copying_is_healthy_even_though_not_ready_yet() {
        let mut pgch = running();
        pgch.phase = Some("snapshotting".into());
        pgch.ready = Some(false);
        let s = Status {
            slot: Some(slot(true)),
            state_recorded: true,
            pgch,
            ..Status::default()
        };
        assert_eq!(judged(s).0, Level::Healthy);
    }

    #[test]
    fn a_wedged_pgch_or_an_unreachable_server_is_broken_a_near_full_slot_attention() {
        let mut pgch = running();
        pgch.live = Some(false);
        pgch.problems = vec!["fatal: x".into()];
        let s = Status {
            slot: Some(slot(true)),
            pgch,
            ..Status::default()
        };
        assert_eq!(judged(s).0, Level::Broken);
        let s = Status {
            source_error: Some("connection refused".into()),
            pgch: running(),
            ..Status::default()
        };
        assert_eq!(judged(s).0, Level::Broken);
        let mut full = slot(true);
        full.retained_ratio = Some(0.8);
        let s = Status {
            slot: Some(full),
            pgch: running(),
            ..Status::default()
        };
        let (level, reasons) = judged(s);
        assert_eq!(level, Level::Attention);
        assert!(reasons[0].contains("80%"), "{reasons:?}");
    }
}
