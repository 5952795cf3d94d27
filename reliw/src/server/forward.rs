//! One proxied exchange. The request head goes to the upstream with its
//! body streamed behind it as it arrives from the client; the response
//! comes back the same way, a buffer at a time. Memory per exchange is the
//! two buffers, whatever the body sizes.
//!
//! Until the first byte reaches the client, every failure becomes a status
//! (502 for refused connections, TLS and protocol errors, 504 for
//! timeouts) with a log line naming the upstream and the cause; after it,
//! the client connection is cut, which is all HTTP/1.1 allows. A pooled
//! connection that turns out dead before answering is replaced once, for
//! requests that can be sent again (idempotent, no body).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::conn::{ReadError, read_until};
use super::transport::Connect;
use super::transport::Transport;
use super::upstream::{UpConn, Upstreams};
use crate::config::Config;
use crate::http::{BodyDecoder, BodyFraming, Method, RequestHead, Status};
use crate::proxy::ProxyTarget;
use crate::proxy::head::{
    self, ClientFraming, ClientSide, Forwarding, LAST_CHUNK, ResponseFraming, UpstreamHead,
};

/// How an exchange ended, for the connection driver.
pub(crate) enum Outcome {
    /// The response went out whole; keep the client connection if `keep`.
    Relayed {
        status: Status,
        bytes: u64,
        keep: bool,
    },
    /// Nothing reached the client: answer `status`. The client connection
    /// must close unless the request body was read to its end.
    Failed { status: Status, body_read: bool },
    /// Cut after the response started, or the client went away, or an
    /// upgraded connection ended: close now.
    Cut { status: Status, bytes: u64 },
}

/// What the driver knows about the client side.
pub(crate) struct ClientInfo {
    pub(crate) peer: SocketAddr,
    /// The client address (as trusted proxies tell it).
    pub(crate) client: std::net::IpAddr,
    pub(crate) tls: bool,
    /// The client connection closes after this response anyway.
    pub(crate) closing: bool,
}

/// Why sending the request failed.
enum SendFail {
    /// The upstream write failed or stalled.
    Upstream { timeout: bool, detail: String },
    /// The client's body was bad (400/413/408) or the client left.
    Client(Option<Status>),
}

/// Why no response head came.
enum HeadFail {
    /// Closed (or reset) before sending a byte.
    Closed,
    Timeout,
    Malformed(&'static str),
    Io(String),
}

pub(crate) async fn forward<T: Transport, U: Connect>(
    client: &mut T,
    buf: &mut Vec<u8>,
    req: &RequestHead,
    target: &ProxyTarget,
    info: &ClientInfo,
    upstreams: &Upstreams<U>,
    config: &Config,
) -> Outcome {
    let p = &config.proxy;
    let mut body = match BodyDecoder::new(req.body, config.max_body_size) {
        Ok(d) => d,
        Err(e) => {
            return Outcome::Failed {
                status: e.status,
                body_read: false,
            };
        }
    };
    let mut request = Vec::with_capacity(1024);
    let upgrade = head::request_head(
        req,
        &Forwarding {
            target,
            client_tls: info.tls,
            peer: info.peer.ip(),
            client: info.client,
        },
        &mut request,
    );
    let replayable = body.is_done()
        && matches!(
            req.method,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Trace
                | Method::Put
                | Method::Delete
        );
    let key = &target.pool_key;
    let pool_idle = Duration::from_millis(p.pool_idle_timeout_ms);
    let log_fail = |label: &'static str, status: Status, cause: &dyn std::fmt::Display| {
        upstreams.node().upstream_failed(label);
        tracing::warn!(
            upstream = target.origin,
            status = status.code(),
            "proxy: {cause}"
        );
    };

    let mut retried = false;
    let (mut up, response, mut rbuf) = loop {
        let (mut up, reused) = match upstreams.take_idle(key, pool_idle) {
            Some(conn) => (conn, true),
            None => match upstreams.open(target, config).await {
                Ok(conn) => (conn, false),
                Err(e) => {
                    log_fail(e.cause(), e.status(), &e);
                    return Outcome::Failed {
                        status: e.status(),
                        body_read: body.is_done(),
                    };
                }
            },
        };
        let may_retry = reused && replayable && !retried;
        let sent = send_request(client, buf, &mut up, request, &mut body, req, config).await;
        request = match sent {
            Ok(r) => r,
            Err((r, SendFail::Upstream { .. })) if may_retry => {
                up.shutdown_both();
                upstreams.node().upstream_retried.inc();
                retried = true;
                request = r;
                continue;
            }
            Err((_, SendFail::Upstream { timeout, detail })) => {
                up.shutdown_both();
                let status = if timeout {
                    Status::GATEWAY_TIMEOUT
                } else {
                    Status::BAD_GATEWAY
                };
                let label = if timeout { "timeout" } else { "send" };
                log_fail(
                    label,
                    status,
                    &format_args!("sending the request: {detail}"),
                );
                return Outcome::Failed {
                    status,
                    body_read: body.is_done(),
                };
            }
            Err((_, SendFail::Client(status))) => {
                up.shutdown_both();
                return match status {
                    Some(status) => Outcome::Failed {
                        status,
                        body_read: false,
                    },
                    None => Outcome::Cut {
                        status: Status::BAD_REQUEST,
                        bytes: 0,
                    },
                };
            }
        };
        let rbuf = upstreams.buffer(p.buffer_size);
        match read_response_head(&mut up, rbuf, req.method, upgrade, config).await {
            Ok((response, rest)) => break (up, response, rest),
            Err(HeadFail::Closed) if may_retry => {
                tracing::debug!(
                    upstream = target.origin,
                    "pooled connection was closed; retrying on a new one"
                );
                up.shutdown_both();
                upstreams.node().upstream_retried.inc();
                retried = true;
            }
            Err(fail) => {
                up.shutdown_both();
                let label = match fail {
                    HeadFail::Timeout => "timeout",
                    _ => "protocol",
                };
                let (status, cause) = match fail {
                    HeadFail::Timeout => {
                        (Status::GATEWAY_TIMEOUT, String::from("no response in time"))
                    }
                    HeadFail::Closed => (
                        Status::BAD_GATEWAY,
                        String::from("closed without a response"),
                    ),
                    HeadFail::Malformed(why) => {
                        (Status::BAD_GATEWAY, format!("bad response: {why}"))
                    }
                    HeadFail::Io(e) => (Status::BAD_GATEWAY, format!("reading the response: {e}")),
                };
                log_fail(label, status, &cause);
                return Outcome::Failed {
                    status,
                    body_read: body.is_done(),
                };
            }
        }
    };

    let status = Status::from_code(response.status);
    let framing = ClientFraming::for_client(response.framing, req.minor_version);
    let close = info.closing || !body.is_done() || framing == ClientFraming::Close;
    let mut out = upstreams.buffer(p.buffer_size);
    super::date::with_date(|date| {
        let side = ClientSide {
            tls: info.tls,
            origin: req.header("origin"),
            upstream_origin: &target.origin,
            framing,
            close,
            keep_alive_10: req.minor_version == 0 && !close,
            date,
            client_host: req.host.as_deref(),
        };
        head::response_head(&response, &side, &mut out);
    });

    if response.status == 101 {
        let (res, _) = client.write_all(out).await;
        if res.is_err() {
            up.shutdown_both();
            return Outcome::Cut { status, bytes: 0 };
        }
        let bytes = tunnel(client, buf, &mut up, rbuf, config).await;
        up.shutdown_both();
        return Outcome::Cut { status, bytes };
    }

    let relayed = relay_body(
        client, &mut up, &response, framing, &mut rbuf, &mut out, config,
    )
    .await;
    upstreams.recycle(out, p.buffer_size);
    let leftover = !rbuf.is_empty();
    upstreams.recycle(rbuf, p.buffer_size);
    match relayed {
        Ok(bytes) => {
            if response.reusable && !leftover {
                upstreams.put_back(key, up, p.pool_max_idle);
            } else {
                up.shutdown_both();
            }
            Outcome::Relayed {
                status,
                bytes,
                keep: !close,
            }
        }
        Err((0, Some(cause))) => {
            // The head was still held back: the client can get a 502.
            up.shutdown_both();
            log_fail(
                "cut",
                Status::BAD_GATEWAY,
                &format_args!("response cut before the body: {cause}"),
            );
            Outcome::Failed {
                status: Status::BAD_GATEWAY,
                body_read: body.is_done(),
            }
        }
        Err((bytes, cause)) => {
            up.shutdown_both();
            if let Some(cause) = cause {
                upstreams.node().upstream_failed("cut");
                tracing::warn!(upstream = target.origin, "proxy: response cut: {cause}");
            }
            Outcome::Cut { status, bytes }
        }
    }
}

/// Writes with the proxy's idle timeout.
async fn write_within<W: Transport>(
    io: &mut W,
    data: Vec<u8>,
    limit: Duration,
) -> (Result<(), SendError>, Vec<u8>) {
    match tokio::time::timeout(limit, io.write_all(data)).await {
        Ok((Ok(()), b)) => (Ok(()), b),
        Ok((Err(e), b)) => (Err(SendError::Io(e.to_string())), b),
        Err(_) => (Err(SendError::Timeout), Vec::new()),
    }
}

enum SendError {
    Io(String),
    Timeout,
}

/// Sends the head and then the body, as it arrives from the client
/// (re-chunked when the client sent it chunked). Returns the head bytes
/// (to send again on a retry).
async fn send_request<T: Transport, U: Transport>(
    client: &mut T,
    buf: &mut Vec<u8>,
    up: &mut UpConn<U>,
    request: Vec<u8>,
    body: &mut BodyDecoder,
    req: &RequestHead,
    config: &Config,
) -> Result<Vec<u8>, (Vec<u8>, SendFail)> {
    let limit = Duration::from_millis(config.proxy.read_timeout_ms);
    let upstream_fail = |e: SendError| match e {
        SendError::Io(detail) => SendFail::Upstream {
            timeout: false,
            detail,
        },
        SendError::Timeout => SendFail::Upstream {
            timeout: true,
            detail: String::from("write timed out"),
        },
    };
    if body.is_done() {
        let (res, request) = write_within(up, request, limit).await;
        return match res {
            Ok(()) => Ok(request),
            Err(e) => Err((request, upstream_fail(e))),
        };
    }
    if req.expect_continue {
        let (res, _) = client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        if res.is_err() {
            return Err((request, SendFail::Client(None)));
        }
    }
    let chunked = req.body == BodyFraming::Chunked;
    let mut out = request;
    let deadline = Instant::now() + config.body_timeout();
    let max = config.proxy.buffer_size;
    loop {
        if !buf.is_empty() {
            let decoded = match body.decode(buf) {
                Ok(d) => d,
                Err(e) => return Err((Vec::new(), SendFail::Client(Some(e.status)))),
            };
            for range in decoded.data {
                frame(&mut out, &buf[range], chunked);
            }
            buf.drain(..decoded.consumed);
            if body.is_done() && chunked {
                out.extend_from_slice(LAST_CHUNK);
            }
        }
        if !out.is_empty() {
            let (res, b) = write_within(up, out, limit).await;
            if let Err(e) = res {
                return Err((Vec::new(), upstream_fail(e)));
            }
            out = b;
            out.clear();
        }
        if body.is_done() {
            return Ok(Vec::new());
        }
        if buf.capacity() - buf.len() < 4096 && buf.len() < max {
            buf.reserve(max - buf.len());
        }
        let (result, b) = read_until(client, std::mem::take(buf), deadline, None).await;
        *buf = b;
        match result {
            Ok(0) | Err(ReadError::Io | ReadError::Shutdown) => {
                return Err((Vec::new(), SendFail::Client(None)));
            }
            Ok(_) => {}
            Err(ReadError::Timeout) => {
                return Err((Vec::new(), SendFail::Client(Some(Status::REQUEST_TIMEOUT))));
            }
        }
    }
}

/// Reads until a final response head (or a 101 to an upgrade) arrives;
/// interim 1xx responses are dropped. Returns the head and the bytes
/// after it.
async fn read_response_head<U: Transport>(
    up: &mut UpConn<U>,
    mut rbuf: Vec<u8>,
    method: Method,
    upgrade: bool,
    config: &Config,
) -> Result<(UpstreamHead, Vec<u8>), HeadFail> {
    let p = &config.proxy;
    let deadline = Instant::now() + Duration::from_millis(p.response_timeout_ms);
    let mut received = 0usize;
    loop {
        match head::parse_response(&rbuf, method, p.max_response_head) {
            Ok(Some((response, len))) => {
                rbuf.drain(..len);
                match response.status {
                    101 if upgrade => return Ok((response, rbuf)),
                    101 => {
                        return Err(HeadFail::Malformed(
                            "101 to a request that asked for no upgrade",
                        ));
                    }
                    100..=199 => continue,
                    _ => return Ok((response, rbuf)),
                }
            }
            Ok(None) => {}
            Err(why) => return Err(HeadFail::Malformed(why)),
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(p.buffer_size);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (result, b) = match tokio::time::timeout(remaining, up.read(rbuf)).await {
            Ok(r) => r,
            Err(_) => return Err(HeadFail::Timeout),
        };
        rbuf = b;
        match result {
            Ok(0) if received == 0 => return Err(HeadFail::Closed),
            Ok(0) => return Err(HeadFail::Malformed("closed in the middle of the head")),
            Ok(n) => received += n,
            Err(_) if received == 0 => return Err(HeadFail::Closed),
            Err(e) => return Err(HeadFail::Io(e.to_string())),
        }
    }
}

/// Relays the response body: `out` holds the client head already. Returns
/// the bytes sent, or them and why the relay stopped early (`None`: the
/// client left, nothing to log).
async fn relay_body<T: Transport, U: Transport>(
    client: &mut T,
    up: &mut UpConn<U>,
    response: &UpstreamHead,
    framing: ClientFraming,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    config: &Config,
) -> Result<u64, (u64, Option<String>)> {
    let p = &config.proxy;
    let limit = Duration::from_millis(p.read_timeout_ms);
    let mut decoder = match response.framing {
        ResponseFraming::Length(n) => BodyDecoder::new(BodyFraming::Length(n), u64::MAX).ok(),
        ResponseFraming::Chunked => BodyDecoder::new(BodyFraming::Chunked, u64::MAX).ok(),
        ResponseFraming::None | ResponseFraming::UntilClose => None,
    };
    let mut done = response.framing == ResponseFraming::None
        || decoder.as_ref().is_some_and(BodyDecoder::is_done);
    let until_close = response.framing == ResponseFraming::UntilClose;
    let chunked_out = framing == ClientFraming::Chunked;
    // A head with a Content-Length body waits for the first body bytes so
    // both leave in one write (as nginx's postpone_output does); bodies of
    // unknown length (streams, events) get their head at once.
    let hold_head = matches!(response.framing, ResponseFraming::Length(_));
    let head_len = out.len();
    let mut sent: u64 = 0;
    let mut eof = false;
    loop {
        if !rbuf.is_empty() && !done {
            // Straight through: the whole buffer is body, and the client
            // gets it as it is.
            let direct = out.is_empty() && !chunked_out;
            match &mut decoder {
                Some(d) => {
                    let decoded = d.decode(rbuf).map_err(|e| {
                        (sent, Some(format!("bad body from upstream: {}", e.reason)))
                    })?;
                    done = decoded.done;
                    let whole = decoded.data.len() == 1
                        && decoded.data[0] == (0..rbuf.len())
                        && decoded.consumed == rbuf.len();
                    if direct && whole {
                        std::mem::swap(out, rbuf);
                    } else {
                        for range in decoded.data {
                            frame(out, &rbuf[range], chunked_out);
                        }
                        rbuf.drain(..decoded.consumed);
                    }
                }
                None => {
                    if direct {
                        std::mem::swap(out, rbuf);
                    } else {
                        frame(out, rbuf, chunked_out);
                        rbuf.clear();
                    }
                }
            }
        }
        if eof && until_close {
            done = true;
        }
        if done && chunked_out {
            out.extend_from_slice(LAST_CHUNK);
        }
        let held = hold_head && sent == 0 && out.len() == head_len && !done && !eof;
        if !out.is_empty() && !held {
            let len = out.len() as u64;
            let (res, b) = write_within(client, std::mem::take(out), limit).await;
            if res.is_err() {
                return Err((sent, None));
            }
            sent += len;
            *out = b;
            out.clear();
        }
        if done {
            return Ok(sent);
        }
        if eof {
            return Err((
                sent,
                Some(String::from("upstream closed before the body ended")),
            ));
        }
        if rbuf.capacity() < p.buffer_size {
            rbuf.reserve(p.buffer_size - rbuf.len());
        }
        let (result, b) = match tokio::time::timeout(limit, up.read(std::mem::take(rbuf))).await {
            Ok(r) => r,
            Err(_) => return Err((sent, Some(String::from("upstream went silent mid-body")))),
        };
        *rbuf = b;
        match result {
            Ok(0) => eof = true,
            Ok(_) => {}
            Err(e) if until_close => {
                // A reset ends a read-until-close body as well as a FIN would.
                tracing::debug!(error = %e, "upstream reset ends the body");
                eof = true;
            }
            Err(e) => return Err((sent, Some(format!("reading the body: {e}")))),
        }
    }
}

fn frame(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        head::chunk_start(data.len(), out);
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Relays bytes both ways after a 101 until both sides close or the
/// tunnel idles out. `from_client` and `from_up` hold bytes already read.
/// Returns the bytes sent to the client.
async fn tunnel<T: Transport, U: Transport>(
    client: &mut T,
    from_client: &mut Vec<u8>,
    up: &mut UpConn<U>,
    mut from_up: Vec<u8>,
    config: &Config,
) -> u64 {
    let idle = Duration::from_millis(config.proxy.tunnel_idle_timeout_ms);
    let size = config.proxy.buffer_size;
    let mut sent = 0u64;
    let mut to_up = std::mem::take(from_client);
    let mut client_open = true;
    let mut up_open = true;
    loop {
        if !to_up.is_empty() {
            let (res, b) = write_within(up, to_up, idle).await;
            to_up = b;
            to_up.clear();
            if res.is_err() {
                return sent;
            }
        }
        if !from_up.is_empty() {
            let len = from_up.len() as u64;
            let (res, b) = write_within(client, from_up, idle).await;
            from_up = b;
            from_up.clear();
            if res.is_err() {
                return sent;
            }
            sent += len;
        }
        if !client_open && !up_open {
            return sent;
        }
        enum Side {
            Client,
            Up,
        }
        let side = tokio::select! {
            r = client.wait_readable(), if client_open => r.map(|()| Side::Client),
            r = up.wait_readable(), if up_open => r.map(|()| Side::Up),
            () = tokio::time::sleep(idle) => return sent,
        };
        let Ok(side) = side else { return sent };
        match side {
            Side::Client => {
                to_up.reserve(size);
                let (res, b) = client.read(to_up).await;
                to_up = b;
                match res {
                    Ok(0) => {
                        client_open = false;
                        up.finish().await;
                        up.shutdown_write();
                    }
                    Ok(_) => {}
                    Err(_) => return sent,
                }
            }
            Side::Up => {
                from_up.reserve(size);
                let (res, b) = up.read(from_up).await;
                from_up = b;
                match res {
                    Ok(0) => {
                        up_open = false;
                        client.finish().await;
                        client.shutdown_write();
                    }
                    Ok(_) => {}
                    Err(_) => return sent,
                }
            }
        }
    }
}
