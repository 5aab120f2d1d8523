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

use layout::{every_kind_tuple, every_kind_tuple_bytes};
use samples::sample_messages;

mod errors;
mod layout;
mod properties;
mod samples;
