//! What the node and the fleet can see about requests.
//!
//! - [`counts`]: RELIW's per-host request counters, counted in process by
//!   each worker and flushed to the store with pipelined HINCRBY, so the
//!   `P:METRICS:*` hashes stay RELIW-compatible and fleet-wide.
//! - [`NodeMetrics`]: this node's own metrics (prometheus-client): request
//!   durations, connections, bytes, WAF hits, rate-limit denials, store
//!   errors, cache hits, and the shield's packet counters.
//! - [`listener`]: the `/metrics` endpoint that shows both.

pub mod counts;
pub mod listener;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::shield::maps::ShieldMaps;

/// Where the shield's counters are read from at scrape time.
pub type ShieldSource = Option<Arc<Mutex<ShieldMaps>>>;

/// This node's metrics; every field is updated lock-free from the workers.
pub struct NodeMetrics {
    registry: Registry,
    pub request_duration: Histogram,
    pub connections_open: Gauge,
    pub bytes_sent: Counter,
    pub waf_hits: Counter,
    pub rate_limited: Counter,
    pub rate_limit_fail_open: Counter,
    /// Lua pages that failed (error, budget, memory, no status).
    pub lua_errors: Counter,
    pub store_errors: Counter,
    /// Site cache lookups by result (`hit`, `stale`, `miss`).
    pub site_cache: Family<[(&'static str, &'static str); 1], Counter>,
    /// Its `hit` and `miss` series, looked up once: a cached request makes
    /// several lookups, and each family lookup takes a lock and a hash.
    cache_hit: Counter,
    cache_miss: Counter,
    /// Upstream connections opened by the proxy.
    pub upstream_opened: Counter,
    /// Proxied requests sent on a pooled connection.
    pub upstream_reused: Counter,
    /// Requests sent again after a pooled connection turned out dead.
    pub upstream_retried: Counter,
    /// Proxied requests that failed at the upstream, by cause (`connect`,
    /// `tls`, `timeout`, `send`, `protocol`, `cut`).
    pub upstream_failures: Family<[(&'static str, &'static str); 1], Counter>,
    /// Encoded responses by coding and where the form came from
    /// (`encoded` now, `cached`, `precompressed` sibling, `proxied`: an
    /// upstream's answer encoded as it streams).
    pub compressed: Family<[(&'static str, &'static str); 2], Counter>,
    /// Client connections that spoke HTTP/2.
    pub h2_connections: Counter,
    /// HTTP/2 connections reliw ended, by reason (`idle`, `shutdown`,
    /// `max_requests`, `handshake_timeout`, `flood_<kind>`, or the codec's
    /// error code: `protocol_error`, `enhance_your_calm`, ...).
    pub h2_closed: Family<[(&'static str, &'static str); 1], Counter>,
    /// HTTP/2 streams reliw reset, by reason (`body_timeout`,
    /// `send_stall`, `upstream_cut`, `file_error`).
    pub h2_resets: Family<[(&'static str, &'static str); 1], Counter>,
    /// ACME orders this node made, by result (`issued`, `failed`).
    pub acme_orders: Family<[(&'static str, &'static str); 1], Counter>,
    /// When each ACME certificate this node serves expires (Unix seconds),
    /// by its first name.
    pub acme_not_after: Family<Vec<(&'static str, String)>, Gauge>,
    shield: ShieldSource,
}

impl NodeMetrics {
    pub fn new(shield: ShieldSource) -> Self {
        let mut registry = Registry::with_prefix("reliw");
        let request_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        registry.register(
            "request_duration_seconds",
            "Time from a request's first byte to its response written",
            request_duration.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "response_bytes",
            "Bytes of responses written, heads included",
            bytes_sent.clone(),
        );
        let waf_hits = Counter::default();
        registry.register(
            "waf_hits",
            "Requests refused by a WAF rule",
            waf_hits.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit",
            rate_limited.clone(),
        );
        let lua_errors = Counter::default();
        registry.register(
            "lua_errors",
            "Lua pages that failed: an error, the time or memory budget, or no status",
            lua_errors.clone(),
        );
        let rate_limit_fail_open = Counter::default();
        registry.register(
            "rate_limit_fail_open",
            "Rate-limited requests let through because the counter could not be read",
            rate_limit_fail_open.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Store (Redis) calls that failed",
            store_errors.clone(),
        );
        let site_cache: Family<[(&str, &str); 1], Counter> = Family::default();
        registry.register(
            "site_cache_lookups",
            "Site data lookups in the in-process cache, by result",
            site_cache.clone(),
        );
        let upstream_opened = Counter::default();
        registry.register(
            "proxy_upstream_connections_opened",
            "Connections the proxy opened to upstreams",
            upstream_opened.clone(),
        );
        let upstream_reused = Counter::default();
        registry.register(
            "proxy_upstream_connections_reused",
            "Proxied requests sent on a pooled upstream connection",
            upstream_reused.clone(),
        );
        let upstream_retried = Counter::default();
        registry.register(
            "proxy_upstream_retries",
            "Requests sent again after a pooled upstream connection turned out closed",
            upstream_retried.clone(),
        );
        let upstream_failures = Family::default();
        registry.register(
            "proxy_upstream_failures",
            "Proxied requests that failed at the upstream, by cause",
            upstream_failures.clone(),
        );
        let compressed = Family::default();
        registry.register(
            "compressed_responses",
            "Responses sent with a content coding, by coding and by source of the encoded form",
            compressed.clone(),
        );
        let h2_connections = Counter::default();
        registry.register(
            "http2_connections",
            "Client connections that spoke HTTP/2",
            h2_connections.clone(),
        );
        let h2_closed = Family::default();
        registry.register(
            "http2_closed",
            "HTTP/2 connections reliw ended (GOAWAY or handshake timeout), by reason",
            h2_closed.clone(),
        );
        let h2_resets = Family::default();
        registry.register(
            "http2_stream_resets",
            "HTTP/2 streams reliw reset, by reason",
            h2_resets.clone(),
        );
        let acme_orders = Family::default();
        registry.register(
            "acme_orders",
            "ACME orders this node made, by result",
            acme_orders.clone(),
        );
        let acme_not_after = Family::default();
        registry.register(
            "acme_certificate_not_after_seconds",
            "When each ACME certificate served expires (Unix time)",
            acme_not_after.clone(),
        );
        let cache_hit = site_cache.get_or_create(&[("result", "hit")]).clone();
        let cache_miss = site_cache.get_or_create(&[("result", "miss")]).clone();
        Self {
            registry,
            request_duration,
            connections_open,
            bytes_sent,
            waf_hits,
            rate_limited,
            rate_limit_fail_open,
            lua_errors,
            store_errors,
            site_cache,
            cache_hit,
            cache_miss,
            upstream_opened,
            upstream_reused,
            upstream_retried,
            upstream_failures,
            compressed,
            h2_connections,
            h2_closed,
            h2_resets,
            acme_orders,
            acme_not_after,
            shield,
        }
    }

    /// Counts a site cache lookup (`hit`, `stale` or `miss`).
    pub fn cache(&self, result: &'static str) {
        match result {
            "hit" => self.cache_hit.inc(),
            "miss" => self.cache_miss.inc(),
            _ => self.site_cache.get_or_create(&[("result", result)]).inc(),
        };
    }

    /// Counts a failed proxied request by cause.
    pub fn upstream_failed(&self, cause: &'static str) {
        self.upstream_failures
            .get_or_create(&[("cause", cause)])
            .inc();
    }

    /// Counts a response sent with `coding`; `source`: `encoded`,
    /// `cached` or `precompressed`.
    pub fn compressed(&self, coding: &'static str, source: &'static str) {
        self.compressed
            .get_or_create(&[("coding", coding), ("source", source)])
            .inc();
    }

    /// Counts an HTTP/2 connection reliw ended.
    pub fn h2_closed(&self, reason: &'static str) {
        self.h2_closed.get_or_create(&[("reason", reason)]).inc();
    }

    /// Counts an HTTP/2 stream reliw reset.
    pub fn h2_reset(&self, reason: &'static str) {
        self.h2_resets.get_or_create(&[("reason", reason)]).inc();
    }

    /// This node's metrics in the Prometheus text format.
    pub fn encode(&self, out: &mut String) {
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
        let stats = self
            .shield
            .as_ref()
            .and_then(|m| m.lock().ok().and_then(|m| m.stats().ok()));
        if let Some(stats) = stats {
            out.push_str(
                "# HELP reliw_shield_packets Packets seen by the XDP shield, by verdict.\n",
            );
            out.push_str("# TYPE reliw_shield_packets counter\n");
            for (name, value) in stats.named() {
                let _ = writeln!(
                    out,
                    "reliw_shield_packets_total{{verdict=\"{name}\"}} {value}"
                );
            }
        }
    }
}
