//! What the destination server can hold, read once at start: the type map depends on it
//! (the date range of `Date32`/`DateTime64`, whether `time` can be a `Time64`), and the
//! snapshot and the stream share the answer because both encode through the same plan.
//!
//! The version decides the date range: ClickHouse 26.7 widened `DateTime64` to
//! 0000..9999 (ClickHouse#107907) and the next release, 26.8, `Date32` (ClickHouse#111534);
//! before that both held 1900..2299. `Time64` needs 25.6 or newer *and* the session's
//! `enable_time_time64_type` on (off by default before it left the experimental stage),
//! read from `system.settings` rather than assumed from the version.

use super::client::{self, SinkError};
use super::rowbinary::DateRange;
use super::types::MappingOptions;
use crate::config::DestinationSettings;

/// The first release whose `Date32` and `DateTime64` both hold 0001-01-01..9999-12-31.
pub const WIDE_DATES_SINCE: (u32, u32) = (26, 8);
/// The first release with the `Time64` type.
pub const TIME64_SINCE: (u32, u32) = (25, 6);
/// The first release with the (no longer experimental) `JSON` type.
pub const JSON_SINCE: (u32, u32) = (25, 3);

/// What the server answered, and the mapping it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCapabilities {
    /// `version()` as the server reports it.
    pub version: String,
    /// `Date32`/`DateTime64` hold years 1..9999 (else 1900..2299).
    pub wide_dates: bool,
    /// `time` can be stored as `Time64(6)`.
    pub time64: bool,
    /// The `JSON` type exists, so a `column_types` override may ask for it.
    pub json: bool,
}

impl ServerCapabilities {
    /// Judges a server from its `version()` and its `enable_time_time64_type` value
    /// (`None`: the setting does not exist).
    pub fn judge(version: &str, time64_setting: Option<&str>) -> ServerCapabilities {
        let parsed = parse_version(version);
        let at_least = |since: (u32, u32)| parsed.is_some_and(|v| v >= since);
        let setting_on = matches!(time64_setting.map(str::trim), Some("1" | "true"));
        ServerCapabilities {
            version: version.to_string(),
            wide_dates: at_least(WIDE_DATES_SINCE),
            time64: at_least(TIME64_SINCE) && setting_on,
            json: at_least(JSON_SINCE),
        }
    }

    /// The servers pgch knew before it asked: the narrow range, `time` as text.
    pub fn conservative() -> ServerCapabilities {
        ServerCapabilities::judge("", None)
    }

    /// The date range values are clamped to.
    pub fn date_range(&self) -> DateRange {
        if self.wide_dates {
            DateRange::YEARS_1_TO_9999
        } else {
            DateRange::DOCUMENTED
        }
    }

    /// The type-map options this server allows.
    pub fn mapping(&self) -> MappingOptions {
        MappingOptions {
            server_has_time64: self.time64,
            server_has_json: self.json,
            date_range: self.date_range(),
            ..MappingOptions::default()
        }
    }
}

/// `(major, minor)` of a `version()` string such as `26.9.2.1`.
pub fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => Some((major, minor)),
        _ => None,
    }
}

/// Asks the server: `version()`, then the `enable_time_time64_type` setting of this
/// session (a server without the setting has no `Time64`).
pub async fn detect(settings: &DestinationSettings) -> Result<ServerCapabilities, SinkError> {
    let ch = client::client(settings, false);
    let version = client::query_text(&ch, settings, "SELECT version()").await?;
    let setting = client::query_text(
        &ch,
        settings,
        "SELECT value FROM system.settings WHERE name = 'enable_time_time64_type'",
    )
    .await?;
    let setting = setting.lines().next().map(str::to_string);
    let caps = ServerCapabilities::judge(version.trim(), setting.as_deref());
    tracing::info!(
        version = %caps.version,
        date_range = %caps.date_range(),
        time = if caps.time64 { "Time64(6)" } else { "String" },
        "ClickHouse holds"
    );
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_decides_the_date_range() {
        assert!(ServerCapabilities::judge("26.9.2.1", None).wide_dates);
        assert!(ServerCapabilities::judge("26.8.1.1", None).wide_dates);
        assert!(!ServerCapabilities::judge("26.7.3.1", None).wide_dates);
        assert!(!ServerCapabilities::judge("25.3.1.1", None).wide_dates);
        assert!(!ServerCapabilities::judge("18.16.1", None).wide_dates);
        assert!(!ServerCapabilities::judge("garbage", None).wide_dates);
        assert_eq!(
            ServerCapabilities::judge("26.9.2.1", None).date_range(),
            DateRange::YEARS_1_TO_9999
        );
        assert_eq!(
            ServerCapabilities::conservative().date_range(),
            DateRange::DOCUMENTED
        );
    }

    #[test]
    fn time64_needs_the_release_and_the_setting() {
        assert!(ServerCapabilities::judge("26.9.2.1", Some("1")).time64);
        assert!(ServerCapabilities::judge("25.6.1.1", Some("true")).time64);
        assert!(!ServerCapabilities::judge("26.9.2.1", Some("0")).time64);
        assert!(!ServerCapabilities::judge("26.9.2.1", None).time64);
        assert!(!ServerCapabilities::judge("25.5.1.1", Some("1")).time64);
    }

    #[test]
    fn the_mapping_follows_the_server() {
        let m = ServerCapabilities::judge("26.9.2.1", Some("1")).mapping();
        assert!(m.server_has_time64);
        assert_eq!(m.date_range, DateRange::YEARS_1_TO_9999);
        assert!(m.server_has_json);
        let old = ServerCapabilities::judge("25.3.1.1", Some("1")).mapping();
        assert_eq!(
            old,
            MappingOptions {
                server_has_json: true,
                ..MappingOptions::default()
            }
        );
        let older = ServerCapabilities::judge("25.2.1.1", Some("1")).mapping();
        assert_eq!(older, MappingOptions::default());
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("26.9.2.1\n"), Some((26, 9)));
        assert_eq!(parse_version("23.8"), Some((23, 8)));
        assert_eq!(parse_version("x.1"), None);
    }
}
