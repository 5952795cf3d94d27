//! Request bodies: a decoder fed whatever bytes arrived, handing back the
//! body data in pieces, so nothing is buffered whole.
//!
//! Chunked decoding accepts chunk extensions (ignored) and trailers
//! (skipped), and enforces the body size limit cumulatively.

use super::Status;
use super::request::BodyFraming;

/// Longest chunk-size line (size, extensions) we accept.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section we skip.
const MAX_TRAILERS: usize = 16384;

/// Why a body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyError {
    pub status: Status,
    pub reason: &'static str,
}

const fn malformed(reason: &'static str) -> BodyError {
    BodyError {
        status: Status::BAD_REQUEST,
        reason,
    }
}

const TOO_LARGE: BodyError = BodyError {
    status: Status::PAYLOAD_TOO_LARGE,
    reason: "body larger than max_body_size",
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `line` bytes of the line seen so far.
    Size {
        size: u64,
        digits: u8,
        line: usize,
        in_ext: bool,
    },
    /// Saw CR after the size line.
    SizeLf {
        size: u64,
    },
    /// In chunk data.
    Data {
        left: u64,
    },
    /// Expect CR then LF after the data.
    DataCr,
    DataLf,
    /// In the trailer section; `line` bytes into the current line, `total` overall.
    Trailer {
        line: usize,
        total: usize,
        cr: bool,
    },
    Done,
}

/// What one call to [`BodyDecoder::decode`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used (the rest belongs to the next request).
    pub consumed: usize,
    /// Body data found, as ranges of the input.
    pub data: Vec<std::ops::Range<usize>>,
    /// The body ended.
    pub done: bool,
}

/// Decodes one request body.
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    state: State,
    received: u64,
    limit: u64,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Length { left: u64 },
    Chunked(Chunk),
}

impl BodyDecoder {
    /// A decoder for `framing`, or the 413 if a declared length is over `limit`.
    pub fn new(framing: BodyFraming, limit: u64) -> Result<Self, BodyError> {
        let state = match framing {
            BodyFraming::None => State::Length { left: 0 },
            BodyFraming::Length(n) if n > limit => return Err(TOO_LARGE),
            BodyFraming::Length(n) => State::Length { left: n },
            BodyFraming::Chunked => State::Chunked(Chunk::Size {
                size: 0,
                digits: 0,
                line: 0,
                in_ext: false,
            }),
        };
        Ok(Self {
            state,
            received: 0,
            limit,
        })
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        matches!(
            self.state,
            State::Length { left: 0 } | State::Chunked(Chunk::Done)
        )
    }

    /// Body bytes delivered so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Feeds bytes; returns what was consumed and which ranges are body data.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, BodyError> {
        let mut out = Decoded {
            consumed: 0,
            data: Vec::new(),
            done: false,
        };
        let mut i = 0;
        while i < input.len() && !self.is_done() {
            match &mut self.state {
                State::Length { left } => {
                    let take = (*left).min((input.len() - i) as u64) as usize;
                    out.data.push(i..i + take);
                    *left -= take as u64;
                    self.received += take as u64;
                    i += take;
                }
                State::Chunked(chunk) => {
                    let (used, data) =
                        step_chunked(chunk, &input[i..], self.limit, &mut self.received)?;
                    if let Some(range) = data {
                        out.data.push(i + range.start..i + range.end);
                    }
                    i += used;
                }
            }
        }
        out.consumed = i;
        out.done = self.is_done();
        Ok(out)
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// One state transition; returns bytes used and any data range (relative).
fn step_chunked(
    chunk: &mut Chunk,
    input: &[u8],
    limit: u64,
    received: &mut u64,
) -> Result<(usize, Option<std::ops::Range<usize>>), BodyError> {
    let b = input[0];
    match chunk {
        Chunk::Size {
            size,
            digits,
            line,
            in_ext,
        } => {
            *line += 1;
            if *line > MAX_CHUNK_LINE {
                return Err(malformed("chunk size line too long"));
            }
            match b {
                b'\r' => {
                    if *digits == 0 {
                        return Err(malformed("chunk without a size"));
                    }
                    *chunk = Chunk::SizeLf { size: *size };
                }
                _ if *in_ext => {
                    if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(malformed("bad byte in chunk extension"));
                    }
                }
                b';' | b' ' | b'\t' if *digits > 0 => *in_ext = true,
                _ => match hex(b) {
                    Some(d) => {
                        if *digits >= 15 {
                            return Err(TOO_LARGE);
                        }
                        *size = *size * 16 + d;
                        *digits += 1;
                    }
                    None => return Err(malformed("invalid chunk size")),
                },
            }
            Ok((1, None))
        }
        Chunk::SizeLf { size } => {
            if b != b'\n' {
                return Err(malformed("chunk size line without LF"));
            }
            let size = *size;
            if size == 0 {
                *chunk = Chunk::Trailer {
                    line: 0,
                    total: 0,
                    cr: false,
                };
            } else {
                if received.saturating_add(size) > limit {
                    return Err(TOO_LARGE);
                }
                *chunk = Chunk::Data { left: size };
            }
            Ok((1, None))
        }
        Chunk::Data { left } => {
            let take = (*left).min(input.len() as u64) as usize;
            *left -= take as u64;
            *received += take as u64;
            if *left == 0 {
                *chunk = Chunk::DataCr;
            }
            Ok((take, Some(0..take)))
        }
        Chunk::DataCr => {
            if b != b'\r' {
                return Err(malformed("chunk data not followed by CRLF"));
            }
            *chunk = Chunk::DataLf;
            Ok((1, None))
        }
        Chunk::DataLf => {
            if b != b'\n' {
                return Err(malformed("chunk data not followed by CRLF"));
            }
            *chunk = Chunk::Size {
                size: 0,
                digits: 0,
                line: 0,
                in_ext: false,
            };
            Ok((1, None))
        }
        Chunk::Trailer { line, total, cr } => {
            *total += 1;
            if *total > MAX_TRAILERS {
                return Err(malformed("trailer section too large"));
            }
            match (b, *cr) {
                (b'\r', false) => *cr = true,
                (b'\n', true) => {
                    if *line == 0 {
                        *chunk = Chunk::Done;
                    } else {
                        *line = 0;
                        *cr = false;
                    }
                }
                (_, true) | (b'\n', false) => return Err(malformed("bad line ending in trailers")),
                (_, false) => {
                    if (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(malformed("control byte in trailers"));
                    }
                    *line += 1;
                }
            }
            Ok((1, None))
        }
        Chunk::Done => Ok((0, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns body and leftover.
    fn run(
        framing: BodyFraming,
        limit: u64,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, usize), BodyError> {
        let mut d = BodyDecoder::new(framing, limit)?;
        let mut body = Vec::new();
        let mut pos = 0;
        while pos < input.len() && !d.is_done() {
            let end = (pos + step).min(input.len());
            let out = d.decode(&input[pos..end])?;
            for r in out.data {
                body.extend_from_slice(&input[pos + r.start..pos + r.end]);
            }
            pos += out.consumed;
            if out.consumed == 0 {
                break;
            }
        }
        assert!(d.is_done(), "body incomplete");
        Ok((body, input.len() - pos))
    }

    #[test]
    fn content_length_bodies_stop_at_the_length() {
        for step in [1, 3, 100] {
            let (body, left) = run(BodyFraming::Length(5), 100, b"helloGET /", step)
                .unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(body, b"hello");
            assert_eq!(left, 5);
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire =
            b"5;name=value\r\nhello\r\n6 ; ext\r\n world\r\n0\r\nX-Trailer: t\r\nY: u\r\n\r\nNEXT";
        for step in [1, 2, 7, 1000] {
            let (body, left) =
                run(BodyFraming::Chunked, 100, wire, step).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(body, b"hello world", "step {step}");
            assert_eq!(left, 4);
        }
        let (body, _) = run(
            BodyFraming::Chunked,
            100,
            b"A\r\n0123456789\r\n0\r\n\r\n",
            1,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn limits_are_enforced_on_declared_and_cumulative_sizes() {
        assert_eq!(
            BodyDecoder::new(BodyFraming::Length(11), 10).err(),
            Some(TOO_LARGE)
        );
        let over = b"6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n";
        assert_eq!(
            run(BodyFraming::Chunked, 10, over, 3).err(),
            Some(TOO_LARGE)
        );
        assert!(run(BodyFraming::Chunked, 11, over, 3).is_ok());
        assert_eq!(
            run(BodyFraming::Chunked, 1 << 60, b"ffffffffffffffff\r\n", 1).err(),
            Some(TOO_LARGE)
        );
    }

    #[test]
    fn malformed_chunks_are_400() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"-1\r\n",
            b"0\r\nX\0: y\r\n\r\n",
            b"0\r\nX: y\n\r\n",
        ] {
            let e = run(BodyFraming::Chunked, 100, bad, 1).err();
            assert_eq!(
                e.map(|e| e.status.code()),
                Some(400),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
