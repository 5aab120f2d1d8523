//! Everything that talks to ClickHouse.

pub mod client;
pub mod preflight;
