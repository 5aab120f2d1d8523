//! Where Postgres is: one or several hosts (a multi-host URL, libpq syntax) and what
//! a connection must find there. Kept apart from the configuration loading so the
//! connection code depends on this alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Secret, SslMode};

/// Everything needed to reach Postgres, resolved from a URL or separate keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgEndpoint {
    /// A host name or address, or (starting with `/`, as libpq has it) the directory of
    /// the server's Unix socket.
    pub host: String,
    pub port: u16,
    /// Passed through untouched: PlanetScale's `user.branch` is just a user name.
    pub user: String,
    pub password: Secret,
    pub database: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Further `host:port`s of a multi-host URL (libpq syntax), tried in order after
    /// `host:port` — so that after a failover pgch finds whoever is primary now.
    pub other_hosts: Vec<(String, u16)>,
    /// `target_session_attrs=read-write` (or `primary`): a host that is read-only (a
    /// standby) is skipped.
    pub read_write_only: bool,
}

impl PgEndpoint {
    /// The Unix socket to connect to when `host` is a directory: pgch beside the
    /// database saves the walsender the TCP stack (libpq's `host=/var/run/postgresql`).
    pub fn socket_path(&self) -> Option<PathBuf> {
        socket_path(&self.host, self.port)
    }

    /// `host:port` (every host of a multi-host URL, comma-separated), for messages
    /// that must name the server.
    pub fn address(&self) -> String {
        std::iter::once((self.host.as_str(), self.port))
            .chain(self.other_hosts.iter().map(|(h, p)| (h.as_str(), *p)))
            .map(|(host, port)| {
                if let Some(path) = socket_path(host, port) {
                    path.display().to_string()
                } else if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One single-host endpoint per host, in the order to try them.
    pub fn candidates(&self) -> Vec<PgEndpoint> {
        std::iter::once((self.host.clone(), self.port))
            .chain(self.other_hosts.iter().cloned())
            .map(|(host, port)| PgEndpoint {
                host,
                port,
                other_hosts: Vec::new(),
                ..self.clone()
            })
            .collect()
    }

    /// Whether connecting may pick among hosts, or must check the one it reached.
    pub fn chooses_host(&self) -> bool {
        !self.other_hosts.is_empty() || self.read_write_only
    }
}

/// `<dir>/.s.PGSQL.<port>`, the name Postgres gives its socket in a socket directory.
fn socket_path(host: &str, port: u16) -> Option<PathBuf> {
    host.starts_with('/')
        .then(|| Path::new(host).join(format!(".s.PGSQL.{port}")))
}
