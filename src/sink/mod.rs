//! Everything that talks to ClickHouse, and the pure encoders that feed it.

pub mod client;
pub mod pgtext;
pub mod preflight;
pub mod rowbinary;
pub mod types;
