use std::time::{Duration, Instant};

use super::health::{HealthState, Phase, HEARTBEAT_TIMEOUT, STALL_GRACE};
use super::*;

#[test]
fn every_family_registers_and_renders() {
    let m = Metrics::new();
    assert!(m.families.is_ok());
    m.rows("public_orders", Op::Update, 3);
    m.insert_done("public_orders", 3, 120, Duration::from_millis(7));
    m.retry("clickhouse_insert");
    m.error("slot_poll");
    m.acknowledged(Lsn::new(0x16_B374_D848));
    m.memory_in_use(4096);
    use crate::sink::rowbinary::{ClampCounts, ClampKind};
    m.clamped("public_orders", &ClampCounts::of(ClampKind::Bc, 2));
    m.snapshot_progress("public_orders", 10, 100);
    m.slot(
        "pgch",
        Some(&SlotFigures {
            retained_bytes: Some(50),
            unconfirmed_bytes: Some(10),
            max_keep_bytes: Some(100),
            safe_wal_bytes: Some(50),
            wal_status: Some("reserved".into()),
            active: true,
            decoding: Some(DecodingStats {
                spilled_transactions: 2,
                spilled_bytes: 4096,
                ..DecodingStats::default()
            }),
            failover: Some(true),
        }),
    );
    m.synced_on_standbys("pgch", Some(1));
    m.phase(Phase::Streaming);
    m.made_visible(now_pg_micros() - 3_000_000, now_pg_micros() - 20_000);
    let text = m.render().unwrap();
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut all = ALL.to_vec();
    all.sort_unstable();
    let mut seen = types.clone();
    seen.sort_unstable();
    assert_eq!(seen, all, "ALL lists exactly the exported families");
    for needle in [
        "pgch_rows_total{op=\"update\",table=\"public_orders\"} 3",
        "pgch_inserted_bytes_total{table=\"public_orders\"} 120",
        "pgch_insert_duration_seconds_bucket{table=\"public_orders\",le=\"0.01\"} 1",
        "pgch_acknowledged_lsn_bytes 97500059720",
        "pgch_slot_retained_wal_ratio{slot=\"pgch\"} 0.5",
        "pgch_slot_wal_status{slot=\"pgch\",wal_status=\"reserved\"} 1",
        "pgch_slot_wal_status{slot=\"pgch\",wal_status=\"lost\"} 0",
        "pgch_snapshot_estimated_rows{table=\"public_orders\"} 100",
        "pgch_build_info{version=",
        "pgch_slot_spilled_bytes_total{slot=\"pgch\"} 4096",
        "pgch_commit_to_visible_seconds_bucket{le=\"0.05\"} 1",
        "pgch_commit_to_visible_seconds_bucket{le=\"5\"} 2",
        "pgch_commit_to_visible_seconds_count 2",
        "pgch_slot_failover{slot=\"pgch\"} 1",
        "pgch_slot_synced_on_standbys{slot=\"pgch\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[test]
fn a_gone_slot_and_postgres_12_leave_series_absent_not_fake() {
    let m = Metrics::new();
    let pg12 = SlotFigures {
        retained_bytes: Some(5),
        unconfirmed_bytes: Some(1),
        active: false,
        ..Default::default()
    };
    m.slot("s", Some(&pg12));
    let text = m.render().unwrap();
    assert!(text.contains("pgch_slot_retained_wal_bytes{slot=\"s\"} 5"));
    assert!(text.contains("pgch_slot_active{slot=\"s\"} 0"));
    for absent in [
        "pgch_slot_safe_wal_bytes{",
        "pgch_slot_wal_status{",
        "pgch_slot_max_wal_keep_bytes{",
        "pgch_slot_retained_wal_ratio{",
        "pgch_slot_failover{",
    ] {
        assert!(!text.contains(absent), "{absent} present in\n{text}");
    }
    m.slot("s", None);
    assert!(!m.render().unwrap().contains("slot=\"s\""));
}

#[test]
fn lag_grows_while_a_commit_waits_and_is_zero_when_caught_up() {
    let mut s = LagState::default();
    let sec = 1_000_000;
    assert_eq!(s.lag_seconds(100 * sec), 0.0, "nothing seen yet");
    s.oldest_unapplied = Some(90 * sec);
    assert_eq!(s.lag_seconds(100 * sec), 10.0);
    assert_eq!(s.lag_seconds(130 * sec), 40.0, "grows while stuck");
    s.oldest_unapplied = None;
    s.last_applied = Some(95 * sec);
    assert_eq!(s.lag_seconds(100 * sec), 5.0);
    s.caught_up = true;
    assert_eq!(s.lag_seconds(500 * sec), 0.0, "idle and acknowledged");
    s.last_applied = Some(200 * sec);
    s.caught_up = false;
    assert_eq!(s.lag_seconds(100 * sec), 0.0, "clock skew never negative");
}

#[test]
fn received_then_applied_then_caught_up() {
    let m = Metrics::new();
    let now = now_pg_micros();
    m.caught_up();
    m.received_commit(now - 30_000_000);
    m.received_commit(now - 1_000_000);
    let lag = m.lag_seconds();
    assert!((29.0..60.0).contains(&lag), "{lag}");
    m.applied_commit(now - 1_000_000);
    assert!(m.lag_seconds() < 30.0);
    m.caught_up();
    assert_eq!(m.lag_seconds(), 0.0);
}

#[test]
fn readiness_needs_the_mode_phase_and_nothing_wrong() {
    let t0 = Instant::now();
    let mut h = HealthState::new();
    assert!(!h.readiness(t0).ready, "starting is not ready");
    h.set_phase(Phase::Snapshotting);
    assert!(
        !h.readiness(t0).ready,
        "a streaming mode is ready when streaming"
    );
    h.set_phase(Phase::Streaming);
    assert!(h.readiness(t0).ready);
    h.set_stalled("clickhouse", true, t0);
    assert!(h.readiness(t0 + STALL_GRACE / 2).ready, "within the grace");
    let late = t0 + STALL_GRACE + Duration::from_secs(1);
    let v = h.readiness(late);
    assert!(
        !v.ready && v.reasons[0].contains("clickhouse stalled"),
        "{v:?}"
    );
    h.set_stalled("clickhouse", false, late);
    assert!(h.readiness(late).ready);
    h.set_slot_problem(Some("replication slot s is lost".into()));
    assert!(!h.readiness(late).ready);
    h.set_slot_problem(None);
    h.set_fatal("resync required".into());
    let v = h.readiness(late);
    assert!(!v.ready && v.reasons[0].contains("resync required"));

    let mut snap = HealthState::new();
    snap.set_ready_phase(Phase::Snapshotting);
    snap.set_phase(Phase::Snapshotting);
    assert!(
        snap.readiness(t0).ready,
        "snapshot_only is ready while copying"
    );
}

#[test]
fn liveness_fails_on_a_silent_task_or_a_fatal_error() {
    let t0 = Instant::now();
    let mut h = HealthState::new();
    assert!(h.liveness(t0).ready);
    h.heartbeat("stream", t0);
    assert!(h.liveness(t0 + HEARTBEAT_TIMEOUT / 2).ready);
    let v = h.liveness(t0 + HEARTBEAT_TIMEOUT + Duration::from_secs(1));
    assert!(!v.ready && v.reasons[0].contains("stream"), "{v:?}");
    h.task_finished("stream");
    assert!(h.liveness(t0 + HEARTBEAT_TIMEOUT * 2).ready);
    h.set_fatal("boom".into());
    assert!(!h.liveness(t0).ready);
}

#[test]
fn the_servers_decoding_counters_grow_by_their_difference_and_survive_a_stats_reset() {
    let m = Metrics::new();
    let figures = |spilled: i64| SlotFigures {
        active: true,
        decoding: Some(DecodingStats {
            spilled_transactions: spilled,
            ..DecodingStats::default()
        }),
        ..SlotFigures::default()
    };
    let spilled = |m: &Metrics| {
        m.render()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("pgch_slot_spilled_transactions_total{slot=\"s\"} "))
            .map(|v| v.to_string())
    };
    m.slot("s", Some(&figures(5)));
    assert_eq!(spilled(&m).as_deref(), Some("5"));
    m.slot("s", Some(&figures(7)));
    assert_eq!(spilled(&m).as_deref(), Some("7"));
    // pg_stat_reset_replication_slot(): the server counts from 0 again.
    m.slot("s", Some(&figures(1)));
    assert_eq!(
        spilled(&m).as_deref(),
        Some("8"),
        "a counter never goes down"
    );
}
