//! `hstore` as `hstore_out` prints it: `"a"=>"1", "b"=>NULL`, every key and value in
//! double quotes with `"` and `\` backslash-escaped, pairs separated by `, `, the empty
//! hstore as the empty string. Unquoted keys and values (which `hstore_in` accepts) are
//! read too; an unquoted `NULL` value (any case) is SQL NULL, a quoted one the string.

use std::borrow::Cow;

use super::{err, TextError};

/// One pair: the key and the value (`None` for NULL).
pub type HstorePair<'a> = (Cow<'a, [u8]>, Option<Cow<'a, [u8]>>);

/// Parses an `hstore`, keeping the pairs in printed order.
pub fn parse_hstore(t: &[u8]) -> Result<Vec<HstorePair<'_>>, TextError> {
    let mut p = Parser { t, pos: 0 };
    let mut pairs = Vec::new();
    loop {
        p.skip_ws();
        if p.pos >= t.len() {
            return Ok(pairs);
        }
        let (key, _) = p.token()?;
        p.skip_ws();
        if t.get(p.pos..p.pos.saturating_add(2)) != Some(b"=>") {
            return err("expected => after an hstore key", p.pos);
        }
        p.pos = p.pos.saturating_add(2);
        p.skip_ws();
        let (value, literal) = p.token()?;
        let value = if !literal && value.eq_ignore_ascii_case(b"NULL") {
            None
        } else {
            Some(value)
        };
        pairs.push((key, value));
        p.skip_ws();
        match t.get(p.pos) {
            None => return Ok(pairs),
            Some(b',') => p.pos = p.pos.saturating_add(1),
            Some(_) => return err("expected , between hstore pairs", p.pos),
        }
    }
}

struct Parser<'a> {
    t: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn skip_ws(&mut self) {
        while self
            .t
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_whitespace() || *b == 0x0b)
        {
            self.pos = self.pos.saturating_add(1);
        }
    }

    /// A quoted or unquoted string, and whether it was quoted or escaped (then it is
    /// never NULL).
    fn token(&mut self) -> Result<(Cow<'a, [u8]>, bool), TextError> {
        let quoted = self.t.get(self.pos) == Some(&b'"');
        if quoted {
            self.pos = self.pos.saturating_add(1);
        }
        let start = self.pos;
        let mut owned: Option<Vec<u8>> = None;
        loop {
            let at = self.pos;
            let Some(&b) = self.t.get(at) else {
                if quoted {
                    return err("unterminated quoted hstore string", start);
                }
                break;
            };
            if quoted && b == b'"' {
                self.pos = self.pos.saturating_add(1);
                break;
            }
            if !quoted && (b.is_ascii_whitespace() || b == 0x0b || b == b',' || b == b'=') {
                break;
            }
            if !quoted && b == b'"' {
                return err("a quote inside an unquoted hstore string", at);
            }
            self.pos = self.pos.saturating_add(1);
            if b == b'\\' {
                let Some(&escaped) = self.t.get(self.pos) else {
                    return err("a backslash at the end of an hstore", at);
                };
                self.pos = self.pos.saturating_add(1);
                owned
                    .get_or_insert_with(|| self.t.get(start..at).unwrap_or_default().to_vec())
                    .push(escaped);
            } else if let Some(o) = owned.as_mut() {
                o.push(b);
            }
        }
        let end = if quoted {
            self.pos.saturating_sub(1)
        } else {
            self.pos
        };
        if !quoted && end == start {
            return err("expected an hstore key or value", start);
        }
        let literal = quoted || owned.is_some();
        let text = match owned {
            Some(o) => Cow::Owned(o),
            None => Cow::Borrowed(self.t.get(start..end).unwrap_or_default()),
        };
        Ok((text, literal))
    }
}
