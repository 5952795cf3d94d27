//! The upstream's answer: waiting for its head, then relaying its body
//! to the client a buffer at a time.

use std::time::Duration;

use tokio::time::Instant;

use super::error::{BodyBreak, ProxyError};
use super::frame;
use super::send::write_within;
use crate::compress::StreamEncoder;
use crate::config::Config;
use crate::http::{BodyDecoder, BodyFraming, Method};
use crate::proxy::head::{self, ClientFraming, LAST_CHUNK, ResponseFraming, UpstreamHead};
use crate::server::transport::Transport;
use crate::server::upstream::UpConn;

/// Reads until a final response head (or a 101 to an upgrade) arrives;
/// interim 1xx responses are dropped. Returns the head and the bytes
/// after it.
pub(in crate::server) async fn await_head<U: Transport>(
    up: &mut UpConn<U>,
    mut rbuf: Vec<u8>,
    method: Method,
    upgrade: bool,
    config: &Config,
) -> Result<(UpstreamHead, Vec<u8>), ProxyError> {
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
                        return Err(ProxyError::Malformed(
                            "101 to a request that asked for no upgrade",
                        ));
                    }
                    100..=199 => continue,
                    _ => return Ok((response, rbuf)),
                }
            }
            Ok(None) => {}
            Err(why) => return Err(ProxyError::Malformed(why)),
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(p.buffer_size);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (result, b) = match tokio::time::timeout(remaining, up.read(rbuf)).await {
            Ok(r) => r,
            Err(_) => return Err(ProxyError::HeadTimeout),
        };
        rbuf = b;
        match result {
            Ok(0) if received == 0 => return Err(ProxyError::Closed),
            Ok(0) => return Err(ProxyError::Malformed("closed in the middle of the head")),
            Ok(n) => received += n,
            Err(_) if received == 0 => return Err(ProxyError::Closed),
            Err(e) => return Err(ProxyError::HeadRead(e)),
        }
    }
}

/// Relays the response body: `out` holds the client head already. Returns
/// the bytes sent, or them and why the relay stopped early (`None`: the
/// client left, nothing to log).
#[allow(clippy::too_many_arguments, reason = "the relay's shared state")]
pub(super) async fn relay_body<T: Transport, U: Transport>(
    client: &mut T,
    up: &mut UpConn<U>,
    response: &UpstreamHead,
    framing: ClientFraming,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    mut encoder: Option<StreamEncoder>,
    config: &Config,
) -> Result<u64, (u64, Option<BodyBreak>)> {
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
    // What the encoder made of the latest pieces, before framing.
    let mut encoded = Vec::new();
    let mut sent: u64 = 0;
    let mut eof = false;
    loop {
        if !rbuf.is_empty() && !done {
            // Straight through: the whole buffer is body, and the client
            // gets it as it is.
            let direct = out.is_empty() && !chunked_out && encoder.is_none();
            match &mut decoder {
                Some(d) => {
                    let decoded = d
                        .decode(rbuf)
                        .map_err(|e| (sent, Some(BodyBreak::Malformed(e.reason))))?;
                    done = decoded.done;
                    let whole = decoded.data.len() == 1
                        && decoded.data[0] == (0..rbuf.len())
                        && decoded.consumed == rbuf.len();
                    if direct && whole {
                        std::mem::swap(out, rbuf);
                    } else {
                        for range in decoded.data {
                            emit(out, &rbuf[range], chunked_out, &mut encoder, &mut encoded)
                                .map_err(|e| (sent, Some(BodyBreak::Encode(e))))?;
                        }
                        rbuf.drain(..decoded.consumed);
                    }
                }
                None => {
                    if direct {
                        std::mem::swap(out, rbuf);
                    } else {
                        emit(out, rbuf, chunked_out, &mut encoder, &mut encoded)
                            .map_err(|e| (sent, Some(BodyBreak::Encode(e))))?;
                        rbuf.clear();
                    }
                }
            }
        }
        if eof && until_close {
            done = true;
        }
        if done && let Some(enc) = encoder.take() {
            enc.finish(&mut encoded)
                .map_err(|e| (sent, Some(BodyBreak::Encode(e))))?;
            frame(out, &encoded, chunked_out);
            encoded.clear();
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
            return Err((sent, Some(BodyBreak::ClosedEarly)));
        }
        if rbuf.capacity() < p.buffer_size {
            rbuf.reserve(p.buffer_size - rbuf.len());
        }
        let (result, b) = match tokio::time::timeout(limit, up.read(std::mem::take(rbuf))).await {
            Ok(r) => r,
            Err(_) => return Err((sent, Some(BodyBreak::Silent))),
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
            Err(e) => return Err((sent, Some(BodyBreak::Read(e)))),
        }
    }
}

/// Appends a piece of the body to `out`: as it is, or through the encoder
/// (then framed as what the encoder gave back).
fn emit(
    out: &mut Vec<u8>,
    data: &[u8],
    chunked: bool,
    encoder: &mut Option<StreamEncoder>,
    encoded: &mut Vec<u8>,
) -> std::io::Result<()> {
    match encoder {
        None => frame(out, data, chunked),
        Some(enc) => {
            enc.push(data, encoded)?;
            frame(out, encoded, chunked);
            encoded.clear();
        }
    }
    Ok(())
}
