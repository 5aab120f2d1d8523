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

/// The server's WAL position as SQL: what the primary wrote, or on a standby (standby
/// decoding) what it replayed, which is as far as a slot there can read. Every
/// transaction committed at or before it is visible to a snapshot taken afterwards.
pub const WAL_POSITION_SQL: &str = "(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END)";

/// Like [`WAL_POSITION_SQL`], but the primary's insert position: under
/// `synchronous_commit = off` a transaction is visible before its commit is written.
pub const WAL_INSERT_POSITION_SQL: &str = "(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_insert_lsn() END)";
