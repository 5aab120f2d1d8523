//! Tests for the pgoutput decoder: every message type from hand-built bytes laid
//! out as the protocol documentation says, error kinds and offsets, and
//! properties (no input panics; encode → decode round-trips).

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::Union;

use super::encode::{encode, encode_tuple, Writer};
use super::*;
use crate::lsn::Lsn;

const OUTSIDE: DecodeContext = DecodeContext::OUTSIDE_STREAM;
const INSIDE: DecodeContext = DecodeContext::IN_STREAM;

/// Joins hand-written fields into one message buffer.
fn concat(parts: &[&[u8]]) -> Bytes {
    Bytes::from(parts.concat())
}

fn be16(value: u16) -> [u8; 2] {
    value.to_be_bytes()
}

fn be32(value: u32) -> [u8; 4] {
    value.to_be_bytes()
}

fn be64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

fn ibe32(value: i32) -> [u8; 4] {
    value.to_be_bytes()
}

fn ibe64(value: i64) -> [u8; 8] {
    value.to_be_bytes()
}

fn text(value: &str) -> ColumnValue {
    ColumnValue::Text(Bytes::copy_from_slice(value.as_bytes()))
}

fn tuple(columns: Vec<ColumnValue>) -> TupleData {
    TupleData { columns }
}

fn decode_ok(bytes: &Bytes, ctx: DecodeContext) -> Message {
    match decode(bytes, ctx) {
        Ok(message) => message,
        Err(error) => panic!("decode failed: {error}"),
    }
}

fn decode_err(bytes: &Bytes, ctx: DecodeContext) -> DecodeError {
    match decode(bytes, ctx) {
        Ok(message) => panic!("decoded {message:?}, expected an error"),
        Err(error) => error,
    }
}

const LSN_A: u64 = 0x16_B374_D848;
const LSN_B: u64 = 0x16_B374_D8F0;
const TS: i64 = 770_000_000_123_456;

// ---- Transaction messages ----

#[test]
fn begin_decodes_documented_layout() {
    let bytes = concat(&[b"B", &be64(LSN_A), &ibe64(TS), &be32(750)]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::Begin(Begin {
            final_lsn: Lsn::new(LSN_A),
            commit_timestamp: PgTimestamp(TS),
            xid: 750,
        })
    );
}

#[test]
fn commit_decodes_documented_layout() {
    let bytes = concat(&[b"C", &[0], &be64(LSN_A), &be64(LSN_B), &ibe64(TS)]);
    assert_eq!(bytes.len(), 26);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn::new(LSN_A),
            end_lsn: Lsn::new(LSN_B),
            commit_timestamp: PgTimestamp(TS),
        })
    );
}

#[test]
fn origin_decodes_documented_layout() {
    let bytes = concat(&[b"O", &be64(LSN_A), b"pg_16399\0"]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::Origin(Origin {
            commit_lsn: Lsn::new(LSN_A),
            name: "pg_16399".into(),
        })
    );
}

// ---- Schema messages ----

fn relation_body() -> Vec<u8> {
    [
        &be32(16385)[..],
        b"public\0",
        b"users\0",
        b"d",
        &be16(2),
        &[1],
        b"id\0",
        &be32(23),
        &ibe32(-1),
        &[0],
        b"email\0",
        &be32(1043),
        &ibe32(259),
    ]
    .concat()
}

fn expected_relation(xid: Option<Xid>) -> Relation {
    Relation {
        xid,
        id: 16385,
        namespace: "public".into(),
        name: "users".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            RelationColumn {
                flags: 1,
                name: "id".into(),
                type_oid: 23,
                type_modifier: -1,
            },
            RelationColumn {
                flags: 0,
                name: "email".into(),
                type_oid: 1043,
                type_modifier: 259,
            },
        ],
    }
}

#[test]
fn relation_decodes_documented_layout() {
    let bytes = concat(&[b"R", &relation_body()]);
    let message = decode_ok(&bytes, OUTSIDE);
    assert_eq!(message, Message::Relation(expected_relation(None)));
    let Message::Relation(relation) = message else {
        unreachable!()
    };
    assert!(relation.columns[0].is_key());
    assert!(!relation.columns[1].is_key());
}

#[test]
fn relation_in_stream_carries_xid() {
    let bytes = concat(&[b"R", &be32(901), &relation_body()]);
    assert_eq!(
        decode_ok(&bytes, INSIDE),
        Message::Relation(expected_relation(Some(901)))
    );
}

#[test]
fn relation_decodes_every_replica_identity() {
    for (byte, identity) in [
        (b'd', ReplicaIdentity::Default),
        (b'n', ReplicaIdentity::Nothing),
        (b'f', ReplicaIdentity::Full),
        (b'i', ReplicaIdentity::Index),
    ] {
        let bytes = concat(&[b"R", &be32(1), b"\0", b"t\0", &[byte], &be16(0)]);
        let Message::Relation(relation) = decode_ok(&bytes, OUTSIDE) else {
            panic!("not a relation")
        };
        assert_eq!(relation.replica_identity, identity);
        assert_eq!(identity.as_byte(), byte);
        assert!(relation.columns.is_empty());
        assert_eq!(relation.namespace, "", "pg_catalog is sent as empty");
    }
}

#[test]
fn type_decodes_with_and_without_stream_xid() {
    let body = concat(&[&be32(16390), b"public\0", b"mood\0"]);
    let expected = |xid| {
        Message::Type(Type {
            xid,
            id: 16390,
            namespace: "public".into(),
            name: "mood".into(),
        })
    };
    assert_eq!(decode_ok(&concat(&[b"Y", &body]), OUTSIDE), expected(None));
    assert_eq!(
        decode_ok(&concat(&[b"Y", &be32(7), &body]), INSIDE),
        expected(Some(7))
    );
}

// ---- Row messages ----

/// A tuple with one column of every kind: null, unchanged TOAST, text, binary.
fn every_kind_tuple_bytes() -> Vec<u8> {
    [
        &be16(4)[..],
        b"n",
        b"u",
        b"t",
        &ibe32(2),
        b"42",
        b"b",
        &ibe32(3),
        &[0, 1, 2],
    ]
    .concat()
}

fn every_kind_tuple() -> TupleData {
    tuple(vec![
        ColumnValue::Null,
        ColumnValue::UnchangedToast,
        text("42"),
        ColumnValue::Binary(Bytes::from_static(&[0, 1, 2])),
    ])
}

#[test]
fn insert_decodes_every_column_kind() {
    let bytes = concat(&[b"I", &be32(16385), b"N", &every_kind_tuple_bytes()]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::Insert(Insert {
            xid: None,
            relation_id: 16385,
            new: every_kind_tuple(),
        })
    );
}

#[test]
fn insert_in_stream_carries_xid() {
    let bytes = concat(&[b"I", &be32(901), &be32(16385), b"N", &be16(0)]);
    assert_eq!(
        decode_ok(&bytes, INSIDE),
        Message::Insert(Insert {
            xid: Some(901),
            relation_id: 16385,
            new: TupleData::default(),
        })
    );
}

#[test]
fn column_values_are_zero_copy_slices_of_the_input() {
    let bytes = concat(&[b"I", &be32(1), b"N", &be16(1), b"t", &ibe32(5), b"hello"]);
    let Message::Insert(insert) = decode_ok(&bytes, OUTSIDE) else {
        panic!("not an insert")
    };
    let value = insert.new.columns[0].as_bytes().expect("text value");
    assert_eq!(value.as_ref(), b"hello");
    let input = bytes.as_ptr_range();
    assert!(
        input.contains(&value.as_ptr()),
        "value must point into the input"
    );
    assert_eq!(value.as_ptr(), bytes[bytes.len() - 5..].as_ptr());
}

#[test]
fn update_without_old_tuple() {
    let bytes = concat(&[b"U", &be32(16385), b"N", &be16(1), b"t", &ibe32(1), b"x"]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::Update(Update {
            xid: None,
            relation_id: 16385,
            old: None,
            new: tuple(vec![text("x")]),
        })
    );
}

#[test]
fn update_with_key_tuple() {
    let bytes = concat(&[
        b"U",
        &be32(16385),
        b"K",
        &be16(2),
        b"t",
        &ibe32(1),
        b"1",
        b"n",
        b"N",
        &be16(2),
        b"t",
        &ibe32(1),
        b"2",
        b"u",
    ]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::Update(Update {
            xid: None,
            relation_id: 16385,
            old: Some(OldTuple::Key(tuple(vec![text("1"), ColumnValue::Null]))),
            new: tuple(vec![text("2"), ColumnValue::UnchangedToast]),
        })
    );
}

#[test]
fn update_with_full_old_tuple_in_stream() {
    let bytes = concat(&[
        b"U",
        &be32(33),
        &be32(16385),
        b"O",
        &every_kind_tuple_bytes(),
        b"N",
        &be16(1),
        b"n",
    ]);
    assert_eq!(
        decode_ok(&bytes, INSIDE),
        Message::Update(Update {
            xid: Some(33),
            relation_id: 16385,
            old: Some(OldTuple::Full(every_kind_tuple())),
            new: tuple(vec![ColumnValue::Null]),
        })
    );
}

#[test]
fn delete_with_key_and_with_full_old_tuple() {
    for (marker, wrap) in [
        (b"K", OldTuple::Key as fn(TupleData) -> OldTuple),
        (b"O", OldTuple::Full),
    ] {
        let bytes = concat(&[b"D", &be32(16385), marker, &be16(1), b"t", &ibe32(1), b"9"]);
        let expected_old = wrap(tuple(vec![text("9")]));
        assert_eq!(expected_old.tuple(), &tuple(vec![text("9")]));
        assert_eq!(
            decode_ok(&bytes, OUTSIDE),
            Message::Delete(Delete {
                xid: None,
                relation_id: 16385,
                old: expected_old,
            })
        );
    }
}

#[test]
fn truncate_decodes_options_and_relation_ids() {
    let bytes = concat(&[b"T", &be32(2), &[3], &be32(16385), &be32(16390)]);
    let message = decode_ok(&bytes, OUTSIDE);
    let Message::Truncate(truncate) = &message else {
        panic!("not a truncate")
    };
    assert_eq!(truncate.relation_ids, vec![16385, 16390]);
    assert!(truncate.cascade());
    assert!(truncate.restart_identity());
    assert_eq!(truncate.xid, None);

    let plain = concat(&[b"T", &be32(44), &be32(1), &[0], &be32(16385)]);
    let Message::Truncate(truncate) = decode_ok(&plain, INSIDE) else {
        panic!("not a truncate")
    };
    assert_eq!(truncate.xid, Some(44));
    assert!(!truncate.cascade());
    assert!(!truncate.restart_identity());

    let restart_only = concat(&[b"T", &be32(0), &[2]]);
    let Message::Truncate(truncate) = decode_ok(&restart_only, OUTSIDE) else {
        panic!("not a truncate")
    };
    assert!(!truncate.cascade());
    assert!(truncate.restart_identity());
    assert!(truncate.relation_ids.is_empty());
}

#[test]
fn logical_message_decodes_flags_prefix_and_content() {
    let bytes = concat(&[b"M", &[1], &be64(LSN_A), b"pgch\0", &ibe32(3), b"abc"]);
    let expected = LogicalMessage {
        xid: None,
        flags: 1,
        lsn: Lsn::new(LSN_A),
        prefix: "pgch".into(),
        content: Bytes::from_static(b"abc"),
    };
    assert!(expected.is_transactional());
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::LogicalMessage(expected)
    );

    let streamed = concat(&[b"M", &be32(5), &[0], &be64(LSN_A), b"p\0", &ibe32(0)]);
    let Message::LogicalMessage(message) = decode_ok(&streamed, INSIDE) else {
        panic!("not a logical message")
    };
    assert_eq!(message.xid, Some(5));
    assert!(!message.is_transactional());
    assert!(message.content.is_empty());
}

// ---- Streaming (v2, v4) ----

#[test]
fn stream_start_decodes_first_segment_flag() {
    for (byte, first) in [(1, true), (0, false)] {
        let bytes = concat(&[b"S", &be32(901), &[byte]]);
        assert_eq!(
            decode_ok(&bytes, OUTSIDE),
            Message::StreamStart(StreamStart {
                xid: 901,
                first_segment: first,
            })
        );
    }
}

#[test]
fn stream_stop_is_a_single_byte() {
    assert_eq!(
        decode_ok(&Bytes::from_static(b"E"), INSIDE),
        Message::StreamStop
    );
}

#[test]
fn stream_commit_decodes_documented_layout() {
    let bytes = concat(&[
        b"c",
        &be32(901),
        &[0],
        &be64(LSN_A),
        &be64(LSN_B),
        &ibe64(TS),
    ]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::StreamCommit(StreamCommit {
            xid: 901,
            flags: 0,
            commit_lsn: Lsn::new(LSN_A),
            end_lsn: Lsn::new(LSN_B),
            commit_timestamp: PgTimestamp(TS),
        })
    );
}

#[test]
fn stream_abort_without_v4_fields() {
    let bytes = concat(&[b"A", &be32(901), &be32(902)]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::StreamAbort(StreamAbort {
            xid: 901,
            subxid: 902,
            position: None,
        })
    );
}

#[test]
fn stream_abort_with_v4_parallel_fields() {
    let bytes = concat(&[b"A", &be32(901), &be32(901), &be64(LSN_A), &ibe64(TS)]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::StreamAbort(StreamAbort {
            xid: 901,
            subxid: 901,
            position: Some(StreamAbortPosition {
                abort_lsn: Lsn::new(LSN_A),
                abort_timestamp: PgTimestamp(TS),
            }),
        })
    );
}

#[test]
fn stream_abort_with_partial_v4_fields_is_an_error() {
    let bytes = concat(&[b"A", &be32(1), &be32(2), &[0; 4]]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 9,
            field: "abort LSN"
        }
    );
    let bytes = concat(&[b"A", &be32(1), &be32(2), &be64(LSN_A), &[0; 7]]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 17,
            field: "abort timestamp"
        }
    );
}

// ---- Two-phase commit (v3) ----

#[test]
fn begin_prepare_decodes_documented_layout() {
    let bytes = concat(&[
        b"b",
        &be64(LSN_A),
        &be64(LSN_B),
        &ibe64(TS),
        &be32(750),
        b"gid-1\0",
    ]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn::new(LSN_A),
            end_lsn: Lsn::new(LSN_B),
            prepare_timestamp: PgTimestamp(TS),
            xid: 750,
            gid: "gid-1".into(),
        })
    );
}

#[test]
fn prepare_and_stream_prepare_share_a_layout() {
    let body = concat(&[
        &[0],
        &be64(LSN_A),
        &be64(LSN_B),
        &ibe64(TS),
        &be32(750),
        b"g\0",
    ]);
    let expected = Prepare {
        flags: 0,
        prepare_lsn: Lsn::new(LSN_A),
        end_lsn: Lsn::new(LSN_B),
        prepare_timestamp: PgTimestamp(TS),
        xid: 750,
        gid: "g".into(),
    };
    assert_eq!(
        decode_ok(&concat(&[b"P", &body]), OUTSIDE),
        Message::Prepare(expected.clone())
    );
    assert_eq!(
        decode_ok(&concat(&[b"p", &body]), OUTSIDE),
        Message::StreamPrepare(expected)
    );
}

#[test]
fn commit_prepared_decodes_documented_layout() {
    let bytes = concat(&[
        b"K",
        &[0],
        &be64(LSN_A),
        &be64(LSN_B),
        &ibe64(TS),
        &be32(750),
        b"gid-1\0",
    ]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::CommitPrepared(CommitPrepared {
            flags: 0,
            commit_lsn: Lsn::new(LSN_A),
            end_lsn: Lsn::new(LSN_B),
            commit_timestamp: PgTimestamp(TS),
            xid: 750,
            gid: "gid-1".into(),
        })
    );
}

#[test]
fn rollback_prepared_decodes_documented_layout() {
    let bytes = concat(&[
        b"r",
        &[0],
        &be64(LSN_A),
        &be64(LSN_B),
        &ibe64(TS),
        &ibe64(TS + 5),
        &be32(750),
        b"gid-1\0",
    ]);
    assert_eq!(
        decode_ok(&bytes, OUTSIDE),
        Message::RollbackPrepared(RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn::new(LSN_A),
            rollback_end_lsn: Lsn::new(LSN_B),
            prepare_timestamp: PgTimestamp(TS),
            rollback_timestamp: PgTimestamp(TS + 5),
            xid: 750,
            gid: "gid-1".into(),
        })
    );
}

// ---- Errors and their offsets ----

#[test]
fn empty_input_is_unexpected_end_at_zero() {
    let error = decode_err(&Bytes::new(), OUTSIDE);
    assert_eq!(
        error.to_string(),
        "unexpected end of message at offset 0 while reading message type"
    );
}

#[test]
fn unknown_message_type_is_reported_in_hex() {
    let error = decode_err(&Bytes::from_static(b"Z123"), OUTSIDE);
    assert_eq!(error.to_string(), "unknown message type 0x5A at offset 0");
    assert_eq!(error.offset(), 0);
}

#[test]
fn truncated_field_reports_where_it_starts() {
    let bytes = concat(&[b"B", &be64(LSN_A), &[0; 3]]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "unexpected end of message at offset 9 while reading commit timestamp"
    );
    // Inside a stream the relation id follows the streamed xid.
    let bytes = concat(&[b"R", &be32(1), &[0, 0]]);
    assert_eq!(
        decode_err(&bytes, INSIDE).to_string(),
        "unexpected end of message at offset 5 while reading relation id"
    );
}

#[test]
fn unknown_tuple_column_kind_reports_its_offset() {
    let bytes = concat(&[b"I", &be32(1), b"N", &be16(2), b"n", b"x"]);
    let error = decode_err(&bytes, OUTSIDE);
    assert_eq!(
        error.to_string(),
        "unknown tuple column kind 0x78 at offset 9"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let bytes = concat(&[
        b"C",
        &[0],
        &be64(LSN_A),
        &be64(LSN_B),
        &ibe64(TS),
        &[1, 2, 3],
    ]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "trailing 3 bytes after Commit at offset 26"
    );
    let stop = Bytes::from_static(b"E\0");
    assert_eq!(
        decode_err(&stop, INSIDE),
        DecodeError::TrailingBytes {
            count: 1,
            message: "Stream Stop",
            offset: 1
        }
    );
}

#[test]
fn streamed_message_decoded_outside_stream_is_detected() {
    // A streamed Insert read without the stream context misreads the xid as the
    // relation id and then trips over the missing 'N' marker.
    let bytes = concat(&[b"I", &be32(901), &be32(16385), b"N", &be16(0)]);
    assert!(matches!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::UnexpectedTupleMarker { offset: 5, .. }
    ));
}

#[test]
fn unterminated_string_is_reported_where_it_starts() {
    let bytes = concat(&[b"O", &be64(LSN_A), b"no-nul"]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "unterminated string at offset 9 while reading origin name"
    );
}

#[test]
fn invalid_utf8_is_an_error_at_the_bad_byte() {
    let bytes = concat(&[b"Y", &be32(1), b"ok\0", b"ab\xFFc\0"]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::InvalidUtf8 {
            offset: 10,
            field: "type name"
        }
    );
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "invalid UTF-8 at offset 10 in type name"
    );
}

#[test]
fn multibyte_utf8_names_are_accepted() {
    let bytes = concat(&[b"O", &be64(1), "zürich-東京\0".as_bytes()]);
    let Message::Origin(origin) = decode_ok(&bytes, OUTSIDE) else {
        panic!("not an origin")
    };
    assert_eq!(origin.name, "zürich-東京");
}

#[test]
fn negative_value_length_is_an_error() {
    let bytes = concat(&[b"I", &be32(1), b"N", &be16(1), b"t", &ibe32(-1)]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "negative length -1 at offset 9 for text column value"
    );
    let bytes = concat(&[b"M", &[0], &be64(1), b"p\0", &ibe32(i32::MIN)]);
    assert!(matches!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::NegativeLength {
            offset: 12,
            field: "message content",
            ..
        }
    ));
}

#[test]
fn value_longer_than_message_is_unexpected_end() {
    let bytes = concat(&[b"I", &be32(1), b"N", &be16(1), b"b", &ibe32(100), b"short"]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 13,
            field: "binary column value"
        }
    );
}

#[test]
fn unknown_replica_identity_is_an_error() {
    let bytes = concat(&[b"R", &be32(1), b"s\0", b"t\0", b"x", &be16(0)]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "unknown replica identity 0x78 at offset 9"
    );
}

#[test]
fn wrong_tuple_markers_are_errors() {
    let insert = concat(&[b"I", &be32(1), b"K", &be16(0)]);
    assert_eq!(
        decode_err(&insert, OUTSIDE).to_string(),
        "unexpected tuple marker 0x4B at offset 5 (expected 'N')"
    );
    let update = concat(&[b"U", &be32(1), b"X", &be16(0)]);
    assert_eq!(
        decode_err(&update, OUTSIDE).to_string(),
        "unexpected tuple marker 0x58 at offset 5 (expected 'K', 'O' or 'N')"
    );
    let update_old_then_old = concat(&[b"U", &be32(1), b"O", &be16(0), b"K", &be16(0)]);
    assert_eq!(
        decode_err(&update_old_then_old, OUTSIDE),
        DecodeError::UnexpectedTupleMarker {
            byte: b'K',
            offset: 8,
            expected: "'N'"
        }
    );
    let delete = concat(&[b"D", &be32(1), b"N", &be16(0)]);
    assert_eq!(
        decode_err(&delete, OUTSIDE).to_string(),
        "unexpected tuple marker 0x4E at offset 5 (expected 'K' or 'O')"
    );
}

#[test]
fn update_with_old_tuple_but_no_new_tuple_is_unexpected_end() {
    let bytes = concat(&[b"U", &be32(1), b"K", &be16(0)]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 8,
            field: "tuple marker"
        }
    );
}

#[test]
fn huge_counts_in_short_messages_fail_without_huge_allocations() {
    let tuple = concat(&[b"I", &be32(1), b"N", &be16(u16::MAX)]);
    assert_eq!(
        decode_err(&tuple, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 8,
            field: "tuple column kind"
        }
    );
    let truncate = concat(&[b"T", &be32(u32::MAX), &[0]]);
    assert_eq!(
        decode_err(&truncate, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 6,
            field: "truncated relation id"
        }
    );
    let relation = concat(&[b"R", &be32(1), b"\0", b"\0", b"d", &be16(u16::MAX)]);
    assert!(matches!(
        decode_err(&relation, OUTSIDE),
        DecodeError::UnexpectedEnd {
            field: "column flags",
            ..
        }
    ));
}

// ---- Helpers on the decoded types ----

#[test]
fn timestamps_convert_to_unix_micros() {
    assert_eq!(
        PgTimestamp(0).to_unix_micros(),
        Some(946_684_800_000_000),
        "2000-01-01 is 946684800 s after the Unix epoch"
    );
    assert_eq!(PgTimestamp(-946_684_800_000_000).to_unix_micros(), Some(0));
    assert_eq!(PgTimestamp(i64::MAX).to_unix_micros(), None, "infinity");
    assert_eq!(
        PgTimestamp::from_unix_micros(946_684_800_000_001),
        Some(PgTimestamp(1))
    );
    assert_eq!(PgTimestamp::from_unix_micros(i64::MIN), None);
}

#[test]
fn column_value_bytes_accessor() {
    assert_eq!(ColumnValue::Null.as_bytes(), None);
    assert_eq!(ColumnValue::UnchangedToast.as_bytes(), None);
    assert_eq!(text("a").as_bytes().map(|b| b.as_ref()), Some(&b"a"[..]));
}

#[test]
fn replica_identity_rejects_unknown_bytes() {
    assert_eq!(ReplicaIdentity::from_byte(b'x'), None);
}

#[test]
fn every_sample_message_round_trips_and_has_a_type_name() {
    for (name, ctx, message) in sample_messages() {
        let bytes = Bytes::from(encode(&message));
        assert_eq!(decode(&bytes, ctx), Ok(message.clone()), "{name}");
        assert!(!message.type_name().is_empty());
    }
}

#[test]
fn encoder_tuple_matches_hand_built_bytes() {
    let mut out = Writer::default();
    encode_tuple(&mut out, &every_kind_tuple());
    assert_eq!(out.0, every_kind_tuple_bytes());
}

// ---- Fuzz seed corpus ----

/// Realistic messages of every type, written to `fuzz/corpus/decode/` as seeds.
fn sample_messages() -> Vec<(&'static str, DecodeContext, Message)> {
    let lsn = Lsn::new(0x0_0171_D3F8);
    let end = Lsn::new(0x0_0171_D428);
    let ts = PgTimestamp(784_111_234_567_890);
    let users = Relation {
        xid: None,
        id: 16385,
        namespace: "public".into(),
        name: "users".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            column(1, "id", 23, -1),
            column(0, "name", 25, -1),
            column(0, "email", 1043, 259),
            column(0, "created_at", 1184, -1),
        ],
    };
    let row = tuple(vec![
        text("1"),
        text("Ada Lovelace"),
        text("ada@example.com"),
        text("2024-11-05 10:00:00.123456+00"),
    ]);
    let key = tuple(vec![
        text("1"),
        ColumnValue::Null,
        ColumnValue::Null,
        ColumnValue::Null,
    ]);
    let updated = tuple(vec![
        text("1"),
        text("Ada King"),
        ColumnValue::UnchangedToast,
        text("2024-11-05 10:00:00.123456+00"),
    ]);
    let binary_row = tuple(vec![
        ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 2])),
        ColumnValue::Binary(Bytes::from_static(b"Grace")),
        ColumnValue::Null,
        ColumnValue::Binary(Bytes::from_static(&[0, 2, 201, 26, 114, 182, 67, 146])),
    ]);
    let prepare = Prepare {
        flags: 0,
        prepare_lsn: lsn,
        end_lsn: end,
        prepare_timestamp: ts,
        xid: 760,
        gid: "pgch-2pc-1".into(),
    };
    vec![
        (
            "begin",
            OUTSIDE,
            Message::Begin(Begin {
                final_lsn: lsn,
                commit_timestamp: ts,
                xid: 750,
            }),
        ),
        (
            "commit",
            OUTSIDE,
            Message::Commit(Commit {
                flags: 0,
                commit_lsn: lsn,
                end_lsn: end,
                commit_timestamp: ts,
            }),
        ),
        (
            "origin",
            OUTSIDE,
            Message::Origin(Origin {
                commit_lsn: lsn,
                name: "pg_16399".into(),
            }),
        ),
        ("relation", OUTSIDE, Message::Relation(users.clone())),
        (
            "relation-stream",
            INSIDE,
            Message::Relation(Relation {
                xid: Some(901),
                replica_identity: ReplicaIdentity::Full,
                ..users
            }),
        ),
        (
            "type",
            OUTSIDE,
            Message::Type(Type {
                xid: None,
                id: 16390,
                namespace: "public".into(),
                name: "mood".into(),
            }),
        ),
        (
            "insert",
            OUTSIDE,
            Message::Insert(Insert {
                xid: None,
                relation_id: 16385,
                new: row.clone(),
            }),
        ),
        (
            "insert-binary",
            OUTSIDE,
            Message::Insert(Insert {
                xid: None,
                relation_id: 16385,
                new: binary_row,
            }),
        ),
        (
            "insert-stream",
            INSIDE,
            Message::Insert(Insert {
                xid: Some(901),
                relation_id: 16385,
                new: row.clone(),
            }),
        ),
        (
            "update",
            OUTSIDE,
            Message::Update(Update {
                xid: None,
                relation_id: 16385,
                old: None,
                new: updated.clone(),
            }),
        ),
        (
            "update-key",
            OUTSIDE,
            Message::Update(Update {
                xid: None,
                relation_id: 16385,
                old: Some(OldTuple::Key(key.clone())),
                new: updated.clone(),
            }),
        ),
        (
            "update-old",
            OUTSIDE,
            Message::Update(Update {
                xid: None,
                relation_id: 16385,
                old: Some(OldTuple::Full(row.clone())),
                new: updated,
            }),
        ),
        (
            "delete-key",
            OUTSIDE,
            Message::Delete(Delete {
                xid: None,
                relation_id: 16385,
                old: OldTuple::Key(key),
            }),
        ),
        (
            "delete-old-stream",
            INSIDE,
            Message::Delete(Delete {
                xid: Some(901),
                relation_id: 16385,
                old: OldTuple::Full(row),
            }),
        ),
        (
            "truncate",
            OUTSIDE,
            Message::Truncate(Truncate {
                xid: None,
                options: Truncate::OPTION_CASCADE | Truncate::OPTION_RESTART_IDENTITY,
                relation_ids: vec![16385, 16390],
            }),
        ),
        (
            "message",
            OUTSIDE,
            Message::LogicalMessage(LogicalMessage {
                xid: None,
                flags: LogicalMessage::FLAG_TRANSACTIONAL,
                lsn,
                prefix: "pgch.marker".into(),
                content: Bytes::from_static(b"{\"checkpoint\":42}"),
            }),
        ),
        (
            "stream-start",
            OUTSIDE,
            Message::StreamStart(StreamStart {
                xid: 901,
                first_segment: true,
            }),
        ),
        ("stream-stop", INSIDE, Message::StreamStop),
        (
            "stream-commit",
            OUTSIDE,
            Message::StreamCommit(StreamCommit {
                xid: 901,
                flags: 0,
                commit_lsn: lsn,
                end_lsn: end,
                commit_timestamp: ts,
            }),
        ),
        (
            "stream-abort",
            OUTSIDE,
            Message::StreamAbort(StreamAbort {
                xid: 901,
                subxid: 905,
                position: None,
            }),
        ),
        (
            "stream-abort-v4",
            OUTSIDE,
            Message::StreamAbort(StreamAbort {
                xid: 901,
                subxid: 901,
                position: Some(StreamAbortPosition {
                    abort_lsn: lsn,
                    abort_timestamp: ts,
                }),
            }),
        ),
        (
            "begin-prepare",
            OUTSIDE,
            Message::BeginPrepare(BeginPrepare {
                prepare_lsn: lsn,
                end_lsn: end,
                prepare_timestamp: ts,
                xid: 760,
                gid: "pgch-2pc-1".into(),
            }),
        ),
        ("prepare", OUTSIDE, Message::Prepare(prepare.clone())),
        (
            "commit-prepared",
            OUTSIDE,
            Message::CommitPrepared(CommitPrepared {
                flags: 0,
                commit_lsn: lsn,
                end_lsn: end,
                commit_timestamp: ts,
                xid: 760,
                gid: "pgch-2pc-1".into(),
            }),
        ),
        (
            "rollback-prepared",
            OUTSIDE,
            Message::RollbackPrepared(RollbackPrepared {
                flags: 0,
                prepare_end_lsn: end,
                rollback_end_lsn: Lsn::new(0x0_0171_D500),
                prepare_timestamp: ts,
                rollback_timestamp: PgTimestamp(784_111_299_000_000),
                xid: 760,
                gid: "pgch-2pc-1".into(),
            }),
        ),
        ("stream-prepare", OUTSIDE, Message::StreamPrepare(prepare)),
    ]
}

fn column(flags: u8, name: &str, type_oid: Oid, type_modifier: i32) -> RelationColumn {
    RelationColumn {
        flags,
        name: name.into(),
        type_oid,
        type_modifier,
    }
}

fn seed_corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode")
}

fn seed_file_name(name: &str) -> String {
    format!("seed-{name}")
}

#[test]
fn fuzz_seed_corpus_matches_sample_messages() {
    for (name, ctx, message) in sample_messages() {
        let path = seed_corpus_dir().join(seed_file_name(name));
        let on_disk = std::fs::read(&path).unwrap_or_else(|error| {
            panic!(
                "{}: {error}; regenerate with `cargo test --lib --features testkit -- \
                 --ignored write_fuzz_seed_corpus`",
                path.display()
            )
        });
        assert_eq!(on_disk, encode(&message), "{} is stale", path.display());
        assert_eq!(decode(&Bytes::from(on_disk), ctx), Ok(message));
    }
}

#[test]
#[ignore = "writes fuzz/corpus/decode; run by hand after changing sample_messages"]
fn write_fuzz_seed_corpus() {
    let dir = seed_corpus_dir();
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    for (name, _, message) in sample_messages() {
        std::fs::write(dir.join(seed_file_name(name)), encode(&message)).expect("write seed");
    }
}

// ---- Properties ----

fn arb_context() -> impl Strategy<Value = DecodeContext> {
    any::<bool>().prop_map(|in_stream| DecodeContext { in_stream })
}

fn arb_lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn::new)
}

fn arb_timestamp() -> impl Strategy<Value = PgTimestamp> {
    any::<i64>().prop_map(PgTimestamp)
}

/// Any Unicode text without NUL, which cannot occur inside a C string.
fn arb_name() -> impl Strategy<Value = String> {
    "[^\\x00]{0,12}"
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn arb_stream_xid(in_stream: bool) -> BoxedStrategy<Option<Xid>> {
    if in_stream {
        any::<u32>().prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    }
}

fn arb_column_value() -> impl Strategy<Value = ColumnValue> {
    prop_oneof![
        Just(ColumnValue::Null),
        Just(ColumnValue::UnchangedToast),
        arb_bytes().prop_map(ColumnValue::Text),
        arb_bytes().prop_map(ColumnValue::Binary),
    ]
}

fn arb_tuple() -> impl Strategy<Value = TupleData> {
    proptest::collection::vec(arb_column_value(), 0..6).prop_map(|columns| TupleData { columns })
}

fn arb_old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        arb_tuple().prop_map(OldTuple::Key),
        arb_tuple().prop_map(OldTuple::Full),
    ]
}

fn arb_replica_identity() -> impl Strategy<Value = ReplicaIdentity> {
    prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ]
}

fn arb_relation_column() -> impl Strategy<Value = RelationColumn> {
    (any::<u8>(), arb_name(), any::<u32>(), any::<i32>()).prop_map(
        |(flags, name, type_oid, type_modifier)| RelationColumn {
            flags,
            name,
            type_oid,
            type_modifier,
        },
    )
}

fn arb_relation(in_stream: bool) -> impl Strategy<Value = Message> {
    (
        arb_stream_xid(in_stream),
        any::<u32>(),
        arb_name(),
        arb_name(),
        arb_replica_identity(),
        proptest::collection::vec(arb_relation_column(), 0..5),
    )
        .prop_map(|(xid, id, namespace, name, replica_identity, columns)| {
            Message::Relation(Relation {
                xid,
                id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        })
}

fn arb_type(in_stream: bool) -> impl Strategy<Value = Message> {
    (
        arb_stream_xid(in_stream),
        any::<u32>(),
        arb_name(),
        arb_name(),
    )
        .prop_map(|(xid, id, namespace, name)| {
            Message::Type(Type {
                xid,
                id,
                namespace,
                name,
            })
        })
}

fn arb_row_change(in_stream: bool) -> impl Strategy<Value = Message> {
    let insert = (arb_stream_xid(in_stream), any::<u32>(), arb_tuple()).prop_map(
        |(xid, relation_id, new)| {
            Message::Insert(Insert {
                xid,
                relation_id,
                new,
            })
        },
    );
    let update = (
        arb_stream_xid(in_stream),
        any::<u32>(),
        proptest::option::of(arb_old_tuple()),
        arb_tuple(),
    )
        .prop_map(|(xid, relation_id, old, new)| {
            Message::Update(Update {
                xid,
                relation_id,
                old,
                new,
            })
        });
    let delete = (arb_stream_xid(in_stream), any::<u32>(), arb_old_tuple()).prop_map(
        |(xid, relation_id, old)| {
            Message::Delete(Delete {
                xid,
                relation_id,
                old,
            })
        },
    );
    prop_oneof![insert, update, delete]
}

fn arb_truncate_or_logical_message(in_stream: bool) -> impl Strategy<Value = Message> {
    let truncate = (
        arb_stream_xid(in_stream),
        any::<u8>(),
        proptest::collection::vec(any::<u32>(), 0..5),
    )
        .prop_map(|(xid, options, relation_ids)| {
            Message::Truncate(Truncate {
                xid,
                options,
                relation_ids,
            })
        });
    let logical = (
        arb_stream_xid(in_stream),
        any::<u8>(),
        arb_lsn(),
        arb_name(),
        arb_bytes(),
    )
        .prop_map(|(xid, flags, lsn, prefix, content)| {
            Message::LogicalMessage(LogicalMessage {
                xid,
                flags,
                lsn,
                prefix,
                content,
            })
        });
    prop_oneof![truncate, logical]
}

fn arb_transaction_message() -> impl Strategy<Value = Message> {
    let begin = (arb_lsn(), arb_timestamp(), any::<u32>()).prop_map(
        |(final_lsn, commit_timestamp, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_timestamp,
                xid,
            })
        },
    );
    let commit = (any::<u8>(), arb_lsn(), arb_lsn(), arb_timestamp()).prop_map(
        |(flags, commit_lsn, end_lsn, commit_timestamp)| {
            Message::Commit(Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_timestamp,
            })
        },
    );
    let origin = (arb_lsn(), arb_name())
        .prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name }));
    prop_oneof![begin, commit, origin]
}

fn arb_stream_control_message() -> impl Strategy<Value = Message> {
    let start = (any::<u32>(), any::<bool>())
        .prop_map(|(xid, first_segment)| Message::StreamStart(StreamStart { xid, first_segment }));
    let commit = (
        any::<u32>(),
        any::<u8>(),
        arb_lsn(),
        arb_lsn(),
        arb_timestamp(),
    )
        .prop_map(|(xid, flags, commit_lsn, end_lsn, commit_timestamp)| {
            Message::StreamCommit(StreamCommit {
                xid,
                flags,
                commit_lsn,
                end_lsn,
                commit_timestamp,
            })
        });
    let position =
        (arb_lsn(), arb_timestamp()).prop_map(|(abort_lsn, abort_timestamp)| StreamAbortPosition {
            abort_lsn,
            abort_timestamp,
        });
    let abort = (any::<u32>(), any::<u32>(), proptest::option::of(position)).prop_map(
        |(xid, subxid, position)| {
            Message::StreamAbort(StreamAbort {
                xid,
                subxid,
                position,
            })
        },
    );
    prop_oneof![start, Just(Message::StreamStop), commit, abort]
}

fn arb_prepare() -> impl Strategy<Value = Prepare> {
    (
        any::<u8>(),
        arb_lsn(),
        arb_lsn(),
        arb_timestamp(),
        any::<u32>(),
        arb_name(),
    )
        .prop_map(
            |(flags, prepare_lsn, end_lsn, prepare_timestamp, xid, gid)| Prepare {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_timestamp,
                xid,
                gid,
            },
        )
}

fn arb_two_phase_message() -> impl Strategy<Value = Message> {
    let begin_prepare = arb_prepare().prop_map(|p| {
        Message::BeginPrepare(BeginPrepare {
            prepare_lsn: p.prepare_lsn,
            end_lsn: p.end_lsn,
            prepare_timestamp: p.prepare_timestamp,
            xid: p.xid,
            gid: p.gid,
        })
    });
    let commit_prepared = arb_prepare().prop_map(|p| {
        Message::CommitPrepared(CommitPrepared {
            flags: p.flags,
            commit_lsn: p.prepare_lsn,
            end_lsn: p.end_lsn,
            commit_timestamp: p.prepare_timestamp,
            xid: p.xid,
            gid: p.gid,
        })
    });
    let rollback_prepared = (arb_prepare(), arb_timestamp()).prop_map(|(p, rollback_timestamp)| {
        Message::RollbackPrepared(RollbackPrepared {
            flags: p.flags,
            prepare_end_lsn: p.prepare_lsn,
            rollback_end_lsn: p.end_lsn,
            prepare_timestamp: p.prepare_timestamp,
            rollback_timestamp,
            xid: p.xid,
            gid: p.gid,
        })
    });
    prop_oneof![
        begin_prepare,
        arb_prepare().prop_map(Message::Prepare),
        commit_prepared,
        rollback_prepared,
        arb_prepare().prop_map(Message::StreamPrepare),
    ]
}

/// A valid message together with the context it must be decoded in: messages
/// that can carry a streamed xid carry one exactly when `in_stream` is set.
fn arb_context_and_message() -> impl Strategy<Value = (DecodeContext, Message)> {
    any::<bool>().prop_flat_map(|in_stream| {
        let message = Union::new(vec![
            arb_transaction_message().boxed(),
            arb_relation(in_stream).boxed(),
            arb_type(in_stream).boxed(),
            arb_row_change(in_stream).boxed(),
            arb_truncate_or_logical_message(in_stream).boxed(),
            arb_stream_control_message().boxed(),
            arb_two_phase_message().boxed(),
        ]);
        (Just(DecodeContext { in_stream }), message)
    })
}

/// Type bytes of every known message, to steer random bodies past dispatch.
const TYPE_BYTES: &[u8] = b"BCORYIUDTMSEcAbPKrp";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..256),
        ctx in arb_context(),
    ) {
        let _ = decode(&Bytes::from(input), ctx);
    }

    #[test]
    fn arbitrary_bodies_of_known_types_never_panic(
        type_index in 0..TYPE_BYTES.len(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        ctx in arb_context(),
    ) {
        let mut input = vec![TYPE_BYTES[type_index]];
        input.extend(body);
        let _ = decode(&Bytes::from(input), ctx);
    }

    #[test]
    fn encode_then_decode_round_trips((ctx, message) in arb_context_and_message()) {
        let bytes = Bytes::from(encode(&message));
        prop_assert_eq!(decode(&bytes, ctx), Ok(message));
    }

    #[test]
    fn every_strict_prefix_of_a_message_is_rejected(
        (ctx, message) in arb_context_and_message(),
    ) {
        let bytes = Bytes::from(encode(&message));
        for len in 0..bytes.len() {
            let result = decode(&bytes.slice(..len), ctx);
            // A v4 Stream Abort cut back to its v2 length is itself valid.
            let v2_abort = matches!(result, Ok(Message::StreamAbort(StreamAbort { position: None, .. })));
            prop_assert!(result.is_err() || (v2_abort && len == 9), "prefix {} decoded", len);
        }
    }

    #[test]
    fn appended_bytes_are_rejected(
        (ctx, message) in arb_context_and_message(),
        extra in proptest::collection::vec(any::<u8>(), 1..4),
    ) {
        let mut bytes = encode(&message);
        let offset = bytes.len();
        bytes.extend(&extra);
        let result = decode(&Bytes::from(bytes), ctx);
        if !matches!(message, Message::StreamAbort(_)) {
            prop_assert_eq!(
                result,
                Err(DecodeError::TrailingBytes { count: extra.len(), message: message.type_name(), offset })
            );
        } else {
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn corrupted_messages_never_panic(
        (ctx, message) in arb_context_and_message(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = encode(&message);
        let index = position.index(bytes.len());
        bytes[index] = byte;
        let _ = decode(&Bytes::from(bytes), ctx);
    }

    #[test]
    fn error_offsets_lie_within_the_input(
        input in proptest::collection::vec(any::<u8>(), 0..128),
        ctx in arb_context(),
    ) {
        let len = input.len();
        if let Err(error) = decode(&Bytes::from(input), ctx) {
            prop_assert!(error.offset() <= len, "{} beyond {}", error, len);
        }
    }
}
