//! A ClickHouse HTTP endpoint for tests and local runs: the real server named by
//! `PGCH_TEST_CLICKHOUSE_URL` when set, else pgch's own HTTP front over the ClickHouse
//! engine from `chdb-core` (`clickhouse_front.py`, shipped inside this module).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::reaper::{sh_quote, Reaper};
use super::{unique_name, KitResult};

/// The front's source, written next to its data directory at start.
const FRONT_PY: &str = include_str!("clickhouse_front.py");
/// chdb's first import takes a few seconds; a cold disk cache more.
const FRONT_START_TIMEOUT: Duration = Duration::from_secs(120);

/// A ClickHouse endpoint and the credentials to use it.
pub struct ClickHouse {
    pub url: String,
    pub user: String,
    pub password: String,
    front: Option<Front>,
}

struct Front {
    child: Child,
    root: PathBuf,
    _reaper: Reaper,
}

impl ClickHouse {
    /// The endpoint shared by the tests of this process.
    pub fn shared() -> &'static ClickHouse {
        static SHARED: OnceLock<ClickHouse> = OnceLock::new();
        SHARED.get_or_init(|| match ClickHouse::from_env_or_start() {
            Ok(ch) => ch,
            Err(e) => panic!("cannot start the test ClickHouse: {e}"),
        })
    }

    /// The real server named by `PGCH_TEST_CLICKHOUSE_URL` (with `_USER`, `_PASSWORD`),
    /// else a private front.
    pub fn from_env_or_start() -> KitResult<ClickHouse> {
        match std::env::var("PGCH_TEST_CLICKHOUSE_URL") {
            Ok(url) if !url.is_empty() => Ok(ClickHouse {
                url,
                user: std::env::var("PGCH_TEST_CLICKHOUSE_USER")
                    .unwrap_or_else(|_| "default".into()),
                password: std::env::var("PGCH_TEST_CLICKHOUSE_PASSWORD").unwrap_or_default(),
                front: None,
            }),
            _ => ClickHouse::start_front(None),
        }
    }

    /// Starts a private front, optionally requiring a user and password.
    pub fn start_front(credentials: Option<(&str, &str)>) -> KitResult<ClickHouse> {
        ClickHouse::start_front_reporting(credentials, None)
    }

    /// Starts a private front that answers `SELECT version()` with `version`: how tests
    /// see what pgch does against an older server.
    pub fn start_front_reporting(
        credentials: Option<(&str, &str)>,
        version: Option<&str>,
    ) -> KitResult<ClickHouse> {
        let root = super::postgres::make_root_dir("pgch-ch")?;
        let reaper = Reaper::watch(&format!(
            "sleep 2; rm -rf {}",
            sh_quote(&root.to_string_lossy())
        ))?;
        let script = root.join("clickhouse_front.py");
        std::fs::write(&script, FRONT_PY)
            .map_err(|e| format!("write {}: {e}", script.display()))?;
        let ready = root.join("port");
        let log =
            std::fs::File::create(root.join("front.log")).map_err(|e| format!("front log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("front log: {e}"))?;
        let mut cmd = Command::new(python_path());
        cmd.arg(&script)
            .arg("--data")
            .arg(root.join("data"))
            .arg("--port")
            .arg("0")
            .arg("--ready-file")
            .arg(&ready)
            .arg("--parent-pid")
            .arg(std::process::id().to_string());
        if let Some((user, password)) = credentials {
            cmd.args(["--user", user, "--password", password]);
        }
        if let Some(version) = version {
            cmd.args(["--report-version", version]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} (run .ci/install, or set PGCH_TEST_PYTHON): {e}",
                    python_path().display()
                )
            })?;
        let mut front = Front {
            child,
            root: root.clone(),
            _reaper: reaper,
        };
        let port = wait_for_port(&mut front, &ready)?;
        let (user, password) = credentials.unwrap_or(("default", ""));
        Ok(ClickHouse {
            url: format!("http://127.0.0.1:{port}"),
            user: user.to_string(),
            password: password.to_string(),
            front: Some(front),
        })
    }

    /// A client for this endpoint (no database chosen).
    pub fn client(&self) -> clickhouse::Client {
        let mut c = clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user);
        if !self.password.is_empty() {
            c = c.with_password(&self.password);
        }
        c
    }

    /// Runs a query and returns its TabSeparated output.
    pub async fn query(&self, sql: &str) -> KitResult<String> {
        let mut cursor = self
            .client()
            .query(sql)
            .fetch_bytes("TabSeparated")
            .map_err(|e| format!("{sql}: {e}"))?;
        let bytes = cursor.collect().await.map_err(|e| format!("{sql}: {e}"))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Creates a fresh database and returns its name.
    pub async fn create_database(&self) -> KitResult<String> {
        let name = unique_name("t");
        self.query(&format!("CREATE DATABASE `{name}`")).await?;
        Ok(name)
    }

    /// The front's log, for failure messages (empty for a real server).
    pub fn log(&self) -> String {
        self.front
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f.root.join("front.log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(front) = self.front.as_mut() {
            let _ = front.child.kill();
            let _ = front.child.wait();
            let _ = std::fs::remove_dir_all(&front.root);
        }
    }
}

fn wait_for_port(front: &mut Front, ready: &PathBuf) -> KitResult<u16> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            if let Ok(port) = text.trim().parse::<u16>() {
                return Ok(port);
            }
        }
        if let Ok(Some(status)) = front.child.try_wait() {
            let log = std::fs::read_to_string(front.root.join("front.log")).unwrap_or_default();
            return Err(format!("the ClickHouse front exited ({status}):\n{log}"));
        }
        if start.elapsed() > FRONT_START_TIMEOUT {
            return Err("the ClickHouse front did not start within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Python with chdb-core: `PGCH_TEST_PYTHON`, else the venv `.ci/install` makes.
pub fn python_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PGCH_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("PGCH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pgch")))
        .unwrap_or_else(|| PathBuf::from("/tmp/pgch-cache"));
    cache.join("venv/bin/python")
}
