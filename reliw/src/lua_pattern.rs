//! Lua patterns (as RELIW's routes, WAF rules and `gsub` remaps use them),
//! translated to the `regex` crate so that matching attacker-controlled
//! input takes time linear in the input.
//!
//! Lua matches by backtracking, which can take exponential time; the
//! translation keeps Lua's meaning (byte-wise, C-locale classes, greedy
//! `*` `+` `?` and lazy `-`, `^`/`$` anchors only at the ends, a quantifier
//! only after a single-character class) and leftmost-first match order.
//! Constructs regex cannot express are refused when a pattern is loaded:
//! `%b()` (balanced), `%f[set]` (frontier), `%1` back-references and `()`
//! position captures.

use std::fmt::Write as _;

/// Why a pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A Lua construct with no linear-time equivalent.
    #[error("unsupported Lua pattern construct {what} at byte {at}")]
    Unsupported { what: &'static str, at: usize },
    /// Not a valid Lua pattern (Lua itself would raise an error).
    #[error("malformed Lua pattern: {what} at byte {at}")]
    Malformed { what: &'static str, at: usize },
    /// The translated expression is too large.
    #[error("Lua pattern too large")]
    TooLarge,
    /// A `gsub` replacement with `%` before something other than a digit or `%`.
    #[error("invalid use of '%' in replacement string")]
    Replacement,
}

/// A compiled Lua pattern.
#[derive(Clone, Debug)]
pub struct LuaPattern {
    regex: regex::bytes::Regex,
    captures: usize,
}

/// Upper bound on the compiled size of one pattern.
const SIZE_LIMIT: usize = 1 << 20;

impl LuaPattern {
    /// Translates and compiles `pattern`.
    pub fn new(pattern: impl AsRef<[u8]>) -> Result<Self, PatternError> {
        let (source, captures) = translate(pattern.as_ref())?;
        let regex = regex::bytes::RegexBuilder::new(&source)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|_| PatternError::TooLarge)?;
        Ok(Self { regex, captures })
    }

    /// The compiled regex (for the Lua sandbox's string functions).
    pub(crate) fn regex(&self) -> &regex::bytes::Regex {
        &self.regex
    }

    /// How many captures the pattern has.
    pub(crate) fn capture_count(&self) -> usize {
        self.captures
    }

    /// `string.find(s, p) ~= nil`.
    pub fn is_match(&self, subject: &[u8]) -> bool {
        self.regex.is_match(subject)
    }

    /// `string.find(s, p)`: start and end of the first match (0-based, end
    /// exclusive).
    pub fn find(&self, subject: &[u8]) -> Option<(usize, usize)> {
        self.regex.find(subject).map(|m| (m.start(), m.end()))
    }

    /// `string.match(s, p)`: the captures, or the whole match if the
    /// pattern has none.
    pub fn captures(&self, subject: &[u8]) -> Option<Vec<Vec<u8>>> {
        let caps = self.regex.captures(subject)?;
        if self.captures == 0 {
            return Some(vec![
                caps.get(0).map_or(Vec::new(), |m| m.as_bytes().to_vec()),
            ]);
        }
        Some(
            (1..=self.captures)
                .map(|i| caps.get(i).map_or(Vec::new(), |m| m.as_bytes().to_vec()))
                .collect(),
        )
    }

    /// `string.gsub(s, p, repl)` with a replacement string: the result and
    /// the number of substitutions.
    pub fn gsub(
        &self,
        subject: &[u8],
        replacement: &str,
    ) -> Result<(Vec<u8>, usize), PatternError> {
        let repl = parse_replacement(replacement.as_bytes(), self.captures)?;
        let mut out = Vec::with_capacity(subject.len());
        let mut pos = 0;
        let mut count = 0;
        // End of the last substituted match: Lua takes no empty match there.
        let mut last: Option<usize> = None;
        while pos <= subject.len() {
            // The leftmost match from `pos` is Lua's first success trying
            // each position in turn (an anchored pattern only matches at 0).
            let Some(caps) = self.regex.captures_at(subject, pos) else {
                break;
            };
            let Some(whole) = caps.get(0) else { break };
            out.extend_from_slice(&subject[pos..whole.start()]);
            let empty = whole.start() == whole.end();
            if !(empty && last == Some(whole.end())) {
                for piece in &repl {
                    match piece {
                        Piece::Literal(bytes) => out.extend_from_slice(bytes),
                        Piece::Capture(i) => {
                            if let Some(m) = caps.get(*i) {
                                out.extend_from_slice(m.as_bytes());
                            }
                        }
                    }
                }
                count += 1;
                last = Some(whole.end());
                if !empty {
                    pos = whole.end();
                    continue;
                }
            }
            // An empty match (taken or not): copy one byte and move on.
            if let Some(&b) = subject.get(whole.start()) {
                out.push(b);
            }
            pos = whole.start() + 1;
        }
        if pos < subject.len() {
            out.extend_from_slice(&subject[pos..]);
        }
        Ok((out, count))
    }
}

enum Piece {
    Literal(Vec<u8>),
    Capture(usize),
}

fn parse_replacement(repl: &[u8], captures: usize) -> Result<Vec<Piece>, PatternError> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut i = 0;
    while i < repl.len() {
        if repl[i] != b'%' {
            literal.push(repl[i]);
            i += 1;
            continue;
        }
        match repl.get(i + 1) {
            Some(b'%') => literal.push(b'%'),
            Some(d @ b'0'..=b'9') => {
                let n = usize::from(d - b'0');
                // %1 with no captures is the whole match, as in Lua.
                let index = if n == 1 && captures == 0 { 0 } else { n };
                if index > captures {
                    return Err(PatternError::Replacement);
                }
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                pieces.push(Piece::Capture(index));
            }
            _ => return Err(PatternError::Replacement),
        }
        i += 2;
    }
    pieces.push(Piece::Literal(literal));
    Ok(pieces)
}

/// The regex for a `%x` class letter (inside or outside a set).
fn class(letter: u8) -> Option<&'static str> {
    Some(match letter {
        b'a' => "[:alpha:]",
        b'c' => "[:cntrl:]",
        b'd' => "[:digit:]",
        b'g' => "[:graph:]",
        b'l' => "[:lower:]",
        b'p' => "[:punct:]",
        b's' => "[:space:]",
        b'u' => "[:upper:]",
        b'w' => "[:alnum:]",
        b'x' => "[:xdigit:]",
        b'A' => "[:^alpha:]",
        b'C' => "[:^cntrl:]",
        b'D' => "[:^digit:]",
        b'G' => "[:^graph:]",
        b'L' => "[:^lower:]",
        b'P' => "[:^punct:]",
        b'S' => "[:^space:]",
        b'U' => "[:^upper:]",
        b'W' => "[:^alnum:]",
        b'X' => "[:^xdigit:]",
        _ => return None,
    })
}

fn byte(out: &mut String, b: u8) {
    let _ = write!(out, "\\x{b:02X}");
}

/// Translates a Lua pattern to regex syntax; returns it and the number of
/// captures.
fn translate(p: &[u8]) -> Result<(String, usize), PatternError> {
    let mut out = String::from("(?s-u)");
    let mut i = 0;
    let mut depth = 0usize;
    let mut captures = 0usize;
    if p.first() == Some(&b'^') {
        out.push_str("\\A");
        i = 1;
    }
    while i < p.len() {
        match p[i] {
            b'(' => {
                if p.get(i + 1) == Some(&b')') {
                    return Err(PatternError::Unsupported {
                        what: "() position capture",
                        at: i,
                    });
                }
                out.push('(');
                depth += 1;
                captures += 1;
                i += 1;
                continue;
            }
            b')' => {
                if depth == 0 {
                    return Err(PatternError::Malformed {
                        what: "unmatched ')'",
                        at: i,
                    });
                }
                out.push(')');
                depth -= 1;
                i += 1;
                continue;
            }
            b'$' if i + 1 == p.len() => {
                out.push_str("\\z");
                i += 1;
                continue;
            }
            b'%' => match p.get(i + 1) {
                Some(b'b') => {
                    return Err(PatternError::Unsupported {
                        what: "%b balanced match",
                        at: i,
                    });
                }
                Some(b'f') => {
                    return Err(PatternError::Unsupported {
                        what: "%f frontier",
                        at: i,
                    });
                }
                Some(b'0'..=b'9') => {
                    return Err(PatternError::Unsupported {
                        what: "back-reference",
                        at: i,
                    });
                }
                _ => {}
            },
            _ => {}
        }
        let (item, next) = single(p, i)?;
        out.push_str(&item);
        i = next;
        match p.get(i) {
            Some(b'*') => {
                out.push('*');
                i += 1;
            }
            Some(b'+') => {
                out.push('+');
                i += 1;
            }
            Some(b'-') => {
                out.push_str("*?");
                i += 1;
            }
            Some(b'?') => {
                out.push('?');
                i += 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(PatternError::Malformed {
            what: "unfinished capture",
            at: p.len(),
        });
    }
    Ok((out, captures))
}

/// One single-character class at `i`: its regex and the index after it.
fn single(p: &[u8], i: usize) -> Result<(String, usize), PatternError> {
    let mut out = String::new();
    match p[i] {
        b'.' => Ok((String::from("."), i + 1)),
        b'%' => {
            let Some(&c) = p.get(i + 1) else {
                return Err(PatternError::Malformed {
                    what: "pattern ends with '%'",
                    at: i,
                });
            };
            match class(c) {
                Some(cls) => Ok((format!("[{cls}]"), i + 2)),
                None => {
                    byte(&mut out, c);
                    Ok((out, i + 2))
                }
            }
        }
        b'[' => set(p, i),
        b => {
            byte(&mut out, b);
            Ok((out, i + 1))
        }
    }
}

/// A `[...]` set at `i`.
fn set(p: &[u8], start: usize) -> Result<(String, usize), PatternError> {
    let mut out = String::from("[");
    let mut i = start + 1;
    if p.get(i) == Some(&b'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    loop {
        let Some(&c) = p.get(i) else {
            return Err(PatternError::Malformed {
                what: "missing ']'",
                at: start,
            });
        };
        if c == b']' && !first {
            out.push(']');
            return Ok((out, i + 1));
        }
        first = false;
        if c == b'%' {
            let Some(&e) = p.get(i + 1) else {
                return Err(PatternError::Malformed {
                    what: "missing ']'",
                    at: start,
                });
            };
            match class(e) {
                Some(cls) => {
                    let _ = write!(out, "[{cls}]");
                }
                None => byte(&mut out, e),
            }
            i += 2;
        } else if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&e| e != b']') {
            let end = p[i + 2];
            if end >= c {
                byte(&mut out, c);
                out.push('-');
                byte(&mut out, end);
            } else {
                // Lua: an empty range matches nothing; keep the set valid.
                out.push_str("[^\\x00-\\xFF]");
            }
            i += 3;
        } else {
            byte(&mut out, c);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests;
