"""A small ClickHouse-compatible HTTP server over the chdb engine, for tests and local runs.

pgch's integration tests and local runs need a ClickHouse server, but no modern
clickhouse-server can be installed on the project's machines (no Docker). chdb
(`chdb-core`, the ClickHouse 26.9 engine as a Python module) runs the real engine
in-process; this file puts the part of ClickHouse's HTTP interface that the Rust
`clickhouse` crate (0.15), curl and a browser use in front of it.

    python clickhouse_front.py --data DIR [--host 127.0.0.1] [--port 0]
        [--user U] [--password P] [--parent-pid PID] [--ready-file PATH]

`--port 0` picks a free port. Once listening, the port is written (digits and a
newline, atomically) to `--ready-file` and `listening on HOST:PORT` is printed.
With `--parent-pid` the process exits as soon as that process is gone.

What it does:
- `GET /ping`, `GET /` answer `Ok.`; queries come by `POST /` (or `GET /?query=`).
- Credentials from X-ClickHouse-User/-Key, `user`/`password` URL parameters or Basic
  auth; a wrong one gets HTTP 403 with code 516, as from a real server.
- SQL from the `query` URL parameter, else the body (or a multipart/form-data body
  with `query` and `param_*` fields). With both, the body is the INSERT data.
- Every URL parameter that is not one of ClickHouse's HTTP parameters is a setting
  for that request only (`SET` on the request's own chdb connection).
- INSERT data is streamed into chdb's streaming insert API (`send_insert`,
  `insert_append`, `insert_done`, `insert_cancel`) while it arrives, un-framed from
  ClickHouse's native compressed blocks first when `decompress=1`. The insert is
  all-or-nothing: squashing settings make the engine hold the whole insert in memory
  and write it at the end, and a client that goes away mid-body gets it cancelled.
- Errors look like a real server's: status, X-ClickHouse-Exception-Code and a
  `Code: N. DB::Exception: ... (NAME) (version 26.9...)` body.

Limits:
- One process per data directory (locked exclusively); nothing else may open it.
- An INSERT is held in memory (as columns) until it ends: fine for tests, not for
  inserts of many gigabytes.
- Replies are never compressed (`compress=1` and Accept-Encoding are ignored) and
  results are buffered whole before they are sent.
- `session_id` is accepted but there is no session state: every request runs on a
  fresh connection. `role`, `quota_key` and the like are ignored. GET queries are
  not forced read-only.
- Several `;`-separated statements in one request all run (a real server refuses).
- ZSTD-compressed request blocks are refused (no zstd in the standard library).
  Block checksums are not verified.
- SQL that comes in the body (no `query` parameter) must be UTF-8 text: binary
  INSERT data needs the `query` parameter form, as the crate uses.
"""

import argparse
import base64
import fcntl
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.block
from chdb import _chdb

READ_SIZE = 1 << 20  # bytes read from the socket, and appended to an insert, at a time
DISPLAY_NAME = "chdb-front"

# URL parameters of ClickHouse's HTTP interface that are not settings.
HTTP_PARAMETERS = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "close_session", "decompress", "compress", "user", "password",
    "quota_key", "role", "stacktrace", "wait_end_of_query", "buffer_size",
    "client_protocol_version",
})

# Squashing thresholds no insert reaches: the engine keeps the rows of a streamed
# INSERT in memory and writes them only when the insert is finished, so a cancelled
# insert leaves nothing behind. With the defaults it commits a part every ~1M rows.
ATOMIC_INSERT_SETTINGS = {
    "min_insert_block_size_rows": str(10**18),
    "min_insert_block_size_bytes": str(10**18),
}

# Error codes (and their names) that the front raises itself.
SYNTAX_ERROR = (62, "SYNTAX_ERROR")
UNKNOWN_SETTING = (115, "UNKNOWN_SETTING")
UNKNOWN_COMPRESSION_METHOD = (89, "UNKNOWN_COMPRESSION_METHOD")
CANNOT_DECOMPRESS = (271, "CANNOT_DECOMPRESS")
AUTHENTICATION_FAILED = (516, "AUTHENTICATION_FAILED")
UNKNOWN_EXCEPTION = (1002, "UNKNOWN_EXCEPTION")

# HTTP status of an error code, as a real server maps them; anything else is 500.
STATUS_OF_CODE = {
    **dict.fromkeys((6, 25, 26, 27, 38, 41, 53, 62, 72, 117, 457), 400),
    **dict.fromkeys((497, 516), 403),
    **dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 81, 115, 336), 404),
    159: 408,
    48: 501,
}

# Content-Type of a result, by the start of the lower-cased format name.
CONTENT_TYPES = (
    ("tabseparated", "text/tab-separated-values; charset=UTF-8"),
    ("tsv", "text/tab-separated-values; charset=UTF-8"),
    ("csv", "text/csv; charset=UTF-8"),
    ("json", "application/json; charset=UTF-8"),
    ("xml", "application/xml; charset=UTF-8"),
    ("rowbinary", "application/octet-stream"),
    ("native", "application/octet-stream"),
    ("parquet", "application/octet-stream"),
    ("arrow", "application/octet-stream"),
    ("orc", "application/octet-stream"),
    ("avro", "application/octet-stream"),
    ("msgpack", "application/octet-stream"),
    ("protobuf", "application/octet-stream"),
)

FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z_]\w*)\s*;?\s*$", re.IGNORECASE)
INSERT_WITH_FORMAT = re.compile(
    r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+([A-Za-z_]\w*)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
INSERT_WITH_VALUES = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+VALUES\s*$", re.IGNORECASE | re.DOTALL)
SETTING_NAME = re.compile(r"^[A-Za-z_]\w*$")
EXCEPTION_START = re.compile(r"Code: (\d+)\. DB::Exception: ")
NESTED_EXCEPTION_END = re.compile(r"\. \([A-Z0-9_]+\)( \(version [^)]*\))?$")
VERSION_END = re.compile(r"\(version [^)]*\)$")
VERSION_QUERY = re.compile(r"\s*SELECT\s+version\(\)\s*;?\s*", re.IGNORECASE)

engine_version = "26.9"  # replaced by the engine's own at startup


class ClickHouseError(Exception):
    """An error to answer with, in ClickHouse's shape."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def of(cls, code_and_name, text):
        code, name = code_and_name
        return cls(code, f"Code: {code}. DB::Exception: {text}. ({name}) (version {engine_version})")

    @property
    def status(self):
        return STATUS_OF_CODE.get(self.code, 500)


class ClientGone(Exception):
    """The client closed the connection, or broke the HTTP framing, mid-request."""


def engine_error(exc):
    """A ClickHouseError from a chdb exception, its message cleaned of chdb's re-wrapping."""
    text = str(exc).strip()
    match = EXCEPTION_START.search(text)
    if not match:
        return ClickHouseError.of(UNKNOWN_EXCEPTION, text)
    code = int(match.group(1))
    message = text[match.start():]
    prefix = match.group(0)
    while message.startswith(prefix + prefix):
        message = NESTED_EXCEPTION_END.sub("", message[len(prefix):], count=1)
    if not VERSION_END.search(message):
        message += f" (version {engine_version})"
    return ClickHouseError(code, message)


# --- request bodies ---------------------------------------------------------------


class BodyReader:
    """Reads a request body framed by Content-Length or chunked transfer encoding."""

    def __init__(self, rfile, headers):
        self._rfile = rfile
        self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._left = 0 if self._chunked else int(headers.get("Content-Length") or 0)
        self.done = not self._chunked and self._left == 0

    def read_some(self, limit=READ_SIZE):
        """Up to `limit` bytes of the body; b"" once it has all been read."""
        if self.done:
            return b""
        if self._chunked and self._left == 0:
            self._left = self._next_chunk_size()
            if self._left == 0:
                self._skip_trailers()
                self.done = True
                return b""
        data = self._read_exact(min(limit, self._left))
        self._left -= len(data)
        if self._left == 0:
            if self._chunked:
                self._expect_line_end()
            else:
                self.done = True
        return data

    def chunks(self):
        while data := self.read_some():
            yield data

    def read_all(self):
        return b"".join(self.chunks())

    def drain(self):
        for _ in self.chunks():
            pass

    def _read_exact(self, size):
        try:
            data = self._rfile.read(size)
        except OSError as exc:
            raise ClientGone(str(exc)) from exc
        if len(data) < size:
            raise ClientGone("the client closed the connection mid-body")
        return data

    def _read_line(self):
        try:
            line = self._rfile.readline(1024)
        except OSError as exc:
            raise ClientGone(str(exc)) from exc
        if not line.endswith(b"\n"):
            raise ClientGone("the client closed the connection mid-body")
        return line.strip()

    def _next_chunk_size(self):
        size = self._read_line().split(b";", 1)[0]
        try:
            return int(size, 16)
        except ValueError:
            raise ClientGone(f"malformed chunk size {size!r}") from None

    def _expect_line_end(self):
        if self._read_line():
            raise ClientGone("a chunk is longer than its announced size")

    def _skip_trailers(self):
        while self._read_line():
            pass


def unframe_native_blocks(raw_chunks):
    """The data inside ClickHouse's native compressed blocks, one block at a time.

    A block: 16-byte CityHash128 checksum (not verified: CityHash is not in the
    standard library), method byte, u32 LE size of header (9 bytes) plus payload,
    u32 LE uncompressed size, payload.
    """
    buffer = bytearray()
    for chunk in raw_chunks:
        buffer += chunk
        while len(buffer) >= 25:
            method = buffer[16]
            compressed_size, raw_size = struct.unpack_from("<II", buffer, 17)
            if compressed_size < 9:
                raise ClickHouseError.of(CANNOT_DECOMPRESS, f"Invalid compressed block size {compressed_size}")
            end = 16 + compressed_size
            if len(buffer) < end:
                break
            yield decompress_block(method, bytes(buffer[25:end]), raw_size)
            del buffer[:end]
    if buffer:
        raise ClickHouseError.of(CANNOT_DECOMPRESS, "The compressed data ends in the middle of a block")


def decompress_block(method, payload, raw_size):
    if method == 0x82:
        try:
            return lz4.block.decompress(payload, uncompressed_size=raw_size)
        except lz4.block.LZ4BlockError as exc:
            raise ClickHouseError.of(CANNOT_DECOMPRESS, f"Cannot decompress LZ4 block: {exc}") from None
    if method == 0x02:
        return payload
    if method == 0x90:
        raise ClickHouseError.of(
            UNKNOWN_COMPRESSION_METHOD,
            "ZSTD-compressed blocks are not supported by this test front (no zstd in the "
            "Python standard library): use LZ4 or no compression")
    raise ClickHouseError.of(UNKNOWN_COMPRESSION_METHOD, f"Unknown compression method 0x{method:02x}")


def coalesced(chunks, size=READ_SIZE):
    """The same bytes in pieces of at least `size` (the last may be smaller)."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        if len(pending) >= size:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


def parse_multipart(body, content_type):
    """The text fields of a multipart/form-data body, by name."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ClickHouseError.of(SYNTAX_ERROR, "multipart/form-data without a boundary")
    fields = {}
    for part in body.split(b"--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'\bname="([^"]*)"', head)
        if name:
            fields[name.group(1).decode()] = value.removesuffix(b"\r\n").decode()
    return fields


# --- SQL ----------------------------------------------------------------------------


def output_format(sql, default_format):
    match = FORMAT_CLAUSE.search(sql)
    return match.group(1) if match else default_format


def split_insert(sql):
    """(`INSERT INTO target [(cols)]`, input format) when `sql` awaits its data, else None."""
    match = INSERT_WITH_FORMAT.match(sql)
    if match:
        return match.group(1), match.group(2)
    match = INSERT_WITH_VALUES.match(sql)
    if match:
        return match.group(1), "Values"
    return None


def quote_identifier(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def set_statement(settings):
    """One `SET a = 'x', b = 'y'` (the engine parses each value as its setting's type).

    `readonly` comes last, so that it does not forbid the settings beside it.
    """
    for name in settings:
        if not SETTING_NAME.match(name):
            raise ClickHouseError.of(UNKNOWN_SETTING, f"Unknown setting '{name}'")
    ordered = sorted(settings.items(), key=lambda item: item[0] == "readonly")
    return "SET " + ", ".join(f"{name} = {quote_string(value)}" for name, value in ordered)


def summary_header(result, elapsed):
    """X-ClickHouse-Summary from a chdb query_result (None when there was none)."""
    if result is None:
        counts = dict.fromkeys(("read_rows", "read_bytes", "written_rows", "written_bytes",
                                "result_rows", "result_bytes"), 0)
    else:
        counts = {
            "read_rows": result.storage_rows_read(),
            "read_bytes": result.storage_bytes_read(),
            "written_rows": result.rows_written(),
            "written_bytes": result.bytes_written(),
            "result_rows": result.rows_read(),
            "result_bytes": result.bytes_read(),
        }
    counts["total_rows_to_read"] = 0
    counts["elapsed_ns"] = int(elapsed * 1e9)
    return json.dumps({key: str(value) for key, value in counts.items()}, separators=(",", ":"))


# --- the engine ---------------------------------------------------------------------


class Engine:
    """The chdb engine on one data directory, locked for this process alone."""

    def __init__(self, data_dir):
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.abspath(data_dir)
        self._lock_file = open(os.path.join(self.path, "front.lock"), "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{self.path} is already used by another clickhouse_front") from None
        # Held open for the process's life, so the engine stays up between requests.
        self._anchor = _chdb.connect(self.path)
        version, self.timezone = self._anchor.query(
            "SELECT version(), timezone()", "TSV").bytes().decode().split()
        global engine_version
        engine_version = version

    @contextmanager
    def connection(self, database, settings):
        """A fresh connection for one request, so that USE and SET do not outlive it."""
        conn = _chdb.connect(self.path)
        try:
            if database:
                run(conn, f"USE {quote_identifier(database)}")
            if settings:
                run(conn, set_statement(settings))
            yield conn
        finally:
            conn.close()

    def close(self):
        self._anchor.close()


def run(conn, sql, fmt="TabSeparated", params=None):
    try:
        return conn.query(sql, fmt, params=params or {})
    except RuntimeError as exc:
        raise engine_error(exc) from None


def stream_insert(conn, insert, fmt, data_chunks):
    """Feed `data_chunks` to a streaming INSERT; commit only once they have all come."""
    try:
        handle = conn.send_insert(insert, fmt)
    except RuntimeError as exc:
        raise engine_error(exc) from None
    try:
        for chunk in coalesced(data_chunks):
            conn.insert_append(handle, chunk)
    except BaseException as exc:
        try:
            conn.insert_cancel(handle)
        except RuntimeError:
            pass
        if isinstance(exc, RuntimeError):
            raise engine_error(exc) from None
        raise
    try:
        return conn.insert_done(handle)
    except RuntimeError as exc:
        raise engine_error(exc) from None


# --- HTTP ---------------------------------------------------------------------------


class Credentials:
    """The user and password that requests must bring (`default` and none by default)."""

    def __init__(self, user, password):
        self.configured = user is not None or password is not None
        self.user = user or "default"
        self.password = password or ""

    def check(self, headers, params):
        user, password = self._presented(headers, params)
        if password != self.password or (self.configured and user != self.user):
            raise ClickHouseError.of(
                AUTHENTICATION_FAILED,
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name")

    @staticmethod
    def _presented(headers, params):
        if "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers:
            return headers.get("X-ClickHouse-User") or "default", headers.get("X-ClickHouse-Key") or ""
        if "user" in params or "password" in params:
            return params.get("user") or "default", params.get("password") or ""
        scheme, _, encoded = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                return "", None
            return user or "default", password
        return "default", ""


class Request:
    """What one query request asks for, split out of its URL and body."""

    def __init__(self, params, headers, body):
        self.params = params
        self.body = body
        self.database = params.get("database", "")
        self.default_format = params.get("default_format") or "TabSeparated"
        self.settings = {k: v for k, v in params.items()
                         if k not in HTTP_PARAMETERS and not k.startswith("param_")}
        self.query_params = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
        self.url_sql = params.get("query")
        content_type = headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            self._take_multipart(parse_multipart(body.read_all(), content_type))

    def _take_multipart(self, fields):
        if self.url_sql is None:
            self.url_sql = fields.get("query")
        for name, value in fields.items():
            if name.startswith("param_"):
                self.query_params[name[len("param_"):]] = value

    def data_chunks(self):
        chunks = self.body.chunks()
        return unframe_native_blocks(chunks) if self.params.get("decompress") == "1" else chunks

    def body_text(self):
        data = b"".join(self.data_chunks())
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise ClickHouseError.of(SYNTAX_ERROR, "The query in the request body is not UTF-8") from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-front"
    engine: Engine
    credentials: Credentials
    reported_version = None

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path in ("/ping", "/replicas_status") or (url.path == "/" and "query" not in params):
            self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
        elif url.path == "/":
            self._serve_query(params)
        else:
            self._reply(404, f"There is no handle {url.path}\n".encode(),
                        {"Content-Type": "text/plain; charset=UTF-8"})

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path != "/":
            BodyReader(self.rfile, self.headers).drain()
            self._reply(404, f"There is no handle {url.path}\n".encode(),
                        {"Content-Type": "text/plain; charset=UTF-8"})
            return
        self._serve_query(dict(parse_qsl(url.query, keep_blank_values=True)))

    def _serve_query(self, params):
        body = BodyReader(self.rfile, self.headers)
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            self.credentials.check(self.headers, params)
            request = Request(params, self.headers, body)
            fmt, payload, summary = self._execute(request)
            self._reply(200, payload, {
                "Content-Type": content_type_of(fmt),
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Format": fmt,
                "X-ClickHouse-Timezone": self.engine.timezone,
                "X-ClickHouse-Summary": summary,
            })
        except ClientGone as gone:
            self.log_message("query %s abandoned: %s", query_id, gone)
            self.close_connection = True
        except ClickHouseError as error:
            self._reply_error(body, query_id, error)
        except Exception as exc:  # a bug here: answer it rather than drop the connection
            self._reply_error(body, query_id, ClickHouseError.of(UNKNOWN_EXCEPTION, repr(exc)))

    def _execute(self, request):
        """(output format, result bytes, summary header) of the request's query."""
        started = time.monotonic()
        insert = split_insert(request.url_sql) if request.url_sql is not None else None
        if insert:
            settings = {**ATOMIC_INSERT_SETTINGS, **request.settings}
            with self.engine.connection(request.database, settings) as conn:
                result = stream_insert(conn, *insert, request.data_chunks())
            return request.default_format, b"", summary_header(result, time.monotonic() - started)
        sql = self._sql_of(request)
        if self.reported_version and VERSION_QUERY.fullmatch(sql):
            # Tests of older servers: the answer a server of that version gives.
            sql = f"SELECT {quote_string(self.reported_version)} AS `version()`"
        fmt = output_format(sql, request.default_format)
        with self.engine.connection(request.database, request.settings) as conn:
            result = run(conn, sql, request.default_format, request.query_params)
            payload = result.bytes()
        return fmt, payload, summary_header(result, time.monotonic() - started)

    @staticmethod
    def _sql_of(request):
        """The query: the `query` parameter followed by the body, as ClickHouse joins them."""
        text = request.body_text()
        sql = "\n".join(part for part in (request.url_sql, text) if part)
        if not sql.strip():
            raise ClickHouseError.of(SYNTAX_ERROR, "Empty query")
        return sql

    def _reply_error(self, body, query_id, error):
        self.log_message("query %s failed: %s", query_id, error.message.splitlines()[0])
        try:
            body.drain()
        except ClientGone:
            self.close_connection = True
            return
        self._reply(error.status, (error.message + "\n").encode(), {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Exception-Code": str(error.code),
        })

    def _reply(self, status, payload, headers):
        self.send_response(status)
        self.send_header("X-ClickHouse-Server-Display-Name", DISPLAY_NAME)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True

    def log_request(self, code="-", size="-"):
        pass  # no access log; failures are logged by _reply_error


def content_type_of(fmt):
    lowered = fmt.lower()
    for prefix, content_type in CONTENT_TYPES:
        if lowered.startswith(prefix):
            return content_type
    return "text/plain; charset=UTF-8"


# --- process ------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # a burst of concurrent test connections must not be refused
    daemon_threads = True


def watch_parent(pid):
    """Exit the whole process once `pid` is gone (or a zombie, or we were re-parented)."""
    was_our_parent = os.getppid() == pid
    while process_alive(pid) and not (was_our_parent and os.getppid() != pid):
        time.sleep(0.5)
    os._exit(0)


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def write_ready_file(path, port):
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        file.write(f"{port}\n")
    os.replace(temporary, path)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="ClickHouse-compatible HTTP front over chdb")
    parser.add_argument("--data", required=True, help="chdb data directory (created if missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--user", help="the only user accepted (default: any user, no password)")
    parser.add_argument("--password", help="the password it must bring")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--ready-file", help="where to write the port once listening")
    parser.add_argument("--report-version",
                        help="answer `SELECT version()` with this version (tests of older servers)")
    return parser.parse_args(argv)


def stop(signum, frame):
    raise SystemExit(0)


def main(argv=None):
    args = parse_args(argv)
    if args.parent_pid:
        threading.Thread(target=watch_parent, args=(args.parent_pid,), daemon=True).start()
    engine = Engine(args.data)
    Handler.engine = engine
    Handler.credentials = Credentials(args.user, args.password)
    Handler.reported_version = args.report_version
    server = Server((args.host, args.port), Handler)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    if args.ready_file:
        write_ready_file(args.ready_file, port)
    print(f"listening on {args.host}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        engine.close()
        sys.stdout.flush()
        os._exit(0)  # request threads may still be inside the engine: do not wait for them


if __name__ == "__main__":
    main()
