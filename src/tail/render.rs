//! Turns decoded pgoutput changes into one JSON object each (pure: no I/O).
//!
//! Values stay as Postgres printed them (text protocol): a JSON string per column,
//! `null` for NULL, and `{"unchanged_toast": true}` for a TOASTed value the update did
//! not change (it is not in the WAL; the old value still stands).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::lsn::Lsn;
use crate::source::pgoutput::{
    Begin, ColumnValue, Delete, Insert, LogicalMessage, Oid, OldTuple, PgTimestamp, Relation,
    Truncate, TupleData, Update,
};

/// What a change line needs from its transaction.
#[derive(Clone, Copy, Debug, Default)]
pub struct TxContext {
    pub xid: Option<u32>,
    pub commit_time: Option<PgTimestamp>,
}

impl From<&Begin> for TxContext {
    fn from(b: &Begin) -> Self {
        TxContext {
            xid: Some(b.xid),
            commit_time: Some(b.commit_timestamp),
        }
    }
}

/// Why a change could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("a change refers to relation {0}, but no Relation message announced it")]
    UnknownRelation(Oid),
}

/// Relations announced so far, by id.
pub type Relations = HashMap<Oid, Relation>;

fn lookup(relations: &Relations, id: Oid) -> Result<&Relation, RenderError> {
    relations.get(&id).ok_or(RenderError::UnknownRelation(id))
}

fn header(lsn: Lsn, tx: TxContext, op: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("lsn".into(), json!(lsn.to_string()));
    m.insert("xid".into(), json!(tx.xid));
    m.insert(
        "commit_time".into(),
        json!(tx
            .commit_time
            .and_then(|t| t.to_unix_micros())
            .map(format_unix_micros)),
    );
    m.insert("op".into(), json!(op));
    m
}

fn table_name(rel: &Relation) -> String {
    format!("{}.{}", rel.namespace, rel.name)
}

/// A column value as JSON.
pub fn value_json(v: &ColumnValue) -> Value {
    match v {
        ColumnValue::Null => Value::Null,
        ColumnValue::UnchangedToast => json!({"unchanged_toast": true}),
        ColumnValue::Text(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::String(hex(b)),
        },
        ColumnValue::Binary(b) => Value::String(hex(b)),
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("\\x");
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

fn tuple_json(rel: &Relation, t: &TupleData, only_key: bool) -> Value {
    let mut m = Map::new();
    for (col, v) in rel.columns.iter().zip(&t.columns) {
        if only_key && !col.is_key() {
            continue;
        }
        m.insert(col.name.clone(), value_json(v));
    }
    Value::Object(m)
}

/// An insert: key and new row.
pub fn insert(
    relations: &Relations,
    lsn: Lsn,
    tx: TxContext,
    i: &Insert,
) -> Result<Value, RenderError> {
    let rel = lookup(relations, i.relation_id)?;
    let mut m = header(lsn, tx, "insert");
    m.insert("table".into(), json!(table_name(rel)));
    m.insert("key".into(), tuple_json(rel, &i.new, true));
    m.insert("new".into(), tuple_json(rel, &i.new, false));
    Ok(Value::Object(m))
}

/// An update: the key (the old one when it changed), new row, and old row or key when sent.
pub fn update(
    relations: &Relations,
    lsn: Lsn,
    tx: TxContext,
    u: &Update,
) -> Result<Value, RenderError> {
    let rel = lookup(relations, u.relation_id)?;
    let mut m = header(lsn, tx, "update");
    m.insert("table".into(), json!(table_name(rel)));
    let key = match &u.old {
        Some(OldTuple::Key(t)) | Some(OldTuple::Full(t)) => tuple_json(rel, t, true),
        None => tuple_json(rel, &u.new, true),
    };
    m.insert("key".into(), key);
    m.insert("new".into(), tuple_json(rel, &u.new, false));
    if let Some(OldTuple::Key(t)) | Some(OldTuple::Full(t)) = &u.old {
        m.insert("old".into(), tuple_json(rel, t, false));
    }
    Ok(Value::Object(m))
}

/// A delete: the key and what the old tuple carries.
pub fn delete(
    relations: &Relations,
    lsn: Lsn,
    tx: TxContext,
    d: &Delete,
) -> Result<Value, RenderError> {
    let rel = lookup(relations, d.relation_id)?;
    let mut m = header(lsn, tx, "delete");
    m.insert("table".into(), json!(table_name(rel)));
    let (OldTuple::Key(t) | OldTuple::Full(t)) = &d.old;
    m.insert("key".into(), tuple_json(rel, t, true));
    m.insert("old".into(), tuple_json(rel, t, false));
    Ok(Value::Object(m))
}

/// A truncate of one or more tables.
pub fn truncate(
    relations: &Relations,
    lsn: Lsn,
    tx: TxContext,
    t: &Truncate,
) -> Result<Value, RenderError> {
    let mut tables = Vec::new();
    for id in &t.relation_ids {
        tables.push(json!(table_name(lookup(relations, *id)?)));
    }
    let mut m = header(lsn, tx, "truncate");
    m.insert("tables".into(), Value::Array(tables));
    m.insert("cascade".into(), json!(t.cascade()));
    m.insert("restart_identity".into(), json!(t.restart_identity()));
    Ok(Value::Object(m))
}

/// A logical decoding message (`pg_logical_emit_message`).
pub fn message(lsn: Lsn, tx: TxContext, msg: &LogicalMessage) -> Value {
    let mut m = header(lsn, tx, "message");
    m.insert("prefix".into(), json!(msg.prefix));
    m.insert("transactional".into(), json!(msg.is_transactional()));
    m.insert(
        "content".into(),
        value_json(&ColumnValue::Text(msg.content.clone())),
    );
    Value::Object(m)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` from microseconds since the Unix epoch.
pub fn format_unix_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_utc() {
        assert_eq!(format_unix_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_unix_micros(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(format_unix_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            format_unix_micros(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn values_render_as_postgres_printed_them() {
        assert_eq!(value_json(&ColumnValue::Null), Value::Null);
        assert_eq!(value_json(&ColumnValue::Text("x".into())), json!("x"));
        assert_eq!(
            value_json(&ColumnValue::UnchangedToast),
            json!({"unchanged_toast": true})
        );
        assert_eq!(
            value_json(&ColumnValue::Binary(vec![0u8, 255].into())),
            json!("\\x00ff")
        );
    }
}
