//! The `pgch` binary under a randomized workload: every table ends equal to Postgres
//! row for row, also when pgch is SIGKILLed at random moments — at least ten times,
//! some of them exactly between an insert and its acknowledgement (a failpoint) — and
//! restarted each time. Set `PGCH_TEST_SEED` to replay a run.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::converge::{env_value, log_path, log_tail};
use common::process::PgchProcess;
use common::workload::{duplicate_keys, wait_equal, wait_equal_within, Rng, Workload, SCHEMA};
use common::{guide_env, guide_source, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;
use pgch::testkit::scaled;

fn seed() -> u64 {
    let seed = std::env::var("PGCH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("workload seed: PGCH_TEST_SEED={seed}");
    seed
}

/// Runs `count` transactions on a blocking thread, pausing `pause` between them.
fn spawn_workload(
    pg: &'static PgCluster,
    db: String,
    seed: u64,
    count: u64,
    pause: Duration,
) -> (std::thread::JoinHandle<()>, Arc<AtomicBool>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let handle = std::thread::spawn(move || {
        let mut w = Workload::new(seed);
        for _ in 0..count {
            pg.sql(&db, &w.transaction()).expect("workload transaction");
            std::thread::sleep(pause);
        }
        flag.store(true, Ordering::SeqCst);
    });
    (handle, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_workload_arrives_row_for_row_equal() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(&src.database, SCHEMA).unwrap();
    let env = guide_env(pg, &src, &[]);
    let ch_db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-crash");
    let pgch = PgchProcess::run(&env, &[], log.clone());
    let (workload, _) = spawn_workload(
        pg,
        src.database.clone(),
        seed(),
        scaled(150),
        Duration::from_millis(5),
    );
    tokio::task::spawn_blocking(move || workload.join().expect("workload"))
        .await
        .unwrap();
    wait_equal(pg, &src.database, &ch_db, &log).await;
    assert_eq!(duplicate_keys(ClickHouse::shared(), &ch_db).await, 0);
    pgch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_and_between_insert_and_ack_loses_nothing_and_doubles_nothing() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(&src.database, SCHEMA).unwrap();
    let env = guide_env(pg, &src, &[("PGCH__PIPELINE__SYNC_INTERVAL_MS", "300")]);
    let ch_db = env_value(&env, "PGCH__DESTINATION__DATABASE");
    let log = log_path("pgch-crash");
    let seed = seed();
    let mut rng = Rng::new(seed ^ 0x9e37_79b9);
    let (workload, finished) = spawn_workload(
        pg,
        src.database.clone(),
        seed,
        scaled(300),
        Duration::from_millis(30),
    );

    let (mut kills, mut at_failpoint) = (0u32, 0u32);
    while kills < 10 || !finished.load(Ordering::SeqCst) {
        let failpoint = kills % 3 == 1;
        let hit = rng.range(1, 3).to_string();
        let spec = format!("{}:{hit}", pgch::failpoint::AFTER_INSERT_BEFORE_ACK);
        let extra: Vec<(&str, &str)> = if failpoint {
            vec![("PGCH_FAILPOINT", spec.as_str())]
        } else {
            vec![]
        };
        let mut pgch = PgchProcess::run(&env, &extra, log.clone());
        if failpoint {
            // Dies by itself at the failpoint once a flush with commits has been written.
            // Once the workload is over (it may end between two checks, with all of it
            // acknowledged already) a commit now and then gives the failpoint one.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut nudged = Instant::now();
            let mut nudge = 0;
            let status = loop {
                if let Some(status) = pgch.try_status() {
                    break Some(status);
                }
                if Instant::now() > deadline {
                    break None;
                }
                if finished.load(Ordering::SeqCst) && nudged.elapsed() > Duration::from_millis(700)
                {
                    let _ = pg.sql(
                        &src.database,
                        &format!(
                            "UPDATE public.w_full SET b = left(b || '+', 30) WHERE a % 11 = {}",
                            nudge % 11
                        ),
                    );
                    nudge += 1;
                    nudged = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            match status {
                Some(status) if status.signal() == Some(libc::SIGKILL) => at_failpoint += 1,
                other => panic!(
                    "pgch did not die at the failpoint: {other:?}\n{}",
                    log_tail(&log, 40)
                ),
            }
        } else {
            tokio::time::sleep(Duration::from_millis(rng.range(300, 3000))).await;
            if let Some(status) = pgch.try_status() {
                panic!("pgch exited on its own: {status:?}\n{}", log_tail(&log, 40));
            }
            pgch.kill9();
        }
        kills += 1;
    }
    tokio::task::spawn_blocking(move || workload.join().expect("workload"))
        .await
        .unwrap();
    assert!(
        kills >= 10 && at_failpoint >= 3,
        "{kills} kills, {at_failpoint} at the failpoint"
    );

    let pgch = PgchProcess::run(&env, &[], log.clone());
    wait_equal_within(pg, &src.database, &ch_db, Duration::from_secs(240), &log).await;
    assert_eq!(
        duplicate_keys(ClickHouse::shared(), &ch_db).await,
        0,
        "no key twice under FINAL"
    );
    pgch.stop();
    eprintln!("{kills} SIGKILLs, {at_failpoint} of them between an insert and its acknowledgement");
}
