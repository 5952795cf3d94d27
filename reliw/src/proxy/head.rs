//! Heads crossing the proxy, sans-IO: the request head the upstream gets,
//! the upstream's response head (parsed, checked, framed), and the
//! response head the client gets.
//!
//! Rules, both ways: hop-by-hop fields (Connection and the fields it names,
//! Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*) never
//! cross; framing is reliw's own on each side. Towards the upstream, `Host`
//! is the upstream's, `Origin`/`Referer` point at the upstream's origin and
//! the `X-Forwarded-*`/`X-Real-IP`/`X-Client-IP` fields say who asked
//! (what the client sent in them is dropped or, for `X-Forwarded-For`,
//! appended to). Back to the client, `Access-Control-Allow-Origin`
//! naming the upstream names the client's origin again, a cookie's
//! `Domain=` names the host the client asked for (as RELIW), and over TLS
//! every cookie is `Secure`.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::target::ProxyTarget;
use crate::http::coding::Coding;
use crate::http::{BodyFraming, Method, RequestHead, headers};

/// Who the request is forwarded for.
pub struct Forwarding<'a> {
    pub target: &'a ProxyTarget,
    /// The client reached us over TLS.
    pub client_tls: bool,
    /// The socket peer (appended to `X-Forwarded-For`).
    pub peer: IpAddr,
    /// The client address (`X-Real-IP`; differs from `peer` behind a
    /// trusted proxy).
    pub client: IpAddr,
}

/// Fields that describe one hop, never forwarded (names in any case:
/// request names arrive lower-cased, response names as sent).
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// Whether one of the `Connection` fields among `headers` names the
/// field `name` (or the option, e.g. `upgrade`), case-insensitively.
fn connection_names<'a>(
    mut headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    name: &str,
) -> bool {
    headers.any(|(n, v)| n.eq_ignore_ascii_case("connection") && headers::has_token(v, name))
}

/// The protocol a request asks to switch to (`Upgrade` with `Connection:
/// upgrade` on a GET), if any.
pub fn upgrade(req: &RequestHead) -> Option<&[u8]> {
    if req.method != Method::Get || req.minor_version == 0 {
        return None;
    }
    if !connection_names(req.headers(), "upgrade") {
        return None;
    }
    req.header("upgrade").filter(|v| !v.is_empty())
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `scheme://authority` at the start of `url` replaced by `origin`.
fn rebase(url: &[u8], origin: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(url).ok()?;
    let (_, rest) = text.split_once("://")?;
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    Some(format!("{origin}{path}").into_bytes())
}

/// Appends the head the upstream gets for `req`, its body re-framed by us
/// (a chunked body goes on chunked). Returns whether it asks the upstream
/// to switch protocols ([`upgrade`]).
pub fn request_head(req: &RequestHead, fwd: &Forwarding<'_>, out: &mut Vec<u8>) -> bool {
    let target = fwd.target;
    let upgrade = upgrade(req);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_field(out, "host", target.authority.as_bytes());
    let mut forwarded_for: Option<Vec<u8>> = None;
    for (name, value) in req.headers() {
        if is_hop_by_hop(name) || connection_names(req.headers(), name) {
            continue;
        }
        match name {
            "host" | "content-length" | "expect" | "x-forwarded-host" | "x-forwarded-proto"
            | "x-real-ip" | "x-client-ip" => {}
            "x-forwarded-for" => {
                let list = forwarded_for.get_or_insert_with(Vec::new);
                if !list.is_empty() {
                    list.extend_from_slice(b", ");
                }
                list.extend_from_slice(value);
            }
            "origin" if value != b"null" => {
                push_field(out, name, target.origin.as_bytes());
            }
            "referer" => match rebase(value, &target.origin) {
                Some(v) => push_field(out, name, &v),
                None => push_field(out, name, value),
            },
            _ => push_field(out, name, value),
        }
    }
    let mut list = forwarded_for.unwrap_or_default();
    if !list.is_empty() {
        list.extend_from_slice(b", ");
    }
    let _ = write!(ByteWriter(&mut list), "{}", fwd.peer.to_canonical());
    push_field(out, "x-forwarded-for", &list);
    if let Some(host) = &req.host {
        push_field(out, "x-forwarded-host", host.as_bytes());
    }
    let proto: &[u8] = if fwd.client_tls { b"https" } else { b"http" };
    push_field(out, "x-forwarded-proto", proto);
    let client = fwd.client.to_canonical().to_string();
    push_field(out, "x-real-ip", client.as_bytes());
    // RELIW's name for the same address.
    push_field(out, "x-client-ip", client.as_bytes());
    match req.body {
        BodyFraming::Length(n) => push_field(out, "content-length", n.to_string().as_bytes()),
        BodyFraming::Chunked => push_field(out, "transfer-encoding", b"chunked"),
        BodyFraming::None if req.header("content-length").is_some() => {
            push_field(out, "content-length", b"0");
        }
        BodyFraming::None => {}
    }
    if let Some(protocol) = upgrade {
        push_field(out, "connection", b"upgrade");
        push_field(out, "upgrade", protocol);
    }
    out.extend_from_slice(b"\r\n");
    upgrade.is_some()
}

/// `fmt::Write` into bytes.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// How an upstream response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

/// An upstream response head: one copy of its bytes, and where the
/// fields are in it (two allocations, whatever the field count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamHead {
    pub status: u16,
    raw: Vec<u8>,
    reason: std::ops::Range<usize>,
    /// (name, value) of each field, in arrival order, as ranges of `raw`.
    fields: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,

    pub framing: ResponseFraming,
    /// The upstream keeps the connection for another request after this one.
    pub reusable: bool,
}

impl UpstreamHead {
    /// The reason phrase, as sent.
    pub fn reason(&self) -> &str {
        std::str::from_utf8(&self.raw[self.reason.clone()]).unwrap_or("")
    }

    /// The fields, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|(n, v)| {
            (
                std::str::from_utf8(&self.raw[n.clone()]).unwrap_or(""),
                &self.raw[v.clone()],
            )
        })
    }
}

/// Where `part` lies within `whole` (a sub-slice of it).
fn range_in(whole: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    let start = start.min(whole.len());
    start..(start + part.len()).min(whole.len())
}

/// Most fields in an upstream response head.
const MAX_RESPONSE_FIELDS: usize = 128;

/// Parses the response head at the start of `buf` for a request of
/// `method`. `Ok(None)`: incomplete. `Err`: what is wrong (the client gets
/// a 502).
pub fn parse_response(
    buf: &[u8],
    method: Method,
    max_head: usize,
) -> Result<Option<(UpstreamHead, usize)>, &'static str> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_RESPONSE_FIELDS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Complete(_)) => return Err("response head too large"),
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            return Err("response head too large");
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many response header fields"),
        Err(_) => return Err("malformed response head"),
    };
    let status = resp.code.ok_or("malformed status line")?;
    if !(100..=599).contains(&status) {
        return Err("status code out of range");
    }
    let minor = resp.version.unwrap_or(1);
    let raw = &buf[..len];
    let fields: Vec<_> = resp
        .headers
        .iter()
        .map(|h| {
            (
                range_in(raw, h.name.as_bytes()),
                range_in(raw, h.value.trim_ascii()),
            )
        })
        .collect();
    let says =
        |token: &str| connection_names(resp.headers.iter().map(|h| (h.name, h.value)), token);
    let mut reusable = if minor == 0 {
        says("keep-alive")
    } else {
        !says("close")
    };
    let headers = &*resp.headers;
    let field = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    };
    let framing = if method == Method::Head || status < 200 || status == 204 || status == 304 {
        ResponseFraming::None
    } else if field("transfer-encoding").next().is_some() {
        let last = field("transfer-encoding")
            .flat_map(|v| v.split(|b| *b == b','))
            .map(|c| c.trim_ascii())
            .rfind(|c| !c.is_empty())
            .unwrap_or_default();
        if field("content-length").next().is_some() {
            // Both: Transfer-Encoding wins, and the connection is suspect.
            reusable = false;
        }
        if last.eq_ignore_ascii_case(b"chunked") && minor == 1 {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        }
    } else if field("content-length").next().is_some() {
        // A list of equal values is one length (RFC 9110 8.6); any other
        // difference is a response we cannot delimit.
        let mut length: Option<u64> = None;
        for part in field("content-length").flat_map(|v| v.split(|b| *b == b',')) {
            let n = headers::content_length(part.trim_ascii()).ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values");
            }
            length = Some(n);
        }
        ResponseFraming::Length(length.unwrap_or(0))
    } else {
        ResponseFraming::UntilClose
    };
    if framing == ResponseFraming::UntilClose {
        reusable = false;
    }
    let reason = range_in(raw, resp.reason.unwrap_or("").as_bytes());
    let head = UpstreamHead {
        status,
        raw: raw.to_vec(),
        reason,
        fields,
        framing,
        reusable,
    };
    Ok(Some((head, len)))
}

/// How the client's copy of the body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFraming {
    None,
    Length(u64),
    Chunked,
    /// Ends when we close (an HTTP/1.0 client of a body of unknown length).
    Close,
}

impl ClientFraming {
    /// The framing for a client of HTTP/1.`minor` of an upstream body.
    pub fn for_client(upstream: ResponseFraming, minor: u8) -> Self {
        match upstream {
            ResponseFraming::None => Self::None,
            ResponseFraming::Length(n) => Self::Length(n),
            ResponseFraming::Chunked | ResponseFraming::UntilClose if minor >= 1 => Self::Chunked,
            ResponseFraming::Chunked | ResponseFraming::UntilClose => Self::Close,
        }
    }
}

/// What the client side of a response needs to know.
pub struct ClientSide<'a> {
    /// The client reached us over TLS (cookies get `Secure`).
    pub tls: bool,
    /// The client's `Origin`, if it sent one.
    pub origin: Option<&'a [u8]>,
    /// The upstream's origin (what `Access-Control-Allow-Origin` is
    /// rewritten from).
    pub upstream_origin: &'a str,
    pub framing: ClientFraming,
    /// We close the client connection after this response.
    pub close: bool,
    /// An HTTP/1.0 client asked for keep-alive and gets it.
    pub keep_alive_10: bool,
    /// The `Date` to send when the upstream sent none.
    pub date: &'a str,
    /// The client's `Host` (a cookie's `Domain=` is rewritten to it).
    pub client_host: Option<&'a str>,
    /// The body is encoded on its way: `Content-Encoding` is added, the
    /// ETag made weak (the bytes differ, the representation does not, so
    /// a client's `If-None-Match` still means something to the upstream),
    /// `Accept-Ranges` dropped.
    pub encoding: Option<Coding>,
    /// Add `Accept-Encoding` to `Vary` (the answer depends on it here).
    pub vary_encoding: bool,
}

impl UpstreamHead {
    /// The first value of a field, by case-insensitive name.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether the body may be encoded by us on its way: a 200 of a
    /// listed type, not encoded already, not a range, not marked
    /// `no-transform`, and not known to be outside `min_size..=max_size`
    /// (a body of unknown length streams, so its size does not matter).
    /// `head_request`: the answer to a HEAD, judged by the GET it stands
    /// for (its `Content-Length`), so both get the same head.
    pub fn encodable(
        &self,
        types: &[String],
        min_size: u64,
        max_size: u64,
        head_request: bool,
    ) -> bool {
        let text = |name: &str| self.field(name).and_then(|v| std::str::from_utf8(v).ok());
        let length = if head_request {
            text("content-length").and_then(|v| v.trim().parse::<u64>().ok())
        } else {
            match self.framing {
                ResponseFraming::None => return false,
                ResponseFraming::Length(n) => Some(n),
                ResponseFraming::Chunked | ResponseFraming::UntilClose => None,
            }
        };
        self.status == 200
            && length.is_none_or(|n| n >= min_size.max(1) && n <= max_size)
            && text("content-encoding").is_none_or(|v| v.trim().eq_ignore_ascii_case("identity"))
            && self.field("content-range").is_none()
            && !text("cache-control").is_some_and(crate::http::coding::no_transform)
            && text("content-type").is_some_and(|t| crate::compress::eligible_type(t, types))
    }
}

/// Appends the head the client gets for the upstream's `up`.
pub fn response_head(up: &UpstreamHead, side: &ClientSide<'_>, out: &mut Vec<u8>) {
    let _ = write!(
        ByteWriter(out),
        "HTTP/1.1 {} {}\r\n",
        up.status,
        if up.reason().is_empty() {
            crate::http::Status::from_code(up.status).reason()
        } else {
            up.reason()
        }
    );
    let switching = up.status == 101;
    let mut dated = false;
    let mut varied = false;
    for (name, value) in up.headers() {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if switching && is("upgrade") {
            push_field(out, name, value);
            continue;
        }
        if is_hop_by_hop(name) || connection_names(up.headers(), name) {
            continue;
        }
        if side.encoding.is_some() {
            if is("accept-ranges") || is("content-encoding") {
                continue;
            }
            if is("etag") {
                if value.starts_with(b"W/") {
                    push_field(out, name, value);
                } else {
                    let mut weak = b"W/".to_vec();
                    weak.extend_from_slice(value);
                    push_field(out, name, &weak);
                }
                continue;
            }
        }
        if side.vary_encoding && is("vary") {
            let listed =
                std::str::from_utf8(value).is_ok_and(crate::http::coding::varies_on_encoding);
            if listed {
                push_field(out, name, value);
            } else {
                let mut v = value.to_vec();
                v.extend_from_slice(b", Accept-Encoding");
                push_field(out, name, &v);
            }
            varied = true;
            continue;
        }
        if is("content-length") {
            // Kept as the upstream said only where there is no body to
            // frame (HEAD, 304): it describes the body of a GET (unless we
            // encode that body: then its length is not known).
            if side.framing == ClientFraming::None && up.status != 204 && side.encoding.is_none() {
                push_field(out, name, value);
            }
        } else if is("date") {
            dated = true;
            push_field(out, name, value);
        } else if is("access-control-allow-origin") {
            match side.origin {
                Some(origin) if value.eq_ignore_ascii_case(side.upstream_origin.as_bytes()) => {
                    push_field(out, name, origin);
                }
                _ => push_field(out, name, value),
            }
        } else if is("set-cookie") {
            let mut v = cookie_domain(value, side.client_host);
            if side.tls && !cookie_is_secure(&v) {
                v.extend_from_slice(b"; Secure");
            }
            push_field(out, name, &v);
        } else {
            push_field(out, name, value);
        }
    }
    if !dated {
        push_field(out, "Date", side.date.as_bytes());
    }
    if let Some(coding) = side.encoding {
        push_field(out, "Content-Encoding", coding.token().as_bytes());
    }
    if side.vary_encoding && !varied {
        push_field(out, "Vary", b"Accept-Encoding");
    }
    match side.framing {
        ClientFraming::Length(n) => push_field(out, "Content-Length", n.to_string().as_bytes()),
        ClientFraming::Chunked => push_field(out, "Transfer-Encoding", b"chunked"),
        ClientFraming::None | ClientFraming::Close => {}
    }
    if switching {
        push_field(out, "Connection", b"upgrade");
    } else if side.close || side.framing == ClientFraming::Close {
        push_field(out, "Connection", b"close");
    } else if side.keep_alive_10 {
        push_field(out, "Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// A `Set-Cookie` value with its `Domain=` attribute naming the host the
/// client asked for (without a port); unchanged without one, or when that
/// host is an IPv6 address (no cookie domain can name it).
fn cookie_domain(value: &[u8], client_host: Option<&str>) -> Vec<u8> {
    let host = client_host
        .filter(|h| !h.starts_with('['))
        .map(|h| h.split_once(':').map_or(h, |(name, _)| name))
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b';'));
    let Some(host) = host else {
        return value.to_vec();
    };
    let mut out = Vec::with_capacity(value.len() + host.len());
    for (i, attr) in value.split(|b| *b == b';').enumerate() {
        if i > 0 {
            out.push(b';');
        }
        let trimmed = attr.trim_ascii_start();
        let is_domain = i > 0
            && trimmed
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"domain="));
        if is_domain {
            out.extend_from_slice(&attr[..attr.len() - trimmed.len()]);
            out.extend_from_slice(b"Domain=");
            out.extend_from_slice(host.as_bytes());
        } else {
            out.extend_from_slice(attr);
        }
    }
    out
}

/// Whether a `Set-Cookie` value already has the `Secure` attribute.
fn cookie_is_secure(value: &[u8]) -> bool {
    value
        .split(|b| *b == b';')
        .skip(1)
        .any(|attr| attr.trim_ascii().eq_ignore_ascii_case(b"secure"))
}

/// The size line of a chunk of `len` bytes.
pub fn chunk_start(len: usize, out: &mut Vec<u8>) {
    let _ = write!(ByteWriter(out), "{len:x}\r\n");
}

/// The end of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_head;

    fn target(json: &str) -> ProxyTarget {
        ProxyTarget::parse(json.as_bytes()).unwrap()
    }

    fn forwarded(raw: &str, tls: bool) -> String {
        let req = test_head(raw);
        let t = target(r#"{"target":"10.0.0.9","port":8080}"#);
        let fwd = Forwarding {
            target: &t,
            client_tls: tls,
            peer: "198.18.0.7".parse().unwrap(),
            client: "198.18.0.8".parse().unwrap(),
        };
        let mut out = Vec::new();
        request_head(&req, &fwd, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn requests_lose_hop_by_hop_fields_and_say_who_asked() {
        let text = forwarded(
            "POST /a?b=1 HTTP/1.1\r\nHost: site.example\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\n\
             Transfer-Encoding: chunked\r\nX-Forwarded-For: 203.0.113.1\r\nX-Real-IP: 1.1.1.1\r\n\
             X-Client-IP: 1.1.1.1\r\nOrigin: https://site.example\r\nReferer: https://site.example/page?q=1\r\n\
             Expect: 100-continue\r\nCookie: a=b\r\n\r\n",
            true,
        );
        assert!(
            text.starts_with("POST /a?b=1 HTTP/1.1\r\nhost: 10.0.0.9:8080\r\n"),
            "{text}"
        );
        for gone in [
            "x-secret",
            "keep-alive",
            "te:",
            "proxy-authorization",
            "expect",
            "1.1.1.1",
        ] {
            assert!(
                !text.to_ascii_lowercase().contains(gone),
                "{gone} in {text}"
            );
        }
        for kept in [
            "cookie: a=b\r\n",
            "origin: http://10.0.0.9:8080\r\n",
            "referer: http://10.0.0.9:8080/page?q=1\r\n",
            "x-forwarded-for: 203.0.113.1, 198.18.0.7\r\n",
            "x-forwarded-host: site.example\r\n",
            "x-forwarded-proto: https\r\n",
            "x-real-ip: 198.18.0.8\r\n",
            "x-client-ip: 198.18.0.8\r\n",
            "transfer-encoding: chunked\r\n",
        ] {
            assert!(text.contains(kept), "{kept:?} not in {text}");
        }
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn upgrades_pass_and_lengths_are_ours() {
        let text = forwarded(
            "GET /ws HTTP/1.1\r\nHost: s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            false,
        );
        assert!(
            text.contains("connection: upgrade\r\nupgrade: websocket\r\n"),
            "{text}"
        );
        assert!(text.contains("x-forwarded-proto: http\r\n"));
        let text = forwarded(
            "PUT /x HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(text.contains("content-length: 0\r\n"), "{text}");
        let text = forwarded(
            "GET /x HTTP/1.1\r\nHost: s\r\nUpgrade: websocket\r\n\r\n",
            false,
        );
        assert!(
            !text.contains("upgrade"),
            "no Connection: upgrade, no upgrade: {text}"
        );
    }

    fn parse(raw: &str, method: Method) -> Result<UpstreamHead, &'static str> {
        parse_response(raw.as_bytes(), method, 8192).map(|r| r.unwrap().0)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::Get).unwrap();
        assert_eq!((h.framing, h.reusable), (ResponseFraming::Length(5), true));
        let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::Head).unwrap();
        assert_eq!(h.framing, ResponseFraming::None);
        let h = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Method::Get,
        )
        .unwrap();
        assert_eq!(h.framing, ResponseFraming::Chunked);
        let h = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            Method::Get,
        )
        .unwrap();
        assert_eq!((h.framing, h.reusable), (ResponseFraming::Chunked, false));
        let h = parse("HTTP/1.1 200 OK\r\n\r\n", Method::Get).unwrap();
        assert_eq!(
            (h.framing, h.reusable),
            (ResponseFraming::UntilClose, false)
        );
        let h = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::Get).unwrap();
        assert!(!h.reusable);
        let h = parse("HTTP/1.1 204 No Content\r\n\r\n", Method::Get).unwrap();
        assert_eq!((h.framing, h.reusable), (ResponseFraming::None, true));
        let h = parse(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            Method::Get,
        )
        .unwrap();
        assert!(!h.reusable);
        let h = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
            Method::Get,
        )
        .unwrap();
        assert_eq!(h.framing, ResponseFraming::Length(7));
    }

    #[test]
    fn malformed_responses_are_errors() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        ] {
            assert!(parse(raw, Method::Get).is_err(), "{raw:?}");
        }
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(
            parse_response(big.as_bytes(), Method::Get, 8192).err(),
            Some("response head too large")
        );
        let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(parse_response(raw.as_bytes(), Method::Get, 65536).is_err());
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nX: y", Method::Get, 8192),
            Ok(None)
        );
    }

    #[test]
    fn client_heads_rewrite_cors_and_cookies() {
        let up = parse(
            "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 1\r\n\
             Transfer-Encoding: chunked\r\nAccess-Control-Allow-Origin: http://10.0.0.9:8080\r\n\
             Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; secure\r\nServer: up\r\n\
             Set-Cookie: c=3; domain=10.0.0.9; Path=/\r\nSet-Cookie: d=x=domain=y\r\n\r\n",
            Method::Get,
        )
        .unwrap();
        let side = ClientSide {
            tls: true,
            origin: Some(b"https://site.example"),
            upstream_origin: "http://10.0.0.9:8080",
            framing: ClientFraming::Chunked,
            close: false,
            keep_alive_10: false,
            date: "D",
            client_host: Some("Site.example:8443"),
            encoding: None,
            vary_encoding: false,
        };
        let mut out = Vec::new();
        response_head(&up, &side, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        for kept in [
            "Access-Control-Allow-Origin: https://site.example\r\n",
            "Set-Cookie: a=1; Path=/; Secure\r\n",
            "Set-Cookie: b=2; secure\r\n",
            "Set-Cookie: c=3; Domain=Site.example; Path=/; Secure\r\n",
            "Set-Cookie: d=x=domain=y; Secure\r\n",
            "Server: up\r\n",
            "Date: D\r\n",
            "Transfer-Encoding: chunked\r\n",
        ] {
            assert!(text.contains(kept), "{kept:?} not in {text}");
        }
        for gone in ["X-Hop", "Keep-Alive", "Connection"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert_eq!(text.matches("Transfer-Encoding").count(), 1);

        // Plain HTTP: cookies as they were; a third-party ACAO untouched.
        let up = parse(
            "HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: https://cdn.example\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\n\r\n",
            Method::Get,
        )
        .unwrap();
        let side = ClientSide {
            tls: false,
            framing: ClientFraming::Length(0),
            close: true,
            ..side
        };
        let mut out = Vec::new();
        response_head(&up, &side, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Access-Control-Allow-Origin: https://cdn.example\r\n"));
        assert!(text.contains("Set-Cookie: a=1\r\n"));
        assert!(
            text.contains("Content-Length: 0\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn encoded_bodies_change_the_head_they_travel_under() {
        let types = vec![String::from("text/*")];
        let head = |extra: &str| {
            parse(
                &format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{extra}\r\n"),
                Method::Get,
            )
            .unwrap()
        };
        let get = |h: &UpstreamHead, types: &[String]| h.encodable(types, 512, 4096, false);
        assert!(get(&head("Content-Length: 2000\r\n"), &types));
        assert!(get(&head("Transfer-Encoding: chunked\r\n"), &types));
        assert!(!get(&head("Content-Length: 100\r\n"), &types));
        assert!(
            !get(&head("Content-Length: 5000\r\n"), &types),
            "above max_size"
        );
        assert!(!head("Content-Length: 0\r\n").encodable(&types, 0, 4096, false));
        let encoded = head("Content-Length: 2000\r\nContent-Encoding: gzip\r\n");
        assert!(!get(&encoded, &types));
        let kept = head("Content-Length: 2000\r\nCache-Control: public, no-transform\r\n");
        assert!(!get(&kept, &types));
        assert!(!get(
            &head("Content-Length: 2000\r\n"),
            &[String::from("image/*")]
        ));
        // A HEAD is judged by the length its GET would have.
        let answer = parse(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2000\r\n\r\n",
            Method::Head,
        )
        .unwrap();
        assert!(answer.encodable(&types, 512, 4096, true));
        assert!(!answer.encodable(&types, 512, 1000, true));

        let up = head(
            "Content-Length: 2000\r\nETag: \"v1\"\r\nAccept-Ranges: bytes\r\nVary: Cookie\r\n",
        );
        let side = ClientSide {
            tls: false,
            origin: None,
            upstream_origin: "http://up",
            framing: ClientFraming::Chunked,
            close: false,
            keep_alive_10: false,
            date: "D",
            client_host: None,
            encoding: Some(Coding::Gzip),
            vary_encoding: true,
        };
        let mut out = Vec::new();
        response_head(&up, &side, &mut out);
        let text = String::from_utf8(out).unwrap();
        for kept in [
            "ETag: W/\"v1\"\r\n",
            "Vary: Cookie, Accept-Encoding\r\n",
            "Content-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked\r\n",
        ] {
            assert!(text.contains(kept), "{kept:?} not in {text}");
        }
        for gone in ["Accept-Ranges", "Content-Length"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
    }
}
