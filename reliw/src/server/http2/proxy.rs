//! An HTTP/2 stream forwarded to an HTTP/1.1 (or HTTPS) upstream, with
//! the HTTP/1.1 proxy's parts: the same upstream request head, pool,
//! response parsing, head rewriting and encoder. Both bodies stream, and
//! flow control holds end to end: the client's window is given back only
//! as the upstream takes its body, and the upstream is read only as the
//! client's window lets its answer go on.
//!
//! Until the head goes out, a failure is an error page (502/504, or the
//! client body's 400/408/413), as on HTTP/1.1; after it, the stream is
//! reset, where HTTP/1.1 has to cut the whole connection.

use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use tokio::time::Instant;

use super::respond::{self, Stop};
use crate::compress::StreamEncoder;
use crate::config::Config;
use crate::http::{BodyDecoder, BodyFraming, Method, RequestHead, Status};
use crate::proxy::ProxyTarget;
use crate::proxy::head::{
    self, ClientFraming, ClientSide, Forwarding, LAST_CHUNK, ResponseFraming, UpstreamHead,
};
use crate::server::exchange::{Conn, Done, Exchange, Next};
use crate::server::forward::{self, BodyBreak, ProxyError};
use crate::server::transport::{Connect, Transport};
use crate::server::upstream::UpConn;

/// Shuts an upstream socket down if the stream is dropped mid-exchange
/// (its client connection ended under it): on io_uring a read still in
/// flight would keep the socket open until the upstream spoke or closed.
/// It holds a duplicate of the socket, so it needs nothing borrowed.
struct ShutOnDrop(Option<std::os::fd::OwnedFd>);

impl ShutOnDrop {
    fn new<U: Transport>(up: &UpConn<U>) -> Self {
        Self(rustix::io::fcntl_dupfd_cloexec(up.fd(), 0).ok())
    }

    /// The exchange ended on its own: nothing to do.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ShutOnDrop {
    fn drop(&mut self) {
        if let Some(fd) = &self.0 {
            let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
        }
    }
}

/// Why nothing of an answer reached the client.
enum Failure {
    Upstream(ProxyError),
    /// The client's body was bad or late.
    BadBody(Status),
    Gone,
}

pub(super) async fn forward<U: Connect>(
    req: &RequestHead,
    body: &mut RecvStream,
    respond: &mut SendResponse<Bytes>,
    target: &ProxyTarget,
    host: String,
    cx: &Conn<'_, U>,
    ex: &Exchange<'_>,
) -> Done {
    let config = cx.config;
    let upstreams = cx.upstreams;
    let failed = |error: &ProxyError| {
        upstreams.node().upstream_failed(error.cause());
        tracing::warn!(
            upstream = target.origin,
            status = error.status().code(),
            "proxy: {error}"
        );
    };
    let answered = match exchange_head(req, body, respond, target, cx, ex).await {
        Ok(a) => a,
        Err(failure) => {
            let status = match failure {
                // Not answered: logged (499), not counted for the host.
                Failure::Gone => return Done::gone(),
                Failure::BadBody(status) => status,
                Failure::Upstream(e) => {
                    failed(&e);
                    e.status()
                }
            };
            return error_page(req, respond, host, status, cx).await;
        }
    };
    let (mut up, guard, response, mut rest) = answered;
    let head_request = req.method == Method::Head;
    let forward::Encoding {
        coding,
        encoder,
        vary_encoding,
    } = forward::encoding(req, &response, config);
    let framing = match (coding, response.framing) {
        (_, ResponseFraming::None) => ClientFraming::None,
        (None, ResponseFraming::Length(n)) => ClientFraming::Length(n),
        // Unknown length: DATA frames until END_STREAM (no chunking in h2).
        _ => ClientFraming::Chunked,
    };
    if let Some(c) = coding.filter(|_| !head_request) {
        upstreams.node().compressed(c.token(), "proxied");
    }
    let mut written = Vec::with_capacity(1024);
    crate::server::date::with_date(|date| {
        let side = ClientSide {
            tls: cx.tls,
            origin: req.header("origin"),
            upstream_origin: &target.origin,
            framing,
            close: false,
            keep_alive_10: false,
            date,
            client_host: req.host.as_deref(),
            encoding: coding,
            vary_encoding,
        };
        head::response_head(&response, &side, &mut written);
    });
    let Some(h2head) = crate::http::h2::response_from_http1(&written) else {
        up.shutdown_both();
        let e = ProxyError::Malformed("a response head HTTP/2 cannot carry");
        failed(&e);
        return error_page(req, respond, host, e.status(), cx).await;
    };
    let status = Status::from_code(response.status);
    let head_bytes = respond::field_bytes(&h2head);
    let no_body = head_request || framing == ClientFraming::None;
    let Ok(mut stream) = respond.send_response(h2head, no_body) else {
        up.shutdown_both();
        return Done::gone();
    };
    let relayed = if no_body {
        Ok(0)
    } else {
        relay_body(&mut up, &response, &mut rest, &mut stream, encoder, config).await
    };
    let p = &config.proxy;
    guard.disarm();
    let leftover = !rest.is_empty();
    upstreams.recycle(rest, p.buffer_size);
    match relayed {
        Ok(bytes) => {
            if response.reusable && !leftover && (no_body || !head_request) {
                upstreams.put_back(&target.pool_key, up, p.pool_max_idle);
            } else {
                up.shutdown_both();
            }
            Done {
                status,
                bytes: head_bytes + bytes,
                next: Next::Continue,
                proxied: Some(host),
            }
        }
        Err(cut) => {
            up.shutdown_both();
            match cut {
                Cut::Client(stop) => respond::count_stop(upstreams.node(), &stop),
                Cut::Upstream(why) => {
                    stream.send_reset(h2::Reason::INTERNAL_ERROR);
                    upstreams.node().h2_reset("upstream_cut");
                    failed(&ProxyError::Body(why));
                }
            }
            Done {
                status,
                bytes: head_bytes,
                next: Next::Continue,
                proxied: Some(host),
            }
        }
    }
}

/// The site's error page for a failed forward (as HTTP/1.1 sends it).
async fn error_page<U>(
    req: &RequestHead,
    respond: &mut SendResponse<Bytes>,
    host: String,
    status: Status,
    cx: &Conn<'_, U>,
) -> Done {
    let site = cx.worker.site();
    let resp = site.proxy_error(req, &host, status, cx.config).await;
    let resp = site.encode(req, resp, cx.config);
    let node = cx.worker.node();
    let mut done = respond::send(respond, resp, req.method == Method::Head, cx.config, node).await;
    done.proxied = Some(host);
    done
}

/// Acquire, send, await the head; once more on a new connection when a
/// pooled one turns out dead and the request has no body.
async fn exchange_head<U: Connect>(
    req: &RequestHead,
    body: &mut RecvStream,
    respond: &mut SendResponse<Bytes>,
    target: &ProxyTarget,
    cx: &Conn<'_, U>,
    ex: &Exchange<'_>,
) -> Result<(UpConn<U>, ShutOnDrop, UpstreamHead, Vec<u8>), Failure> {
    let config = cx.config;
    let upstreams = cx.upstreams;
    if let BodyFraming::Length(n) = req.body
        && n > config.max_body_size
    {
        return Err(Failure::BadBody(Status::PAYLOAD_TOO_LARGE));
    }
    let mut request = Vec::with_capacity(1024);
    head::request_head(
        req,
        &Forwarding {
            target,
            client_tls: cx.tls,
            peer: cx.peer.ip(),
            client: ex.client,
        },
        &mut request,
    );
    // As on HTTP/1.1: only methods that may be sent twice, and no body.
    let replayable = body.is_end_stream() && req.method.is_idempotent();
    let mut told_to_go_on = false;
    let mut retried = false;
    loop {
        let (mut up, reused) = forward::acquire(target, upstreams, config)
            .await
            .map_err(Failure::Upstream)?;
        let guard = ShutOnDrop::new(&up);
        let may_retry = reused && replayable && !retried;
        let limit = Duration::from_millis(config.proxy.read_timeout_ms);
        let (sent, r) = forward::write_within(&mut up, request, limit).await;
        request = r;
        if req.expect_continue && !body.is_end_stream() && !told_to_go_on {
            let mut go_on = http::Response::new(());
            *go_on.status_mut() = http::StatusCode::CONTINUE;
            let _ = respond.send_informational(go_on);
            told_to_go_on = true;
        }
        let sent = match sent {
            Ok(()) if body.is_end_stream() => Ok(()),
            Ok(()) => send_body(req, body, &mut up, config).await,
            Err(e) => Err(Failure::Upstream(e)),
        };
        match sent {
            Ok(()) => {}
            Err(Failure::Upstream(_)) if may_retry => {
                up.shutdown_both();
                upstreams.node().upstream_retried.inc();
                retried = true;
                continue;
            }
            Err(f) => {
                up.shutdown_both();
                return Err(f);
            }
        }
        let rbuf = upstreams.buffer(config.proxy.buffer_size);
        match forward::await_head(&mut up, rbuf, req.method, false, config).await {
            Ok((response, rest)) => return Ok((up, guard, response, rest)),
            Err(ProxyError::Closed) if may_retry => {
                up.shutdown_both();
                upstreams.node().upstream_retried.inc();
                retried = true;
            }
            Err(e) => {
                up.shutdown_both();
                return Err(Failure::Upstream(e));
            }
        }
    }
}

/// Streams the client's body upstream (chunked when its length is not
/// known), giving the client its window back as each piece is written.
async fn send_body<U: Connect>(
    req: &RequestHead,
    body: &mut RecvStream,
    up: &mut UpConn<U>,
    config: &Config,
) -> Result<(), Failure> {
    let chunked = req.body == BodyFraming::Chunked;
    let limit = Duration::from_millis(config.proxy.read_timeout_ms);
    let deadline = Instant::now() + config.body_timeout();
    let mut total: u64 = 0;
    let mut out = Vec::with_capacity(16 * 1024);
    loop {
        let piece = match tokio::time::timeout_at(deadline, body.data()).await {
            Err(_) => return Err(Failure::BadBody(Status::REQUEST_TIMEOUT)),
            Ok(None) => None,
            Ok(Some(Err(_))) => return Err(Failure::Gone),
            Ok(Some(Ok(piece))) => Some(piece),
        };
        out.clear();
        match &piece {
            Some(p) => {
                total += p.len() as u64;
                if total > config.max_body_size {
                    return Err(Failure::BadBody(Status::PAYLOAD_TOO_LARGE));
                }
                forward::frame(&mut out, p, chunked);
            }
            None if chunked => out.extend_from_slice(LAST_CHUNK),
            None => return Ok(()),
        }
        let (res, b) = forward::write_within(up, std::mem::take(&mut out), limit).await;
        out = b;
        res.map_err(Failure::Upstream)?;
        match piece {
            Some(p) => {
                let _ = body.flow_control().release_capacity(p.len());
            }
            None => return Ok(()),
        }
    }
}

/// Why a relay stopped after the head went out.
enum Cut {
    Client(Stop),
    Upstream(BodyBreak),
}

/// Relays the upstream's body as DATA frames within the client's window.
async fn relay_body<U: Connect>(
    up: &mut UpConn<U>,
    response: &UpstreamHead,
    rbuf: &mut Vec<u8>,
    stream: &mut h2::SendStream<Bytes>,
    mut encoder: Option<StreamEncoder>,
    config: &Config,
) -> Result<u64, Cut> {
    let p = &config.proxy;
    let limit = Duration::from_millis(p.read_timeout_ms);
    let stall = config.idle_timeout();
    let mut decoder = match response.framing {
        ResponseFraming::Length(n) => BodyDecoder::new(BodyFraming::Length(n), u64::MAX).ok(),
        ResponseFraming::Chunked => BodyDecoder::new(BodyFraming::Chunked, u64::MAX).ok(),
        ResponseFraming::None | ResponseFraming::UntilClose => None,
    };
    let until_close = response.framing == ResponseFraming::UntilClose;
    let mut done = decoder.as_ref().is_some_and(BodyDecoder::is_done);
    let mut sent: u64 = 0;
    let mut piece: Vec<u8> = Vec::new();
    loop {
        piece.clear();
        if !rbuf.is_empty() {
            match &mut decoder {
                Some(d) => {
                    let decoded = d
                        .decode(rbuf)
                        .map_err(|e| Cut::Upstream(BodyBreak::Malformed(e.reason)))?;
                    done = decoded.done;
                    for range in decoded.data {
                        piece.extend_from_slice(&rbuf[range]);
                    }
                    rbuf.drain(..decoded.consumed);
                }
                None => {
                    piece.extend_from_slice(rbuf);
                    rbuf.clear();
                }
            }
        }
        if let Some(enc) = &mut encoder {
            let mut encoded = Vec::new();
            enc.push(&piece, &mut encoded)
                .map_err(|e| Cut::Upstream(BodyBreak::Encode(e)))?;
            if done && let Some(enc) = encoder.take() {
                enc.finish(&mut encoded)
                    .map_err(|e| Cut::Upstream(BodyBreak::Encode(e)))?;
            }
            piece = encoded;
        }
        if !piece.is_empty() || done {
            let n = piece.len() as u64;
            let data = Bytes::from(std::mem::take(&mut piece));
            respond::send_data(stream, data, done, stall)
                .await
                .map_err(Cut::Client)?;
            sent += n;
        }
        if done {
            return Ok(sent);
        }
        if rbuf.capacity() < p.buffer_size {
            rbuf.reserve(p.buffer_size - rbuf.len());
        }
        let (result, b) = match tokio::time::timeout(limit, up.read(std::mem::take(rbuf))).await {
            Ok(r) => r,
            Err(_) => return Err(Cut::Upstream(BodyBreak::Silent)),
        };
        *rbuf = b;
        match result {
            Ok(0) if until_close => done = true,
            Ok(0) => return Err(Cut::Upstream(BodyBreak::ClosedEarly)),
            Ok(_) => {}
            Err(_) if until_close => done = true,
            Err(e) => return Err(Cut::Upstream(BodyBreak::Read(e))),
        }
    }
}
