//! The ordered ledger of commits: which LSN is safe to acknowledge to the slot.
//!
//! ```text
//!   stream order:   Begin … Commit(end=A)   Begin … Commit(end=B)   keepalive(wal_end=W)
//!   ledger:         [A: durable?]           [B: durable?]
//!   safe LSN:       end of the longest durable prefix; W once the ledger is empty and
//!                   no transaction is open
//! ```
//!
//! Why this is safe: Postgres resends everything after the confirmed position on
//! reconnect, and a commit's `end_lsn` covers its whole transaction, so confirming A
//! only after every change of A (and of everything before A) is durably in ClickHouse
//! loses nothing. A keepalive's `wal_end` says no more changes for this publication
//! exist before W; confirming it while a transaction is open or a commit is still in
//! flight would skip them, so it is taken only when neither is the case. That is what
//! keeps an idle (or filtered) publication from holding WAL forever.

use std::collections::VecDeque;

use crate::lsn::{Lsn, MonotonicLsn};

/// A commit's place in the ledger, returned by [`Ledger::commit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommitTicket(u64);

/// Commits in stream order, each durable or not yet.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: VecDeque<(u64, Lsn, bool)>,
    next_ticket: u64,
    in_transaction: bool,
    safe: MonotonicLsn,
}

impl Ledger {
    /// Starts empty at the slot's confirmed position.
    pub fn new(confirmed: Lsn) -> Self {
        Ledger {
            safe: MonotonicLsn::new(confirmed),
            ..Default::default()
        }
    }

    /// A transaction began: keepalives must not be acknowledged until it commits.
    pub fn begin(&mut self) {
        self.in_transaction = true;
    }

    /// A transaction committed at `end_lsn`; it becomes acknowledgeable once durable.
    pub fn commit(&mut self, end_lsn: Lsn) -> CommitTicket {
        self.in_transaction = false;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.entries.push_back((ticket, end_lsn, false));
        CommitTicket(ticket)
    }

    /// Every change of the ticket's transaction is durably stored downstream.
    pub fn mark_durable(&mut self, ticket: CommitTicket) {
        if let Some(entry) = self.entries.iter_mut().find(|(t, _, _)| *t == ticket.0) {
            entry.2 = true;
        }
        while let Some(&(_, lsn, true)) = self.entries.front() {
            self.safe.advance(lsn);
            self.entries.pop_front();
        }
    }

    /// A keepalive: its `wal_end` is safe when nothing is open or in flight.
    pub fn keepalive(&mut self, wal_end: Lsn) {
        if !self.in_transaction && self.entries.is_empty() {
            self.safe.advance(wal_end);
        }
    }

    /// Drops commits not yet durable and any open transaction, after a lost session:
    /// the server sends them again from the confirmed position.
    pub fn discard_in_flight(&mut self) {
        self.entries.clear();
        self.in_transaction = false;
    }

    /// The LSN that may be confirmed to the slot now.
    pub fn safe_lsn(&self) -> Lsn {
        self.safe.get()
    }

    /// Whether a transaction has begun and not committed.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Commits received but not yet durable.
    pub fn in_flight(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_durable_prefix_is_safe() {
        let mut l = Ledger::new(Lsn::new(5));
        l.begin();
        let a = l.commit(Lsn::new(10));
        l.begin();
        let b = l.commit(Lsn::new(20));
        l.mark_durable(b);
        assert_eq!(l.safe_lsn(), Lsn::new(5), "B is durable but A is not");
        l.mark_durable(a);
        assert_eq!(l.safe_lsn(), Lsn::new(20));
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn keepalive_counts_only_when_idle() {
        let mut l = Ledger::new(Lsn::ZERO);
        l.keepalive(Lsn::new(100));
        assert_eq!(l.safe_lsn(), Lsn::new(100));
        l.begin();
        l.keepalive(Lsn::new(200));
        assert_eq!(l.safe_lsn(), Lsn::new(100), "open transaction");
        let t = l.commit(Lsn::new(150));
        l.keepalive(Lsn::new(300));
        assert_eq!(l.safe_lsn(), Lsn::new(100), "commit in flight");
        l.mark_durable(t);
        l.keepalive(Lsn::new(300));
        assert_eq!(l.safe_lsn(), Lsn::new(300));
        l.keepalive(Lsn::new(250));
        assert_eq!(l.safe_lsn(), Lsn::new(300), "never goes back");
    }
}
