//! Private Postgres clusters: `initdb` in a temporary directory, a free port,
//! `wal_level = logical`, started as an unprivileged user when the tests run as root.
//!
//! One shared cluster per test process serves most tests (each in its own database);
//! tests that change server settings, or make every walsender decode a huge
//! transaction, start their own.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::reaper::{sh_quote, Reaper};
use super::{
    free_port, running_as_root, unique_name, KitResult, UNPRIVILEGED_GID, UNPRIVILEGED_UID,
};

/// Characters that must be escaped in a URL's user, password or path.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\'')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'&')
    .add(b'=')
    .add(b'+');

/// The superuser of test clusters (trusted on loopback).
pub const SUPERUSER: &str = "postgres";

/// How to start a cluster.
#[derive(Clone, Debug, Default)]
pub struct PgOptions {
    /// Directory with `initdb`, `pg_ctl`, `postgres`; default: `PGCH_TEST_PG_BIN`, else
    /// the newest `/usr/lib/postgresql/*/bin`.
    pub bin_dir: Option<PathBuf>,
    /// Extra `postgresql.conf` lines, `name = value`, appended last (they win).
    pub settings: Vec<(String, String)>,
    /// Extra `pg_hba.conf` lines, placed before the defaults.
    pub hba_prepend: Vec<String>,
    /// Files written into the data directory before start (TLS keys and certificates),
    /// private to the server user.
    pub files: Vec<(String, Vec<u8>)>,
}

impl PgOptions {
    /// Adds a `postgresql.conf` setting.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }
}

/// A running cluster; stopped and removed on drop.
pub struct PgCluster {
    pub port: u16,
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    /// `server_version_num`, e.g. 150018.
    pub version_num: u32,
    root: PathBuf,
    _reaper: Reaper,
}

impl PgCluster {
    /// The cluster shared by the tests of this process.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| match PgCluster::start(PgOptions::default()) {
            Ok(c) => c,
            Err(e) => panic!("cannot start the shared test Postgres: {e}"),
        })
    }

    /// Initialises and starts a new cluster.
    pub fn start(opts: PgOptions) -> KitResult<PgCluster> {
        let bin_dir = match &opts.bin_dir {
            Some(d) => d.clone(),
            None => default_bin_dir()?,
        };
        let root = make_root_dir("pgch-pg")?;
        let data_dir = root.join("data");
        let reaper = Reaper::watch(&cleanup_script(&root, &data_dir))?;
        let port = free_port()?;
        let initdb = |locale_flags: &[&str]| {
            run_as_server_user(
                Command::new(bin_dir.join("initdb"))
                    .arg("-D")
                    .arg(&data_dir)
                    .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8"])
                    .args(locale_flags),
            )
        };
        initdb(&["--locale=C.UTF-8", "--no-sync"]).or_else(|_| {
            // Older initdb may not know C.UTF-8 (or --no-sync spelled differently).
            let _ = std::fs::remove_dir_all(&data_dir);
            initdb(&["--locale=C", "-N"])
        })?;
        let mut conf = format!(
            "\n# pgch test cluster\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_wal_senders = 20\nmax_replication_slots = 20\n\
             fsync = off\nfull_page_writes = off\nsynchronous_commit = off\nshared_buffers = 64MB\n\
             max_connections = 100\nlog_min_messages = warning\npassword_encryption = 'scram-sha-256'\n",
            root.display()
        );
        for (k, v) in &opts.settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        append(&data_dir.join("postgresql.conf"), &conf)?;
        let mut hba = String::new();
        for line in &opts.hba_prepend {
            hba.push_str(line);
            hba.push('\n');
        }
        hba.push_str(&format!(
            "local all all trust\n\
             host all {SUPERUSER} 127.0.0.1/32 trust\n\
             host replication {SUPERUSER} 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host replication all 127.0.0.1/32 scram-sha-256\n"
        ));
        write_file(&data_dir.join("pg_hba.conf"), &hba)?;
        for (name, content) in &opts.files {
            write_private(&data_dir.join(name), content)?;
        }
        let mut cluster = PgCluster {
            port,
            bin_dir,
            data_dir,
            version_num: 0,
            root,
            _reaper: reaper,
        };
        cluster.pg_ctl_start()?;
        let version = cluster.sql("postgres", "SHOW server_version_num")?;
        cluster.version_num = version
            .trim()
            .parse()
            .map_err(|_| format!("bad server_version_num {version}"))?;
        Ok(cluster)
    }

    fn pg_ctl_start(&self) -> KitResult<()> {
        let log = self.root.join("postgres.log");
        run_as_server_user(
            Command::new(self.bin_dir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"]),
        )
        .map_err(|e| format!("{e}\n--- postgres.log ---\n{}", read_tail(&log)))?;
        Ok(())
    }

    /// Restarts the server (to apply settings that need a restart).
    pub fn restart(&self) -> KitResult<()> {
        self.stop_server("fast")?;
        self.pg_ctl_start()
    }

    /// Stops the server with the given `pg_ctl -m` mode (smart, fast, immediate).
    pub fn stop_server(&self, mode: &str) -> KitResult<()> {
        run_as_server_user(
            Command::new(self.bin_dir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-m", mode, "stop"]),
        )
        .map(|_| ())
    }

    /// Starts a server stopped by [`PgCluster::stop_server`].
    pub fn start_server(&self) -> KitResult<()> {
        self.pg_ctl_start()
    }

    /// A connection URL for `user` (with `password`, if any) to `database`.
    pub fn url(&self, user: &str, password: Option<&str>, database: &str) -> String {
        loopback_url(self.port, user, password, database)
    }

    /// The superuser URL for `database`.
    pub fn superuser_url(&self, database: &str) -> String {
        self.url(SUPERUSER, None, database)
    }

    /// The directory of the server's Unix socket: benches connect peers the way a user
    /// on the database host would (`psql -h <dir>`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// A libpq connection string for the superuser over the Unix socket.
    pub fn superuser_socket_conninfo(&self, database: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={database}",
            self.root.display(),
            self.port
        )
    }

    /// Runs SQL as the superuser through `psql` (stops at the first error) and returns
    /// the unaligned, tuples-only output.
    pub fn sql(&self, database: &str, script: &str) -> KitResult<String> {
        let out = Command::new(psql_path())
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(script.as_bytes())?;
                }
                child.wait_with_output()
            })
            .map_err(|e| format!("psql: {e}"))?;
        check_output("psql", &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a fresh database and returns its name.
    pub fn create_database(&self) -> KitResult<String> {
        let name = unique_name("t");
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(name)
    }

    /// A hot standby made without `pg_basebackup` (the npm server binaries have none): a
    /// cold copy of this cluster's cleanly stopped data directory, its slots left
    /// behind, started with `standby.signal` and streaming from this cluster as the
    /// superuser. `settings` are appended to the copy's `postgresql.conf` (a physical
    /// slot in `primary_slot_name`, `sync_replication_slots`, …); this cluster is
    /// stopped for the copy and started again.
    pub fn cold_standby(&self, settings: &[(&str, &str)]) -> KitResult<PgCluster> {
        let root = make_root_dir("pgch-pg-standby")?;
        let data_dir = root.join("data");
        let reaper = Reaper::watch(&cleanup_script(&root, &data_dir))?;
        self.stop_server("fast")?;
        let copied = run_as_server_user(
            Command::new("cp")
                .arg("-a")
                .arg(&self.data_dir)
                .arg(&data_dir),
        );
        self.pg_ctl_start()?;
        copied?;
        // The primary's slots are its own; a copy would block slot synchronization.
        let slots = data_dir.join("pg_replslot");
        if let Ok(entries) = std::fs::read_dir(&slots) {
            for entry in entries.flatten() {
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| format!("remove {}: {e}", entry.path().display()))?;
            }
        }
        write_private(&data_dir.join("standby.signal"), b"")?;
        let port = free_port()?;
        let mut conf = format!(
            "\n# pgch test standby\nport = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n\
             primary_conninfo = 'host=127.0.0.1 port={} user={SUPERUSER} application_name=standby_{port}'\n",
            root.display(),
            self.port
        );
        for (k, v) in settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        append(&data_dir.join("postgresql.conf"), &conf)?;
        self.start_standby(port, root, data_dir, reaper)
    }

    /// Starts a standby of this cluster from a prepared data directory.
    fn start_standby(
        &self,
        port: u16,
        root: PathBuf,
        data_dir: PathBuf,
        reaper: Reaper,
    ) -> KitResult<PgCluster> {
        let standby = PgCluster {
            port,
            bin_dir: self.bin_dir.clone(),
            data_dir,
            version_num: self.version_num,
            root,
            _reaper: reaper,
        };
        standby.pg_ctl_start()?;
        Ok(standby)
    }

    /// Promotes a standby to a primary and waits until it accepts writes.
    pub fn promote(&self) -> KitResult<()> {
        run_as_server_user(
            Command::new(self.bin_dir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-t", "60", "promote"]),
        )
        .map(|_| ())
    }

    /// A hot standby of this cluster (`pg_basebackup -R`), for tests that must see a replica.
    pub fn standby(&self) -> KitResult<PgCluster> {
        let root = make_root_dir("pgch-pg-standby")?;
        let data_dir = root.join("data");
        let reaper = Reaper::watch(&cleanup_script(&root, &data_dir))?;
        run_as_server_user(
            Command::new(tool_path(&self.bin_dir, "pg_basebackup"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    SUPERUSER,
                    "-R",
                    "-c",
                    "fast",
                    "-X",
                    "stream",
                    "-D",
                ])
                .arg(&data_dir),
        )?;
        let port = free_port()?;
        append(
            &data_dir.join("postgresql.conf"),
            &format!(
                "\nport = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n",
                root.display()
            ),
        )?;
        self.start_standby(port, root, data_dir, reaper)
    }

    /// The server log, for failure messages.
    pub fn log_tail(&self) -> String {
        read_tail(&self.root.join("postgres.log"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop_server("immediate");
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A connection URL to `127.0.0.1:port` (a cluster, or a pooler in front of one).
pub fn loopback_url(port: u16, user: &str, password: Option<&str>, database: &str) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, URL_COMPONENT).to_string();
    let auth = match password {
        Some(p) => format!("{}:{}", enc(user), enc(p)),
        None => enc(user),
    };
    format!(
        "postgres://{auth}@127.0.0.1:{port}/{}?sslmode=disable",
        enc(database)
    )
}

/// A client tool from `bin_dir` when it ships one (Debian's do; the npm servers do
/// not), else the one on the PATH.
fn tool_path(bin_dir: &Path, tool: &str) -> PathBuf {
    let own = bin_dir.join(tool);
    if own.exists() {
        own
    } else {
        PathBuf::from(tool)
    }
}

/// Where `psql` is: `PGCH_TEST_PSQL`, else the PATH.
pub fn psql_path() -> PathBuf {
    std::env::var_os("PGCH_TEST_PSQL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("psql"))
}

fn default_bin_dir() -> KitResult<PathBuf> {
    if let Some(dir) = std::env::var_os("PGCH_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(major) = std::env::var("PGCH_TEST_PG_MAJOR") {
        let major: u32 = major
            .trim()
            .parse()
            .map_err(|_| format!("PGCH_TEST_PG_MAJOR={major} is not a major version"))?;
        return super::versions::bin_dir(major);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no Postgres server installed (/usr/lib/postgresql: {e}); run .ci/install or set PGCH_TEST_PG_BIN"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).ok_or_else(|| {
        "no Postgres server binaries under /usr/lib/postgresql/*/bin; run .ci/install".to_string()
    })
}

/// A directory under the system temp dir, owned by the server user.
pub fn make_root_dir(prefix: &str) -> KitResult<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    if running_as_root() {
        std::os::unix::fs::chown(&dir, Some(UNPRIVILEGED_UID), Some(UNPRIVILEGED_GID))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    Ok(dir)
}

/// Runs a server tool, as `nobody` when we are root, and fails with its output.
pub fn run_as_server_user(cmd: &mut Command) -> KitResult<Output> {
    if running_as_root() {
        cmd.uid(UNPRIVILEGED_UID).gid(UNPRIVILEGED_GID);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HOME", "/tmp")
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    check_output(&cmd.get_program().to_string_lossy(), &out)?;
    Ok(out)
}

fn check_output(what: &str, out: &Output) -> KitResult<()> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

fn cleanup_script(root: &Path, data_dir: &Path) -> String {
    let pidfile = sh_quote(&data_dir.join("postmaster.pid").to_string_lossy());
    format!(
        "if [ -f {pidfile} ]; then kill -QUIT $(head -1 {pidfile}) 2>/dev/null; sleep 2; fi; rm -rf {}",
        sh_quote(&root.to_string_lossy())
    )
}

fn append(path: &Path, text: &str) -> KitResult<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("append to {}: {e}", path.display()))
}

fn write_file(path: &Path, text: &str) -> KitResult<()> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

fn write_private(path: &Path, content: &[u8]) -> KitResult<()> {
    std::fs::write(path, content).map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if running_as_root() {
        std::os::unix::fs::chown(path, Some(UNPRIVILEGED_UID), Some(UNPRIVILEGED_GID))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
