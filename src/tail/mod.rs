//! `pgch tail`: the readable pg_recvlogical. Streams a slot through the publication and
//! prints every change as one JSON line (or decodes and discards, for measuring).
//!
//! It never confirms progress on a named slot — that would steal `pgch run`'s changes —
//! and `--temporary` makes a slot that disappears with the session.

pub mod render;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::SourceSettings;
use crate::lsn::Lsn;
use crate::source::pgoutput::{self, DecodeContext, DecodeError, Message};
use crate::source::stream::{StreamError, StreamEvent, StreamOptions};
use crate::source::walsender::{SlotSnapshot, Walsender, WalsenderError};
use render::{Relations, RenderError, TxContext};

/// How `pgch tail` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailFormat {
    /// One JSON object per change.
    Json,
    /// Decode and discard (for measuring).
    None,
}

/// What to read.
#[derive(Clone, Debug)]
pub struct TailArgs {
    /// An existing slot, read without ever confirming.
    pub slot: Option<String>,
    /// Create a temporary slot for this session instead.
    pub temporary: bool,
    /// Start here instead of where the slot stands.
    pub from: Option<Lsn>,
    /// Stop once the stream reaches this LSN.
    pub endpos: Option<Lsn>,
    pub format: TailFormat,
}

/// What a tail run saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailStats {
    /// Inserts, updates, deletes, truncates and messages.
    pub changes: u64,
    pub transactions: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
}

/// Why tail stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(
        "give --slot NAME to read an existing slot, or --temporary to create one for this session"
    )]
    NoSlot,
    #[error(transparent)]
    Walsender(#[from] WalsenderError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("cannot decode the pgoutput message at {lsn}: {source}")]
    Decode { lsn: Lsn, source: DecodeError },
    #[error("at {lsn}: {source}")]
    Render { lsn: Lsn, source: RenderError },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Streams until `endpos`, the end of the stream, or `stop` resolves.
pub async fn run(
    source: &SourceSettings,
    args: &TailArgs,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> Result<TailStats, TailError> {
    let mut walsender = Walsender::connect(&source.endpoint).await?;
    let (slot, start) = match (&args.slot, args.temporary) {
        (Some(slot), false) => (slot.clone(), args.from.unwrap_or(Lsn::ZERO)),
        (None, true) => {
            let name = format!("pgch_tail_{}", std::process::id());
            let created = walsender
                .create_slot(&name, true, SlotSnapshot::NoExport)
                .await?;
            (name, args.from.unwrap_or(created.consistent_point))
        }
        _ => return Err(TailError::NoSlot),
    };
    let mut stream = walsender
        .start(&slot, start, &source.publication, StreamOptions::default())
        .await?;
    let began = Instant::now();
    let mut stats = TailStats::default();
    let mut state = Decoder::default();
    tokio::pin!(stop);
    let result = loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = &mut stop => break Ok(()),
        };
        let Some(event) = event else { break Ok(()) };
        match event? {
            StreamEvent::XLogData { start, payload, .. } => {
                if args.endpos.is_some_and(|end| start > end) {
                    break Ok(());
                }
                stats.payload_bytes += payload.len() as u64;
                let done = state.handle(start, &payload, args, out, &mut stats)?;
                if done {
                    break Ok(());
                }
            }
            StreamEvent::Keepalive { wal_end, .. } => {
                if args.endpos.is_some_and(|end| wal_end >= end) && !state.in_transaction {
                    break Ok(());
                }
            }
        }
    };
    out.flush()?;
    stream.shutdown().await;
    stats.elapsed = began.elapsed();
    result.map(|()| stats)
}

#[derive(Default)]
struct Decoder {
    relations: Relations,
    tx: TxContext,
    in_transaction: bool,
    in_stream: bool,
}

impl Decoder {
    /// Handles one message; returns true when `endpos` was reached at a commit.
    fn handle(
        &mut self,
        lsn: Lsn,
        payload: &bytes::Bytes,
        args: &TailArgs,
        out: &mut (dyn Write + Send),
        stats: &mut TailStats,
    ) -> Result<bool, TailError> {
        let ctx = DecodeContext {
            in_stream: self.in_stream,
        };
        let msg =
            pgoutput::decode(payload, ctx).map_err(|source| TailError::Decode { lsn, source })?;
        let render =
            |r: Result<Value, RenderError>| r.map_err(|source| TailError::Render { lsn, source });
        let line = match &msg {
            Message::Begin(b) => {
                self.tx = TxContext::from(b);
                self.in_transaction = true;
                None
            }
            Message::Commit(c) => {
                self.in_transaction = false;
                stats.transactions += 1;
                if args.format == TailFormat::Json {
                    out.flush()?;
                }
                return Ok(args.endpos.is_some_and(|end| c.end_lsn >= end));
            }
            Message::Relation(r) => {
                self.relations.insert(r.id, r.clone());
                None
            }
            Message::StreamStart(_) => {
                self.in_stream = true;
                None
            }
            Message::StreamStop => {
                self.in_stream = false;
                None
            }
            Message::Insert(_)
            | Message::Update(_)
            | Message::Delete(_)
            | Message::Truncate(_)
            | Message::LogicalMessage(_)
                if args.format == TailFormat::None =>
            {
                stats.changes += 1;
                None
            }
            Message::Insert(i) => Some(render(render::insert(&self.relations, lsn, self.tx, i))?),
            Message::Update(u) => Some(render(render::update(&self.relations, lsn, self.tx, u))?),
            Message::Delete(d) => Some(render(render::delete(&self.relations, lsn, self.tx, d))?),
            Message::Truncate(t) => {
                Some(render(render::truncate(&self.relations, lsn, self.tx, t))?)
            }
            Message::LogicalMessage(m) => {
                let tx = if self.in_transaction {
                    self.tx
                } else {
                    TxContext::default()
                };
                Some(render::message(lsn, tx, m))
            }
            _ => None,
        };
        if let Some(line) = line {
            stats.changes += 1;
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        Ok(false)
    }
}
