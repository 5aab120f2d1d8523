//! `pgch check`: every preflight check of the source and the destination, each reported
//! as ok / warning / failed / n/a with what was observed and the fix, as a readable list
//! or JSON. The checks themselves live next to the servers they talk to
//! (`source::preflight`, `sink::preflight`); this module runs them and renders them.

use serde::Serialize;

use crate::config::Settings;

pub use crate::check_result::{CheckResult, Outcome};

/// All results of one `pgch check`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Whether any check failed (the exit code is 1 then).
    pub fn has_failures(&self) -> bool {
        self.checks.iter().any(|c| c.outcome == Outcome::Failed)
    }

    /// The results named `name` (a check may report several lines, e.g. one per table).
    pub fn named(&self, name: &str) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| c.name == name).collect()
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    /// The human-readable report.
    pub fn render_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<8} {:<width$}  {}\n",
                c.outcome.label(),
                c.name,
                c.observed
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("{:<8} {:<width$}  fix: {}\n", "", "", fix));
            }
        }
        out.push_str(&format!(
            "\n{} ok, {} warning(s), {} failed, {} n/a\n",
            self.count(Outcome::Ok),
            self.count(Outcome::Warning),
            self.count(Outcome::Failed),
            self.count(Outcome::NotApplicable)
        ));
        out
    }

    /// The machine-readable report.
    pub fn render_json(&self) -> String {
        let value = serde_json::json!({
            "checks": self.checks,
            "summary": {
                "ok": self.count(Outcome::Ok),
                "warning": self.count(Outcome::Warning),
                "failed": self.count(Outcome::Failed),
                "not_applicable": self.count(Outcome::NotApplicable),
            },
            "passed": !self.has_failures(),
        });
        serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The checks whose failure `pgch run` and `pgch resync` refuse to start with: setup
/// mistakes no retry fixes (a typo'd publication, a missing grant, `wal_level`), found
/// before a slot, a database or a table is created — so a wrong start leaves nothing
/// behind. Reachability (`source_connection`, `clickhouse_connection`, …) is not among
/// them: a server still starting is a wait, not a refusal.
pub const FATAL_AT_START: &[&str] = &[
    "server_version",
    "wal_level",
    "primary",
    "role_replication",
    "publication",
    "publication_tables",
    "select_privilege",
    "replica_identity",
    "partitioned_tables",
    "destination_names",
    "clickhouse_version",
    "clickhouse_database",
];

impl Report {
    /// The failed checks that stop `pgch run` and `pgch resync` before they change
    /// anything ([`FATAL_AT_START`]).
    pub fn start_blockers(&self) -> Vec<&CheckResult> {
        self.checks
            .iter()
            .filter(|c| c.outcome == Outcome::Failed && FATAL_AT_START.contains(&c.name))
            .chain(self.replication_refused())
            .collect()
    }

    /// A walsender that refuses a reachable server's user (a pooler port, a missing
    /// `pg_hba` line): no retry helps. When the server itself is unreachable the
    /// replication check fails too, but that is a wait.
    fn replication_refused(&self) -> Option<&CheckResult> {
        let reachable = self
            .checks
            .iter()
            .any(|c| c.name == "source_connection" && c.outcome != Outcome::Failed);
        self.checks
            .iter()
            .find(|c| c.name == "replication_connection" && c.outcome == Outcome::Failed)
            .filter(|_| reachable)
    }
}

/// What `pgch run` and `pgch resync` say when the setup is wrong: each failed check
/// with its fix.
pub fn render_blockers(blockers: &[&CheckResult]) -> String {
    let mut out = format!(
        "the setup is not ready ({} problem(s)); nothing was created — fix and start again:\n",
        blockers.len()
    );
    for c in blockers {
        out.push_str(&format!("  {}: {}\n", c.name, c.observed));
        if let Some(fix) = c.fix.as_deref().filter(|f| !f.is_empty()) {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    out
}

/// Runs every check of the source and the destination, concurrently.
pub async fn run(settings: &Settings) -> Report {
    let (mut source, destination) = tokio::join!(
        crate::source::preflight::run(
            &settings.source,
            settings.mode,
            &settings.destination.table_names
        ),
        crate::sink::preflight::run(&settings.destination),
    );
    source.extend(destination);
    source.extend(crate::snapshot::layout_check::layout_checks(settings).await);
    Report { checks: source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_report_shows_fix_and_summary() {
        let report = Report {
            checks: vec![
                CheckResult::ok("wal_level", "logical"),
                CheckResult::failed(
                    "role_replication",
                    "no REPLICATION",
                    "ALTER USER u WITH REPLICATION;",
                ),
            ],
        };
        let text = report.render_text();
        assert!(
            text.contains("FAILED   role_replication  no REPLICATION"),
            "{text}"
        );
        assert!(
            text.contains("fix: ALTER USER u WITH REPLICATION;"),
            "{text}"
        );
        assert!(text.contains("1 ok, 0 warning(s), 1 failed"), "{text}");
        assert!(report.has_failures());
        let json: serde_json::Value = serde_json::from_str(&report.render_json()).unwrap();
        assert_eq!(json["passed"], false);
        assert_eq!(json["checks"][1]["outcome"], "failed");
        assert_eq!(json["checks"][0].get("fix"), None);
    }
}
