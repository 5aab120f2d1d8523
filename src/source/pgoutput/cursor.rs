//! A read position in a message with checked, offset-reporting reads.
//!
//! Every read either returns the value or a [`DecodeError`] naming the field and
//! where it started; none can panic, whatever the input.

use bytes::Bytes;

use super::error::DecodeError;
use super::message::PgTimestamp;
use crate::lsn::Lsn;

/// Reads big-endian protocol fields from a shared buffer, front to back.
pub(super) struct Cursor<'a> {
    buf: &'a Bytes,
    position: usize,
}

impl<'a> Cursor<'a> {
    /// Starts reading at the first byte of `buf`.
    pub(super) const fn new(buf: &'a Bytes) -> Self {
        Cursor { buf, position: 0 }
    }

    /// The offset of the next byte to read.
    pub(super) const fn position(&self) -> usize {
        self.position
    }

    /// How many bytes are left unread.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.position)
    }

    /// The unread bytes.
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.position..).unwrap_or_default()
    }

    /// The offset `len` bytes ahead, if that many bytes are left.
    fn end_of(&self, len: usize, field: &'static str) -> Result<usize, DecodeError> {
        match self.position.checked_add(len) {
            Some(end) if end <= self.buf.len() => Ok(end),
            _ => Err(DecodeError::UnexpectedEnd {
                offset: self.position,
                field,
            }),
        }
    }

    /// Takes the next `N` bytes as an array.
    fn read_array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let end = self.end_of(N, field)?;
        let array = self
            .buf
            .get(self.position..end)
            .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
            .ok_or(DecodeError::UnexpectedEnd {
                offset: self.position,
                field,
            })?;
        self.position = end;
        Ok(array)
    }

    /// Reads a `Byte1` / `Int8`.
    pub(super) fn read_u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.read_array::<1>(field).map(|[byte]| byte)
    }

    /// Reads an `Int16` as the unsigned count Postgres's reader treats it as.
    pub(super) fn read_u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.read_array(field).map(u16::from_be_bytes)
    }

    /// Reads an `Int32` as unsigned (OIDs, xids, counts).
    pub(super) fn read_u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.read_array(field).map(u32::from_be_bytes)
    }

    /// Reads a signed `Int32` (type modifiers, lengths).
    pub(super) fn read_i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.read_array(field).map(i32::from_be_bytes)
    }

    /// Reads an `Int64` LSN.
    pub(super) fn read_lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.read_array(field)
            .map(|bytes| Lsn::new(u64::from_be_bytes(bytes)))
    }

    /// Reads an `Int64` timestamp (microseconds since 2000-01-01).
    pub(super) fn read_timestamp(
        &mut self,
        field: &'static str,
    ) -> Result<PgTimestamp, DecodeError> {
        self.read_array(field)
            .map(|bytes| PgTimestamp(i64::from_be_bytes(bytes)))
    }

    /// Takes the next `len` bytes as a zero-copy slice of the buffer.
    pub(super) fn read_slice(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<Bytes, DecodeError> {
        let end = self.end_of(len, field)?;
        let slice = self.buf.slice(self.position..end);
        self.position = end;
        Ok(slice)
    }

    /// Reads an `Int32` length followed by that many bytes, as a zero-copy slice.
    pub(super) fn read_length_prefixed(
        &mut self,
        length_field: &'static str,
        field: &'static str,
    ) -> Result<Bytes, DecodeError> {
        let offset = self.position;
        let length = self.read_i32(length_field)?;
        let len = usize::try_from(length).map_err(|_| DecodeError::NegativeLength {
            length,
            offset,
            field,
        })?;
        self.read_slice(len, field)
    }

    /// Reads a NUL-terminated string, which must be valid UTF-8.
    pub(super) fn read_string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let start = self.position;
        let rest = self.rest();
        let unterminated = DecodeError::UnterminatedString {
            offset: start,
            field,
        };
        let len = rest
            .iter()
            .position(|&byte| byte == 0)
            .ok_or(unterminated)?;
        let bytes = rest.get(..len).unwrap_or_default();
        let text = std::str::from_utf8(bytes).map_err(|error| DecodeError::InvalidUtf8 {
            offset: start.saturating_add(error.valid_up_to()),
            field,
        })?;
        // The string and its NUL are within the buffer, so this cannot overflow.
        self.position = start.saturating_add(len).saturating_add(1);
        Ok(text.to_owned())
    }

    /// Succeeds only if every byte has been read; `message` names what was decoded.
    pub(super) fn expect_end(&self, message: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                count,
                message,
                offset: self.position,
            }),
        }
    }
}
