//! A pure decoder of `COPY … TO STDOUT` text format: rows of tab-separated fields, `\N`
//! for NULL, and backslash escapes. Undoing COPY's escaping yields exactly the text
//! Postgres prints for each value — the same bytes pgoutput sends — so one encoder
//! serves the snapshot and the stream (DESIGN.md rule 4).

use std::borrow::Cow;

/// Why a COPY row could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyTextError {
    #[error("COPY row ends inside an escape sequence at byte {offset}")]
    DanglingEscape { offset: usize },
    #[error("a COPY message of {length} bytes does not end its row with a newline")]
    Unterminated { length: usize },
    #[error("COPY row has {found} fields, expected {expected}")]
    FieldCount { found: usize, expected: usize },
}

/// Splits one row (without its trailing newline) into fields: `None` for NULL, the
/// unescaped bytes otherwise (borrowed when nothing was escaped).
pub fn decode_row<'a>(
    row: &'a [u8],
    expected: usize,
    out: &mut Vec<Option<Cow<'a, [u8]>>>,
) -> Result<(), CopyTextError> {
    out.clear();
    let mut start = 0;
    loop {
        let mut end = start;
        let mut escaped = false;
        while end < row.len() {
            match row[end] {
                b'\t' => break,
                b'\\' => escaped = true,
                _ => {}
            }
            end += 1;
        }
        let field = &row[start..end];
        out.push(if !escaped {
            Some(Cow::Borrowed(field))
        } else {
            decode_field(field, start)?
        });
        if end == row.len() {
            break;
        }
        start = end + 1;
    }
    if out.len() != expected {
        return Err(CopyTextError::FieldCount {
            found: out.len(),
            expected,
        });
    }
    Ok(())
}

fn decode_field(field: &[u8], base: usize) -> Result<Option<Cow<'_, [u8]>>, CopyTextError> {
    if field == b"\\N" {
        return Ok(None);
    }
    if !field.contains(&b'\\') {
        return Ok(Some(Cow::Borrowed(field)));
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&next) = field.get(i + 1) else {
            return Err(CopyTextError::DanglingEscape { offset: base + i });
        };
        i += 2;
        match next {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                let mut digits = 1;
                while digits < 3 {
                    match field.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                            digits += 1;
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xff) as u8);
            }
            b'x' => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(v) => {
                            value = value * 16 + v;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(value as u8);
                }
            }
            other => out.push(other),
        }
    }
    Ok(Some(Cow::Owned(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(row: &[u8], n: usize) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        decode_row(row, n, &mut out).unwrap();
        out.into_iter().map(|f| f.map(|c| c.into_owned())).collect()
    }

    #[test]
    fn nulls_tabs_and_escapes() {
        assert_eq!(
            fields(b"1\t\\N\ta\\tb\\\\c\\nd\t", 4),
            vec![
                Some(b"1".to_vec()),
                None,
                Some(b"a\tb\\c\nd".to_vec()),
                Some(Vec::new())
            ]
        );
        // Octal, hex, a hex escape cut short by a non-digit, and an unknown escape.
        assert_eq!(
            fields(b"\\101\\x41\\x4g\\q", 1),
            vec![Some(b"AA\x04gq".to_vec())]
        );
    }

    #[test]
    fn a_literal_backslash_n_is_not_null() {
        // The text `\N` is escaped by COPY as `\\N`.
        assert_eq!(fields(b"\\\\N", 1), vec![Some(b"\\N".to_vec())]);
    }

    #[test]
    fn errors_name_the_problem() {
        let mut out = Vec::new();
        assert_eq!(
            decode_row(b"a\\", 1, &mut out),
            Err(CopyTextError::DanglingEscape { offset: 1 })
        );
        assert_eq!(
            decode_row(b"a\tb", 3, &mut out),
            Err(CopyTextError::FieldCount {
                found: 2,
                expected: 3
            })
        );
    }
}
