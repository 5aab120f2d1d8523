//! What was stored on purpose not exactly as Postgres holds it, counted for a metric.

/// Why a value was not stored exactly as Postgres holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClampKind {
    /// `-infinity` date or timestamp, stored as the range's first instant.
    MinusInfinity,
    /// `infinity`, stored as the range's last instant.
    Infinity,
    /// A BC date or timestamp, stored as the range's first instant.
    Bc,
    /// An AD date or timestamp before the range (e.g. 1850 with the documented range).
    BeforeRange,
    /// A date or timestamp after the range.
    AfterRange,
    /// A NULL array or hstore, stored empty.
    NullAsEmpty,
    /// An array whose lower bounds were not 1, stored with its elements only.
    ArrayBoundsDropped,
}

impl ClampKind {
    pub const ALL: [ClampKind; 7] = [
        ClampKind::MinusInfinity,
        ClampKind::Infinity,
        ClampKind::Bc,
        ClampKind::BeforeRange,
        ClampKind::AfterRange,
        ClampKind::NullAsEmpty,
        ClampKind::ArrayBoundsDropped,
    ];

    /// A metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClampKind::MinusInfinity => "minus_infinity",
            ClampKind::Infinity => "infinity",
            ClampKind::Bc => "bc",
            ClampKind::BeforeRange => "before_range",
            ClampKind::AfterRange => "after_range",
            ClampKind::NullAsEmpty => "null_as_empty",
            ClampKind::ArrayBoundsDropped => "array_bounds_dropped",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How many values were clamped, by kind. Compare [`ClampCounts::total`] before and
/// after a column's value to log once per column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClampCounts {
    counts: [u64; 7],
}

impl ClampCounts {
    pub fn get(&self, kind: ClampKind) -> u64 {
        self.counts.get(kind.index()).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// Every kind with its count.
    pub fn iter(&self) -> impl Iterator<Item = (ClampKind, u64)> + '_ {
        ClampKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &ClampCounts) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a = a.saturating_add(b);
        }
    }

    /// `n` values of one kind: a count built elsewhere than in the encoder.
    pub fn of(kind: ClampKind, n: u64) -> ClampCounts {
        let mut counts = ClampCounts::default();
        if let Some(c) = counts.counts.get_mut(kind.index()) {
            *c = n;
        }
        counts
    }

    pub(super) fn add(&mut self, kind: ClampKind) {
        if let Some(c) = self.counts.get_mut(kind.index()) {
            *c = c.saturating_add(1);
        }
    }
}
