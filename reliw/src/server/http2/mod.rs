//! HTTP/2 connections: the `h2` crate's codec over the connection's byte
//! stream (see `stream`), every stream a request through the same site
//! pipeline, proxy, metrics and access log as HTTP/1.1.
//!
//! One task per connection: it drives the codec and runs its streams
//! concurrently (a `FuturesUnordered` of borrowing futures, so a stream
//! costs no task and no `Rc` clones), at most `max_concurrent_streams` at
//! once even when clients reset theirs. The requests one read brings are
//! all answered before the codec writes, so their frames share a write.
//! The connection ends with a GOAWAY when idle for
//! `keepalive_idle_timeout`, after `max_requests_per_connection` streams
//! (once they are done), at shutdown (open streams get `shutdown_grace`),
//! or at once on a flood the frame watch saw; the handshake has
//! `request_header_timeout`. Each stream's queued output is bounded by
//! `respond::PIECE`.
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
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::exchange::Conn;
use super::stream::{FloodAlarm, Watched};
use super::transport::Connect;

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
    let io = super::stream::Coalesce::new(io);
    let io = Watched::new(io, h.flood_limit, Rc::clone(&alarm));
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(h.max_concurrent_streams)
        .max_header_list_size(h.max_header_list_size)
        .initial_window_size(h.stream_window)
        .initial_connection_window_size(h.connection_window)
        .max_send_buffer_size(respond::PIECE);
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
    let max_streams = h.max_concurrent_streams as usize;
    let mut streams = FuturesUnordered::new();
    let mut served: u64 = 0;
    // Why we are closing, and (at shutdown) when open streams are cut.
    let mut closing: Option<(&'static str, Option<Instant>)> = None;
    let mut idle_since = Instant::now();
    if *shutdown.borrow() {
        conn.graceful_shutdown();
        closing = Some(("shutdown", Some(Instant::now() + shutdown_grace(config))));
    }
    'serve: loop {
        let idle_at = idle_since + config.idle_timeout();
        let cut_at = closing.and_then(|(_, at)| at);
        // Streams a client reset are closed for the codec but may still be
        // working here: past the limit we only drive the connection, and
        // new streams wait in the codec (or are refused by it).
        let room = streams.len() < max_streams;
        tokio::select! {
            flood = alarm.wait() => {
                tracing::info!(peer = %cx.peer, flood = flood.as_str(), "HTTP/2 flood; GOAWAY");
                node.h2_closed(flood_reason(flood));
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                let goodbye = std::future::poll_fn(|c| conn.poll_closed(c));
                let _ = tokio::time::timeout(FLOOD_GOODBYE, goodbye).await;
                return;
            }
            driven = drive(&mut conn, room) => {
                let accepted = match driven {
                    Driven::Accepted(accepted) => accepted,
                    Driven::Closed(Ok(())) => break,
                    Driven::Closed(Err(e)) => {
                        ended_by_error(cx, &e);
                        break;
                    }
                };
                // Every request the codec decoded already is taken, then all
                // of them run before the codec is polled again: their
                // answers leave together, in one write.
                let mut next = Some(accepted);
                while let Some(accepted) = next.take() {
                    match accepted {
                        Some(Ok((req, respond))) => {
                            served += 1;
                            streams.push(request::serve(req, respond, cx, served));
                            if cap > 0 && served >= cap && closing.is_none() {
                                conn.graceful_shutdown();
                                closing = Some(("max_requests", None));
                            }
                        }
                        Some(Err(e)) => {
                            ended_by_error(cx, &e);
                            break 'serve;
                        }
                        None => break 'serve,
                    }
                    if streams.len() < max_streams {
                        next = conn.accept().now_or_never();
                    }
                }
                while let Some(Some(())) = streams.next().now_or_never() {}
                if streams.is_empty() {
                    idle_since = Instant::now();
                }
            }
            Some(()) = streams.next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    idle_since = Instant::now();
                }
            }
            _ = sleep_until(idle_at), if streams.is_empty() => {
                if closing.is_some() {
                    // A GOAWAY went and nothing is open: the client need
                    // not answer our PING for us to go.
                    break;
                }
                // Nothing open: one GOAWAY naming the last stream served,
                // without the PING round trip a graceful close waits for.
                conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                closing = Some(("idle", None));
                idle_since = Instant::now();
            }
            _ = shutdown.changed(), if closing.is_none() => {
                conn.graceful_shutdown();
                closing = Some(("shutdown", Some(Instant::now() + shutdown_grace(config))));
            }
            _ = sleep_until(cut_at.unwrap_or(idle_at)), if cut_at.is_some() => {
                tracing::debug!(peer = %cx.peer, open = streams.len(), "HTTP/2 shutdown grace over");
                break;
            }
        }
    }
    if let Some((reason, _)) = closing {
        node.h2_closed(reason);
    }
}

type Accepted = Option<
    Result<
        (
            http::Request<h2::RecvStream>,
            h2::server::SendResponse<Bytes>,
        ),
        h2::Error,
    >,
>;

/// What driving the codec gave.
enum Driven {
    /// A new stream (or the end).
    Accepted(Accepted),
    /// With no room for streams: the connection ended.
    Closed(Result<(), h2::Error>),
}

/// Drives the codec: accepting a stream when there is `room`, else only
/// reading and writing for the streams that are open.
async fn drive<T>(conn: &mut h2::server::Connection<T, Bytes>, room: bool) -> Driven
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    if room {
        Driven::Accepted(conn.accept().await)
    } else {
        Driven::Closed(std::future::poll_fn(|c| conn.poll_closed(c)).await)
    }
}

fn shutdown_grace(config: &crate::config::Config) -> Duration {
    Duration::from_secs(config.shutdown_grace)
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
