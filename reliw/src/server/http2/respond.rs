//! A response on an HTTP/2 stream: the head, then the body in pieces no
//! larger than the window the client granted, so a slow or stalled reader
//! holds at most one piece of it (file bodies are read a piece at a time,
//! never whole). A client that grants no window for
//! `keepalive_idle_timeout` gets its stream reset.

use std::os::unix::fs::FileExt as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::SendStream;
use h2::server::SendResponse;

use crate::config::Config;
use crate::metrics::NodeMetrics;
use crate::server::exchange::{Done, Next};
use crate::site::{Body, Response};

/// Largest piece of a body handed to the codec at once.
pub(super) const PIECE: usize = 64 * 1024;

/// Why a body stopped.
pub(super) enum Stop {
    /// The client reset the stream or the connection went.
    Gone,
    /// No window for too long; the stream was reset.
    Stalled,
    /// Our side failed (a file that shrank); the stream was reset.
    Failed,
}

/// Sends `resp` (without its body when `head_only`); counts and times
/// nothing itself (the caller's `finish` does).
pub(super) async fn send(
    respond: &mut SendResponse<Bytes>,
    resp: Response,
    head_only: bool,
    config: &Config,
    node: &NodeMetrics,
) -> Done {
    let Response { head, body, .. } = resp;
    let status = head.status;
    let h2head = crate::server::date::with_date(|date| crate::http::h2::response(&head, date));
    let head_bytes = field_bytes(&h2head);
    let body = if head_only || status.has_no_body() {
        Body::Empty
    } else {
        body
    };
    let empty = match &body {
        Body::Empty => true,
        Body::Bytes(b) => b.is_empty(),
        Body::File { len, .. } => *len == 0,
    };
    let Ok(mut stream) = respond.send_response(h2head, empty) else {
        return Done::gone();
    };
    let stall = config.idle_timeout();
    let sent = match body {
        _ if empty => Ok(0),
        Body::Bytes(b) => {
            let n = b.len() as u64;
            send_data(&mut stream, b, true, stall).await.map(|()| n)
        }
        Body::File { file, start, len } => send_file(&mut stream, &file, start, len, stall).await,
        Body::Empty => Ok(0),
    };
    match sent {
        Ok(n) => Done {
            status,
            bytes: head_bytes + n,
            next: Next::Continue,
            proxied: None,
        },
        Err(stop) => {
            count_stop(node, &stop);
            Done::gone()
        }
    }
}

/// Counts a stream we reset.
pub(super) fn count_stop(node: &NodeMetrics, stop: &Stop) {
    match stop {
        Stop::Gone => {}
        Stop::Stalled => node.h2_reset("send_stall"),
        Stop::Failed => node.h2_reset("file_error"),
    }
}

/// The size of a head's fields as HPACK accounts for them, for the
/// bytes-sent counter (the encoded size is the codec's to know).
pub(super) fn field_bytes(head: &http::Response<()>) -> u64 {
    head.headers()
        .iter()
        .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
        .sum::<u64>()
        + 9
}

/// Waits for window to send up to `want` bytes: how many may go now.
async fn window(
    stream: &mut SendStream<Bytes>,
    want: usize,
    stall: Duration,
) -> Result<usize, Stop> {
    stream.reserve_capacity(want);
    loop {
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx));
        match tokio::time::timeout(stall, granted).await {
            Err(_) => {
                stream.send_reset(h2::Reason::CANCEL);
                return Err(Stop::Stalled);
            }
            Ok(None | Some(Err(_))) => return Err(Stop::Gone),
            Ok(Some(Ok(0))) => {}
            Ok(Some(Ok(n))) => return Ok(n.min(want)),
        }
    }
}

/// Sends `data` within the client's window; `end`: it ends the stream.
pub(super) async fn send_data(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    stall: Duration,
) -> Result<(), Stop> {
    if data.is_empty() {
        return stream.send_data(data, end).map_err(|_| Stop::Gone);
    }
    while !data.is_empty() {
        let n = window(stream, data.len().min(PIECE), stall).await?;
        let piece = data.split_to(n);
        stream
            .send_data(piece, end && data.is_empty())
            .map_err(|_| Stop::Gone)?;
    }
    Ok(())
}

/// Sends `len` bytes of `file` from `start`, a window's worth at a time.
async fn send_file(
    stream: &mut SendStream<Bytes>,
    file: &std::fs::File,
    start: u64,
    len: u64,
    stall: Duration,
) -> Result<u64, Stop> {
    let end = start + len;
    let mut at = start;
    while at < end {
        let want = usize::try_from(end - at).unwrap_or(PIECE).min(PIECE);
        let n = window(stream, want, stall).await?;
        let mut piece = BytesMut::zeroed(n);
        let got = match file.read_at(&mut piece, at) {
            Ok(got) if got > 0 => got,
            // The file shrank under us: the length is promised already.
            _ => {
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return Err(Stop::Failed);
            }
        };
        piece.truncate(got);
        at += got as u64;
        stream
            .send_data(piece.freeze(), at == end)
            .map_err(|_| Stop::Gone)?;
    }
    Ok(len)
}
