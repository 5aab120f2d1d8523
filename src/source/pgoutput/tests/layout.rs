//! Every message type decodes as the protocol documentation lays it out.

use super::*;

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
pub(super) fn every_kind_tuple_bytes() -> Vec<u8> {
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

pub(super) fn every_kind_tuple() -> TupleData {
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
