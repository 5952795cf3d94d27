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

/// One host's pending counts. Looked up by `&str`, so counting a request
/// allocates nothing once its host, method and path were seen.
#[derive(Default)]
struct HostCounts {
    total: HashMap<u16, i64>,
    by_method: HashMap<String, i64>,
    by_request: HashMap<String, i64>,
}

pub struct RequestCounts {
    keys: Keys,
    /// Host (or `unknown`) → counts.
    pending: HashMap<String, HostCounts>,
    fields: usize,
    known: HashMap<Field, i64>,
    pub dropped: u64,
}

fn bump<K: std::hash::Hash + Eq + std::borrow::Borrow<Q>, Q: std::hash::Hash + Eq + ?Sized>(
    map: &mut HashMap<K, i64>,
    key: &Q,
    make: impl FnOnce() -> K,
    by: i64,
    fields: &mut usize,
    dropped: &mut u64,
) {
    if let Some(n) = map.get_mut(key) {
        *n += by;
    } else if *fields < MAX_PENDING {
        map.insert(make(), by);
        *fields += 1;
    } else {
        *dropped += 1;
    }
}

impl RequestCounts {
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            pending: HashMap::new(),
            fields: 0,
            known: HashMap::new(),
            dropped: 0,
        }
    }

    /// A host's counts, created on first use.
    fn host(&mut self, host: &str) -> &mut HostCounts {
        self.pending.entry(host.to_owned()).or_default()
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
        let (mut fields, mut dropped) = (self.fields, self.dropped);
        match host {
            Some(h) => {
                let counts = match self.pending.get_mut(h) {
                    Some(c) => c,
                    None => self.host(h),
                };
                bump(
                    &mut counts.total,
                    &code,
                    || code,
                    1,
                    &mut fields,
                    &mut dropped,
                );
                bump(
                    &mut counts.by_method,
                    method,
                    || method.to_owned(),
                    1,
                    &mut fields,
                    &mut dropped,
                );
                bump(
                    &mut counts.by_request,
                    path,
                    || path.to_owned(),
                    1,
                    &mut fields,
                    &mut dropped,
                );
            }
            None => {
                let field = format!("{raw_host}{path}");
                let counts = match self.pending.get_mut("unknown") {
                    Some(c) => c,
                    None => self.host("unknown"),
                };
                bump(
                    &mut counts.by_request,
                    field.as_str(),
                    || field.clone(),
                    1,
                    &mut fields,
                    &mut dropped,
                );
            }
        }
        (self.fields, self.dropped) = (fields, dropped);
    }

    /// The `by_request` host and field for a request.
    fn request_field(host: Option<&str>, raw_host: &str, path: &str) -> (String, String) {
        match host {
            Some(h) => (h.to_owned(), path.to_owned()),
            None => (String::from("unknown"), format!("{raw_host}{path}")),
        }
    }

    /// How often this path was asked for, fleet-wide as of the last flush
    /// plus what this worker counted since (RELIW's 404 "hit count").
    pub fn hits(&self, host: Option<&str>, raw_host: &str, path: &str) -> i64 {
        let (h, field) = Self::request_field(host, raw_host, path);
        let pending = self
            .pending
            .get(&h)
            .and_then(|c| c.by_request.get(&field))
            .copied()
            .unwrap_or(0);
        let key = (self.keys.metrics(&h, "by_request"), field);
        self.known.get(&key).copied().unwrap_or(0) + pending
    }

    /// The pending increments as (key, field, by), for a flush.
    pub fn take(&mut self) -> Vec<(String, String, i64)> {
        let mut batch = Vec::with_capacity(self.fields);
        for (host, counts) in self.pending.drain() {
            let key = |kind: &str| self.keys.metrics(&host, kind);
            let total = key("total");
            batch.extend(
                counts
                    .total
                    .into_iter()
                    .map(|(c, n)| (total.clone(), c.to_string(), n)),
            );
            let by_method = key("by_method");
            batch.extend(
                counts
                    .by_method
                    .into_iter()
                    .map(|(m, n)| (by_method.clone(), m, n)),
            );
            let by_request = key("by_request");
            batch.extend(
                counts
                    .by_request
                    .into_iter()
                    .map(|(p, n)| (by_request.clone(), p, n)),
            );
        }
        self.fields = 0;
        batch
    }

    /// Gives back increments whose flush failed.
    pub fn restore(&mut self, batch: Vec<(String, String, i64)>) {
        let head = self.keys.metrics("", "");
        let prefix = &head[..head.len() - 2];
        for (key, field, n) in batch {
            let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix(':')) else {
                continue;
            };
            let Some((host, kind)) = rest.rsplit_once(':') else {
                continue;
            };
            let (mut fields, mut dropped) = (self.fields, self.dropped);
            let counts = match self.pending.get_mut(host) {
                Some(c) => c,
                None => self.host(host),
            };
            match kind {
                "total" => {
                    if let Ok(code) = field.parse::<u16>() {
                        bump(
                            &mut counts.total,
                            &code,
                            || code,
                            n,
                            &mut fields,
                            &mut dropped,
                        );
                    }
                }
                "by_method" => bump(
                    &mut counts.by_method,
                    field.as_str(),
                    || field.clone(),
                    n,
                    &mut fields,
                    &mut dropped,
                ),
                _ => bump(
                    &mut counts.by_request,
                    field.as_str(),
                    || field.clone(),
                    n,
                    &mut fields,
                    &mut dropped,
                ),
            }
            (self.fields, self.dropped) = (fields, dropped);
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
