//! The decoded forms of pgoutput messages.
//!
//! Field names follow the protocol documentation so the two can be read side by
//! side. Flag bytes are kept raw (with helper methods) so that bits a newer server
//! might set are not lost.

use bytes::Bytes;

use crate::lsn::Lsn;

/// A PostgreSQL object id (relation or type), as sent on the wire.
pub type Oid = u32;

/// A PostgreSQL transaction id (32-bit `TransactionId`), as sent on the wire.
pub type Xid = u32;

/// A PostgreSQL timestamp: microseconds since 2000-01-01 00:00:00 UTC.
///
/// Kept as the raw value the server sent so nothing is lost (Postgres's `infinity`
/// is `i64::MAX`); convert with [`PgTimestamp::to_unix_micros`] when needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Microseconds from the Unix epoch (1970-01-01) to the Postgres epoch (2000-01-01).
    pub const UNIX_TO_POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

    /// Microseconds since the Unix epoch, for ClickHouse columns and lag metrics;
    /// `None` when the value is out of range (such as Postgres's `infinity`).
    pub const fn to_unix_micros(self) -> Option<i64> {
        self.0.checked_add(Self::UNIX_TO_POSTGRES_EPOCH_MICROS)
    }

    /// The Postgres form of a Unix time, for messages pgch sends back (standby
    /// status updates use the same epoch); `None` when out of range.
    pub const fn from_unix_micros(unix_micros: i64) -> Option<Self> {
        match unix_micros.checked_sub(Self::UNIX_TO_POSTGRES_EPOCH_MICROS) {
            Some(micros) => Some(PgTimestamp(micros)),
            None => None,
        }
    }
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `B`: a transaction starts.
    Begin(Begin),
    /// `C`: the transaction started by the last Begin commits.
    Commit(Commit),
    /// `O`: the transaction came from another node (replication origin).
    Origin(Origin),
    /// `R`: the layout of a table, sent before its first row change.
    Relation(Relation),
    /// `Y`: the name of a non-builtin type used by a following Relation.
    Type(Type),
    /// `I`: a row was inserted.
    Insert(Insert),
    /// `U`: a row was updated.
    Update(Update),
    /// `D`: a row was deleted.
    Delete(Delete),
    /// `T`: tables were truncated.
    Truncate(Truncate),
    /// `M`: a logical decoding message (`pg_logical_emit_message`).
    LogicalMessage(LogicalMessage),
    /// `S` (v2): the following messages belong to an in-progress transaction.
    StreamStart(StreamStart),
    /// `E` (v2): the current stream segment ends.
    StreamStop,
    /// `c` (v2): a streamed transaction commits.
    StreamCommit(StreamCommit),
    /// `A` (v2, extended in v4): a streamed (sub)transaction aborts.
    StreamAbort(StreamAbort),
    /// `b` (v3): a transaction prepared for two-phase commit starts.
    BeginPrepare(BeginPrepare),
    /// `P` (v3): the transaction is prepared (`PREPARE TRANSACTION`).
    Prepare(Prepare),
    /// `K` (v3): a prepared transaction commits (`COMMIT PREPARED`).
    CommitPrepared(CommitPrepared),
    /// `r` (v3): a prepared transaction rolls back (`ROLLBACK PREPARED`).
    RollbackPrepared(RollbackPrepared),
    /// `p` (v3): a streamed transaction is prepared; same layout as Prepare.
    StreamPrepare(Prepare),
}

impl Message {
    /// The protocol's name for this message, for logs and error messages.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Message::Begin(_) => "Begin",
            Message::Commit(_) => "Commit",
            Message::Origin(_) => "Origin",
            Message::Relation(_) => "Relation",
            Message::Type(_) => "Type",
            Message::Insert(_) => "Insert",
            Message::Update(_) => "Update",
            Message::Delete(_) => "Delete",
            Message::Truncate(_) => "Truncate",
            Message::LogicalMessage(_) => "Message",
            Message::StreamStart(_) => "Stream Start",
            Message::StreamStop => "Stream Stop",
            Message::StreamCommit(_) => "Stream Commit",
            Message::StreamAbort(_) => "Stream Abort",
            Message::BeginPrepare(_) => "Begin Prepare",
            Message::Prepare(_) => "Prepare",
            Message::CommitPrepared(_) => "Commit Prepared",
            Message::RollbackPrepared(_) => "Rollback Prepared",
            Message::StreamPrepare(_) => "Stream Prepare",
        }
    }
}

/// `B`: start of a transaction; tells where it will end and when it committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// When the transaction committed.
    pub commit_timestamp: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
}

/// `C`: commit of the current transaction; its `end_lsn` is what to confirm once applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Currently unused by Postgres (always 0); kept raw.
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record.
    pub end_lsn: Lsn,
    /// When the transaction committed.
    pub commit_timestamp: PgTimestamp,
}

/// `O`: the current transaction was replicated from another node; lets pgch
/// recognise changes that came through some other replication path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The commit LSN on the origin server.
    pub commit_lsn: Lsn,
    /// The name of the replication origin.
    pub name: String,
}

/// Which old values Postgres logs for updates and deletes (`ALTER TABLE ... REPLICA IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key columns.
    Default,
    /// `n`: nothing; updates and deletes carry no old values.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// The byte used on the wire (`relreplident`).
    pub const fn as_byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => b'd',
            ReplicaIdentity::Nothing => b'n',
            ReplicaIdentity::Full => b'f',
            ReplicaIdentity::Index => b'i',
        }
    }

    /// The setting for a wire byte, or `None` for an unknown one.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'd' => Some(ReplicaIdentity::Default),
            b'n' => Some(ReplicaIdentity::Nothing),
            b'f' => Some(ReplicaIdentity::Full),
            b'i' => Some(ReplicaIdentity::Index),
            _ => None,
        }
    }
}

/// `R`: the layout of a published table. Row messages refer to it by `id` only,
/// so the caller must keep the latest one per id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The relation's OID.
    pub id: Oid,
    /// The schema; empty for `pg_catalog`.
    pub namespace: String,
    /// The table name.
    pub name: String,
    /// Which old values updates and deletes will carry.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in the order tuples list them.
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Column flags; bit 1 marks a key column. Kept raw for future bits.
    pub flags: u8,
    /// The column name.
    pub name: String,
    /// The OID of the column's type.
    pub type_oid: Oid,
    /// The type modifier (`atttypmod`), e.g. length or precision; -1 when none.
    pub type_modifier: i32,
}

impl RelationColumn {
    /// Flag bit marking a column that is part of the replica identity key.
    pub const FLAG_KEY: u8 = 1;

    /// Whether the column is part of the replica identity key, which is how
    /// pgch finds the row an update or delete refers to.
    pub const fn is_key(&self) -> bool {
        self.flags & Self::FLAG_KEY != 0
    }
}

/// `Y`: names a type that is not built in, so the caller can interpret columns of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The type's OID.
    pub id: Oid,
    /// The schema; empty for `pg_catalog`.
    pub namespace: String,
    /// The type name.
    pub name: String,
}

/// One column value of a tuple. Values are slices of the decoded buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged TOASTed value that was not sent; keep the old one.
    UnchangedToast,
    /// `t`: the value in the type's text output form.
    Text(Bytes),
    /// `b`: the value in the type's binary send form (only with `binary = true`).
    Binary(Bytes),
}

impl ColumnValue {
    /// The value's bytes, for `Text` and `Binary`; `None` for `Null` and `UnchangedToast`.
    pub const fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            ColumnValue::Text(bytes) | ColumnValue::Binary(bytes) => Some(bytes),
            ColumnValue::Null | ColumnValue::UnchangedToast => None,
        }
    }
}

/// A row's column values, in the column order of its [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    /// One entry per column.
    pub columns: Vec<ColumnValue>,
}

/// The old row carried by an Update or Delete; which kind depends on the table's
/// replica identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the key columns are meaningful (others are null).
    Key(TupleData),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData),
}

impl OldTuple {
    /// The column values, whatever the kind.
    pub const fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(tuple) | OldTuple::Full(tuple) => tuple,
        }
    }
}

/// `I`: a new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The relation's OID.
    pub relation_id: Oid,
    /// The inserted row.
    pub new: TupleData,
}

/// `U`: a changed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The relation's OID.
    pub relation_id: Oid,
    /// The old key or row; absent when the key did not change (and the replica
    /// identity is not FULL) or when the replica identity is NOTHING.
    pub old: Option<OldTuple>,
    /// The new row.
    pub new: TupleData,
}

/// `D`: a removed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The relation's OID.
    pub relation_id: Oid,
    /// The old key or row that identifies what was deleted.
    pub old: OldTuple,
}

/// `T`: `TRUNCATE` of one or more tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// Option bits: 1 = `CASCADE`, 2 = `RESTART IDENTITY`. Kept raw.
    pub options: u8,
    /// The OIDs of the truncated relations.
    pub relation_ids: Vec<Oid>,
}

impl Truncate {
    /// Option bit for `TRUNCATE ... CASCADE`.
    pub const OPTION_CASCADE: u8 = 1;
    /// Option bit for `TRUNCATE ... RESTART IDENTITY`.
    pub const OPTION_RESTART_IDENTITY: u8 = 2;

    /// Whether the truncate cascaded to referencing tables.
    pub const fn cascade(&self) -> bool {
        self.options & Self::OPTION_CASCADE != 0
    }

    /// Whether owned sequences were reset.
    pub const fn restart_identity(&self) -> bool {
        self.options & Self::OPTION_RESTART_IDENTITY != 0
    }
}

/// `M`: a message written with `pg_logical_emit_message`, which applications use
/// to pass markers through the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// Flag bits: 1 = transactional. Kept raw.
    pub flags: u8,
    /// The LSN of the message.
    pub lsn: Lsn,
    /// The prefix given to `pg_logical_emit_message`.
    pub prefix: String,
    /// The content, a slice of the decoded buffer.
    pub content: Bytes,
}

impl LogicalMessage {
    /// Flag bit of a transactional message.
    pub const FLAG_TRANSACTIONAL: u8 = 1;

    /// Whether the message belongs to the enclosing transaction (and is only
    /// delivered if it commits) rather than being emitted immediately.
    pub const fn is_transactional(&self) -> bool {
        self.flags & Self::FLAG_TRANSACTIONAL != 0
    }
}

/// `S`: start of a segment of an in-progress (streamed) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// The streamed transaction.
    pub xid: Xid,
    /// Whether this is the first segment for this transaction.
    pub first_segment: bool,
}

/// `c`: a streamed transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    /// The streamed transaction.
    pub xid: Xid,
    /// Currently unused by Postgres (always 0); kept raw.
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record.
    pub end_lsn: Lsn,
    /// When the transaction committed.
    pub commit_timestamp: PgTimestamp,
}

/// The abort position a version 4 Stream Abort carries with `streaming = parallel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbortPosition {
    /// The LSN of the abort record.
    pub abort_lsn: Lsn,
    /// When the abort happened.
    pub abort_timestamp: PgTimestamp,
}

/// `A`: a streamed transaction, or one of its subtransactions, aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    /// The top-level streamed transaction.
    pub xid: Xid,
    /// The aborting subtransaction; equal to `xid` when the whole transaction aborts.
    pub subxid: Xid,
    /// Present only in version 4 with parallel streaming (told apart by length).
    pub position: Option<StreamAbortPosition>,
}

/// `b`: start of a transaction being prepared for two-phase commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    /// The LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// The LSN just past the prepare record.
    pub end_lsn: Lsn,
    /// When the transaction was prepared.
    pub prepare_timestamp: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
    /// The user-chosen global transaction id.
    pub gid: String,
}

/// `P` and `p`: a transaction (streamed, for `p`) has been prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Currently unused by Postgres (always 0); kept raw.
    pub flags: u8,
    /// The LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// The LSN just past the prepare record.
    pub end_lsn: Lsn,
    /// When the transaction was prepared.
    pub prepare_timestamp: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
    /// The user-chosen global transaction id.
    pub gid: String,
}

/// `K`: a prepared transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    /// Currently unused by Postgres (always 0); kept raw.
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record.
    pub end_lsn: Lsn,
    /// When the transaction committed.
    pub commit_timestamp: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
    /// The user-chosen global transaction id.
    pub gid: String,
}

/// `r`: a prepared transaction rolls back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// Currently unused by Postgres (always 0); kept raw.
    pub flags: u8,
    /// The end LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// The end LSN of the rollback.
    pub rollback_end_lsn: Lsn,
    /// When the transaction was prepared.
    pub prepare_timestamp: PgTimestamp,
    /// When the transaction was rolled back.
    pub rollback_timestamp: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
    /// The user-chosen global transaction id.
    pub gid: String,
}
