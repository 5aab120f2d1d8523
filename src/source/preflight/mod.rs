//! Source checks, following what the ClickPipes / PlanetScale guide asks of a source:
//! Postgres 12+, `wal_level = logical`, the primary, a direct (non-pooler) connection
//! when changes are streamed, a user with `REPLICATION` and `SELECT`, a publication
//! whose tables each have a usable replica identity, a sane `max_slot_wal_keep_size`,
//! and room for a slot. Each problem is its own result with the fix.
//!
//! Every query here works for the guide's non-superuser.

use tokio_postgres::Client;

use super::catalog::{self, quote_ident};
use super::connect::{self, ConnectError};
use super::row::{column, ReadError};

mod failover;
mod standby;
mod tables;
use super::wire::{SessionKind, WireConnection, WireError};
use crate::check_result::CheckResult;
use crate::config::{Mode, PgEndpoint, SourceSettings};
use tables::describe_publication;
pub use tables::{
    judge_publication_actions, judge_replica_identity, name_collision_check, table_checks,
    TableNames,
};

/// The oldest Postgres pgch supports.
pub const MIN_SERVER_VERSION: u32 = 120000;
/// PlanetScale's default, which its guide tells users to raise.
pub const SMALL_WAL_KEEP_BYTES: i64 = 4 * 1024 * 1024 * 1024;
/// The retained WAL should cover at least this long an outage at the observed WAL rate.
pub const MIN_WAL_KEEP_HOURS: f64 = 12.0;
/// PSBouncer's port on PlanetScale (and PgBouncer's customary one).
pub const POOLER_PORT: u16 = 6432;

/// Runs every source check for the configured mode.
pub async fn run(src: &SourceSettings, mode: Mode, names: &TableNames) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let ep = &src.endpoint;
    let client = match connect::connect(ep).await {
        Ok(c) => {
            out.push(CheckResult::ok(
                "source_connection",
                format!(
                    "{} as user \"{}\", database \"{}\"",
                    ep.address(),
                    ep.user,
                    ep.database
                ),
            ));
            Some(c)
        }
        Err(e) => {
            out.push(connection_failure(ep, &e));
            None
        }
    };
    let unreachable = client.is_none();
    if mode.streams() {
        // A pooler or a non-Postgres listener may accept ordinary sessions (or fail them
        // obscurely); the replication probe is what tells the user what to change.
        let cause_is_network = !unreachable
            || out
                .last()
                .map(|c| is_network_failure(&c.observed))
                .unwrap_or(false);
        if !unreachable || !cause_is_network {
            out.push(replication_probe(ep).await);
        }
    } else {
        out.push(CheckResult::not_applicable(
            "replication_connection",
            "not needed in snapshot_only mode (a pooler port such as 6432 is fine)",
        ));
    }
    let Some(client) = client else {
        return out;
    };
    match server_checks(&client, src, mode, names).await {
        Ok(results) => out.extend(results),
        Err(ReadError::Query(e)) => out.push(CheckResult::failed(
            "source_catalog",
            format!("reading the catalog failed: {}", connect::describe(ep, &e)),
            "make sure the user can read pg_catalog (it can by default)",
        )),
        Err(ReadError::Column(e)) => out.push(CheckResult::failed(
            "source_catalog",
            e.to_string(),
            "check that pgch supports this Postgres version (server_version above); if it should, report this message",
        )),
    }
    out
}

fn is_network_failure(observed: &str) -> bool {
    ["refused", "resolve", "no answer in time", "timed out"]
        .iter()
        .any(|w| observed.contains(w))
}

fn connection_failure(ep: &PgEndpoint, e: &ConnectError) -> CheckResult {
    let fix = match e.sqlstate.as_deref() {
        Some("28P01") => {
            "check the user name and password (on PlanetScale the user is `user.<branch>`)"
                .to_string()
        }
        Some("28000") => {
            "check the user name and that pg_hba.conf admits it from this host".to_string()
        }
        Some("3D000") => "check source.database".to_string(),
        _ => format!(
            "check that Postgres listens at {} and is reachable from here",
            ep.address()
        ),
    };
    CheckResult::failed("source_connection", e.message.clone(), fix)
}

/// Opens a walsender session and runs `IDENTIFY_SYSTEM`: the only sure way to know that
/// this address can carry logical replication.
async fn replication_probe(ep: &PgEndpoint) -> CheckResult {
    let direct_fix = if ep.port == POOLER_PORT {
        format!(
            "logical replication needs a direct connection to the Postgres primary: use port 5432 instead of {} (PlanetScale's PSBouncer and other poolers cannot carry replication; snapshot_only mode may use them)",
            ep.port
        )
    } else {
        "logical replication needs a direct connection to the Postgres primary, e.g. port 5432, not a connection pooler (PgBouncer, PlanetScale's PSBouncer on 6432); snapshot_only mode may use a pooler".to_string()
    };
    let mut conn = match WireConnection::connect(ep, SessionKind::Replication).await {
        Ok(c) => c,
        Err(e) => return replication_failure(&e, direct_fix),
    };
    let result = conn.simple_query("IDENTIFY_SYSTEM").await;
    conn.close().await;
    match result {
        Ok(rows) => {
            let row = rows.first();
            let field = |i: usize| {
                row.and_then(|r| r.get(i))
                    .cloned()
                    .flatten()
                    .unwrap_or_default()
            };
            CheckResult::ok(
                "replication_connection",
                format!(
                    "walsender answered IDENTIFY_SYSTEM: system {}, timeline {}, WAL at {}",
                    field(0),
                    field(1),
                    field(2)
                ),
            )
        }
        Err(e) => replication_failure(&e, direct_fix),
    }
}

fn replication_failure(e: &WireError, direct_fix: String) -> CheckResult {
    let (observed, fix) = match e {
        WireError::Server { sqlstate, message, .. } if sqlstate == "42501" => (
            format!("the server refused a replication session: {message}"),
            "grant the user REPLICATION: ALTER USER <user> WITH REPLICATION;".to_string(),
        ),
        WireError::Server { sqlstate, message, .. }
            if sqlstate == "28000" && message.contains("replication") =>
        {
            (
                format!("the server refused a replication session: {message}"),
                "allow the user in pg_hba.conf for this database (managed services do this for users with REPLICATION)".to_string(),
            )
        }
        WireError::Server { sqlstate, .. } if sqlstate == "28P01" => {
            (e.to_string(), "check the user name and password".to_string())
        }
        WireError::Server { .. } | WireError::Protocol { .. } => (
            format!("this address cannot carry replication: {e}"),
            direct_fix,
        ),
        _ => (e.to_string(), direct_fix),
    };
    CheckResult::failed("replication_connection", observed, fix)
}

async fn server_checks(
    client: &Client,
    src: &SourceSettings,
    mode: Mode,
    names: &TableNames,
) -> Result<Vec<CheckResult>, ReadError> {
    let mut out = Vec::new();
    let version_num: u32 = show(client, "server_version_num")
        .await?
        .parse()
        .unwrap_or(0);
    let version_text = show(client, "server_version").await?;
    out.push(judge_server_version(version_num, &version_text));
    if version_num < MIN_SERVER_VERSION {
        return Ok(out);
    }
    let wal_level = show(client, "wal_level").await?;
    out.push(judge_wal_level(&wal_level));
    let in_recovery: bool = column(
        &client.query_one("SELECT pg_is_in_recovery()", &[]).await?,
        0,
        "reading pg_is_in_recovery()",
    )?;
    out.push(standby::judge_source_server(
        in_recovery,
        src.standby_decoding,
        version_num,
    ));
    out.extend(standby::checks(client, src, in_recovery, version_num).await?);
    out.push(role_check(client, mode).await?);
    let publication = catalog::publication(client, &src.publication, version_num).await?;
    let Some(publication) = publication else {
        out.push(CheckResult::failed(
            "publication",
            format!("publication \"{}\" does not exist in this database", src.publication),
            format!(
                "CREATE PUBLICATION {} FOR TABLE <tables>; (or FOR TABLES IN SCHEMA <schema> on Postgres 15+), connected to database \"{}\"",
                quote_ident(&src.publication),
                src.endpoint.database
            ),
        ));
        out.extend(slot_checks(client, src, mode, version_num).await?);
        if mode.streams() {
            out.extend(failover_checks(client, src, in_recovery, version_num).await?);
        }
        out.push(wal_keep_check(client, version_num).await?);
        return Ok(out);
    };
    out.push(CheckResult::ok(
        "publication",
        describe_publication(&publication),
    ));
    out.push(judge_publication_actions(&publication));
    let tables = catalog::published_tables(client, &src.publication, version_num).await?;
    out.extend(table_checks(
        &publication,
        &tables,
        &src.endpoint.user,
        version_num,
        names,
    ));
    out.extend(slot_checks(client, src, mode, version_num).await?);
    if mode.streams() {
        out.extend(failover_checks(client, src, in_recovery, version_num).await?);
    }
    out.push(wal_keep_check(client, version_num).await?);
    Ok(out)
}

async fn show(client: &Client, setting: &str) -> Result<String, ReadError> {
    let row = client
        .query_one("SELECT current_setting($1)", &[&setting])
        .await?;
    Ok(column(&row, 0, "reading a setting (current_setting)")?)
}

/// Judges `server_version_num` against [`MIN_SERVER_VERSION`].
pub fn judge_server_version(num: u32, text: &str) -> CheckResult {
    if num >= MIN_SERVER_VERSION {
        CheckResult::ok("server_version", format!("Postgres {text}"))
    } else {
        CheckResult::failed(
            "server_version",
            format!("Postgres {text} is too old: pgch needs Postgres 12 or newer"),
            "upgrade Postgres to 12 or newer",
        )
    }
}

/// `wal_level` must be `logical` for a slot to decode changes.
pub fn judge_wal_level(level: &str) -> CheckResult {
    if level == "logical" {
        CheckResult::ok("wal_level", "logical")
    } else {
        CheckResult::failed(
            "wal_level",
            format!("wal_level is {level}; logical replication needs logical"),
            "ALTER SYSTEM SET wal_level = logical; then restart Postgres (on PlanetScale: Cluster configuration → Parameters → Write-ahead log; the instance restarts)",
        )
    }
}

/// Failover slots exist only on a primary; a slot on a standby (standby decoding) is
/// the standby's own and survives its promotion, not its loss.
async fn failover_checks(
    client: &Client,
    src: &SourceSettings,
    in_recovery: bool,
    version: u32,
) -> Result<Vec<CheckResult>, ReadError> {
    if in_recovery {
        return Ok(vec![CheckResult::not_applicable(
            "failover",
            "standby decoding: the slot lives on this standby (Postgres cannot make a failover slot there); it survives this standby's promotion, not the loss of this standby",
        )]);
    }
    failover::checks(client, src, version).await
}

async fn role_check(client: &Client, mode: Mode) -> Result<CheckResult, ReadError> {
    const WHAT: &str = "reading the user's role (pg_roles)";
    let row = client
        .query_one(
            // Amazon RDS and Aurora give replication through membership of their
            // `rds_replication` role, not the REPLICATION attribute.
            "SELECT current_user::text, rolreplication, rolsuper,
                    CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication')
                         THEN pg_has_role(current_user, 'rds_replication', 'MEMBER') ELSE false END
               FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    let (user, replication, superuser, rds_replication): (String, bool, bool, bool) = (
        column(&row, 0, WHAT)?,
        column(&row, 1, WHAT)?,
        column(&row, 2, WHAT)?,
        column(&row, 3, WHAT)?,
    );
    Ok(if !mode.streams() {
        CheckResult::not_applicable("role_replication", "not needed in snapshot_only mode")
    } else if superuser {
        CheckResult::ok(
            "role_replication",
            format!("\"{user}\" is a superuser (a dedicated user with REPLICATION is recommended)"),
        )
    } else if replication {
        CheckResult::ok("role_replication", format!("\"{user}\" has REPLICATION"))
    } else if rds_replication {
        CheckResult::ok(
            "role_replication",
            format!("\"{user}\" is a member of rds_replication (Amazon RDS / Aurora)"),
        )
    } else {
        CheckResult::failed(
            "role_replication",
            format!("\"{user}\" has neither REPLICATION nor superuser"),
            format!("ALTER USER {} WITH REPLICATION; (as an admin user, e.g. postgres.<branch> on PlanetScale; on Amazon RDS / Aurora: GRANT rds_replication TO {};)", quote_ident(&user), quote_ident(&user)),
        )
    })
}

async fn slot_checks(
    client: &Client,
    src: &SourceSettings,
    mode: Mode,
    server_version: u32,
) -> Result<Vec<CheckResult>, ReadError> {
    const WHAT: &str = "reading the replication slots (pg_replication_slots)";
    if !mode.streams() {
        return Ok(vec![CheckResult::not_applicable(
            "replication_slot",
            "snapshot_only mode uses no slot",
        )]);
    }
    let wal_status = if server_version >= 130000 {
        "wal_status::text"
    } else {
        "NULL::text"
    };
    let sql = format!(
        "SELECT slot_type::text, plugin::text, database::text, active, {wal_status}, confirmed_flush_lsn::text \
         FROM pg_catalog.pg_replication_slots WHERE slot_name = $1"
    );
    let mut out = Vec::new();
    if let Some(r) = client.query_opt(&sql, &[&src.slot]).await? {
        let (slot_type, plugin, database, active, status, confirmed): (
            String,
            Option<String>,
            Option<String>,
            bool,
            Option<String>,
            Option<String>,
        ) = (
            column(&r, 0, WHAT)?,
            column(&r, 1, WHAT)?,
            column(&r, 2, WHAT)?,
            column(&r, 3, WHAT)?,
            column(&r, 4, WHAT)?,
            column(&r, 5, WHAT)?,
        );
        out.push(judge_existing_slot(
            &src.slot,
            &src.endpoint.database,
            &slot_type,
            plugin.as_deref(),
            database.as_deref(),
            active,
            status.as_deref(),
            confirmed.as_deref(),
        ));
    } else {
        let used: i64 = column(
            &client
                .query_one("SELECT count(*) FROM pg_catalog.pg_replication_slots", &[])
                .await?,
            0,
            WHAT,
        )?;
        let max: i64 = show(client, "max_replication_slots")
            .await?
            .parse()
            .unwrap_or(0);
        out.push(if used >= max {
            CheckResult::failed(
                "replication_slot",
                format!("slot \"{}\" does not exist and cannot be created: {used} of max_replication_slots = {max} are in use", src.slot),
                "drop an unused slot (SELECT pg_drop_replication_slot('<name>');) or raise max_replication_slots (needs a restart)",
            )
        } else {
            CheckResult::ok(
                "replication_slot",
                format!("slot \"{}\" will be created ({used} of {max} slots in use)", src.slot),
            )
        });
    }
    let senders: i64 = column(
        &client
            .query_one("SELECT count(*) FROM pg_catalog.pg_stat_replication", &[])
            .await?,
        0,
        "counting the WAL senders (pg_stat_replication)",
    )?;
    let max_senders: i64 = show(client, "max_wal_senders").await?.parse().unwrap_or(0);
    out.push(if senders >= max_senders {
        CheckResult::failed(
            "wal_senders",
            format!("{senders} of max_wal_senders = {max_senders} are in use"),
            "raise max_wal_senders (needs a restart) or stop an unused replication client",
        )
    } else {
        CheckResult::ok(
            "wal_senders",
            format!("{senders} of max_wal_senders = {max_senders} in use"),
        )
    });
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn judge_existing_slot(
    slot: &str,
    our_database: &str,
    slot_type: &str,
    plugin: Option<&str>,
    database: Option<&str>,
    active: bool,
    wal_status: Option<&str>,
    confirmed: Option<&str>,
) -> CheckResult {
    let pick_other = "pick another source.slot, or drop it if nothing uses it: SELECT pg_drop_replication_slot('<name>');";
    if slot_type != "logical" || plugin != Some("pgoutput") {
        return CheckResult::failed(
            "replication_slot",
            format!(
                "slot \"{slot}\" exists but is {slot_type} with plugin {}, not logical pgoutput",
                plugin.unwrap_or("none")
            ),
            pick_other,
        );
    }
    if database != Some(our_database) {
        return CheckResult::failed(
            "replication_slot",
            format!(
                "slot \"{slot}\" exists but belongs to database {}",
                database.unwrap_or("?")
            ),
            pick_other,
        );
    }
    if wal_status == Some("lost") {
        return CheckResult::failed(
            "replication_slot",
            format!(
                "slot \"{slot}\" was invalidated (wal_status = lost): the WAL it needed is gone"
            ),
            "resync required: `pgch resync` makes a new slot and copies every table again",
        );
    }
    if active {
        return CheckResult::warning(
            "replication_slot",
            format!("slot \"{slot}\" is in use by another process right now"),
            "stop the other consumer of this slot, or pick another source.slot",
        );
    }
    CheckResult::ok(
        "replication_slot",
        format!(
            "slot \"{slot}\" exists (confirmed_flush_lsn {}{})",
            confirmed.unwrap_or("?"),
            wal_status
                .map(|s| format!(", wal_status {s}"))
                .unwrap_or_default()
        ),
    )
}

async fn wal_keep_check(client: &Client, server_version: u32) -> Result<CheckResult, ReadError> {
    if server_version < 130000 {
        return Ok(CheckResult::not_applicable(
            "max_slot_wal_keep_size",
            "n/a on Postgres 12 (no such setting: a slot retains WAL without limit, so watch disk space)",
        ));
    }
    let mb: i64 = show(client, "max_slot_wal_keep_size")
        .await
        .map(|s| parse_size_mb(&s))?
        .unwrap_or(-1);
    let rate = if server_version >= 140000 {
        let row = client
            .query_one(
                "SELECT wal_bytes::float8, extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))::float8 FROM pg_catalog.pg_stat_wal",
                &[],
            )
            .await?;
        const WHAT: &str = "reading the WAL rate (pg_stat_wal)";
        let (bytes, secs): (f64, f64) = (column(&row, 0, WHAT)?, column(&row, 1, WHAT)?);
        (secs > 60.0).then(|| bytes / secs)
    } else {
        None
    };
    Ok(judge_wal_keep(mb, rate))
}

/// Reads `current_setting('max_slot_wal_keep_size')` (`-1`, `4GB`, `1024MB`, `512kB`) as MB.
pub fn parse_size_mb(text: &str) -> Option<i64> {
    let text = text.trim();
    if text == "-1" {
        return Some(-1);
    }
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: i64 = digits.parse().ok()?;
    let unit = text[digits.len()..].trim();
    Some(match unit {
        "" | "MB" => n,
        "kB" => n / 1024,
        "GB" => n * 1024,
        "TB" => n * 1024 * 1024,
        _ => return None,
    })
}

/// Judges `max_slot_wal_keep_size` (MB, -1 unlimited) against the average WAL rate.
pub fn judge_wal_keep(mb: i64, wal_bytes_per_sec: Option<f64>) -> CheckResult {
    let raise = "raise max_slot_wal_keep_size so it covers your peak WAL over the longest outage you must survive (on PlanetScale: Cluster configuration → Parameters → Write-ahead log)";
    if mb < 0 {
        return CheckResult::warning(
            "max_slot_wal_keep_size",
            "-1 (unlimited): a stalled slot keeps WAL until the disk fills",
            "set a limit large enough for the longest outage you must survive, and alert on pgch_slot_retained_wal_ratio",
        );
    }
    let bytes = mb * 1024 * 1024;
    let hours = wal_bytes_per_sec
        .filter(|r| *r > 0.0)
        .map(|r| bytes as f64 / r / 3600.0);
    let rate_text = match (wal_bytes_per_sec, hours) {
        (Some(r), Some(h)) => format!(
            "; average WAL rate {:.2} MB/s, so it covers about {h:.1} h",
            r / 1_048_576.0
        ),
        _ => String::new(),
    };
    let observed = format!("{}{rate_text}", human_mb(mb));
    if bytes <= SMALL_WAL_KEEP_BYTES {
        return CheckResult::warning(
            "max_slot_wal_keep_size",
            format!("{observed}: small — the slot is invalidated (and a full resync needed) once pgch falls this far behind"),
            raise,
        );
    }
    if let Some(h) = hours.filter(|h| *h < MIN_WAL_KEEP_HOURS) {
        return CheckResult::warning(
            "max_slot_wal_keep_size",
            format!("{observed}: less than {MIN_WAL_KEEP_HOURS} h of WAL ({h:.1} h)"),
            raise,
        );
    }
    CheckResult::ok("max_slot_wal_keep_size", observed)
}

fn human_mb(mb: i64) -> String {
    if mb >= 1024 && mb % 1024 == 0 {
        format!("{} GB", mb / 1024)
    } else {
        format!("{mb} MB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_result::Outcome;
    use crate::source::catalog::{PublishedTable, ReplicaIdentity};

    fn table(schema: &str, name: &str) -> PublishedTable {
        PublishedTable::sample(schema, name)
    }

    #[test]
    fn version_logic_needs_12() {
        assert_eq!(
            judge_server_version(110022, "11.22").outcome,
            Outcome::Failed
        );
        assert_eq!(judge_server_version(120000, "12.0").outcome, Outcome::Ok);
        assert_eq!(judge_server_version(180001, "18.1").outcome, Outcome::Ok);
    }

    #[test]
    fn sizes_parse_into_megabytes() {
        assert_eq!(parse_size_mb("-1"), Some(-1));
        assert_eq!(parse_size_mb("4GB"), Some(4096));
        assert_eq!(parse_size_mb("100MB"), Some(100));
        assert_eq!(parse_size_mb("2048kB"), Some(2));
        assert_eq!(parse_size_mb("1TB"), Some(1024 * 1024));
        assert_eq!(parse_size_mb("x"), None);
    }

    #[test]
    fn wal_keep_warns_when_unlimited_small_or_short() {
        assert_eq!(judge_wal_keep(-1, None).outcome, Outcome::Warning);
        assert_eq!(judge_wal_keep(4096, None).outcome, Outcome::Warning);
        assert_eq!(judge_wal_keep(100 * 1024, None).outcome, Outcome::Ok);
        // 100 GB at 10 MB/s is under 3 hours.
        let short = judge_wal_keep(100 * 1024, Some(10.0 * 1_048_576.0));
        assert_eq!(short.outcome, Outcome::Warning, "{}", short.observed);
    }

    #[test]
    fn keys_are_judged_per_replica_identity() {
        assert!(judge_replica_identity(&table("public", "t")).is_none());
        let mut deferrable = table("public", "d");
        deferrable.primary_key_deferrable = true;
        assert_eq!(
            judge_replica_identity(&deferrable).unwrap().outcome,
            Outcome::Failed
        );
        let mut keyless = table("public", "k");
        keyless.has_primary_key = false;
        let r = judge_replica_identity(&keyless).unwrap();
        assert_eq!(r.outcome, Outcome::Failed);
        let fix = r.fix.unwrap();
        assert!(
            fix.contains("ADD PRIMARY KEY") && fix.contains("REPLICA IDENTITY FULL"),
            "{fix}"
        );
        keyless.replica_identity = ReplicaIdentity::Full;
        assert_eq!(
            judge_replica_identity(&keyless).unwrap().outcome,
            Outcome::Warning
        );
    }

    #[test]
    fn colliding_destination_names_fail() {
        let r = name_collision_check(
            &[table("a_b", "c"), table("a", "b_c"), table("x", "y")],
            &TableNames::new(),
        );
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(
            r.observed.contains("a_b.c and a.b_c all map to a_b_c"),
            "{}",
            r.observed
        );
        assert_eq!(
            name_collision_check(&[table("a", "b")], &TableNames::new()).outcome,
            Outcome::Ok
        );
    }
}
