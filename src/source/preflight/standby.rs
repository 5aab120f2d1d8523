//! Decoding from a hot standby (Postgres 16+, `source.standby_decoding`): the slot
//! lives on the standby and the copy reads there, so the primary does no work for pgch.
//! The standby must keep the catalog rows the slot needs (`hot_standby_feedback = on`,
//! else the primary's vacuum removes them and the standby invalidates the slot), and
//! the primary must write logical WAL (`wal_level = logical` there, not only on the
//! standby). A promoted standby is a primary like any other: pgch carries on.

use tokio_postgres::Client;

use super::super::connect;
use super::super::row::{column, ReadError};
use crate::check_result::CheckResult;
use crate::config::SourceSettings;

/// The first Postgres that decodes on a standby.
pub const STANDBY_DECODING_VERSION: u32 = 160000;

/// Whether the server pgch is connected to is acceptable as the source.
pub fn judge_source_server(in_recovery: bool, standby_decoding: bool, version: u32) -> CheckResult {
    match (in_recovery, standby_decoding) {
        (false, false) => CheckResult::ok("primary", "connected to the primary"),
        (false, true) => CheckResult::ok(
            "primary",
            "connected to a primary (standby decoding is on: a standby or a promoted standby are both accepted)",
        ),
        (true, false) => CheckResult::failed(
            "primary",
            "connected to a standby (pg_is_in_recovery() is true)",
            "point pgch at the primary, or on Postgres 16+ set source.standby_decoding = true to decode from this standby",
        ),
        (true, true) if version < STANDBY_DECODING_VERSION => CheckResult::failed(
            "primary",
            format!(
                "connected to a standby of Postgres {}: decoding on a standby came in Postgres 16",
                version / 10000
            ),
            "point pgch at the primary (or upgrade to Postgres 16+ to decode from a standby)",
        ),
        (true, true) => CheckResult::ok(
            "primary",
            "standby mode: connected to a hot standby; the slot and the copy live here, the primary does no work for pgch",
        ),
    }
}

/// Judges the standby's `hot_standby_feedback`.
pub fn judge_feedback(setting: &str) -> CheckResult {
    if setting == "on" {
        CheckResult::ok("standby_hot_standby_feedback", "on")
    } else {
        CheckResult::failed(
            "standby_hot_standby_feedback",
            format!("hot_standby_feedback is {setting} on this standby: the primary may vacuum away catalog rows the slot needs, and the standby then invalidates the slot"),
            "ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf(); on the standby (on PlanetScale: Cluster configuration → Parameters)",
        )
    }
}

/// Judges the primary's `wal_level`, as read through `source.primary_url`.
pub fn judge_primary_wal_level(level: Result<String, String>) -> CheckResult {
    const NAME: &str = "primary_wal_level";
    match level {
        Ok(level) if level == "logical" => CheckResult::ok(NAME, "logical on the primary"),
        Ok(level) => CheckResult::failed(
            NAME,
            format!("wal_level is {level} on the primary: a standby decodes only WAL the primary wrote at logical"),
            "ALTER SYSTEM SET wal_level = logical; on the primary, then restart it (on PlanetScale: Cluster configuration → Parameters → Write-ahead log)",
        ),
        Err(e) => CheckResult::warning(
            NAME,
            format!("cannot read the primary's wal_level: {e}"),
            "set source.primary_url to the primary (used only for this check and to speed up slot creation); if its wal_level is not logical, creating the slot fails",
        ),
    }
}

/// The standby-mode checks, for a standby at `client` (nothing otherwise).
pub async fn checks(
    client: &Client,
    src: &SourceSettings,
    in_recovery: bool,
    version: u32,
) -> Result<Vec<CheckResult>, ReadError> {
    if !(in_recovery && src.standby_decoding && version >= STANDBY_DECODING_VERSION) {
        return Ok(Vec::new());
    }
    let feedback: String = column(
        &client
            .query_one("SELECT current_setting('hot_standby_feedback')", &[])
            .await?,
        0,
        "reading hot_standby_feedback",
    )?;
    let level = match &src.primary {
        None => Err("source.primary_url is not set".to_string()),
        Some(ep) => match connect::connect(ep).await {
            Err(e) => Err(e.message),
            Ok(primary) => match primary
                .query_one("SELECT current_setting('wal_level')", &[])
                .await
            {
                Ok(row) => column::<String>(&row, 0, "reading the primary's wal_level")
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        },
    };
    Ok(vec![
        judge_feedback(&feedback),
        judge_primary_wal_level(level),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_result::Outcome;

    #[test]
    fn a_standby_is_refused_unless_standby_decoding_is_on_and_the_server_is_16_or_newer() {
        let cases = [
            (false, false, 150000, Outcome::Ok),
            (true, false, 170000, Outcome::Failed),
            (true, true, 150000, Outcome::Failed),
            (true, true, 160000, Outcome::Ok),
            (false, true, 160000, Outcome::Ok),
        ];
        for (in_recovery, on, version, want) in cases {
            let r = judge_source_server(in_recovery, on, version);
            assert_eq!(r.outcome, want, "{in_recovery} {on} {version}: {r:?}");
        }
        let refused = judge_source_server(true, false, 170000);
        assert!(format!("{refused:?}").contains("source.standby_decoding = true"));
    }

    #[test]
    fn feedback_off_or_a_primary_not_at_logical_fails_with_the_fix() {
        assert_eq!(judge_feedback("on").outcome, Outcome::Ok);
        let off = judge_feedback("off");
        assert_eq!(off.outcome, Outcome::Failed);
        assert!(format!("{off:?}").contains("hot_standby_feedback = on"));
        assert_eq!(
            judge_primary_wal_level(Ok("logical".into())).outcome,
            Outcome::Ok
        );
        assert_eq!(
            judge_primary_wal_level(Ok("replica".into())).outcome,
            Outcome::Failed
        );
        let unknown = judge_primary_wal_level(Err("source.primary_url is not set".into()));
        assert_eq!(unknown.outcome, Outcome::Warning);
    }
}
