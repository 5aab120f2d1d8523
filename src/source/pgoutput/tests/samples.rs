//! Realistic sample messages, also written to fuzz/corpus/decode as seeds.

use super::*;

// ---- Fuzz seed corpus ----

/// Realistic messages of every type, written to `fuzz/corpus/decode/` as seeds.
pub(super) fn sample_messages() -> Vec<(&'static str, DecodeContext, Message)> {
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
