//! Where Postgres is: one or several hosts (a multi-host URL, libpq syntax) and what
//! a connection must find there. Kept apart from the configuration loading so the
//! connection code depends on this alone.

use std::path::PathBuf;
use std::time::Duration;

use super::{Secret, SslMode};

/// Everything needed to reach Postgres, resolved from a URL or separate keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgEndpoint {
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
    /// `host:port` (every host of a multi-host URL, comma-separated), for messages
    /// that must name the server.
    pub fn address(&self) -> String {
        std::iter::once((self.host.as_str(), self.port))
            .chain(self.other_hosts.iter().map(|(h, p)| (h.as_str(), *p)))
            .map(|(host, port)| {
                if host.contains(':') {
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
