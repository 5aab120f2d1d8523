//! Copies one partition of one table: `COPY (SELECT …) TO STDOUT` in text format, each
//! value un-escaped to Postgres' own text output and encoded to RowBinary by the same
//! encoder the stream uses (DESIGN.md rule 4), with `_version = 0` (rule 2), streamed
//! into one ClickHouse insert. Memory stays at one chunk whatever the table size.

use std::borrow::Cow;

use bytes::BufMut;
use futures_util::StreamExt;

use super::control::TableGate;
use super::plan::TablePlan;
use crate::config::DestinationSettings;
use crate::sink::client::SinkError;
use crate::sink::rowbinary::{encode_value, ClampCounts, EncodeError};
use crate::sink::writer::RowBinaryInsert;
use crate::source::catalog::quote_ident;
use crate::source::copy_text::{decode_row, CopyTextError};

/// A block range `[start, end)` of the table's heap (`ctid` pages), or the whole table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRange {
    pub start: u64,
    /// `None`: to the end of the table.
    pub end: Option<u64>,
}

impl BlockRange {
    /// The state key fragment for this partition.
    pub fn label(&self) -> String {
        match self.end {
            Some(end) => format!("{}-{end}", self.start),
            None => format!("{}-", self.start),
        }
    }
}

/// The state key fragment of a partition (`all` for a whole-table copy).
pub fn partition_label(range: Option<BlockRange>) -> String {
    range.map(|r| r.label()).unwrap_or_else(|| "all".into())
}

/// Why a partition copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("COPY of {table} failed: {source}")]
    Postgres {
        table: String,
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{table}: {source}")]
    Row {
        table: String,
        source: CopyTextError,
    },
    #[error("{table}: COPY sent the row address \"{value}\", which is no ctid")]
    Ctid { table: String, value: String },
    #[error("the copy of {0} was cancelled by a TRUNCATE")]
    Cancelled(String),
    #[error("{table}.{column}: {source}")]
    Encode {
        table: String,
        column: String,
        source: EncodeError,
    },
}

/// What one partition copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub rows: u64,
    pub bytes: u64,
}

/// One partition to copy.
pub struct CopyTask<'a> {
    pub plan: &'a TablePlan,
    pub range: Option<BlockRange>,
    /// The insert's `query_id` (see [`crate::sink::inflight::copy_query_prefix`]).
    pub query_id: String,
    /// The table's gate: the copy stops when a TRUNCATE cancels it.
    pub gate: Option<&'a TableGate>,
}

/// The `COPY … TO STDOUT` statement of a partition: the published columns, the
/// publication's row filter, and the block range (a TID range scan on Postgres 14+).
pub fn copy_sql(plan: &TablePlan, range: Option<BlockRange>) -> String {
    let mut cols: Vec<String> = plan.columns.iter().map(|c| quote_ident(&c.name)).collect();
    if plan.is_multiset() {
        // Names each copied row apart from its equals (see `pipeline::batch`).
        cols.push("ctid".into());
    }
    let mut conditions = Vec::new();
    if let Some(r) = range {
        conditions.push(format!("ctid >= '({},0)'::tid", r.start));
        if let Some(end) = r.end {
            conditions.push(format!("ctid < '({end},0)'::tid"));
        }
    }
    if let Some(filter) = &plan.source.row_filter {
        conditions.push(format!("({filter})"));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "COPY (SELECT {} FROM {}{where_clause}) TO STDOUT",
        cols.join(", "),
        plan.source.qualified()
    )
}

/// A `ctid` (`(block,offset)`) as one number, block in the high bits.
pub fn ctid_seq(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let (block, offset) = text.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    let block: u64 = block.parse().ok()?;
    let offset: u64 = offset.parse().ok()?;
    (block <= u64::from(u32::MAX) && offset <= 0xFFFF).then_some(block << 16 | offset)
}

/// Copies one partition in the caller's transaction (whose snapshot decides what is seen).
pub async fn copy_partition(
    pg: &tokio_postgres::Transaction<'_>,
    ch: &clickhouse::Client,
    settings: &DestinationSettings,
    task: CopyTask<'_>,
    clamps: &mut ClampCounts,
) -> Result<CopyStats, CopyError> {
    let CopyTask {
        plan,
        range,
        query_id,
        gate,
    } = task;
    let table = plan.source.display();
    let pg_err = |source| CopyError::Postgres {
        table: table.clone(),
        source,
    };
    let stream = pg.copy_out(&copy_sql(plan, range)).await.map_err(pg_err)?;
    futures_util::pin_mut!(stream);
    let columns = plan.insert_columns();
    let multiset = plan.is_multiset();
    let history = plan.is_history();
    let fields_per_row = plan.columns.len() + usize::from(multiset);
    let mut insert = RowBinaryInsert::start(
        ch,
        settings,
        &plan.dest,
        &columns,
        query_id,
        plan.has_json(),
    );
    // Postgres sends each row of COPY TO STDOUT as its own CopyData message.
    let mut spare: Vec<Option<Cow<'static, [u8]>>> = Vec::with_capacity(fields_per_row);
    let mut rows_seen: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(pg_err)?;
        rows_seen += 1;
        // Dropping the insert abandons it; the TRUNCATE that cancelled us runs after.
        if rows_seen.is_multiple_of(256) && gate.is_some_and(|g| g.is_cancelled()) {
            return Err(CopyError::Cancelled(table));
        }
        let row = chunk.strip_suffix(b"\n").ok_or_else(|| CopyError::Row {
            table: table.clone(),
            source: CopyTextError::Unterminated {
                length: chunk.len(),
            },
        })?;
        let mut fields: Vec<Option<Cow<'_, [u8]>>> = spare.into_iter().map(|_| None).collect();
        decode_row(row, fields_per_row, &mut fields).map_err(|source| CopyError::Row {
            table: table.clone(),
            source,
        })?;
        let seq = if multiset {
            let ctid = fields.last().and_then(|f| f.as_deref());
            Some(ctid.and_then(ctid_seq).ok_or_else(|| CopyError::Ctid {
                table: table.clone(),
                value: String::from_utf8_lossy(ctid.unwrap_or_default()).into_owned(),
            })?)
        } else {
            None
        };
        let out = insert.buffer();
        for ((field, mapping), col) in fields.iter().zip(&plan.mappings).zip(&plan.columns) {
            encode_value(&mapping.codec, field.as_deref(), out, clamps).map_err(|source| {
                CopyError::Encode {
                    table: table.clone(),
                    column: col.name.clone(),
                    source,
                }
            })?;
        }
        if history {
            out.put_u64_le(0); // _lsn: before every change
            out.put_u64_le(seq.unwrap_or_default()); // _seq: the row's ctid
            out.put_i8(0); // _op = 'snapshot' (`pipeline::batch::ChangeOp`)
            out.put_u32_le(0); // _xid
            out.put_i64_le(0); // _commit_time
            fields.clear();
            spare = fields.into_iter().map(|_| None).collect();
            insert.row_done().await?;
            continue;
        }
        out.put_u64_le(0); // _version: snapshot rows lose to every change
        out.put_u8(0); // _is_deleted
        if let Some(seq) = seq {
            out.put_u64_le(seq); // _seq: the row's ctid, unique within the snapshot
            out.put_i8(1); // _sign: one copy
        }
        fields.clear();
        spare = fields.into_iter().map(|_| None).collect();
        insert.row_done().await?;
    }
    if gate.is_some_and(|g| g.is_cancelled()) {
        return Err(CopyError::Cancelled(table));
    }
    let bytes = insert.bytes();
    let rows = insert.finish().await?;
    Ok(CopyStats { rows, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctids_become_one_number_per_row() {
        assert_eq!(ctid_seq(b"(0,1)"), Some(1));
        assert_eq!(ctid_seq(b"(3,17)"), Some(3 << 16 | 17));
        assert_eq!(ctid_seq(b"(4294967295,65535)"), Some(u64::MAX >> 16));
        assert_eq!(ctid_seq(b"(1,70000)"), None);
        assert_eq!(ctid_seq(b"1,2"), None);
    }

    #[test]
    fn block_ranges_label_their_partition() {
        assert_eq!(
            BlockRange {
                start: 0,
                end: Some(128)
            }
            .label(),
            "0-128"
        );
        assert_eq!(
            BlockRange {
                start: 128,
                end: None
            }
            .label(),
            "128-"
        );
    }
}
