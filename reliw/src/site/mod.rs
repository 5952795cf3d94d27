//! What a request gets: the site pipeline, in RELIW's order.
//!
//! validate host and path (400) → ACME HTTP-01 tokens (`DATA`) → WAF
//! (403) → proxy (`P:PROXY:<host>`;
//! the request is forwarded) → route (`P:API:<host>`; 404) → metadata
//! (500 when missing or invalid) → auth → methods (405 with `Allow`) →
//! rate limit → content (file, index, try_extensions, gsub, `FILES`,
//! rendering) → ETag/304 → metrics.
//!
//! This file holds the order ([`Site::front`] up to the proxy decision,
//! made before the body is read so a proxied body can stream;
//! [`Site::handle_local`] after it) and the request context `Ctx`. Each
//! step is a file of its own in `steps/` with its contract on top: `acme`,
//! `waf`, `auth`, `limit`, `content`, `encode` (compression, for every
//! response made here), and `errors` (error pages, counting). All of
//! them read site data through one seam, `data` (the per-worker
//! [`cache::SiteCache`], else the store), so a cached GET makes no round
//! trip. A store that cannot be reached makes the requests that need it
//! 503, except where a cached copy exists (then that copy is served). With
//! the `static` backend the whole pipeline is plain static serving of
//! `data_dir`. HEAD bodies are dropped where responses are written
//! (`server::exchange`), never here.

pub mod cache;
pub mod content;
pub mod control;
mod data;
pub mod meta;
pub mod page;
pub mod routes;
mod steps;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use self::cache::{EntryState, SiteCache};
use self::control::Control;
use self::meta::EntryMeta;
use self::steps::static_response;
use crate::bans::Bans;
use crate::config::{Config, Startup};
use crate::files::Files;
use crate::files::cache::FileCache;
use crate::files::validate::{check_path, normalised_host};
use crate::http::{HeaderValue, RequestHead, ResponseHead, Status};
use crate::lua::LuaRuntime;
use crate::metrics::NodeMetrics;
use crate::metrics::counts::RequestCounts;
use crate::proxy::ProxyTarget;
use crate::store::{Backend, Keys};

/// A response body.
pub enum Body {
    Empty,
    Bytes(Bytes),
    /// Part of an open file, sent with sendfile.
    File {
        file: Rc<std::fs::File>,
        start: u64,
        len: u64,
    },
}

/// Where a request goes after host validation, the WAF and the proxy check.
pub enum Front<'r> {
    /// Answered already (bad host, WAF block, store failure, bad proxy entry).
    Respond(Response),
    /// Forwarded to the host's upstream.
    Proxy {
        target: Rc<ProxyTarget>,
        host: Cow<'r, str>,
    },
    /// Served here: routes, auth, content ([`Site::handle_local`]).
    Local(Local<'r>),
}

/// A request on its way through the local steps of the pipeline.
pub struct Local<'r> {
    host: Cow<'r, str>,
    client: IpAddr,
}

/// What the site sees of a request body: its first bytes (enough for a
/// login form) and whether there was more.
#[derive(Clone, Debug, Default)]
pub struct RequestBody {
    pub data: Vec<u8>,
    pub overflow: bool,
}

/// A response: head and body.
pub struct Response {
    pub head: ResponseHead,
    pub body: Body,
    /// A validator derived from the body's bytes (a file's identity, a
    /// content hash), even when no ETag is sent: the key its encoded
    /// forms are cached under. `None`: encoded anew for each request.
    pub form_key: Option<Rc<str>>,
}

impl Response {
    /// A short plain-text error page (HEAD loses the body where every
    /// response is written, `server::exchange`).
    pub fn error(status: Status) -> Self {
        let text = format!("{} {}\n", status.code(), status.reason());
        Self::bytes(status, "text/plain; charset=utf-8", Bytes::from(text))
    }

    /// A response with a body in memory.
    pub fn bytes(status: Status, content_type: impl Into<HeaderValue>, body: Bytes) -> Self {
        let mut head = ResponseHead::new(status).header("Content-Type", content_type);
        head.content_length = body.len() as u64;
        Self {
            head,
            body: Body::Bytes(body),
            form_key: None,
        }
    }

    /// A redirect with no body and cookies to set; never stored by caches.
    pub fn redirect(
        status: Status,
        location: impl Into<HeaderValue>,
        cookies: Vec<String>,
    ) -> Self {
        let mut head = ResponseHead::new(status).header("Location", location);
        for cookie in cookies {
            head.headers.push(("Set-Cookie", HeaderValue::from(cookie)));
        }
        head.headers
            .push(("Cache-Control", HeaderValue::Static("no-store")));
        Self {
            head,
            body: Body::Empty,
            form_key: None,
        }
    }
}

/// The host a request is for, normalised; HTTP/1.0 without `Host` gets the
/// fallback site. `None`: invalid.
fn request_host(req: &RequestHead) -> Option<Cow<'_, str>> {
    match req.host.as_deref() {
        None => Some(Cow::Borrowed(crate::files::FALLBACK_HOST)),
        Some(raw) => normalised_host(raw),
    }
}

/// Logs at most once a second (store outages would otherwise log per request).
struct Throttle(Cell<Option<Instant>>);

impl Throttle {
    fn ready(&self) -> bool {
        let now = Instant::now();
        if self
            .0
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.0.set(Some(now));
        true
    }
}

/// The site of one worker: its store handle, caches and counters.
pub struct Site {
    store: Option<Backend>,
    /// Why the configured store could not be opened: then every request
    /// is a 503, never the static serving that `store: None` means.
    unusable: Option<String>,
    keys: Keys,
    control: Arc<Control>,
    node: Arc<NodeMetrics>,
    bans: Arc<Bans>,
    cache: RefCell<SiteCache>,
    files: RefCell<Files>,
    file_cache: RefCell<FileCache>,
    /// Encoded forms of bodies (the encode step's cache).
    forms: RefCell<crate::compress::Forms>,
    pub counts: RefCell<RequestCounts>,
    store_log: Throttle,
    fail_open_log: Throttle,
    /// The worker's Lua VM, made on the first Lua page or template.lua.
    lua: RefCell<Option<LuaRuntime>>,
    lua_limits: crate::lua::Limits,
}

/// Where a request stands after routing, for metrics and error pages.
struct Ctx<'a, 'r> {
    req: &'r RequestHead,
    config: &'a Config,
    host: Cow<'r, str>,
    path: &'a str,
    /// The client address (the socket peer, or what a trusted proxy said).
    client: IpAddr,
    /// Set once a route matched (RELIW counts route-less 404s apart).
    routed: bool,
    meta: Option<Rc<EntryMeta>>,
    /// This request has been counted (each exit counts once).
    counted: Cell<bool>,
}

impl Site {
    pub fn new(
        store: Option<Backend>,
        unusable: Option<String>,
        startup: &Startup,
        control: Arc<Control>,
        node: Arc<NodeMetrics>,
        bans: Arc<Bans>,
        file_cache: FileCache,
    ) -> Self {
        let workers = startup.workers.max(1) as u64;
        let keys = Keys::new(&startup.redis.prefix);
        Self {
            store,
            unusable,
            cache: RefCell::new(SiteCache::new(
                Duration::from_millis(startup.site_cache_ttl_ms),
                startup.cache_total_size / workers,
            )),
            files: RefCell::new(Files::new(startup.data_dir.clone())),
            file_cache: RefCell::new(file_cache),
            forms: RefCell::new(crate::compress::Forms::new(startup.compression_cache_size)),
            counts: RefCell::new(RequestCounts::new(keys.clone())),
            keys,
            control,
            node,
            bans,
            store_log: Throttle(Cell::new(None)),
            fail_open_log: Throttle(Cell::new(None)),
            lua: RefCell::new(None),
            lua_limits: crate::lua::Limits {
                memory: startup.lua_memory_limit,
                time: Duration::from_millis(startup.lua_time_limit_ms),
            },
        }
    }

    pub fn store(&self) -> Option<&Backend> {
        self.store.as_ref()
    }

    /// The first steps of the pipeline (host, WAF, proxy): whether the
    /// request is answered already, forwarded, or served here. Decided
    /// before the body is read, so a proxied body can stream. `client`:
    /// the peer, or what a trusted proxy said.
    pub async fn front<'r>(
        &self,
        req: &'r RequestHead,
        client: IpAddr,
        config: &Config,
    ) -> Front<'r> {
        if let Some(why) = &self.unusable {
            if self.store_log.ready() {
                tracing::error!(error = why, "store unusable; answering 503");
            }
            let mut r = Response::error(Status::SERVICE_UNAVAILABLE);
            r.head
                .headers
                .push(("Retry-After", HeaderValue::Static("1")));
            return Front::Respond(r);
        }
        let Some(store) = &self.store else {
            return Front::Local(Local {
                host: Cow::Borrowed(""),
                client,
            });
        };
        self.front_steps(store, req, client, config).await
    }

    /// The rest of the pipeline for a request [`Site::front`] kept here.
    pub async fn handle_local(
        &self,
        req: &RequestHead,
        local: Local<'_>,
        body: &RequestBody,
        config: &Config,
    ) -> Response {
        match &self.store {
            None => {
                let mut files = self.files.borrow_mut();
                let mut cache = self.file_cache.borrow_mut();
                static_response(req, &mut files, &mut cache, &config.compression, &self.node)
            }
            Some(store) => self.local_steps(store, req, local, body, config).await,
        }
    }

    /// Counts a proxied request in the host's metrics.
    pub fn count_proxied(&self, req: &RequestHead, host: &str, status: Status) {
        self.counts.borrow_mut().record(
            Some(host),
            host,
            req.method.as_str(),
            req.path(),
            status.code(),
        );
    }

    /// The error page for a proxied request that failed before the
    /// upstream answered (502, 504, ...); `server::finish` counts it, as
    /// every proxied request.
    pub async fn proxy_error(
        &self,
        req: &RequestHead,
        host: &str,
        status: Status,
        config: &Config,
    ) -> Response {
        self.cache.borrow_mut().sync(&self.control);
        let ctx = Ctx {
            req,
            config,
            host: Cow::Owned(host.to_owned()),
            path: req.path(),
            client: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            routed: true,
            meta: None,
            counted: Cell::new(true),
        };
        self.error(&ctx, status).await
    }

    async fn front_steps<'r>(
        &self,
        store: &Backend,
        req: &'r RequestHead,
        client: IpAddr,
        config: &Config,
    ) -> Front<'r> {
        // 1. Host and path.
        let Some(host) = request_host(req) else {
            tracing::debug!(host = req.host.as_deref(), "invalid host");
            return Front::Respond(Response::error(Status::BAD_REQUEST));
        };
        let path = req.path();
        if let Err(e) = check_path(path) {
            tracing::debug!(host = &*host, path, reason = e.0, "bad path");
            return Front::Respond(Response::error(Status::BAD_REQUEST));
        }
        self.cache.borrow_mut().sync(&self.control);
        let ctx = Ctx {
            req,
            config,
            host,
            path,
            client,
            routed: false,
            meta: None,
            counted: Cell::new(false),
        };

        // 1a. ACME HTTP-01 tokens: before the WAF, the proxy and routes.
        if let Some(answer) = self.acme(store, &ctx).await {
            return Front::Respond(answer);
        }

        // 2. WAF.
        if let Some(refusal) = self.waf(store, &ctx).await {
            return Front::Respond(refusal);
        }

        // 3. Proxy.
        match self.proxy(store, &ctx.host).await {
            Ok(None) => Front::Local(Local {
                host: ctx.host,
                client,
            }),
            Ok(Some(entry)) => match entry {
                Ok(target) => Front::Proxy {
                    target,
                    host: ctx.host,
                },
                Err(why) => {
                    tracing::error!(
                        vhost = &*ctx.host,
                        "invalid {}: {why}",
                        self.keys.proxy(&ctx.host)
                    );
                    Front::Respond(self.error(&ctx, Status::BAD_GATEWAY).await)
                }
            },
            Err(e) => Front::Respond(self.unavailable(&ctx, "proxy config", &e).await),
        }
    }

    async fn local_steps(
        &self,
        store: &Backend,
        req: &RequestHead,
        local: Local<'_>,
        body: &RequestBody,
        config: &Config,
    ) -> Response {
        // The body may have taken a while: judge cached data by the clock
        // now, and apply control messages that came meanwhile.
        self.cache.borrow_mut().sync(&self.control);
        let path = req.path();
        let client = local.client;
        let mut ctx = Ctx {
            req,
            config,
            host: local.host,
            path,
            client,
            routed: false,
            meta: None,
            counted: Cell::new(false),
        };

        // 4. Route.
        let routes = match self.routes(store, &ctx.host).await {
            Ok(r) => r,
            Err(e) => return self.unavailable(&ctx, "routes", &e).await,
        };
        let Some(entry_id) = routes.as_ref().and_then(|r| r.find(path)) else {
            return self.error(&ctx, Status::NOT_FOUND).await;
        };
        ctx.routed = true;

        // 5. Metadata.
        let meta = match self.entry(store, &ctx.host, entry_id).await {
            Ok(EntryState::Valid(m)) => m,
            Ok(EntryState::Missing) => {
                tracing::error!(
                    vhost = &*ctx.host,
                    entry = entry_id,
                    "route names an entry with no metadata"
                );
                return self.error(&ctx, Status::INTERNAL_SERVER_ERROR).await;
            }
            Ok(EntryState::Invalid(why)) => {
                tracing::error!(
                    vhost = &*ctx.host,
                    entry = entry_id,
                    "invalid entry metadata: {why}"
                );
                return self.error(&ctx, Status::INTERNAL_SERVER_ERROR).await;
            }
            Err(e) => return self.unavailable(&ctx, "entry metadata", &e).await,
        };
        ctx.meta = Some(Rc::clone(&meta));

        // 6. Auth.
        if let Some(answer) = self.auth(store, &ctx, &meta, body).await {
            return answer;
        }

        // 7. Methods.
        if !meta.allows(req.method.as_str()) {
            let mut r = self.error(&ctx, Status::METHOD_NOT_ALLOWED).await;
            r.head
                .headers
                .push(("Allow", HeaderValue::from(meta.allow_header())));
            return r;
        }

        // 8. Rate limit.
        if let Some(refusal) = self.limit(store, &ctx, &meta).await {
            return refusal;
        }

        // 9. Content, 10. validators.
        let response = self.content(store, &ctx, entry_id, &meta, body).await;
        self.count(&ctx, response.head.status);
        response
    }
}
