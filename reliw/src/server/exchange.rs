//! One request, from its parsed head to the last byte of its answer: the
//! site's front steps decide (answered already, forwarded, or served
//! here); the body is read here or streamed on by `forward`; the response
//! goes out ([`write_response`], where HEAD loses its body, once for every
//! kind of response). What [`run`] returns, the connection driver hands to
//! [`Conn::finish`](super::finish): every request, whatever its exit, is
//! counted, timed and logged exactly once.

use std::net::{IpAddr, SocketAddr};

use tokio::sync::watch;
use tokio::time::Instant;

use super::deadline::{ReadError, read_until};
use super::forward::{ClientInfo, Outcome, forward};
use super::transport::{Connect, Transport};
use super::upstream::Upstreams;
use super::worker::{BodySink, Worker};
use crate::config::Config;
use crate::http::{BodyDecoder, Method, RequestHead, Status};
use crate::site::{Body, Front, Response};

/// Largest buffered input we keep between reads (a head plus some body).
pub(super) const MAX_BUFFER: usize = 1 << 20;

/// What every request of one connection shares.
pub(super) struct Conn<'a, U> {
    pub(super) worker: &'a Worker,
    /// The config this connection started with.
    pub(super) config: &'a Config,
    pub(super) peer: SocketAddr,
    pub(super) tls: bool,
    pub(super) upstreams: &'a Upstreams<U>,
}

/// One request as `finish` sees it.
pub(super) struct Exchange<'h> {
    /// `None`: the head could not be parsed.
    pub(super) head: Option<&'h RequestHead>,
    /// When its first byte arrived.
    pub(super) started: Instant,
    /// The client (the peer, or what a trusted proxy said), worked out
    /// once: the WAF, rate limits and the access log all use it.
    pub(super) client: IpAddr,
    /// Its number on this connection, from 1.
    pub(super) number: u64,
}

/// How a request ended.
pub(super) struct Done {
    /// As logged: what was sent, or 499 when the client left first.
    pub(super) status: Status,
    /// Bytes written to the client, heads included.
    pub(super) bytes: u64,
    pub(super) next: Next,
    /// Forwarded for this host: counted in its metrics by `finish` (the
    /// site counts the requests it answers itself).
    pub(super) proxied: Option<String>,
}

/// What the connection does after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Read the next request.
    Continue,
    /// A final response went out: half-close and drain.
    Linger,
    /// Close now (the peer is gone, or the response was cut).
    Close,
    /// The client opened with the HTTP/2 preface (h2c, when enabled): the
    /// connection goes on as HTTP/2 from the bytes read so far.
    Http2,
}

/// What nginx logs for a request whose client left before the answer.
pub(super) const CLIENT_CLOSED: Status = Status::from_code(499);

impl<'h> Exchange<'h> {
    pub(super) fn new<U>(
        cx: &Conn<'_, U>,
        head: &'h RequestHead,
        started: Instant,
        number: u64,
    ) -> Self {
        let client = crate::client_ip::client_address(
            cx.peer.ip(),
            head,
            &cx.config.trusted_proxy_cidrs,
            cx.config.client_ip_header.name(),
        );
        Self {
            head: Some(head),
            started,
            client,
            number,
        }
    }
}

/// Runs one request whose head is parsed; `close`: the connection ends
/// after it whatever the response says.
pub(super) async fn run<T: Transport, U: Connect>(
    io: &mut T,
    buf: &mut Vec<u8>,
    cx: &Conn<'_, U>,
    ex: &Exchange<'_>,
    head: &RequestHead,
    close: bool,
    shutdown: &watch::Receiver<bool>,
) -> Done {
    let local = match cx.worker.site().front(head, ex.client, cx.config).await {
        Front::Proxy { target, host } => {
            let info = ClientInfo {
                peer: cx.peer,
                client: ex.client,
                tls: cx.tls,
                closing: close,
            };
            let outcome = forward(io, buf, head, &target, &info, cx.upstreams, cx.config).await;
            return proxied(io, cx, head, host.into_owned(), outcome, close).await;
        }
        Front::Respond(resp) => Err(resp),
        Front::Local(local) => Ok(local),
    };

    // The body, decoded as it arrives and handed on in pieces.
    let sink = match read_body(io, buf, head, cx.config, cx.worker).await {
        Ok(sink) => sink,
        Err(BodyStop::ClientGone) => return Done::gone(),
        Err(BodyStop::Bad(status, reason)) => {
            tracing::debug!(peer = %cx.peer, reason, "bad request body");
            return respond(io, Response::error(status), Some(head), true).await;
        }
    };
    // A shutdown during the body closes after it.
    let close = close || *shutdown.borrow();
    let resp = match local {
        Ok(local) => cx.worker.handle_local(head, local, sink, cx.config).await,
        Err(resp) => resp,
    };
    let resp = cx.worker.site().encode(head, resp, cx.config);
    respond(io, resp, Some(head), close).await
}

/// The end of a forwarded request.
async fn proxied<T: Transport, U>(
    io: &mut T,
    cx: &Conn<'_, U>,
    head: &RequestHead,
    host: String,
    outcome: Outcome,
    close: bool,
) -> Done {
    let counted = !matches!(outcome, Outcome::ClientGone);
    let mut done = match outcome {
        Outcome::Relayed {
            status,
            bytes,
            keep,
        } => Done {
            status,
            bytes,
            next: if keep { Next::Continue } else { Next::Linger },
            proxied: None,
        },
        Outcome::Cut { status, bytes } => Done {
            status,
            bytes,
            next: Next::Close,
            proxied: None,
        },
        Outcome::ClientGone => Done::gone(),
        Outcome::Failed { failure, body_read } => {
            let status = failure.status();
            let resp = cx
                .worker
                .site()
                .proxy_error(head, &host, status, cx.config)
                .await;
            let resp = cx.worker.site().encode(head, resp, cx.config);
            // A body left unread cannot be told from the next request.
            respond(io, resp, Some(head), close || !body_read).await
        }
    };
    // A client that left is logged (499) but, as on the local path, not
    // counted: no response went out.
    done.proxied = counted.then_some(host);
    done
}

impl Done {
    pub(super) fn gone() -> Self {
        Self {
            status: CLIENT_CLOSED,
            bytes: 0,
            next: Next::Close,
            proxied: None,
        }
    }
}

/// Why a request body could not be read.
enum BodyStop {
    ClientGone,
    Bad(Status, &'static str),
}

/// Reads the body of `head` from `buf` and the socket, handing each piece
/// to the worker's sink; leaves whatever follows (a pipelined request) in
/// `buf`.
async fn read_body<T: Transport>(
    io: &mut T,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    config: &Config,
    worker: &Worker,
) -> Result<BodySink, BodyStop> {
    let mut decoder = BodyDecoder::new(head.body, config.max_body_size)
        .map_err(|e| BodyStop::Bad(e.status, e.reason))?;
    if head.expect_continue && !decoder.is_done() {
        let (res, _) = io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        res.map_err(|_| BodyStop::ClientGone)?;
    }
    let deadline = Instant::now() + config.body_timeout();
    let mut sink = worker.body_sink(head);
    loop {
        if !buf.is_empty() {
            let out = decoder
                .decode(buf)
                .map_err(|e| BodyStop::Bad(e.status, e.reason))?;
            for range in out.data {
                sink.piece(&buf[range]);
            }
            buf.drain(..out.consumed);
        }
        if decoder.is_done() {
            return Ok(sink);
        }
        let (result, b) = read_until(io, std::mem::take(buf), deadline, None).await;
        *buf = b;
        match result {
            Ok(0) | Err(ReadError::Io | ReadError::Shutdown) => return Err(BodyStop::ClientGone),
            Ok(_) => {}
            Err(ReadError::Timeout) => {
                return Err(BodyStop::Bad(
                    Status::REQUEST_TIMEOUT,
                    "request body timeout",
                ));
            }
        }
        if buf.len() > MAX_BUFFER {
            return Err(BodyStop::Bad(Status::PAYLOAD_TOO_LARGE, "buffer overflow"));
        }
    }
}

/// Writes a response (`close`: with `Connection: close`, and the
/// connection lingers after it); a HEAD's body is dropped here.
pub(super) async fn respond<T: Transport>(
    io: &mut T,
    resp: Response,
    request: Option<&RequestHead>,
    close: bool,
) -> Done {
    let status = resp.head.status;
    let close = close || resp.head.close;
    let (written, bytes) = write_response(io, resp, request, close).await;
    let next = match (written, close) {
        (false, _) => Next::Close,
        (true, true) => Next::Linger,
        (true, false) => Next::Continue,
    };
    Done {
        status,
        bytes,
        next,
        proxied: None,
    }
}

/// Writes `resp`; whether it all went, and how many bytes were planned.
async fn write_response<T: Transport>(
    io: &mut T,
    resp: Response,
    request: Option<&RequestHead>,
    close: bool,
) -> (bool, u64) {
    let Response { mut head, body, .. } = resp;
    head.close = close;
    if let Some(req) = request
        && req.minor_version == 0
        && !head.close
    {
        head.keep_alive_10 = true;
    }
    let body = match request {
        Some(req) if req.method == Method::Head => Body::Empty,
        _ => body,
    };
    let mut out = Vec::with_capacity(512);
    super::date::with_date(|date| head.encode(date, &mut out));
    let (result, bytes) = match body {
        Body::Empty => {
            let n = out.len() as u64;
            let (r, _) = io.write_all(out).await;
            (r, n)
        }
        Body::Bytes(b) => {
            let n = (out.len() + b.len()) as u64;
            (io.write_head_body(out, b).await, n)
        }
        Body::File { file, start, len } => {
            let n = out.len() as u64 + len;
            (io.write_head_file(out, file, start, len).await, n)
        }
    };
    if let Err(e) = &result {
        tracing::debug!(error = %e, "write failed");
    }
    (result.is_ok(), bytes)
}
