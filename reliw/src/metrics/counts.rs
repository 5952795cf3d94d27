//! RELIW's request counters, per worker: `P:METRICS:<host>:total` (status
//! code → count), `:by_method` (method → count) and `:by_request` (path →
//! count). Requests with no route are counted as RELIW did, under host
//! `unknown`, by `<host><path>` only.
//!
//! Counting is a map update; [`RequestCounts::take`] hands the pending
//! increments to the flusher, which sends them in one pipeline. A failed
//! flush gives them back ([`RequestCounts::restore`]), so an outage delays
//! counts instead of losing them, within a bound.
//!
//! `by_request` fields are chosen by clients (any path), so RELIW's layout
//! lets a scanner grow that hash without limit. reliw keeps RELIW's layout
//! but sends at most [`MAX_PENDING`] distinct fields per flush; the excess
//! is counted in [`RequestCounts::dropped`] and logged.

use std::collections::HashMap;

use crate::store::Keys;

/// Distinct (key, field) pairs kept between flushes.
pub const MAX_PENDING: usize = 4096;
/// `by_request` values remembered from the last flushes (for 404 pages).
const MAX_KNOWN: usize = 10_000;

type Field = (String, String);

pub struct RequestCounts {
    keys: Keys,
    pending: HashMap<Field, i64>,
    known: HashMap<Field, i64>,
    pub dropped: u64,
}

impl RequestCounts {
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            pending: HashMap::new(),
            known: HashMap::new(),
            dropped: 0,
        }
    }

    fn add(&mut self, key: String, field: String, by: i64) {
        if let Some(n) = self.pending.get_mut(&(key.clone(), field.clone())) {
            *n += by;
        } else if self.pending.len() < MAX_PENDING {
            self.pending.insert((key, field), by);
        } else {
            self.dropped += 1;
        }
    }

    /// The `by_request` key and field for a request.
    fn request_field(&self, host: Option<&str>, raw_host: &str, path: &str) -> Field {
        match host {
            Some(h) => (self.keys.metrics(h, "by_request"), path.to_owned()),
            None => (
                self.keys.metrics("unknown", "by_request"),
                format!("{raw_host}{path}"),
            ),
        }
    }

    /// Counts one response. `host` is `None` when no route matched.
    pub fn record(
        &mut self,
        host: Option<&str>,
        raw_host: &str,
        method: &str,
        path: &str,
        code: u16,
    ) {
        if let Some(h) = host {
            self.add(self.keys.metrics(h, "total"), code.to_string(), 1);
            self.add(self.keys.metrics(h, "by_method"), method.to_owned(), 1);
        }
        let (key, field) = self.request_field(host, raw_host, path);
        self.add(key, field, 1);
    }

    /// How often this path was asked for, fleet-wide as of the last flush
    /// plus what this worker counted since (RELIW's 404 "hit count").
    pub fn hits(&self, host: Option<&str>, raw_host: &str, path: &str) -> i64 {
        let field = self.request_field(host, raw_host, path);
        self.known.get(&field).copied().unwrap_or(0)
            + self.pending.get(&field).copied().unwrap_or(0)
    }

    /// The pending increments, for a flush.
    pub fn take(&mut self) -> Vec<(String, String, i64)> {
        self.pending
            .drain()
            .map(|((key, field), n)| (key, field, n))
            .collect()
    }

    /// Gives back increments whose flush failed.
    pub fn restore(&mut self, batch: Vec<(String, String, i64)>) {
        for (key, field, n) in batch {
            self.add(key, field, n);
        }
    }

    /// Remembers the `by_request` totals a flush returned.
    pub fn learn(&mut self, batch: &[(String, String, i64)], values: &[i64]) {
        if self.known.len() > MAX_KNOWN {
            self.known.clear();
        }
        for ((key, field, _), value) in batch.iter().zip(values) {
            if key.ends_with(":by_request") {
                self.known.insert((key.clone(), field.clone()), *value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_reliw_layout() {
        let mut c = RequestCounts::new(Keys::new("RLW"));
        c.record(Some("a.b"), "a.b", "GET", "/x", 200);
        c.record(Some("a.b"), "a.b", "GET", "/x", 200);
        c.record(None, "c.d", "GET", "/nope", 404);
        assert_eq!(c.hits(Some("a.b"), "a.b", "/x"), 2);
        let mut batch = c.take();
        batch.sort();
        assert_eq!(
            batch,
            [
                ("RLW:METRICS:a.b:by_method".into(), "GET".into(), 2),
                ("RLW:METRICS:a.b:by_request".into(), "/x".into(), 2),
                ("RLW:METRICS:a.b:total".into(), "200".into(), 2),
                (
                    "RLW:METRICS:unknown:by_request".into(),
                    "c.d/nope".into(),
                    1
                ),
            ]
        );
        let values: Vec<i64> = batch.iter().map(|b| b.2 + 10).collect();
        c.learn(&batch, &values);
        c.record(Some("a.b"), "a.b", "GET", "/x", 404);
        assert_eq!(c.hits(Some("a.b"), "a.b", "/x"), 13);
        let batch = c.take();
        c.restore(batch);
        assert_eq!(c.take().len(), 3);
    }

    #[test]
    fn distinct_fields_are_bounded() {
        let mut c = RequestCounts::new(Keys::new("RLW"));
        for i in 0..MAX_PENDING * 2 {
            c.record(Some("h"), "h", "GET", &format!("/{i}"), 404);
        }
        assert_eq!(c.take().len(), MAX_PENDING);
        assert!(c.dropped > 0);
    }
}
