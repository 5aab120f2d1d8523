//! Other real servers some tests need: PgBouncer (a transaction pooler in front of a test
//! cluster, like PlanetScale's PSBouncer) and Debian's old `clickhouse-server` 18.16 (a
//! real server too old for pgch).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::reaper::{sh_quote, Reaper};
use super::{free_port, running_as_root, KitResult, UNPRIVILEGED_GID, UNPRIVILEGED_UID};

/// A server process in a private directory; killed and removed on drop.
pub struct Service {
    pub port: u16,
    child: Child,
    root: PathBuf,
    _reaper: Reaper,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Service {
    /// The service's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("service.log")).unwrap_or_default()
    }
}

fn spawn(mut cmd: Command, root: PathBuf, port: u16, as_server_user: bool) -> KitResult<Service> {
    let pid_hint = root.join("service.pid");
    let reaper = Reaper::watch(&format!(
        "if [ -f {p} ]; then kill -9 $(cat {p}) 2>/dev/null; fi; rm -rf {r}",
        p = sh_quote(&pid_hint.to_string_lossy()),
        r = sh_quote(&root.to_string_lossy())
    ))?;
    let log = std::fs::File::create(root.join("service.log")).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    if as_server_user && running_as_root() {
        cmd.uid(UNPRIVILEGED_UID).gid(UNPRIVILEGED_GID);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    std::fs::write(&pid_hint, child.id().to_string()).map_err(|e| e.to_string())?;
    let mut service = Service {
        port,
        child,
        root,
        _reaper: reaper,
    };
    wait_listening(&mut service)?;
    Ok(service)
}

fn wait_listening(service: &mut Service) -> KitResult<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", service.port)).is_err() {
        if let Ok(Some(status)) = service.child.try_wait() {
            return Err(format!("the service exited ({status}):\n{}", service.log()));
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "the service did not listen within 60 s:\n{}",
                service.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// PgBouncer in transaction mode in front of `127.0.0.1:pg_port`, admitting `users`
/// (name, password) — the shape of PlanetScale's PSBouncer on 6432.
pub fn pgbouncer(pg_port: u16, users: &[(&str, &str)]) -> KitResult<Service> {
    let binary = find_binary(&["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"])?;
    let root = super::postgres::make_root_dir("pgch-pgbouncer")?;
    let port = free_port()?;
    let userlist: String = users
        .iter()
        .map(|(u, p)| {
            format!(
                "\"{}\" \"{}\"\n",
                u.replace('"', "\"\""),
                p.replace('"', "\"\"")
            )
        })
        .collect();
    write(&root.join("userlist.txt"), &userlist)?;
    let ini = format!(
        "[databases]\n* = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
         unix_socket_dir =\nauth_type = plain\nauth_file = {root}/userlist.txt\npool_mode = transaction\n\
         ignore_startup_parameters = extra_float_digits,options\nlogfile = {root}/pgbouncer.log\n",
        root = root.display()
    );
    let ini_path = root.join("pgbouncer.ini");
    write(&ini_path, &ini)?;
    let mut cmd = Command::new(binary);
    cmd.arg(&ini_path);
    spawn(cmd, root, port, true)
}

/// Debian's `clickhouse-server` (18.16): real, and too old for pgch.
pub fn old_clickhouse_server() -> KitResult<Service> {
    let binary = find_binary(&["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"])?;
    let root = super::postgres::make_root_dir("pgch-oldch")?;
    let http_port = free_port()?;
    let tcp_port = free_port()?;
    for sub in ["data", "tmp", "user_files", "format_schemas"] {
        std::fs::create_dir_all(root.join(sub)).map_err(|e| e.to_string())?;
    }
    let users = "/etc/clickhouse-server/users.xml";
    let config = format!(
        "<?xml version=\"1.0\"?>\n<yandex>\n  <logger><level>warning</level><console>1</console></logger>\n\
         <listen_host>127.0.0.1</listen_host>\n  <http_port>{http_port}</http_port>\n  <tcp_port>{tcp_port}</tcp_port>\n\
         <path>{r}/data/</path>\n  <tmp_path>{r}/tmp/</tmp_path>\n  <user_files_path>{r}/user_files/</user_files_path>\n\
         <format_schema_path>{r}/format_schemas/</format_schema_path>\n\
         <users_config>{users}</users_config>\n  <default_profile>default</default_profile>\n\
         <default_database>default</default_database>\n  <mark_cache_size>104857600</mark_cache_size>\n\
         <uncompressed_cache_size>104857600</uncompressed_cache_size>\n</yandex>\n",
        r = root.display()
    );
    let config_path = root.join("config.xml");
    write(&config_path, &config)?;
    let mut cmd = Command::new(binary);
    cmd.arg(format!("--config-file={}", config_path.display()));
    spawn(cmd, root, http_port, false)
}

/// Whether Debian's old clickhouse-server is installed here.
pub fn old_clickhouse_available() -> bool {
    find_binary(&["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"]).is_ok()
}

fn find_binary(candidates: &[&str]) -> KitResult<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| format!("none of {candidates:?} is installed; run .ci/install"))
}

fn write(path: &Path, text: &str) -> KitResult<()> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    if running_as_root() {
        std::os::unix::fs::chown(path, Some(UNPRIVILEGED_UID), Some(UNPRIVILEGED_GID))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}
