//! One connection: read a head (sans-IO codec), run its exchange, finish
//! it, in a loop, with the keep-alive and header timers armed around each
//! read. Responses go out strictly in request order, so pipelined requests
//! are simply the next head already waiting in the buffer.
//!
//! Errors of this connection are logged here and never reach the accept
//! loop.

use std::net::SocketAddr;
use std::rc::Rc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::deadline::{ReadError, read_until};
use super::exchange::{self, Conn, Exchange, MAX_BUFFER, Next};
use super::transport::{Connect, IntoStream, Transport};
use super::upstream::Upstreams;
use super::worker::Worker;
use crate::http::{HeadError, Limits, Status, parse_head};
use crate::site::Response;

/// Why the driver stopped reading a head: a status to send first, or
/// just close.
enum Stop {
    /// Peer closed or reset, or we are shutting down while idle.
    Quiet,
    /// Send this error, then close.
    Error(Status, &'static str),
    /// The HTTP/2 preface: go on as h2c.
    Http2,
}

/// How long, and how much, we read and discard after our last response:
/// closing with unread input resets the connection, and a reset can
/// destroy the response before the client reads it.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

pub(crate) async fn serve<T: Transport + IntoStream, U: Connect>(
    mut io: T,
    peer: SocketAddr,
    worker: Rc<Worker>,
    upstreams: &Upstreams<U>,
    shutdown: watch::Receiver<bool>,
    tls: bool,
) {
    let config = worker.config();
    let cx = Conn {
        worker: &worker,
        config: &config,
        peer,
        tls,
        upstreams,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let next = drive(&mut io, &mut buf, &cx, shutdown.clone()).await;
    if next == Next::Http2 {
        as_h2(io, buf, &cx, shutdown).await;
        return;
    }
    if next == Next::Linger {
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

/// A connection that chose HTTP/2 in the TLS handshake (ALPN `h2`).
pub(crate) async fn serve_h2<T: Transport + IntoStream, U: Connect>(
    io: T,
    peer: SocketAddr,
    worker: Rc<Worker>,
    upstreams: &Upstreams<U>,
    shutdown: watch::Receiver<bool>,
) {
    let config = worker.config();
    let cx = Conn {
        worker: &worker,
        config: &config,
        peer,
        tls: true,
        upstreams,
    };
    as_h2(io, Vec::new(), &cx, shutdown).await;
}

/// Serves the connection as HTTP/2 from `read` (bytes taken already),
/// then closes it the way HTTP/1.1 does: our FIN after the last frame
/// (a GOAWAY), then what the client still sends is read and dropped for a
/// moment, so the close is not a reset that could destroy that GOAWAY.
async fn as_h2<T: Transport + IntoStream, U: Connect>(
    io: T,
    read: Vec<u8>,
    cx: &Conn<'_, U>,
    shutdown: watch::Receiver<bool>,
) {
    // The socket outlives the codec's stream through this duplicate.
    let socket = match rustix::io::fcntl_dupfd_cloexec(io.fd(), 0) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(peer = %cx.peer, error = %e, "cannot serve HTTP/2");
            return;
        }
    };
    match io.into_stream() {
        Ok(stream) => {
            let stream = super::stream::Prefixed::new(read, stream);
            super::http2::serve(stream, cx, shutdown).await;
        }
        Err(e) => tracing::debug!(peer = %cx.peer, error = %e, "cannot serve HTTP/2"),
    }
    linger(socket).await;
}

/// Half-closes `socket`, then reads and drops input until EOF, for
/// [`LINGER_TIME`] or [`LINGER_BYTES`], whichever ends first.
async fn linger(socket: std::os::fd::OwnedFd) {
    let _ = rustix::net::shutdown(&socket, rustix::net::Shutdown::Write);
    if rustix::io::ioctl_fionbio(&socket, true).is_err() {
        return;
    }
    let Ok(ready) = super::transport::register(socket, tokio::io::Interest::READABLE) else {
        return;
    };
    let deadline = Instant::now() + LINGER_TIME;
    let mut drained = 0;
    let mut scratch = Vec::with_capacity(16 * 1024);
    while drained < LINGER_BYTES {
        let Ok(Ok(mut guard)) = tokio::time::timeout_at(deadline, ready.readable()).await else {
            return;
        };
        scratch.clear();
        match super::transport::recv_now(guard.get_inner(), &mut scratch) {
            Ok(Some(n)) if n > 0 => drained += n,
            Ok(None) => guard.clear_ready(),
            _ => return,
        }
    }
}

/// Requests until one ends the connection: how it ends.
async fn drive<T: Transport, U: Connect>(
    io: &mut T,
    buf: &mut Vec<u8>,
    cx: &Conn<'_, U>,
    mut shutdown: watch::Receiver<bool>,
) -> Next {
    let config = cx.config;
    let limits = Limits {
        line: config.request_line_limit,
        head: config.request_head_limit,
        headers: config.max_header_count,
    };
    let mut served: u64 = 0;
    loop {
        let mut started = None;
        // Prior knowledge on the plain listener only (TLS chose by ALPN).
        let h2c = served == 0 && config.http2.h2c && config.http2.enabled && !cx.tls;
        let read = read_head(io, buf, &limits, config, &mut shutdown, &mut started, h2c).await;
        served += 1;
        let (head, head_len) = match read {
            Ok(h) => h,
            Err(Stop::Quiet) => return Next::Close,
            Err(Stop::Http2) => return Next::Http2,
            Err(Stop::Error(status, reason)) => {
                tracing::debug!(peer = %cx.peer, reason, "bad request head");
                let ex = Exchange {
                    head: None,
                    started: started.unwrap_or_else(Instant::now),
                    client: cx.peer.ip().to_canonical(),
                    number: served,
                };
                let done = exchange::respond(io, Response::error(status), None, true).await;
                cx.finish(&ex, &done);
                return done.next;
            }
        };
        buf.drain(..head_len);
        let cap = config.max_requests_per_connection;
        let close = !head.keep_alive || *shutdown.borrow() || (cap > 0 && served >= cap);
        let ex = Exchange::new(cx, &head, started.unwrap_or_else(Instant::now), served);
        let done = exchange::run(io, buf, cx, &ex, &head, close, &shutdown).await;
        cx.finish(&ex, &done);
        if done.next != Next::Continue {
            return done.next;
        }
        if buf.capacity() > MAX_BUFFER {
            buf.shrink_to(16 * 1024);
        }
    }
}

/// Reads until `buf` starts with a whole head: idle (ended quietly by the
/// keep-alive timeout or shutdown) until the first byte, then against the
/// header timer, measured from that first byte (`started`, set here).
/// Returns the head and its length. `h2c`: a connection that opens with
/// the HTTP/2 preface is HTTP/2.
async fn read_head<T: Transport>(
    io: &mut T,
    buf: &mut Vec<u8>,
    limits: &Limits,
    config: &crate::config::Config,
    shutdown: &mut watch::Receiver<bool>,
    started: &mut Option<Instant>,
    h2c: bool,
) -> Result<(crate::http::RequestHead, usize), Stop> {
    use crate::http::h2_watch::PREFACE;
    if !buf.is_empty() {
        *started = Some(Instant::now());
    }
    loop {
        let preface_so_far =
            h2c && !buf.is_empty() && PREFACE.starts_with(&buf[..buf.len().min(PREFACE.len())]);
        if preface_so_far && buf.len() >= PREFACE.len() {
            return Err(Stop::Http2);
        }
        match parse_head(buf, limits) {
            Ok(None) | Err(_) if preface_so_far => {}
            Ok(Some(parsed)) => return Ok(parsed),
            Err(HeadError { status, reason }) => return Err(Stop::Error(status, reason)),
            Ok(None) => {}
        }
        let deadline = match *started {
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
