//! Everything that talks to Postgres.

pub mod catalog;
pub mod columns;
pub mod connect;
pub mod copy_text;
pub mod pgoutput;
pub mod preflight;
pub mod row;
pub mod stream;
pub mod tls;
pub mod walsender;
pub mod wire;
