//! HTTP/2 messages in reliw's own terms, sans-IO: a request's pseudo-header
//! and fields (as the `h2` codec decoded them) become the same
//! [`RequestHead`] an HTTP/1.1 request gives, checked the same way; a
//! response head becomes the field list `h2` encodes. The codec itself
//! (framing, HPACK, flow control) is the `h2` crate's.

use super::request::Fields;
use super::{BodyFraming, HeadError, Method, RequestHead, ResponseHead, Status, headers};

const fn bad(reason: &'static str) -> HeadError {
    HeadError {
        status: Status::BAD_REQUEST,
        reason,
    }
}

/// Fields that only mean something on one HTTP/1.1 connection; RFC 9113
/// 8.2.2 forbids them in HTTP/2 (`h2` refuses them in requests; we drop
/// them from responses).
pub fn is_connection_specific(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// The request head of an HTTP/2 request. `end_of_stream`: the HEADERS
/// frame ended the stream (no body). `max_fields`: `max_header_count`.
pub fn request_head(
    parts: &http::request::Parts,
    end_of_stream: bool,
    max_fields: usize,
) -> Result<RequestHead, HeadError> {
    let method = Method::parse(parts.method.as_str()).ok_or(HeadError {
        status: Status::NOT_IMPLEMENTED,
        reason: "unknown method",
    })?;
    if method == Method::Connect {
        // Neither tunnels nor RFC 8441 WebSockets are offered over h2.
        return Err(HeadError {
            status: Status::NOT_IMPLEMENTED,
            reason: "CONNECT over HTTP/2",
        });
    }
    let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let target_ok = target.starts_with('/') || (target == "*" && method == Method::Options);
    if !target_ok {
        return Err(bad("request without a usable :path"));
    }
    if parts.headers.len() > max_fields {
        return Err(HeadError {
            status: Status::HEADER_FIELDS_TOO_LARGE,
            reason: "too many header fields",
        });
    }
    let authority = parts.uri.authority().map(|a| a.as_str());
    let mut fields = Fields::default();
    let mut host: Option<String> = authority.map(str::to_owned);
    let mut content_length: Option<u64> = None;
    let mut expect_continue = false;
    // Cookie crumbs (RFC 9113 8.2.3) are joined back into one field.
    let mut cookie: Vec<u8> = Vec::new();
    for (name, value) in &parts.headers {
        let name = name.as_str();
        let value = value.as_bytes();
        check_value(value)?;
        match name {
            "cookie" => {
                if !cookie.is_empty() {
                    cookie.extend_from_slice(b"; ");
                }
                cookie.extend_from_slice(value);
                continue;
            }
            "host" => match &host {
                Some(h) if authority.is_some() && !h.as_bytes().eq_ignore_ascii_case(value) => {
                    return Err(bad("Host differs from :authority"));
                }
                Some(_) if authority.is_none() => return Err(bad("several Host headers")),
                _ => host = Some(String::from_utf8_lossy(value).into_owned()),
            },
            "content-length" => {
                if content_length.is_some() {
                    return Err(bad("several Content-Length headers"));
                }
                content_length =
                    Some(headers::content_length(value).ok_or(bad("invalid Content-Length"))?);
            }
            "expect" => expect_continue = super::request::expectation(value)?,
            // Only `te: trailers` may come (h2 checks); it means nothing
            // to an HTTP/1.1 upstream of ours.
            "te" => continue,
            _ => {}
        }
        fields.push(name, value);
    }
    if !cookie.is_empty() {
        fields.push("cookie", &cookie);
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Err(bad("request without :authority or Host"));
    };
    if fields.iter().all(|(n, _)| n != "host") {
        fields.push("host", host.as_bytes());
    }
    let body = match content_length {
        Some(0) => BodyFraming::None,
        Some(n) => BodyFraming::Length(n),
        None if end_of_stream => BodyFraming::None,
        // A body of unknown length: an HTTP/1.1 upstream gets it chunked.
        None => BodyFraming::Chunked,
    };
    Ok(RequestHead {
        method,
        target: target.to_owned(),
        minor_version: 1,
        fields,
        host: Some(host),
        body,
        keep_alive: true,
        expect_continue,
    })
}

/// The bytes an HTTP/1.1 head of ours refuses refuse an h2 field too:
/// controls (HPACK could carry CR or LF) and non-ASCII.
fn check_value(value: &[u8]) -> Result<(), HeadError> {
    for &b in value {
        match b {
            b'\t' => {}
            0x00..=0x1f | 0x7f => return Err(bad("control byte in a field")),
            0x80..=0xff => return Err(bad("non-ASCII byte in a field")),
            _ => {}
        }
    }
    Ok(())
}

/// The HTTP/2 head of one of our responses: its status, `server`, `date`,
/// its fields and `content-length` (what `ResponseHead::encode` writes for
/// HTTP/1.1, less the connection's own fields).
pub fn response(head: &ResponseHead, date: &str) -> http::Response<()> {
    let mut fields = http::HeaderMap::with_capacity(head.headers.len() + 4);
    append(&mut fields, "server", b"reliw");
    append(&mut fields, "date", date.as_bytes());
    for (name, value) in &head.headers {
        append(&mut fields, name, value.as_str().as_bytes());
    }
    for (name, value) in &head.named_headers {
        append(&mut fields, name, value.as_bytes());
    }
    if !head.status.has_no_body() {
        let mut n = Vec::with_capacity(20);
        super::response::push_decimal(&mut n, head.content_length);
        if let Ok(v) = http::HeaderValue::from_bytes(&n) {
            fields.insert(http::header::CONTENT_LENGTH, v);
        }
    }
    let mut out = http::Response::new(());
    *out.status_mut() =
        http::StatusCode::from_u16(head.status.code()).unwrap_or(http::StatusCode::BAD_GATEWAY);
    *out.headers_mut() = fields;
    out
}

/// The HTTP/2 head of an HTTP/1.1 response head (`bytes`, as the proxy
/// writes it for a client): `None` if it does not parse.
pub fn response_from_http1(bytes: &[u8]) -> Option<http::Response<()>> {
    let mut storage = [httparse::EMPTY_HEADER; 160];
    let mut parsed = httparse::Response::new(&mut storage);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let mut out = http::Response::new(());
    *out.status_mut() = http::StatusCode::from_u16(parsed.code?).ok()?;
    for h in parsed.headers.iter() {
        append(out.headers_mut(), h.name, h.value);
    }
    Some(out)
}

/// Adds a response field, unless it is connection-specific or one h2
/// cannot carry (then it is left out, and logged).
fn append(fields: &mut http::HeaderMap, name: &str, value: &[u8]) {
    if is_connection_specific(name) {
        return;
    }
    match (
        http::HeaderName::from_bytes(name.as_bytes()),
        http::HeaderValue::from_bytes(value),
    ) {
        (Ok(n), Ok(v)) => {
            fields.append(n, v);
        }
        _ => tracing::debug!(name, "a response field h2 cannot carry was left out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    fn get(uri: &str) -> http::request::Builder {
        http::Request::builder().method("GET").uri(uri)
    }

    #[test]
    fn a_get_becomes_the_head_http1_would_give() {
        let p = parts(
            get("https://example.com/a/b?x=1")
                .header("accept", "text/html")
                .body(())
                .unwrap(),
        );
        let head = request_head(&p, true, 100).unwrap();
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.target, "/a/b?x=1");
        assert_eq!(head.host.as_deref(), Some("example.com"));
        assert_eq!(head.header("host"), Some(&b"example.com"[..]));
        assert_eq!(head.header("accept"), Some(&b"text/html"[..]));
        assert_eq!(head.body, BodyFraming::None);
    }

    #[test]
    fn cookie_crumbs_are_joined() {
        let p = parts(
            get("https://example.com/")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(())
                .unwrap(),
        );
        let head = request_head(&p, true, 100).unwrap();
        assert_eq!(head.header("cookie"), Some(&b"a=1; b=2"[..]));
    }

    #[test]
    fn body_framing_follows_length_or_end_of_stream() {
        let post = |cl: Option<&str>, eos| {
            let mut b = http::Request::builder()
                .method("POST")
                .uri("https://example.com/up");
            if let Some(cl) = cl {
                b = b.header("content-length", cl);
            }
            request_head(&parts(b.body(()).unwrap()), eos, 100).map(|h| h.body)
        };
        assert_eq!(post(Some("5"), false), Ok(BodyFraming::Length(5)));
        assert_eq!(post(None, false), Ok(BodyFraming::Chunked));
        assert_eq!(post(None, true), Ok(BodyFraming::None));
        assert_eq!(
            post(Some("x"), false).unwrap_err().status,
            Status::BAD_REQUEST
        );
    }

    #[test]
    fn refusals_carry_the_http1_statuses() {
        let status =
            |req: http::Request<()>| request_head(&parts(req), true, 3).unwrap_err().status;
        let conflicting = get("https://a.example/")
            .header("host", "b.example")
            .body(())
            .unwrap();
        assert_eq!(status(conflicting), Status::BAD_REQUEST);
        let many = get("https://a.example/")
            .header("a", "1")
            .header("b", "1")
            .header("c", "1")
            .header("d", "1")
            .body(())
            .unwrap();
        assert_eq!(status(many), Status::HEADER_FIELDS_TOO_LARGE);
        let expect = get("https://a.example/")
            .header("expect", "something")
            .body(())
            .unwrap();
        assert_eq!(status(expect), Status::EXPECTATION_FAILED);
        let high = get("https://a.example/")
            .header("x", http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap())
            .body(())
            .unwrap();
        assert_eq!(status(high), Status::BAD_REQUEST);
        let connect = http::Request::builder()
            .method("CONNECT")
            .uri("a.example:443")
            .body(())
            .unwrap();
        assert_eq!(status(connect), Status::NOT_IMPLEMENTED);
        let no_authority = get("/x").body(()).unwrap();
        assert_eq!(status(no_authority), Status::BAD_REQUEST);
    }

    #[test]
    fn responses_lose_connection_fields_and_keep_the_rest() {
        let mut head = ResponseHead::new(Status::OK)
            .header("Content-Type", "text/plain")
            .header("Connection", "close");
        head.named_headers.push(("X-Page".into(), "1".into()));
        head.content_length = 42;
        let r = response(&head, "Mon, 07 Dec 2026 10:00:00 GMT");
        assert_eq!(r.status(), 200);
        let f = r.headers();
        assert_eq!(f["content-type"], "text/plain");
        assert_eq!(f["content-length"], "42");
        assert_eq!(f["x-page"], "1");
        assert_eq!(f["server"], "reliw");
        assert!(f.get("connection").is_none());
        let not_modified = response(&ResponseHead::new(Status::NOT_MODIFIED), "d");
        assert!(not_modified.headers().get("content-length").is_none());
    }

    #[test]
    fn an_http1_head_converts_without_its_framing() {
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nX-A: b\r\nConnection: keep-alive\r\n\r\n";
        let r = response_from_http1(raw).unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["x-a"], "b");
        assert_eq!(r.headers().len(), 1);
        assert!(response_from_http1(b"HTTP/1.1 20").is_none());
    }
}
