//! pgch: streams PostgreSQL into ClickHouse — an initial snapshot, then change data
//! capture from a `pgoutput` logical replication slot.

pub mod cdc;
pub mod check;
pub mod check_result;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod lsn;
pub mod membership;
pub mod metrics;
pub mod pipeline;
pub mod resync;
pub mod schema;
pub mod sink;
pub mod slot;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod tail;
#[cfg(feature = "testkit")]
pub mod testkit;
