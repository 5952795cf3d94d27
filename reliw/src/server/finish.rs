//! The last step of every request (pingora's `logging` phase): bytes and
//! duration into the node's metrics, a forwarded request into its host's
//! counters, and one access-log line (its fields borrow from the request;
//! only the `log_headers` text is built, and only when the line is written).

use std::fmt;

use super::exchange::{Conn, Done, Exchange};
use crate::http::RequestHead;

impl<U> Conn<'_, U> {
    /// Closes the books on one request.
    pub(super) fn finish(&self, ex: &Exchange<'_>, done: &Done) {
        let node = self.worker.node();
        node.bytes_sent.inc_by(done.bytes);
        let elapsed = ex.started.elapsed();
        node.request_duration.observe(elapsed.as_secs_f64());
        if let (Some(head), Some(host)) = (ex.head, &done.proxied) {
            self.worker.site().count_proxied(head, host, done.status);
        }
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let head = ex.head;
        let header = |name: &str| head.and_then(|h| h.header_str(name)).unwrap_or("");
        // As text, so the line's formatter quotes it as one value.
        let headers = LoggedHeaders {
            head,
            names: &self.config.log_headers,
        }
        .to_string();
        tracing::info!(
            target: "access",
            vhost = head.and_then(|h| h.host.as_deref()).unwrap_or(""),
            method = head.map_or("-", |h| h.method.as_str()),
            path = head.map_or("", |h| h.target.as_str()),
            status = done.status.code(),
            bytes = done.bytes,
            duration_us = elapsed.as_micros() as u64,
            client_ip = %ex.client,
            peer = %self.peer.ip(),
            forwarded_for = header("x-forwarded-for"),
            request_no = ex.number,
            headers = headers.as_str(),
        );
    }
}

/// `log_headers` as `name="value" ...`, written straight into the line.
struct LoggedHeaders<'a> {
    head: Option<&'a RequestHead>,
    names: &'a [String],
}

impl fmt::Display for LoggedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(head) = self.head else {
            return Ok(());
        };
        let mut first = true;
        for name in self.names {
            // Request field names are lower-case; config names may not be.
            let value = head
                .headers()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| std::str::from_utf8(v).ok());
            if let Some(v) = value {
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                write!(f, "{name}={v:?}")?;
            }
        }
        Ok(())
    }
}
