//! Ordinary SQL connections to Postgres (catalog, COPY, lag queries) through
//! tokio-postgres, with TLS per `sslmode` and the session settings that pin Postgres'
//! text output, so the snapshot and the stream print every value identically
//! (DESIGN.md rule 4). The settings go in by `SET`, because transaction poolers reject
//! some startup parameters.

use std::error::Error as _;

use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, NoTls};

use super::tls;
use crate::config::{PgEndpoint, SslMode};

/// The settings that change Postgres' text output, pinned on every connection.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// Shown to Postgres in `pg_stat_activity.application_name`.
pub const APPLICATION_NAME: &str = "pgch";

/// A connection that could not be opened, described in one sentence for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    /// One sentence naming the server and the cause.
    pub message: String,
    /// The SQLSTATE when the server itself refused (authentication, unknown database).
    pub sqlstate: Option<String>,
}

/// Opens an ordinary connection and pins the session settings. With several hosts
/// (a multi-host URL) they are tried in order, and with `target_session_attrs=read-write`
/// a read-only one (a standby) is skipped: after a failover the new primary is found.
pub async fn connect(ep: &PgEndpoint) -> Result<Client, ConnectError> {
    if !ep.chooses_host() {
        return connect_one(ep).await;
    }
    let mut tried = Vec::new();
    let mut sqlstate = None;
    let mut skipped_read_only = false;
    for candidate in ep.candidates() {
        match connect_one(&candidate).await {
            Ok(client) if !ep.read_write_only => return Ok(client),
            Ok(client) => match read_only(&client).await {
                Ok(false) => return Ok(client),
                Ok(true) => {
                    skipped_read_only = true;
                    tried.push(format!("{} is read-only (a standby)", candidate.address()));
                }
                Err(e) => tried.push(describe(&candidate, &e).message),
            },
            Err(e) => {
                sqlstate = e.sqlstate.clone();
                tried.push(e.message);
            }
        }
    }
    Err(ConnectError {
        message: format!(
            "no host of {} {}: {}",
            ep.address(),
            if ep.read_write_only {
                "is a read-write primary"
            } else {
                "accepted the connection"
            },
            tried.join("; ")
        ),
        // A standby that is read-only now may be promoted soon: not the server's refusal.
        sqlstate: if skipped_read_only { None } else { sqlstate },
    })
}

/// `transaction_read_only`: on for a standby (or a primary set read-only).
async fn read_only(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let rows = client.simple_query("SHOW transaction_read_only").await?;
    Ok(rows.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0) == Some("on"),
        _ => false,
    }))
}

async fn connect_one(ep: &PgEndpoint) -> Result<Client, ConnectError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&ep.host)
        .port(ep.port)
        .user(&ep.user)
        .dbname(&ep.database)
        .application_name(APPLICATION_NAME)
        .connect_timeout(ep.connect_timeout);
    if !ep.password.is_empty() {
        cfg.password(ep.password.expose());
    }
    let on_socket = ep.socket_path().is_some();
    // Postgres has no TLS on its Unix socket; libpq ignores sslmode there, and so do we.
    cfg.ssl_mode(match ep.sslmode {
        _ if on_socket => PgSslMode::Disable,
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    let tls_config = if on_socket {
        None
    } else {
        tls::client_config(ep).map_err(|e| ConnectError {
            message: format!("cannot connect to Postgres at {}: {e}", ep.address()),
            sqlstate: None,
        })?
    };
    let client = match tls_config {
        None => {
            let (client, conn) = cfg.connect(NoTls).await.map_err(|e| describe(ep, &e))?;
            tokio::spawn(drive(conn));
            client
        }
        Some(tls_config) => {
            let connector =
                tokio_postgres_rustls::MakeRustlsConnect::new(tls_config.as_ref().clone());
            let (client, conn) = cfg.connect(connector).await.map_err(|e| describe(ep, &e))?;
            tokio::spawn(drive(conn));
            client
        }
    };
    client
        .batch_execute(&session_settings_sql())
        .await
        .map_err(|e| describe(ep, &e))?;
    Ok(client)
}

async fn drive<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "postgres connection ended");
    }
}

/// `SET` statements for [`SESSION_SETTINGS`].
pub fn session_settings_sql() -> String {
    SESSION_SETTINGS
        .iter()
        .map(|(k, v)| format!("SET {k} = '{v}';"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns a tokio-postgres error into one sentence that names the server and the cause.
pub fn describe(ep: &PgEndpoint, err: &tokio_postgres::Error) -> ConnectError {
    let server = format!("Postgres at {}", ep.address());
    if let Some(db) = err.as_db_error() {
        let code = db.code().code().to_string();
        let message = match code.as_str() {
            "28P01" => format!(
                "{server} rejected the password for user \"{}\" (SQLSTATE 28P01): check source.password",
                ep.user
            ),
            "28000" => format!(
                "{server} refused user \"{}\": {} (SQLSTATE 28000): check the user name and pg_hba.conf",
                ep.user,
                db.message()
            ),
            "3D000" => format!(
                "{server} has no database \"{}\" (SQLSTATE 3D000): check source.database",
                ep.database
            ),
            _ => format!("{server} refused the connection: {} (SQLSTATE {code})", db.message()),
        };
        return ConnectError {
            message,
            sqlstate: Some(code),
        };
    }
    let cause = innermost_cause(err);
    let hint = if ep.socket_path().is_some() && cause.contains("No such file") {
        socket_hint(ep)
    } else if cause.contains("refused") {
        ": is the server running and listening there?".into()
    } else if cause.contains("failed to lookup") || cause.contains("Name or service not known") {
        ": the host name does not resolve".into()
    } else if cause.contains("timed out") || cause.contains("timeout") {
        ": no answer in time (firewall, wrong host or port?)".into()
    } else if cause.contains("server does not support TLS") {
        ": set source.sslmode = \"disable\" or \"prefer\", or enable TLS on the server".into()
    } else {
        String::new()
    };
    ConnectError {
        message: format!("cannot connect to {server}: {cause}{hint}"),
        sqlstate: None,
    }
}

/// What to look at when a socket directory holds no socket for the port.
pub(super) fn socket_hint(ep: &PgEndpoint) -> String {
    format!(
        ": is Postgres running on this machine with port = {} and '{}' in unix_socket_directories?",
        ep.port, ep.host
    )
}

fn innermost_cause(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    if text == "error connecting to server" || text.is_empty() {
        err.to_string()
    } else {
        text
    }
}
