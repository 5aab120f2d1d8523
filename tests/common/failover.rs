//! A failover in the middle of a workload, and what pgch must have done across it: the
//! same for every test whose pgch carries on from a promoted standby (tests/failover.rs
//! through a two-host URL, tests/standby_decoding.rs decoding from the standby itself).

use std::path::Path;

use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

use super::process::PgchProcess;
use super::workload::{copy_records, duplicate_keys, run_transactions, wait_equal, Workload};

/// Runs `before` workload transactions on `primary`, stops it with `-m immediate` (no
/// clean shutdown: what a crash leaves), promotes `standby`, and runs `after` more
/// transactions there: the workload goes on against the new primary.
pub fn fail_over_mid_workload(
    primary: &PgCluster,
    standby: &PgCluster,
    db: &str,
    w: &mut Workload,
    before: usize,
    after: usize,
) {
    run_transactions(primary, db, w, before);
    primary
        .stop_server("immediate")
        .expect("stop the primary with -m immediate");
    standby.promote().expect("promote the standby");
    run_transactions(standby, db, w, after);
}

/// Asserts that `pgch` carried on across the failover: ClickHouse equals the new
/// primary, no key twice under `FINAL`, pgch still runs, it never said "resync
/// required", and no table was copied again (`copies_before` is [`copy_records`] from
/// before the failover). Returns the log, for what else the test looks for in it.
pub async fn assert_carried_on(
    pgch: &mut PgchProcess,
    new_primary: &PgCluster,
    db: &str,
    ch_db: &str,
    log: &Path,
    copies_before: &str,
) -> String {
    wait_equal(new_primary, db, ch_db, log).await;
    assert_eq!(duplicate_keys(ClickHouse::shared(), ch_db).await, 0);
    assert!(
        pgch.try_status().is_none(),
        "pgch carries on across the failover"
    );
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!text.contains("resync required"), "{text}");
    assert_eq!(
        copy_records(ch_db).await,
        copies_before,
        "no table was copied again"
    );
    text
}
