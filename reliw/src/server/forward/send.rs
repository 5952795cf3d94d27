//! Sending a request upstream: the head, then the client's body as it
//! arrives (re-chunked when the client sent it chunked).

use std::time::Duration;

use tokio::time::Instant;

use super::error::ProxyError;
use super::frame;
use crate::config::Config;
use crate::http::{BodyDecoder, BodyFraming, RequestHead, Status};
use crate::proxy::head::LAST_CHUNK;
use crate::server::deadline::{ReadError, read_until};
use crate::server::transport::Transport;
use crate::server::upstream::UpConn;

/// Why sending stopped.
pub(super) enum SendFail {
    /// The upstream's side failed.
    Upstream(ProxyError),
    /// The client's body was bad (400/413/408).
    BadBody(Status),
    /// The client went away.
    ClientGone,
}

/// Writes with the proxy's idle timeout.
pub(in crate::server) async fn write_within<W: Transport>(
    io: &mut W,
    data: Vec<u8>,
    limit: Duration,
) -> (Result<(), ProxyError>, Vec<u8>) {
    match tokio::time::timeout(limit, io.write_all(data)).await {
        Ok((Ok(()), b)) => (Ok(()), b),
        Ok((Err(e), b)) => (Err(ProxyError::Send(e)), b),
        Err(_) => (Err(ProxyError::SendTimeout), Vec::new()),
    }
}

/// Sends the head and then the body, as it arrives from the client.
/// Returns the head bytes (to send again on a retry), also on an upstream
/// failure before any body byte went.
pub(super) async fn send_request<T: Transport, U: Transport>(
    client: &mut T,
    buf: &mut Vec<u8>,
    up: &mut UpConn<U>,
    request: Vec<u8>,
    body: &mut BodyDecoder,
    req: &RequestHead,
    config: &Config,
) -> Result<Vec<u8>, (Vec<u8>, SendFail)> {
    let limit = Duration::from_millis(config.proxy.read_timeout_ms);
    if body.is_done() {
        let (res, request) = write_within(up, request, limit).await;
        return match res {
            Ok(()) => Ok(request),
            Err(e) => Err((request, SendFail::Upstream(e))),
        };
    }
    if req.expect_continue {
        let (res, _) = client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        if res.is_err() {
            return Err((request, SendFail::ClientGone));
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
                Err(e) => return Err((Vec::new(), SendFail::BadBody(e.status))),
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
                return Err((Vec::new(), SendFail::Upstream(e)));
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
                return Err((Vec::new(), SendFail::ClientGone));
            }
            Ok(_) => {}
            Err(ReadError::Timeout) => {
                return Err((Vec::new(), SendFail::BadBody(Status::REQUEST_TIMEOUT)));
            }
        }
    }
}
