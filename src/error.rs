//! One classification of failures: retry with backoff, or stop and tell the operator
//! what to fix. Postgres errors are judged by SQLSTATE, ClickHouse errors by their code,
//! so every module retries the same things and names the same fixes.

use crate::sink::client::SinkError;

/// What to do about a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Network trouble, a restarting server, a timeout: wait and try again; nothing is
    /// lost because only durable changes were acknowledged.
    Retry,
    /// Needs the operator; the text says what to do.
    Fatal { fix: String },
}

impl Class {
    /// Whether the failure is worth retrying.
    pub fn is_retry(&self) -> bool {
        matches!(self, Class::Retry)
    }

    fn fatal(fix: impl Into<String>) -> Class {
        Class::Fatal { fix: fix.into() }
    }
}

/// A Postgres error by SQLSTATE and message.
pub fn postgres(sqlstate: &str, message: &str) -> Class {
    match sqlstate {
        // admin shutdown, crash shutdown, cannot connect now; connection exceptions;
        // too many connections; serialization/deadlock (the read is simply repeated).
        s if s.starts_with("57P") || s.starts_with("08") => Class::Retry,
        "53300" | "53000" | "40001" | "40P01" | "55P03" | "57014" => Class::Retry,
        // The walsender refuses a slot another process is using (a previous pgch whose
        // connection the server has not noticed is gone yet).
        "55006" => Class::Retry,
        "42501" => Class::fatal(
            "the pgch user lost a privilege it needs: GRANT SELECT ON ALL TABLES IN SCHEMA <schema> TO <user>; and ALTER ROLE <user> REPLICATION; (see `pgch check`)",
        ),
        "42704" if message.contains("publication") => Class::fatal(
            "the publication is gone: recreate it (CREATE PUBLICATION … FOR TABLE …) with the same tables, then restart pgch; changes in between are still in the slot",
        ),
        "42704" if message.contains("replication slot") => Class::fatal(
            "resync required: the replication slot is gone. Run `pgch resync`",
        ),
        "55000" if message.contains("replication slot") || message.contains("invalidated") => {
            Class::fatal(
                "resync required: the replication slot was invalidated (wal_status = lost: max_slot_wal_keep_size was exceeded). Run `pgch resync`, and raise max_slot_wal_keep_size",
            )
        }
        "28P01" | "28000" => Class::fatal(
            "Postgres rejected the credentials: check source.user and source.password",
        ),
        "3D000" => Class::fatal("the source database does not exist: check source.database"),
        _ => Class::fatal("see the Postgres error above; `pgch check` reports setup problems"),
    }
}

/// An error from tokio-postgres (ordinary connections: catalog, COPY, TOAST reads).
pub fn tokio_postgres(e: &tokio_postgres::Error) -> Class {
    if e.is_closed() {
        return Class::Retry;
    }
    match e.as_db_error() {
        Some(db) => postgres(db.code().code(), db.message()),
        None => {
            // No server answer: an I/O failure (the connection broke or timed out) is
            // retried; anything else — an unexpected row count, a type that does not
            // convert — would fail again the same way.
            let io = std::error::Error::source(e)
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
            if io {
                Class::Retry
            } else {
                Class::fatal(format!("unexpected answer from Postgres: {e}"))
            }
        }
    }
}

/// A ClickHouse error: network trouble and server-side failures are retried; a
/// rejected insert (bad data, missing table, wrong credentials) is not.
pub fn clickhouse(e: &SinkError) -> Class {
    match e {
        SinkError::Unreachable { .. } | SinkError::Other { .. } => Class::Retry,
        SinkError::Authentication { .. } => {
            Class::fatal("check destination.user and destination.password")
        }
        SinkError::Server { code, .. } => match code {
            // TIMEOUT_EXCEEDED, SOCKET_TIMEOUT, NETWORK_ERROR, TOO_MANY_SIMULTANEOUS_QUERIES,
            // MEMORY_LIMIT_EXCEEDED, TOO_MANY_PARTS, NO_FREE_CONNECTION, UNEXPECTED_END_OF_FILE,
            // KEEPER_EXCEPTION, ALL_CONNECTION_TRIES_FAILED, TABLE_IS_READ_ONLY, ABORTED,
            // QUERY_WAS_CANCELLED, SYSTEM_ERROR.
            159 | 209 | 210 | 202 | 241 | 252 | 203 | 3 | 999 | 279 | 242 | 236 | 394 | 425 => {
                Class::Retry
            }
            60 | 81 => Class::fatal(
                "a ClickHouse table or database pgch writes to was dropped: restart pgch to recreate it, then run `pgch resync --table <table>`",
            ),
            _ => Class::fatal("ClickHouse rejected the request: see its message above"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_loss_retries_and_setup_problems_name_their_fix() {
        assert!(postgres("57P01", "terminating connection").is_retry());
        assert!(postgres("08006", "").is_retry());
        assert!(postgres("55006", "replication slot \"x\" is active").is_retry());
        let Class::Fatal { fix } = postgres("42501", "permission denied for table t") else {
            panic!("permission is fatal")
        };
        assert!(fix.contains("GRANT SELECT"), "{fix}");
        let Class::Fatal { fix } = postgres("42704", "publication \"p\" does not exist") else {
            panic!()
        };
        assert!(fix.contains("CREATE PUBLICATION"), "{fix}");
        let Class::Fatal { fix } = postgres(
            "55000",
            "can no longer get changes from replication slot \"s\"",
        ) else {
            panic!()
        };
        assert!(fix.contains("pgch resync"), "{fix}");
    }

    #[test]
    fn clickhouse_outages_retry_and_rejections_do_not() {
        let unreachable = SinkError::Unreachable {
            url: "u".into(),
            cause: "refused".into(),
        };
        assert!(clickhouse(&unreachable).is_retry());
        let server = |code| SinkError::Server {
            url: "u".into(),
            code,
            message: String::new(),
        };
        assert!(clickhouse(&server(241)).is_retry());
        assert!(
            !clickhouse(&server(27)).is_retry(),
            "bad data is not retried"
        );
        assert!(!clickhouse(&server(60)).is_retry());
    }
}
