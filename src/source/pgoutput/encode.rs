//! Test-only encoder: the inverse of `decode`, used by the round-trip property
//! and to write the fuzz seed corpus. pgch never sends these messages itself.

use super::message::{
    Begin, BeginPrepare, ColumnValue, Commit, CommitPrepared, Delete, Insert, LogicalMessage,
    Message, OldTuple, Origin, PgTimestamp, Prepare, Relation, RollbackPrepared, StreamAbort,
    StreamCommit, StreamStart, Truncate, TupleData, Type, Update, Xid,
};
use crate::lsn::Lsn;

/// Encodes `message`; streamed xids are written when the message holds one, so
/// the result decodes with `in_stream` set exactly when they are `Some`.
pub(super) fn encode(message: &Message) -> Vec<u8> {
    let mut out = Writer::default();
    match message {
        Message::Begin(begin) => encode_begin(&mut out, begin),
        Message::Commit(commit) => encode_commit(&mut out, commit),
        Message::Origin(origin) => encode_origin(&mut out, origin),
        Message::Relation(relation) => encode_relation(&mut out, relation),
        Message::Type(ty) => encode_type(&mut out, ty),
        Message::Insert(insert) => encode_insert(&mut out, insert),
        Message::Update(update) => encode_update(&mut out, update),
        Message::Delete(delete) => encode_delete(&mut out, delete),
        Message::Truncate(truncate) => encode_truncate(&mut out, truncate),
        Message::LogicalMessage(message) => encode_logical_message(&mut out, message),
        Message::StreamStart(start) => encode_stream_start(&mut out, start),
        Message::StreamStop => out.u8(b'E'),
        Message::StreamCommit(commit) => encode_stream_commit(&mut out, commit),
        Message::StreamAbort(abort) => encode_stream_abort(&mut out, abort),
        Message::BeginPrepare(begin) => encode_begin_prepare(&mut out, begin),
        Message::Prepare(prepare) => encode_prepare(&mut out, b'P', prepare),
        Message::CommitPrepared(commit) => encode_commit_prepared(&mut out, commit),
        Message::RollbackPrepared(rollback) => encode_rollback_prepared(&mut out, rollback),
        Message::StreamPrepare(prepare) => encode_prepare(&mut out, b'p', prepare),
    }
    out.0
}

/// Big-endian field writer.
#[derive(Default)]
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    pub(super) fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    pub(super) fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    pub(super) fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    pub(super) fn i32(&mut self, value: i32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    pub(super) fn lsn(&mut self, value: Lsn) {
        self.0.extend_from_slice(&value.as_u64().to_be_bytes());
    }
    pub(super) fn timestamp(&mut self, value: PgTimestamp) {
        self.0.extend_from_slice(&value.0.to_be_bytes());
    }
    pub(super) fn string(&mut self, value: &str) {
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(0);
    }
    pub(super) fn length_prefixed(&mut self, value: &[u8]) {
        self.i32(i32::try_from(value.len()).expect("test value fits in an Int32 length"));
        self.0.extend_from_slice(value);
    }
    fn stream_xid(&mut self, xid: Option<Xid>) {
        if let Some(xid) = xid {
            self.u32(xid);
        }
    }
}

fn encode_begin(out: &mut Writer, begin: &Begin) {
    out.u8(b'B');
    out.lsn(begin.final_lsn);
    out.timestamp(begin.commit_timestamp);
    out.u32(begin.xid);
}

fn encode_commit(out: &mut Writer, commit: &Commit) {
    out.u8(b'C');
    out.u8(commit.flags);
    out.lsn(commit.commit_lsn);
    out.lsn(commit.end_lsn);
    out.timestamp(commit.commit_timestamp);
}

fn encode_origin(out: &mut Writer, origin: &Origin) {
    out.u8(b'O');
    out.lsn(origin.commit_lsn);
    out.string(&origin.name);
}

fn encode_relation(out: &mut Writer, relation: &Relation) {
    out.u8(b'R');
    out.stream_xid(relation.xid);
    out.u32(relation.id);
    out.string(&relation.namespace);
    out.string(&relation.name);
    out.u8(relation.replica_identity.as_byte());
    out.u16(u16::try_from(relation.columns.len()).expect("test relation fits"));
    for column in &relation.columns {
        out.u8(column.flags);
        out.string(&column.name);
        out.u32(column.type_oid);
        out.i32(column.type_modifier);
    }
}

fn encode_type(out: &mut Writer, ty: &Type) {
    out.u8(b'Y');
    out.stream_xid(ty.xid);
    out.u32(ty.id);
    out.string(&ty.namespace);
    out.string(&ty.name);
}

pub(super) fn encode_tuple(out: &mut Writer, tuple: &TupleData) {
    out.u16(u16::try_from(tuple.columns.len()).expect("test tuple fits"));
    for value in &tuple.columns {
        match value {
            ColumnValue::Null => out.u8(b'n'),
            ColumnValue::UnchangedToast => out.u8(b'u'),
            ColumnValue::Text(bytes) => {
                out.u8(b't');
                out.length_prefixed(bytes);
            }
            ColumnValue::Binary(bytes) => {
                out.u8(b'b');
                out.length_prefixed(bytes);
            }
        }
    }
}

fn encode_old_tuple(out: &mut Writer, old: &OldTuple) {
    let marker = match old {
        OldTuple::Key(_) => b'K',
        OldTuple::Full(_) => b'O',
    };
    out.u8(marker);
    encode_tuple(out, old.tuple());
}

fn encode_insert(out: &mut Writer, insert: &Insert) {
    out.u8(b'I');
    out.stream_xid(insert.xid);
    out.u32(insert.relation_id);
    out.u8(b'N');
    encode_tuple(out, &insert.new);
}

fn encode_update(out: &mut Writer, update: &Update) {
    out.u8(b'U');
    out.stream_xid(update.xid);
    out.u32(update.relation_id);
    if let Some(old) = &update.old {
        encode_old_tuple(out, old);
    }
    out.u8(b'N');
    encode_tuple(out, &update.new);
}

fn encode_delete(out: &mut Writer, delete: &Delete) {
    out.u8(b'D');
    out.stream_xid(delete.xid);
    out.u32(delete.relation_id);
    encode_old_tuple(out, &delete.old);
}

fn encode_truncate(out: &mut Writer, truncate: &Truncate) {
    out.u8(b'T');
    out.stream_xid(truncate.xid);
    out.u32(u32::try_from(truncate.relation_ids.len()).expect("test truncate fits"));
    out.u8(truncate.options);
    for &id in &truncate.relation_ids {
        out.u32(id);
    }
}

fn encode_logical_message(out: &mut Writer, message: &LogicalMessage) {
    out.u8(b'M');
    out.stream_xid(message.xid);
    out.u8(message.flags);
    out.lsn(message.lsn);
    out.string(&message.prefix);
    out.length_prefixed(&message.content);
}

fn encode_stream_start(out: &mut Writer, start: &StreamStart) {
    out.u8(b'S');
    out.u32(start.xid);
    out.u8(u8::from(start.first_segment));
}

fn encode_stream_commit(out: &mut Writer, commit: &StreamCommit) {
    out.u8(b'c');
    out.u32(commit.xid);
    out.u8(commit.flags);
    out.lsn(commit.commit_lsn);
    out.lsn(commit.end_lsn);
    out.timestamp(commit.commit_timestamp);
}

fn encode_stream_abort(out: &mut Writer, abort: &StreamAbort) {
    out.u8(b'A');
    out.u32(abort.xid);
    out.u32(abort.subxid);
    if let Some(position) = abort.position {
        out.lsn(position.abort_lsn);
        out.timestamp(position.abort_timestamp);
    }
}

fn encode_begin_prepare(out: &mut Writer, begin: &BeginPrepare) {
    out.u8(b'b');
    out.lsn(begin.prepare_lsn);
    out.lsn(begin.end_lsn);
    out.timestamp(begin.prepare_timestamp);
    out.u32(begin.xid);
    out.string(&begin.gid);
}

fn encode_prepare(out: &mut Writer, type_byte: u8, prepare: &Prepare) {
    out.u8(type_byte);
    out.u8(prepare.flags);
    out.lsn(prepare.prepare_lsn);
    out.lsn(prepare.end_lsn);
    out.timestamp(prepare.prepare_timestamp);
    out.u32(prepare.xid);
    out.string(&prepare.gid);
}

fn encode_commit_prepared(out: &mut Writer, commit: &CommitPrepared) {
    out.u8(b'K');
    out.u8(commit.flags);
    out.lsn(commit.commit_lsn);
    out.lsn(commit.end_lsn);
    out.timestamp(commit.commit_timestamp);
    out.u32(commit.xid);
    out.string(&commit.gid);
}

fn encode_rollback_prepared(out: &mut Writer, rollback: &RollbackPrepared) {
    out.u8(b'r');
    out.u8(rollback.flags);
    out.lsn(rollback.prepare_end_lsn);
    out.lsn(rollback.rollback_end_lsn);
    out.timestamp(rollback.prepare_timestamp);
    out.timestamp(rollback.rollback_timestamp);
    out.u32(rollback.xid);
    out.string(&rollback.gid);
}
