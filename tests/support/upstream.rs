//! A scripted upstream for the proxy tests: a real HTTP/1.1 server on
//! loopback (plain or TLS), one thread per connection, whose answers are
//! picked by path. It records what it saw: connections, request heads and
//! body sizes.
//!
//! Paths: `/echo` (the request head as the body, cookies, CORS and
//! hop-by-hop fields in the response), `/chunked` (extensions and
//! trailers), `/until-close`, `/early-hints`, `/big/<n>` (n pattern bytes),
//! `/upload` (answers "<bytes> <checksum>"), `/ws` (101, then echo),
//! `/hang`, `/slow-body`, `/garbage`, `/huge-head`, `/bad-chunk`,
//! `/bad-chunk-first`, `/bad-length`, `/close-after`, `/arm-drop` (the connection's next
//! request is dropped unanswered); anything else: "ok <path>".

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The head, as text (names as sent).
    pub head: String,
    pub body_bytes: u64,
    /// Which connection (1-based, in accept order).
    pub connection: usize,
}

impl Seen {
    /// A field's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// The byte at `i` of a `/big/<n>` body.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// The checksum `/upload` answers with (and tests compute the same way).
pub fn checksum(acc: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(acc, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)))
}

struct State {
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// A running upstream; stops on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

impl Upstream {
    /// A plain HTTP upstream.
    pub fn plain() -> Self {
        Self::start(None)
    }

    /// A TLS upstream presenting `config`'s certificate.
    pub fn tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::start(Some(config))
    }

    /// Accepts connections and never says a word (a TLS handshake that
    /// never completes, a response that never starts).
    pub fn silent() -> Self {
        Self::start_with(None, true)
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Self::start_with(tls, false)
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>, silent: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            connections: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !st.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let n = st.connections.fetch_add(1, Ordering::SeqCst) + 1;
                        sock.set_nonblocking(false).unwrap();
                        sock.set_nodelay(true).unwrap();
                        if silent {
                            held.push(sock);
                            continue;
                        }
                        let st = Arc::clone(&st);
                        let tls = tls.clone();
                        std::thread::spawn(move || {
                            sock.set_read_timeout(Some(Duration::from_secs(20)))
                                .unwrap();
                            match tls {
                                None => serve(sock, n, &st),
                                Some(config) => {
                                    let conn = rustls::ServerConnection::new(config).unwrap();
                                    serve(rustls::StreamOwned::new(conn, sock), n, &st);
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            addr,
            state,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads until `buf` holds a whole head; its length, or `None` at EOF.
fn read_head(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Takes `n` bytes from `buf` then the stream, feeding them to `sink`.
fn take_bytes(
    s: &mut impl Read,
    buf: &mut Vec<u8>,
    mut n: u64,
    sink: &mut impl FnMut(&[u8]),
) -> bool {
    let from_buf = (n as usize).min(buf.len());
    sink(&buf[..from_buf]);
    buf.drain(..from_buf);
    n -= from_buf as u64;
    let mut chunk = vec![0u8; 65536];
    while n > 0 {
        let want = (n as usize).min(chunk.len());
        match s.read(&mut chunk[..want]) {
            Ok(0) | Err(_) => return false,
            Ok(got) => {
                sink(&chunk[..got]);
                n -= got as u64;
            }
        }
    }
    true
}

/// One line (without CRLF) from `buf` then the stream.
fn take_line(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Some(line);
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve<S: Stream>(mut s: S, connection: usize, st: &State) {
    let mut buf = Vec::new();
    let mut drop_next = false;
    loop {
        let Some(len) = read_head(&mut s, &mut buf) else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..len]).into_owned();
        buf.drain(..len);
        if drop_next {
            return;
        }
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        if !matches!(
            req.parse(head.as_bytes()),
            Ok(httparse::Status::Complete(_))
        ) {
            return;
        }
        let method = req.method.unwrap_or("").to_owned();
        let path = req.path.unwrap_or("").to_owned();
        let field = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let length: Option<u64> = field("content-length").and_then(|v| v.parse().ok());
        let chunked = field("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let close = field("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let origin = field("origin");
        let (mut bytes, mut sum) = (0u64, 0u64);
        let mut sink = |d: &[u8]| {
            bytes += d.len() as u64;
            sum = checksum(sum, d);
        };
        if let Some(n) = length {
            if !take_bytes(&mut s, &mut buf, n, &mut sink) {
                return;
            }
        } else if chunked {
            loop {
                let Some(line) = take_line(&mut s, &mut buf) else {
                    return;
                };
                let size = line.split(';').next().unwrap_or("").trim();
                let Ok(size) = u64::from_str_radix(size, 16) else {
                    return;
                };
                if size == 0 {
                    while take_line(&mut s, &mut buf).is_some_and(|l| !l.is_empty()) {}
                    break;
                }
                if !take_bytes(&mut s, &mut buf, size, &mut sink) {
                    return;
                }
                take_line(&mut s, &mut buf);
            }
        }
        st.seen.lock().unwrap().push(Seen {
            head: head.clone(),
            body_bytes: bytes,
            connection,
        });
        let head_only = method == "HEAD";
        let ok = match path.split('?').next().unwrap_or("") {
            "/echo" => {
                let acao = origin
                    .map(|o| format!("Access-Control-Allow-Origin: {o}\r\n"))
                    .unwrap_or_default();
                let extra = format!(
                    "Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; HttpOnly\r\n\
                     Set-Cookie: c=3; Domain=upstream.internal; Path=/\r\n{acao}\
                     Connection: X-Up-Hop\r\nX-Up-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Up: yes\r\n"
                );
                reply(&mut s, head_only, "200 OK", &extra, head.as_bytes())
            }
            "/chunked" => {
                let body = "5;ext=1\r\nhello\r\n7 ; name=\"v\"\r\n, world\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n";
                let out = format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n{body}"
                );
                s.write_all(out.as_bytes()).is_ok()
            }
            "/until-close" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this, until the close");
                let _ = s.flush();
                return;
            }
            "/early-hints" => {
                let _ = s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n");
                reply(&mut s, head_only, "200 OK", "", b"after the hints")
            }
            "/upload" => reply(
                &mut s,
                head_only,
                "200 OK",
                "",
                format!("{bytes} {sum}").as_bytes(),
            ),
            "/ws" => {
                if field("upgrade").as_deref() != Some("websocket") {
                    reply(&mut s, head_only, "400 Bad Request", "", b"no upgrade")
                } else {
                    let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
                    let _ = s.flush();
                    if !buf.is_empty() {
                        let _ = s.write_all(&buf);
                    }
                    let mut chunk = [0u8; 4096];
                    loop {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&chunk[..n]).is_err() || s.flush().is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
            "/hang" => {
                std::thread::sleep(Duration::from_secs(8));
                return;
            }
            "/slow-body" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
                let _ = s.flush();
                std::thread::sleep(Duration::from_secs(8));
                return;
            }
            "/garbage" => {
                let _ = s.write_all(b"this is not HTTP\r\n\r\n");
                return;
            }
            "/huge-head" => {
                let big = "x".repeat(200 * 1024);
                let _ = s.write_all(
                    format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n")
                        .as_bytes(),
                );
                return;
            }
            "/bad-chunk-first" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
                let _ = s.flush();
                std::thread::sleep(Duration::from_millis(500));
                return;
            }
            "/bad-chunk" => {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                );
                let _ = s.flush();
                std::thread::sleep(Duration::from_millis(200));
                let _ = s.write_all(b"zz\r\n");
                let _ = s.flush();
                std::thread::sleep(Duration::from_millis(500));
                return;
            }
            "/bad-length" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello");
                return;
            }
            "/close-after" => {
                reply(
                    &mut s,
                    head_only,
                    "200 OK",
                    "Connection: close\r\n",
                    b"closing",
                );
                return;
            }
            "/arm-drop" => {
                drop_next = true;
                reply(&mut s, head_only, "200 OK", "", b"armed")
            }
            p if p.starts_with("/text/") => {
                let n: usize = p["/text/".len()..].parse().unwrap_or(0);
                reply(
                    &mut s,
                    head_only,
                    "200 OK",
                    "Content-Type: text/html; charset=utf-8\r\nETag: \"v1\"\r\n\
                     Accept-Ranges: bytes\r\nVary: Cookie\r\n",
                    &text_body(n),
                )
            }
            "/text-stream" => {
                // Three pieces a little apart, of unknown total length.
                let mut ok = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                          Transfer-Encoding: chunked\r\n\r\n",
                    )
                    .is_ok();
                for piece in text_body(3000).chunks(1000) {
                    let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                    chunk.extend_from_slice(piece);
                    chunk.extend_from_slice(b"\r\n");
                    ok = ok && s.write_all(&chunk).is_ok() && s.flush().is_ok();
                    std::thread::sleep(Duration::from_millis(50));
                }
                ok && s.write_all(b"0\r\n\r\n").is_ok() && s.flush().is_ok()
            }
            "/pre-encoded" => reply(
                &mut s,
                head_only,
                "200 OK",
                "Content-Type: text/html\r\nContent-Encoding: gzip\r\n",
                &text_body(2000),
            ),
            p if p.starts_with("/big/") => {
                let n: u64 = p["/big/".len()..].parse().unwrap_or(0);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
                if !head_only {
                    let mut chunk = vec![0u8; 256 * 1024];
                    let mut i = 0u64;
                    while i < n {
                        let len = (n - i).min(chunk.len() as u64) as usize;
                        for (k, b) in chunk[..len].iter_mut().enumerate() {
                            *b = pattern(i + k as u64);
                        }
                        if s.write_all(&chunk[..len]).is_err() {
                            return;
                        }
                        i += len as u64;
                    }
                }
                s.flush().is_ok()
            }
            other => reply(
                &mut s,
                head_only,
                "200 OK",
                "",
                format!("ok {other}").as_bytes(),
            ),
        };
        if !ok || close {
            return;
        }
    }
}

/// Writes a response with a Content-Length body (no body for HEAD).
/// `n` bytes of text that compresses well (what `/text/<n>` sends).
pub fn text_body(n: usize) -> Vec<u8> {
    b"<p>proxied text, the same line again and again</p>\n"
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

fn reply(s: &mut impl Write, head_only: bool, status: &str, extra: &str, body: &[u8]) -> bool {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    s.write_all(&out).is_ok() && s.flush().is_ok()
}
