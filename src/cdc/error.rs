//! Why the stream stops, in one place: the apply side's errors and `pgch run`'s, each
//! with its classification (retry, or stop with a fix) and what a resync would fix.

use crate::error::{self, Class};
use crate::pipeline::batch::ImageError;
use crate::sink::client::SinkError;
use crate::slot::{self, SlotError};
use crate::snapshot;
use crate::source::connect;
use crate::source::pgoutput::{self, Oid};
use crate::source::row::ReadError;

/// Why applying failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{table}: {source}")]
    Image { table: String, source: ImageError },
    /// A value its ClickHouse column cannot hold: nothing of the batch is written.
    #[error("{table}.{column}: {source}; nothing of this batch was written or acknowledged")]
    Encode {
        table: String,
        column: String,
        source: Box<crate::sink::rowbinary::EncodeError>,
    },
    #[error("a change refers to relation {0}, which no Relation message announced")]
    UnknownRelation(Oid),
    #[error(
        "{0} is not part of the publication pgch planned at start; restart pgch to pick it up"
    )]
    UnplannedTable(String),
    #[error("{table} changed in a way pgch cannot follow in place ({detail}): run `pgch resync --table {table}`")]
    SchemaChanged { table: String, detail: String },
    #[error("reading the catalog of {table} failed: {source}")]
    Catalog { table: String, source: ReadError },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("reading unchanged TOAST values of {table} from Postgres failed: {source}")]
    Toast { table: String, source: ReadError },
    #[error("an insert task failed: {0}; restart pgch (the slot keeps what was not written)")]
    InsertTask(String),
    #[error("the transactions whose unchanged TOAST values {table} needs were still not visible after {waited:?}; reading them again from the slot")]
    NotVisible {
        table: String,
        waited: std::time::Duration,
    },
}

impl ApplyError {
    /// Retry or stop with a fix.
    pub fn classify(&self) -> Class {
        match self {
            ApplyError::Sink(e) => error::clickhouse(e),
            // The session starts over from the slot; the changes come again.
            ApplyError::NotVisible { .. } => Class::Retry,
            ApplyError::Toast { source, .. } | ApplyError::Catalog { source, .. } => {
                source.classify()
            }
            _ => Class::Fatal { fix: String::new() },
        }
    }
}

/// Why `pgch run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Sink(#[from] crate::sink::client::SinkError),
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error(transparent)]
    Walsender(#[from] crate::source::walsender::WalsenderError),
    #[error(transparent)]
    Stream(#[from] crate::source::stream::StreamError),
    #[error("the automatic resync failed: {0}")]
    Resync(String),
    #[error("a copy task failed: {0}; restart pgch to resume the copy")]
    CopyTask(String),
    #[error("cannot decode the change at {lsn}: {source}")]
    Decode {
        lsn: crate::lsn::Lsn,
        source: pgoutput::DecodeError,
    },
}

impl RunError {
    /// What a resync would fix: `Some(vec![])` for every table (the slot is gone or
    /// lost), `Some(vec![table])` for one table; `None` when a resync is not the fix.
    pub fn resync_scope(&self) -> Option<Vec<String>> {
        match self {
            RunError::Slot(SlotError::ResyncRequired(_)) => Some(Vec::new()),
            // The slot invalidated or dropped under a running stream.
            RunError::Stream(crate::source::stream::StreamError::Server {
                sqlstate,
                message,
                ..
            })
            | RunError::Walsender(crate::source::wire::WireError::Server {
                sqlstate,
                message,
                ..
            }) if (sqlstate == "55000" || sqlstate == "42704")
                && message.contains("replication slot") =>
            {
                Some(Vec::new())
            }
            RunError::Apply(ApplyError::SchemaChanged { table, .. })
            | RunError::Snapshot(snapshot::SnapshotError::IncompatibleTable {
                source_table: table,
                ..
            }) => Some(vec![table.clone()]),
            _ => None,
        }
    }

    /// Retry or stop with a fix (one classification: [`crate::error`]).
    pub fn classify(&self) -> Class {
        use crate::source::stream::StreamError;
        use crate::source::wire::WireError;
        match self {
            RunError::Walsender(WireError::Server {
                sqlstate, message, ..
            })
            | RunError::Stream(StreamError::Server {
                sqlstate, message, ..
            }) => error::postgres(sqlstate, message),
            RunError::Walsender(WireError::UnsupportedAuth { .. }) => Class::Fatal {
                fix: "allow SCRAM-SHA-256, MD5 or password authentication for the pgch user".into(),
            },
            RunError::Walsender(_) | RunError::Stream(_) => Class::Retry,
            RunError::Connect(e) => match &e.sqlstate {
                Some(state) => error::postgres(state, &e.message),
                None => Class::Retry,
            },
            RunError::Apply(e) => e.classify(),
            RunError::Sink(e) => error::clickhouse(e),
            RunError::Snapshot(e) => e.classify(),
            RunError::Slot(slot::SlotError::Walsender(e)) => match e.sqlstate() {
                Some(state) => error::postgres(state, ""),
                None => Class::Retry,
            },
            RunError::Slot(slot::SlotError::Sink(e)) => error::clickhouse(e),
            // The message itself says what to do.
            RunError::Slot(_)
            | RunError::Decode { .. }
            | RunError::Resync(_)
            | RunError::CopyTask(_) => Class::Fatal { fix: String::new() },
        }
    }

    /// Lost connections and server restarts are retried; everything else needs the operator.
    pub fn is_transient(&self) -> bool {
        self.classify().is_retry()
    }
}
