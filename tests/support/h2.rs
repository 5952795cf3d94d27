//! HTTP/2 clients for the black-box tests: the `h2` crate over cleartext
//! (h2c with prior knowledge) or TLS with ALPN, driven by a current-thread
//! runtime so tests stay synchronous; and [`Raw`], a frame-level client
//! for the hardening tests, which sends what no well-behaved client would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::server::Response;

/// One HTTP/2 connection.
pub struct H2 {
    rt: tokio::runtime::Runtime,
    send: h2::client::SendRequest<Bytes>,
    scheme: &'static str,
}

/// A request for [`H2::request`].
pub struct Req<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// Extra fields, as HTTP/1.1 header lines (`Name: value\r\n`...).
    pub headers: &'a str,
    pub body: &'a [u8],
}

impl<'a> Req<'a> {
    pub fn get(host: &'a str, path: &'a str) -> Self {
        Self {
            method: "GET",
            host,
            path,
            headers: "",
            body: b"",
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl H2 {
    /// Cleartext HTTP/2 with prior knowledge.
    pub fn h2c(addr: SocketAddr) -> Self {
        let rt = runtime();
        let send = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (send, conn) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            send
        });
        Self {
            rt,
            send,
            scheme: "http",
        }
    }

    /// HTTP/2 over TLS: `None` when the server did not choose `h2`.
    pub fn tls(addr: SocketAddr, name: &str, config: Arc<rustls::ClientConfig>) -> Option<Self> {
        let rt = runtime();
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let send = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .unwrap();
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return None;
            }
            let (send, conn) = h2::client::handshake(tls).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Some(send)
        })?;
        Some(Self {
            rt,
            send,
            scheme: "https",
        })
    }

    /// One request; `Err` when the stream or connection failed (a reset).
    pub fn request(&mut self, req: &Req<'_>) -> Result<Response, h2::Error> {
        let send = self.send.clone();
        let scheme = self.scheme;
        self.rt.block_on(exchange(send, scheme, req))
    }

    /// Requests on concurrent streams of this connection.
    pub fn concurrent(&mut self, reqs: &[Req<'_>]) -> Vec<Result<Response, h2::Error>> {
        let scheme = self.scheme;
        let send = &self.send;
        self.rt.block_on(async {
            let mut handles = Vec::new();
            for req in reqs {
                handles.push(exchange(send.clone(), scheme, req));
            }
            let mut out = Vec::new();
            // Started together (each future's first poll sends its HEADERS).
            let joined = futures_join(handles).await;
            out.extend(joined);
            out
        })
    }
}

/// Polls all futures to completion together.
async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

async fn exchange(
    send: h2::client::SendRequest<Bytes>,
    scheme: &str,
    req: &Req<'_>,
) -> Result<Response, h2::Error> {
    // A host that cannot be an authority goes in a Host field instead.
    let uri = format!("{scheme}://{}{}", req.host, req.path);
    let mut builder = http::Request::builder().method(req.method);
    builder = match uri.parse::<http::Uri>() {
        Ok(uri) if uri.authority().is_some() => builder.uri(uri),
        _ => builder.uri(req.path).header("host", req.host),
    };
    for line in req.headers.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap();
        builder = builder.header(name.trim(), value.trim());
    }
    let request = builder.body(()).unwrap();
    let mut send = send.ready().await?;
    let (answer, mut stream) = send.send_request(request, req.body.is_empty())?;
    if !req.body.is_empty() {
        stream.send_data(Bytes::copy_from_slice(req.body), true)?;
    }
    let answer = answer.await?;
    let (parts, mut recv) = answer.into_parts();
    let mut body = Vec::new();
    while let Some(piece) = recv.data().await {
        let piece = piece?;
        let _ = recv.flow_control().release_capacity(piece.len());
        body.extend_from_slice(&piece);
    }
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    Ok(Response {
        status: parts.status.as_u16(),
        headers,
        body,
    })
}

/// One request on a new h2c connection.
pub fn request(addr: SocketAddr, req: &Req<'_>) -> Response {
    H2::h2c(addr).request(req).unwrap()
}

/// The HTTP/2 connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types the hardening tests send or look for.
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
}

/// A frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// A frame-level h2c client over a plain socket.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut raw = Self {
            stream,
            buf: Vec::new(),
        };
        raw.send_bytes(PREFACE);
        raw.send(kind::SETTINGS, 0, 0, &[]);
        raw
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Sends one frame; whether the socket took it.
    pub fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> bool {
        self.send_bytes(&frame(kind, flags, stream, payload))
    }

    /// A GET of `path` on `stream` (HEADERS with END_HEADERS; END_STREAM
    /// unless `body_follows`).
    pub fn get(&mut self, stream: u32, path: &str, body_follows: bool) -> bool {
        let flags = if body_follows { 0x4 } else { 0x5 };
        let block = get_block("localhost", path, if body_follows { "POST" } else { "GET" });
        self.send(kind::HEADERS, flags, stream, &block)
    }

    /// The next frame within `limit`; `None` on timeout or close.
    pub fn frame(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = Instant::now() + limit;
        loop {
            if self.buf.len() >= 9 {
                let len = usize::from(self.buf[0]) << 16
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads frames until a GOAWAY (its error code) or until `limit`
    /// passes or the connection closes (`None`).
    pub fn goaway(&mut self, limit: Duration) -> Option<u32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frame(left) {
                Some(f) if f.kind == kind::GOAWAY => {
                    return Some(u32::from_be_bytes(f.payload[4..8].try_into().unwrap()));
                }
                Some(_) => {}
                None => return None,
            }
        }
        None
    }

    /// Whether the server closed the connection within `limit`.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block for `method path` at `authority` over http: static
/// table entries and literals without indexing, no Huffman.
pub fn get_block(authority: &str, path: &str, method: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.push(if method == "POST" { 0x83 } else { 0x82 });
    b.push(0x86); // :scheme http
    literal(&mut b, 4, path); // :path
    literal(&mut b, 1, authority); // :authority
    b
}

/// A literal field without indexing, its name from static entry `index`.
fn literal(b: &mut Vec<u8>, index: u8, value: &str) {
    b.push(index);
    assert!(value.len() < 127, "short values only");
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
}
