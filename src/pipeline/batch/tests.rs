use super::*;

fn t(values: &[Option<&str>]) -> TupleData {
    TupleData {
        columns: values
            .iter()
            .map(|v| match v {
                Some("<u>") => ColumnValue::UnchangedToast,
                Some(s) => ColumnValue::Text(Bytes::copy_from_slice(s.as_bytes())),
                None => ColumnValue::Null,
            })
            .collect(),
    }
}

fn text(s: &str) -> Cell {
    Cell::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn images(b: &TableBatch) -> Vec<(u64, u64, i8, Vec<Cell>)> {
    b.rows()
        .iter()
        .map(|r| (r.version.as_u64(), r.seq, r.sign, r.cells.clone()))
        .collect()
}

#[test]
fn a_multiset_keeps_every_change_as_a_signed_image_named_by_version_and_position() {
    let now = Instant::now();
    let mut b = TableBatch::multiset(2);
    let row = |a: &str| t(&[Some(a), Some("x")]);
    // A multi-row insert: several changes at one WAL start.
    b.insert(Lsn::new(10), row("1"), now).unwrap();
    b.insert(Lsn::new(10), row("1"), now).unwrap();
    b.update(
        Lsn::new(20),
        Some(OldTuple::Full(t(&[Some("1"), Some("x")]))),
        t(&[Some("2"), Some("<u>")]),
        now,
    )
    .unwrap();
    b.delete(Lsn::new(30), OldTuple::Full(row("1")), now)
        .unwrap();
    assert_eq!(
        images(&b),
        vec![
            (10, 0, 1, vec![text("1"), text("x")]),
            (10, 1, 1, vec![text("1"), text("x")]),
            (20, 0, -1, vec![text("1"), text("x")]),
            (20, 1, 1, vec![text("2"), text("x")]),
            (30, 0, -1, vec![text("1"), text("x")]),
        ]
    );
    assert!(b.rows().iter().all(|r| !r.deleted));
    // A flush between changes at one WAL start keeps counting…
    b.clear();
    b.insert(Lsn::new(30), row("3"), now).unwrap();
    assert_eq!(images(&b)[0].1, 1);
    // …a lost session starts over, as the replay does.
    b.restart();
    b.insert(Lsn::new(30), row("3"), now).unwrap();
    assert_eq!(images(&b)[0].1, 0);
}

#[test]
fn a_multiset_needs_the_whole_old_row() {
    let now = Instant::now();
    let mut b = TableBatch::multiset(2);
    let key = OldTuple::Key(t(&[Some("1"), None]));
    assert_eq!(b.delete(Lsn::new(1), key, now), Err(ImageError::NoOldRow));
    assert_eq!(
        b.update(Lsn::new(1), None, t(&[Some("1"), Some("x")]), now),
        Err(ImageError::NoOldRow)
    );
}

#[test]
fn multiset_images_encode_their_name_and_sign() {
    let now = Instant::now();
    let mut b = TableBatch::multiset(1);
    b.delete(Lsn::new(7), OldTuple::Full(t(&[None])), now)
        .unwrap();
    let codec = Codec {
        value: crate::sink::rowbinary::ValueCodec::Text,
        nulls: NullMode::Nullable,
        key: false,
    };
    let mut out = BytesMut::new();
    b.encode(&[&codec], &mut out, &mut ClampCounts::default())
        .unwrap();
    let mut want = vec![1u8]; // NULL
    want.extend(7u64.to_le_bytes());
    want.push(0); // _is_deleted
    want.extend(0u64.to_le_bytes());
    want.push(0xFF); // _sign = -1
    assert_eq!(out.to_vec(), want);
}

#[test]
fn a_key_update_writes_a_marker_for_the_old_key_and_the_new_row() {
    let now = Instant::now();
    let mut b = TableBatch::new(2, vec![0]);
    b.insert(Lsn::new(10), t(&[Some("1"), Some("a")]), now)
        .unwrap();
    b.update(
        Lsn::new(20),
        Some(OldTuple::Key(t(&[Some("1"), None]))),
        t(&[Some("2"), Some("a")]),
        now,
    )
    .unwrap();
    b.delete(Lsn::new(30), OldTuple::Key(t(&[Some("2"), None])), now)
        .unwrap();
    let rows = b.rows();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        (rows[1].version, rows[1].deleted, rows[1].cells.clone()),
        (Lsn::new(20), true, vec![text("1"), Cell::Null])
    );
    assert_eq!(
        (rows[2].deleted, rows[2].cells.clone()),
        (false, vec![text("2"), text("a")])
    );
    assert_eq!((rows[3].version, rows[3].deleted), (Lsn::new(30), true));
    assert_eq!(b.fill.rows, 4);
}

#[test]
fn a_sort_column_that_moves_leaves_a_marker_with_the_old_values_and_deletes_carry_them() {
    // Sorted by (region, id) under REPLICA IDENTITY FULL: the old row is all there.
    let now = Instant::now();
    let mut b = TableBatch::new(3, vec![0]).with_sort_columns(vec![1, 0]);
    b.update(
        Lsn::new(20),
        Some(OldTuple::Full(t(&[Some("1"), Some("eu"), Some("5")]))),
        t(&[Some("1"), Some("us"), Some("5")]),
        now,
    )
    .unwrap();
    b.update(
        Lsn::new(30),
        Some(OldTuple::Full(t(&[Some("1"), Some("us"), Some("5")]))),
        t(&[Some("1"), Some("us"), Some("6")]),
        now,
    )
    .unwrap();
    b.delete(
        Lsn::new(40),
        OldTuple::Full(t(&[Some("1"), Some("us"), Some("6")])),
        now,
    )
    .unwrap();
    let rows: Vec<(u64, bool, Vec<Cell>)> = b
        .rows()
        .iter()
        .map(|r| (r.version.as_u64(), r.deleted, r.cells.clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (20, true, vec![text("1"), text("eu"), Cell::Null]),
            (20, false, vec![text("1"), text("us"), text("5")]),
            // Only the total changed: no marker.
            (30, false, vec![text("1"), text("us"), text("6")]),
            (40, true, vec![text("1"), text("us"), Cell::Null]),
        ]
    );
}

#[test]
fn left_out_columns_are_dropped_as_the_tuple_is_read() {
    let now = Instant::now();
    let mut b = TableBatch::new(2, vec![0]).keeping(3, &[0, 2]);
    b.insert(Lsn::new(1), t(&[Some("1"), Some("secret"), Some("a")]), now)
        .unwrap();
    assert_eq!(b.rows()[0].cells, vec![text("1"), text("a")]);
    let err = b
        .insert(Lsn::new(2), t(&[Some("1"), Some("a")]), now)
        .unwrap_err();
    assert_eq!(
        err,
        ImageError::ColumnCount {
            found: 2,
            expected: 3
        }
    );
}

#[test]
fn unchanged_toast_comes_from_the_latest_image_in_the_batch() {
    let now = Instant::now();
    let mut b = TableBatch::new(3, vec![0]);
    b.insert(Lsn::new(1), t(&[Some("1"), Some("v"), Some("big")]), now)
        .unwrap();
    b.update(
        Lsn::new(2),
        None,
        t(&[Some("1"), Some("w"), Some("<u>")]),
        now,
    )
    .unwrap();
    assert_eq!(b.rows()[1].cells[2], text("big"));
    // Moved to another key: still found under the old key.
    b.update(
        Lsn::new(3),
        Some(OldTuple::Key(t(&[Some("1"), None, None]))),
        t(&[Some("9"), Some("x"), Some("<u>")]),
        now,
    )
    .unwrap();
    assert_eq!(b.rows()[3].cells[2], text("big"));
    // Not in the batch: left for the writer to read from Postgres.
    b.update(
        Lsn::new(4),
        None,
        t(&[Some("5"), Some("y"), Some("<u>")]),
        now,
    )
    .unwrap();
    let unresolved = b.unresolved();
    assert_eq!(unresolved.len(), 1);
    assert_eq!((unresolved[0].0, unresolved[0].1), (4, 2));
    assert_eq!(unresolved[0].2, vec![Some(Bytes::from_static(b"5"))]);
    b.resolve(4, 2, text("fetched"));
    assert!(b.unresolved().is_empty());
}

#[test]
fn a_full_old_tuple_supplies_unchanged_values() {
    let now = Instant::now();
    let mut b = TableBatch::new(2, vec![0, 1]);
    let old = OldTuple::Full(t(&[Some("1"), Some("big")]));
    b.update(
        Lsn::new(7),
        Some(old.clone()),
        t(&[Some("1"), Some("<u>")]),
        now,
    )
    .unwrap();
    assert_eq!(b.rows().len(), 1, "same key: no marker");
    assert_eq!(b.rows()[0].cells[1], text("big"));
}

#[test]
fn rows_and_markers_encode_with_version_and_deleted_flag() {
    use crate::sink::types::{map_column, MappingOptions, PgType};
    let opts = MappingOptions::default();
    let key = map_column(&PgType::base(23, "int4"), true, true, &opts).unwrap();
    let nullable = map_column(&PgType::base(25, "text"), false, false, &opts).unwrap();
    let not_null = map_column(&PgType::base(25, "text"), true, false, &opts).unwrap();
    let codecs = [&key.codec, &nullable.codec, &not_null.codec];
    let now = Instant::now();
    let mut b = TableBatch::new(3, vec![0]);
    b.insert(Lsn::new(0x10), t(&[Some("7"), Some("a"), Some("b")]), now)
        .unwrap();
    b.delete(
        Lsn::new(0x20),
        OldTuple::Key(t(&[Some("7"), None, None])),
        now,
    )
    .unwrap();
    let mut out = BytesMut::new();
    let mut clamps = ClampCounts::default();
    b.encode(&codecs, &mut out, &mut clamps).unwrap();
    let mut expected: Vec<u8> = Vec::new();
    expected.extend(7i32.to_le_bytes());
    expected.extend([0, 1, b'a', 1, b'b']);
    expected.extend(0x10u64.to_le_bytes());
    expected.push(0);
    expected.extend(7i32.to_le_bytes());
    expected.extend([1, 0]); // NULL, then the empty-string placeholder
    expected.extend(0x20u64.to_le_bytes());
    expected.push(1);
    assert_eq!(out.to_vec(), expected);
}

#[test]
fn a_tuple_of_another_shape_is_refused() {
    let mut b = TableBatch::new(2, vec![0]);
    let err = b
        .insert(Lsn::new(1), t(&[Some("1")]), Instant::now())
        .unwrap_err();
    assert_eq!(
        err,
        ImageError::ColumnCount {
            found: 1,
            expected: 2
        }
    );
}

#[test]
fn a_history_keeps_one_row_per_change_with_its_transaction() {
    let now = Instant::now();
    let mut b = TableBatch::history(2);
    let tx = TxStamp {
        xid: 700,
        commit_time: 1_700_000_000_000_000,
    };
    b.set_transaction(tx);
    b.insert(Lsn::new(10), t(&[Some("1"), Some("a")]), now)
        .unwrap();
    b.update(
        Lsn::new(11),
        Some(OldTuple::Full(t(&[Some("1"), Some("a")]))),
        t(&[Some("1"), Some("<u>")]),
        now,
    )
    .unwrap();
    b.delete(
        Lsn::new(11),
        OldTuple::Full(t(&[Some("1"), Some("a")])),
        now,
    )
    .unwrap();
    let rows: Vec<(u64, u64, ChangeOp, Vec<Cell>)> = b
        .rows()
        .iter()
        .map(|r| (r.version.as_u64(), r.seq, r.op, r.cells.clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (10, 0, ChangeOp::Insert, vec![text("1"), text("a")]),
            // The unchanged TOAST value comes from the old row.
            (11, 0, ChangeOp::Update, vec![text("1"), text("a")]),
            (11, 1, ChangeOp::Delete, vec![text("1"), text("a")]),
        ]
    );
    assert!(b.rows().iter().all(|r| r.tx == tx && !r.deleted));
    // A history needs the whole old row, as a multiset does.
    let err = b
        .delete(Lsn::new(12), OldTuple::Key(t(&[Some("1"), None])), now)
        .unwrap_err();
    assert_eq!(err, ImageError::NoOldRow);
}
