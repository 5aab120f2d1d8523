//! Why a pgoutput message could not be decoded.

/// What was wrong with a message and at which byte offset (from the start of the
/// message, i.e. its type byte), so a bad payload can be located in a hex dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended in the middle of a field.
    #[error("unexpected end of message at offset {offset} while reading {field}")]
    UnexpectedEnd {
        /// Where the field starts.
        offset: usize,
        /// The field being read.
        field: &'static str,
    },
    /// The first byte is not a known message type.
    #[error("unknown message type 0x{byte:02X} at offset {offset}")]
    UnknownMessageType {
        /// The type byte.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// A tuple column is not `n`, `u`, `t` or `b`.
    #[error("unknown tuple column kind 0x{byte:02X} at offset {offset}")]
    UnknownTupleColumnKind {
        /// The kind byte.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// A Relation's replica identity is not `d`, `n`, `f` or `i`.
    #[error("unknown replica identity 0x{byte:02X} at offset {offset}")]
    UnknownReplicaIdentity {
        /// The replica identity byte.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// An Update or Delete has the wrong byte where `K`, `O` or `N` should be.
    #[error("unexpected tuple marker 0x{byte:02X} at offset {offset} (expected {expected})")]
    UnexpectedTupleMarker {
        /// The byte found.
        byte: u8,
        /// Where it is.
        offset: usize,
        /// What was allowed there.
        expected: &'static str,
    },
    /// A string has no terminating NUL before the end of the message.
    #[error("unterminated string at offset {offset} while reading {field}")]
    UnterminatedString {
        /// Where the string starts.
        offset: usize,
        /// The field being read.
        field: &'static str,
    },
    /// A string is not valid UTF-8 (pgch requires a UTF-8 server encoding).
    #[error("invalid UTF-8 at offset {offset} in {field}")]
    InvalidUtf8 {
        /// Where the first invalid byte is.
        offset: usize,
        /// The field being read.
        field: &'static str,
    },
    /// A length field is negative.
    #[error("negative length {length} at offset {offset} for {field}")]
    NegativeLength {
        /// The length found.
        length: i32,
        /// Where the length field is.
        offset: usize,
        /// What the length is of.
        field: &'static str,
    },
    /// The message is longer than its fields.
    #[error("trailing {count} bytes after {message} at offset {offset}")]
    TrailingBytes {
        /// How many bytes are left over.
        count: usize,
        /// The protocol name of the message decoded.
        message: &'static str,
        /// Where the leftover bytes start.
        offset: usize,
    },
}

impl DecodeError {
    /// The byte offset the error refers to, for logs that dump the payload.
    pub const fn offset(&self) -> usize {
        match self {
            DecodeError::UnexpectedEnd { offset, .. }
            | DecodeError::UnknownMessageType { offset, .. }
            | DecodeError::UnknownTupleColumnKind { offset, .. }
            | DecodeError::UnknownReplicaIdentity { offset, .. }
            | DecodeError::UnexpectedTupleMarker { offset, .. }
            | DecodeError::UnterminatedString { offset, .. }
            | DecodeError::InvalidUtf8 { offset, .. }
            | DecodeError::NegativeLength { offset, .. }
            | DecodeError::TrailingBytes { offset, .. } => *offset,
        }
    }
}
