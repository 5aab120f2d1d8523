//! Array literals as `array_out` prints them: `{1,2,NULL}`, `{"a \"q\" b","c\\d"}`,
//! `{{1,2},{3,4}}`, `[0:1]={7,8}` (the bounds prefix appears when a lower bound is not
//! 1), `{}`.
//!
//! `array_out` quotes an element when it is empty, equals `NULL` in any case, or holds
//! a delimiter, a brace, a double quote, a backslash or white space; inside quotes `"`
//! and `\` are backslash-escaped. An unquoted `NULL` (any case) is SQL NULL, a quoted
//! one the string. The delimiter is the element type's `typdelim`: `,` for every
//! built-in type except `box`, whose elements are separated by `;`. Arrays are
//! rectangular (Postgres refuses anything else) and have at most 6 dimensions.

use std::borrow::Cow;

use super::{err, TextError};

/// Postgres' `MAXDIM`.
const MAX_DIMS: usize = 6;

/// One dimension of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayDim {
    /// The lower bound (1 unless the text had a `[lb:ub]=` prefix).
    pub lower: i32,
    pub len: usize,
}

/// A parsed array: its shape and its elements, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgArray<'a> {
    /// Outermost first; empty for the empty array `{}`.
    pub dims: Vec<ArrayDim>,
    /// Every element's text (unquoted and unescaped; borrowed when it had no escapes),
    /// `None` for NULL.
    pub elements: Vec<Option<Cow<'a, [u8]>>>,
}

impl PgArray<'_> {
    /// Whether every lower bound is 1, Postgres' default (and the only one a
    /// ClickHouse `Array` can express).
    pub fn default_bounds(&self) -> bool {
        self.dims.iter().all(|d| d.lower == 1)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just after `{`: an element, a sub-array or `}`.
    Opened,
    /// Just after a delimiter: an element or a sub-array.
    NeedItem,
    /// Just after an element or sub-array: a delimiter or `}`.
    AfterItem,
}

/// Parses an array literal whose elements are separated by `delimiter`.
pub fn parse_array(t: &[u8], delimiter: u8) -> Result<PgArray<'_>, TextError> {
    let mut p = Parser { t, pos: 0 };
    p.skip_ws();
    let bounds = if p.peek() == Some(b'[') {
        Some(p.bounds()?)
    } else {
        None
    };
    p.skip_ws();
    if p.peek() != Some(b'{') {
        return err("an array starts with {", p.pos);
    }
    p.pos = p.pos.saturating_add(1);

    let mut elements = Vec::new();
    // Length of each level, fixed by the first sub-array closed at that depth.
    let mut lens: [Option<usize>; MAX_DIMS] = [None; MAX_DIMS];
    // Items counted so far in each open level, outermost first.
    let mut open: Vec<usize> = vec![0];
    // The depth at which elements sit, known from the first element.
    let mut leaf_depth: Option<usize> = None;
    let mut state = State::Opened;
    loop {
        p.skip_ws();
        let at = p.pos;
        let Some(b) = p.peek() else {
            return err("unterminated array", at);
        };
        let depth = open.len();
        match (state, b) {
            (State::AfterItem, _) if b == delimiter => {
                p.pos = p.pos.saturating_add(1);
                state = State::NeedItem;
            }
            (State::AfterItem | State::Opened, b'}') => {
                p.pos = p.pos.saturating_add(1);
                let count = open.pop().unwrap_or(0);
                if count == 0 {
                    if depth == 1 && elements.is_empty() {
                        p.skip_ws();
                        if p.pos != t.len() {
                            return err("unexpected text after the array", p.pos);
                        }
                        if bounds.is_some() {
                            return err("an empty array has no bounds", 0);
                        }
                        return Ok(PgArray {
                            dims: Vec::new(),
                            elements,
                        });
                    }
                    return err("empty sub-array", at);
                }
                let Some(len) = lens.get_mut(depth.saturating_sub(1)) else {
                    return err("too many dimensions", at);
                };
                match len {
                    None => *len = Some(count),
                    Some(n) if *n == count => {}
                    Some(_) => return err("sub-arrays of different lengths", at),
                }
                match open.last_mut() {
                    Some(parent) => *parent = parent.saturating_add(1),
                    None => break,
                }
                state = State::AfterItem;
            }
            (State::AfterItem, _) => return err("expected a delimiter or }", at),
            (State::NeedItem, b'}') => return err("expected an element after a delimiter", at),
            (_, b'{') => {
                if depth >= MAX_DIMS {
                    return err("more than 6 dimensions", at);
                }
                if leaf_depth.is_some_and(|d| depth >= d) {
                    return err("a sub-array where an element belongs", at);
                }
                p.pos = p.pos.saturating_add(1);
                open.push(0);
                state = State::Opened;
            }
            (_, _) => {
                match leaf_depth {
                    None => leaf_depth = Some(depth),
                    Some(d) if d == depth => {}
                    Some(_) => return err("an element where a sub-array belongs", at),
                }
                elements.push(p.element(delimiter)?);
                if let Some(count) = open.last_mut() {
                    *count = count.saturating_add(1);
                }
                state = State::AfterItem;
            }
        }
    }
    p.skip_ws();
    if p.pos != t.len() {
        return err("unexpected text after the array", p.pos);
    }
    let ndims = leaf_depth.unwrap_or(1);
    let mut dims = Vec::with_capacity(ndims);
    for (i, len) in lens.iter().take(ndims).enumerate() {
        let lower = match &bounds {
            Some(b) => *b.get(i).map(|(lower, _)| lower).unwrap_or(&1),
            None => 1,
        };
        dims.push(ArrayDim {
            lower,
            len: len.unwrap_or(0),
        });
    }
    if let Some(b) = &bounds {
        let matches = b.len() == dims.len()
            && b.iter().zip(&dims).all(|((lower, upper), d)| {
                i64::from(*upper) - i64::from(*lower) + 1 == d.len as i64
            });
        if !matches {
            return err("the bounds do not match the array's shape", 0);
        }
    }
    Ok(PgArray { dims, elements })
}

struct Parser<'a> {
    t: &'a [u8],
    pos: usize,
}

/// `array_isspace`: the white space `array_in` skips and `array_out` quotes.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.t.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.pos = self.pos.saturating_add(1);
        }
    }

    /// `[lb:ub][lb:ub]…=`: the bounds of each dimension.
    fn bounds(&mut self) -> Result<Vec<(i32, i32)>, TextError> {
        let mut out = Vec::new();
        while self.peek() == Some(b'[') {
            if out.len() == MAX_DIMS {
                return err("more than 6 dimensions", self.pos);
            }
            self.pos = self.pos.saturating_add(1);
            let lower = self.int()?;
            self.expect(b':')?;
            let upper = self.int()?;
            self.expect(b']')?;
            if upper < lower {
                return err("upper bound below lower bound", self.pos);
            }
            out.push((lower, upper));
        }
        self.expect(b'=')?;
        Ok(out)
    }

    fn int(&mut self) -> Result<i32, TextError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos = self.pos.saturating_add(1);
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos = self.pos.saturating_add(1);
        }
        let digits = self.t.get(start..self.pos).unwrap_or_default();
        super::parse_int::<i32>(digits).map_err(|_| TextError {
            reason: "expected an array bound",
            offset: start,
        })
    }

    fn expect(&mut self, b: u8) -> Result<(), TextError> {
        if self.peek() == Some(b) {
            self.pos = self.pos.saturating_add(1);
            Ok(())
        } else {
            err("malformed array bounds", self.pos)
        }
    }

    /// One element, quoted or not; the cursor is on its first byte.
    fn element(&mut self, delimiter: u8) -> Result<Option<Cow<'a, [u8]>>, TextError> {
        if self.peek() == Some(b'"') {
            self.pos = self.pos.saturating_add(1);
            let start = self.pos;
            let mut owned: Option<Vec<u8>> = None;
            loop {
                let at = self.pos;
                let Some(b) = self.peek() else {
                    return err("unterminated quoted array element", start);
                };
                self.pos = self.pos.saturating_add(1);
                match b {
                    b'"' => break,
                    b'\\' => {
                        let Some(escaped) = self.peek() else {
                            return err("unterminated quoted array element", start);
                        };
                        self.pos = self.pos.saturating_add(1);
                        owned
                            .get_or_insert_with(|| {
                                self.t.get(start..at).unwrap_or_default().to_vec()
                            })
                            .push(escaped);
                    }
                    _ => {
                        if let Some(o) = owned.as_mut() {
                            o.push(b);
                        }
                    }
                }
            }
            return Ok(Some(match owned {
                Some(o) => Cow::Owned(o),
                None => Cow::Borrowed(
                    self.t
                        .get(start..self.pos.saturating_sub(1))
                        .unwrap_or_default(),
                ),
            }));
        }
        // Unquoted: up to a delimiter or brace; backslash escapes; trailing white space
        // (unescaped) is not part of it.
        let start = self.pos;
        let mut owned: Option<Vec<u8>> = None;
        // End of the text kept so far (trailing white space excluded): a position in
        // `t` while borrowed, a length of `owned` once an escape forced a copy.
        let mut keep_end = start;
        let mut owned_keep = 0usize;
        while let Some(b) = self.peek() {
            if b == delimiter || b == b'{' || b == b'}' {
                break;
            }
            if b == b'"' {
                return err("a quote inside an unquoted array element", self.pos);
            }
            let at = self.pos;
            self.pos = self.pos.saturating_add(1);
            if b == b'\\' {
                let Some(escaped) = self.peek() else {
                    return err("a backslash at the end of an array", at);
                };
                self.pos = self.pos.saturating_add(1);
                // Inner white space before the escape is part of the element.
                let o =
                    owned.get_or_insert_with(|| self.t.get(start..at).unwrap_or_default().to_vec());
                o.push(escaped);
                owned_keep = o.len();
            } else if let Some(o) = owned.as_mut() {
                o.push(b);
                if !is_space(b) {
                    owned_keep = o.len();
                }
            } else if !is_space(b) {
                keep_end = self.pos;
            }
        }
        match owned {
            Some(mut o) => {
                o.truncate(owned_keep);
                Ok(Some(Cow::Owned(o)))
            }
            None => {
                let text = self.t.get(start..keep_end).unwrap_or_default();
                if text.is_empty() {
                    err("empty unquoted array element", start)
                } else if text.eq_ignore_ascii_case(b"NULL") {
                    Ok(None)
                } else {
                    Ok(Some(Cow::Borrowed(text)))
                }
            }
        }
    }
}
