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
pub mod subscriber;

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
    /// SET NX with an expiry (a lock): whether the key was free and now
    /// holds `value`.
    async fn set_nx_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// DEL only while the key still holds `value`, in one step (a lock's
    /// owner lets it go): whether it did.
    async fn del_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError>;
    /// DEL; whether the key existed.
    async fn del(&self, key: &str) -> Result<bool, StoreError>;
    /// INCR, and EXPIRE when the counter was just created (a fixed window):
    /// the new count.
    async fn incr_window(&self, key: &str, window: Duration) -> Result<i64, StoreError>;
    /// HINCRBY for many (key, field, by), pipelined: the new values, in
    /// order; `None` for an increment that was not applied (in a cluster,
    /// one whose shard failed: only those are to be sent again).
    async fn hincr_batch(
        &self,
        increments: &[(String, String, i64)],
    ) -> Result<Vec<Option<i64>>, StoreError>;
    /// SCAN with MATCH (`*` wildcards only) and COUNT, until the cursor
    /// ends or `limit` keys were seen: the keys, at most `limit`.
    async fn scan(
        &self,
        pattern: &str,
        count: u32,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
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

/// One of the store backends, chosen by config at start.
#[derive(Clone)]
pub enum Backend {
    Redis(redis::RedisStore),
    Memory(std::sync::Arc<memory::MemoryStore>),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Backend::Redis($s) => $call,
            Backend::Memory($s) => $call,
        }
    };
}

impl Store for Backend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, s => s.get(key).await)
    }
    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, s => s.hget(key, field).await)
    }
    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        dispatch!(self, s => s.hgetall(key).await)
    }
    async fn hset_with_ttl(
        &self,
        key: &str,
        fields: &[(&str, &[u8])],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.hset_with_ttl(key, fields, ttl).await)
    }
    async fn set_with_ttl(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_with_ttl(key, value, ttl).await)
    }
    async fn set_nx_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.set_nx_with_ttl(key, value, ttl).await)
    }
    async fn del_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        dispatch!(self, s => s.del_if(key, value).await)
    }
    async fn del(&self, key: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.del(key).await)
    }
    async fn incr_window(&self, key: &str, window: Duration) -> Result<i64, StoreError> {
        dispatch!(self, s => s.incr_window(key, window).await)
    }
    async fn hincr_batch(
        &self,
        increments: &[(String, String, i64)],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        dispatch!(self, s => s.hincr_batch(increments).await)
    }
    async fn scan(
        &self,
        pattern: &str,
        count: u32,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.scan(pattern, count, limit).await)
    }
    async fn publish(&self, channel: &str, message: &[u8]) -> Result<i64, StoreError> {
        dispatch!(self, s => s.publish(channel, message).await)
    }
}

/// RELIW's key names under a prefix (DESIGN.md, "Redis keys").
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// `P:API:<host>`: the routes.
    pub fn routes(&self, host: &str) -> String {
        format!("{}:API:{host}", self.prefix)
    }
    /// `P:API:<host>:<entry>`: entry metadata.
    pub fn entry(&self, host: &str, entry: &str) -> String {
        format!("{}:API:{host}:{entry}", self.prefix)
    }
    /// `P:FILES:<host>:<path>`: the content cache hash.
    pub fn files(&self, host: &str, path: &str) -> String {
        format!("{}:FILES:{host}:{path}", self.prefix)
    }
    /// `P:TITLES:<host>`: path → title.
    pub fn titles(&self, host: &str) -> String {
        format!("{}:TITLES:{host}", self.prefix)
    }
    /// `P:DATA:<host>:<name>` (host `__` is the fallback).
    pub fn data(&self, host: &str, name: &str) -> String {
        format!("{}:DATA:{host}:{name}", self.prefix)
    }
    /// `P:PROXY:<host>`.
    pub fn proxy(&self, host: &str) -> String {
        format!("{}:PROXY:{host}", self.prefix)
    }
    /// `P:WAF`: the rule sets.
    pub fn waf(&self) -> String {
        format!("{}:WAF", self.prefix)
    }
    /// `P:WAFFERS`: bans for every node.
    pub fn waffers(&self) -> String {
        format!("{}:WAFFERS", self.prefix)
    }
    /// `P:SESSIONS:<host>:<token>` → user.
    pub fn session(&self, host: &str, token: &str) -> String {
        format!("{}:SESSIONS:{host}:{token}", self.prefix)
    }
    /// `P:USERS:<host>`: user → password record.
    pub fn users(&self, host: &str) -> String {
        format!("{}:USERS:{host}", self.prefix)
    }
    /// `P:CTL`: the control channel.
    pub fn ctl(&self) -> String {
        format!("{}:CTL", self.prefix)
    }
    /// `P:LIMITS:<host>:<method>:<path>:<ip>`: a rate-limit window.
    pub fn limits(&self, host: &str, method: &str, path: &str, ip: &str) -> String {
        format!("{}:LIMITS:{host}:{method}:{path}:{ip}", self.prefix)
    }
    /// `P:ACME:CERT:<first name>`: an issued chain and its sealed key.
    pub fn acme_certificate(&self, name: &str) -> String {
        format!("{}:ACME:CERT:{name}", self.prefix)
    }
    /// `P:ACME:LOCK:<first name>`: the node ordering that certificate.
    pub fn acme_lock(&self, name: &str) -> String {
        format!("{}:ACME:LOCK:{name}", self.prefix)
    }
    /// `P:ACME:RETRY:<first name>`: no order before this key expires.
    pub fn acme_retry(&self, name: &str) -> String {
        format!("{}:ACME:RETRY:{name}", self.prefix)
    }
    /// `P:ACME:FAILS:<first name>`: failed orders of the last day.
    pub fn acme_failures(&self, name: &str) -> String {
        format!("{}:ACME:FAILS:{name}", self.prefix)
    }
    /// `P:ACME:ACCOUNT:<directory URL>`: the sealed account credentials.
    pub fn acme_account(&self, directory: &str) -> String {
        format!("{}:ACME:ACCOUNT:{directory}", self.prefix)
    }
    /// `P:METRICS:<host>:<kind>` (kind: total, by_method, by_request).
    pub fn metrics(&self, host: &str, kind: &str) -> String {
        format!("{}:METRICS:{host}:{kind}", self.prefix)
    }
}

/// Why the configured store cannot be used at all (start-up refuses).
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    #[error("{0}")]
    SiteFile(#[from] memory::SiteFileError),
    /// The Redis section describes a client reliw cannot build.
    #[error("redis: {0}")]
    Redis(StoreError),
}

/// How to reach the configured store. Each worker (and the metrics
/// listener) opens its own handle on its own runtime with [`StoreSpec::open`].
#[derive(Clone)]
pub enum StoreSpec {
    /// No site data (plain static serving).
    Static,
    /// Boxed: the section is large beside the other variants.
    Redis(Box<crate::config::RedisConfig>),
    Memory(std::sync::Arc<memory::MemoryStore>),
}

impl StoreSpec {
    /// From the config; loads the site file of the memory backend, and
    /// builds a Redis client once so that a section reliw cannot honour
    /// (a `redis.tls` certificate that does not parse, say) stops start-up
    /// instead of failing per worker:
    /// a configured store must never fall back to plain static serving,
    /// which would make files behind `auth` public.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, StoreSetupError> {
        use crate::config::StoreBackend;
        Ok(match config.store.backend {
            StoreBackend::Static => Self::Static,
            StoreBackend::Redis => {
                redis::check(&config.redis).map_err(StoreSetupError::Redis)?;
                Self::Redis(Box::new(config.redis.clone()))
            }
            StoreBackend::Memory => {
                let path = config.store.site_file.clone().unwrap_or_default();
                let store = memory::MemoryStore::from_site_file(&path, &config.redis.prefix)?;
                Self::Memory(std::sync::Arc::new(store))
            }
        })
    }

    /// A handle (`None` for static serving). For Redis this must run
    /// inside a tokio runtime; it does not connect yet.
    pub fn open(&self) -> Result<Option<Backend>, StoreError> {
        Ok(match self {
            Self::Static => None,
            Self::Redis(config) => Some(Backend::Redis(redis::RedisStore::new(config)?)),
            Self::Memory(store) => Some(Backend::Memory(std::sync::Arc::clone(store))),
        })
    }
}
