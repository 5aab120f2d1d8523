//! Properties over generated input: no panic, round trips, prefixes rejected.

use super::*;

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
