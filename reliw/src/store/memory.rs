//! The embedded store: RELIW keys in process, for a single node with no
//! Redis. Loaded from a site file: a JSON object whose keys are full RELIW
//! keys (`RLW:API:localhost`, ...). String keys take JSON arrays and objects
//! as their JSON text (that is how RELIW stores them in Redis); hash keys
//! (see [`super::is_hash_key`]) take objects whose values become fields.
//!
//! One instance is shared by all workers (a mutex; every operation is a few
//! map lookups). Expired keys vanish on access.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Store, StoreError};

#[derive(Clone, Debug)]
enum Data {
    Text(Vec<u8>),
    Hash(BTreeMap<String, Vec<u8>>),
}

#[derive(Clone, Debug)]
struct Entry {
    data: Data,
    expires: Option<Instant>,
}

/// Why a site file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SiteFileError {
    #[error("cannot read site file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("site file {path}: {detail}")]
    Invalid { path: String, detail: String },
}

/// Most fields a hash grows to through `hincr_batch`.
pub const MAX_HASH_FIELDS: usize = 100_000;

/// The in-process store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    /// Messages published, for the control channel and tests.
    published: Mutex<Vec<(String, Vec<u8>)>>,
}

fn text_of(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a site file; `prefix` (e.g. `RLW`) tells hash keys apart.
    pub fn from_site_file(path: &Path, prefix: &str) -> Result<Self, SiteFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| SiteFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text, prefix).map_err(|detail| SiteFileError::Invalid {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Loads site data from JSON text.
    pub fn from_json(text: &str, prefix: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let Value::Object(keys) = value else {
            return Err(String::from("the site file must be a JSON object of keys"));
        };
        let store = Self::new();
        let mut entries = store.lock();
        let head = format!("{prefix}:");
        for (key, v) in keys {
            let bare = key.strip_prefix(&head).unwrap_or(&key);
            let data = if super::is_hash_key(bare) {
                let Value::Object(fields) = v else {
                    return Err(format!("'{key}' is a hash: give it an object of fields"));
                };
                Data::Hash(
                    fields
                        .iter()
                        .map(|(f, v)| (f.clone(), text_of(v)))
                        .collect(),
                )
            } else {
                Data::Text(text_of(&v))
            };
            entries.insert(
                key,
                Entry {
                    data,
                    expires: None,
                },
            );
        }
        drop(entries);
        Ok(store)
    }

    /// Replaces the keys from the site file (counters and cache records
    /// written since start are dropped with the rest); on error nothing
    /// changes.
    pub fn reload(&self, path: &Path, prefix: &str) -> Result<(), SiteFileError> {
        let fresh = Self::from_site_file(path, prefix)?;
        let entries = std::mem::take(&mut *fresh.lock());
        *self.lock() = entries;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What was published, oldest first.
    pub fn published(&self) -> Vec<(String, Vec<u8>)> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The live entry for `key`, dropping it if expired.
fn live<'a>(entries: &'a mut HashMap<String, Entry>, key: &str) -> Option<&'a mut Entry> {
    let now = Instant::now();
    if entries
        .get(key)
        .is_some_and(|e| e.expires.is_some_and(|t| t <= now))
    {
        entries.remove(key);
    }
    entries.get_mut(key)
}

fn wrong_type(key: &str) -> StoreError {
    StoreError::Backend(format!("WRONGTYPE operation against key {key}"))
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match live(&mut self.lock(), key).map(|e| e.data.clone()) {
            None => Ok(None),
            Some(Data::Text(t)) => Ok(Some(t)),
            Some(Data::Hash(_)) => Err(wrong_type(key)),
        }
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match live(&mut self.lock(), key).map(|e| &e.data) {
            None => Ok(None),
            Some(Data::Hash(h)) => Ok(h.get(field).cloned()),
            Some(Data::Text(_)) => Err(wrong_type(key)),
        }
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match live(&mut self.lock(), key).map(|e| &e.data) {
            None => Ok(Vec::new()),
            Some(Data::Hash(h)) => Ok(h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            Some(Data::Text(_)) => Err(wrong_type(key)),
        }
    }

    async fn hset_with_ttl(
        &self,
        key: &str,
        fields: &[(&str, &[u8])],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut entries = self.lock();
        let entry = match live(&mut entries, key) {
            Some(e) => e,
            None => entries.entry(key.to_owned()).or_insert(Entry {
                data: Data::Hash(BTreeMap::new()),
                expires: None,
            }),
        };
        let Data::Hash(h) = &mut entry.data else {
            return Err(wrong_type(key));
        };
        for (f, v) in fields {
            h.insert((*f).to_owned(), v.to_vec());
        }
        entry.expires = Some(Instant::now() + ttl);
        Ok(())
    }

    async fn set_with_ttl(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.lock().insert(
            key.to_owned(),
            Entry {
                data: Data::Text(value.to_vec()),
                expires: Some(Instant::now() + ttl),
            },
        );
        Ok(())
    }

    async fn set_nx_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut entries = self.lock();
        if live(&mut entries, key).is_some() {
            return Ok(false);
        }
        entries.insert(
            key.to_owned(),
            Entry {
                data: Data::Text(value.to_vec()),
                expires: Some(Instant::now() + ttl),
            },
        );
        Ok(true)
    }

    async fn del_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let mut entries = self.lock();
        let holds = matches!(live(&mut entries, key), Some(Entry { data: Data::Text(t), .. }) if t == value);
        if holds {
            entries.remove(key);
        }
        Ok(holds)
    }

    async fn del(&self, key: &str) -> Result<bool, StoreError> {
        let mut entries = self.lock();
        let existed = live(&mut entries, key).is_some();
        entries.remove(key);
        Ok(existed)
    }

    async fn incr_window(&self, key: &str, window: Duration) -> Result<i64, StoreError> {
        let mut entries = self.lock();
        let entry = match live(&mut entries, key) {
            Some(e) => e,
            None => entries.entry(key.to_owned()).or_insert(Entry {
                data: Data::Text(b"0".to_vec()),
                expires: Some(Instant::now() + window),
            }),
        };
        let Data::Text(t) = &mut entry.data else {
            return Err(wrong_type(key));
        };
        let n: i64 = std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Backend(format!("{key} is not an integer")))?;
        let n = n.saturating_add(1);
        *t = n.to_string().into_bytes();
        Ok(n)
    }

    async fn hincr_batch(
        &self,
        increments: &[(String, String, i64)],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let mut entries = self.lock();
        let mut values = Vec::with_capacity(increments.len());
        for (key, field, by) in increments {
            let entry = match live(&mut entries, key) {
                Some(e) => e,
                None => entries.entry(key.clone()).or_insert(Entry {
                    data: Data::Hash(BTreeMap::new()),
                    expires: None,
                }),
            };
            let Data::Hash(h) = &mut entry.data else {
                return Err(wrong_type(key));
            };
            // Request counters take client-chosen fields (paths): past a
            // bound, new fields are not created, so a scanner cannot grow
            // the process without limit. Redis is bounded by its maxmemory.
            if h.len() >= MAX_HASH_FIELDS && !h.contains_key(field) {
                values.push(Some(0));
                continue;
            }
            let slot = h.entry(field.clone()).or_insert_with(|| b"0".to_vec());
            let n: i64 = std::str::from_utf8(slot)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let n = n.saturating_add(*by);
            *slot = n.to_string().into_bytes();
            values.push(Some(n));
        }
        Ok(values)
    }

    async fn scan(
        &self,
        pattern: &str,
        _count: u32,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        let mut keys: Vec<String> = self
            .lock()
            .iter()
            .filter(|(k, e)| e.expires.is_none_or(|t| t > now) && glob(pattern, k))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }

    async fn publish(&self, channel: &str, message: &[u8]) -> Result<i64, StoreError> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((channel.to_owned(), message.to_vec()));
        Ok(0)
    }
}

/// Redis MATCH with `*` only (what reliw asks for).
fn glob(pattern: &str, key: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = key.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_hashes_stop_growing_at_the_bound() {
        use crate::store::Store as _;
        let store = super::MemoryStore::new();
        let batch: Vec<(String, String, i64)> = (0..super::MAX_HASH_FIELDS + 10)
            .map(|i| ("RLW:METRICS:h:by_request".to_owned(), format!("/{i}"), 1))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread().build();
        let rt = rt.unwrap_or_else(|e| panic!("{e}"));
        let values = rt.block_on(store.hincr_batch(&batch));
        let values = values.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            values.iter().filter(|v| **v == Some(1)).count(),
            super::MAX_HASH_FIELDS
        );
        let again = rt.block_on(store.hincr_batch(&batch[..1]));
        assert_eq!(
            again.ok(),
            Some(vec![Some(2)]),
            "existing fields still count"
        );
        let all = rt.block_on(store.hgetall("RLW:METRICS:h:by_request"));
        assert_eq!(all.map(|a| a.len()).ok(), Some(super::MAX_HASH_FIELDS));
    }

    #[test]
    fn glob_matches_like_redis_star() {
        use super::glob;
        assert!(glob("RLW:METRICS:*:total", "RLW:METRICS:a.b:total"));
        assert!(glob("RLW:METRICS:*:total", "RLW:METRICS::total"));
        assert!(!glob("RLW:METRICS:*:total", "RLW:METRICS:a:by_method"));
        assert!(!glob("RLW:METRICS:*:total", "RLW:METRICS:total"));
        assert!(glob("a*b*c", "a-b-b-c"));
        assert!(glob("abc", "abc") && !glob("abc", "abcd"));
    }
}
