//! When a batch goes to ClickHouse: on rows, on bytes, or on age. The decision is a
//! small pure struct; the task that owns the timer and the I/O asks it (the clickhouse
//! crate's `Inserter`/`Ticks` idea), so it is tested with no clock and no network.

use std::time::{Duration, Instant};

pub use crate::config::FlushLimits;

/// Why a batch is flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushReason {
    Rows,
    Bytes,
    Age,
}

/// The fill of one batch since its first row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchFill {
    pub rows: u64,
    pub bytes: u64,
    first_row_at: Option<Instant>,
}

impl BatchFill {
    /// Counts a row of `bytes` added at `now`.
    pub fn add(&mut self, bytes: u64, now: Instant) {
        self.rows += 1;
        self.bytes += bytes;
        self.first_row_at.get_or_insert(now);
    }

    /// Empties the fill after a flush.
    pub fn reset(&mut self) {
        *self = BatchFill::default();
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// The decision itself lives here, beside the batches; the limits are settings.
impl FlushLimits {
    /// Whether `fill` must be flushed at `now`, and why.
    pub fn due(&self, fill: &BatchFill, now: Instant) -> Option<FlushReason> {
        if fill.rows >= self.max_rows {
            Some(FlushReason::Rows)
        } else if fill.bytes >= self.max_bytes {
            Some(FlushReason::Bytes)
        } else if self.time_left(fill, now) == Some(Duration::ZERO) {
            Some(FlushReason::Age)
        } else {
            None
        }
    }

    /// How long until `fill` is due by age; `None` when it is empty (no timer needed).
    pub fn time_left(&self, fill: &BatchFill, now: Instant) -> Option<Duration> {
        let first = fill.first_row_at?;
        Some(
            self.max_age
                .saturating_sub(now.saturating_duration_since(first)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FlushLimits {
        FlushLimits {
            max_rows: 3,
            max_bytes: 100,
            max_age: Duration::from_secs(1),
        }
    }

    #[test]
    fn rows_bytes_and_age_each_trigger_a_flush() {
        let t0 = Instant::now();
        let p = policy();
        let mut fill = BatchFill::default();
        assert_eq!(p.due(&fill, t0), None);
        assert_eq!(
            p.time_left(&fill, t0),
            None,
            "an empty batch needs no timer"
        );
        fill.add(10, t0);
        assert_eq!(p.due(&fill, t0), None);
        assert_eq!(
            p.time_left(&fill, t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert_eq!(
            p.due(&fill, t0 + Duration::from_secs(1)),
            Some(FlushReason::Age)
        );
        fill.add(95, t0);
        assert_eq!(p.due(&fill, t0), Some(FlushReason::Bytes));
        fill.reset();
        for _ in 0..3 {
            fill.add(1, t0);
        }
        assert_eq!(p.due(&fill, t0), Some(FlushReason::Rows));
    }

    #[test]
    fn the_age_counts_from_the_first_row() {
        let t0 = Instant::now();
        let p = policy();
        let mut fill = BatchFill::default();
        fill.add(1, t0);
        fill.add(1, t0 + Duration::from_millis(900));
        assert_eq!(
            p.due(&fill, t0 + Duration::from_millis(1000)),
            Some(FlushReason::Age)
        );
    }
}
