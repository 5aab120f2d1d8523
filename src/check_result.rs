//! The result of one preflight check, shared by the checks (`source::preflight`,
//! `sink::preflight`, which live next to the servers they talk to) and the report that
//! runs and renders them (`check`): a module of its own, so neither depends on the other
//! through it.

use serde::Serialize;

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Works, but something will hurt later; does not fail `pgch check`.
    Warning,
    /// pgch cannot work until this is fixed.
    Failed,
    /// Does not apply here (a Postgres version without the setting, a mode without it).
    NotApplicable,
}

impl Outcome {
    /// The word the text report prints.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warning => "warning",
            Outcome::Failed => "FAILED",
            Outcome::NotApplicable => "n/a",
        }
    }
}

/// One line of the report: the user reads `observed` and acts on `fix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// A stable name, also used by scripts reading `--format json`.
    pub name: &'static str,
    pub outcome: Outcome,
    pub observed: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckResult {
    /// A passed check.
    pub fn ok(name: &'static str, observed: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Ok,
            observed: observed.into(),
            fix: None,
        }
    }
    /// A check that passed with a caveat the user should act on.
    pub fn warning(
        name: &'static str,
        observed: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name,
            outcome: Outcome::Warning,
            observed: observed.into(),
            fix: Some(fix.into()),
        }
    }
    /// A blocking problem, with the fix.
    pub fn failed(name: &'static str, observed: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Failed,
            observed: observed.into(),
            fix: Some(fix.into()),
        }
    }
    /// A check that does not apply.
    pub fn not_applicable(name: &'static str, observed: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::NotApplicable,
            observed: observed.into(),
            fix: None,
        }
    }
}
