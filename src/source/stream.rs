//! The CopyBoth loop of a replication stream: a reader task that frames `XLogData` and
//! keepalives, and a writer task that sends standby status updates.
//!
//! ```text
//!   socket ──► reader task ──(batches, bounded in bytes)──► consumer (pipeline / tail)
//!                 │ reply requested                             │ confirm(lsn)
//!                 ▼                                             ▼
//!   socket ◄── writer task ◄───────────── Feedback (flushed LSN, only goes up)
//!              every status_interval, on request, and at shutdown
//! ```
//!
//! Why status updates have their own task: when the consumer is slow, the reader stops
//! reading (the byte budget is spent) so Postgres stops sending — but Postgres also drops
//! a client it has not heard from for `wal_sender_timeout`. The writer keeps talking
//! whatever the reader is doing, so backpressure never costs the connection.
//!
//! The flushed position is whatever the consumer confirms: the stream never confirms
//! anything by itself (that would acknowledge changes not yet in ClickHouse).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::wire::{split_frame, WireError, WireParts, MAX_MESSAGE_BYTES};
use crate::lsn::Lsn;

/// Microseconds from the Unix epoch to Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// Default bytes of received, not yet consumed WAL data held in memory.
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// How the stream behaves.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Status update period; `None` derives it from `wal_sender_timeout`.
    pub status_interval: Option<Duration>,
    /// Bytes of data read ahead of the consumer before the reader pauses.
    pub buffer_bytes: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            status_interval: None,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
        }
    }
}

/// What the stream delivers, in server order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// One pgoutput message and the WAL positions it came with.
    XLogData {
        /// WAL start of this message: the version of a row change (DESIGN.md rule 2).
        start: Lsn,
        /// The server's WAL end at sending time.
        end: Lsn,
        /// Server clock, microseconds since 2000-01-01.
        send_time: i64,
        payload: Bytes,
    },
    /// The server's heartbeat; `wal_end` may be confirmed when nothing is pending.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

/// Why the stream ended abnormally.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    #[error("replication stream from {server}: {message} (SQLSTATE {sqlstate})")]
    Server {
        server: String,
        sqlstate: String,
        message: String,
    },
    #[error("replication stream from {server} broke: {cause}")]
    Io { server: String, cause: String },
    #[error("replication stream from {server}: {detail}")]
    Protocol { server: String, detail: String },
}

impl StreamError {
    /// The SQLSTATE when the server ended the stream with an error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StreamError::Server { sqlstate, .. } => Some(sqlstate),
            _ => None,
        }
    }
}

/// The consumer's side of acknowledgements, shared with the writer task.
#[derive(Clone, Debug)]
pub struct Feedback {
    inner: Arc<FeedbackState>,
}

#[derive(Debug)]
struct FeedbackState {
    flushed: AtomicU64,
    received: AtomicU64,
    wake: Notify,
}

impl Feedback {
    /// Nothing is confirmed until the consumer says so: a flush position of 0/0 is
    /// ignored by the server, so a reader that never confirms (`pgch tail --slot`)
    /// never moves the slot.
    fn new(start: Lsn) -> Self {
        Feedback {
            inner: Arc::new(FeedbackState {
                flushed: AtomicU64::new(0),
                received: AtomicU64::new(start.as_u64()),
                wake: Notify::new(),
            }),
        }
    }

    /// Everything before `lsn` is durable downstream: the slot may release it. Lower
    /// values than before are ignored.
    pub fn confirm(&self, lsn: Lsn) {
        self.inner.flushed.fetch_max(lsn.as_u64(), Ordering::AcqRel);
    }

    /// Confirms and asks the writer to tell the server now rather than at the next tick.
    pub fn confirm_now(&self, lsn: Lsn) {
        self.confirm(lsn);
        self.inner.wake.notify_one();
    }

    /// The highest confirmed LSN.
    pub fn confirmed(&self) -> Lsn {
        Lsn::new(self.inner.flushed.load(Ordering::Acquire))
    }

    fn note_received(&self, lsn: Lsn) {
        self.inner
            .received
            .fetch_max(lsn.as_u64(), Ordering::AcqRel);
    }

    fn received(&self) -> Lsn {
        Lsn::new(self.inner.received.load(Ordering::Acquire))
    }
}

type Batch = (Vec<StreamEvent>, Option<OwnedSemaphorePermit>);

/// A running replication stream.
pub struct ReplicationStream {
    batches: mpsc::Receiver<Result<Batch, StreamError>>,
    current: VecDeque<StreamEvent>,
    _permit: Option<OwnedSemaphorePermit>,
    /// An error `try_next` took from the channel, for `next` to report.
    failed: Option<StreamError>,
    feedback: Feedback,
    stop: Arc<Notify>,
    stopped: Arc<AtomicBool>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl ReplicationStream {
    /// Starts the reader and writer tasks on a session that just entered CopyBoth.
    pub fn start(parts: WireParts, start: Lsn, options: StreamOptions) -> Self {
        let feedback = Feedback::new(start);
        let budget = Arc::new(Semaphore::new(options.buffer_bytes.max(1)));
        let (tx, rx) = mpsc::channel(64);
        let stop = Arc::new(Notify::new());
        let stopped = Arc::new(AtomicBool::new(false));
        let WireParts {
            reader,
            writer,
            read_buf,
            server,
        } = parts;
        let reader = tokio::spawn(read_loop(
            reader,
            read_buf,
            server.clone(),
            tx,
            budget,
            options.buffer_bytes.max(1),
            feedback.clone(),
        ));
        let interval = options.status_interval.unwrap_or(Duration::from_secs(10));
        let writer = tokio::spawn(write_loop(
            writer,
            server,
            interval,
            feedback.clone(),
            stop.clone(),
            stopped.clone(),
        ));
        ReplicationStream {
            batches: rx,
            current: VecDeque::new(),
            _permit: None,
            failed: None,
            feedback,
            stop,
            stopped,
            reader,
            writer,
        }
    }

    /// The next event, `None` when the server ended the stream cleanly.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, StreamError>> {
        loop {
            if let Some(event) = self.current.pop_front() {
                return Some(Ok(event));
            }
            if let Some(e) = self.failed.take() {
                return Some(Err(e));
            }
            // The batch is consumed: release its share of the byte budget.
            self._permit = None;
            match self.batches.recv().await? {
                Ok((events, permit)) => {
                    self.current = events.into();
                    self._permit = permit;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next event already received, without waiting: the consumer drains what the
    /// reader handed over in one go instead of waking once per message. `None` when
    /// nothing is ready (or the stream ended: [`ReplicationStream::next`] then says so).
    pub fn try_next(&mut self) -> Option<StreamEvent> {
        loop {
            if let Some(event) = self.current.pop_front() {
                return Some(event);
            }
            self._permit = None;
            match self.batches.try_recv() {
                Ok(Ok((events, permit))) => {
                    self.current = events.into();
                    self._permit = permit;
                }
                Ok(Err(e)) => {
                    // Kept for `next`, which reports it.
                    self.failed = Some(e);
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// The handle through which the consumer confirms durable progress.
    pub fn feedback(&self) -> Feedback {
        self.feedback.clone()
    }

    /// Sends a final status update with the confirmed position, then closes.
    pub async fn shutdown(mut self) {
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.writer).await;
        self.reader.abort();
    }
}

impl Drop for ReplicationStream {
    fn drop(&mut self) {
        self.reader.abort();
        if !self.stopped.load(Ordering::Acquire) {
            self.writer.abort();
        }
    }
}

async fn read_loop(
    mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    mut buf: BytesMut,
    server: String,
    tx: mpsc::Sender<Result<Batch, StreamError>>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    feedback: Feedback,
) {
    loop {
        let mut events = Vec::new();
        let mut bytes = 0usize;
        loop {
            match split_frame(&mut buf, MAX_MESSAGE_BYTES) {
                Ok(Some(frame)) => match handle_frame(&server, frame.tag, frame.body, &feedback) {
                    Ok(Some(event)) => {
                        if let StreamEvent::XLogData { payload, .. } = &event {
                            bytes += payload.len();
                        }
                        events.push(event);
                    }
                    Ok(None) => {}
                    Err(Flow::End) => {
                        let _ = send_batch(&tx, &budget, budget_bytes, events, bytes).await;
                        return;
                    }
                    Err(Flow::Fail(e)) => {
                        let _ = send_batch(&tx, &budget, budget_bytes, events, bytes).await;
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
                Ok(None) => break,
                Err(tag) => {
                    let _ = tx
                        .send(Err(StreamError::Protocol {
                            server: server.clone(),
                            detail: format!(
                                "a frame with tag 0x{tag:02X} is not part of a replication stream"
                            ),
                        }))
                        .await;
                    return;
                }
            }
        }
        if !events.is_empty()
            && send_batch(&tx, &budget, budget_bytes, events, bytes)
                .await
                .is_err()
        {
            return;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = tx
                    .send(Err(StreamError::Io {
                        server: server.clone(),
                        cause: "the server closed the connection".into(),
                    }))
                    .await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx
                    .send(Err(StreamError::Io {
                        server: server.clone(),
                        cause: e.to_string(),
                    }))
                    .await;
                return;
            }
        }
    }
}

/// Waits for budget (backpressure), then hands the batch over. Err: consumer gone.
async fn send_batch(
    tx: &mpsc::Sender<Result<Batch, StreamError>>,
    budget: &Arc<Semaphore>,
    budget_bytes: usize,
    events: Vec<StreamEvent>,
    bytes: usize,
) -> Result<(), ()> {
    if events.is_empty() {
        return Ok(());
    }
    // A batch larger than the whole budget takes all of it (and waits for all of it).
    let want = u32::try_from(bytes.min(budget_bytes)).unwrap_or(u32::MAX);
    let permit = if want == 0 {
        None
    } else {
        Some(
            budget
                .clone()
                .acquire_many_owned(want)
                .await
                .map_err(|_| ())?,
        )
    };
    tx.send(Ok((events, permit))).await.map_err(|_| ())
}

enum Flow {
    End,
    Fail(StreamError),
}

fn handle_frame(
    server: &str,
    tag: u8,
    body: Bytes,
    feedback: &Feedback,
) -> Result<Option<StreamEvent>, Flow> {
    match tag {
        b'd' => parse_copy_data(server, body, feedback).map_err(Flow::Fail),
        b'c' | b'C' | b'Z' => Err(Flow::End),
        b'E' => Err(Flow::Fail(match server_error(server, &body) {
            WireError::Server {
                server,
                sqlstate,
                message,
            } => StreamError::Server {
                server,
                sqlstate,
                message,
            },
            other => StreamError::Protocol {
                server: server.to_string(),
                detail: other.to_string(),
            },
        })),
        // Notices and parameter changes carry nothing for the stream.
        _ => Ok(None),
    }
}

/// Parses one CopyData body: `w` XLogData or `k` primary keepalive.
pub fn parse_copy_data(
    server: &str,
    mut body: Bytes,
    feedback: &Feedback,
) -> Result<Option<StreamEvent>, StreamError> {
    let bad = |detail: &str| StreamError::Protocol {
        server: server.to_string(),
        detail: detail.to_string(),
    };
    if body.is_empty() {
        return Err(bad("empty CopyData message"));
    }
    match body.get_u8() {
        b'w' => {
            if body.len() < 24 {
                return Err(bad("XLogData shorter than its 25-byte header"));
            }
            let start = Lsn::new(body.get_u64());
            let end = Lsn::new(body.get_u64());
            let send_time = body.get_i64();
            feedback.note_received(end.max(start));
            Ok(Some(StreamEvent::XLogData {
                start,
                end,
                send_time,
                payload: body,
            }))
        }
        b'k' => {
            if body.len() < 17 {
                return Err(bad("primary keepalive shorter than 18 bytes"));
            }
            let wal_end = Lsn::new(body.get_u64());
            let _send_time = body.get_i64();
            let reply_requested = body.get_u8() == 1;
            // Everything up to wal_end has been sent: report it as written, so the
            // server's "client is behind" pings stop until WAL moves again.
            feedback.note_received(wal_end);
            if reply_requested {
                feedback.inner.wake.notify_one();
            }
            Ok(Some(StreamEvent::Keepalive {
                wal_end,
                reply_requested,
            }))
        }
        other => Err(bad(&format!("unknown CopyData message type 0x{other:02X}"))),
    }
}

async fn write_loop(
    mut writer: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    server: String,
    interval: Duration,
    feedback: Feedback,
    stop: Arc<Notify>,
    stopped: Arc<AtomicBool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = feedback.inner.wake.notified() => false,
            _ = stop.notified() => true,
        };
        let last = last || stopped.load(Ordering::Acquire);
        let flushed = feedback.confirmed();
        let written = feedback.received().max(flushed);
        let msg = standby_status_update(written, flushed, flushed, now_pg_micros(), false);
        if let Err(e) = writer.write_all(&msg).await.and(writer.flush().await) {
            tracing::debug!(server = %server, error = %e, "standby status update failed");
            return;
        }
        if last {
            let mut done = BytesMut::new();
            postgres_protocol::message::frontend::copy_done(&mut done);
            let _ = writer.write_all(&done).await;
            let _ = writer.flush().await;
            let _ = writer.shutdown().await;
            return;
        }
    }
}

/// A standby status update, framed as CopyData: write, flush and apply positions.
pub fn standby_status_update(write: Lsn, flush: Lsn, apply: Lsn, now: i64, reply: bool) -> Bytes {
    let mut msg = BytesMut::with_capacity(39);
    msg.put_u8(b'd');
    msg.put_u32(4 + 1 + 8 + 8 + 8 + 8 + 1);
    msg.put_u8(b'r');
    msg.put_u64(write.as_u64());
    msg.put_u64(flush.as_u64());
    msg.put_u64(apply.as_u64());
    msg.put_i64(now);
    msg.put_u8(u8::from(reply));
    msg.freeze()
}

fn now_pg_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

/// Reads an ErrorResponse body into a [`WireError::Server`].
pub fn server_error(server: &str, body: &[u8]) -> WireError {
    let mut sqlstate = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        match kind {
            b'C' => sqlstate = String::from_utf8_lossy(value).into_owned(),
            b'M' => message = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
    }
    WireError::Server {
        server: server.to_string(),
        sqlstate,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_update_has_the_documented_layout() {
        let msg = standby_status_update(Lsn::new(3), Lsn::new(2), Lsn::new(1), 7, true);
        assert_eq!(msg.len(), 39);
        assert_eq!(&msg[..6], &[b'd', 0, 0, 0, 38, b'r']);
        assert_eq!(&msg[6..14], &3u64.to_be_bytes());
        assert_eq!(&msg[14..22], &2u64.to_be_bytes());
        assert_eq!(&msg[22..30], &1u64.to_be_bytes());
        assert_eq!(&msg[30..38], &7i64.to_be_bytes());
        assert_eq!(msg[38], 1);
    }

    #[test]
    fn copy_data_parses_xlogdata_and_keepalive() {
        let fb = Feedback::new(Lsn::ZERO);
        let mut w = BytesMut::new();
        w.put_u8(b'w');
        w.put_u64(10);
        w.put_u64(20);
        w.put_i64(5);
        w.put_slice(b"Bpayload");
        let event = parse_copy_data("s", w.freeze(), &fb).unwrap().unwrap();
        assert_eq!(
            event,
            StreamEvent::XLogData {
                start: Lsn::new(10),
                end: Lsn::new(20),
                send_time: 5,
                payload: Bytes::from_static(b"Bpayload")
            }
        );
        assert_eq!(fb.received(), Lsn::new(20));
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(99);
        k.put_i64(1);
        k.put_u8(1);
        let event = parse_copy_data("s", k.freeze(), &fb).unwrap().unwrap();
        assert_eq!(
            event,
            StreamEvent::Keepalive {
                wal_end: Lsn::new(99),
                reply_requested: true
            }
        );
        assert!(parse_copy_data("s", Bytes::from_static(b"w123"), &fb).is_err());
        assert!(parse_copy_data("s", Bytes::from_static(b"x"), &fb).is_err());
        assert!(parse_copy_data("s", Bytes::new(), &fb).is_err());
    }

    #[test]
    fn confirmed_lsn_only_goes_up() {
        let fb = Feedback::new(Lsn::new(5));
        assert_eq!(fb.confirmed(), Lsn::ZERO, "nothing is confirmed by itself");
        fb.confirm(Lsn::new(10));
        fb.confirm(Lsn::new(7));
        assert_eq!(fb.confirmed(), Lsn::new(10));
    }
}
