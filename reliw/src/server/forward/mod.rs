//! One proxied exchange, in four steps: **acquire** an upstream connection
//! (pooled or new), **send** the head with the client's body streamed
//! behind it, **await the head** of the answer, **relay** its body (or
//! tunnel, after a 101). Memory per exchange is the two buffers, whatever
//! the body sizes.
//!
//! Until the first byte reaches the client, every failure is a
//! [`ProxyError`] (502 for refused connections, TLS and protocol errors,
//! 504 for timeouts), logged with the upstream and counted by cause; after
//! it, the client connection is cut, which is all HTTP/1.1 allows. A
//! pooled connection that turns out dead before answering is replaced
//! once, for requests that can be sent again (idempotent, no body).
//!
//! - `error`: the failure type. - `send`: the request and its body.
//! - `relay`: the response head and body. - `tunnel`: after a 101.

mod error;
mod relay;
mod send;
mod tunnel;

use std::net::SocketAddr;
use std::time::Duration;

pub(crate) use self::error::{BodyBreak, ProxyError};
pub(in crate::server) use self::relay::await_head;
use self::send::SendFail;
pub(in crate::server) use self::send::write_within;
use super::transport::{Connect, Transport};
use super::upstream::{UpConn, Upstreams};
use crate::compress::StreamEncoder;
use crate::config::Config;
use crate::http::coding::{Accepted, Choice, Coding};
use crate::http::{BodyDecoder, Method, RequestHead, Status};
use crate::proxy::ProxyTarget;
use crate::proxy::head::{self, ClientFraming, ClientSide, Forwarding, UpstreamHead};

/// How an exchange ended, for the connection driver.
pub(crate) enum Outcome {
    /// The response went out whole; keep the client connection if `keep`.
    Relayed {
        status: Status,
        bytes: u64,
        keep: bool,
    },
    /// Nothing reached the client: answer `failure.status()`. The client
    /// connection must close unless the request body was read to its end.
    Failed { failure: Failure, body_read: bool },
    /// Cut after the response started, or an upgraded connection ended:
    /// close now.
    Cut { status: Status, bytes: u64 },
    /// The client went away before the response started.
    ClientGone,
}

/// Why nothing of a response reached the client.
pub(crate) enum Failure {
    Upstream(ProxyError),
    /// The client's body was bad: 400, 413 or 408.
    BadBody(Status),
}

impl Failure {
    pub(crate) fn status(&self) -> Status {
        match self {
            Self::Upstream(e) => e.status(),
            Self::BadBody(status) => *status,
        }
    }
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

/// Where the exchange stands once an upstream answered.
struct Answered<U> {
    up: UpConn<U>,
    response: UpstreamHead,
    /// Bytes read after the head.
    rest: Vec<u8>,
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
    let mut body = match BodyDecoder::new(req.body, config.max_body_size) {
        Ok(d) => d,
        Err(e) => {
            return Outcome::Failed {
                failure: Failure::BadBody(e.status),
                body_read: false,
            };
        }
    };
    let failed = |error: ProxyError, body: &BodyDecoder| {
        upstreams.node().upstream_failed(error.cause());
        tracing::warn!(
            upstream = target.origin,
            status = error.status().code(),
            "proxy: {error}"
        );
        Outcome::Failed {
            failure: Failure::Upstream(error),
            body_read: body.is_done(),
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
    let answered = match exchange_head(
        client, buf, req, request, &mut body, upgrade, target, upstreams, config,
    )
    .await
    {
        Ok(a) => a,
        Err(SendFail::Upstream(e)) => return failed(e, &body),
        Err(SendFail::BadBody(status)) => {
            return Outcome::Failed {
                failure: Failure::BadBody(status),
                body_read: false,
            };
        }
        Err(SendFail::ClientGone) => return Outcome::ClientGone,
    };
    let Answered {
        mut up,
        response,
        mut rest,
    } = answered;

    let p = &config.proxy;
    let status = Status::from_code(response.status);
    let head_request = req.method == Method::Head;
    let Encoding {
        coding,
        encoder,
        vary_encoding,
    } = encoding(req, &response, config);
    let framing = match coding {
        Some(_) if head_request => ClientFraming::None,
        // The encoded length is known only at the end.
        Some(_) if req.minor_version >= 1 => ClientFraming::Chunked,
        Some(_) => ClientFraming::Close,
        None => ClientFraming::for_client(response.framing, req.minor_version),
    };
    if let Some(c) = coding.filter(|_| !head_request) {
        upstreams.node().compressed(c.token(), "proxied");
    }
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
            encoding: coding,
            vary_encoding,
        };
        head::response_head(&response, &side, &mut out);
    });

    if response.status == 101 {
        let (res, _) = client.write_all(out).await;
        if res.is_err() {
            up.shutdown_both();
            return Outcome::Cut { status, bytes: 0 };
        }
        let bytes = tunnel::tunnel(client, buf, &mut up, rest, config).await;
        up.shutdown_both();
        return Outcome::Cut { status, bytes };
    }

    let relayed = relay::relay_body(
        client, &mut up, &response, framing, &mut rest, &mut out, encoder, config,
    )
    .await;
    upstreams.recycle(out, p.buffer_size);
    let leftover = !rest.is_empty();
    upstreams.recycle(rest, p.buffer_size);
    match relayed {
        Ok(bytes) => {
            if response.reusable && !leftover {
                upstreams.put_back(&target.pool_key, up, p.pool_max_idle);
            } else {
                up.shutdown_both();
            }
            Outcome::Relayed {
                status,
                bytes,
                keep: !close,
            }
        }
        // The head was still held back: the client can get a 502.
        Err((0, Some(cause))) => {
            up.shutdown_both();
            failed(ProxyError::Body(cause), &body)
        }
        Err((bytes, cause)) => {
            up.shutdown_both();
            if let Some(cause) = cause {
                let error = ProxyError::Body(cause);
                upstreams.node().upstream_failed(error.cause());
                tracing::warn!(upstream = target.origin, "proxy: {error}");
            }
            Outcome::Cut { status, bytes }
        }
    }
}

/// Acquire, send, await the head; once more on a new connection when a
/// pooled one turns out dead and the request can be sent again.
#[allow(clippy::too_many_arguments, reason = "the steps' shared state")]
async fn exchange_head<T: Transport, U: Connect>(
    client: &mut T,
    buf: &mut Vec<u8>,
    req: &RequestHead,
    mut request: Vec<u8>,
    body: &mut BodyDecoder,
    upgrade: bool,
    target: &ProxyTarget,
    upstreams: &Upstreams<U>,
    config: &Config,
) -> Result<Answered<U>, SendFail> {
    let replayable = body.is_done() && req.method.is_idempotent();
    let mut retried = false;
    loop {
        let (mut up, reused) = acquire(target, upstreams, config)
            .await
            .map_err(SendFail::Upstream)?;
        let may_retry = reused && replayable && !retried;
        let sent = send::send_request(client, buf, &mut up, request, body, req, config).await;
        request = match sent {
            Ok(r) => r,
            Err((r, SendFail::Upstream(_))) if may_retry => {
                up.shutdown_both();
                upstreams.node().upstream_retried.inc();
                retried = true;
                request = r;
                continue;
            }
            Err((_, fail)) => {
                up.shutdown_both();
                return Err(fail);
            }
        };
        let rbuf = upstreams.buffer(config.proxy.buffer_size);
        match relay::await_head(&mut up, rbuf, req.method, upgrade, config).await {
            Ok((response, rest)) => return Ok(Answered { up, response, rest }),
            Err(ProxyError::Closed) if may_retry => {
                tracing::debug!(
                    upstream = target.origin,
                    "pooled connection was closed; retrying on a new one"
                );
                up.shutdown_both();
                upstreams.node().upstream_retried.inc();
                retried = true;
            }
            Err(e) => {
                up.shutdown_both();
                return Err(SendFail::Upstream(e));
            }
        }
    }
}

/// An idle pooled connection to the target (`true`), else a new one.
pub(in crate::server) async fn acquire<U: Connect>(
    target: &ProxyTarget,
    upstreams: &Upstreams<U>,
    config: &Config,
) -> Result<(UpConn<U>, bool), ProxyError> {
    let pool_idle = Duration::from_millis(config.proxy.pool_idle_timeout_ms);
    if let Some(conn) = upstreams.take_idle(&target.pool_key, pool_idle) {
        return Ok((conn, true));
    }
    let conn = upstreams
        .open(target, config)
        .await
        .map_err(ProxyError::Connect)?;
    Ok((conn, false))
}

/// How an upstream's body is encoded on its way to the client.
pub(in crate::server) struct Encoding {
    /// The coding the client gets (a HEAD: the one its GET would get).
    pub(in crate::server) coding: Option<Coding>,
    /// `None` for a HEAD (no body) or when no encoding happens.
    pub(in crate::server) encoder: Option<StreamEncoder>,
    /// The answer varies by `Accept-Encoding` here.
    pub(in crate::server) vary_encoding: bool,
}

/// [`body_coding`] with its encoder made; an encoder that cannot be made
/// means the body is relayed as it is.
pub(in crate::server) fn encoding(
    req: &RequestHead,
    response: &UpstreamHead,
    config: &Config,
) -> Encoding {
    let (coding, vary_encoding) = body_coding(req, response, config);
    let head_request = req.method == Method::Head;
    let encoder = match coding {
        Some(c) if !head_request => match StreamEncoder::new(c, &config.compression) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, "cannot make an encoder; relaying as it is");
                None
            }
        },
        _ => None,
    };
    Encoding {
        coding: coding.filter(|_| head_request || encoder.is_some()),
        encoder,
        vary_encoding,
    }
}

/// Whether we encode the upstream's body on its way, and with what; and
/// whether the answer varies by `Accept-Encoding` here. An upstream that
/// encodes (or marks `no-transform`) is relayed as it is; a client that
/// refuses identity and all we offer gets identity all the same (the
/// upstream chose the representation). A HEAD is judged as its GET.
fn body_coding(
    req: &RequestHead,
    response: &UpstreamHead,
    config: &Config,
) -> (Option<Coding>, bool) {
    let cfg = &config.compression;
    let head_request = req.method == Method::Head;
    if !cfg.enabled || !response.encodable(&cfg.types, cfg.min_size, cfg.max_size, head_request) {
        return (None, false);
    }
    match Accepted::of(req).choose(&cfg.offered) {
        Choice::Encoded(c) => (Some(c), true),
        Choice::Identity | Choice::NotAcceptable => (None, true),
    }
}

/// Appends `data` to `out`, as one chunk when `chunked`.
pub(in crate::server) fn frame(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
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
