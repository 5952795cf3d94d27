//! The HTTP/1.1 codec, sans-IO: byte slices in, parsed heads and body
//! pieces out; response heads encoded into caller-provided buffers. Nothing
//! here knows about sockets, runtimes or clocks (`Date` takes the time as
//! an argument).
//!
//! - [`request`]: request heads, limits, smuggling checks.
//! - [`body`]: Content-Length and chunked body decoding.
//! - [`response`]: status codes and response head encoding.
//! - [`headers`]: field-value grammar shared with the upstream parser.
//! - [`coding`]: `Accept-Encoding` negotiation and per-coding ETags.
//! - [`h2`]: HTTP/2 requests and responses in these terms (the `h2` crate
//!   is the codec); [`h2_watch`]: HTTP/2 flood detection.

pub mod body;
pub mod coding;
pub mod h2;
pub mod h2_watch;
pub mod headers;
pub mod request;
pub mod response;

pub use body::{BodyDecoder, BodyError};
pub use request::{BodyFraming, HeadError, Limits, Method, RequestHead, parse_head};
pub use response::{HeaderValue, ResponseHead, Status};

/// Parses a whole request head for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn test_head(raw: &str) -> RequestHead {
    let limits = Limits {
        line: 8192,
        head: 65536,
        headers: 100,
    };
    match parse_head(raw.as_bytes(), &limits) {
        Ok(Some((h, _))) => h,
        _ => panic!("bad test request: {raw:?}"),
    }
}
