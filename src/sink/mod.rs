//! Everything that talks to ClickHouse, and the pure encoders that feed it.

pub mod capabilities;
pub mod client;
pub mod ddl;
pub mod inflight;
pub mod names;
pub mod pgtext;
pub mod preflight;
pub mod rowbinary;
pub mod state;
pub mod types;
pub mod writer;
