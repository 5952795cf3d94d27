//! Request heads: find the end of the head, enforce the size limits while it
//! is still arriving, then parse it (httparse) and apply the checks that
//! close request-smuggling and header-injection holes.
//!
//! [`parse_head`] distinguishes *need more bytes* (`Ok(None)`) from
//! *invalid* (`Err`), and never looks past the end of the head.

use super::{Status, headers};

/// Size limits for a request head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest request line or header line, CRLF excluded.
    pub line: usize,
    /// Largest head, from the first byte to the blank line.
    pub head: usize,
    /// Most header fields.
    pub headers: usize,
}

/// Request methods reliw knows; anything else is 501.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Trace,
    Connect,
}

impl Method {
    pub(crate) fn parse(token: &str) -> Option<Self> {
        Some(match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            "PATCH" => Self::Patch,
            "TRACE" => Self::Trace,
            "CONNECT" => Self::Connect,
            _ => return None,
        })
    }

    /// Whether sending the request twice means what sending it once does
    /// (RFC 9110, 9.2.2): only these are replayed on a fresh upstream
    /// connection.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Self::Get | Self::Head | Self::Options | Self::Trace | Self::Put | Self::Delete
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Patch => "PATCH",
            Self::Trace => "TRACE",
            Self::Connect => "CONNECT",
        }
    }
}

/// How the body of a request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed, validated request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The path and query, always origin-form (`/...`) or `*`.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in arrival order, names lower-cased, values
    /// trimmed: one buffer for all of them (see [`RequestHead::headers`]).
    pub fields: Fields,
    /// The Host header (or the absolute-form authority), as sent.
    pub host: Option<String>,
    pub body: BodyFraming,
    /// Whether the client allows the connection to stay open.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

/// A request's header fields, stored as one buffer of names and values
/// with their places in it: two allocations per request, whatever the
/// number of fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    bytes: Vec<u8>,
    /// (start, name end, value end) of each field in `bytes`.
    ends: Vec<(u32, u32, u32)>,
}

impl Fields {
    /// Adds a field (`name` lower-cased here).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes[start..].make_ascii_lowercase();
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        // A head is at most `request_head_limit` bytes, far below 4 GiB.
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.ends
            .push((at(start), at(name_end), at(self.bytes.len())));
    }

    /// (lower-case name, value) in arrival order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> + '_ {
        self.ends.iter().map(|&(start, name_end, end)| {
            let (start, name_end, end) = (start as usize, name_end as usize, end as usize);
            // Names come from httparse tokens (ASCII), so this never fails.
            let name = std::str::from_utf8(&self.bytes[start..name_end]).unwrap_or("");
            (name, &self.bytes[name_end..end])
        })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl RequestHead {
    /// The header fields: (lower-case name, trimmed value), in order.
    pub fn headers(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter()
    }

    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The first value of a header as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        match self.target.split_once('?') {
            Some((path, _)) => path,
            None => &self.target,
        }
    }
}

/// Why a head was refused: a status and a reason for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadError {
    pub status: Status,
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> HeadError {
    HeadError {
        status: Status::BAD_REQUEST,
        reason,
    }
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((head, len)))`: the head and its length in bytes (body follows).
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // Robustness (RFC 9112 2.2): ignore empty lines before the request line.
    let skip = leading_empty_lines(buf);
    if skip > limits.line {
        return Err(bad("too many empty lines before the request"));
    }
    let data = &buf[skip..];
    let Some(end) = find_head_end(data) else {
        check_partial(data, limits)?;
        return Ok(None);
    };
    let head_bytes = &data[..end];
    if end > limits.head {
        return Err(HeadError {
            status: Status::HEADER_FIELDS_TOO_LARGE,
            reason: "request head too large",
        });
    }
    check_lines(head_bytes, limits)?;
    // The common limit fits on the stack; a larger one is allocated.
    let mut stack = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut heap = Vec::new();
    let storage: &mut [std::mem::MaybeUninit<httparse::Header<'_>>] = if limits.headers <= 128 {
        &mut stack[..limits.headers]
    } else {
        heap.resize_with(limits.headers, std::mem::MaybeUninit::uninit);
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head_bytes, storage) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError {
                status: Status::HEADER_FIELDS_TOO_LARGE,
                reason: "too many header fields",
            });
        }
        Err(httparse::Error::Version) => {
            return Err(HeadError {
                status: Status::VERSION_NOT_SUPPORTED,
                reason: "unsupported HTTP version",
            });
        }
        Err(_) => return Err(bad("malformed request head")),
    }
    let method_token = req.method.unwrap_or("");
    let method = Method::parse(method_token).ok_or(HeadError {
        status: Status::NOT_IMPLEMENTED,
        reason: "unknown method",
    })?;
    let minor_version = req.version.unwrap_or(1);
    let raw_target = req.path.unwrap_or("");
    let mut headers = Fields {
        bytes: Vec::with_capacity(
            req.headers
                .iter()
                .map(|h| h.name.len() + h.value.len())
                .sum(),
        ),
        ends: Vec::with_capacity(req.headers.len()),
    };
    for h in req.headers.iter() {
        headers.push(h.name, trim(h.value));
    }
    let head = validate(method, raw_target, minor_version, headers)?;
    Ok(Some((head, skip + end)))
}

fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    while buf.len() >= i + 2 && &buf[i..i + 2] == b"\r\n" {
        i += 2;
    }
    i
}

/// Index just past the blank line that ends the head.
fn find_head_end(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// Limits that can be judged before the head is complete.
fn check_partial(data: &[u8], limits: &Limits) -> Result<(), HeadError> {
    match data.windows(2).position(|w| w == b"\r\n") {
        None if data.len() > limits.line => {
            return Err(HeadError {
                status: Status::URI_TOO_LONG,
                reason: "request line too long",
            });
        }
        None => {}
        Some(_) => {
            if data.len() > limits.head {
                return Err(HeadError {
                    status: Status::HEADER_FIELDS_TOO_LARGE,
                    reason: "request head too large",
                });
            }
            // The header line still arriving counts too.
            let last_line_start = data
                .windows(2)
                .rposition(|w| w == b"\r\n")
                .map_or(0, |p| p + 2);
            if data.len() - last_line_start > limits.line {
                return Err(HeadError {
                    status: Status::HEADER_FIELDS_TOO_LARGE,
                    reason: "header line too long",
                });
            }
            check_lines(&data[..last_line_start], limits)?;
        }
    }
    Ok(())
}

/// Byte-level checks httparse is lenient about: bare CR, bare LF, control
/// and non-ASCII bytes, obs-fold, whitespace before a colon, line lengths.
fn check_lines(head: &[u8], limits: &Limits) -> Result<(), HeadError> {
    let mut first = true;
    let mut rest = head;
    while !rest.is_empty() {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Err(bad("line without CRLF"));
        };
        let line = &rest[..eol];
        rest = &rest[eol + 2..];
        if line.is_empty() {
            break;
        }
        if line.len() > limits.line {
            return Err(if first {
                HeadError {
                    status: Status::URI_TOO_LONG,
                    reason: "request line too long",
                }
            } else {
                HeadError {
                    status: Status::HEADER_FIELDS_TOO_LARGE,
                    reason: "header line too long",
                }
            });
        }
        for &b in line {
            match b {
                b'\r' => return Err(bad("bare CR in head")),
                b'\n' => return Err(bad("bare LF in head")),
                b'\t' if !first => {}
                0x00..=0x1f | 0x7f => return Err(bad("control byte in head")),
                0x80..=0xff => return Err(bad("non-ASCII byte in head")),
                _ => {}
            }
        }
        if !first {
            if line[0] == b' ' || line[0] == b'\t' {
                return Err(bad("obsolete line folding"));
            }
            match line.iter().position(|&b| b == b':') {
                None => return Err(bad("header line without colon")),
                Some(0) => return Err(bad("empty header name")),
                Some(colon) if matches!(line[colon - 1], b' ' | b'\t') => {
                    return Err(bad("whitespace before colon"));
                }
                Some(_) => {}
            }
        }
        first = false;
    }
    Ok(())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |p| p + 1);
    &v[start..end]
}

fn validate(
    method: Method,
    raw_target: &str,
    minor_version: u8,
    headers: Fields,
) -> Result<RequestHead, HeadError> {
    let mut host: Option<String> = None;
    let mut host_count = 0;
    let mut content_length: Option<u64> = None;
    // Transfer codings: how many, how many say chunked, and the last one.
    let (mut codings, mut chunked_codings, mut last_chunked) = (0usize, 0usize, false);
    let mut saw_te = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for (name, value) in headers.iter() {
        match name {
            "host" => {
                host_count += 1;
                host = Some(String::from_utf8_lossy(value).into_owned());
            }
            "content-length" => {
                if content_length.is_some() {
                    return Err(bad("several Content-Length headers"));
                }
                content_length =
                    Some(headers::content_length(value).ok_or(bad("invalid Content-Length"))?);
            }
            "transfer-encoding" => {
                saw_te = true;
                for t in headers::tokens(value) {
                    last_chunked = t.eq_ignore_ascii_case(b"chunked");
                    codings += 1;
                    chunked_codings += usize::from(last_chunked);
                }
            }
            "connection" => {
                close |= headers::has_token(value, "close");
                keep_alive_token |= headers::has_token(value, "keep-alive");
            }
            "expect" => expect_continue = expectation(value)?,
            _ => {}
        }
    }
    if host_count > 1 {
        return Err(bad("several Host headers"));
    }
    if minor_version == 1 && host_count == 0 {
        return Err(bad("HTTP/1.1 request without Host"));
    }
    let body = match (saw_te, content_length) {
        (true, Some(_)) => return Err(bad("both Content-Length and Transfer-Encoding")),
        (true, None) => {
            if minor_version == 0 {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            match (codings, chunked_codings, last_chunked) {
                (1, 1, true) => BodyFraming::Chunked,
                // Other codings before one final chunked: well formed, not ours.
                (_, 1, true) => {
                    return Err(HeadError {
                        status: Status::NOT_IMPLEMENTED,
                        reason: "unsupported transfer coding",
                    });
                }
                _ => return Err(bad("Transfer-Encoding without a final chunked")),
            }
        }
        (false, Some(0)) | (false, None) => BodyFraming::None,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    let target = normalise_target(method, raw_target, host.as_deref())?;
    let host = host.or_else(|| authority_of(raw_target).map(str::to_owned));
    let keep_alive = !close && (minor_version == 1 || keep_alive_token);
    Ok(RequestHead {
        method,
        target,
        minor_version,
        fields: headers,
        host,
        body,
        keep_alive,
        expect_continue,
    })
}

/// `Expect`: only `100-continue` is met (then `true`); anything else 417.
pub(super) fn expectation(value: &[u8]) -> Result<bool, HeadError> {
    if value.eq_ignore_ascii_case(b"100-continue") {
        Ok(true)
    } else {
        Err(HeadError {
            status: Status::EXPECTATION_FAILED,
            reason: "unsupported expectation",
        })
    }
}

fn authority_of(target: &str) -> Option<&str> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    Some(rest.split(['/', '?']).next().unwrap_or(rest))
}

/// Origin-form stays; absolute-form becomes origin-form after its authority
/// is checked against Host; `*` only for OPTIONS.
fn normalise_target(method: Method, target: &str, host: Option<&str>) -> Result<String, HeadError> {
    if target.starts_with('/') {
        return Ok(target.to_owned());
    }
    if target == "*" && method == Method::Options {
        return Ok(target.to_owned());
    }
    if let Some(authority) = authority_of(target) {
        if authority.is_empty() {
            return Err(bad("absolute-form target without a host"));
        }
        if let Some(host) = host
            && !host.eq_ignore_ascii_case(authority)
        {
            return Err(bad("absolute-form target disagrees with Host"));
        }
        let scheme_len = if target.starts_with("https://") { 8 } else { 7 };
        let rest = &target[scheme_len + authority.len()..];
        return Ok(if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        });
    }
    Err(bad("invalid request target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_order_and_lower_case_names_in_one_buffer() {
        let head = crate::http::test_head(
            "GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 1.1.1.1\r\nCookie:  a=1 \r\nx-forwarded-for: 2.2.2.2\r\n\r\n",
        );
        let all: Vec<(&str, &[u8])> = head.headers().collect();
        assert_eq!(
            all,
            [
                ("host", &b"a.test"[..]),
                ("x-forwarded-for", b"1.1.1.1"),
                ("cookie", b"a=1"),
                ("x-forwarded-for", b"2.2.2.2"),
            ]
        );
        assert_eq!(head.header("x-forwarded-for"), Some(&b"1.1.1.1"[..]));
        assert_eq!(
            head.headers().next_back().map(|(_, v)| v),
            Some(&b"2.2.2.2"[..])
        );
        assert_eq!(head.fields.len(), 4);
    }

    const LIMITS: Limits = Limits {
        line: 8192,
        head: 65536,
        headers: 100,
    };

    fn parse(text: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_head(text.as_bytes(), &LIMITS)
    }

    fn ok(text: &str) -> RequestHead {
        match parse(text) {
            Ok(Some((head, len))) => {
                assert_eq!(len, text.len(), "whole head consumed");
                head
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn status(text: &str) -> u16 {
        match parse(text) {
            Err(e) => e.status.code(),
            other => panic!("{text:?} should fail: {other:?}"),
        }
    }

    #[test]
    fn a_simple_get_parses() {
        let h = ok("GET /a/b?c=d HTTP/1.1\r\nHost: Example.com\r\nUser-Agent: t\r\n\r\n");
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.target, "/a/b?c=d");
        assert_eq!(h.path(), "/a/b");
        assert_eq!(h.host.as_deref(), Some("Example.com"));
        assert_eq!(h.header_str("user-agent"), Some("t"));
        assert_eq!(h.body, BodyFraming::None);
        assert!(h.keep_alive);
    }

    #[test]
    fn incomplete_heads_ask_for_more_at_every_split() {
        let text = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        for cut in 0..text.len() {
            assert_eq!(parse(&text[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(ok(text).body, BodyFraming::Length(3));
    }

    #[test]
    fn keep_alive_rules_for_both_versions() {
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(
            !ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, Close\r\n\r\n").keep_alive
        );
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        for (what, text) in [
            (
                "CL and TE",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "TE not chunked",
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            ),
            (
                "TE chunked not last",
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            ),
            (
                "TE twice",
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "TE in 1.0",
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "two CL",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            ),
            (
                "CL list",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\n",
            ),
            (
                "CL sign",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n",
            ),
            (
                "CL hex",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\n",
            ),
            (
                "CL huge",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
            ),
            (
                "obs-fold",
                "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n",
            ),
            ("space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n"),
            ("tab before colon", "GET / HTTP/1.1\r\nHost\t: h\r\n\r\n"),
            ("bare CR", "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"),
            ("bare LF", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n"),
            ("NUL", "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"),
            (
                "non-ASCII",
                "GET / HTTP/1.1\r\nHost: h\r\nX: caf\u{e9}\r\n\r\n",
            ),
            ("no host", "GET / HTTP/1.1\r\n\r\n"),
            ("two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            (
                "absolute-form mismatch",
                "GET http://evil.example/ HTTP/1.1\r\nHost: good.example\r\n\r\n",
            ),
            ("bad target", "GET foo HTTP/1.1\r\nHost: h\r\n\r\n"),
        ] {
            assert_eq!(status(text), 400, "{what}");
        }
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let h = ok("GET http://h.example/p?q HTTP/1.1\r\nHost: H.example\r\n\r\n");
        assert_eq!(h.target, "/p?q");
        let h = ok("GET http://h.example HTTP/1.0\r\n\r\n");
        assert_eq!(h.target, "/");
        assert_eq!(h.host.as_deref(), Some("h.example"));
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long_target), 414);
        // Detected before the head is complete, too.
        assert_eq!(status(&format!("GET /{}", "a".repeat(9000))), 414);
        let long_header = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert_eq!(status(&long_header), 431);
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000))),
            431
        );
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n")),
            431
        );
        let small = Limits {
            line: 8192,
            head: 100,
            headers: 100,
        };
        let big = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(
            parse_head(big.as_bytes(), &small).map_err(|e| e.status.code()),
            Err(431)
        );
    }

    #[test]
    fn methods_versions_and_expectations() {
        assert_eq!(status("BREW / HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\n\r\n"),
            417
        );
        assert!(
            ok("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        assert_eq!(ok("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").target, "*");
    }

    #[test]
    fn leading_blank_lines_are_ignored_and_counted() {
        let text = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let (_, len) = parse(text)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("parses"));
        assert_eq!(len, text.len());
    }
}
