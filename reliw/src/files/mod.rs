//! Static files: virtual-host roots, kernel-enforced confinement, metadata,
//! and the small-file cache.
//!
//! Confinement has two fences. [`validate`] refuses bad hosts and paths as
//! strings; then every open is `openat2(root_fd, path, RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)` relative to a directory fd held for the host
//! root, so the kernel refuses any resolution, through `..` or a symlink,
//! that would leave the root, even if the string check had a hole.
//!
//! - [`validate`]: Host and path rules.
//! - [`respond`]: conditional requests, ranges, response heads.
//! - [`cache`]: per-worker cache of small hot files.

pub mod cache;
pub mod respond;
pub mod validate;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Directory under `data_dir` that serves every host as a fallback.
pub const FALLBACK_HOST: &str = "__";

/// How long an open host-root directory fd is reused before reopening
/// (so a root that is replaced on disk is picked up).
const ROOT_TTL: Duration = Duration::from_secs(5);

/// Why no file could be served.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Neither the host root nor the fallback has the path.
    #[error("not found")]
    NotFound,
    /// The kernel refused a resolution that would leave the root.
    #[error("resolution would leave the site root")]
    Escape,
    /// Permission denied on the file.
    #[error("permission denied")]
    Forbidden,
    /// Anything else the filesystem said.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Identity and metadata of an opened file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub modified: SystemTime,
    pub dev: u64,
    pub ino: u64,
    mtime_ns: u128,
    /// The decoded relative path that was opened (for the MIME type).
    pub opened_as: Vec<u8>,
}

impl Meta {
    /// Strong validator from inode, size and mtime in nanoseconds. Chosen
    /// over a content hash because it costs one fstat instead of reading the
    /// whole file, and any write changes the mtime.
    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}-{:x}\"", self.ino, self.size, self.mtime_ns)
    }

    /// MIME type from the extension; text types get a UTF-8 charset.
    pub fn content_type(&self) -> String {
        let path = Path::new(OsStr::from_bytes(&self.opened_as));
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        if mime.type_() == mime_guess::mime::TEXT
            || mime.essence_str() == "application/javascript"
            || mime.essence_str() == "application/json"
        {
            format!("{}; charset=utf-8", mime.essence_str())
        } else {
            mime.essence_str().to_owned()
        }
    }
}

/// An opened regular file and its metadata.
pub struct OpenFile {
    pub file: File,
    pub meta: Meta,
}

struct Root {
    fd: Option<OwnedFd>,
    opened: Instant,
}

/// The site roots of one worker: `data_dir/<host>` and `data_dir/__`.
pub struct Files {
    data_dir: PathBuf,
    roots: HashMap<String, Root>,
}

impl Files {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            roots: HashMap::new(),
        }
    }

    fn root(&mut self, host: &str, now: Instant) -> Option<&OwnedFd> {
        let stale = self
            .roots
            .get(host)
            .is_none_or(|r| now.duration_since(r.opened) > ROOT_TTL);
        if stale {
            let fd = rustix::fs::open(
                self.data_dir.join(host),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok();
            self.roots.insert(host.to_owned(), Root { fd, opened: now });
        }
        self.roots.get(host).and_then(|r| r.fd.as_ref())
    }

    /// Opens `rel` (from [`validate::relative_path`]) for an already
    /// normalised host: the host root first, then the fallback root. A
    /// directory serves its `index.html`, or is not found.
    pub fn open(&mut self, host: &str, rel: &[u8]) -> Result<OpenFile, FileError> {
        let now = Instant::now();
        let mut result = Err(FileError::NotFound);
        for root_name in [host, FALLBACK_HOST] {
            let Some(root) = self.root(root_name, now) else {
                continue;
            };
            result = open_beneath(root, rel);
            match &result {
                Err(FileError::NotFound) => continue,
                Err(FileError::Escape) => {
                    tracing::warn!(
                        host,
                        path = %String::from_utf8_lossy(rel),
                        "refused a path that resolves outside the site root"
                    );
                    continue;
                }
                _ => break,
            }
        }
        match result {
            Err(FileError::Escape) => Err(FileError::NotFound),
            other => other,
        }
    }
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

fn open_flags() -> OFlags {
    // NONBLOCK: opening a FIFO planted in the root must not hang a worker.
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

fn map_errno(e: Errno) -> FileError {
    match e {
        Errno::NOENT | Errno::NOTDIR | Errno::NAMETOOLONG | Errno::LOOP => FileError::NotFound,
        Errno::XDEV => FileError::Escape,
        Errno::ACCESS | Errno::PERM => FileError::Forbidden,
        e => FileError::Io(e.into()),
    }
}

fn open_beneath(root: &OwnedFd, rel: &[u8]) -> Result<OpenFile, FileError> {
    let path: &OsStr = if rel.is_empty() {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(rel)
    };
    let fd = rustix::fs::openat2(root, path, open_flags(), Mode::empty(), resolve_flags())
        .map_err(map_errno)?;
    let file = File::from(fd);
    let md = file.metadata()?;
    if md.is_dir() {
        let mut index = rel.to_vec();
        if !index.is_empty() {
            index.push(b'/');
        }
        index.extend_from_slice(b"index.html");
        let fd = rustix::fs::openat2(
            root,
            OsStr::from_bytes(&index),
            open_flags(),
            Mode::empty(),
            resolve_flags(),
        )
        .map_err(map_errno)?;
        let file = File::from(fd);
        let md = file.metadata()?;
        return regular(file, &md, index);
    }
    regular(file, &md, rel.to_vec())
}

fn regular(file: File, md: &std::fs::Metadata, opened_as: Vec<u8>) -> Result<OpenFile, FileError> {
    if !md.is_file() {
        return Err(FileError::NotFound);
    }
    let mtime_ns = u128::try_from(md.mtime()).unwrap_or(0) * 1_000_000_000
        + u128::try_from(md.mtime_nsec()).unwrap_or(0);
    let modified = md.modified().unwrap_or(UNIX_EPOCH);
    Ok(OpenFile {
        file,
        meta: Meta {
            size: md.len(),
            modified,
            dev: md.dev(),
            ino: md.ino(),
            mtime_ns,
            opened_as,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (PathBuf, Files) {
        let dir = std::env::temp_dir().join(format!(
            "reliw-files-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let w = |p: &str, c: &str| {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap_or(&dir))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(path, c).unwrap_or_else(|e| panic!("{e}"));
        };
        w("example.com/a.txt", "host a");
        w("example.com/dir/index.html", "index");
        w("__/a.txt", "fallback a");
        w("__/b.txt", "fallback b");
        w("secret.txt", "outside");
        std::os::unix::fs::symlink(dir.join("secret.txt"), dir.join("example.com/escape"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("../secret.txt", dir.join("example.com/relative-escape"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("a.txt", dir.join("example.com/inside"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.join("example.com/empty")).unwrap_or_else(|e| panic!("{e}"));
        let files = Files::new(dir.clone());
        (dir, files)
    }

    fn read(files: &mut Files, host: &str, path: &[u8]) -> Result<String, String> {
        match files.open(host, path) {
            Ok(f) => Ok(std::io::read_to_string(f.file).unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn host_root_then_fallback_then_not_found() {
        let (dir, mut f) = site();
        assert_eq!(read(&mut f, "example.com", b"a.txt"), Ok("host a".into()));
        assert_eq!(
            read(&mut f, "example.com", b"b.txt"),
            Ok("fallback b".into())
        );
        assert_eq!(read(&mut f, "other.org", b"a.txt"), Ok("fallback a".into()));
        assert_eq!(
            read(&mut f, "example.com", b"c.txt"),
            Err("not found".into())
        );
        assert_eq!(read(&mut f, "example.com", b"dir"), Ok("index".into()));
        assert_eq!(
            read(&mut f, "example.com", b"empty"),
            Err("not found".into())
        );
        assert_eq!(read(&mut f, "example.com", b"inside"), Ok("host a".into()));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused_by_the_kernel() {
        let (dir, mut f) = site();
        assert_eq!(
            read(&mut f, "example.com", b"escape"),
            Err("not found".into())
        );
        assert_eq!(
            read(&mut f, "example.com", b"relative-escape"),
            Err("not found".into())
        );
        // Even a '..' that slipped past string validation stays inside.
        assert_eq!(
            read(&mut f, "example.com", b"../secret.txt"),
            Err("not found".into())
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn etags_change_with_the_file() {
        let (dir, mut f) = site();
        let before = f
            .open("example.com", b"a.txt")
            .map(|o| o.meta.etag())
            .unwrap_or_default();
        std::fs::write(dir.join("example.com/a.txt"), "host a, changed")
            .unwrap_or_else(|e| panic!("{e}"));
        let after = f
            .open("example.com", b"a.txt")
            .map(|o| o.meta.etag())
            .unwrap_or_default();
        assert_ne!(before, after);
        assert!(before.starts_with('"') && before.ends_with('"'));
        let _ = std::fs::remove_dir_all(dir);
    }
}
