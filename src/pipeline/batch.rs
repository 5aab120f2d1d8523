//! One table's pending changes, as row images (DESIGN.md rules 2 and 6), until they are
//! encoded into one insert.
//!
//! ```text
//!   insert            -> row(version = change LSN)
//!   update            -> row(new); unchanged TOAST taken from the latest image of the key
//!   update, key moved -> delete marker(old key) + row(new)
//!   delete            -> delete marker(key), _is_deleted = 1
//! ```
//!
//! Every image carries the WAL start of its own change as `_version`, so for one key the
//! versions grow in commit order and a replay converges. An unchanged TOAST value (`u`)
//! is never written as empty or NULL: it is copied from the latest earlier image of the
//! same key in this batch, from the full old tuple under `REPLICA IDENTITY FULL`, or left
//! unresolved for the writer to read from Postgres by key before encoding.
//!
//! # Keyless tables are multisets
//!
//! A table without a usable key under `REPLICA IDENTITY FULL` may hold equal rows, and
//! Postgres tells them apart only by `ctid`, which pgoutput does not send. Its images
//! are therefore not rows but changes:
//!
//! ```text
//!   insert  -> row(new), _sign = +1
//!   update  -> row(old), _sign = -1  +  row(new), _sign = +1
//!   delete  -> row(old), _sign = -1
//!   copy    -> row, _sign = +1, _version = 0, _seq = ctid
//! ```
//!
//! Each image is named by `(_version, _seq)`: the change's WAL start and its position
//! among the images with that start (a multi-row INSERT or COPY decodes into several
//! changes at one WAL start; an update makes two images). A replay sends the same
//! transactions again from a commit boundary, so it produces the same names, and
//! `ReplacingMergeTree` (ordered by the values, then the name) keeps one row per name:
//! replays neither add nor remove copies. The number of copies of a distinct row is the
//! sum of its `_sign`s under `FINAL` — what the `<table>_current` view expands. A
//! TRUNCATE empties the table as for every other. The copy and the stream must not both
//! carry a transaction: see [`crate::snapshot::visibility`].
//!
//! # History tables
//!
//! A `mode = "history"` table (always `REPLICA IDENTITY FULL`) is copied and streamed
//! the same way, named the same way, but each change is one row saying what it did:
//!
//! ```text
//!   insert  -> row(new), _op = insert
//!   update  -> row(new, unchanged TOAST from the old row), _op = update
//!   delete  -> row(old), _op = delete
//!   copy    -> row, _op = snapshot, _lsn = 0, _seq = ctid
//! ```
//!
//! with its transaction's xid and commit time. A TRUNCATE keeps the history.

use std::collections::HashMap;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::flush::BatchFill;
use crate::lsn::Lsn;
use crate::sink::rowbinary::{
    encode_placeholder, encode_value, ClampCounts, Codec, EncodeError, NullMode,
};
use crate::source::pgoutput::{ColumnValue, OldTuple, TupleData};

/// One cell of a pending row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Null,
    /// Postgres' text output of the value.
    Text(Bytes),
    /// A TOASTed value the update left unchanged and this batch could not supply.
    Unresolved,
    /// Any valid value: the row no longer exists in Postgres, so a later delete
    /// supersedes this image whatever it holds.
    Placeholder,
}

/// One row image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRow {
    pub version: Lsn,
    pub deleted: bool,
    pub cells: Vec<Cell>,
    /// Multiset tables only: the image's position among those at `version`, and
    /// whether it adds (+1) or removes (-1) a copy of the row.
    pub seq: u64,
    pub sign: i8,
    /// History tables only: what the change did, and its transaction.
    pub op: ChangeOp,
    pub tx: TxStamp,
}

/// What a history row's change did (`_op`, an `Enum8` of these codes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChangeOp {
    /// A row of the initial copy.
    Snapshot = 0,
    #[default]
    Insert = 1,
    Update = 2,
    Delete = 3,
}

/// The transaction a history row's change belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxStamp {
    pub xid: u32,
    /// Commit time, microseconds since 1970-01-01 UTC.
    pub commit_time: i64,
}

/// Why a change could not become a row image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("a tuple has {found} columns, the table {expected}: its shape changed")]
    ColumnCount { found: usize, expected: usize },
    #[error("the tuple sends column {column} in binary, which pgch never asks for")]
    Binary { column: usize },
    #[error("column {column}: {source}")]
    Encode { column: usize, source: EncodeError },
    #[error("column {column} of a row is an unchanged TOAST value that was not resolved")]
    UnresolvedToast { column: usize },
    #[error("an UPDATE or DELETE of a keyless table came without the whole old row: the table's REPLICA IDENTITY is no longer FULL (set it back, then `pgch resync` the table)")]
    NoOldRow,
}

type Key = Vec<Option<Bytes>>;

/// The pending row images of one table.
#[derive(Debug)]
pub struct TableBatch {
    key_columns: Vec<usize>,
    /// ClickHouse's sort columns (`order_by`, then the key): a marker carries their real
    /// values, and an UPDATE that changes one leaves a marker at the old position.
    sort_columns: Vec<usize>,
    columns: usize,
    /// Tuple positions written, when the table leaves columns out
    /// (`[[tables]] exclude_columns`): `keep[i]` for the tuple's column `i`.
    keep: Option<Vec<bool>>,
    rows: Vec<PendingRow>,
    /// Latest live (not deleted) image per key, by index into `rows`: only unchanged
    /// TOAST values need it, so it is built the first time one arrives in this batch
    /// and kept up from then on; batches without such values never hash a key.
    latest: Option<HashMap<Key, usize>>,
    /// Images are changes of a multiset (keyless) table.
    multiset: bool,
    /// Images are rows of a history table (a multiset's naming, one row per change).
    history: bool,
    /// The transaction whose changes arrive now (history tables).
    tx: TxStamp,
    /// The version of the last image and the next position at it; kept across
    /// flushes (a multi-row change may straddle one), reset when a session is lost.
    last_version: Lsn,
    next_seq: u64,
    pub fill: BatchFill,
}

impl TableBatch {
    /// An empty batch for a table of `columns` columns keyed by `key_columns`.
    pub fn new(columns: usize, key_columns: Vec<usize>) -> Self {
        TableBatch {
            sort_columns: key_columns.clone(),
            key_columns,
            columns,
            keep: None,
            rows: Vec::new(),
            latest: None,
            multiset: false,
            history: false,
            tx: TxStamp::default(),
            last_version: Lsn::ZERO,
            next_seq: 0,
            fill: BatchFill::default(),
        }
    }

    /// An empty batch for a multiset table (keyless, `REPLICA IDENTITY FULL`): every
    /// change an image of its own (see the module docs).
    pub fn multiset(columns: usize) -> Self {
        TableBatch {
            multiset: true,
            ..TableBatch::new(columns, Vec::new())
        }
    }

    /// The batch a table's plan asks for.
    pub fn for_plan(plan: &crate::snapshot::plan::TablePlan) -> Self {
        let batch = if plan.is_history() {
            TableBatch::history(plan.columns.len())
        } else if plan.is_multiset() {
            TableBatch::multiset(plan.columns.len())
        } else {
            TableBatch::new(plan.columns.len(), plan.key_columns())
                .with_sort_columns(plan.sort_columns())
        };
        match plan.projection() {
            Some(kept) => batch.keeping(plan.published.len(), &kept),
            None => batch,
        }
    }

    /// An empty batch for a history table: one row per change, named as a multiset's.
    pub fn history(columns: usize) -> Self {
        TableBatch {
            history: true,
            ..TableBatch::multiset(columns)
        }
    }

    /// The transaction the next changes belong to (history tables record it).
    pub fn set_transaction(&mut self, tx: TxStamp) {
        self.tx = tx;
    }

    /// The same batch for tuples of `width` columns of which only the positions `kept`
    /// are written (in order); the others are dropped as the tuple is read.
    pub fn keeping(mut self, width: usize, kept: &[usize]) -> Self {
        let mut keep = vec![false; width];
        for &i in kept {
            if let Some(k) = keep.get_mut(i) {
                *k = true;
            }
        }
        self.keep = Some(keep);
        self
    }

    /// The same batch for a table sorted by `sort_columns` (which hold the key).
    pub fn with_sort_columns(mut self, sort_columns: Vec<usize>) -> Self {
        self.sort_columns = sort_columns;
        self
    }

    /// Forgets the positions within the last version: after a lost session the slot
    /// sends the same changes again from a commit, and they must get the same names.
    pub fn restart(&mut self) {
        self.clear();
        self.last_version = Lsn::ZERO;
        self.next_seq = 0;
    }

    /// The next position at `version`.
    fn seq(&mut self, version: Lsn) -> u64 {
        if version != self.last_version {
            self.last_version = version;
            self.next_seq = 0;
        }
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// A multiset image (`sign` copies of `cells`) or a history row (`op`).
    fn push_change(
        &mut self,
        version: Lsn,
        cells: Vec<Cell>,
        sign: i8,
        op: ChangeOp,
        now: Instant,
    ) {
        let seq = self.seq(version);
        let tx = self.tx;
        self.push(
            PendingRow {
                version,
                deleted: false,
                cells,
                seq,
                sign,
                op,
                tx,
            },
            now,
        );
    }

    /// The row images, in change order.
    pub fn rows(&self) -> &[PendingRow] {
        &self.rows
    }

    /// Rows pending.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is pending.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Drops everything (after a flush, or a TRUNCATE barrier).
    pub fn clear(&mut self) {
        self.rows.clear();
        self.latest = None;
        self.fill.reset();
    }

    /// The tuple's values as cells, moved out of the decoded message (no copy, no
    /// reference-count traffic).
    fn cells(&self, tuple: TupleData) -> Result<Vec<Cell>, ImageError> {
        let width = self.keep.as_ref().map_or(self.columns, Vec::len);
        if tuple.columns.len() != width {
            return Err(ImageError::ColumnCount {
                found: tuple.columns.len(),
                expected: width,
            });
        }
        let keep = self.keep.as_deref();
        tuple
            .columns
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.is_none_or(|k| k[*i]))
            .map(|(i, v)| match v {
                ColumnValue::Null => Ok(Cell::Null),
                ColumnValue::Text(b) => Ok(Cell::Text(b)),
                ColumnValue::UnchangedToast => Ok(Cell::Unresolved),
                ColumnValue::Binary(_) => Err(ImageError::Binary { column: i }),
            })
            .collect()
    }

    fn key_of(key_columns: &[usize], cells: &[Cell]) -> Key {
        key_columns
            .iter()
            .map(|&i| match cells.get(i) {
                Some(Cell::Text(b)) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    /// Records row `index` in the key index.
    fn index_row(
        latest: &mut HashMap<Key, usize>,
        key_columns: &[usize],
        rows: &[PendingRow],
        index: usize,
    ) {
        let row = &rows[index];
        let key = Self::key_of(key_columns, &row.cells);
        if row.deleted {
            latest.remove(&key);
        } else {
            latest.insert(key, index);
        }
    }

    /// The key index, built now if this batch had no use for it yet.
    fn latest(&mut self) -> &mut HashMap<Key, usize> {
        let (keys, rows) = (&self.key_columns, &self.rows);
        self.latest.get_or_insert_with(|| {
            let mut latest = HashMap::new();
            for i in 0..rows.len() {
                Self::index_row(&mut latest, keys, rows, i);
            }
            latest
        })
    }

    fn push(&mut self, row: PendingRow, now: Instant) {
        let bytes = Self::footprint(&row, self.key_columns.len());
        self.fill.add(bytes, now);
        self.rows.push(row);
        if let Some(latest) = self.latest.as_mut() {
            Self::index_row(latest, &self.key_columns, &self.rows, self.rows.len() - 1);
        }
    }

    /// What a pending row really occupies: its values (slices of the received message,
    /// which they keep alive), its cells, and its entry in the key index. Counting only
    /// the values would let the memory budget be overrun several times over.
    fn footprint(row: &PendingRow, key_cells: usize) -> u64 {
        let values: usize = row
            .cells
            .iter()
            .map(|c| match c {
                Cell::Text(b) => b.len(),
                _ => 0,
            })
            .sum();
        let cells = row.cells.len() * std::mem::size_of::<Cell>();
        let index = key_cells * std::mem::size_of::<Option<Bytes>>() + 64;
        (values + cells + index + std::mem::size_of::<PendingRow>()) as u64
    }

    /// Fills unchanged TOAST cells from `source` (an earlier image of the row).
    fn fill_unchanged(cells: &mut [Cell], source: &[Cell]) {
        for (cell, earlier) in cells.iter_mut().zip(source) {
            if *cell == Cell::Unresolved && *earlier != Cell::Unresolved {
                *cell = earlier.clone();
            }
        }
    }

    /// An INSERT.
    pub fn insert(&mut self, version: Lsn, new: TupleData, now: Instant) -> Result<(), ImageError> {
        let cells = self.cells(new)?;
        if self.multiset {
            self.push_change(version, cells, 1, ChangeOp::Insert, now);
            return Ok(());
        }
        self.push(
            PendingRow {
                version,
                deleted: false,
                cells,
                seq: 0,
                sign: 1,
                op: ChangeOp::Insert,
                tx: TxStamp::default(),
            },
            now,
        );
        Ok(())
    }

    /// An UPDATE; `old` is the key (`K`, sent when the key changed) or the full old row
    /// (`O`, under REPLICA IDENTITY FULL).
    pub fn update(
        &mut self,
        version: Lsn,
        old: Option<OldTuple>,
        new: TupleData,
        now: Instant,
    ) -> Result<(), ImageError> {
        let mut cells = self.cells(new)?;
        let full = matches!(old, Some(OldTuple::Full(_)));
        let old_cells = match old {
            Some(OldTuple::Key(t)) | Some(OldTuple::Full(t)) => Some(self.cells(t)?),
            None => None,
        };
        if self.multiset {
            // The old row is all there (FULL): one copy of it goes, one of the new comes.
            let Some(old_cells) = old_cells.filter(|_| full) else {
                return Err(ImageError::NoOldRow);
            };
            Self::fill_unchanged(&mut cells, &old_cells);
            if self.history {
                self.push_change(version, cells, 1, ChangeOp::Update, now);
                return Ok(());
            }
            self.push_change(version, old_cells, -1, ChangeOp::Delete, now);
            self.push_change(version, cells, 1, ChangeOp::Insert, now);
            return Ok(());
        }
        if cells.contains(&Cell::Unresolved) {
            // The latest image of the row: under its old key when the key moved.
            let lookup = Self::key_of(&self.key_columns, old_cells.as_deref().unwrap_or(&cells));
            if let Some(&i) = self.latest().get(&lookup) {
                Self::fill_unchanged(&mut cells, &self.rows[i].cells);
            }
            if let (true, Some(full)) = (full, &old_cells) {
                Self::fill_unchanged(&mut cells, full);
            }
        }
        if let Some(old_cells) = old_cells {
            let moved = self
                .sort_columns
                .iter()
                .any(|&i| old_cells.get(i) != cells.get(i));
            if moved {
                let marker = self.marker(&old_cells);
                self.push(
                    PendingRow {
                        version,
                        deleted: true,
                        cells: marker,
                        seq: 0,
                        sign: 1,
                        op: ChangeOp::Delete,
                        tx: TxStamp::default(),
                    },
                    now,
                );
            }
        }
        self.push(
            PendingRow {
                version,
                deleted: false,
                cells,
                seq: 0,
                sign: 1,
                op: ChangeOp::Update,
                tx: TxStamp::default(),
            },
            now,
        );
        Ok(())
    }

    /// A DELETE: a marker with the key (and whatever else the old tuple carries).
    pub fn delete(&mut self, version: Lsn, old: OldTuple, now: Instant) -> Result<(), ImageError> {
        let full = matches!(old, OldTuple::Full(_));
        let (OldTuple::Key(t) | OldTuple::Full(t)) = old;
        let cells = self.cells(t)?;
        if self.multiset {
            if !full {
                return Err(ImageError::NoOldRow);
            }
            self.push_change(version, cells, -1, ChangeOp::Delete, now);
            return Ok(());
        }
        let marker = self.marker(&cells);
        self.push(
            PendingRow {
                version,
                deleted: true,
                cells: marker,
                seq: 0,
                sign: 1,
                op: ChangeOp::Delete,
                tx: TxStamp::default(),
            },
            now,
        );
        Ok(())
    }

    /// A delete marker keeps the sort columns (the key, and `order_by` columns, which
    /// the old row carries under REPLICA IDENTITY FULL); the rest become placeholders.
    fn marker(&self, cells: &[Cell]) -> Vec<Cell> {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if self.sort_columns.contains(&i) {
                    c.clone()
                } else {
                    Cell::Null
                }
            })
            .collect()
    }

    /// `(row, column)` of every cell still waiting for its TOAST value, with the key to
    /// read it by.
    pub fn unresolved(&self) -> Vec<(usize, usize, Key)> {
        let mut out = Vec::new();
        for (r, row) in self.rows.iter().enumerate() {
            for (c, cell) in row.cells.iter().enumerate() {
                if *cell == Cell::Unresolved {
                    out.push((r, c, Self::key_of(&self.key_columns, &row.cells)));
                }
            }
        }
        out
    }

    /// Supplies a TOAST value read from Postgres.
    pub fn resolve(&mut self, row: usize, column: usize, value: Cell) {
        if let Some(cell) = self.rows.get_mut(row).and_then(|r| r.cells.get_mut(column)) {
            *cell = value;
        }
    }

    /// Encodes every row, with `_version` and `_is_deleted`, into `out`.
    pub fn encode(
        &self,
        codecs: &[&Codec],
        out: &mut BytesMut,
        clamps: &mut ClampCounts,
    ) -> Result<(), ImageError> {
        for row in &self.rows {
            for (i, (cell, codec)) in row.cells.iter().zip(codecs).enumerate() {
                match cell {
                    Cell::Text(b) => encode_value(codec, Some(b), out, clamps),
                    Cell::Null if row.deleted && codec.nulls != NullMode::Nullable => {
                        encode_placeholder(codec, out);
                        Ok(())
                    }
                    Cell::Null => encode_value(codec, None, out, clamps),
                    Cell::Unresolved if row.deleted => {
                        encode_placeholder(codec, out);
                        Ok(())
                    }
                    Cell::Placeholder => {
                        encode_placeholder(codec, out);
                        Ok(())
                    }
                    Cell::Unresolved => return Err(ImageError::UnresolvedToast { column: i }),
                }
                .map_err(|source| ImageError::Encode { column: i, source })?;
            }
            out.put_u64_le(row.version.as_u64());
            if self.history {
                // `_lsn`, `_seq`, `_op`, `_xid`, `_commit_time`.
                out.put_u64_le(row.seq);
                out.put_i8(row.op as i8);
                out.put_u32_le(row.tx.xid);
                out.put_i64_le(row.tx.commit_time);
                continue;
            }
            out.put_u8(u8::from(row.deleted));
            if self.multiset {
                out.put_u64_le(row.seq);
                out.put_i8(row.sign);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
