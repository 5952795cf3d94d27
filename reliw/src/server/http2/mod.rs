//! HTTP/2 connections: the `h2` crate's codec over the connection's byte
//! stream (see `stream`), every stream a request through the same site
//! pipeline, proxy, metrics and access log as HTTP/1.1.
//!
//! One task per connection: it drives the codec and runs its streams
//! concurrently (a `FuturesUnordered` of borrowing futures, so a stream
//! costs no task and no `Rc` clones). The connection ends with a GOAWAY
//! when idle for `keepalive_idle_timeout`, after
//! `max_requests_per_connection` streams, at shutdown, or at once on a
//! flood the frame watch saw; the handshake has `request_header_timeout`.
//!
//! - `request`: one stream, from its head to its response.
//! - `respond`: a response's head and body, within flow control.
//! - `proxy`: a stream forwarded to an HTTP/1.1 upstream.

mod proxy;
mod request;
mod respond;

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::exchange::Conn;
use super::stream::{FloodAlarm, Watched};
use super::transport::Connect;

/// How long a closing connection may take to finish its streams (at
/// shutdown: `shutdown_grace`).
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// How long the GOAWAY after a flood may take to go out.
const FLOOD_GOODBYE: Duration = Duration::from_secs(1);

/// Serves one HTTP/2 connection until it ends.
pub(super) async fn serve<S, U>(io: S, cx: &Conn<'_, U>, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    U: Connect,
{
    let config = cx.config;
    let h = &config.http2;
    let node = cx.worker.node();
    let alarm = Rc::new(FloodAlarm::default());
    let io = Watched::new(io, h.flood_limit, Rc::clone(&alarm));
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(h.max_concurrent_streams)
        .max_header_list_size(h.max_header_list_size)
        .initial_window_size(h.stream_window)
        .initial_connection_window_size(h.connection_window)
        .max_send_buffer_size(256 * 1024);
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(config.header_timeout(), handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(peer = %cx.peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            node.h2_closed("handshake_timeout");
            return;
        }
    };
    node.h2_connections.inc();
    let cap = config.max_requests_per_connection;
    let mut streams = FuturesUnordered::new();
    let mut served: u64 = 0;
    let mut closing: Option<(&'static str, Instant)> = None;
    let mut idle_since = Instant::now();
    if *shutdown.borrow() {
        conn.graceful_shutdown();
        closing = Some(("shutdown", Instant::now() + grace(config, "shutdown")));
    }
    loop {
        let idle_at = idle_since + config.idle_timeout();
        let give_up_at = closing.map_or(idle_at, |(_, at)| at);
        tokio::select! {
            flood = alarm.wait() => {
                tracing::info!(peer = %cx.peer, flood = flood.as_str(), "HTTP/2 flood; GOAWAY");
                node.h2_closed(flood_reason(flood));
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                let goodbye = std::future::poll_fn(|c| conn.poll_closed(c));
                let _ = tokio::time::timeout(FLOOD_GOODBYE, goodbye).await;
                return;
            }
            accepted = conn.accept() => match accepted {
                Some(Ok((req, respond))) => {
                    served += 1;
                    streams.push(request::serve(req, respond, cx, served));
                    if cap > 0 && served >= cap && closing.is_none() {
                        conn.graceful_shutdown();
                        closing = Some(("max_requests", Instant::now() + grace(config, "")));
                    }
                }
                Some(Err(e)) => {
                    ended_by_error(cx, &e);
                    break;
                }
                None => break,
            },
            Some(()) = streams.next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    idle_since = Instant::now();
                }
            }
            _ = sleep_until(idle_at), if streams.is_empty() && closing.is_none() => {
                // Nothing open: one GOAWAY naming the last stream served,
                // without the PING round trip a graceful close waits for.
                conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                closing = Some(("idle", Instant::now() + grace(config, "")));
            }
            _ = shutdown.changed(), if closing.is_none() => {
                conn.graceful_shutdown();
                closing = Some(("shutdown", Instant::now() + grace(config, "shutdown")));
            }
            _ = sleep_until(give_up_at), if closing.is_some() => {
                tracing::debug!(peer = %cx.peer, open = streams.len(), "HTTP/2 close took too long");
                break;
            }
        }
    }
    if let Some((reason, _)) = closing {
        node.h2_closed(reason);
    }
}

fn grace(config: &crate::config::Config, why: &str) -> Duration {
    if why == "shutdown" {
        Duration::from_secs(config.shutdown_grace)
    } else {
        CLOSE_GRACE
    }
}

fn flood_reason(flood: crate::http::h2_watch::Flood) -> &'static str {
    use crate::http::h2_watch::Flood;
    match flood {
        Flood::Ping => "flood_ping",
        Flood::Settings => "flood_settings",
        Flood::Reset => "flood_reset",
        Flood::Priority => "flood_priority",
        Flood::EmptyFrames => "flood_empty_frames",
        Flood::Continuation => "flood_continuation",
    }
}

/// Logs and counts a connection the codec ended: ours (a GOAWAY it sent
/// for a protocol error) is counted by its code; the client's going away
/// or an I/O error is only logged.
fn ended_by_error<U>(cx: &Conn<'_, U>, e: &h2::Error) {
    if e.is_io() || e.is_remote() {
        tracing::debug!(peer = %cx.peer, error = %e, "HTTP/2 connection ended");
        return;
    }
    let reason = match e.reason() {
        Some(h2::Reason::PROTOCOL_ERROR) => "protocol_error",
        Some(h2::Reason::FLOW_CONTROL_ERROR) => "flow_control_error",
        Some(h2::Reason::FRAME_SIZE_ERROR) => "frame_size_error",
        Some(h2::Reason::COMPRESSION_ERROR) => "compression_error",
        Some(h2::Reason::ENHANCE_YOUR_CALM) => "enhance_your_calm",
        Some(h2::Reason::NO_ERROR) => return,
        _ => "other_error",
    };
    tracing::info!(peer = %cx.peer, error = %e, "HTTP/2 connection closed for an error");
    cx.worker.node().h2_closed(reason);
}
