//! Why a proxied exchange failed, as a type: the status the client gets,
//! the cause label of `reliw_proxy_upstream_failures_total`, and the log
//! text all come from one value, so they cannot disagree.

use std::fmt;
use std::io;

use crate::http::Status;
use crate::server::upstream::ConnectError;

/// A failure on the upstream's side of an exchange.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// No connection: refused, unreachable, TLS, or timed out.
    Connect(ConnectError),
    /// Writing the request failed.
    Send(io::Error),
    /// Writing the request stalled past the proxy's read timeout.
    SendTimeout,
    /// No response head within `proxy.response_timeout_ms`.
    HeadTimeout,
    /// Closed (or reset) before sending a byte.
    Closed,
    /// A response head we cannot relay.
    Malformed(&'static str),
    /// Reading the response head failed after some of it came.
    HeadRead(io::Error),
    /// The body broke off.
    Body(BodyBreak),
}

/// How a response body broke off.
#[derive(Debug)]
pub(crate) enum BodyBreak {
    /// Bad chunked framing.
    Malformed(&'static str),
    /// Nothing for `proxy.read_timeout_ms` mid-body.
    Silent,
    /// Closed before the length it announced.
    ClosedEarly,
    Read(io::Error),
    /// Our encoder failed (compressing the body on its way).
    Encode(io::Error),
}

impl ProxyError {
    /// What the client gets when nothing of the response reached it.
    pub(crate) fn status(&self) -> Status {
        match self {
            Self::Connect(e) => e.status(),
            Self::SendTimeout | Self::HeadTimeout => Status::GATEWAY_TIMEOUT,
            _ => Status::BAD_GATEWAY,
        }
    }

    /// The `cause` label of `reliw_proxy_upstream_failures_total`.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            Self::Connect(e) => e.cause(),
            Self::SendTimeout | Self::HeadTimeout => "timeout",
            Self::Send(_) => "send",
            Self::Closed | Self::Malformed(_) | Self::HeadRead(_) => "protocol",
            Self::Body(_) => "cut",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => e.fmt(f),
            Self::Send(e) => write!(f, "sending the request: {e}"),
            Self::SendTimeout => f.write_str("sending the request: write timed out"),
            Self::HeadTimeout => f.write_str("no response in time"),
            Self::Closed => f.write_str("closed without a response"),
            Self::Malformed(why) => write!(f, "bad response: {why}"),
            Self::HeadRead(e) => write!(f, "reading the response: {e}"),
            Self::Body(b) => write!(f, "response cut: {b}"),
        }
    }
}

impl fmt::Display for BodyBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "bad body from upstream: {why}"),
            Self::Silent => f.write_str("upstream went silent mid-body"),
            Self::ClosedEarly => f.write_str("upstream closed before the body ended"),
            Self::Read(e) => write!(f, "reading the body: {e}"),
            Self::Encode(e) => write!(f, "encoding the body: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_504_and_the_rest_502_each_with_its_cause() {
        let cases = [
            (ProxyError::HeadTimeout, 504, "timeout"),
            (ProxyError::SendTimeout, 504, "timeout"),
            (
                ProxyError::Send(io::ErrorKind::BrokenPipe.into()),
                502,
                "send",
            ),
            (ProxyError::Closed, 502, "protocol"),
            (ProxyError::Malformed("x"), 502, "protocol"),
            (ProxyError::Body(BodyBreak::Silent), 502, "cut"),
            (
                ProxyError::Connect(ConnectError::Timeout("connect")),
                504,
                "timeout",
            ),
            (
                ProxyError::Connect(ConnectError::Failed(String::from("refused"))),
                502,
                "connect",
            ),
        ];
        for (error, status, cause) in cases {
            assert_eq!(
                (error.status().code(), error.cause()),
                (status, cause),
                "{error}"
            );
        }
    }
}
