//! One HTTP/2 stream, from its head to the end of its response: the same
//! steps as an HTTP/1.1 exchange (`exchange::run`): the site's front steps
//! (host, ACME, WAF, proxy), the body read into the worker's sink, the
//! local steps, encoding; then `finish` counts, times and logs it.

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use tokio::time::Instant;

use super::{proxy, respond};
use crate::http::{BodyFraming, Method, RequestHead, Status};
use crate::server::exchange::{Conn, Done, Exchange};
use crate::server::transport::Connect;
use crate::server::worker::BodySink;
use crate::site::{Front, Response};

/// Serves one stream.
pub(super) async fn serve<U: Connect>(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    cx: &Conn<'_, U>,
    number: u64,
) {
    let started = Instant::now();
    let (parts, mut body) = req.into_parts();
    let node = cx.worker.node();
    let head = match crate::http::h2::request_head(
        &parts,
        body.is_end_stream(),
        cx.config.max_header_count,
    ) {
        Ok(head) => head,
        Err(e) => {
            tracing::debug!(peer = %cx.peer, reason = e.reason, "bad HTTP/2 request");
            let ex = Exchange {
                head: None,
                started,
                client: cx.peer.ip().to_canonical(),
                number,
            };
            let resp = Response::error(e.status);
            let done = respond::send(&mut respond, resp, false, cx.config, node).await;
            cx.finish(&ex, &done);
            return;
        }
    };
    let ex = Exchange::new(cx, &head, started, number);
    let books = Books {
        cx,
        ex: &ex,
        open: true,
    };
    let done = run(&head, &mut body, &mut respond, cx, &ex).await;
    books.close(&done);
}

/// Closes the books on a stream exactly once: as it ended, or as a 499
/// when its connection ends first and the stream is dropped mid-way.
struct Books<'a, 'c, U> {
    cx: &'a Conn<'c, U>,
    ex: &'a Exchange<'a>,
    open: bool,
}

impl<U> Books<'_, '_, U> {
    fn close(mut self, done: &Done) {
        self.open = false;
        self.cx.finish(self.ex, done);
    }
}

impl<U> Drop for Books<'_, '_, U> {
    fn drop(&mut self) {
        if self.open {
            self.cx.finish(self.ex, &Done::gone());
        }
    }
}

async fn run<U: Connect>(
    head: &RequestHead,
    body: &mut RecvStream,
    respond: &mut SendResponse<Bytes>,
    cx: &Conn<'_, U>,
    ex: &Exchange<'_>,
) -> Done {
    let site = cx.worker.site();
    let node = cx.worker.node();
    let head_only = head.method == Method::Head;
    let local = match site.front(head, ex.client, cx.config).await {
        Front::Proxy { target, host } => {
            let host = host.into_owned();
            // Boxed: the proxy's state would otherwise make every stream's
            // future (moved into the connection's set) several KiB larger.
            return Box::pin(proxy::forward(head, body, respond, &target, host, cx, ex)).await;
        }
        Front::Respond(resp) => Err(resp),
        Front::Local(local) => Ok(local),
    };
    let sink = match read_body(head, body, respond, cx).await {
        Ok(sink) => sink,
        Err(Stop::Gone) => return Done::gone(),
        Err(Stop::Bad(status, reason)) => {
            tracing::debug!(peer = %cx.peer, reason, "bad HTTP/2 request body");
            if status == Status::REQUEST_TIMEOUT {
                node.h2_reset("body_timeout");
            }
            let resp = Response::error(status);
            return respond::send(respond, resp, head_only, cx.config, node).await;
        }
    };
    let resp = match local {
        Ok(local) => cx.worker.handle_local(head, local, sink, cx.config).await,
        Err(resp) => resp,
    };
    let resp = site.encode(head, resp, cx.config);
    respond::send(respond, resp, head_only, cx.config, node).await
}

/// Why a request body could not be read.
pub(super) enum Stop {
    Gone,
    Bad(Status, &'static str),
}

/// Reads the request body into the worker's sink, within
/// `max_body_size` and `request_body_timeout`, giving the client its
/// window back as each piece is taken.
async fn read_body<U>(
    head: &RequestHead,
    body: &mut RecvStream,
    respond: &mut SendResponse<Bytes>,
    cx: &Conn<'_, U>,
) -> Result<BodySink, Stop> {
    let mut sink = cx.worker.body_sink(head);
    if body.is_end_stream() {
        return Ok(sink);
    }
    let max = cx.config.max_body_size;
    if let BodyFraming::Length(n) = head.body
        && n > max
    {
        return Err(Stop::Bad(Status::PAYLOAD_TOO_LARGE, "body too large"));
    }
    if head.expect_continue {
        let mut go_on = http::Response::new(());
        *go_on.status_mut() = http::StatusCode::CONTINUE;
        let _ = respond.send_informational(go_on);
    }
    let deadline = Instant::now() + cx.config.body_timeout();
    let mut total: u64 = 0;
    loop {
        let piece = match tokio::time::timeout_at(deadline, body.data()).await {
            Err(_) => return Err(Stop::Bad(Status::REQUEST_TIMEOUT, "request body timeout")),
            Ok(None) => return Ok(sink),
            Ok(Some(Err(_))) => return Err(Stop::Gone),
            Ok(Some(Ok(piece))) => piece,
        };
        total += piece.len() as u64;
        if total > max {
            return Err(Stop::Bad(Status::PAYLOAD_TOO_LARGE, "body too large"));
        }
        sink.piece(&piece);
        let _ = body.flow_control().release_capacity(piece.len());
    }
}
