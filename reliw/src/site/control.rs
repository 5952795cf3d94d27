//! Invalidation of the in-process site caches: the `P:CTL` channel.
//!
//! Message format (the payload of a PUBLISH on `P:CTL`), JSON:
//!
//! - `{"cmd": "flush"}`: every node drops every cached route, entry,
//!   WAF rule set, proxy config, template and file.
//! - `{"cmd": "flush", "host": "example.com"}`: only what belongs to
//!   that host (the WAF's global rules are kept).
//!
//! For `redis-cli` the same as plain words: `flush` and `flush example.com`.
//! Anything else is logged and ignored. The `FILES` hashes in Redis are
//! not touched: delete them (`DEL P:FILES:<host>:<path>`) before a flush
//! to make a changed file visible before their hour is up.
//!
//! Workers do not take a lock per request: [`Control::epoch`] is one
//! atomic load, and only when it moved does a worker read the log of
//! scopes since the epoch it last saw.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a control message drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Host(String),
    /// Nothing dropped, everything aged past its TTL: the next lookup of
    /// each reads the store again, and while the store fails the copy is
    /// still served. For a subscription that came back (messages may have
    /// been missed, but the store may be down or failing over too).
    Stale,
}

/// Parses a `P:CTL` payload.
pub fn parse_message(payload: &[u8]) -> Result<Scope, String> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| String::from("not UTF-8"))?
        .trim();
    if text.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
        if value.get("cmd").and_then(|c| c.as_str()) != Some("flush") {
            return Err(String::from("unknown cmd (expected \"flush\")"));
        }
        return match value.get("host") {
            None | Some(serde_json::Value::Null) => Ok(Scope::All),
            Some(serde_json::Value::String(h)) => host_scope(h),
            Some(_) => Err(String::from("host must be a string")),
        };
    }
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("flush"), None, _) => Ok(Scope::All),
        (Some("flush"), Some(host), None) => host_scope(host),
        _ => Err(String::from("unknown message (expected flush [host])")),
    }
}

fn host_scope(raw: &str) -> Result<Scope, String> {
    crate::files::validate::normalise_host(raw)
        .map(Scope::Host)
        .ok_or_else(|| format!("'{raw}' is not a valid host"))
}

/// How many scopes are remembered; a worker further behind drops all.
const LOG_LEN: usize = 256;

/// Shared by all workers and the subscriber.
#[derive(Debug, Default)]
pub struct Control {
    epoch: AtomicU64,
    log: Mutex<VecDeque<(u64, Scope)>>,
}

impl Control {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bumps the epoch; workers apply `scope` before their next lookup.
    pub fn invalidate(&self, scope: Scope) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = self.epoch.load(Ordering::Acquire) + 1;
        log.push_back((epoch, scope));
        while log.len() > LOG_LEN {
            log.pop_front();
        }
        self.epoch.store(epoch, Ordering::Release);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The scopes after epoch `seen`, or `None` when the log no longer
    /// reaches back that far (drop everything).
    pub fn since(&self, seen: u64) -> Option<Vec<Scope>> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let newest = log.back().map_or(0, |(e, _)| *e);
        if seen >= newest {
            return Some(Vec::new());
        }
        let oldest = log.front().map_or(u64::MAX, |(e, _)| *e);
        if oldest > seen + 1 {
            return None;
        }
        Some(
            log.iter()
                .filter(|(e, _)| *e > seen)
                .map(|(_, s)| s.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(parse_message(b"flush"), Ok(Scope::All));
        assert_eq!(
            parse_message(b" flush  Example.COM \n"),
            Ok(Scope::Host("example.com".into()))
        );
        assert_eq!(parse_message(br#"{"cmd":"flush"}"#), Ok(Scope::All));
        assert_eq!(
            parse_message(br#"{"cmd":"flush","host":"a.b"}"#),
            Ok(Scope::Host("a.b".into()))
        );
        for bad in [
            &b"reload"[..],
            b"flush a b",
            br#"{"cmd":"x"}"#,
            b"{",
            b"flush ../x",
            b"\xff",
        ] {
            assert!(parse_message(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn workers_catch_up_or_drop_all() {
        let c = Control::new();
        assert_eq!(c.since(0), Some(vec![]));
        c.invalidate(Scope::Host("a".into()));
        c.invalidate(Scope::All);
        assert_eq!(c.epoch(), 2);
        assert_eq!(c.since(1), Some(vec![Scope::All]));
        assert_eq!(c.since(0).map(|v| v.len()), Some(2));
        for _ in 0..LOG_LEN {
            c.invalidate(Scope::All);
        }
        assert_eq!(c.since(0), None);
        assert_eq!(c.since(c.epoch()), Some(vec![]));
    }
}
