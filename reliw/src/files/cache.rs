//! A per-worker cache of small hot files: contents plus validators, so a
//! cached GET costs no filesystem call at all.
//!
//! Entries are rechecked (a confined open and an fstat) once they are older
//! than `revalidate`; a changed identity (device, inode, size, mtime) drops
//! the entry. Each worker has its own cache, so there is no lock; the memory
//! cap is per worker. Eviction is first-in first-out, which is enough to
//! bound memory; hot files come straight back.

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{FileError, Files, Meta, OpenFile};

/// A cached file.
pub struct Entry {
    pub data: Bytes,
    pub meta: Meta,
    pub etag: String,
    pub content_type: String,
    checked: std::cell::Cell<Instant>,
}

/// What to serve: cached bytes or an open file (too large to cache).
pub enum Served {
    Cached(Rc<Entry>),
    Open {
        file: OpenFile,
        etag: String,
        content_type: String,
    },
}

type Key = (String, Vec<u8>);

/// Cache limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest file kept.
    pub max_file: u64,
    /// Total bytes kept.
    pub max_total: u64,
    /// Age after which an entry is checked against the disk.
    pub revalidate: Duration,
}

pub struct FileCache {
    entries: HashMap<Key, Rc<Entry>>,
    order: VecDeque<Key>,
    total: u64,
    limits: Limits,
}

impl FileCache {
    pub fn new(limits: Limits) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            total: 0,
            limits,
        }
    }

    /// The file for `host` and `rel`, from the cache when fresh.
    pub fn get(&mut self, files: &mut Files, host: &str, rel: &[u8]) -> Result<Served, FileError> {
        let now = Instant::now();
        let key: Key = (host.to_owned(), rel.to_vec());
        if let Some(entry) = self.entries.get(&key)
            && now.duration_since(entry.checked.get()) < self.limits.revalidate
        {
            return Ok(Served::Cached(Rc::clone(entry)));
        }
        let opened = match files.open(host, rel) {
            Ok(o) => o,
            Err(e) => {
                self.remove(&key);
                return Err(e);
            }
        };
        if let Some(entry) = self.entries.get(&key) {
            if entry.meta == opened.meta {
                entry.checked.set(now);
                return Ok(Served::Cached(Rc::clone(entry)));
            }
            self.remove(&key);
        }
        let etag = opened.meta.etag();
        let content_type = opened.meta.content_type();
        if opened.meta.size > self.limits.max_file || opened.meta.size > self.limits.max_total {
            return Ok(Served::Open {
                file: opened,
                etag,
                content_type,
            });
        }
        let mut data = Vec::with_capacity(opened.meta.size as usize);
        let OpenFile { file, meta } = opened;
        file.take(meta.size).read_to_end(&mut data)?;
        if data.len() as u64 != meta.size {
            // Changed while we read it: serve what we have, do not cache.
            let size = data.len() as u64;
            let meta = Meta { size, ..meta };
            return Ok(Served::Cached(Rc::new(Entry {
                data: Bytes::from(data),
                meta,
                etag,
                content_type,
                checked: std::cell::Cell::new(now),
            })));
        }
        let entry = Rc::new(Entry {
            data: Bytes::from(data),
            meta,
            etag,
            content_type,
            checked: std::cell::Cell::new(now),
        });
        self.insert(key, Rc::clone(&entry));
        Ok(Served::Cached(entry))
    }

    fn insert(&mut self, key: Key, entry: Rc<Entry>) {
        let size = entry.meta.size;
        while self.total + size > self.limits.max_total {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(e) = self.entries.remove(&old) {
                self.total -= e.meta.size;
            }
        }
        self.total += size;
        self.order.push_back(key.clone());
        self.entries.insert(key, entry);
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.total -= e.meta.size;
            self.order.retain(|k| k != key);
        }
    }

    /// Bytes held.
    pub fn total(&self) -> u64 {
        self.total
    }
}
