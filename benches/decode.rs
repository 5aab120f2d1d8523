//! Throughput of the pure pgoutput decoder on the traffic of a typical CDC backlog:
//! transactions of one single-row UPDATE each on a 10-column table, as pgoutput
//! (protocol version 1, text values) sends them — Begin, Update with the new tuple
//! only ('N', default replica identity), Commit — plus one Relation message per batch.
//!
//! The bytes are built by hand after
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>,
//! with values printed the way a walsender prints them under pgch's session settings
//! (DateStyle ISO, TimeZone UTC, extra_float_digits 3).
//!
//! Two groups measure the same work: `decode_messages` reports messages/s,
//! `decode_bytes` MB/s (decimal: 10^6 bytes).
//!
//! ```sh
//! cargo bench --bench decode
//! ```

use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgch::source::pgoutput::{decode, DecodeContext};

/// Transactions (Begin, Update, Commit) per batch; each batch starts with one Relation.
const TRANSACTIONS_PER_BATCH: u32 = 1_000;
/// The relation id of the table.
const RELATION_ID: u32 = 16_385;
/// Microseconds from 2000-01-01 to 2024-05-17 12:00:00 UTC, a plausible commit time.
const COMMIT_TIME_MICROS: i64 = 769_176_000_000_000;

/// Type OIDs from `pg_type.dat`.
const INT8OID: u32 = 20;
const INT4OID: u32 = 23;
const NUMERICOID: u32 = 1700;
const TEXTOID: u32 = 25;
const TIMESTAMPTZOID: u32 = 1184;
const BOOLOID: u32 = 16;
const JSONBOID: u32 = 3802;
const UUIDOID: u32 = 2950;
const FLOAT8OID: u32 = 701;
const VARCHAROID: u32 = 1043;

/// The table: (name, type OID, type modifier, part of the key).
const COLUMNS: [(&str, u32, i32, bool); 10] = [
    ("id", INT8OID, -1, true),
    ("qty", INT4OID, -1, false),
    // numeric(12,2): ((12 << 16) | 2) + VARHDRSZ
    ("price", NUMERICOID, ((12 << 16) | 2) + 4, false),
    ("note", TEXTOID, -1, false),
    ("updated_at", TIMESTAMPTZOID, -1, false),
    ("active", BOOLOID, -1, false),
    ("attrs", JSONBOID, -1, false),
    ("ref", UUIDOID, -1, false),
    ("score", FLOAT8OID, -1, false),
    // varchar(32): 32 + VARHDRSZ
    ("status", VARCHAROID, 32 + 4, false),
];

fn put_cstring(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// `R`: relation id, namespace, name, replica identity, columns.
fn relation() -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'R');
    b.put_u32(RELATION_ID);
    put_cstring(&mut b, "public");
    put_cstring(&mut b, "orders");
    b.put_u8(b'd');
    b.put_i16(COLUMNS.len() as i16);
    for (name, oid, typmod, key) in COLUMNS {
        b.put_u8(u8::from(key));
        put_cstring(&mut b, name);
        b.put_u32(oid);
        b.put_i32(typmod);
    }
    b.freeze()
}

/// `B`: final LSN, commit timestamp, xid.
fn begin(final_lsn: u64, ts: i64, xid: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(21);
    b.put_u8(b'B');
    b.put_u64(final_lsn);
    b.put_i64(ts);
    b.put_u32(xid);
    b.freeze()
}

/// `C`: flags, commit LSN, end LSN, commit timestamp.
fn commit(commit_lsn: u64, end_lsn: u64, ts: i64) -> Bytes {
    let mut b = BytesMut::with_capacity(26);
    b.put_u8(b'C');
    b.put_u8(0);
    b.put_u64(commit_lsn);
    b.put_u64(end_lsn);
    b.put_i64(ts);
    b.freeze()
}

/// The text values of row `id` after its `version`-th update, as a walsender prints them.
fn row_values(id: u64, version: u64) -> [String; 10] {
    let secs = id * 37 + version; // seconds into the day
    [
        id.to_string(),
        (id % 1_000 + version).to_string(),
        format!("{}.{:02}", 100 + id % 99_900, id % 100),
        // 45 characters: 32 hex digits padded with 'x', like rpad(md5(id::text), 45, 'x').
        format!(
            "{:016x}{:016x}xxxxxxxxxxxxx",
            id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            !id
        ),
        format!(
            "2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            1 + id % 12,
            1 + id % 28,
            secs / 3_600 % 24,
            secs / 60 % 60,
            secs % 60,
            (id * 7_919) % 1_000_000
        ),
        if id.is_multiple_of(2) { "t" } else { "f" }.to_string(),
        format!("{{\"k\": {}, \"tags\": [\"a\", \"b\"]}}", id % 10),
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            id.wrapping_mul(2_654_435_761) as u32,
            id % 0x1_0000,
            id % 0x1000,
            version % 0x1000,
            id.wrapping_mul(0x5851_F42D_4C95_7F2D) & 0xFFFF_FFFF_FFFF
        ),
        (id as f64 * 1.5 + version as f64 * 0.25 + 0.123_456_789).to_string(),
        format!("status_{}", id % 7),
    ]
}

/// `U`: relation id, 'N', then the new tuple: column count and per column 't', length, text.
fn update(values: &[String; 10]) -> Bytes {
    let mut b = BytesMut::with_capacity(256);
    b.put_u8(b'U');
    b.put_u32(RELATION_ID);
    b.put_u8(b'N');
    b.put_i16(values.len() as i16);
    for v in values {
        b.put_u8(b't');
        b.put_i32(v.len() as i32);
        b.put_slice(v.as_bytes());
    }
    b.freeze()
}

/// One batch: a Relation, then TRANSACTIONS_PER_BATCH transactions of one UPDATE each.
fn batch() -> Vec<Bytes> {
    let mut messages = vec![relation()];
    let mut lsn: u64 = 0x1_6B37_4D48;
    for t in 0..u64::from(TRANSACTIONS_PER_BATCH) {
        let id = 1 + (t * 7_577) % 100_000;
        let ts = COMMIT_TIME_MICROS + t as i64 * 1_250;
        let update = update(&row_values(id, t / 100));
        // WAL: the heap update record, then the commit record.
        let commit_lsn = lsn + 120 + update.len() as u64;
        let end_lsn = commit_lsn + 32;
        messages.push(begin(commit_lsn, ts, 750 + t as u32));
        messages.push(update);
        messages.push(commit(commit_lsn, end_lsn, ts));
        lsn = end_lsn;
    }
    messages
}

/// Decodes every message of the batch; panics on an error (the input is valid).
fn decode_all(messages: &[Bytes]) {
    for m in messages {
        match decode(black_box(m), DecodeContext::OUTSIDE_STREAM) {
            Ok(msg) => {
                black_box(msg);
            }
            Err(e) => panic!("the benchmark input does not decode: {e}"),
        }
    }
}

fn bench_decode(c: &mut Criterion) {
    let messages = batch();
    let count = messages.len() as u64;
    let bytes: u64 = messages.iter().map(|m| m.len() as u64).sum();
    decode_all(&messages); // fail fast, before measuring, if the input is wrong

    // e.g. "relation+1000tx/3001msgs/283093B"
    let name = format!("relation+{TRANSACTIONS_PER_BATCH}tx/{count}msgs/{bytes}B");
    let mut group = c.benchmark_group("decode_messages");
    group.throughput(Throughput::Elements(count));
    group.bench_function(&name, |b| b.iter(|| decode_all(&messages)));
    group.finish();

    let mut group = c.benchmark_group("decode_bytes");
    group.throughput(Throughput::BytesDecimal(bytes));
    group.bench_function(&name, |b| b.iter(|| decode_all(&messages)));
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode
}
criterion_main!(benches);
