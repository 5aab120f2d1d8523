//! Decoding of each pgoutput message type, one small function per type.

use bytes::Bytes;

use super::cursor::Cursor;
use super::error::DecodeError;
use super::message::{
    Begin, BeginPrepare, ColumnValue, Commit, CommitPrepared, Delete, Insert, LogicalMessage,
    Message, Oid, OldTuple, Origin, Prepare, Relation, RelationColumn, ReplicaIdentity,
    RollbackPrepared, StreamAbort, StreamAbortPosition, StreamCommit, StreamStart, Truncate,
    TupleData, Type, Update, Xid,
};

/// Smallest encoding of one Relation column: flags, empty name's NUL, type OID, modifier.
const MIN_RELATION_COLUMN_LEN: usize = 1 + 1 + 4 + 4;
/// Size of one relation id in a Truncate.
const RELATION_ID_LEN: usize = 4;

/// What the decoder must be told because the bytes do not say it.
///
/// Inside a stream (between Stream Start and Stream Stop, protocol version 2 and
/// up) Relation, Type, Insert, Update, Delete, Truncate and Message carry the
/// streamed transaction's id right after the type byte; outside they do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeContext {
    /// Whether the message was received between Stream Start and Stream Stop.
    pub in_stream: bool,
}

impl DecodeContext {
    /// For messages outside any stream (the only case with protocol version 1).
    pub const OUTSIDE_STREAM: DecodeContext = DecodeContext { in_stream: false };
    /// For messages between Stream Start and Stream Stop.
    pub const IN_STREAM: DecodeContext = DecodeContext { in_stream: true };
}

/// Decodes one pgoutput message (the payload of one `XLogData`).
///
/// Values in the result are zero-copy slices of `buf`. The whole buffer must be
/// one message; no input makes this panic.
///
/// # Errors
///
/// A [`DecodeError`] naming the problem and its byte offset when the message is
/// truncated, has an unknown type, tuple column kind, replica identity or tuple
/// marker, a negative length, an unterminated or non-UTF-8 string, or trailing bytes.
pub fn decode(buf: &Bytes, ctx: DecodeContext) -> Result<Message, DecodeError> {
    let mut cursor = Cursor::new(buf);
    let message = decode_body(&mut cursor, ctx)?;
    cursor.expect_end(message.type_name())?;
    Ok(message)
}

/// Reads the type byte and dispatches to the decoder for that type.
fn decode_body(cursor: &mut Cursor<'_>, ctx: DecodeContext) -> Result<Message, DecodeError> {
    let offset = cursor.position();
    let message = match cursor.read_u8("message type")? {
        b'B' => Message::Begin(decode_begin(cursor)?),
        b'C' => Message::Commit(decode_commit(cursor)?),
        b'O' => Message::Origin(decode_origin(cursor)?),
        b'R' => Message::Relation(decode_relation(cursor, ctx)?),
        b'Y' => Message::Type(decode_type(cursor, ctx)?),
        b'I' => Message::Insert(decode_insert(cursor, ctx)?),
        b'U' => Message::Update(decode_update(cursor, ctx)?),
        b'D' => Message::Delete(decode_delete(cursor, ctx)?),
        b'T' => Message::Truncate(decode_truncate(cursor, ctx)?),
        b'M' => Message::LogicalMessage(decode_logical_message(cursor, ctx)?),
        b'S' => Message::StreamStart(decode_stream_start(cursor)?),
        b'E' => Message::StreamStop,
        b'c' => Message::StreamCommit(decode_stream_commit(cursor)?),
        b'A' => Message::StreamAbort(decode_stream_abort(cursor)?),
        b'b' => Message::BeginPrepare(decode_begin_prepare(cursor)?),
        b'P' => Message::Prepare(decode_prepare(cursor)?),
        b'K' => Message::CommitPrepared(decode_commit_prepared(cursor)?),
        b'r' => Message::RollbackPrepared(decode_rollback_prepared(cursor)?),
        b'p' => Message::StreamPrepare(decode_prepare(cursor)?),
        byte => return Err(DecodeError::UnknownMessageType { byte, offset }),
    };
    Ok(message)
}

/// Reads the streamed transaction id that precedes the body inside a stream.
fn read_stream_xid(
    cursor: &mut Cursor<'_>,
    ctx: DecodeContext,
) -> Result<Option<Xid>, DecodeError> {
    if ctx.in_stream {
        cursor.read_u32("streamed transaction id").map(Some)
    } else {
        Ok(None)
    }
}

fn decode_begin(cursor: &mut Cursor<'_>) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: cursor.read_lsn("final LSN")?,
        commit_timestamp: cursor.read_timestamp("commit timestamp")?,
        xid: cursor.read_u32("transaction id")?,
    })
}

fn decode_commit(cursor: &mut Cursor<'_>) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: cursor.read_u8("commit flags")?,
        commit_lsn: cursor.read_lsn("commit LSN")?,
        end_lsn: cursor.read_lsn("end LSN")?,
        commit_timestamp: cursor.read_timestamp("commit timestamp")?,
    })
}

fn decode_origin(cursor: &mut Cursor<'_>) -> Result<Origin, DecodeError> {
    Ok(Origin {
        commit_lsn: cursor.read_lsn("origin commit LSN")?,
        name: cursor.read_string("origin name")?,
    })
}

fn decode_relation(cursor: &mut Cursor<'_>, ctx: DecodeContext) -> Result<Relation, DecodeError> {
    Ok(Relation {
        xid: read_stream_xid(cursor, ctx)?,
        id: cursor.read_u32("relation id")?,
        namespace: cursor.read_string("relation namespace")?,
        name: cursor.read_string("relation name")?,
        replica_identity: read_replica_identity(cursor)?,
        columns: read_relation_columns(cursor)?,
    })
}

fn read_replica_identity(cursor: &mut Cursor<'_>) -> Result<ReplicaIdentity, DecodeError> {
    let offset = cursor.position();
    let byte = cursor.read_u8("replica identity")?;
    ReplicaIdentity::from_byte(byte).ok_or(DecodeError::UnknownReplicaIdentity { byte, offset })
}

fn read_relation_columns(cursor: &mut Cursor<'_>) -> Result<Vec<RelationColumn>, DecodeError> {
    let count = usize::from(cursor.read_u16("relation column count")?);
    let mut columns = Vec::with_capacity(count.min(cursor.remaining() / MIN_RELATION_COLUMN_LEN));
    for _ in 0..count {
        columns.push(read_relation_column(cursor)?);
    }
    Ok(columns)
}

fn read_relation_column(cursor: &mut Cursor<'_>) -> Result<RelationColumn, DecodeError> {
    Ok(RelationColumn {
        flags: cursor.read_u8("column flags")?,
        name: cursor.read_string("column name")?,
        type_oid: cursor.read_u32("column type OID")?,
        type_modifier: cursor.read_i32("column type modifier")?,
    })
}

fn decode_type(cursor: &mut Cursor<'_>, ctx: DecodeContext) -> Result<Type, DecodeError> {
    Ok(Type {
        xid: read_stream_xid(cursor, ctx)?,
        id: cursor.read_u32("type id")?,
        namespace: cursor.read_string("type namespace")?,
        name: cursor.read_string("type name")?,
    })
}

fn decode_insert(cursor: &mut Cursor<'_>, ctx: DecodeContext) -> Result<Insert, DecodeError> {
    let xid = read_stream_xid(cursor, ctx)?;
    let relation_id = cursor.read_u32("relation id")?;
    expect_marker(cursor, b'N', "'N'")?;
    Ok(Insert {
        xid,
        relation_id,
        new: read_tuple(cursor)?,
    })
}

fn decode_update(cursor: &mut Cursor<'_>, ctx: DecodeContext) -> Result<Update, DecodeError> {
    let xid = read_stream_xid(cursor, ctx)?;
    let relation_id = cursor.read_u32("relation id")?;
    let offset = cursor.position();
    let old = match cursor.read_u8("tuple marker")? {
        b'K' => Some(OldTuple::Key(read_tuple(cursor)?)),
        b'O' => Some(OldTuple::Full(read_tuple(cursor)?)),
        b'N' => None,
        byte => return Err(unexpected_marker(byte, offset, "'K', 'O' or 'N'")),
    };
    if old.is_some() {
        expect_marker(cursor, b'N', "'N'")?;
    }
    Ok(Update {
        xid,
        relation_id,
        old,
        new: read_tuple(cursor)?,
    })
}

fn decode_delete(cursor: &mut Cursor<'_>, ctx: DecodeContext) -> Result<Delete, DecodeError> {
    let xid = read_stream_xid(cursor, ctx)?;
    let relation_id = cursor.read_u32("relation id")?;
    let offset = cursor.position();
    let old = match cursor.read_u8("tuple marker")? {
        b'K' => OldTuple::Key(read_tuple(cursor)?),
        b'O' => OldTuple::Full(read_tuple(cursor)?),
        byte => return Err(unexpected_marker(byte, offset, "'K' or 'O'")),
    };
    Ok(Delete {
        xid,
        relation_id,
        old,
    })
}

/// Reads the byte that introduces a tuple and checks it is `marker`.
fn expect_marker(
    cursor: &mut Cursor<'_>,
    marker: u8,
    expected: &'static str,
) -> Result<(), DecodeError> {
    let offset = cursor.position();
    match cursor.read_u8("tuple marker")? {
        byte if byte == marker => Ok(()),
        byte => Err(unexpected_marker(byte, offset, expected)),
    }
}

const fn unexpected_marker(byte: u8, offset: usize, expected: &'static str) -> DecodeError {
    DecodeError::UnexpectedTupleMarker {
        byte,
        offset,
        expected,
    }
}

/// Reads `TupleData`: an `Int16` column count, then one value per column.
fn read_tuple(cursor: &mut Cursor<'_>) -> Result<TupleData, DecodeError> {
    let count = usize::from(cursor.read_u16("tuple column count")?);
    // Every column takes at least its kind byte, so the rest of the buffer bounds
    // the allocation whatever the count claims.
    let mut columns = Vec::with_capacity(count.min(cursor.remaining()));
    for _ in 0..count {
        columns.push(read_column_value(cursor)?);
    }
    Ok(TupleData { columns })
}

fn read_column_value(cursor: &mut Cursor<'_>) -> Result<ColumnValue, DecodeError> {
    let offset = cursor.position();
    match cursor.read_u8("tuple column kind")? {
        b'n' => Ok(ColumnValue::Null),
        b'u' => Ok(ColumnValue::UnchangedToast),
        b't' => cursor
            .read_length_prefixed("column value length", "text column value")
            .map(ColumnValue::Text),
        b'b' => cursor
            .read_length_prefixed("column value length", "binary column value")
            .map(ColumnValue::Binary),
        byte => Err(DecodeError::UnknownTupleColumnKind { byte, offset }),
    }
}

fn decode_truncate(cursor: &mut Cursor<'_>, ctx: DecodeContext) -> Result<Truncate, DecodeError> {
    let xid = read_stream_xid(cursor, ctx)?;
    let count = cursor.read_u32("truncated relation count")?;
    let options = cursor.read_u8("truncate options")?;
    let relation_ids = read_relation_ids(cursor, count)?;
    Ok(Truncate {
        xid,
        options,
        relation_ids,
    })
}

fn read_relation_ids(cursor: &mut Cursor<'_>, count: u32) -> Result<Vec<Oid>, DecodeError> {
    let capacity = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(cursor.remaining() / RELATION_ID_LEN);
    let mut relation_ids = Vec::with_capacity(capacity);
    for _ in 0..count {
        relation_ids.push(cursor.read_u32("truncated relation id")?);
    }
    Ok(relation_ids)
}

fn decode_logical_message(
    cursor: &mut Cursor<'_>,
    ctx: DecodeContext,
) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage {
        xid: read_stream_xid(cursor, ctx)?,
        flags: cursor.read_u8("message flags")?,
        lsn: cursor.read_lsn("message LSN")?,
        prefix: cursor.read_string("message prefix")?,
        content: cursor.read_length_prefixed("message content length", "message content")?,
    })
}

fn decode_stream_start(cursor: &mut Cursor<'_>) -> Result<StreamStart, DecodeError> {
    Ok(StreamStart {
        xid: cursor.read_u32("transaction id")?,
        // Postgres's own reader treats exactly 1 as "first segment".
        first_segment: cursor.read_u8("first segment flag")? == 1,
    })
}

fn decode_stream_commit(cursor: &mut Cursor<'_>) -> Result<StreamCommit, DecodeError> {
    Ok(StreamCommit {
        xid: cursor.read_u32("transaction id")?,
        flags: cursor.read_u8("commit flags")?,
        commit_lsn: cursor.read_lsn("commit LSN")?,
        end_lsn: cursor.read_lsn("end LSN")?,
        commit_timestamp: cursor.read_timestamp("commit timestamp")?,
    })
}

/// Stream Abort ends after the subtransaction id unless the server sent the
/// version 4 parallel-streaming fields, so their presence is read off the length.
fn decode_stream_abort(cursor: &mut Cursor<'_>) -> Result<StreamAbort, DecodeError> {
    let xid = cursor.read_u32("transaction id")?;
    let subxid = cursor.read_u32("subtransaction id")?;
    let position = if cursor.remaining() == 0 {
        None
    } else {
        Some(StreamAbortPosition {
            abort_lsn: cursor.read_lsn("abort LSN")?,
            abort_timestamp: cursor.read_timestamp("abort timestamp")?,
        })
    };
    Ok(StreamAbort {
        xid,
        subxid,
        position,
    })
}

fn decode_begin_prepare(cursor: &mut Cursor<'_>) -> Result<BeginPrepare, DecodeError> {
    Ok(BeginPrepare {
        prepare_lsn: cursor.read_lsn("prepare LSN")?,
        end_lsn: cursor.read_lsn("prepare end LSN")?,
        prepare_timestamp: cursor.read_timestamp("prepare timestamp")?,
        xid: cursor.read_u32("transaction id")?,
        gid: cursor.read_string("global transaction id")?,
    })
}

fn decode_prepare(cursor: &mut Cursor<'_>) -> Result<Prepare, DecodeError> {
    Ok(Prepare {
        flags: cursor.read_u8("prepare flags")?,
        prepare_lsn: cursor.read_lsn("prepare LSN")?,
        end_lsn: cursor.read_lsn("prepare end LSN")?,
        prepare_timestamp: cursor.read_timestamp("prepare timestamp")?,
        xid: cursor.read_u32("transaction id")?,
        gid: cursor.read_string("global transaction id")?,
    })
}

fn decode_commit_prepared(cursor: &mut Cursor<'_>) -> Result<CommitPrepared, DecodeError> {
    Ok(CommitPrepared {
        flags: cursor.read_u8("commit flags")?,
        commit_lsn: cursor.read_lsn("commit LSN")?,
        end_lsn: cursor.read_lsn("end LSN")?,
        commit_timestamp: cursor.read_timestamp("commit timestamp")?,
        xid: cursor.read_u32("transaction id")?,
        gid: cursor.read_string("global transaction id")?,
    })
}

fn decode_rollback_prepared(cursor: &mut Cursor<'_>) -> Result<RollbackPrepared, DecodeError> {
    Ok(RollbackPrepared {
        flags: cursor.read_u8("rollback flags")?,
        prepare_end_lsn: cursor.read_lsn("prepare end LSN")?,
        rollback_end_lsn: cursor.read_lsn("rollback end LSN")?,
        prepare_timestamp: cursor.read_timestamp("prepare timestamp")?,
        rollback_timestamp: cursor.read_timestamp("rollback timestamp")?,
        xid: cursor.read_u32("transaction id")?,
        gid: cursor.read_string("global transaction id")?,
    })
}
