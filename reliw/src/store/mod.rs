//! Where RELIW site data lives: a [`Store`] with two backends behind one
//! trait, so everything above runs unchanged on either.
//!
//! - [`redis`]: the production backend (a lazily connecting, reconnecting
//!   `ConnectionManager` per worker; a timeout on every call; never `KEYS`).
//! - [`memory`]: the embedded backend for a single node without Redis,
//!   loaded from a site file (a JSON object of RELIW keys and values), with
//!   counters and TTLs kept in process.
//!
//! Values follow RELIW's key schema (DESIGN.md): JSON documents are strings,
//! `FILES`, `TITLES`, `USERS`, `WAF` and `METRICS` keys are hashes.

pub mod memory;
pub mod redis;

use std::time::Duration;

/// Why a store call failed. Every variant maps to a 503 for requests that
/// need the store; none is fatal to a worker.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached now (connection refused, lost, timed out).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error (wrong type, bad arguments).
    #[error("store error: {0}")]
    Backend(String),
}

/// The operations RELIW's request path needs. Each is one round trip.
///
/// The futures are not `Send`, on purpose: every caller runs on a
/// thread-per-core worker with thread-local tasks.
#[allow(async_fn_in_trait)]
pub trait Store {
    /// GET: a string value.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// HGET: one field of a hash.
    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// HGETALL: every field of a hash (empty when the key does not exist).
    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// HSET of several fields, then EXPIRE (one pipelined round trip).
    async fn hset_with_ttl(
        &self,
        key: &str,
        fields: &[(&str, &[u8])],
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// SET with an expiry.
    async fn set_with_ttl(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// DEL; whether the key existed.
    async fn del(&self, key: &str) -> Result<bool, StoreError>;
    /// INCR, and EXPIRE when the counter was just created (a fixed window):
    /// the new count.
    async fn incr_window(&self, key: &str, window: Duration) -> Result<i64, StoreError>;
    /// HINCRBY for many (key, field, by), pipelined.
    async fn hincr_batch(&self, increments: &[(String, String, i64)]) -> Result<(), StoreError>;
    /// PUBLISH; how many subscribers got it.
    async fn publish(&self, channel: &str, message: &[u8]) -> Result<i64, StoreError>;
}

/// Whether a RELIW key (after the prefix) holds a hash rather than a string.
pub fn is_hash_key(key_without_prefix: &str) -> bool {
    ["FILES:", "TITLES:", "USERS:", "METRICS:"]
        .iter()
        .any(|p| key_without_prefix.starts_with(p))
        || key_without_prefix == "WAF"
}
