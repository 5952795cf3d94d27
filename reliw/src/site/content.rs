//! Content as RELIW keeps it: which file a request names, and the `FILES`
//! record of it (content, sha256 hash, size, MIME type, title).

use std::rc::Rc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::meta::EntryMeta;
use crate::files::validate::relative_path;

/// A file's content and what RELIW records with it in `P:FILES:<host>:<name>`.
#[derive(Debug)]
pub struct Blob {
    pub content: Bytes,
    /// Lower-case hex SHA-256 of the content (RELIW's ETag value).
    pub hash: String,
    /// MIME type without parameters (`text/markdown`).
    pub mime: String,
    pub title: String,
    /// `"<hash>"` and the Content-Type for the raw content, rendered once.
    pub etag: Rc<str>,
    pub content_type: Rc<str>,
    /// The key its encoded forms are cached under: the hash when reliw
    /// computed it; with the name and size too when it came from a
    /// `FILES` record (which anyone with the store can write).
    pub form_key: Rc<str>,
}

impl Blob {
    pub fn new(content: Bytes, mime: String, title: String) -> Self {
        let mut blob = Self::with_hash(sha256_hex(&content), content, mime, title);
        blob.form_key = Rc::clone(&blob.etag);
        blob
    }

    fn with_hash(hash: String, content: Bytes, mime: String, title: String) -> Self {
        let etag: Rc<str> = Rc::from(format!("\"{hash}\""));
        Self {
            form_key: Rc::from(format!("{hash}\0{}\0{mime}", content.len())),
            etag,
            content_type: Rc::from(content_type(&mime)),
            hash,
            content,
            mime,
            title,
        }
    }

    /// From the fields of a `FILES` hash; `None` without `content`.
    pub fn from_fields(name: &str, fields: Vec<(String, Vec<u8>)>) -> Option<Self> {
        let mut content = None;
        let (mut hash, mut mime, mut title) = (None, None, String::new());
        for (field, value) in fields {
            match field.as_str() {
                "content" => content = Some(Bytes::from(value)),
                "hash" => hash = String::from_utf8(value).ok(),
                "mime" => mime = String::from_utf8(value).ok(),
                "title" => title = String::from_utf8_lossy(&value).into_owned(),
                _ => {}
            }
        }
        let content = content?;
        let hash = hash
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| sha256_hex(&content));
        let mime = mime
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| mime_of(name));
        let mut blob = Self::with_hash(hash, content, mime, title);
        blob.form_key = Rc::from(format!("{name}\0{}", blob.form_key));
        Some(blob)
    }

    /// Whether this is markdown or djot (rendered to HTML).
    pub fn is_markup(&self) -> bool {
        matches!(self.mime.as_str(), "text/markdown" | "text/djot")
    }
}

/// Whether a file is processed (rendered or run) rather than sent as it
/// is: markdown, djot and Lua, by RELIW's MIME types.
pub fn is_processed(name: &str) -> bool {
    is_processed_type(&mime_of(name))
}

fn is_processed_type(mime: &str) -> bool {
    matches!(mime, "text/markdown" | "text/djot" | "application/lua")
}

impl Name {
    /// [`is_processed`], from the type worked out at parse.
    pub fn is_processed(&self) -> bool {
        is_processed_type(&self.mime)
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// RELIW's MIME table (its `std.mime`), by extension.
const RELIW_TYPES: &[(&str, &[&str])] = &[
    ("text/html", &["html", "htm", "shtml"]),
    ("text/css", &["css"]),
    (
        "text/plain",
        &["txt", "c", "cpp", "rs", "go", "h", "sh", "lsh"],
    ),
    ("text/calendar", &["ics"]),
    ("text/xml", &["xml"]),
    ("text/csv", &["csv"]),
    ("text/markdown", &["md", "markdown"]),
    ("text/djot", &["dj", "djot"]),
    ("text/javascript", &["js"]),
    ("font/woff", &["woff"]),
    ("font/woff2", &["woff2"]),
    ("font/otf", &["otf"]),
    ("font/ttf", &["ttf"]),
    ("image/gif", &["gif"]),
    ("image/png", &["png"]),
    ("image/heic", &["heic"]),
    ("image/jpeg", &["jpg", "jpeg"]),
    ("image/tiff", &["tif", "tiff"]),
    ("image/x-icon", &["ico"]),
    ("image/svg+xml", &["svg", "svgz"]),
    ("image/webp", &["webp"]),
    ("audio/mpeg", &["mp3"]),
    ("audio/ogg", &["ogg"]),
    ("audio/wav", &["wav"]),
    ("video/x-msvideo", &["avi"]),
    ("video/mpeg", &["mpeg"]),
    ("video/mp4", &["mp4"]),
    ("video/x-matroska", &["mkv"]),
    ("video/webm", &["webm"]),
    ("application/atom+xml", &["atom"]),
    ("application/rss+xml", &["rss"]),
    ("application/json", &["json"]),
    ("application/lua", &["lua"]),
    ("application/pdf", &["pdf"]),
    ("application/zip", &["zip"]),
    ("application/x-tar", &["tar"]),
    ("application/x-bzip", &["bz"]),
    ("application/x-bzip2", &["bz2"]),
    ("application/gzip", &["gz", "gzip"]),
    ("application/epub+zip", &["epub"]),
    (
        "application/octet-stream",
        &["bin", "exe", "dll", "iso", "img", "dmg"],
    ),
];

/// RELIW's MIME type for a file name (its table, extensions in any case);
/// for an extension RELIW did not know, the usual type where there is one
/// (RELIW said `application/octet-stream`: `.wasm`, `.mjs`, `.avif` ...).
pub fn mime_of(name: &str) -> String {
    let ext = name
        .rsplit_once('.')
        .map_or("", |(_, e)| e)
        .to_ascii_lowercase();
    if let Some((mime, _)) = RELIW_TYPES
        .iter()
        .find(|(_, exts)| exts.contains(&ext.as_str()))
    {
        return (*mime).to_owned();
    }
    mime_guess::from_ext(&ext)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

/// The `Content-Type` for a MIME type: text gets a UTF-8 charset.
pub fn content_type(mime: &str) -> String {
    if mime.starts_with("text/")
        || mime == "application/javascript"
        || mime == "application/json"
        || mime.ends_with("+xml")
    {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

/// A file name as RELIW keys it (`/dir/file.md` from a path, `file.md`
/// from an entry's `file`) and the relative path opened under the host root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    pub key: String,
    pub rel: Vec<u8>,
    /// Its MIME type by RELIW's table ([`mime_of`]), worked out once.
    pub mime: String,
}

impl Name {
    /// Validates a name from a request path or metadata (the same rules
    /// as request paths: no `..`, no control bytes, no encoded separators).
    pub fn parse(name: &str) -> Option<Self> {
        let with_slash = if name.starts_with('/') {
            name.to_owned()
        } else {
            format!("/{name}")
        };
        let rel = relative_path(&with_slash).ok()?;
        if rel.is_empty() {
            return None;
        }
        // RELIW keys FILES and TITLES by the name as written: with the
        // leading `/` of a request path, without it for an entry's `file`.
        let lead = if name.starts_with('/') { "/" } else { "" };
        let key = format!("{lead}{}", String::from_utf8_lossy(&rel));
        let mime = mime_of(&key);
        Some(Self { key, rel, mime })
    }

    pub fn with_suffix(&self, suffix: &str) -> Option<Self> {
        Self::parse(&format!("{}{suffix}", self.key))
    }
}

/// The name a request asks for before any disk check: the entry's `file`,
/// or the path, with the entry's `index` when the path ends in `/`.
pub fn base_name(meta: &EntryMeta, path: &str) -> Option<Name> {
    if let Some(file) = &meta.file {
        return Name::parse(file);
    }
    match (&meta.index, path.ends_with('/')) {
        (Some(index), true) => Name::parse(&format!("{path}{index}")),
        _ => Name::parse(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(json: &str) -> EntryMeta {
        EntryMeta::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names() {
        let m = meta(r#"{"methods": {"GET": true}, "index": "index.md"}"#);
        assert_eq!(
            base_name(&m, "/blog/").map(|n| n.key),
            Some("/blog/index.md".into())
        );
        assert_eq!(
            base_name(&m, "/a.css").map(|n| n.key),
            Some("/a.css".into())
        );
        let m = meta(r#"{"methods": {"GET": true}, "file": "pages/home.dj"}"#);
        assert_eq!(
            base_name(&m, "/anything").map(|n| n.key),
            Some("pages/home.dj".into()),
            "no leading slash added (RELIW's FILES and TITLES names)"
        );
        let m = meta(r#"{"methods": {"GET": true}, "file": "../etc/passwd"}"#);
        assert_eq!(base_name(&m, "/"), None);
        let m = meta(r#"{"methods": {"GET": true}}"#);
        assert_eq!(base_name(&m, "/"), None, "a bare directory names no file");
    }

    #[test]
    fn mime_and_hash() {
        assert_eq!(mime_of("/a.dj"), "text/djot");
        assert_eq!(mime_of("/a.md"), "text/markdown");
        assert_eq!(mime_of("/a.lua"), "application/lua");
        assert_eq!(mime_of("/a.css"), "text/css");
        assert_eq!(mime_of("/a.JS"), "text/javascript");
        assert_eq!(mime_of("/main.rs"), "text/plain");
        assert_eq!(mime_of("/f.ico"), "image/x-icon");
        assert_eq!(mime_of("/x.gz"), "application/gzip");
        assert_eq!(mime_of("/m.wasm"), "application/wasm");
        assert_eq!(mime_of("/a"), "application/octet-stream");
        assert_eq!(content_type("text/css"), "text/css; charset=utf-8");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let b = Blob::from_fields("/x.md", vec![("content".into(), b"abc".to_vec())]);
        let b = b.unwrap_or_else(|| panic!("blob"));
        assert_eq!((b.mime.as_str(), b.hash.len()), ("text/markdown", 64));
        assert!(Blob::from_fields("/x", vec![("hash".into(), b"h".to_vec())]).is_none());
    }
}
