//! A Postgres protocol connection built on `postgres-protocol`'s message codecs over a
//! tokio socket: what tokio-postgres cannot do, a walsender session
//! (`replication=database`). It handles TLS negotiation per `sslmode`, the startup
//! packet with pinned session settings as startup options (pgoutput prints text values
//! with the walsender's own settings), authentication (trust, cleartext, MD5,
//! SCRAM-SHA-256) and simple queries; the replication stream builds on it.
//!
//! A peer that is not a Postgres walsender — a transaction pooler such as PgBouncer or
//! PlanetScale's PSBouncer, or anything else listening on the port — is recognised and
//! reported as such, because the fix (connect to the primary directly, port 5432) is
//! what the operator needs to hear.

use std::collections::HashMap;
use std::io;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::connect::{socket_hint, APPLICATION_NAME, SESSION_SETTINGS};
use super::tls;
use crate::config::{PgEndpoint, SslMode};

/// Messages larger than this are refused: a guard against a peer that is not Postgres
/// (whose "length" would be arbitrary bytes) and against runaway allocations.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;
/// Idle time before the first TCP keepalive probe.
const TCP_KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// Time between unanswered probes.
const TCP_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Unanswered probes before the connection is declared dead (about 1.5 minutes in all).
const TCP_KEEPALIVE_RETRIES: u32 = 6;
/// During startup no legitimate message comes near this size.
const MAX_STARTUP_MESSAGE_BYTES: usize = 64 * 1024;
/// Backend message tags postgres-protocol understands.
const KNOWN_TAGS: &[u8] = b"R12CdcGHDIEnNAtSKsZTWcV";

/// What a walsender (or ordinary) session asks of the server at startup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// `replication=database`: a logical walsender bound to the database.
    Replication,
    /// An ordinary session (used to tell a pooler from a server).
    Ordinary,
}

/// Why a wire connection or query failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot connect to Postgres at {server}: {cause}")]
    Io { server: String, cause: String },
    #[error("no answer from Postgres at {server} within {secs} s")]
    Timeout { server: String, secs: u64 },
    #[error("TLS with Postgres at {server} failed: {cause}")]
    Tls { server: String, cause: String },
    #[error("Postgres at {server}: {message} (SQLSTATE {sqlstate})")]
    Server {
        server: String,
        sqlstate: String,
        message: String,
    },
    #[error("the peer at {server} does not speak the Postgres protocol as expected: {detail}")]
    Protocol { server: String, detail: String },
    #[error("Postgres at {server} asked for {method} authentication, which pgch does not support")]
    UnsupportedAuth { server: String, method: String },
    /// `target_session_attrs=read-write` and no host was a primary (mid-failover: retried).
    #[error("no host of {servers} is a read-write primary: {detail}")]
    NoPrimary { servers: String, detail: String },
}

impl WireError {
    /// The SQLSTATE when the server itself answered with an error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            WireError::Server { sqlstate, .. } => Some(sqlstate),
            _ => None,
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An authenticated session, ready for simple queries.
pub struct WireConnection {
    stream: Box<dyn Stream>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    server: String,
    /// `ParameterStatus` values the server reported (server_version, ...).
    pub parameters: HashMap<String, String>,
}

/// One backend message: its tag and body (without the length word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: bytes::Bytes,
}

/// The halves of a session, for a reader task and a writer task.
pub struct WireParts {
    pub reader: Box<dyn AsyncRead + Unpin + Send>,
    pub writer: Box<dyn AsyncWrite + Unpin + Send>,
    /// Bytes already read past the last message handled.
    pub read_buf: BytesMut,
    pub server: String,
}

/// Takes one complete frame off the front of `buf` (zero-copy), `Ok(None)` when more
/// bytes are needed, or `Err(tag)` when the bytes cannot be a Postgres message.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, u8> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !KNOWN_TAGS.contains(&tag) || len < 4 || len > max_len {
        return Err(tag);
    }
    let total = len + 1;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    let body = frame.split_off(5).freeze();
    Ok(Some(Frame { tag, body }))
}

/// One result row of a simple query, in text form.
pub type TextRow = Vec<Option<String>>;

impl WireConnection {
    /// Connects, negotiates TLS, starts the session and authenticates, within the
    /// endpoint's connect timeout.
    /// With several hosts they are tried in order; with `target_session_attrs=read-write`
    /// a read-only one (a standby) is skipped.
    pub async fn connect(ep: &PgEndpoint, kind: SessionKind) -> Result<Self, WireError> {
        if !ep.chooses_host() {
            return Self::connect_timed(ep, kind).await;
        }
        let mut tried = Vec::new();
        let mut last = None;
        for candidate in ep.candidates() {
            match Self::connect_timed(&candidate, kind).await {
                Ok(conn) if !ep.read_write_only => return Ok(conn),
                Ok(mut conn) => match conn.simple_query("SHOW transaction_read_only").await {
                    Ok(rows)
                        if rows
                            .first()
                            .and_then(|r| r.first())
                            .cloned()
                            .flatten()
                            .as_deref()
                            == Some("off") =>
                    {
                        return Ok(conn)
                    }
                    Ok(_) => {
                        conn.close().await;
                        tried.push(format!("{} is read-only (a standby)", candidate.address()));
                    }
                    Err(e) => tried.push(e.to_string()),
                },
                Err(e) => {
                    tried.push(e.to_string());
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if !ep.read_write_only => Err(e),
            _ => Err(WireError::NoPrimary {
                servers: ep.address(),
                detail: tried.join("; "),
            }),
        }
    }

    async fn connect_timed(ep: &PgEndpoint, kind: SessionKind) -> Result<Self, WireError> {
        let server = ep.address();
        let secs = ep.connect_timeout.as_secs();
        match tokio::time::timeout(ep.connect_timeout, Self::connect_inner(ep, kind)).await {
            Ok(result) => result,
            Err(_) => Err(WireError::Timeout { server, secs }),
        }
    }

    async fn connect_inner(ep: &PgEndpoint, kind: SessionKind) -> Result<Self, WireError> {
        let server = ep.address();
        let io_err = |e: io::Error| WireError::Io {
            server: server.clone(),
            cause: e.to_string(),
        };
        let stream: Box<dyn Stream> = if let Some(path) = ep.socket_path() {
            // Postgres offers no TLS on its Unix socket (libpq ignores sslmode there),
            // and a local peer that goes away closes the socket: no keepalives needed.
            let socket = UnixStream::connect(&path).await.map_err(|e| {
                let missing = e.kind() == io::ErrorKind::NotFound;
                let mut err = io_err(e);
                if let (true, WireError::Io { cause, .. }) = (missing, &mut err) {
                    cause.push_str(&socket_hint(ep));
                }
                err
            })?;
            Box::new(socket)
        } else {
            Self::open_tcp(ep).await?
        };
        let mut conn = WireConnection {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(8 * 1024),
            server,
            parameters: HashMap::new(),
        };
        conn.startup(ep, kind).await?;
        Ok(conn)
    }

    /// A TCP connection with keepalives, in TLS as `sslmode` asks.
    async fn open_tcp(ep: &PgEndpoint) -> Result<Box<dyn Stream>, WireError> {
        let io_err = |e: io::Error| WireError::Io {
            server: ep.address(),
            cause: e.to_string(),
        };
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(io_err)?;
        tcp.set_nodelay(true).map_err(io_err)?;
        // A replication session can be quiet for a long time by design; TCP keepalives
        // are what notice a peer that vanished without closing the connection.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL)
            .with_retries(TCP_KEEPALIVE_RETRIES);
        socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&keepalive)
            .map_err(io_err)?;
        negotiate_tls(tcp, ep).await
    }

    /// `host:port` of the peer, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends a simple query without waiting for its answer (START_REPLICATION, whose
    /// answer is a CopyBoth stream).
    pub async fn send_query(&mut self, sql: &str) -> Result<(), WireError> {
        frontend::query(sql, &mut self.write_buf).map_err(|e| self.protocol(e.to_string()))?;
        self.flush().await
    }

    /// Reads one raw frame (tag and body): the CopyBoth messages of a replication
    /// stream, which postgres-protocol's parser does not know.
    pub async fn read_frame(&mut self, max_len: usize) -> Result<Frame, WireError> {
        loop {
            match split_frame(&mut self.read_buf, max_len) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(tag) => return Err(self.not_postgres(tag)),
            }
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.protocol("the server closed the connection".into()));
            }
        }
    }

    /// Splits the session into its read and write halves, with what was already read.
    pub fn into_parts(self) -> WireParts {
        let (reader, writer) = tokio::io::split(self.stream);
        WireParts {
            reader: Box::new(reader),
            writer: Box::new(writer),
            read_buf: self.read_buf,
            server: self.server,
        }
    }

    async fn startup(&mut self, ep: &PgEndpoint, kind: SessionKind) -> Result<(), WireError> {
        let options = SESSION_SETTINGS
            .iter()
            .map(|(k, v)| format!("-c {k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut params: Vec<(&str, &str)> = vec![
            ("user", ep.user.as_str()),
            ("database", ep.database.as_str()),
            ("application_name", APPLICATION_NAME),
            ("client_encoding", "UTF8"),
            ("options", options.as_str()),
        ];
        if kind == SessionKind::Replication {
            params.push(("replication", "database"));
        }
        frontend::startup_message(params.iter().copied(), &mut self.write_buf)
            .map_err(|e| self.protocol(e.to_string()))?;
        self.flush().await?;
        self.authenticate(ep).await?;
        loop {
            match self.read_message(MAX_STARTUP_MESSAGE_BYTES).await? {
                Message::ParameterStatus(body) => {
                    let name = body.name().map_err(|e| self.protocol(e.to_string()))?;
                    let value = body.value().map_err(|e| self.protocol(e.to_string()))?;
                    self.parameters.insert(name.to_string(), value.to_string());
                }
                Message::BackendKeyData(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(self.server_error(&body)),
                _ => return Err(self.protocol("unexpected message during startup".into())),
            }
        }
    }

    async fn authenticate(&mut self, ep: &PgEndpoint) -> Result<(), WireError> {
        let password = ep.password.expose().as_bytes();
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.read_message(MAX_STARTUP_MESSAGE_BYTES).await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password, &mut self.write_buf)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(ep.user.as_bytes(), password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechanisms
                        .next()
                        .map_err(|e| self.protocol(e.to_string()))?
                    {
                        has_scram |= m == SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(WireError::UnsupportedAuth {
                            server: self.server.clone(),
                            method: "a SASL mechanism other than SCRAM-SHA-256".into(),
                        });
                    }
                    let s = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        SCRAM_SHA_256,
                        s.message(),
                        &mut self.write_buf,
                    )
                    .map_err(|e| self.protocol(e.to_string()))?;
                    scram = Some(s);
                    self.flush().await?;
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol("SASL continue before SASL start".into()))?;
                    s.update(body.data())
                        .map_err(|e| self.protocol(format!("SCRAM: {e}")))?;
                    let msg = s.message().to_vec();
                    frontend::sasl_response(&msg, &mut self.write_buf)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol("SASL final before SASL start".into()))?;
                    s.finish(body.data())
                        .map_err(|e| self.protocol(format!("SCRAM server signature: {e}")))?;
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(WireError::UnsupportedAuth {
                        server: self.server.clone(),
                        method: "GSS/SSPI/Kerberos".into(),
                    })
                }
                Message::NoticeResponse(_) => {}
                Message::ErrorResponse(body) => return Err(self.server_error(&body)),
                _ => return Err(self.protocol("unexpected message during authentication".into())),
            }
        }
    }

    /// Runs a simple query and returns the rows of its (last) result in text form.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<TextRow>, WireError> {
        frontend::query(sql, &mut self.write_buf).map_err(|e| self.protocol(e.to_string()))?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message(MAX_MESSAGE_BYTES).await? {
                Message::RowDescription(_) => rows.clear(),
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut row = Vec::new();
                    let mut ranges = body.ranges();
                    while let Some(range) =
                        ranges.next().map_err(|e| self.protocol(e.to_string()))?
                    {
                        row.push(match range {
                            None => None,
                            Some(r) => Some(
                                std::str::from_utf8(buf.get(r).unwrap_or_default())
                                    .map_err(|_| self.protocol("a text value is not UTF-8".into()))?
                                    .to_string(),
                            ),
                        });
                    }
                    rows.push(row);
                }
                Message::ErrorResponse(body) => error = Some(self.server_error(&body)),
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads one backend message, refusing anything that cannot be Postgres talking.
    pub async fn read_message(&mut self, max_len: usize) -> Result<Message, WireError> {
        loop {
            if self.read_buf.len() >= 5 {
                let tag = self.read_buf[0];
                let len = u32::from_be_bytes([
                    self.read_buf[1],
                    self.read_buf[2],
                    self.read_buf[3],
                    self.read_buf[4],
                ]) as usize;
                if !KNOWN_TAGS.contains(&tag) || len < 4 || len > max_len {
                    return Err(self.not_postgres(tag));
                }
            }
            match Message::parse(&mut self.read_buf) {
                Ok(Some(msg)) => return Ok(msg),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.protocol("the server closed the connection".into()));
            }
        }
    }

    /// Sends whatever was queued in the write buffer.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        let buf = self.write_buf.split();
        self.stream.write_all(&buf).await.map_err(|e| self.io(e))?;
        self.stream.flush().await.map_err(|e| self.io(e))
    }

    /// Ends the session politely.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
    }

    fn io(&self, e: io::Error) -> WireError {
        WireError::Io {
            server: self.server.clone(),
            cause: e.to_string(),
        }
    }

    fn protocol(&self, detail: String) -> WireError {
        WireError::Protocol {
            server: self.server.clone(),
            detail,
        }
    }

    fn not_postgres(&self, tag: u8) -> WireError {
        let shown = if tag.is_ascii_graphic() {
            format!("'{}'", tag as char)
        } else {
            format!("0x{tag:02X}")
        };
        let preview: String = self
            .read_buf
            .chunk()
            .iter()
            .take(24)
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        self.protocol(format!(
            "it answered with bytes that are not a Postgres message (first byte {shown}: \"{preview}\")"
        ))
    }

    fn server_error(&self, body: &ErrorResponseBody) -> WireError {
        let mut sqlstate = String::new();
        let mut message = String::new();
        let mut fields = body.fields();
        while let Ok(Some(field)) = fields.next() {
            match field.type_() {
                b'C' => sqlstate = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                _ => {}
            }
        }
        WireError::Server {
            server: self.server.clone(),
            sqlstate,
            message,
        }
    }
}

async fn negotiate_tls(mut tcp: TcpStream, ep: &PgEndpoint) -> Result<Box<dyn Stream>, WireError> {
    let server = ep.address();
    let Some(config) = tls::client_config(ep).map_err(|e| WireError::Tls {
        server: server.clone(),
        cause: e.to_string(),
    })?
    else {
        return Ok(Box::new(tcp));
    };
    let io_err = |e: io::Error| WireError::Io {
        server: server.clone(),
        cause: e.to_string(),
    };
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req).await.map_err(io_err)?;
    let mut answer = [0u8; 1];
    let n = tcp.read(&mut answer).await.map_err(io_err)?;
    match (n, answer[0]) {
        (1, b'S') => {
            let name = tls::server_name(&ep.host).map_err(|e| WireError::Tls {
                server: server.clone(),
                cause: e.to_string(),
            })?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| WireError::Tls {
                    server: server.clone(),
                    cause: e.to_string(),
                })?;
            Ok(Box::new(stream))
        }
        (1, b'N') if ep.sslmode == SslMode::Prefer => Ok(Box::new(tcp)),
        (1, b'N') => Err(WireError::Tls {
            server,
            cause: format!(
                "the server does not support TLS, but source.sslmode is {:?}",
                ep.sslmode
            ),
        }),
        (0, _) => Err(WireError::Protocol {
            server,
            detail: "it closed the connection when asked for TLS".into(),
        }),
        (_, other) => Err(WireError::Protocol {
            server,
            detail: format!("it answered the TLS request with byte 0x{other:02X}, not 'S' or 'N'"),
        }),
    }
}
