//! The names pgch gives ClickHouse tables of its own beside a destination table.
//!
//! They live on the sink side, not with the resync that creates them, because the copy
//! must recognise a resync's shadow (it gets no `_current` view) without depending on
//! the resync.

/// What a resync appends to a destination table's name for its shadow copy.
const SHADOW_SUFFIX: &str = "__pgch_resync";

/// The shadow table a resync copies `dest` into.
pub fn shadow_name(dest: &str) -> String {
    format!("{dest}{SHADOW_SUFFIX}")
}

/// Where the RENAME fallback of a resync parks the old table for a moment.
pub fn parked_name(dest: &str) -> String {
    format!("{dest}{SHADOW_SUFFIX}_old")
}

/// Whether `table` is a resync's shadow, not a table readers query.
pub fn is_shadow(table: &str) -> bool {
    table.ends_with(SHADOW_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadow_is_recognised_and_its_table_is_not() {
        assert!(is_shadow(&shadow_name("orders")));
        assert!(!is_shadow("orders"));
        assert!(!is_shadow(&parked_name("orders")));
    }
}
