//! The HTTP/1.1 codec, sans-IO: byte slices in, parsed heads and body
//! pieces out; response heads encoded into caller-provided buffers. Nothing
//! here knows about sockets, runtimes or clocks (`Date` takes the time as
//! an argument).
//!
//! - [`request`]: request heads, limits, smuggling checks.
//! - [`body`]: Content-Length and chunked body decoding.
//! - [`response`]: status codes and response head encoding.

pub mod body;
pub mod request;
pub mod response;

pub use body::{BodyDecoder, BodyError};
pub use request::{BodyFraming, HeadError, Limits, Method, RequestHead, parse_head};
pub use response::{ResponseHead, Status};
