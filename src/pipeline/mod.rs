//! The bounded batching pipeline between the replication stream and ClickHouse:
//! per-table row images, and the flush policy that decides when they are written.

pub mod batch;
pub mod flush;
