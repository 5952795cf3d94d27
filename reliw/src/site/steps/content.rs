//! The content step, last: the file an entry names (RELIW's `file`,
//! index, `try_extensions`, `gsub`), read from the in-process copy, the
//! store's `FILES` or the disk; markup rendered through the host's look,
//! Lua pages run; validators, `Cache-Control` and 304. Also the `static`
//! backend's plain file serving. (ACME tokens are answered before the WAF:
//! `steps::acme`.)

use super::encode;
use crate::compress::eligible_type;
use crate::config::CompressionSection;
use crate::files::FileError;
use crate::files::Files;
use crate::files::cache::Content;
use crate::files::cache::Entry;
use crate::files::cache::FileCache;
use crate::files::respond::BodyPlan;
use crate::files::respond::DEFAULT_CACHE_CONTROL;
use crate::files::respond::plan;
use crate::files::validate::relative_path;
use crate::http::BodyFraming;
use crate::http::HeaderValue;
use crate::http::Method;
use crate::http::RequestHead;
use crate::http::ResponseHead;
use crate::http::Status;
use crate::http::coding::{Accepted, tag_names};
use crate::http::coding::{Choice, Coding};
use crate::look::Look;
use crate::lua::LuaError;
use crate::lua::LuaRuntime;
use crate::metrics::NodeMetrics;
use crate::site::Body;
use crate::site::Ctx;
use crate::site::RequestBody;
use crate::site::Response;
use crate::site::Site;
use crate::site::cache::HostKey;
use crate::site::cache::HostPair;
use crate::site::cache::Lookup;
use crate::site::cache::Page;
use crate::site::content;
use crate::site::content::Blob;
use crate::site::content::Name;
use crate::site::meta::EntryMeta;
use crate::site::page;
use crate::site::request_host;
use crate::store::Backend;
use crate::store::Store as _;
use crate::store::StoreError;
use bytes::Bytes;
use std::rc::Rc;
use std::time::Duration;

impl Site {
    /// Runs `f` on this worker's Lua VM (made on first use).
    pub(in crate::site) fn with_lua<R>(
        &self,
        f: impl FnOnce(&mut LuaRuntime) -> Result<R, LuaError>,
    ) -> Result<R, LuaError> {
        let mut slot = self.lua.borrow_mut();
        let rt = match &mut *slot {
            Some(rt) => rt,
            empty => empty.insert(LuaRuntime::new(self.lua_limits)?),
        };
        f(rt)
    }

    /// A Lua page: RELIW's call, its answer as the response (500 and a
    /// log line for an error, a runaway page or no status).
    pub(in crate::site) async fn lua_page(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        name: &Name,
        meta: &EntryMeta,
        blob: &Blob,
        body: &RequestBody,
    ) -> Response {
        if body.overflow {
            tracing::info!(
                vhost = &*ctx.host,
                file = name.key,
                limit = ctx.config.lua.max_body_size,
                "request body too large for a Lua page"
            );
            return self.error(ctx, Status::PAYLOAD_TOO_LARGE).await;
        }
        let (path, args) = ctx
            .req
            .target
            .split_once('?')
            .unwrap_or((&ctx.req.target, ""));
        let has_body = match ctx.req.body {
            BodyFraming::None | BodyFraming::Length(0) => false,
            BodyFraming::Length(_) | BodyFraming::Chunked => true,
        };
        let request = crate::lua::page::PageRequest {
            method: ctx.req.method.as_str(),
            path,
            args,
            headers: ctx.req.headers().collect(),
            client: ctx.client.to_string(),
            body: has_body.then_some(body.data.as_slice()),
        };
        let chunk = format!("{}/{}", ctx.host, name.key.trim_start_matches('/'));
        // By the content's own hash: a FILES record's `hash` may be stale.
        let hash = content::sha256_hex(&blob.content);
        let out = match self
            .with_lua(|rt| crate::lua::page::run(rt, &chunk, &hash, &blob.content, &request))
        {
            Ok(out) => out,
            Err(e) => {
                self.node.lua_errors.inc();
                tracing::error!(vhost = &*ctx.host, file = name.key, error = %e, "Lua page failed");
                return self.error(ctx, Status::INTERNAL_SERVER_ERROR).await;
            }
        };
        let Some(code) = out.status else {
            self.node.lua_errors.inc();
            tracing::error!(
                vhost = &*ctx.host,
                file = name.key,
                "Lua page gave no status"
            );
            return self.error(ctx, Status::INTERNAL_SERVER_ERROR).await;
        };
        let status = Status::from_code(code);
        let mut head = ResponseHead::new(status);
        let content = match out.headers {
            Some(fields) => {
                if !fields.iter().any(|(n, _)| n == "content-type") {
                    head.headers
                        .push(("Content-Type", HeaderValue::Static("text/html")));
                }
                head.named_headers = fields;
                Bytes::from(out.content)
            }
            None => {
                let look = match self.template(store, &ctx.host).await {
                    Ok(t) => t,
                    Err(e) => {
                        self.store_failed("template", &e);
                        None
                    }
                };
                let html = page::wrap(
                    look.as_deref().unwrap_or(Look::builtin()),
                    &String::from_utf8_lossy(&out.content),
                    &blob.title,
                    "page",
                    &page::Assets {
                        css_file: meta.css_file.as_deref().unwrap_or(page::DEFAULT_CSS),
                        favicon_file: meta
                            .favicon_file
                            .as_deref()
                            .unwrap_or(page::DEFAULT_FAVICON),
                    },
                );
                head.headers.push((
                    "Content-Type",
                    HeaderValue::Static("text/html; charset=utf-8"),
                ));
                Bytes::from(html)
            }
        };
        let page_set = |field: &str| head.named_headers.iter().any(|(n, _)| n == field);
        let (set_etag, set_cc) = (page_set("etag"), page_set("cache-control"));
        if let Some(cc) = &meta.cache_control {
            if !set_etag {
                head.headers.push(("ETag", format!("\"{hash}\"").into()));
            }
            if !set_cc {
                head.headers
                    .push(("Cache-Control", HeaderValue::from(cc.clone())));
            }
        }
        self.count(ctx, status);
        if status.has_no_body() {
            return Response {
                head,
                body: Body::Empty,
                form_key: None,
            };
        }
        head.content_length = content.len() as u64;
        // No form key: a Lua page's output is its own, every time.
        Response {
            head,
            body: Body::Bytes(content),
            form_key: None,
        }
    }

    /// Whether a file exists under the host root (or the fallback root).
    pub(in crate::site) fn exists(&self, host: &str, name: &Name) -> bool {
        self.files.borrow_mut().open(host, &name.rel).is_ok()
    }

    /// The file name for a request, by RELIW's rules: the entry's `file`;
    /// else the path (plus `index` for a directory), and if no such file
    /// exists, the first of `try_extensions` that does, or the `gsub`
    /// remap of the path. `None`: the request names no valid file.
    pub(in crate::site) fn resolve_name(
        &self,
        host: &str,
        path: &str,
        entry_id: &str,
        meta: &EntryMeta,
    ) -> Option<Rc<Name>> {
        {
            let cache = self.cache.borrow();
            let key = &(host, path) as &dyn HostPair;
            // Resolved for this entry: routes may since send the path elsewhere.
            if let Lookup::Fresh((entry, name)) = cache.names.get(key, cache.ttl, cache.now)
                && &*entry == entry_id
            {
                return name;
            }
        }
        let resolved = (|| {
            let base = content::base_name(meta, path);
            if meta.file.is_some() {
                return base;
            }
            if let Some(b) = &base
                && self.exists(host, b)
            {
                return base;
            }
            if !meta.try_extensions.is_empty() {
                let found = base.as_ref().and_then(|b| {
                    meta.try_extensions
                        .iter()
                        .filter_map(|ext| b.with_suffix(ext))
                        .find(|candidate| self.exists(host, candidate))
                });
                return found.or(base);
            }
            if let Some(g) = &meta.gsub {
                let remapped = g.pattern.gsub(path.as_bytes(), &g.replacement).ok()?.0;
                return Name::parse(&String::from_utf8_lossy(&remapped));
            }
            base
        })();
        let resolved = resolved.map(Rc::new);
        let key = (host.to_owned(), path.to_owned());
        let value = (Rc::from(entry_id), resolved.clone());
        self.cache.borrow_mut().names.insert(key, value);
        resolved
    }

    /// The content of a file: the in-process copy, else the store's
    /// `FILES` record, else the disk (then written to `FILES` when it is
    /// at most `cache_max_size`). `Ok(None)`: no such file, or too large
    /// to keep (served from disk by the caller).
    pub(in crate::site) async fn blob(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        name: &Name,
        meta: &EntryMeta,
    ) -> Result<Option<Rc<Blob>>, StoreError> {
        let host = &*ctx.host;
        {
            let cache = self.cache.borrow();
            let key = &(host, name.key.as_str()) as &dyn HostPair;
            if let Lookup::Fresh(blob) = cache.blobs.get(key, cache.ttl, cache.now) {
                self.node.cache("hit");
                return Ok(Some(blob));
            }
        }
        let key: HostKey = (host.to_owned(), name.key.clone());
        let files_key = self.keys.files(host, &name.key);
        let record = match store.hgetall(&files_key).await {
            Ok(fields) => Blob::from_fields(&name.key, fields),
            Err(e) => {
                // The disk still has the file; a store outage costs the cache only.
                self.store_failed("FILES", &e);
                None
            }
        };
        let blob = match record {
            Some(b) => Rc::new(b),
            None => {
                let Some(blob) = self.read_disk(store, ctx, name, meta).await? else {
                    return Ok(None);
                };
                if blob.content.len() as u64 > ctx.config.cache_max_size {
                    // Read to be rendered, but too large to keep.
                    return Ok(Some(blob));
                }
                let size = blob.content.len().to_string();
                let fields: [(&str, &[u8]); 5] = [
                    ("content", &blob.content),
                    ("hash", blob.hash.as_bytes()),
                    ("size", size.as_bytes()),
                    ("mime", blob.mime.as_bytes()),
                    ("title", blob.title.as_bytes()),
                ];
                if let Err(e) = store.hset_with_ttl(&files_key, &fields, FILES_TTL).await {
                    self.store_failed("FILES (write)", &e);
                }
                blob
            }
        };
        self.node.cache("miss");
        self.cache.borrow_mut().insert_blob(key, Rc::clone(&blob));
        Ok(Some(blob))
    }

    /// Reads a file of at most `cache_max_size` bytes, with its title
    /// (`TITLES`, else the entry's). `Ok(None)` when missing or larger.
    /// Markup and Lua files are read up to [`RENDER_LIMIT`] whatever the
    /// cache size: they are never sent as they are on disk.
    pub(in crate::site) async fn read_disk(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        name: &Name,
        meta: &EntryMeta,
    ) -> Result<Option<Rc<Blob>>, StoreError> {
        let data = {
            let mut files = self.files.borrow_mut();
            let Ok(opened) = files.open(&ctx.host, &name.rel) else {
                return Ok(None);
            };
            let limit = if name.is_processed() {
                ctx.config.cache_max_size.max(RENDER_LIMIT)
            } else {
                ctx.config.cache_max_size
            };
            if opened.meta.size > limit {
                return Ok(None);
            }
            let mut data = Vec::with_capacity(opened.meta.size as usize);
            use std::io::Read as _;
            if let Err(e) = (&opened.file).take(limit + 1).read_to_end(&mut data) {
                tracing::error!(vhost = &*ctx.host, file = name.key, error = %e, "reading a file failed");
                return Ok(None);
            }
            data
        };
        let title = match store.hget(&self.keys.titles(&ctx.host), &name.key).await {
            Ok(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
            Ok(None) => meta.title.clone().unwrap_or_default(),
            Err(e) => {
                self.store_failed("TITLES", &e);
                meta.title.clone().unwrap_or_default()
            }
        };
        Ok(Some(Rc::new(Blob::new(
            Bytes::from(data),
            content::mime_of(&name.key),
            title,
        ))))
    }

    /// The content step: the file, rendered if it is markup, with
    /// validators; ACME tokens from `DATA` first.
    pub(in crate::site) async fn content(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        entry_id: &str,
        meta: &EntryMeta,
        body: &RequestBody,
    ) -> Response {
        let Some(name) = self.resolve_name(&ctx.host, ctx.path, entry_id, meta) else {
            return self.error(ctx, Status::NOT_FOUND).await;
        };
        // RELIW sent validators and Cache-Control only for an entry's
        // `cache_control`, or for CSS and images (a day by default).
        let cache_control = meta.cache_control.as_deref().or_else(|| {
            let mime = &name.mime;
            (mime.contains("css") || mime.contains("image")).then_some(DEFAULT_CACHE_CONTROL)
        });
        let blob = match self.blob(store, ctx, &name, meta).await {
            Ok(Some(b)) => b,
            Ok(None) if name.is_processed() => {
                // Missing, or larger than RENDER_LIMIT: never the raw source.
                if self.exists(&ctx.host, &name) {
                    tracing::error!(
                        vhost = &*ctx.host,
                        file = name.key,
                        limit = RENDER_LIMIT,
                        "page source too large to render"
                    );
                    return self.error(ctx, Status::INTERNAL_SERVER_ERROR).await;
                }
                return self.error(ctx, Status::NOT_FOUND).await;
            }
            Ok(None) => {
                // Too large to keep in memory, or not there at all.
                let r = {
                    let mut files = self.files.borrow_mut();
                    let mut cache = self.file_cache.borrow_mut();
                    file_response(
                        ctx.req,
                        &mut files,
                        &mut cache,
                        &ctx.host,
                        &name.rel,
                        Some(cache_control.unwrap_or("")),
                        &ctx.config.compression,
                        &self.node,
                    )
                };
                if r.head.status == Status::NOT_FOUND {
                    return self.error(ctx, Status::NOT_FOUND).await;
                }
                return r;
            }
            Err(e) => return self.unavailable(ctx, "content", &e).await,
        };
        if blob.mime == "application/lua" {
            return self.lua_page(store, ctx, &name, meta, &blob, body).await;
        }
        let wants_source = ctx
            .req
            .header_str("accept")
            .is_some_and(|a| a.contains("text/markdown"));
        let (body, etag, content_type, form_key) = if blob.is_markup() && !wants_source {
            let page = self.page(store, ctx, entry_id, &name, meta, &blob).await;
            (
                page.html,
                // A hash of the page: its own form key.
                Rc::clone(&page.etag),
                HeaderValue::Static("text/html; charset=utf-8"),
                page.etag,
            )
        } else {
            (
                blob.content.clone(),
                Rc::clone(&blob.etag),
                HeaderValue::Shared(Rc::clone(&blob.content_type)),
                Rc::clone(&blob.form_key),
            )
        };
        let compression = &ctx.config.compression;
        let encodable =
            compression.enabled && eligible_type(content_type.as_str(), &compression.types);
        let mut head = ResponseHead::new(Status::OK);
        head.headers.reserve(5);
        head.headers.push(("Content-Type", content_type));
        if blob.is_markup() {
            // Both at once, so the encode step has nothing to merge.
            let vary = if encodable {
                "Accept, Accept-Encoding"
            } else {
                "Accept"
            };
            head.headers.push(("Vary", HeaderValue::Static(vary)));
        }
        if let Some(cc) = cache_control {
            head.headers
                .push(("ETag", HeaderValue::Shared(Rc::clone(&etag))));
            head.headers
                .push(("Cache-Control", cache_control_value(meta, cc)));
            if ctx.req.method == Method::Get && if_none_match(ctx.req, &etag) {
                head.status = Status::NOT_MODIFIED;
                head.headers.remove(0);
                if encodable {
                    encode::vary_on_encoding(&mut head);
                }
                return Response {
                    head,
                    body: Body::Empty,
                    form_key: None,
                };
            }
        }
        head.content_length = body.len() as u64;
        Response {
            head,
            body: Body::Bytes(body),
            form_key: Some(form_key),
        }
    }

    /// A rendered page, from the page cache when fresh.
    pub(in crate::site) async fn page(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        entry_id: &str,
        name: &Name,
        meta: &EntryMeta,
        blob: &Blob,
    ) -> Page {
        let key: HostKey = (ctx.host.to_string(), format!("{entry_id}\0{}", name.key));
        {
            let cache = self.cache.borrow();
            if let Lookup::Fresh(page) = cache.pages.get(&key, cache.ttl, cache.now) {
                return page;
            }
        }
        let template = match self.template(store, &ctx.host).await {
            Ok(t) => t,
            Err(e) => {
                self.store_failed("template", &e);
                None
            }
        };
        let assets = page::Assets {
            css_file: meta.css_file.as_deref().unwrap_or(page::DEFAULT_CSS),
            favicon_file: meta
                .favicon_file
                .as_deref()
                .unwrap_or(page::DEFAULT_FAVICON),
        };
        let html = page::render_markup(
            template.as_deref().unwrap_or(Look::builtin()),
            &blob.mime,
            &blob.content,
            &blob.title,
            &assets,
        );
        let hash = content::sha256_hex(html.as_bytes());
        let page = Page {
            etag: Rc::from(format!("\"{}\"", &hash[..32])),
            html: Bytes::from(html),
        };
        self.cache.borrow_mut().insert_page(key, page.clone());
        page
    }
}

pub(in crate::site) fn static_response(
    req: &RequestHead,
    files: &mut Files,
    cache: &mut FileCache,
    compression: &CompressionSection,
    node: &NodeMetrics,
) -> Response {
    let Some(host) = request_host(req) else {
        return Response::error(Status::BAD_REQUEST);
    };
    let rel = match relative_path(req.path()) {
        Ok(rel) => rel,
        Err(e) => {
            tracing::debug!(host = &*host, path = req.path(), reason = e.0, "bad path");
            return Response::error(Status::BAD_REQUEST);
        }
    };
    if !matches!(req.method, Method::Get | Method::Head) {
        let mut r = Response::error(Status::METHOD_NOT_ALLOWED);
        r.head
            .headers
            .push(("Allow", HeaderValue::Static("GET, HEAD")));
        return r;
    }
    file_response(req, files, cache, &host, &rel, None, compression, node)
}

/// A file from disk through the file cache (sendfile, ranges, validators),
/// or its precompressed sibling (`file.br`, `.zst`, `.gz`) when the client
/// takes that coding and the sibling is not older than the file.
#[allow(clippy::too_many_arguments)]
fn file_response(
    req: &RequestHead,
    files: &mut Files,
    cache: &mut FileCache,
    host: &str,
    rel: &[u8],
    cache_control: Option<&str>,
    compression: &CompressionSection,
    node: &NodeMetrics,
) -> Response {
    match cache.get(files, host, rel) {
        Ok(entry) => {
            let mut p = plan(req, &entry.meta, &entry.fields);
            let encodable = compression.enabled
                && eligible_type(&entry.fields.content_type, &compression.types);
            // Siblings only for a whole 200 (never a range, a 304 or a HEAD
            // of nothing), and only looked for when the type could vary.
            let sibling = if encodable
                && compression.precompressed
                && p.head.status == Status::OK
                && req.header("range").is_none()
            {
                precompressed(req, files, cache, host, rel, &entry, &compression.offered)
            } else {
                None
            };
            if encodable && p.head.status == Status::NOT_MODIFIED {
                encode::vary_on_encoding(&mut p.head);
            }
            match cache_control {
                // RELIW's rules gave none: no Cache-Control (validators stay).
                Some("") => p.head.headers.retain(|(name, _)| *name != "Cache-Control"),
                Some(cc) => {
                    for (name, value) in &mut p.head.headers {
                        if *name == "Cache-Control" {
                            *value = HeaderValue::from(cc.to_owned());
                        }
                    }
                }
                None => {}
            }
            if let Some((coding, sib)) = sibling {
                encode::mark_encoded(&mut p.head, coding);
                p.head.content_length = sib.meta.size;
                node.compressed(coding.token(), "precompressed");
                return Response {
                    head: p.head,
                    body: whole(&sib),
                    form_key: None,
                };
            }
            let body = match (p.body, &entry.content) {
                (BodyPlan::Empty, _) => Body::Empty,
                (BodyPlan::Range { start, len }, Content::Bytes(data)) => {
                    Body::Bytes(data.slice(start as usize..(start + len) as usize))
                }
                (BodyPlan::Range { start, len }, Content::File(file)) => Body::File {
                    file: Rc::clone(file),
                    start,
                    len,
                },
            };
            Response {
                head: p.head,
                body,
                form_key: Some(Rc::clone(&entry.fields.form_key)),
            }
        }
        Err(FileError::NotFound | FileError::Escape) => Response::error(Status::NOT_FOUND),
        Err(FileError::Forbidden) => Response::error(Status::FORBIDDEN),
        Err(FileError::Io(e)) => {
            tracing::error!(host, path = req.path(), error = %e, "reading a file failed");
            Response::error(Status::INTERNAL_SERVER_ERROR)
        }
    }
}

/// The best precompressed sibling of a file for this request, if any.
fn precompressed(
    req: &RequestHead,
    files: &mut Files,
    cache: &mut FileCache,
    host: &str,
    rel: &[u8],
    base: &Entry,
    offered: &[Coding],
) -> Option<(Coding, Rc<Entry>)> {
    let acc = Accepted::of(req);
    let mut found: Vec<(Coding, Rc<Entry>)> = Vec::new();
    for &coding in offered {
        if acc.weight(coding) == 0 {
            continue;
        }
        // Empty is no valid encoded stream; older is stale.
        if let Some(sib) = cache.sibling(files, host, rel, coding)
            && sib.meta.size > 0
            && sib.meta.modified >= base.meta.modified
        {
            found.push((coding, sib));
        }
    }
    let available: Vec<Coding> = found.iter().map(|(c, _)| *c).collect();
    match acc.choose(&available) {
        Choice::Encoded(c) => found.into_iter().find(|(f, _)| *f == c),
        Choice::Identity | Choice::NotAcceptable => None,
    }
}

/// The whole of a cached file as a body.
fn whole(entry: &Entry) -> Body {
    if entry.meta.size == 0 {
        return Body::Empty;
    }
    match &entry.content {
        Content::Bytes(data) => Body::Bytes(data.clone()),
        Content::File(file) => Body::File {
            file: Rc::clone(file),
            start: 0,
            len: entry.meta.size,
        },
    }
}

/// The largest markup or Lua source read to be processed, whatever
/// `cache_max_size` says (RELIW's idiom `cache_max_size: 0` must not turn
/// rendering off).
pub(in crate::site) const RENDER_LIMIT: u64 = 16 << 20;

/// How long `FILES` records live in the store (RELIW's hour).
pub(in crate::site) const FILES_TTL: Duration = Duration::from_secs(3600);

/// The `Cache-Control` value `cc` (the entry's, shared, or RELIW's default).
fn cache_control_value(meta: &EntryMeta, cc: &str) -> HeaderValue {
    match &meta.cache_control {
        Some(own) if &**own == cc => HeaderValue::Shared(Rc::clone(own)),
        _ if cc == DEFAULT_CACHE_CONTROL => HeaderValue::Static(DEFAULT_CACHE_CONTROL),
        _ => HeaderValue::Owned(cc.to_owned()),
    }
}

/// Whether `If-None-Match` names `etag` (weakly, in a coding this request
/// may get; `*` matches; RELIW's unquoted hashes are understood too).
fn if_none_match(req: &RequestHead, etag: &str) -> bool {
    let Some(header) = req.header_str("if-none-match") else {
        return false;
    };
    let bare = etag.trim_matches('"');
    let accepted = Accepted::of(req);
    header.split(',').map(str::trim).any(|tag| {
        tag == "*"
            || tag.strip_prefix("W/").unwrap_or(tag) == bare
            || tag_names(tag, etag, &accepted)
    })
}
