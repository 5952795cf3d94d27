//! A per-worker cache of hot files, so a cached GET costs no filesystem
//! lookup at all.
//!
//! Small files (below `sendfile_min`, default [`SENDFILE_MIN`]) are kept as
//! bytes and written from memory. Larger ones are kept as an open file
//! descriptor and sent with sendfile(2), straight from the page cache, so
//! big bodies never pass through user space (`cargo xtask bench --send`
//! compares the two on the same files).
//!
//! Entries are rechecked (a confined open and an fstat) once they are older
//! than `revalidate`; a changed identity (device, inode, size, mtime) drops
//! the entry. Each worker has its own cache, so there is no lock; the caps
//! (bytes in memory, descriptors held) are per worker. Eviction is first-in
//! first-out, which is enough to bound them; hot files come straight back.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read as _;
use std::rc::Rc;

use super::respond::Fields;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{FileError, Files, Meta, OpenFile};

/// Default size from which files are sent with sendfile rather than from memory.
pub const SENDFILE_MIN: u64 = 16 * 1024;

/// Most sibling misses remembered per worker.
const MAX_MISSING: usize = 16 * 1024;

/// What a cached file is served from.
pub enum Content {
    /// The whole file, in memory.
    Bytes(Bytes),
    /// An open descriptor, for sendfile.
    File(Rc<File>),
}

/// A cached file.
pub struct Entry {
    pub content: Content,
    pub meta: Meta,
    /// Its validators and type, rendered once.
    pub fields: Fields,
    checked: std::cell::Cell<Instant>,
}

type Key = (String, Vec<u8>);

/// Cache limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest file kept in memory (and largest file cached at all).
    pub max_file: u64,
    /// Total bytes kept in memory.
    pub max_total: u64,
    /// Most descriptors kept open for sendfile.
    pub max_fds: usize,
    /// Files from this size on are sent with sendfile.
    pub sendfile_min: u64,
    /// Age after which an entry is checked against the disk.
    pub revalidate: Duration,
}

pub struct FileCache {
    entries: HashMap<Key, Rc<Entry>>,
    /// Precompressed siblings found missing, and when: not looked for
    /// again before `revalidate` (a hot file without siblings costs no
    /// syscall for them).
    missing: HashMap<Key, Instant>,
    order: VecDeque<Key>,
    bytes: u64,
    fds: usize,
    limits: Limits,
}

impl FileCache {
    pub fn new(limits: Limits) -> Self {
        Self {
            entries: HashMap::new(),
            missing: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            fds: 0,
            limits,
        }
    }

    /// The file for `host` and `rel`, from the cache when fresh. Files too
    /// large to cache come back as an uncached entry.
    pub fn get(
        &mut self,
        files: &mut Files,
        host: &str,
        rel: &[u8],
    ) -> Result<Rc<Entry>, FileError> {
        let now = Instant::now();
        let key: Key = (host.to_owned(), rel.to_vec());
        if let Some(entry) = self.entries.get(&key)
            && now.duration_since(entry.checked.get()) < self.limits.revalidate
        {
            return Ok(Rc::clone(entry));
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
                return Ok(Rc::clone(entry));
            }
            self.remove(&key);
        }
        let fields = Fields::of(&opened.meta);
        let OpenFile { file, meta } = opened;
        let cacheable = meta.size <= self.limits.max_file;
        let content = if meta.size >= self.limits.sendfile_min {
            Content::File(Rc::new(file))
        } else {
            let mut data = Vec::with_capacity(meta.size as usize);
            file.take(meta.size).read_to_end(&mut data)?;
            if data.len() as u64 != meta.size {
                // Changed while we read it: serve what we have, do not cache.
                let meta = Meta {
                    size: data.len() as u64,
                    ..meta
                };
                return Ok(Rc::new(Entry {
                    content: Content::Bytes(Bytes::from(data)),
                    meta,
                    fields,
                    checked: std::cell::Cell::new(now),
                }));
            }
            Content::Bytes(Bytes::from(data))
        };
        let entry = Rc::new(Entry {
            content,
            meta,
            fields,
            checked: std::cell::Cell::new(now),
        });
        if cacheable {
            self.insert(key, Rc::clone(&entry));
        }
        Ok(entry)
    }

    /// The precompressed sibling of `rel` for `coding` (`rel` plus `.br`,
    /// `.zst` or `.gz`), through the cache, with misses remembered for
    /// `revalidate`.
    pub fn sibling(
        &mut self,
        files: &mut Files,
        host: &str,
        rel: &[u8],
        coding: crate::http::coding::Coding,
    ) -> Option<Rc<Entry>> {
        let mut name = Vec::with_capacity(rel.len() + 4);
        name.extend_from_slice(rel);
        name.extend_from_slice(coding.file_suffix().as_bytes());
        let key: Key = (host.to_owned(), name);
        let now = Instant::now();
        if let Some(&when) = self.missing.get(&key) {
            if now.duration_since(when) < self.limits.revalidate {
                return None;
            }
            self.missing.remove(&key);
        }
        match self.get(files, host, &key.1) {
            Ok(entry) => Some(entry),
            Err(_) => {
                // Bounded: a flood of distinct paths only clears it.
                if self.missing.len() >= MAX_MISSING {
                    self.missing.clear();
                }
                self.missing.insert(key, now);
                None
            }
        }
    }

    fn over_limits(&self, entry: &Entry) -> bool {
        match entry.content {
            Content::Bytes(_) => self.bytes + entry.meta.size > self.limits.max_total,
            Content::File(_) => self.fds + 1 > self.limits.max_fds,
        }
    }

    fn insert(&mut self, key: Key, entry: Rc<Entry>) {
        while self.over_limits(&entry) {
            let Some(old) = self.order.pop_front() else {
                return;
            };
            if let Some(e) = self.entries.remove(&old) {
                self.forget(&e);
            }
        }
        match entry.content {
            Content::Bytes(_) => self.bytes += entry.meta.size,
            Content::File(_) => self.fds += 1,
        }
        self.order.push_back(key.clone());
        self.entries.insert(key, entry);
    }

    fn forget(&mut self, e: &Entry) {
        match e.content {
            Content::Bytes(_) => self.bytes -= e.meta.size,
            Content::File(_) => self.fds -= 1,
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.forget(&e);
            self.order.retain(|k| k != key);
        }
    }
}
