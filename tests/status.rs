//! `pgch status` and the status page (issue #16): what a stopped pgch left, a running
//! pgch mid-copy and streaming, in text and JSON with their exit codes, and the page at
//! `/` as a real browser (headless Chromium) shows it — a screenshot is kept.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::converge::{env_value, log_path, wait_snapshots_held};
use common::process::{pgch_output, CopyHold, PgchProcess};
use common::{guide_env, guide_source, PublicationShape};
use pgch::testkit::postgres::PgCluster;
use pgch::testkit::{free_port, unique_name};

/// `pgch status [--format json]`: exit code and stdout.
fn status(env: &[(String, String)], json: bool) -> (i32, String) {
    let args: &[&str] = if json {
        &["status", "--format", "json"]
    } else {
        &["status"]
    };
    let out = pgch_output(args, env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{stdout}{}",
            if stderr.is_empty() { "" } else { "\n[stderr] " }
        ) + &stderr,
    )
}

fn status_json(env: &[(String, String)]) -> (i32, serde_json::Value) {
    let (code, out) = status(env, true);
    let json_part = out.split("\n[stderr]").next().unwrap_or_default();
    let value = serde_json::from_str(json_part)
        .unwrap_or_else(|e| panic!("pgch status --format json printed no JSON ({e}): {out}"));
    (code, value)
}

fn table<'a>(json: &'a serde_json::Value, source: &str) -> &'a serde_json::Value {
    json["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["source"] == source))
        .unwrap_or_else(|| panic!("no table {source} in {json:#}"))
}

/// Debian's headless Chromium (installed by .ci/install).
fn chromium() -> PathBuf {
    ["chromium-headless-shell", "chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .find(|p| p.is_file())
        .expect("no headless Chromium on PATH: run `bash .ci/install` (it installs Debian's chromium-headless-shell)")
}

/// The page as the browser built it, and a screenshot of it kept under target/.
fn browse(url: &str, shot_name: &str) -> (String, PathBuf) {
    let browser = chromium();
    let profile = std::env::temp_dir().join(unique_name("chromium-profile"));
    let common = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    };
    let mut dump = Command::new(&browser);
    common(&mut dump);
    let dom = dump
        .args(["--dump-dom", url])
        .output()
        .expect("run headless Chromium");
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    let shot = dir.join(shot_name);
    let _ = std::fs::remove_file(&shot);
    let mut capture = Command::new(&browser);
    common(&mut capture);
    let ok = capture
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .status()
        .expect("run headless Chromium");
    assert!(
        ok.success() && shot.is_file(),
        "Chromium made no screenshot"
    );
    let _ = std::fs::remove_dir_all(&profile);
    (dom, shot)
}

#[tokio::test]
async fn status_shows_a_stopped_a_copying_and_a_streaming_pgch_and_the_page_shows_the_same() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "INSERT INTO public.orders SELECT g, g % 10, g FROM generate_series(1, 20000) g;
         INSERT INTO public.customers VALUES (1, 'ada'), (2, 'grace');",
    )
    .unwrap();
    let port = free_port().expect("a free port");
    let listen = format!("127.0.0.1:{port}");
    let env = guide_env(
        pg,
        &src,
        &[
            ("PGCH__METRICS__LISTEN", listen.as_str()),
            // Several partitions for the 20,000-row table, so progress reads n/m.
            ("PGCH__SNAPSHOT__PARTITION_BLOCKS", "16"),
        ],
    );
    let slot = env_value(&env, "PGCH__SOURCE__SLOT");

    // Before the first run: no slot yet, nothing copied, nothing running: attention.
    let (code, text) = status(&env, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with("pgch status: attention"), "{text}");
    assert!(text.contains("`pgch run` creates it"), "{text}");
    assert!(
        text.contains("public.orders") && text.contains("not copied yet"),
        "{text}"
    );
    assert!(text.contains("not running"), "{text}");

    // Running, every copy held right after taking its snapshot: copying 0/m, healthy.
    let hold = CopyHold::held();
    let log = log_path("pgch-status");
    let pgch = PgchProcess::run(&env, &[hold.env()], log.clone());
    wait_snapshots_held(pg, &src.database, 1, Duration::from_secs(60)).await;
    let (code, json) = status_json(&env);
    assert_eq!(code, 0, "copying is healthy: {json:#}");
    assert_eq!(json["level"], "healthy", "{json:#}");
    assert_eq!(json["pgch"]["running"], true, "{json:#}");
    assert_eq!(json["slot"]["exists"], true, "{json:#}");
    let orders = table(&json, "public.orders");
    assert_eq!(orders["state"], "copying", "{json:#}");
    let total = orders["partitions_total"].as_u64().unwrap_or(0);
    assert!(
        total > 1,
        "orders is copied in several partitions: {json:#}"
    );
    assert_eq!(orders["partitions_done"], 0, "{json:#}");
    assert_eq!(orders["destination"], "public_orders");
    let (code, text) = status(&env, false);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("copying 0/{total} partitions")),
        "{text}"
    );

    let (dom, shot) = browse(&format!("http://{listen}/"), "mid-copy.png");
    assert!(
        dom.contains("id=\"tables\""),
        "the page has the tables: {dom}"
    );
    assert!(
        dom.contains("public.orders") && dom.contains("public_orders"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("copying 0/{total} partitions")),
        "{dom}"
    );
    assert!(dom.contains(&slot), "the page names the slot: {dom}");
    assert!(dom.contains("id=\"level\">healthy<"), "{dom}");
    eprintln!("status page screenshot: {}", shot.display());

    // Released: every table copied, pgch streams; a change shows as the last one applied.
    hold.release();
    pg.sql(
        &src.database,
        "UPDATE public.customers SET name = 'ada l' WHERE id = 1;",
    )
    .unwrap();
    let mut last = serde_json::Value::Null;
    for _ in 0..120 {
        let (code, json) = status_json(&env);
        let customers = table(&json, "public.customers");
        if code == 0
            && json["pgch"]["phase"] == "streaming"
            && table(&json, "public.orders")["state"] == "streaming"
            && customers["state"] == "streaming"
            && customers["last_change_lsn"].is_string()
        {
            last = json;
            break;
        }
        last = json;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(last["level"], "healthy", "streaming: {last:#}");
    assert_eq!(
        table(&last, "public.orders")["rows_stored"],
        20000,
        "{last:#}"
    );
    // The page shows a status up to 2 s old (one look at the servers per interval).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (dom, _) = browse(&format!("http://{listen}/"), "streaming.png");
    assert!(
        dom.contains("streaming") && !dom.contains("copying"),
        "{dom}"
    );
    assert!(
        dom.contains("retained WAL") && dom.contains("id=\"retained\""),
        "the slot gauge: {dom}"
    );
    assert!(
        dom.contains("20000"),
        "rows stored as `pgch status` says: {dom}"
    );

    // Stopped: the slot retains WAL and nobody reads it: attention; tables stay copied
    // (a restart would not plan their partitions again).
    pgch.terminate(Duration::from_secs(30));
    let (code, json) = status_json(&env);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(json["pgch"]["running"], false);
    assert_eq!(table(&json, "public.orders")["state"], "copied", "{json:#}");
    let reasons = json["reasons"].to_string();
    assert!(reasons.contains("not running"), "{reasons}");

    // The slot dropped behind pgch's back: broken, and the fix is named.
    pg.sql(
        &src.database,
        &format!("SELECT pg_drop_replication_slot('{slot}')"),
    )
    .unwrap();
    let (code, text) = status(&env, false);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("pgch resync"), "{text}");
}
