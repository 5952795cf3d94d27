//! Response heads: status codes, reasons, and the encoder.

use std::rc::Rc;
use std::time::SystemTime;

/// An HTTP status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status(u16);

impl Status {
    pub const CONTINUE: Self = Self(100);
    pub const OK: Self = Self(200);
    pub const PARTIAL_CONTENT: Self = Self(206);
    pub const MOVED_PERMANENTLY: Self = Self(301);
    pub const FOUND: Self = Self(302);
    pub const SEE_OTHER: Self = Self(303);
    pub const NOT_MODIFIED: Self = Self(304);
    pub const UNAUTHORIZED: Self = Self(401);
    pub const BAD_REQUEST: Self = Self(400);
    pub const FORBIDDEN: Self = Self(403);
    pub const NOT_FOUND: Self = Self(404);
    pub const METHOD_NOT_ALLOWED: Self = Self(405);
    pub const NOT_ACCEPTABLE: Self = Self(406);
    pub const REQUEST_TIMEOUT: Self = Self(408);
    pub const PAYLOAD_TOO_LARGE: Self = Self(413);
    pub const URI_TOO_LONG: Self = Self(414);
    pub const RANGE_NOT_SATISFIABLE: Self = Self(416);
    pub const EXPECTATION_FAILED: Self = Self(417);
    pub const TOO_MANY_REQUESTS: Self = Self(429);
    pub const HEADER_FIELDS_TOO_LARGE: Self = Self(431);
    pub const INTERNAL_SERVER_ERROR: Self = Self(500);
    pub const NOT_IMPLEMENTED: Self = Self(501);
    pub const BAD_GATEWAY: Self = Self(502);
    pub const SERVICE_UNAVAILABLE: Self = Self(503);
    pub const GATEWAY_TIMEOUT: Self = Self(504);
    pub const VERSION_NOT_SUPPORTED: Self = Self(505);

    /// Any code (an upstream's, say); `reason` knows the common ones.
    pub const fn from_code(code: u16) -> Self {
        Self(code)
    }

    pub const fn code(self) -> u16 {
        self.0
    }

    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            101 => "Switching Protocols",
            200 => "OK",
            206 => "Partial Content",
            301 => "Moved Permanently",
            302 => "Found",
            303 => "See Other",
            304 => "Not Modified",
            401 => "Unauthorized",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            408 => "Request Timeout",
            413 => "Content Too Large",
            414 => "URI Too Long",
            416 => "Range Not Satisfiable",
            417 => "Expectation Failed",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        }
    }

    /// Responses that never carry a body.
    pub fn has_no_body(self) -> bool {
        self.0 < 200 || self.0 == 204 || self.0 == 304
    }
}

/// A response head under construction.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: Status,
    /// Extra header fields (`Date`, `Server`, `Content-Length` and
    /// `Connection` are written by [`ResponseHead::encode`]).
    pub headers: Vec<(&'static str, HeaderValue)>,
    /// Fields whose names are only known at run time (a Lua page's),
    /// checked by the caller to be tokens with values free of CR/LF.
    pub named_headers: Vec<(String, String)>,
    /// Body length announced in `Content-Length` (omitted for 1xx/304).
    pub content_length: u64,
    /// Send `Connection: close` (and close after the body).
    pub close: bool,
    /// Send `Connection: keep-alive` (an HTTP/1.0 client asked for it).
    pub keep_alive_10: bool,
}

impl ResponseHead {
    pub fn new(status: Status) -> Self {
        Self {
            status,
            headers: Vec::new(),
            named_headers: Vec::new(),
            content_length: 0,
            close: false,
            keep_alive_10: false,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<HeaderValue>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the head to `out`. `date` is the `Date` value (see [`http_date`]).
    /// Copies only: no formatting machinery on the response path.
    pub fn encode(&self, date: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(self.status.code()));
        out.push(b' ');
        out.extend_from_slice(self.status.reason().as_bytes());
        out.extend_from_slice(b"\r\nServer: reliw\r\nDate: ");
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut field = |name: &str, value: &str| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        for (name, value) in &self.headers {
            field(name, value.as_str());
        }
        for (name, value) in &self.named_headers {
            field(name, value);
        }
        if !self.status.has_no_body() {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, self.content_length);
            out.extend_from_slice(b"\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.keep_alive_10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A header value: fixed text, text shared with a cache entry (an ETag,
/// a content type rendered once), or made for this response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    Static(&'static str),
    Shared(Rc<str>),
    Owned(String),
}

impl HeaderValue {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Static(s) => s,
            Self::Shared(s) => s,
            Self::Owned(s) => s,
        }
    }
}

impl std::fmt::Display for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for HeaderValue {
    fn from(s: &'static str) -> Self {
        Self::Static(s)
    }
}

impl From<String> for HeaderValue {
    fn from(s: String) -> Self {
        Self::Owned(s)
    }
}

impl From<Rc<str>> for HeaderValue {
    fn from(s: Rc<str>) -> Self {
        Self::Shared(s)
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The IMF-fixdate form of a time, for `Date` and `Last-Modified`.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_encode_with_length_and_connection() {
        let mut out = Vec::new();
        ResponseHead::new(Status::NOT_FOUND)
            .header("Content-Type", "text/plain")
            .encode("Thu, 01 Jan 1970 00:00:00 GMT", &mut out);
        let text = String::from_utf8(out).unwrap_or_default();
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\nServer: reliw\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
        );
        let mut out = Vec::new();
        let mut head = ResponseHead::new(Status::NOT_MODIFIED);
        head.close = true;
        head.encode("d", &mut out);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn decimals_are_written_without_formatting() {
        for n in [0u64, 7, 10, 1234, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn encoded_heads_parse_back() {
        let mut out = Vec::new();
        let mut head = ResponseHead::new(Status::OK).header("ETag", "\"x\"");
        head.content_length = 12;
        head.encode("Thu, 01 Jan 1970 00:00:00 GMT", &mut out);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(matches!(resp.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()));
        assert_eq!(resp.code, Some(200));
        assert!(
            resp.headers
                .iter()
                .any(|h| h.name == "Content-Length" && h.value == b"12")
        );
    }
}
