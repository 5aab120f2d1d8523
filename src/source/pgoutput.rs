//! A pure decoder for the messages of PostgreSQL's built-in logical replication
//! output plugin, `pgoutput`.
//!
//! When pgch streams from a replication slot, each `XLogData` payload that the
//! server sends in `START_REPLICATION ... (proto_version 'N', publication_names ...)`
//! is one pgoutput message: Begin, Relation, Insert, Commit and so on, laid out as in
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.
//! [`decode`] turns one such payload into a [`Message`].
//!
//! **Versions.** Protocol versions 1 to 4 are covered: version 1's transaction and
//! row messages; version 2's streaming of in-progress transactions (Stream Start,
//! Stop, Commit, Abort, and the extra transaction id that row and schema messages
//! carry inside a stream); version 3's two-phase commit messages (Begin Prepare,
//! Prepare, Commit Prepared, Rollback Prepared, Stream Prepare); and version 4's
//! Stream Abort with abort LSN and timestamp (sent with `streaming = parallel`).
//! The wire format does not say whether a message is inside a stream, so the caller
//! says so through [`DecodeContext`]; it knows, having seen Stream Start and Stream
//! Stop. Whether a Stream Abort carries the version 4 fields is read off its length.
//!
//! **Zero-copy.** Column values are by far the bulk of the traffic. They are
//! returned as [`bytes::Bytes`] slices of the input buffer (`Bytes::slice`), so
//! decoding a row costs a `Vec` of column handles and no copying of data; the
//! network buffer is shared until the last value taken from it is dropped. Only
//! names (schemas, tables, columns, types, origins, GIDs, message prefixes) become
//! `String`s, and they must be valid UTF-8: pgch requires a UTF-8 server encoding,
//! and anything else is reported as an error, never silently mangled.
//!
//! **What it does not do.** It converts no values: a `t` column is the server's text
//! output of the value and a `b` column its binary send form, both left as bytes for
//! the caller, who knows the column types. It keeps no relation or type cache: Insert,
//! Update and Delete carry only a relation id, and mapping that to the last Relation
//! message is the caller's job. It does no I/O and holds no state, so any input can
//! be decoded in any order and fuzzed freely; malformed input gives a [`DecodeError`]
//! that names the problem and its byte offset, never a panic.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod cursor;
mod decode;
mod error;
mod message;

#[cfg(test)]
#[allow(clippy::expect_used)]
mod encode;
#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
mod tests;

pub use decode::{decode, DecodeContext};
pub use error::DecodeError;
pub use message::{
    Begin, BeginPrepare, ColumnValue, Commit, CommitPrepared, Delete, Insert, LogicalMessage,
    Message, Oid, OldTuple, Origin, PgTimestamp, Prepare, Relation, RelationColumn,
    ReplicaIdentity, RollbackPrepared, StreamAbort, StreamAbortPosition, StreamCommit, StreamStart,
    Truncate, TupleData, Type, Update, Xid,
};
