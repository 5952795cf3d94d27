//! One connection: read → parse (sans-IO codec) → body → handler → write,
//! in a loop, with the keep-alive, header and body timers armed around each
//! read. Responses go out strictly in request order, so pipelined requests
//! are simply the next head already waiting in the buffer.
//!
//! Every exit path of a request writes an access-log line. Errors of this
//! connection are logged here and never reach the accept loop.

use std::net::SocketAddr;
use std::rc::Rc;
use tokio::time::Instant;

use tokio::sync::watch;

use super::forward::{ClientInfo, Outcome, forward};
use super::transport::{Connect, Transport};
use super::upstream::Upstreams;
use super::worker::Worker;
use crate::http::{BodyDecoder, HeadError, Limits, Status, parse_head};
use crate::site::{Body, Front, Response};

/// Largest buffered input we keep between reads (a head plus some body).
const MAX_BUFFER: usize = 1 << 20;

/// Why the driver stopped reading: a status to send first, or just close.
enum Stop {
    /// Peer closed or reset, or we are shutting down while idle.
    Quiet,
    /// Send this error, then close.
    Error(Status, &'static str),
}

/// How a connection ends.
enum End {
    /// Nothing more to say (peer gone, idle timeout, shutdown while idle).
    Close,
    /// We sent a final response: half-close, then drain what the client
    /// still sends, so closing does not reset the connection (a reset can
    /// destroy the response before the client reads it).
    Linger,
}

/// How long, and how much, we read and discard after our last response.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

pub(crate) async fn serve<T: Transport, U: Connect>(
    mut io: T,
    peer: SocketAddr,
    worker: Rc<Worker>,
    upstreams: &Upstreams<U>,
    shutdown: watch::Receiver<bool>,
    tls: bool,
) {
    let side = Side {
        peer,
        tls,
        upstreams,
    };
    if let End::Linger = drive(&mut io, &side, worker, shutdown).await {
        io.finish().await;
        io.shutdown_write();
        let deadline = Instant::now() + LINGER_TIME;
        let mut drained = 0;
        let mut scratch = Vec::with_capacity(16 * 1024);
        while drained < LINGER_BYTES {
            scratch.clear();
            let (result, b) = read_until(&mut io, scratch, deadline, None).await;
            scratch = b;
            match result {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
    io.shutdown_both();
}

/// The client side of a connection, and where its proxied requests go.
struct Side<'a, U> {
    peer: SocketAddr,
    tls: bool,
    upstreams: &'a Upstreams<U>,
}

async fn drive<T: Transport, U: Connect>(
    io: &mut T,
    side: &Side<'_, U>,
    worker: Rc<Worker>,
    mut shutdown: watch::Receiver<bool>,
) -> End {
    let peer = side.peer;
    let config = worker.config();
    let who = Who {
        worker: &worker,
        config: &config,
        peer,
    };
    let limits = Limits {
        line: config.request_line_limit,
        head: config.request_head_limit,
        headers: config.max_header_count,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut served: u64 = 0;
    loop {
        // 1. The head.
        let (head, head_len, started) =
            match read_head(io, &mut buf, &limits, &config, &mut shutdown).await {
                Ok(h) => h,
                Err(Stop::Quiet) => return End::Close,
                Err(Stop::Error(status, reason)) => {
                    tracing::debug!(%peer, reason, "bad request head");
                    let resp = Response::error(status);
                    write_response(io, resp, &who, None, true, served).await;
                    return End::Linger;
                }
            };
        buf.drain(..head_len);
        served += 1;
        let cap = config.max_requests_per_connection;
        let close = !head.keep_alive || *shutdown.borrow() || (cap > 0 && served >= cap);

        // 2. Answered early, forwarded, or served here.
        let local = match worker.front(&head, peer, &config).await {
            Front::Proxy {
                target,
                host,
                client,
            } => {
                let info = ClientInfo {
                    peer,
                    client,
                    tls: side.tls,
                    closing: close,
                };
                let outcome =
                    forward(io, &mut buf, &head, &target, &info, side.upstreams, &config).await;
                let request = Some((&head, started));
                match outcome {
                    Outcome::Relayed {
                        status,
                        bytes,
                        keep,
                    } => {
                        worker.site().count_proxied(&head, &host, status);
                        worker.access_log(&config, request, peer, status, bytes, served);
                        if !keep {
                            return End::Linger;
                        }
                        continue;
                    }
                    Outcome::Cut { status, bytes } => {
                        worker.site().count_proxied(&head, &host, status);
                        worker.access_log(&config, request, peer, status, bytes, served);
                        return End::Close;
                    }
                    Outcome::Failed { status, body_read } => {
                        let resp = worker
                            .site()
                            .proxy_error(&head, &host, status, &config)
                            .await;
                        let close = close || !body_read;
                        let ok = write_response(io, resp, &who, request, close, served).await;
                        if !ok {
                            return End::Close;
                        }
                        if close {
                            return End::Linger;
                        }
                        continue;
                    }
                }
            }
            Front::Respond(resp) => Err(resp),
            Front::Local(local) => Ok(local),
        };

        // 3. The body, decoded as it arrives and handed on in pieces.
        let sink = match read_body(io, &mut buf, &head, &config, &worker).await {
            Ok(sink) => sink,
            Err(Stop::Quiet) => return End::Close,
            Err(Stop::Error(status, reason)) => {
                tracing::debug!(%peer, reason, "bad request body");
                let resp = Response::error(status);
                let request = Some((&head, started));
                write_response(io, resp, &who, request, true, served).await;
                return End::Linger;
            }
        };

        // 4. The response (a shutdown during the body closes after it).
        let close = close || *shutdown.borrow();
        let resp = match local {
            Ok(local) => worker.handle_local(&head, local, sink, &config).await,
            Err(resp) => resp,
        };
        let ok = write_response(io, resp, &who, Some((&head, started)), close, served).await;
        if !ok {
            return End::Close;
        }
        if close {
            return End::Linger;
        }
        if buf.capacity() > MAX_BUFFER {
            buf.shrink_to(16 * 1024);
        }
    }
}

/// Reads until `buf` starts with a whole head: idle (ended quietly by the
/// keep-alive timeout or shutdown) until the first byte, then against the
/// header timer, measured from that first byte. Returns the head, its
/// length and when it started.
async fn read_head<T: Transport>(
    io: &mut T,
    buf: &mut Vec<u8>,
    limits: &Limits,
    config: &crate::config::Config,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(crate::http::RequestHead, usize, Instant), Stop> {
    let mut started: Option<Instant> = (!buf.is_empty()).then(Instant::now);
    loop {
        match parse_head(buf, limits) {
            Ok(Some((head, len))) => return Ok((head, len, started.unwrap_or_else(Instant::now))),
            Err(HeadError { status, reason }) => return Err(Stop::Error(status, reason)),
            Ok(None) => {}
        }
        let deadline = match started {
            Some(t) => t + config.header_timeout(),
            None => Instant::now() + config.idle_timeout(),
        };
        let idle = started.is_none();
        let (result, b) = read_until(
            io,
            std::mem::take(buf),
            deadline,
            idle.then_some(&mut *shutdown),
        )
        .await;
        *buf = b;
        match result {
            Ok(0) => return Err(Stop::Quiet),
            Ok(_) => {
                started.get_or_insert_with(Instant::now);
            }
            Err(ReadError::Timeout) if !idle => {
                return Err(Stop::Error(Status::REQUEST_TIMEOUT, "request head timeout"));
            }
            Err(_) => return Err(Stop::Quiet),
        }
    }
}

/// Reads the body of `head` from `buf` and the socket, handing each piece
/// to the worker's sink; leaves whatever follows (a pipelined request) in
/// `buf`.
async fn read_body<T: Transport>(
    io: &mut T,
    buf: &mut Vec<u8>,
    head: &crate::http::RequestHead,
    config: &crate::config::Config,
    worker: &Worker,
) -> Result<super::worker::BodySink, Stop> {
    let mut decoder = BodyDecoder::new(head.body, config.max_body_size)
        .map_err(|e| Stop::Error(e.status, e.reason))?;
    if head.expect_continue && !decoder.is_done() {
        let (res, _) = io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        res.map_err(|_| Stop::Quiet)?;
    }
    let deadline = Instant::now() + config.body_timeout();
    let mut sink = worker.body_sink(head);
    loop {
        if !buf.is_empty() {
            let out = decoder
                .decode(buf)
                .map_err(|e| Stop::Error(e.status, e.reason))?;
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
            Ok(0) | Err(ReadError::Io | ReadError::Shutdown) => return Err(Stop::Quiet),
            Ok(_) => {}
            Err(ReadError::Timeout) => {
                return Err(Stop::Error(Status::REQUEST_TIMEOUT, "request body timeout"));
            }
        }
        if buf.len() > MAX_BUFFER {
            return Err(Stop::Error(Status::PAYLOAD_TOO_LARGE, "buffer overflow"));
        }
    }
}

pub(super) enum ReadError {
    Timeout,
    Shutdown,
    Io,
}

/// One read with a deadline, optionally abandoned on shutdown (only while
/// idle between requests, so in-flight requests finish).
pub(super) async fn read_until<T: Transport>(
    io: &mut T,
    buf: Vec<u8>,
    deadline: Instant,
    shutdown: Option<&mut watch::Receiver<bool>>,
) -> (Result<usize, ReadError>, Vec<u8>) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return (Err(ReadError::Timeout), buf);
    }
    let read = tokio::time::timeout(remaining, io.read(buf));
    let result = match shutdown {
        Some(rx) => {
            if *rx.borrow() {
                return (Err(ReadError::Shutdown), Vec::new());
            }
            tokio::select! {
                r = read => r,
                _ = rx.changed() => return (Err(ReadError::Shutdown), Vec::new()),
            }
        }
        None => read.await,
    };
    match result {
        Ok((Ok(n), b)) => (Ok(n), b),
        Ok((Err(_), b)) => (Err(ReadError::Io), b),
        // The buffer went with the cancelled read; the connection ends anyway.
        Err(_) => (Err(ReadError::Timeout), Vec::new()),
    }
}

/// Who a response is for: the worker, the config this connection started
/// with, and the peer (for the access log).
#[derive(Clone, Copy)]
struct Who<'a> {
    worker: &'a Worker,
    config: &'a crate::config::Config,
    peer: SocketAddr,
}

/// Writes a response and its access-log line; `false` if the write failed.
async fn write_response<T: Transport>(
    io: &mut T,
    resp: Response,
    who: &Who<'_>,
    request: Option<(&crate::http::RequestHead, Instant)>,
    close: bool,
    served: u64,
) -> bool {
    let Who {
        worker,
        config,
        peer,
    } = *who;
    let Response { mut head, body } = resp;
    head.close = close || head.close;
    if let Some((req, _)) = request
        && req.minor_version == 0
        && !head.close
    {
        head.keep_alive_10 = true;
    }
    let mut out = Vec::with_capacity(512);
    super::date::with_date(|date| head.encode(date, &mut out));
    let status = head.status;
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
        tracing::debug!(%peer, error = %e, "write failed");
    }
    worker.access_log(config, request, peer, status, bytes, served);
    result.is_ok()
}
