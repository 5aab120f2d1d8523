//! Destination checks: ClickHouse is reachable, accepts the credentials, is new enough
//! for `ReplacingMergeTree(version, is_deleted)` (23.8, the first LTS with it), and the
//! destination database exists or can be created.

use super::client::{self, SinkError, CODE_ACCESS_DENIED};
use crate::check_result::CheckResult;
use crate::config::DestinationSettings;

/// The oldest ClickHouse pgch supports: the first LTS with `ReplacingMergeTree(ver, is_deleted)`.
pub const MIN_CLICKHOUSE: (u32, u32) = (23, 8);

/// Runs the destination checks; later checks are skipped when the server cannot be used.
pub async fn run(settings: &DestinationSettings) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let ch = client::client(settings, false);
    let version = match client::query_text(&ch, settings, "SELECT version()").await {
        Ok(text) => text.trim().to_string(),
        Err(e) => {
            out.push(connection_failure(settings, &e));
            return out;
        }
    };
    out.push(CheckResult::ok(
        "clickhouse_connection",
        format!("{} as user \"{}\"", settings.url, settings.user),
    ));
    out.push(judge_version(&version));
    if out
        .iter()
        .any(|c| c.outcome == crate::check_result::Outcome::Failed)
    {
        return out;
    }
    out.push(database_check(&ch, settings).await);
    out.push(types_check(settings).await);
    out
}

/// What the server holds, as the type map will use it: not a pass/fail check, but the
/// answer to "will my dates and times arrive as they are?" before the first copy.
async fn types_check(settings: &DestinationSettings) -> CheckResult {
    match super::capabilities::detect(settings).await {
        Ok(caps) => CheckResult::ok(
            "clickhouse_types",
            format!(
                "dates and timestamps hold {}{}; time as {}",
                caps.date_range(),
                if caps.wide_dates {
                    " (BC and ±infinity are clamped, and counted)"
                } else {
                    " (ClickHouse 26.8+ holds 0001..9999; outside values are clamped, and counted)"
                },
                if caps.time64 { "Time64(6)" } else { "String" }
            ),
        ),
        Err(e) => CheckResult::failed(
            "clickhouse_types",
            format!("cannot read what the server holds: {e}"),
            "grant the pgch user SELECT on system.settings (every user has it by default)",
        ),
    }
}

fn connection_failure(settings: &DestinationSettings, e: &SinkError) -> CheckResult {
    let fix = match e {
        SinkError::Authentication { .. } => {
            "set destination.user and destination.password (PGCH__DESTINATION__PASSWORD) to an account ClickHouse accepts".to_string()
        }
        SinkError::Unreachable { .. } => format!(
            "check destination.url ({}): ClickHouse's HTTP interface listens on 8123 (8443 with TLS) by default",
            settings.url
        ),
        _ => "check destination.url, user and password".to_string(),
    };
    CheckResult::failed("clickhouse_connection", e.to_string(), fix)
}

/// Judges a `version()` string against [`MIN_CLICKHOUSE`].
pub fn judge_version(version: &str) -> CheckResult {
    match super::capabilities::parse_version(version) {
        Some(v) if v >= MIN_CLICKHOUSE => {
            CheckResult::ok("clickhouse_version", format!("ClickHouse {version}"))
        }
        Some(_) => CheckResult::failed(
            "clickhouse_version",
            format!(
                "ClickHouse {version} is too old: pgch needs {}.{} or newer (ReplacingMergeTree with an is_deleted column)",
                MIN_CLICKHOUSE.0, MIN_CLICKHOUSE.1
            ),
            format!(
                "upgrade ClickHouse to {}.{} LTS or newer",
                MIN_CLICKHOUSE.0, MIN_CLICKHOUSE.1
            ),
        ),
        None => CheckResult::failed(
            "clickhouse_version",
            format!("cannot read the version \"{version}\""),
            "point destination.url at a ClickHouse server",
        ),
    }
}

async fn database_check(ch: &clickhouse::Client, settings: &DestinationSettings) -> CheckResult {
    let db = &settings.database;
    let quoted = quote_ident(db);
    let exists_sql = format!(
        "SELECT count() FROM system.databases WHERE name = '{}'",
        escape_string(db)
    );
    match client::query_text(ch, settings, &exists_sql).await {
        Ok(n) if n.trim() != "0" => {
            return CheckResult::ok("clickhouse_database", format!("database {db} exists"))
        }
        Ok(_) => {}
        Err(e) => {
            return CheckResult::failed(
                "clickhouse_database",
                e.to_string(),
                "check the user's grants",
            )
        }
    }
    // Prove that the database can be created, and leave no trace.
    let create = format!("CREATE DATABASE {quoted}");
    match client::execute(ch, settings, &create).await {
        Ok(()) => {
            let drop = format!("DROP DATABASE IF EXISTS {quoted}");
            if let Err(e) = client::execute(ch, settings, &drop).await {
                tracing::warn!(error = %e, database = %db, "could not drop the probe database");
            }
            CheckResult::ok(
                "clickhouse_database",
                format!("database {db} does not exist yet and can be created"),
            )
        }
        Err(e) => {
            let fix = if e.code() == Some(CODE_ACCESS_DENIED) {
                format!(
                    "GRANT CREATE DATABASE ON {quoted}.* TO {} (or create the database for pgch)",
                    settings.user
                )
            } else {
                format!("create the database yourself: CREATE DATABASE {quoted}")
            };
            CheckResult::failed("clickhouse_database", e.to_string(), fix)
        }
    }
}

/// Quotes a ClickHouse identifier with backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// Escapes a value for a single-quoted ClickHouse string literal.
pub fn escape_string(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_result::Outcome;

    #[test]
    fn versions_are_judged_by_major_and_minor() {
        assert_eq!(judge_version("26.9.1.1").outcome, Outcome::Ok);
        assert_eq!(judge_version("23.8.2.7").outcome, Outcome::Ok);
        assert_eq!(judge_version("23.3.1").outcome, Outcome::Failed);
        let old = judge_version("18.16.1");
        assert_eq!(old.outcome, Outcome::Failed);
        assert!(old.observed.contains("too old"), "{}", old.observed);
        assert_eq!(judge_version("garbage").outcome, Outcome::Failed);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a`b"), "`a\\`b`");
        assert_eq!(escape_string("it's"), "it\\'s");
    }
}
