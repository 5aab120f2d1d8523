//! Inserts of rows that pgch encoded itself: `INSERT … FORMAT RowBinary` through the
//! clickhouse crate's `insert_formatted_with`, streamed in chunks, always synchronous
//! (`async_insert=0`: an acknowledged insert is a durable insert, DESIGN.md rule 5),
//! each with its own `query_id` so a running insert can be found and waited for.

use bytes::{Bytes, BytesMut};
use clickhouse::insert_formatted::InsertFormatted;
use clickhouse::Client;

use super::client::{self, SinkError};
use super::preflight::quote_ident;
use crate::config::DestinationSettings;

/// Bytes buffered before a chunk goes out on the wire.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// One running `INSERT … FORMAT RowBinary`.
pub struct RowBinaryInsert<'a> {
    insert: InsertFormatted,
    buf: BytesMut,
    rows: u64,
    bytes: u64,
    settings: &'a DestinationSettings,
    /// The `query_id` ClickHouse knows this insert by.
    pub query_id: String,
}

impl<'a> RowBinaryInsert<'a> {
    /// Starts an insert into `table` (in the destination database) of `columns`.
    pub fn start(
        client: &Client,
        settings: &'a DestinationSettings,
        table: &str,
        columns: &[String],
        query_id: String,
        json_as_string: bool,
    ) -> Self {
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let sql = format!(
            "INSERT INTO {}.{} ({}) FORMAT RowBinary",
            quote_ident(&settings.database),
            quote_ident(table),
            cols.join(", ")
        );
        let insert = client
            .insert_formatted_with(sql)
            .with_setting("async_insert", "0")
            .with_setting("query_id", query_id.clone());
        // `JSON` values are written as RowBinary strings; the setting is sent only then
        // (servers before JSON lack it).
        let insert = if json_as_string {
            insert.with_setting("input_format_binary_read_json_as_string", "1")
        } else {
            insert
        };
        RowBinaryInsert {
            insert,
            buf: BytesMut::with_capacity(CHUNK_BYTES + 64 * 1024),
            rows: 0,
            bytes: 0,
            settings,
            query_id,
        }
    }

    /// The buffer to encode the next row into; call [`RowBinaryInsert::row_done`] after.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Counts a row encoded into [`RowBinaryInsert::buffer`] and sends a chunk when due.
    pub async fn row_done(&mut self) -> Result<(), SinkError> {
        self.rows += 1;
        if self.buf.len() >= CHUNK_BYTES {
            self.send_chunk().await?;
        }
        Ok(())
    }

    async fn send_chunk(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk: Bytes = self.buf.split().freeze();
        self.bytes += chunk.len() as u64;
        self.insert
            .send(chunk)
            .await
            .map_err(|e| client::describe(self.settings, &e))
    }

    /// Sends rows encoded elsewhere (`rows` of them, in `body`) without copying them: in
    /// chunks that share `body`'s memory.
    pub async fn send_encoded(&mut self, body: &Bytes, rows: u64) -> Result<(), SinkError> {
        self.send_chunk().await?;
        self.rows += rows;
        let mut at = 0;
        while at < body.len() {
            let end = (at + CHUNK_BYTES).min(body.len());
            let chunk = body.slice(at..end);
            self.bytes += chunk.len() as u64;
            self.insert
                .send(chunk)
                .await
                .map_err(|e| client::describe(self.settings, &e))?;
            at = end;
        }
        Ok(())
    }

    /// Rows encoded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes sent plus bytes still buffered.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.buf.len() as u64
    }

    /// Sends the rest and waits until ClickHouse has stored every row.
    pub async fn finish(mut self) -> Result<u64, SinkError> {
        self.send_chunk().await?;
        let rows = self.rows;
        self.insert
            .end()
            .await
            .map_err(|e| client::describe(self.settings, &e))?;
        Ok(rows)
    }
}
