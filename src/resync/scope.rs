//! What a resync covers, and how an unfinished one is continued. Pure: no I/O.
//!
//! The scope is recorded in `_pgch_state` (key `resync`) before anything changes, so a
//! rerun after a crash knows what the interrupted run promised to finish. A rerun does
//! at least that: an unfinished full resync stays full, and tables named again are
//! added to an unfinished per-table one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::snapshot::plan::TablePlan;

/// The tables a resync copies again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every published table, from a new slot (lost slot, failover).
    All,
    /// These tables (`schema.table` as in Postgres), keeping the slot.
    Tables(BTreeSet<String>),
}

/// Why a scope cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("`--table {table}` is not published by publication \"{publication}\" (it publishes: {published}); name tables as schema.table")]
    UnknownTable {
        table: String,
        publication: String,
        published: String,
    },
    #[error("the unfinished resync recorded in _pgch_state is unreadable ({0}); run `pgch resync` without --table to resync everything")]
    Unreadable(String),
}

impl Scope {
    /// The scope of `pgch resync [--table T]…`: no table means every table.
    pub fn requested(tables: &[String]) -> Scope {
        if tables.is_empty() {
            Scope::All
        } else {
            Scope::Tables(tables.iter().cloned().collect())
        }
    }

    /// What a run must do, given the scope of an unfinished earlier run.
    pub fn merge(previous: Option<Scope>, requested: Scope) -> Scope {
        match (previous, requested) {
            (None, s) => s,
            (Some(Scope::All), _) | (_, Scope::All) => Scope::All,
            (Some(Scope::Tables(mut a)), Scope::Tables(b)) => {
                a.extend(b);
                Scope::Tables(a)
            }
        }
    }

    /// The recorded form (JSON).
    pub fn to_record(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "\"all\"".into())
    }

    /// Reads the recorded form; an unreadable record is treated as an error, never as
    /// "nothing to do".
    pub fn from_record(text: &str) -> Result<Scope, ScopeError> {
        serde_json::from_str(text).map_err(|e| ScopeError::Unreadable(e.to_string()))
    }

    /// The plans this scope covers, in plan order; every named table must be published
    /// (by its Postgres name `schema.table`, or by its ClickHouse table name).
    pub fn select<'p>(
        &self,
        plans: &'p [TablePlan],
        publication: &str,
    ) -> Result<Vec<&'p TablePlan>, ScopeError> {
        let Scope::Tables(names) = self else {
            return Ok(plans.iter().collect());
        };
        for name in names {
            if !plans.iter().any(|p| matches(p, name)) {
                return Err(ScopeError::UnknownTable {
                    table: name.clone(),
                    publication: publication.to_string(),
                    published: plans
                        .iter()
                        .map(|p| p.source.display())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(plans
            .iter()
            .filter(|p| names.iter().any(|n| matches(p, n)))
            .collect())
    }
}

fn matches(plan: &TablePlan, name: &str) -> bool {
    plan.source.display() == name || plan.dest == name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(names: &[&str]) -> Scope {
        Scope::Tables(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn an_unfinished_resync_is_never_narrowed() {
        assert_eq!(Scope::merge(None, tables(&["a.b"])), tables(&["a.b"]));
        assert_eq!(Scope::merge(Some(Scope::All), tables(&["a.b"])), Scope::All);
        assert_eq!(Scope::merge(Some(tables(&["a.b"])), Scope::All), Scope::All);
        assert_eq!(
            Scope::merge(Some(tables(&["a.b"])), tables(&["c.d"])),
            tables(&["a.b", "c.d"])
        );
    }

    #[test]
    fn the_record_round_trips_and_garbage_is_an_error() {
        for s in [Scope::All, tables(&["public.orders", "odd \"name\".t"])] {
            assert_eq!(Scope::from_record(&s.to_record()).unwrap(), s);
        }
        assert!(Scope::from_record("").is_err());
        assert_eq!(Scope::requested(&[]), Scope::All);
    }
}
