//! Malformed input: what is reported, and at which offset; helpers on decoded types.

use super::*;

// ---- Errors and their offsets ----

#[test]
fn empty_input_is_unexpected_end_at_zero() {
    let error = decode_err(&Bytes::new(), OUTSIDE);
    assert_eq!(
        error.to_string(),
        "unexpected end of message at offset 0 while reading message type"
    );
}

#[test]
fn unknown_message_type_is_reported_in_hex() {
    let error = decode_err(&Bytes::from_static(b"Z123"), OUTSIDE);
    assert_eq!(error.to_string(), "unknown message type 0x5A at offset 0");
    assert_eq!(error.offset(), 0);
}

#[test]
fn truncated_field_reports_where_it_starts() {
    let bytes = concat(&[b"B", &be64(LSN_A), &[0; 3]]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "unexpected end of message at offset 9 while reading commit timestamp"
    );
    // Inside a stream the relation id follows the streamed xid.
    let bytes = concat(&[b"R", &be32(1), &[0, 0]]);
    assert_eq!(
        decode_err(&bytes, INSIDE).to_string(),
        "unexpected end of message at offset 5 while reading relation id"
    );
}

#[test]
fn unknown_tuple_column_kind_reports_its_offset() {
    let bytes = concat(&[b"I", &be32(1), b"N", &be16(2), b"n", b"x"]);
    let error = decode_err(&bytes, OUTSIDE);
    assert_eq!(
        error.to_string(),
        "unknown tuple column kind 0x78 at offset 9"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let bytes = concat(&[
        b"C",
        &[0],
        &be64(LSN_A),
        &be64(LSN_B),
        &ibe64(TS),
        &[1, 2, 3],
    ]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "trailing 3 bytes after Commit at offset 26"
    );
    let stop = Bytes::from_static(b"E\0");
    assert_eq!(
        decode_err(&stop, INSIDE),
        DecodeError::TrailingBytes {
            count: 1,
            message: "Stream Stop",
            offset: 1
        }
    );
}

#[test]
fn streamed_message_decoded_outside_stream_is_detected() {
    // A streamed Insert read without the stream context misreads the xid as the
    // relation id and then trips over the missing 'N' marker.
    let bytes = concat(&[b"I", &be32(901), &be32(16385), b"N", &be16(0)]);
    assert!(matches!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::UnexpectedTupleMarker { offset: 5, .. }
    ));
}

#[test]
fn unterminated_string_is_reported_where_it_starts() {
    let bytes = concat(&[b"O", &be64(LSN_A), b"no-nul"]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "unterminated string at offset 9 while reading origin name"
    );
}

#[test]
fn invalid_utf8_is_an_error_at_the_bad_byte() {
    let bytes = concat(&[b"Y", &be32(1), b"ok\0", b"ab\xFFc\0"]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::InvalidUtf8 {
            offset: 10,
            field: "type name"
        }
    );
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "invalid UTF-8 at offset 10 in type name"
    );
}

#[test]
fn multibyte_utf8_names_are_accepted() {
    let bytes = concat(&[b"O", &be64(1), "zürich-東京\0".as_bytes()]);
    let Message::Origin(origin) = decode_ok(&bytes, OUTSIDE) else {
        panic!("not an origin")
    };
    assert_eq!(origin.name, "zürich-東京");
}

#[test]
fn negative_value_length_is_an_error() {
    let bytes = concat(&[b"I", &be32(1), b"N", &be16(1), b"t", &ibe32(-1)]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "negative length -1 at offset 9 for text column value"
    );
    let bytes = concat(&[b"M", &[0], &be64(1), b"p\0", &ibe32(i32::MIN)]);
    assert!(matches!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::NegativeLength {
            offset: 12,
            field: "message content",
            ..
        }
    ));
}

#[test]
fn value_longer_than_message_is_unexpected_end() {
    let bytes = concat(&[b"I", &be32(1), b"N", &be16(1), b"b", &ibe32(100), b"short"]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 13,
            field: "binary column value"
        }
    );
}

#[test]
fn unknown_replica_identity_is_an_error() {
    let bytes = concat(&[b"R", &be32(1), b"s\0", b"t\0", b"x", &be16(0)]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE).to_string(),
        "unknown replica identity 0x78 at offset 9"
    );
}

#[test]
fn wrong_tuple_markers_are_errors() {
    let insert = concat(&[b"I", &be32(1), b"K", &be16(0)]);
    assert_eq!(
        decode_err(&insert, OUTSIDE).to_string(),
        "unexpected tuple marker 0x4B at offset 5 (expected 'N')"
    );
    let update = concat(&[b"U", &be32(1), b"X", &be16(0)]);
    assert_eq!(
        decode_err(&update, OUTSIDE).to_string(),
        "unexpected tuple marker 0x58 at offset 5 (expected 'K', 'O' or 'N')"
    );
    let update_old_then_old = concat(&[b"U", &be32(1), b"O", &be16(0), b"K", &be16(0)]);
    assert_eq!(
        decode_err(&update_old_then_old, OUTSIDE),
        DecodeError::UnexpectedTupleMarker {
            byte: b'K',
            offset: 8,
            expected: "'N'"
        }
    );
    let delete = concat(&[b"D", &be32(1), b"N", &be16(0)]);
    assert_eq!(
        decode_err(&delete, OUTSIDE).to_string(),
        "unexpected tuple marker 0x4E at offset 5 (expected 'K' or 'O')"
    );
}

#[test]
fn update_with_old_tuple_but_no_new_tuple_is_unexpected_end() {
    let bytes = concat(&[b"U", &be32(1), b"K", &be16(0)]);
    assert_eq!(
        decode_err(&bytes, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 8,
            field: "tuple marker"
        }
    );
}

#[test]
fn huge_counts_in_short_messages_fail_without_huge_allocations() {
    let tuple = concat(&[b"I", &be32(1), b"N", &be16(u16::MAX)]);
    assert_eq!(
        decode_err(&tuple, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 8,
            field: "tuple column kind"
        }
    );
    let truncate = concat(&[b"T", &be32(u32::MAX), &[0]]);
    assert_eq!(
        decode_err(&truncate, OUTSIDE),
        DecodeError::UnexpectedEnd {
            offset: 6,
            field: "truncated relation id"
        }
    );
    let relation = concat(&[b"R", &be32(1), b"\0", b"\0", b"d", &be16(u16::MAX)]);
    assert!(matches!(
        decode_err(&relation, OUTSIDE),
        DecodeError::UnexpectedEnd {
            field: "column flags",
            ..
        }
    ));
}

// ---- Helpers on the decoded types ----

#[test]
fn timestamps_convert_to_unix_micros() {
    assert_eq!(
        PgTimestamp(0).to_unix_micros(),
        Some(946_684_800_000_000),
        "2000-01-01 is 946684800 s after the Unix epoch"
    );
    assert_eq!(PgTimestamp(-946_684_800_000_000).to_unix_micros(), Some(0));
    assert_eq!(PgTimestamp(i64::MAX).to_unix_micros(), None, "infinity");
    assert_eq!(
        PgTimestamp::from_unix_micros(946_684_800_000_001),
        Some(PgTimestamp(1))
    );
    assert_eq!(PgTimestamp::from_unix_micros(i64::MIN), None);
}

#[test]
fn column_value_bytes_accessor() {
    assert_eq!(ColumnValue::Null.as_bytes(), None);
    assert_eq!(ColumnValue::UnchangedToast.as_bytes(), None);
    assert_eq!(text("a").as_bytes().map(|b| b.as_ref()), Some(&b"a"[..]));
}

#[test]
fn replica_identity_rejects_unknown_bytes() {
    assert_eq!(ReplicaIdentity::from_byte(b'x'), None);
}

#[test]
fn every_sample_message_round_trips_and_has_a_type_name() {
    for (name, ctx, message) in sample_messages() {
        let bytes = Bytes::from(encode(&message));
        assert_eq!(decode(&bytes, ctx), Ok(message.clone()), "{name}");
        assert!(!message.type_name().is_empty());
    }
}

#[test]
fn encoder_tuple_matches_hand_built_bytes() {
    let mut out = Writer::default();
    encode_tuple(&mut out, &every_kind_tuple());
    assert_eq!(out.0, every_kind_tuple_bytes());
}
