//! Metrics and health of the real `pgch` binary, run as a child process (so it can be
//! paused with SIGSTOP) against real Postgres clusters and ClickHouse:
//!
//! - the slot figures on `/metrics` equal the same figures read from Postgres, the
//!   retained WAL rises while pgch is paused and falls once it acknowledges again;
//! - with a small `max_slot_wal_keep_size` and ClickHouse cut off, the ratio climbs,
//!   `wal_status` turns unreserved/lost, the thresholds are logged, `/readyz` fails, and
//!   a restart on the lost slot exits non-zero naming `pgch resync`;
//! - `promtool check metrics` accepts the exposition.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::converge::{log_path, log_text};
use common::process::PgchProcess;
use common::scrape::{http_get, value};
use common::{guide_source, GuideSource, PublicationShape};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::{PgCluster, PgOptions};
use pgch::testkit::{free_port, unique_name};

/// `pgch run` as a child process with its stderr in a log file, serving `/metrics` on
/// a port of its own and polling its slot every second.
struct Pgch {
    process: PgchProcess,
    addr: SocketAddr,
}

impl Pgch {
    fn start(env: &[(String, String)], log: PathBuf) -> Pgch {
        let port = free_port().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let listen = addr.to_string();
        let process = PgchProcess::run(
            env,
            &[
                ("PGCH__METRICS__LISTEN", listen.as_str()),
                ("PGCH__METRICS__SLOT_POLL_SECS", "1"),
            ],
            log,
        );
        Pgch { process, addr }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.process.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn log_text(&self) -> String {
        log_text(&self.process.log)
    }

    /// Waits for the exit, up to `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_status() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.process.try_status() {
            panic!("pgch exited ({status}):\n{}", self.log_text());
        }
    }

    /// Waits (up to 2 minutes, pgch running throughout) until `table` holds `rows` rows.
    async fn wait_rows(&mut self, db: &str, table: &str, rows: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while ch_count(db, table).await != rows {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{rows} rows never arrived in {table}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path).await
    }

    async fn metrics(&self) -> Option<String> {
        match self.get("/metrics").await {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }
}

/// The slot figures on `/metrics`, in the same shape as [`pg_figures`].
fn scraped_figures(text: &str, slot: &str) -> SlotView {
    let l = format!("slot=\"{slot}\"");
    let int = |name| value(text, name, &l).map(|v| v as i64);
    SlotView {
        retained: int("pgch_slot_retained_wal_bytes"),
        unconfirmed: int("pgch_slot_unconfirmed_wal_bytes"),
        active: int("pgch_slot_active"),
        wal_status: ["reserved", "extended", "unreserved", "lost"]
            .into_iter()
            .find(|s| {
                value(
                    text,
                    "pgch_slot_wal_status",
                    &format!("{l},wal_status=\"{s}\""),
                ) == Some(1.0)
            })
            .map(str::to_string),
        safe_wal: int("pgch_slot_safe_wal_bytes"),
        max_keep: int("pgch_slot_max_wal_keep_bytes"),
    }
}

#[derive(Clone, Debug, PartialEq)]
struct SlotView {
    retained: Option<i64>,
    unconfirmed: Option<i64>,
    active: Option<i64>,
    wal_status: Option<String>,
    safe_wal: Option<i64>,
    max_keep: Option<i64>,
}

/// The same figures straight from Postgres, as the superuser, computed independently
/// (`pg_size_bytes` of the setting's text rather than `pg_settings`' unit).
fn pg_figures(pg: &PgCluster, db: &str, slot: &str) -> SlotView {
    let pg13 = pg.version_num >= 130_000;
    let sql = format!(
        "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8::text, ''),
                coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8::text, ''),
                active::int, {}, {}, {}
           FROM pg_replication_slots WHERE slot_name = '{slot}'",
        if pg13 { "coalesce(wal_status, '')" } else { "''" },
        if pg13 { "coalesce(safe_wal_size::text, '')" } else { "''" },
        if pg13 {
            "pg_size_bytes(current_setting('max_slot_wal_keep_size'))::text"
        } else {
            "''"
        },
    );
    let out = pg.sql(db, &sql).unwrap();
    let cols: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(cols.len(), 6, "slot {slot} not found: {out}");
    let int = |s: &str| (!s.is_empty()).then(|| s.parse::<i64>().unwrap());
    SlotView {
        retained: int(cols[0]),
        unconfirmed: int(cols[1]),
        active: int(cols[2]),
        wal_status: (!cols[3].is_empty()).then(|| cols[3].to_string()),
        safe_wal: int(cols[4]),
        max_keep: int(cols[5]).map(|b| if b < 0 { -1 } else { b }),
    }
}

/// `PGCH__…` variables for `src` on `pg`, writing to ClickHouse at `ch_url`.
fn pgch_env(
    pg: &PgCluster,
    src: &GuideSource,
    ch_url: &str,
    slot: &str,
    db: &str,
) -> Vec<(String, String)> {
    let ch = ClickHouse::shared();
    [
        (
            "PGCH__SOURCE__URL",
            pg.url(&src.user, Some(&src.password), &src.database),
        ),
        ("PGCH__SOURCE__PUBLICATION", src.publication.clone()),
        ("PGCH__SOURCE__SLOT", slot.to_string()),
        ("PGCH__SOURCE__CONNECT_TIMEOUT_SECS", "5".to_string()),
        ("PGCH__DESTINATION__URL", ch_url.to_string()),
        ("PGCH__DESTINATION__USER", ch.user.clone()),
        ("PGCH__DESTINATION__PASSWORD", ch.password.clone()),
        ("PGCH__DESTINATION__DATABASE", db.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Polls `/metrics` until `ok` holds for the scraped text, or panics after `limit`.
async fn wait_metrics(
    pgch: &mut Pgch,
    limit: Duration,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        pgch.assert_running();
        if let Some(text) = pgch.metrics().await {
            if ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {limit:?}\n{text}\n--- pgch log ---\n{}",
                pgch.log_text()
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "{what}: /metrics did not answer within {limit:?}\n--- pgch log ---\n{}",
                pgch.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn ch_count(db: &str, table: &str) -> u64 {
    ClickHouse::shared()
        .query(&format!(
            "SELECT count() FROM `{db}`.`{table}` FINAL WHERE _is_deleted = 0"
        ))
        .await
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_figures_match_postgres_and_retained_wal_rises_while_paused_then_falls() {
    let pg = PgCluster::start(PgOptions::default()).unwrap();
    if pg.version_num >= 130_000 {
        pg.sql(
            "postgres",
            "ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'; SELECT pg_reload_conf();",
        )
        .unwrap();
    }
    let src = guide_source(&pg, None, PublicationShape::ForTable);
    let (slot, db) = (unique_name("slot"), unique_name("dest"));
    let env = pgch_env(&pg, &src, &ClickHouse::shared().url, &slot, &db);
    let mut pgch = Pgch::start(&env, log_path("pgch-metrics-pause"));
    let active = format!("slot=\"{slot}\"");
    wait_metrics(&mut pgch, Duration::from_secs(120), "slot active", |t| {
        value(t, "pgch_slot_active", &active) == Some(1.0)
    })
    .await;

    // In a window where Postgres' own figures did not move, /metrics shows exactly them.
    let deadline = Instant::now() + Duration::from_secs(120);
    let scraped = loop {
        let before = pg_figures(&pg, &src.database, &slot);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let text = pgch.metrics().await.expect("/metrics answers");
        let after = pg_figures(&pg, &src.database, &slot);
        if before == after {
            let scraped = scraped_figures(&text, &slot);
            assert_eq!(scraped, after, "/metrics vs Postgres");
            if pg.version_num >= 130_000 {
                assert_eq!(scraped.max_keep, Some(1 << 30));
                let ratio = value(&text, "pgch_slot_retained_wal_ratio", &active).unwrap();
                let expected = scraped.retained.unwrap() as f64 / (1u64 << 30) as f64;
                assert!((ratio - expected).abs() < 1e-9, "{ratio} vs {expected}");
            }
            break scraped;
        }
        assert!(
            Instant::now() < deadline,
            "Postgres' slot figures never held still"
        );
    };
    let retained_before = scraped.retained.unwrap();

    // Paused, pgch acknowledges nothing while WAL is written.
    pgch.signal("STOP");
    pg.sql(
        &src.database,
        "INSERT INTO public.customers SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 40000) g;",
    )
    .unwrap();
    let paused = pg_figures(&pg, &src.database, &slot);
    let written = paused.retained.unwrap() - retained_before;
    assert!(
        written > 4_000_000,
        "the insert wrote {written} bytes of WAL"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    pgch.signal("CONT");

    // The first readings after the pause show the WAL held back...
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    while peak < retained_before + written / 2 {
        assert!(
            Instant::now() < deadline,
            "retained WAL never rose above {retained_before} + {written}/2 (peak {peak})\n{}",
            pgch.log_text()
        );
        if let Some(text) = pgch.metrics().await {
            peak = peak.max(scraped_figures(&text, &slot).retained.unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and it falls once pgch has applied and acknowledged (a checkpoint logs the
    // running-xacts record that lets Postgres move restart_lsn forward).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        pgch.assert_running();
        let _ = pg.sql("postgres", "CHECKPOINT");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let text = pgch.metrics().await.unwrap_or_default();
        let now = scraped_figures(&text, &slot);
        if now.retained.is_some_and(|r| r < peak - written / 2)
            && now.unconfirmed.is_some_and(|u| u < written / 2)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retained WAL did not fall after the pause: peak {peak}, now {now:?}\n{}",
            pgch.log_text()
        );
    }
    assert_eq!(ch_count(&db, "public_customers").await, 40_000);
}

/// A TCP proxy to ClickHouse that the test can cut: afterwards every connection is
/// closed and new ones are refused.
struct Proxy {
    port: u16,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            accept,
            conns,
        }
    }

    fn cut(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_nears_max_slot_wal_keep_size_while_clickhouse_is_unreachable_and_a_lost_slot_is_fatal(
) {
    let pg = PgCluster::start(
        PgOptions::default()
            .setting("min_wal_size", "'32MB'")
            .setting("max_wal_size", "'64MB'"),
    )
    .unwrap();
    if pg.version_num < 130_000 {
        eprintln!(
            "skipped: Postgres {} has no max_slot_wal_keep_size",
            pg.version_num
        );
        return;
    }
    pg.sql(
        "postgres",
        "ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'; SELECT pg_reload_conf();",
    )
    .unwrap();
    let src = guide_source(&pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.filler (id bigserial PRIMARY KEY, pad text);",
    )
    .unwrap();
    let ch = ClickHouse::shared();
    let ch_addr = url::Url::parse(&ch.url)
        .unwrap()
        .socket_addrs(|| None)
        .unwrap()[0];
    let proxy = Proxy::start(ch_addr).await;
    let (slot, db) = (unique_name("slot"), unique_name("dest"));
    let env = pgch_env(
        &pg,
        &src,
        &format!("http://127.0.0.1:{}", proxy.port),
        &slot,
        &db,
    );
    let mut pgch = Pgch::start(&env, log_path("pgch-metrics-lost"));
    let l = format!("slot=\"{slot}\"");
    wait_metrics(&mut pgch, Duration::from_secs(120), "slot active", |t| {
        value(t, "pgch_slot_active", &l) == Some(1.0)
    })
    .await;
    pg.sql(
        &src.database,
        "INSERT INTO public.customers VALUES (1, 'before the cut')",
    )
    .unwrap();
    pgch.wait_rows(&db, "public_customers", 1).await;

    // ClickHouse gone: this change can never be applied, so nothing is acknowledged.
    proxy.cut();
    pg.sql(
        &src.database,
        "INSERT INTO public.customers VALUES (2, 'after the cut')",
    )
    .unwrap();
    let mut readings: Vec<(f64, Option<String>)> = Vec::new();
    let mut readyz_at_top = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            Instant::now() < deadline,
            "wal_status never turned unreserved/lost: {readings:?}\n{}",
            pgch.log_text()
        );
        pg.sql(
            &src.database,
            "INSERT INTO public.filler (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 3000) g;",
        )
        .unwrap();
        let in_pg = pg_figures(&pg, &src.database, &slot);
        if readings.last().is_some_and(|(r, _)| *r >= 1.0)
            || in_pg.wal_status.as_deref() == Some("unreserved")
        {
            pg.sql("postgres", "CHECKPOINT").unwrap();
        }
        // Wait for the poller to read past this insert.
        let want = in_pg.retained.unwrap_or(0);
        let text = wait_metrics(
            &mut pgch,
            Duration::from_secs(60),
            "a fresh slot reading",
            |t| {
                let s = scraped_figures(t, &slot);
                s.retained.is_none_or(|r| r >= want) || s.wal_status.as_deref() == Some("lost")
            },
        )
        .await;
        let seen = scraped_figures(&text, &slot);
        let ratio = value(&text, "pgch_slot_retained_wal_ratio", &l);
        readings.push((ratio.unwrap_or(f64::NAN), seen.wal_status.clone()));
        if ratio.is_some_and(|r| r >= 0.8) && readyz_at_top.is_none() {
            readyz_at_top = pgch.get("/readyz").await;
        }
        if matches!(seen.wal_status.as_deref(), Some("unreserved" | "lost")) {
            if seen.wal_status.as_deref() == Some("unreserved") {
                readyz_at_top = readyz_at_top.or(pgch.get("/readyz").await);
            }
            break;
        }
    }
    let ratios: Vec<f64> = readings
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| !r.is_nan())
        .collect();
    assert!(
        ratios.len() >= 3 && ratios.windows(2).all(|w| w[1] > w[0]),
        "the ratio climbs: {readings:?}"
    );
    let (status, body) = readyz_at_top.expect("/readyz answered near the limit");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("max_slot_wal_keep_size") || body.contains("lost"),
        "{body}"
    );
    let log = pgch.log_text();
    for t in ["warning at 50%", "warning at 80%"] {
        assert!(log.contains(t), "`{t}` not logged:\n{log}");
    }

    // A checkpoint invalidates the slot; pgch stops or is stopped.
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg_figures(&pg, &src.database, &slot).wal_status.as_deref() != Some("lost") {
        assert!(Instant::now() < deadline, "the slot was never invalidated");
        pg.sql(
            &src.database,
            "INSERT INTO public.filler (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 3000) g; CHECKPOINT;",
        )
        .unwrap();
    }
    if pgch.metrics().await.is_some() {
        // Still running (stuck on ClickHouse): the poller reports the loss.
        let text = wait_metrics(&mut pgch, Duration::from_secs(30), "wal_status lost", |t| {
            scraped_figures(t, &slot).wal_status.as_deref() == Some("lost")
        })
        .await;
        assert_eq!(
            scraped_figures(&text, &slot).retained,
            None,
            "no retained figure for a lost slot"
        );
        let (status, body) = pgch.get("/readyz").await.unwrap();
        assert!(
            status == 503 && body.contains("pgch resync"),
            "{status} {body}"
        );
    }
    drop(pgch);

    // Restarted with ClickHouse back, on the lost slot: fatal, naming the fix.
    let env = pgch_env(&pg, &src, &ch.url, &slot, &db);
    let mut again = Pgch::start(&env, log_path("pgch-metrics-lost-restart"));
    let status = again
        .wait_exit(Duration::from_secs(120))
        .await
        .unwrap_or_else(|| panic!("pgch kept running on a lost slot\n{}", again.log_text()));
    assert!(!status.success(), "exit status {status}");
    let log = again.log_text();
    assert!(log.contains("pgch resync"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_check_metrics_accepts_the_exposition() {
    let Ok(promtool) = which("promtool") else {
        eprintln!("skipped: promtool is not installed (bash .ci/install installs it)");
        return;
    };
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let (slot, db) = (unique_name("slot"), unique_name("dest"));
    let env = pgch_env(pg, &src, &ClickHouse::shared().url, &slot, &db);
    let mut pgch = Pgch::start(&env, log_path("pgch-metrics-promtool"));
    let l = format!("slot=\"{slot}\"");
    wait_metrics(&mut pgch, Duration::from_secs(120), "slot active", |t| {
        value(t, "pgch_slot_active", &l) == Some(1.0)
    })
    .await;
    pg.sql(
        &src.database,
        "INSERT INTO public.customers SELECT g, 'c' || g FROM generate_series(1, 100) g; UPDATE public.customers SET name = 'x' WHERE id < 10;",
    )
    .unwrap();
    pgch.wait_rows(&db, "public_customers", 100).await;
    let text = pgch.metrics().await.unwrap();
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_metrics_count_changes_and_readyz_passes_while_streaming() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g, g FROM generate_series(1, 500) g;",
    )
    .unwrap();
    let (slot, db) = (unique_name("slot"), unique_name("dest"));
    let env = pgch_env(pg, &src, &ClickHouse::shared().url, &slot, &db);
    let mut pgch = Pgch::start(&env, log_path("pgch-metrics-pipeline"));
    let active = format!("slot=\"{slot}\"");
    wait_metrics(&mut pgch, Duration::from_secs(120), "slot active", |t| {
        value(t, "pgch_slot_active", &active) == Some(1.0)
    })
    .await;
    pg.sql(
        &src.database,
        "INSERT INTO public.customers SELECT g, 'c' || g FROM generate_series(1, 30) g;
         UPDATE public.orders SET total = total + 1 WHERE id <= 20;
         DELETE FROM public.orders WHERE id > 490;",
    )
    .unwrap();
    let text = wait_metrics(
        &mut pgch,
        Duration::from_secs(120),
        "changes counted and acknowledged",
        |t| {
            value(
                t,
                "pgch_rows_total",
                "op=\"insert\",table=\"public_customers\"",
            ) == Some(30.0)
                && value(
                    t,
                    "pgch_rows_total",
                    "op=\"update\",table=\"public_orders\"",
                ) == Some(20.0)
                && value(
                    t,
                    "pgch_rows_total",
                    "op=\"delete\",table=\"public_orders\"",
                ) == Some(10.0)
                && value(
                    t,
                    "pgch_rows_total",
                    "op=\"snapshot\",table=\"public_orders\"",
                ) == Some(500.0)
        },
    )
    .await;
    assert!(
        value(&text, "pgch_inserted_rows_total", "table=\"public_orders\"").unwrap_or(0.0) >= 530.0,
        "snapshot and stream rows inserted:\n{text}"
    );
    assert!(value(&text, "pgch_acknowledged_lsn_bytes", "").unwrap_or(0.0) > 0.0);
    assert!(text.contains("pgch_insert_duration_seconds_bucket"));
    // Caught up: the lag returns to 0 once a keepalive is acknowledged with nothing pending.
    wait_metrics(&mut pgch, Duration::from_secs(120), "lag back to 0", |t| {
        value(t, "pgch_lag_seconds", "") == Some(0.0)
    })
    .await;
    let (status, body) = pgch.get("/readyz").await.expect("/readyz answers");
    assert_eq!(status, 200, "ready while streaming: {body}");
    assert_eq!(ch_count(&db, "public_orders").await, 490);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_logical_decoding_work_mem_counts_as_spilled() {
    let pg = PgCluster::shared();
    if pg.version_num < 140_000 {
        eprintln!("pg_stat_replication_slots is Postgres 14+; nothing to export");
        return;
    }
    let src = guide_source(pg, None, PublicationShape::ForTable);
    // The walsender of pgch's user decodes in 64 kB: a 50,000-row transaction spills.
    pg.sql(
        &src.database,
        &format!(
            "ALTER ROLE \"{}\" SET logical_decoding_work_mem = '64kB'",
            src.user
        ),
    )
    .unwrap();
    let (slot, db) = (unique_name("slot"), unique_name("dest"));
    let env = pgch_env(pg, &src, &ClickHouse::shared().url, &slot, &db);
    let mut pgch = Pgch::start(&env, log_path("pgch-metrics-spill"));
    let label = format!("slot=\"{slot}\"");
    wait_metrics(
        &mut pgch,
        Duration::from_secs(120),
        "spill counters exported",
        |t| value(t, "pgch_slot_spilled_transactions_total", &label) == Some(0.0),
    )
    .await;
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g, g FROM generate_series(1, 50000) g",
    )
    .unwrap();
    let text = wait_metrics(
        &mut pgch,
        Duration::from_secs(120),
        "the spill counted",
        |t| {
            value(t, "pgch_slot_spilled_transactions_total", &label).unwrap_or(0.0) >= 1.0
                && value(t, "pgch_slot_decoded_bytes_total", &label).unwrap_or(0.0) > 0.0
        },
    )
    .await;
    let server: f64 = pg
        .sql(
            &src.database,
            &format!(
                "SELECT spill_bytes FROM pg_stat_replication_slots WHERE slot_name = '{slot}'"
            ),
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let exported = value(&text, "pgch_slot_spilled_bytes_total", &label).unwrap_or(0.0);
    assert!(
        exported > 0.0 && exported <= server,
        "spilled bytes exported {exported}, server says {server}"
    );
    wait_until_rows(&db, 50000).await;
    // That transaction's way from commit to readable in ClickHouse was measured.
    let text = wait_metrics(
        &mut pgch,
        Duration::from_secs(30),
        "commit-to-visible observed",
        |t| value(t, "pgch_commit_to_visible_seconds_count", "").unwrap_or(0.0) >= 2.0,
    )
    .await;
    let sum = value(&text, "pgch_commit_to_visible_seconds_sum", "").unwrap_or(-1.0);
    assert!(
        (0.0..240.0).contains(&sum),
        "commit-to-visible seconds summed {sum}"
    );
}

async fn wait_until_rows(db: &str, rows: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while ch_count(db, "public_orders").await != rows {
        assert!(Instant::now() < deadline, "{rows} rows never arrived");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
