//! Which transactions a copy's snapshot saw, so the stream can skip exactly those for a
//! keyless table (a multiset: see [`crate::pipeline::batch`]). For a keyed table a
//! change the copy already holds is harmless — it arrives again with a higher version
//! and replaces the row — but in a multiset every change adds or removes a copy of a
//! row, so a change both in the copy and in the stream would be counted twice.
//!
//! A transaction is in the copy when it is visible in the copy's snapshot
//! (`pg_current_snapshot()`: committed before `xmin`, or before `xmax` and not among
//! the ones running). Every such transaction committed before the WAL position read
//! right after the snapshot was taken (`through`), so past it the filter is off — which
//! also keeps the 32-bit xids of pgoutput's Begin messages unambiguous.

use std::fmt;
use std::str::FromStr;

use crate::lsn::Lsn;

/// A copy snapshot, as far as the stream needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyVisibility {
    pub xmin: u64,
    pub xmax: u64,
    /// Transactions running when the snapshot was taken (`xip`), sorted.
    pub running: Vec<u64>,
    /// The WAL insert position read after the snapshot was taken.
    pub through: Lsn,
}

/// Why a recorded or reported snapshot could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot read the copy snapshot \"{0}\" (expected xmin:xmax:xip,…@lsn)")]
pub struct VisibilityParseError(pub String);

impl CopyVisibility {
    /// From `pg_current_snapshot()::text` (`xmin:xmax:xip,…`) and the WAL position read
    /// after it.
    pub fn from_snapshot_text(text: &str, through: Lsn) -> Result<Self, VisibilityParseError> {
        let bad = || VisibilityParseError(text.to_string());
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let xmax = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let mut running = Vec::new();
        if let Some(list) = parts.next().filter(|l| !l.is_empty()) {
            for x in list.split(',') {
                running.push(x.parse().map_err(|_| bad())?);
            }
        }
        running.sort_unstable();
        Ok(CopyVisibility {
            xmin,
            xmax,
            running,
            through,
        })
    }

    /// Whether the transaction `xid` (pgoutput's 32-bit xid) committing at `commit_lsn`
    /// is in the copy.
    pub fn saw(&self, xid: u32, commit_lsn: Lsn) -> bool {
        if commit_lsn > self.through {
            return false;
        }
        let full = self.widen(xid);
        full < self.xmin || (full < self.xmax && self.running.binary_search(&full).is_err())
    }

    /// The 64-bit xid nearest to `xmax` whose low 32 bits are `xid`: a transaction the
    /// stream meets before `through` is within 2^31 of the snapshot.
    fn widen(&self, xid: u32) -> u64 {
        const EPOCH: i128 = 1 << 32;
        let xmax = i128::from(self.xmax);
        let mut full = (xmax & !(EPOCH - 1)) | i128::from(xid);
        if full - xmax > EPOCH / 2 {
            full -= EPOCH;
        } else if xmax - full > EPOCH / 2 {
            full += EPOCH;
        }
        u64::try_from(full).unwrap_or(0)
    }
}

impl fmt::Display for CopyVisibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let running: Vec<String> = self.running.iter().map(u64::to_string).collect();
        write!(
            f,
            "{}:{}:{}@{}",
            self.xmin,
            self.xmax,
            running.join(","),
            self.through
        )
    }
}

impl FromStr for CopyVisibility {
    type Err = VisibilityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (snapshot, lsn) = s
            .rsplit_once('@')
            .ok_or_else(|| VisibilityParseError(s.to_string()))?;
        let through = lsn
            .parse()
            .map_err(|_| VisibilityParseError(s.to_string()))?;
        Self::from_snapshot_text(snapshot, through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(text: &str) -> CopyVisibility {
        CopyVisibility::from_snapshot_text(text, Lsn::new(1000)).unwrap()
    }

    #[test]
    fn a_transaction_is_in_the_copy_when_the_snapshot_sees_it() {
        let s = snap("100:110:102,105");
        assert!(s.saw(99, Lsn::new(500)), "before xmin");
        assert!(s.saw(101, Lsn::new(500)), "between, not running");
        assert!(!s.saw(102, Lsn::new(500)), "running at the snapshot");
        assert!(!s.saw(110, Lsn::new(500)), "at xmax");
        assert!(!s.saw(200, Lsn::new(500)), "after xmax");
        assert!(
            !s.saw(99, Lsn::new(1001)),
            "committed after the position read"
        );
    }

    #[test]
    fn xids_wrap_around_the_epoch() {
        let epoch = 1u64 << 32;
        let s = snap(&format!("{}:{}:", epoch - 5, epoch + 5));
        assert!(s.saw(u32::MAX - 10, Lsn::new(1)), "old epoch, before xmin");
        assert!(s.saw(2, Lsn::new(1)), "new epoch, before xmax");
        assert!(!s.saw(7, Lsn::new(1)), "new epoch, after xmax");
    }

    #[test]
    fn recorded_snapshots_read_back() {
        let s = CopyVisibility::from_snapshot_text("7:9:8", Lsn::new(0x1_0000_00FF)).unwrap();
        assert_eq!(s.to_string(), "7:9:8@1/FF");
        assert_eq!(s.to_string().parse::<CopyVisibility>(), Ok(s));
        let empty: CopyVisibility = "7:7:@0/10".parse().unwrap();
        assert!(empty.running.is_empty());
        assert!("7:x:".parse::<CopyVisibility>().is_err());
        assert!("7:9:".parse::<CopyVisibility>().is_err(), "no position");
    }
}
