//! The response to a GET or HEAD of a file: validators, conditional
//! requests (304 for GET only), single byte ranges (206/416), HEAD.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use super::Meta;
use crate::http::coding::{Accepted, tag_names};
use crate::http::{Method, RequestHead, ResponseHead, Status};

/// A file's response fields, rendered once when it enters the cache and
/// shared by every response that sends it.
#[derive(Clone, Debug)]
pub struct Fields {
    pub etag: Rc<str>,
    pub content_type: Rc<str>,
    pub last_modified: Rc<str>,
    /// The key its encoded forms are cached under: the ETag (inode, size,
    /// mtime) with the device, so files of two filesystems never share one.
    pub form_key: Rc<str>,
}

impl Fields {
    pub fn of(meta: &Meta) -> Self {
        let etag = meta.etag();
        Self {
            form_key: Rc::from(format!("{:x}:{etag}", meta.dev)),
            etag: Rc::from(etag),
            content_type: Rc::from(meta.content_type()),
            last_modified: Rc::from(crate::http::response::http_date(meta.modified)),
        }
    }
}

/// Which bytes of the file follow the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyPlan {
    Empty,
    Range { start: u64, len: u64 },
}

/// A response head and the part of the file to send.
#[derive(Debug)]
pub struct Plan {
    pub head: ResponseHead,
    pub body: BodyPlan,
}

/// Default `Cache-Control` (RELIW's).
pub const DEFAULT_CACHE_CONTROL: &str = "max-age=86400";

/// Plans the response to `req` (GET or HEAD) for a file with `meta`.
pub fn plan(req: &RequestHead, meta: &Meta, fields: &Fields) -> Plan {
    let etag = &*fields.etag;
    let mut head = ResponseHead::new(Status::OK);
    head.headers.reserve(6);
    let mut head = head
        .header("Content-Type", Rc::clone(&fields.content_type))
        .header("ETag", Rc::clone(&fields.etag))
        .header("Last-Modified", Rc::clone(&fields.last_modified))
        .header("Cache-Control", DEFAULT_CACHE_CONTROL)
        .header("Accept-Ranges", "bytes");
    let is_get = req.method == Method::Get;

    if is_get && not_modified(req, meta, etag) {
        head.status = Status::NOT_MODIFIED;
        head.headers
            .retain(|(n, _)| *n != "Content-Type" && *n != "Accept-Ranges");
        return Plan {
            head,
            body: BodyPlan::Empty,
        };
    }

    let mut start = 0;
    let mut len = meta.size;
    if is_get
        && let Some(range) = req.header_str("range")
        && if_range_allows(req, meta, etag)
    {
        match parse_range(range, meta.size) {
            RangeSpec::Ignore => {}
            RangeSpec::Unsatisfiable => {
                let mut head = ResponseHead::new(Status::RANGE_NOT_SATISFIABLE)
                    .header("Content-Range", format!("bytes */{}", meta.size));
                head.content_length = 0;
                return Plan {
                    head,
                    body: BodyPlan::Empty,
                };
            }
            RangeSpec::Bytes(s, l) => {
                start = s;
                len = l;
                head.status = Status::PARTIAL_CONTENT;
                head.headers.push((
                    "Content-Range",
                    format!("bytes {}-{}/{}", s, s + l - 1, meta.size).into(),
                ));
            }
        }
    }
    head.content_length = len;
    // A HEAD keeps its body plan: the encode step may need the bytes to
    // know the encoded length, and the body is dropped where responses are
    // written.
    let body = if len == 0 {
        BodyPlan::Empty
    } else {
        BodyPlan::Range { start, len }
    };
    Plan { head, body }
}

fn not_modified(req: &RequestHead, meta: &Meta, etag: &str) -> bool {
    if let Some(inm) = req.header_str("if-none-match") {
        let accepted = Accepted::of(req);
        return inm
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag_names(tag, etag, &accepted));
    }
    if let Some(ims) = req.header_str("if-modified-since")
        && let Ok(since) = httpdate::parse_http_date(ims)
    {
        return whole_seconds(meta.modified) <= whole_seconds(since);
    }
    false
}

fn whole_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// `If-Range`: a range applies only if the validator still matches (strong).
fn if_range_allows(req: &RequestHead, meta: &Meta, etag: &str) -> bool {
    match req.header_str("if-range") {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        Some(v) => httpdate::parse_http_date(v)
            .is_ok_and(|d| whole_seconds(meta.modified) == whole_seconds(d)),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Not a single bytes range we serve: send the whole file.
    Ignore,
    Unsatisfiable,
    /// Start and length.
    Bytes(u64, u64),
}

/// One `bytes=` range; several ranges are answered with the whole file
/// (allowed by RFC 9110 and cheaper than multipart).
fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                RangeSpec::Unsatisfiable
            } else {
                let n = n.min(size);
                RangeSpec::Bytes(size - n, n)
            }
        }
        (false, Some(first), last) if b.is_empty() || last.is_some() => {
            if first >= size {
                return RangeSpec::Unsatisfiable;
            }
            let last = last.unwrap_or(size - 1).min(size - 1);
            if last < first {
                return RangeSpec::Ignore;
            }
            RangeSpec::Bytes(first, last - first + 1)
        }
        _ => RangeSpec::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Bytes(0, 10));
        assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Bytes(90, 10));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Bytes(90, 10));
        assert_eq!(parse_range("bytes=-1000", 100), RangeSpec::Bytes(0, 100));
        assert_eq!(parse_range("bytes=50-1000", 100), RangeSpec::Bytes(50, 50));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=5-2", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=x-2", 100), RangeSpec::Ignore);
    }
}
