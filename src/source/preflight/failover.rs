//! Failover readiness: whether a promotion of a standby would keep pgch's slot, so that
//! pgch carries on from the new primary instead of copying every table again.
//!
//! Postgres 17+ keeps a logical slot through a failover when the slot is a failover
//! slot, the primary holds logical decoding back until the standbys have the WAL
//! (`synchronized_standby_slots`), and each standby synchronizes slots
//! (`sync_replication_slots`, `hot_standby_feedback`, `primary_slot_name`, a
//! `primary_conninfo` with `dbname`). The primary shows the first two; the standbys
//! (`source.standby_urls`) the rest. A missing piece is a warning: pgch works today,
//! and the report says what the next failover would cost.

use tokio_postgres::Client;

use super::super::connect;
use super::super::row::{column, ReadError};
use crate::check_result::CheckResult;
use crate::config::{PgEndpoint, SourceSettings};

/// The first Postgres with failover slots and slot synchronization.
pub const FAILOVER_SLOTS_VERSION: u32 = 170000;

/// Where PlanetScale users change server parameters.
const PLANETSCALE_PARAMETERS: &str =
    "on PlanetScale: Cluster configuration → Parameters; elsewhere: ALTER SYSTEM SET … and SELECT pg_reload_conf()";

/// What the primary says about failover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrimaryView {
    /// `pg_replication_slots.failover` of pgch's slot; `None` when it does not exist yet.
    pub slot_failover: Option<bool>,
    /// Physical slots (the standbys' `primary_slot_name`s) and whether one streams now.
    pub physical_slots: Vec<(String, bool)>,
    /// `synchronized_standby_slots`, as shown.
    pub synchronized_standby_slots: String,
}

/// What one standby says about keeping pgch's slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandbyView {
    pub in_recovery: bool,
    pub sync_replication_slots: String,
    pub hot_standby_feedback: String,
    pub primary_slot_name: String,
    /// `None` when the user may not read it (it holds a password: superuser or
    /// `pg_read_all_settings`).
    pub primary_conninfo: Option<String>,
    /// pgch's slot there: (`synced`, `temporary`, `invalidation_reason`).
    pub slot: Option<(bool, bool, Option<String>)>,
}

/// The failover checks of the source, for the primary at `client`.
pub async fn checks(
    client: &Client,
    src: &SourceSettings,
    server_version: u32,
) -> Result<Vec<CheckResult>, ReadError> {
    if server_version < FAILOVER_SLOTS_VERSION {
        return Ok(vec![CheckResult::not_applicable(
            "failover",
            format!(
                "Postgres {} has no failover slots (they came in 17): a failover to a standby loses the slot and needs `pgch resync`",
                server_version / 10000
            ),
        )]);
    }
    let view = primary_view(client, &src.slot).await?;
    let mut out = judge_primary(
        &view,
        &src.slot,
        src.failover_slot,
        !src.standbys.is_empty(),
    );
    for standby in &src.standbys {
        out.extend(standby_checks(standby, &src.slot).await);
    }
    Ok(out)
}

async fn primary_view(client: &Client, slot: &str) -> Result<PrimaryView, ReadError> {
    const WHAT: &str = "reading the replication slots for failover";
    let slot_failover = match client
        .query_opt(
            "SELECT failover FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
    {
        Some(row) => Some(column::<bool>(&row, 0, WHAT)?),
        None => None,
    };
    let mut physical_slots = Vec::new();
    for row in client
        .query(
            "SELECT slot_name::text, active FROM pg_catalog.pg_replication_slots \
             WHERE slot_type = 'physical' ORDER BY 1",
            &[],
        )
        .await?
    {
        physical_slots.push((column(&row, 0, WHAT)?, column(&row, 1, WHAT)?));
    }
    let synchronized_standby_slots = show(client, "synchronized_standby_slots").await?;
    Ok(PrimaryView {
        slot_failover,
        physical_slots,
        synchronized_standby_slots,
    })
}

async fn show(client: &Client, setting: &str) -> Result<String, ReadError> {
    let row = client
        .query_one("SELECT current_setting($1)", &[&setting])
        .await?;
    Ok(column(&row, 0, "reading a server setting")?)
}

/// The primary's part: the slot's flag, the standbys' physical slots, and
/// `synchronized_standby_slots`.
pub fn judge_primary(
    view: &PrimaryView,
    slot: &str,
    failover_wanted: bool,
    standbys_given: bool,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    out.push(match (view.slot_failover, failover_wanted) {
        (Some(true), _) => CheckResult::ok(
            "failover_slot",
            format!("slot \"{slot}\" is a failover slot: standbys that synchronize slots keep it"),
        ),
        (Some(false), true) => CheckResult::warning(
            "failover_slot",
            format!("slot \"{slot}\" is not a failover slot: a failover loses it"),
            format!("pgch run switches it on at its next start (source.failover_slot = true); or on a replication connection: ALTER_REPLICATION_SLOT {slot} (FAILOVER true)"),
        ),
        (Some(false), false) => CheckResult::warning(
            "failover_slot",
            format!("slot \"{slot}\" is not a failover slot (source.failover_slot = false): a failover loses it and costs a resync"),
            "set source.failover_slot = true (the default); pgch switches the slot on at start",
        ),
        (None, true) => CheckResult::ok(
            "failover_slot",
            format!("slot \"{slot}\" will be created as a failover slot (FAILOVER true)"),
        ),
        (None, false) => CheckResult::warning(
            "failover_slot",
            format!("slot \"{slot}\" will be created without failover (source.failover_slot = false): a failover loses it"),
            "set source.failover_slot = true (the default)",
        ),
    });
    if view.physical_slots.is_empty() {
        out.push(if standbys_given {
            CheckResult::warning(
                "synchronized_standby_slots",
                "no physical replication slot on this primary: standbys that synchronize slots need one (primary_slot_name)",
                format!("SELECT pg_create_physical_replication_slot('<standby>'); then primary_slot_name = '<standby>' on the standby and synchronized_standby_slots = '<standby>' here ({PLANETSCALE_PARAMETERS})"),
            )
        } else {
            CheckResult::not_applicable(
                "synchronized_standby_slots",
                "no standby streams from a physical slot here: nothing would keep the slot through a failover (fine for a single server)",
            )
        });
        return out;
    }
    let physical: Vec<&str> = view
        .physical_slots
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    let listed: Vec<&str> = view
        .synchronized_standby_slots
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let unknown: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|s| !physical.contains(s))
        .collect();
    out.push(if listed.is_empty() {
        CheckResult::warning(
            "synchronized_standby_slots",
            format!(
                "empty: pgch may receive changes the standbys ({}) have not; after a failover ClickHouse could hold rows the new primary never had",
                physical.join(", ")
            ),
            format!(
                "synchronized_standby_slots = '{}' ({PLANETSCALE_PARAMETERS})",
                physical.join(",")
            ),
        )
    } else if !unknown.is_empty() {
        CheckResult::warning(
            "synchronized_standby_slots",
            format!(
                "names {} that is not a physical slot here (physical slots: {}): logical decoding waits for it forever",
                unknown.join(", "),
                physical.join(", ")
            ),
            format!("synchronized_standby_slots = '{}' ({PLANETSCALE_PARAMETERS})", physical.join(",")),
        )
    } else {
        CheckResult::ok(
            "synchronized_standby_slots",
            format!("'{}': pgch receives no change before those standbys have it", listed.join(",")),
        )
    });
    out
}

async fn standby_checks(ep: &PgEndpoint, slot: &str) -> Vec<CheckResult> {
    let at = ep.address();
    let client = match connect::connect(ep).await {
        Ok(c) => c,
        Err(e) => {
            return vec![CheckResult::warning(
            "standby_connection",
            format!("standby {at}: {e}"),
            "fix source.standby_urls (the URL, user and password of a hot standby), or remove it",
        )]
        }
    };
    match standby_view(&client, slot).await {
        Ok(view) => judge_standby(&view, &at, slot),
        Err(e) => vec![CheckResult::warning(
            "standby_connection",
            format!("standby {at}: reading its settings failed: {e}"),
            "connect source.standby_urls as a user that may read pg_settings and pg_replication_slots (every role may)",
        )],
    }
}

async fn standby_view(client: &Client, slot: &str) -> Result<StandbyView, ReadError> {
    const WHAT: &str = "reading a standby's slots";
    let in_recovery: bool = column(
        &client.query_one("SELECT pg_is_in_recovery()", &[]).await?,
        0,
        "reading pg_is_in_recovery()",
    )?;
    let version: u32 = show(client, "server_version_num")
        .await?
        .parse()
        .unwrap_or(0);
    if version < FAILOVER_SLOTS_VERSION {
        return Ok(StandbyView {
            in_recovery,
            ..StandbyView::default()
        });
    }
    // pg_settings leaves out what the user may not read; a missing row is "unknown".
    let conninfo = client
        .query_opt(
            "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'primary_conninfo'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|row| row.try_get::<_, Option<String>>(0).ok().flatten())
        .filter(|v| !v.starts_with("********"));
    let slot_row = client
        .query_opt(
            "SELECT synced, temporary, invalidation_reason::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let slot = match slot_row {
        Some(r) => Some((
            column(&r, 0, WHAT)?,
            column(&r, 1, WHAT)?,
            column(&r, 2, WHAT)?,
        )),
        None => None,
    };
    Ok(StandbyView {
        in_recovery,
        sync_replication_slots: show(client, "sync_replication_slots").await?,
        hot_standby_feedback: show(client, "hot_standby_feedback").await?,
        primary_slot_name: show(client, "primary_slot_name").await?,
        primary_conninfo: conninfo,
        slot,
    })
}

/// Whether a `primary_conninfo` names a database (slot synchronization needs one): a
/// `dbname=` keyword with a value, or a URI with a path.
pub fn conninfo_has_dbname(conninfo: &str) -> bool {
    let trimmed = conninfo.trim();
    if let Some(rest) = trimmed
        .strip_prefix("postgresql://")
        .or_else(|| trimmed.strip_prefix("postgres://"))
    {
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        let db = path.split('?').next().unwrap_or("");
        return !db.is_empty() || rest.contains("dbname=");
    }
    trimmed.split_whitespace().any(|kv| {
        kv.split_once('=')
            .is_some_and(|(k, v)| k.trim() == "dbname" && !v.trim_matches('\'').is_empty())
    })
}

fn is_on(value: &str) -> bool {
    matches!(value, "on" | "true" | "1" | "yes")
}

/// One standby's part: each setting slot synchronization needs, and the slot itself.
pub fn judge_standby(view: &StandbyView, at: &str, slot: &str) -> Vec<CheckResult> {
    if !view.in_recovery {
        return vec![CheckResult::warning(
            "standby_connection",
            format!("{at} is not a standby (pg_is_in_recovery() is false)"),
            "list hot standbys of the source in source.standby_urls, not the primary",
        )];
    }
    let mut out = Vec::new();
    out.push(if is_on(&view.sync_replication_slots) {
        CheckResult::ok(
            "standby_sync_replication_slots",
            format!("standby {at}: on"),
        )
    } else {
        CheckResult::warning(
            "standby_sync_replication_slots",
            format!("standby {at}: sync_replication_slots = {}: it keeps no copy of the slot, so a failover to it loses the slot", view.sync_replication_slots),
            format!("sync_replication_slots = on on the standby ({PLANETSCALE_PARAMETERS})"),
        )
    });
    out.push(if is_on(&view.hot_standby_feedback) {
        CheckResult::ok("standby_hot_standby_feedback", format!("standby {at}: on"))
    } else {
        CheckResult::warning(
            "standby_hot_standby_feedback",
            format!(
                "standby {at}: hot_standby_feedback = {}: slot synchronization needs it",
                view.hot_standby_feedback
            ),
            format!("hot_standby_feedback = on on the standby ({PLANETSCALE_PARAMETERS})"),
        )
    });
    out.push(if view.primary_slot_name.trim().is_empty() {
        CheckResult::warning(
            "standby_primary_slot_name",
            format!("standby {at}: primary_slot_name is empty: slot synchronization needs the standby to stream from a physical slot"),
            "SELECT pg_create_physical_replication_slot('<standby>'); on the primary, and primary_slot_name = '<standby>' on the standby",
        )
    } else {
        CheckResult::ok(
            "standby_primary_slot_name",
            format!("standby {at}: '{}'", view.primary_slot_name),
        )
    });
    out.push(match &view.primary_conninfo {
        None => CheckResult::not_applicable(
            "standby_primary_conninfo",
            format!("standby {at}: primary_conninfo is not readable by this user (superuser or pg_read_all_settings); make sure it has dbname=…"),
        ),
        Some(c) if conninfo_has_dbname(c) => CheckResult::ok(
            "standby_primary_conninfo",
            format!("standby {at}: names a database"),
        ),
        Some(_) => CheckResult::warning(
            "standby_primary_conninfo",
            format!("standby {at}: primary_conninfo has no dbname: the slot sync worker cannot connect"),
            "add dbname=<any database> to primary_conninfo on the standby",
        ),
    });
    out.push(match &view.slot {
        Some((true, false, None)) => CheckResult::ok(
            "standby_slot_synced",
            format!("standby {at}: slot \"{slot}\" is synced: a promotion of this standby keeps it"),
        ),
        Some((_, _, Some(reason))) => CheckResult::warning(
            "standby_slot_synced",
            format!("standby {at}: the copy of slot \"{slot}\" is invalidated ({reason}): a failover to it costs a resync"),
            "check the standby's log; the slot sync worker recreates the copy once the cause (usually hot_standby_feedback, or WAL removed) is gone",
        ),
        Some((synced, temporary, None)) => CheckResult::warning(
            "standby_slot_synced",
            format!("standby {at}: slot \"{slot}\" is there but synced = {synced}, temporary = {temporary}: not yet safe to fail over to"),
            "wait for the slot sync worker (it makes the copy persistent once the standby has replayed past the slot's start); a slot of the same name made by hand on the standby blocks it: drop that",
        ),
        None => CheckResult::warning(
            "standby_slot_synced",
            format!("standby {at}: has no copy of slot \"{slot}\": a failover to it loses the slot"),
            "the standby copies failover slots once sync_replication_slots, hot_standby_feedback, primary_slot_name and dbname in primary_conninfo are set; or the slot is not created yet (pgch run creates it)",
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_result::Outcome;

    fn ready_standby() -> StandbyView {
        StandbyView {
            in_recovery: true,
            sync_replication_slots: "on".into(),
            hot_standby_feedback: "on".into(),
            primary_slot_name: "standby1".into(),
            primary_conninfo: Some("host=10.0.0.1 port=5432 user=repl dbname=postgres".into()),
            slot: Some((true, false, None)),
        }
    }

    #[test]
    fn a_ready_standby_passes_every_check_and_each_missing_piece_is_named() {
        let ok = judge_standby(&ready_standby(), "s:5432", "pgch");
        assert!(ok.iter().all(|c| c.outcome == Outcome::Ok), "{ok:?}");

        let bare = StandbyView {
            in_recovery: true,
            sync_replication_slots: "off".into(),
            hot_standby_feedback: "off".into(),
            primary_slot_name: String::new(),
            primary_conninfo: Some("host=10.0.0.1 user=repl".into()),
            slot: None,
        };
        let warned: Vec<&str> = judge_standby(&bare, "s:5432", "pgch")
            .iter()
            .filter(|c| c.outcome == Outcome::Warning)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            warned,
            [
                "standby_sync_replication_slots",
                "standby_hot_standby_feedback",
                "standby_primary_slot_name",
                "standby_primary_conninfo",
                "standby_slot_synced"
            ]
        );
    }

    #[test]
    fn a_slot_copy_not_yet_persistent_or_invalidated_is_not_ready() {
        for slot in [
            Some((false, true, None)),
            Some((true, false, Some("rows_removed".to_string()))),
        ] {
            let view = StandbyView {
                slot,
                ..ready_standby()
            };
            let synced = judge_standby(&view, "s", "pgch")
                .into_iter()
                .find(|c| c.name == "standby_slot_synced")
                .map(|c| c.outcome);
            assert_eq!(synced, Some(Outcome::Warning));
        }
    }

    #[test]
    fn the_primary_must_hold_decoding_for_its_standbys_physical_slots() {
        let view = PrimaryView {
            slot_failover: Some(true),
            physical_slots: vec![("standby1".into(), true)],
            synchronized_standby_slots: String::new(),
        };
        let out = judge_primary(&view, "pgch", true, true);
        assert_eq!(out[0].outcome, Outcome::Ok);
        assert_eq!(out[1].outcome, Outcome::Warning);
        assert!(out[1].fix.as_deref().unwrap_or("").contains("'standby1'"));

        let typo = PrimaryView {
            synchronized_standby_slots: "standby_1".into(),
            ..view.clone()
        };
        assert_eq!(
            judge_primary(&typo, "pgch", true, true)[1].outcome,
            Outcome::Warning
        );
        let good = PrimaryView {
            synchronized_standby_slots: "standby1".into(),
            ..view
        };
        assert_eq!(
            judge_primary(&good, "pgch", true, true)[1].outcome,
            Outcome::Ok
        );
    }

    #[test]
    fn a_slot_without_failover_is_reported_with_the_fix() {
        let view = PrimaryView {
            slot_failover: Some(false),
            ..PrimaryView::default()
        };
        let out = judge_primary(&view, "pgch", true, false);
        assert_eq!(out[0].outcome, Outcome::Warning);
        assert!(out[0]
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("ALTER_REPLICATION_SLOT pgch (FAILOVER true)"));
        assert_eq!(out[1].outcome, Outcome::NotApplicable, "a single server");
    }

    #[test]
    fn dbname_is_found_in_keyword_and_uri_conninfo() {
        assert!(conninfo_has_dbname("host=a dbname=postgres"));
        assert!(conninfo_has_dbname("host=a dbname='app'"));
        assert!(!conninfo_has_dbname("host=a user=repl"));
        assert!(!conninfo_has_dbname("host=a dbname="));
        assert!(conninfo_has_dbname("postgresql://repl@a:5432/app"));
        assert!(!conninfo_has_dbname("postgresql://repl@a:5432"));
    }
}
