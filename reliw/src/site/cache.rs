//! The per-worker cache of site data read from the store, so that a
//! cached GET makes no round trip. Every value is kept with the time it
//! was read; within the TTL it is used as it is, after it is re-read, and
//! if re-reading fails (Redis down) the old value is used for as long as
//! the outage lasts ("stale if error"). Control messages drop entries at
//! once (see [`super::control`]).
//!
//! Every map is bounded by a count (and the file map also by bytes): a
//! flood of unknown hosts or paths cannot grow a worker without limit.
//! When a bound is hit the map is emptied, which costs re-reads but needs
//! no bookkeeping on the hot path.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::content::Blob;
use super::control::{Control, Scope};
use super::meta::EntryMeta;
use super::routes::Routes;
use crate::look::Look;
use crate::waf::RuleSet;

/// What a lookup found.
pub enum Lookup<V> {
    Fresh(V),
    /// Older than the TTL: re-read, and fall back to this if that fails.
    Stale(V),
    Missing,
}

/// A map with read times, a TTL and a size bound.
pub struct TtlMap<K, V> {
    map: HashMap<K, (Instant, V)>,
    cap: usize,
    /// Entries stored before this are stale whatever their age.
    fresh_from: Option<Instant>,
}

/// A key of something belonging to one host, looked up as a pair of
/// borrowed strings (`&(host, name) as &dyn HostPair`), so a cached
/// request builds no key.
pub trait HostPair {
    fn host(&self) -> &str;
    fn name(&self) -> &str;
}

impl HostPair for (String, String) {
    fn host(&self) -> &str {
        &self.0
    }
    fn name(&self) -> &str {
        &self.1
    }
}

impl HostPair for (&str, &str) {
    fn host(&self) -> &str {
        self.0
    }
    fn name(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn HostPair + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn HostPair + 'a) {
        self
    }
}

// As the tuple hashes: each string in turn, so both forms find each other.
impl Hash for dyn HostPair + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.host().hash(state);
        self.name().hash(state);
    }
}

impl PartialEq for dyn HostPair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.host() == other.host() && self.name() == other.name()
    }
}

impl Eq for dyn HostPair + '_ {}

impl<K: Eq + Hash, V: Clone> TtlMap<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap,
            fresh_from: None,
        }
    }

    /// Ages every entry past its TTL (kept as a stale copy).
    pub fn expire_all(&mut self) {
        self.fresh_from = Some(Instant::now());
    }

    /// The value for `key` as of `now` (read once per request).
    pub fn get<Q>(&self, key: &Q, ttl: Duration, now: Instant) -> Lookup<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self.map.get(key) {
            None => Lookup::Missing,
            Some((at, v))
                if now.saturating_duration_since(*at) < ttl
                    && self.fresh_from.is_none_or(|from| *at >= from) =>
            {
                Lookup::Fresh(v.clone())
            }
            Some((_, v)) => Lookup::Stale(v.clone()),
        }
    }

    pub fn insert(&mut self, key: K, value: V) {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.map.clear();
        }
        self.map.insert(key, (Instant::now(), value));
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.map.retain(|k, _| keep(k));
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(_, v)| v)
    }
}

/// A key of something belonging to one host.
pub type HostKey = (String, String);

/// Metadata as read: present and valid, absent, or refused (with why).
#[derive(Clone)]
pub enum EntryState {
    Valid(Rc<EntryMeta>),
    Missing,
    Invalid(Rc<str>),
}

/// A rendered page and its validator.
#[derive(Clone)]
pub struct Page {
    pub html: bytes::Bytes,
    pub etag: Rc<str>,
}

/// How many keys each map holds at most.
const MAP_CAP: usize = 10_000;

/// A host's `P:PROXY` entry: none, a usable target, or why it is unusable.
pub type ProxyEntry = Option<Result<Rc<crate::proxy::ProxyTarget>, Rc<str>>>;

/// Everything a worker caches from the store.
pub struct SiteCache {
    pub ttl: Duration,
    /// The time lookups of this request are judged by (one clock read
    /// per request, in [`SiteCache::sync`]).
    pub now: Instant,
    /// `P:API:<host>` (None: the host has no routes).
    pub routes: TtlMap<String, Option<Rc<Routes>>>,
    /// `P:API:<host>:<entry>`.
    pub entries: TtlMap<HostKey, EntryState>,
    /// `P:PROXY:<host>`, parsed (None: no proxy; Err: why it is unusable).
    pub proxies: TtlMap<String, ProxyEntry>,
    /// Rule sets that apply to a host: the global one, then the host's.
    pub waf: TtlMap<String, Rc<Vec<RuleSet>>>,
    /// The host's look: `P:DATA:<host>:template.lua` or `:template`
    /// (None: the built-in one).
    pub templates: TtlMap<String, Option<Rc<Look>>>,
    /// (host, request path) → the entry it was resolved for, and the
    /// file name content resolution chose.
    pub names: TtlMap<HostKey, (Rc<str>, Option<Rc<super::content::Name>>)>,
    /// (host, file name) → content (the in-process copy of `FILES`).
    pub blobs: TtlMap<HostKey, Rc<Blob>>,
    blob_bytes: u64,
    max_blob_bytes: u64,
    /// (host, entry + file name) → the rendered page.
    pub pages: TtlMap<HostKey, Page>,
    /// (host, ACME HTTP-01 token) → its key authorization (None: none in
    /// `DATA`), so a flood of made-up tokens costs no round trip each.
    pub acme: TtlMap<HostKey, Option<bytes::Bytes>>,
    seen_epoch: u64,
}

impl SiteCache {
    pub fn new(ttl: Duration, max_blob_bytes: u64) -> Self {
        Self {
            ttl,
            now: Instant::now(),
            routes: TtlMap::new(MAP_CAP),
            entries: TtlMap::new(MAP_CAP),
            proxies: TtlMap::new(MAP_CAP),
            waf: TtlMap::new(MAP_CAP),
            templates: TtlMap::new(MAP_CAP),
            names: TtlMap::new(MAP_CAP),
            blobs: TtlMap::new(MAP_CAP),
            blob_bytes: 0,
            max_blob_bytes,
            pages: TtlMap::new(MAP_CAP),
            acme: TtlMap::new(MAP_CAP),
            seen_epoch: 0,
        }
    }

    /// Starts a request: reads the clock, and applies control messages
    /// that arrived since the last call.
    pub fn sync(&mut self, control: &Control) {
        self.now = Instant::now();
        let epoch = control.epoch();
        if epoch == self.seen_epoch {
            return;
        }
        match control.since(self.seen_epoch) {
            None => self.clear(),
            Some(scopes) => {
                for scope in scopes {
                    match scope {
                        Scope::All => self.clear(),
                        Scope::Host(host) => self.drop_host(&host),
                        Scope::Stale => self.expire_all(),
                    }
                }
            }
        }
        self.seen_epoch = epoch;
    }

    fn expire_all(&mut self) {
        self.routes.expire_all();
        self.entries.expire_all();
        self.proxies.expire_all();
        self.waf.expire_all();
        self.templates.expire_all();
        self.names.expire_all();
        self.blobs.expire_all();
        self.pages.expire_all();
        self.acme.expire_all();
    }

    fn clear(&mut self) {
        self.routes.clear();
        self.entries.clear();
        self.proxies.clear();
        self.waf.clear();
        self.templates.clear();
        self.names.clear();
        self.blobs.clear();
        self.blob_bytes = 0;
        self.pages.clear();
        self.acme.clear();
    }

    fn drop_host(&mut self, host: &str) {
        self.routes.retain(|h| h != host);
        self.entries.retain(|(h, _)| h != host);
        self.proxies.retain(|h| h != host);
        self.waf.retain(|h| h != host);
        self.templates.retain(|h| h != host);
        self.names.retain(|(h, _)| h != host);
        self.blobs.retain(|(h, _)| h != host);
        self.pages.retain(|(h, _)| h != host);
        // Tokens of every host fall back to `__`'s.
        if host == crate::files::FALLBACK_HOST {
            self.acme.clear();
        } else {
            self.acme.retain(|(h, _)| h != host);
        }
        self.blob_bytes = self
            .blobs
            .values()
            .map(|b| b.content.len() as u64)
            .sum::<u64>()
            + self
                .pages
                .values()
                .map(|p| p.html.len() as u64)
                .sum::<u64>();
    }

    /// Makes room for `size` more bytes of blobs and pages (emptying both
    /// when the budget would be exceeded); false if it can never fit.
    fn budget(&mut self, size: u64) -> bool {
        if size > self.max_blob_bytes {
            return false;
        }
        if self.blob_bytes + size > self.max_blob_bytes {
            self.blobs.clear();
            self.pages.clear();
            self.blob_bytes = 0;
        }
        self.blob_bytes += size;
        true
    }

    pub fn insert_blob(&mut self, key: HostKey, blob: Rc<Blob>) {
        if self.budget(blob.content.len() as u64) {
            self.blobs.insert(key, blob);
        }
    }

    pub fn insert_page(&mut self, key: HostKey, page: Page) {
        if self.budget(page.html.len() as u64) {
            self.pages.insert(key, page);
        }
    }
}
