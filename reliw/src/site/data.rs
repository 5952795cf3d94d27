//! The one seam to cached site data: every step reads routes, entries,
//! proxy targets, WAF rules and looks through these, from the worker's
//! [`super::cache::SiteCache`] within its TTL, else from the store (and
//! the stale copy when the store fails).

use super::Site;
use super::cache;
use super::cache::EntryState;
use super::cache::HostPair;
use super::cache::Lookup;
use super::cache::SiteCache;
use super::cache::TtlMap;
use super::content;
use super::meta::EntryMeta;
use super::routes::Routes;
use crate::look::Look;
use crate::proxy::ProxyTarget;
use crate::render::Template;
use crate::store::Backend;
use crate::store::Store as _;
use crate::store::StoreError;
use crate::waf::RuleSet;
use std::future::Future;
use std::hash::Hash;
use std::rc::Rc;

impl Site {
    /// Looks `key` up in one of the cache's maps; on a miss or an expired
    /// entry runs `fetch`, and if that fails serves the expired entry (and
    /// keeps it for another TTL, so an outage costs one failed call per
    /// TTL, not one per request).
    pub(in crate::site) async fn cached<K, Q, V, F>(
        &self,
        map: fn(&mut SiteCache) -> &mut TtlMap<K, V>,
        lookup: &Q,
        key: impl FnOnce() -> K,
        fetch: impl FnOnce() -> F,
    ) -> Result<V, StoreError>
    where
        K: Eq + Hash + std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
        V: Clone,
        F: Future<Output = Result<V, StoreError>>,
    {
        let found = {
            let mut cache = self.cache.borrow_mut();
            let (ttl, now) = (cache.ttl, cache.now);
            map(&mut cache).get(lookup, ttl, now)
        };
        let stale = match found {
            Lookup::Fresh(v) => {
                self.node.cache("hit");
                return Ok(v);
            }
            Lookup::Stale(v) => Some(v),
            Lookup::Missing => None,
        };
        match fetch().await {
            Ok(v) => {
                self.node.cache("miss");
                map(&mut self.cache.borrow_mut()).insert(key(), v.clone());
                Ok(v)
            }
            Err(e) => match stale {
                Some(v) => {
                    self.store_failed("fresh site data; serving the cached copy", &e);
                    self.node.cache("stale");
                    map(&mut self.cache.borrow_mut()).insert(key(), v.clone());
                    Ok(v)
                }
                None => Err(e),
            },
        }
    }

    pub(in crate::site) async fn routes(
        &self,
        store: &Backend,
        host: &str,
    ) -> Result<Option<Rc<Routes>>, StoreError> {
        self.cached(
            |c| &mut c.routes,
            host,
            || host.to_owned(),
            || async move {
                let key = self.keys.routes(host);
                let Some(json) = store.get(&key).await? else {
                    return Ok(None);
                };
                match Routes::parse(&json) {
                    Ok((routes, warnings)) => {
                        for w in warnings {
                            tracing::error!(key, "{w}");
                        }
                        Ok(Some(Rc::new(routes)))
                    }
                    Err(e) => {
                        tracing::error!(key, "routes ignored: {e}");
                        Ok(None)
                    }
                }
            },
        )
        .await
    }

    pub(in crate::site) async fn entry(
        &self,
        store: &Backend,
        host: &str,
        id: &str,
    ) -> Result<EntryState, StoreError> {
        self.cached(
            |c| &mut c.entries,
            &(host, id) as &dyn HostPair,
            || (host.to_owned(), id.to_owned()),
            || async move {
                let key = self.keys.entry(host, id);
                Ok(match store.get(&key).await? {
                    None => EntryState::Missing,
                    Some(json) => match EntryMeta::parse(&json) {
                        Ok(m) => EntryState::Valid(Rc::new(m)),
                        Err(e) => EntryState::Invalid(Rc::from(e.to_string())),
                    },
                })
            },
        )
        .await
    }

    pub(in crate::site) async fn proxy(
        &self,
        store: &Backend,
        host: &str,
    ) -> Result<cache::ProxyEntry, StoreError> {
        self.cached(
            |c| &mut c.proxies,
            host,
            || host.to_owned(),
            || async move {
                let key = self.keys.proxy(host);
                Ok(store
                    .get(&key)
                    .await?
                    .map(|v| ProxyTarget::parse(&v).map(Rc::new).map_err(Rc::from)))
            },
        )
        .await
    }

    pub(in crate::site) async fn waf_rules(
        &self,
        store: &Backend,
        host: &str,
    ) -> Result<Rc<Vec<RuleSet>>, StoreError> {
        self.cached(
            |c| &mut c.waf,
            host,
            || host.to_owned(),
            || async move {
                let key = self.keys.waf();
                let mut sets = Vec::new();
                for field in [crate::files::FALLBACK_HOST, host] {
                    let Some(json) = store.hget(&key, field).await? else {
                        continue;
                    };
                    match RuleSet::parse(&json) {
                        Ok((set, warnings)) => {
                            for w in warnings {
                                tracing::error!(key, field, "{w}");
                            }
                            sets.push(set);
                        }
                        Err(e) => tracing::error!(key, field, "WAF rule set ignored: {e}"),
                    }
                }
                Ok(Rc::new(sets))
            },
        )
        .await
    }

    /// The host's look: for the host, then for `__`, RELIW's
    /// `DATA:<h>:template.lua` (run once per cache fill), else reliw's
    /// `DATA:<h>:template`. A broken one is logged and the built-in used.
    pub(in crate::site) async fn template(
        &self,
        store: &Backend,
        host: &str,
    ) -> Result<Option<Rc<Look>>, StoreError> {
        let mut keys = Vec::with_capacity(4);
        for h in [host, crate::files::FALLBACK_HOST] {
            keys.push((true, self.keys.data(h, "template.lua")));
            keys.push((false, self.keys.data(h, "template")));
        }
        self.cached(
            |c| &mut c.templates,
            host,
            || host.to_owned(),
            || async move {
                for (is_lua, key) in &keys {
                    let Some(text) = store.get(key).await? else {
                        continue;
                    };
                    let parsed = if *is_lua {
                        let hash = content::sha256_hex(&text);
                        self.with_lua(|rt| crate::lua::template::sections(rt, key, &hash, &text))
                            .map(Look::Sections)
                            .map_err(|e| e.to_string())
                    } else {
                        std::str::from_utf8(&text)
                            .map_err(|e| e.to_string())
                            .and_then(|t| Template::parse(t).map_err(|e| e.to_string()))
                            .map(Look::Text)
                    };
                    return Ok(match parsed {
                        Ok(look) => Some(Rc::new(look)),
                        Err(e) => {
                            tracing::error!(key, "template ignored, using the built-in one: {e}");
                            None
                        }
                    });
                }
                Ok(None)
            },
        )
        .await
    }
}
