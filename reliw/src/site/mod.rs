//! What a request gets: the site pipeline, in RELIW's order.
//!
//! validate host and path (400) → WAF (403) → proxy (`P:PROXY:<host>`;
//! 502 until the proxy lands) → route (`P:API:<host>`; 404) → metadata
//! (500 when missing or invalid) → auth → methods (405 with `Allow`) →
//! rate limit → content (file, index, try_extensions, gsub, `FILES`,
//! rendering) → ETag/304 → metrics.
//!
//! Site data comes from the [`crate::store`] through the per-worker
//! [`cache::SiteCache`], so a cached GET makes no round trip. A store that
//! cannot be reached makes the requests that need it 503, except where a
//! cached copy exists (then that copy is served). With the `static`
//! backend the whole pipeline is plain static serving of `data_dir`.

pub mod cache;
pub mod content;
pub mod control;
pub mod meta;
pub mod page;
pub mod routes;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::hash::Hash;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use self::cache::{EntryState, HostKey, HostPair, Lookup, Page, SiteCache, TtlMap};
use self::content::{Blob, Name};
use self::control::Control;
use self::meta::{Auth, EntryMeta};
use self::routes::Routes;
use crate::auth;
use crate::bans::Bans;
use crate::config::{Config, Startup};
use crate::files::cache::{Content, FileCache};
use crate::files::respond::{BodyPlan, DEFAULT_CACHE_CONTROL, plan};
use crate::files::validate::{check_path, normalised_host, relative_path};
use crate::files::{FileError, Files};
use crate::http::{BodyFraming, HeaderValue, Method, RequestHead, ResponseHead, Status};
use crate::look::Look;
use crate::lua::{LuaError, LuaRuntime};
use crate::metrics::NodeMetrics;
use crate::metrics::counts::RequestCounts;
use crate::proxy::ProxyTarget;
use crate::render::Template;
use crate::store::{Backend, Keys, Store, StoreError};
use crate::waf::RuleSet;

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

fn static_response(req: &RequestHead, files: &mut Files, cache: &mut FileCache) -> Response {
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
    file_response(req, files, cache, &host, &rel, None)
}

/// A file from disk through the file cache (sendfile, ranges, validators).
fn file_response(
    req: &RequestHead,
    files: &mut Files,
    cache: &mut FileCache,
    host: &str,
    rel: &[u8],
    cache_control: Option<&str>,
) -> Response {
    match cache.get(files, host, rel) {
        Ok(entry) => {
            let mut p = plan(req, &entry.meta, &entry.fields);
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
            Response { head: p.head, body }
        }
        Err(FileError::NotFound | FileError::Escape) => Response::error(Status::NOT_FOUND),
        Err(FileError::Forbidden) => Response::error(Status::FORBIDDEN),
        Err(FileError::Io(e)) => {
            tracing::error!(host, path = req.path(), error = %e, "reading a file failed");
            Response::error(Status::INTERNAL_SERVER_ERROR)
        }
    }
}

/// The largest markup or Lua source read to be processed, whatever
/// `cache_max_size` says (RELIW's idiom `cache_max_size: 0` must not turn
/// rendering off).
const RENDER_LIMIT: u64 = 16 << 20;

/// How long `FILES` records live in the store (RELIW's hour).
const FILES_TTL: Duration = Duration::from_secs(3600);

/// The rate-limit step's verdict.
enum Limit {
    Pass,
    /// Over the limit: retry after this many seconds.
    Over(u64),
    /// The counter could not be read and the config says fail closed.
    Unknown(StoreError),
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
                static_response(req, &mut files, &mut cache)
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

        // 2. WAF. Rules that cannot be read fail open (logged): a store
        // outage must not turn into a site outage for cached pages.
        match self.waf_rules(store, &ctx.host).await {
            Ok(sets) => {
                if let Some(hit) = crate::waf::check(&sets, req) {
                    self.node.waf_hits.inc();
                    tracing::warn!(
                        vhost = &*ctx.host,
                        path = req.target,
                        rule = hit.rule,
                        waf_target = hit.target,
                        client = %client,
                        "blocked by WAF"
                    );
                    let notice =
                        self.bans
                            .verdict(client, "waf", Some(hit.rule), config.shield.ban_seconds);
                    self.publish_ban(store, notice).await;
                    if config.waf.block_response == crate::config::BlockResponse::ReliwRedirect {
                        // RELIW's answer, for operators whose tooling expects it.
                        let to = "http://127.0.0.1/Fuck_Off";
                        let r = Response::redirect(Status::MOVED_PERMANENTLY, to, Vec::new());
                        return Front::Respond(r);
                    }
                    return Front::Respond(self.error(&ctx, Status::FORBIDDEN).await);
                }
            }
            Err(e) => self.store_failed("WAF rules", &e),
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
        match &meta.auth {
            None => {}
            Some(Auth::Login) => return self.login(store, &ctx, body).await,
            Some(Auth::Logout) => return self.logout(store, &ctx).await,
            Some(Auth::Users(users)) => match self.session_user(store, &ctx).await {
                Ok(Some(user)) if users.contains(&user) => {}
                Ok(_) => {
                    self.count(&ctx, Status::FOUND);
                    let cookie = auth::redirect_cookie(&req.target);
                    return Response::redirect(Status::FOUND, "/login", vec![cookie]);
                }
                Err(e) => return self.unavailable(&ctx, "session", &e).await,
            },
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
        match self.rate_limited(store, &ctx, &meta, client).await {
            Limit::Pass => {}
            Limit::Over(retry_after) => {
                if let Some(seconds) = self.bans.strike(client) {
                    let notice = self.bans.verdict(client, "rate_limit", None, seconds);
                    self.publish_ban(store, notice).await;
                }
                let mut r = self.error(&ctx, Status::TOO_MANY_REQUESTS).await;
                r.head
                    .headers
                    .push(("Retry-After", HeaderValue::from(retry_after.to_string())));
                return r;
            }
            Limit::Unknown(e) => {
                return self.unavailable(&ctx, "the rate-limit counter", &e).await;
            }
        }

        // 9. Content, 10. validators.
        let response = self.content(store, &ctx, entry_id, &meta, body).await;
        self.count(&ctx, response.head.status);
        response
    }

    /// Publishes a ban on `P:WAFFERS` for the other nodes.
    async fn publish_ban(&self, store: &Backend, notice: Option<crate::bans::Notice>) {
        let Some(notice) = notice else { return };
        if let Err(e) = store
            .publish(&self.keys.waffers(), notice.to_json().as_bytes())
            .await
        {
            self.store_failed("P:WAFFERS (publish)", &e);
        }
    }

    /// The logged-in user of this request, if its session is valid and the
    /// user still exists.
    async fn session_user(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
    ) -> Result<Option<String>, StoreError> {
        let Some(token) =
            auth::cookie(ctx.req, auth::SESSION_COOKIE).filter(|t| auth::plausible_token(t))
        else {
            return Ok(None);
        };
        let Some(user) = store.get(&self.keys.session(&ctx.host, token)).await? else {
            return Ok(None);
        };
        let user = String::from_utf8_lossy(&user).into_owned();
        Ok(store
            .hget(&self.keys.users(&ctx.host), &user)
            .await?
            .map(|_| user))
    }

    /// The login entry: GET shows the form, POST checks it. Every failure
    /// (unknown user, wrong password, empty, malformed or oversized body)
    /// is a 401, never an error.
    async fn login(&self, store: &Backend, ctx: &Ctx<'_, '_>, body: &RequestBody) -> Response {
        match ctx.req.method {
            Method::Get | Method::Head => {
                let look = self.template(store, &ctx.host).await.ok().flatten();
                let look = look.as_deref().unwrap_or(Look::builtin());
                let html = page::wrap(
                    look,
                    auth::LOGIN_FORM,
                    "Log in",
                    "login",
                    &page::Assets::default(),
                );
                self.count(ctx, Status::OK);
                let mut r =
                    Response::bytes(Status::OK, "text/html; charset=utf-8", Bytes::from(html));
                r.head
                    .headers
                    .push(("Cache-Control", HeaderValue::Static("no-store")));
                r
            }
            Method::Post => {
                let form = (!body.overflow && body.data.len() <= auth::FORM_LIMIT)
                    .then(|| auth::parse_form(&body.data))
                    .flatten();
                let creds = form.as_ref().and_then(|f| {
                    let login = f.get("login").filter(|l| !l.is_empty())?;
                    let password = f.get("password").filter(|p| !p.is_empty())?;
                    Some((login.as_str(), password.as_str()))
                });
                let Some((login, password)) = creds else {
                    tracing::info!(vhost = &*ctx.host, client = %ctx.client, "login refused: no usable form");
                    return self.error(ctx, Status::UNAUTHORIZED).await;
                };
                let record = match store.hget(&self.keys.users(&ctx.host), login).await {
                    Ok(r) => r,
                    Err(e) => return self.unavailable(ctx, "users", &e).await,
                };
                // An unknown user costs the same HMAC as a known one.
                let ok = match &record {
                    Some(r) => auth::password_matches(r, password),
                    None => {
                        auth::password_matches(br#"{"pass":"00","salt":"-"}"#, password);
                        false
                    }
                };
                if !ok {
                    tracing::info!(vhost = &*ctx.host, client = %ctx.client, user = login, "login refused");
                    return self.error(ctx, Status::UNAUTHORIZED).await;
                }
                let Some(token) = auth::new_token() else {
                    tracing::error!("no randomness for a session token");
                    return self.error(ctx, Status::INTERNAL_SERVER_ERROR).await;
                };
                let key = self.keys.session(&ctx.host, &token);
                if let Err(e) = store
                    .set_with_ttl(&key, login.as_bytes(), auth::SESSION_TTL)
                    .await
                {
                    return self.unavailable(ctx, "sessions", &e).await;
                }
                tracing::info!(vhost = &*ctx.host, client = %ctx.client, user = login, "logged in");
                let target = auth::redirect_target(auth::cookie(ctx.req, auth::REDIRECT_COOKIE));
                self.count(ctx, Status::SEE_OTHER);
                let [_, expire_redirect] = auth::expired_cookies();
                Response::redirect(
                    Status::SEE_OTHER,
                    target.to_owned(),
                    vec![auth::session_cookie(&token), expire_redirect],
                )
            }
            _ => {
                let mut r = self.error(ctx, Status::METHOD_NOT_ALLOWED).await;
                r.head
                    .headers
                    .push(("Allow", HeaderValue::Static("GET, HEAD, POST")));
                r
            }
        }
    }

    /// The logout entry: the session ends, both cookies expire, 303 to `/`.
    async fn logout(&self, store: &Backend, ctx: &Ctx<'_, '_>) -> Response {
        if let Some(token) =
            auth::cookie(ctx.req, auth::SESSION_COOKIE).filter(|t| auth::plausible_token(t))
            && let Err(e) = store.del(&self.keys.session(&ctx.host, token)).await
        {
            return self.unavailable(ctx, "sessions", &e).await;
        }
        self.count(ctx, Status::SEE_OTHER);
        Response::redirect(Status::SEE_OTHER, "/", auth::expired_cookies().to_vec())
    }

    /// RELIW's fixed window: `LIMITS:<host>:<method>:<path>:<ip>` counted
    /// with INCR (the window set on the first hit), one round trip. The
    /// address is the socket peer's, never a request header. A store that
    /// cannot count lets the request through (logged and counted).
    async fn rate_limited(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        meta: &EntryMeta,
        client: IpAddr,
    ) -> Limit {
        let Some(rl) = meta.rate_limit.as_ref() else {
            return Limit::Pass;
        };
        let Some(limit) = rl.by_method.get(ctx.req.method.as_str()) else {
            return Limit::Pass;
        };
        let ip = client.to_canonical();
        if rl
            .whitelisted
            .iter()
            .any(|w| w.parse::<IpAddr>().is_ok_and(|w| w.to_canonical() == ip))
        {
            return Limit::Pass;
        }
        let key = self.keys.limits(
            &ctx.host,
            ctx.req.method.as_str(),
            ctx.path,
            &ip.to_string(),
        );
        match store
            .incr_window(&key, Duration::from_secs(limit.period_s))
            .await
        {
            Ok(count) if count > 0 && count as u64 > limit.limit => {
                self.node.rate_limited.inc();
                Limit::Over(limit.period_s)
            }
            Ok(_) => Limit::Pass,
            Err(e) if ctx.config.rate_limit.fail_closed => Limit::Unknown(e),
            Err(e) => {
                self.node.rate_limit_fail_open.inc();
                self.node.store_errors.inc();
                if self.fail_open_log.ready() {
                    tracing::warn!(error = %e, "store: cannot count a rate limit; letting the request through");
                }
                Limit::Pass
            }
        }
    }

    fn count(&self, ctx: &Ctx<'_, '_>, status: Status) {
        if ctx.counted.replace(true) {
            return;
        }
        let host = ctx.routed.then_some(&*ctx.host);
        self.counts.borrow_mut().record(
            host,
            &ctx.host,
            ctx.req.method.as_str(),
            ctx.path,
            status.code(),
        );
    }

    fn store_failed(&self, what: &str, e: &StoreError) {
        self.node.store_errors.inc();
        if self.store_log.ready() {
            tracing::warn!(error = %e, "store: cannot read {what}");
        }
    }

    async fn unavailable(&self, ctx: &Ctx<'_, '_>, what: &str, e: &StoreError) -> Response {
        self.store_failed(what, e);
        let mut r = self.error(ctx, Status::SERVICE_UNAVAILABLE).await;
        r.head
            .headers
            .push(("Retry-After", HeaderValue::Static("1")));
        r
    }

    /// An error page through the site's template, counted in the metrics.
    async fn error(&self, ctx: &Ctx<'_, '_>, status: Status) -> Response {
        self.count(ctx, status);
        let hits = (status == Status::NOT_FOUND).then(|| {
            self.counts
                .borrow()
                .hits(ctx.routed.then_some(&*ctx.host), &ctx.host, ctx.path)
        });
        let code = status.code().to_string();
        let image = ctx.meta.as_ref().and_then(|m| m.error.get(&code).cloned());
        // No store round trip for the template when the store is the problem.
        let template = if status == Status::SERVICE_UNAVAILABLE {
            None
        } else if let Some(store) = &self.store {
            self.template(store, &ctx.host).await.ok().flatten()
        } else {
            None
        };
        let look = template.as_deref().unwrap_or(Look::builtin());
        let html = page::error_page(look, status, hits, image.as_deref());
        Response::bytes(status, "text/html; charset=utf-8", Bytes::from(html))
    }

    /// Looks `key` up in one of the cache's maps; on a miss or an expired
    /// entry runs `fetch`, and if that fails serves the expired entry (and
    /// keeps it for another TTL, so an outage costs one failed call per
    /// TTL, not one per request).
    async fn cached<K, Q, V, F>(
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

    async fn routes(&self, store: &Backend, host: &str) -> Result<Option<Rc<Routes>>, StoreError> {
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

    async fn entry(&self, store: &Backend, host: &str, id: &str) -> Result<EntryState, StoreError> {
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

    async fn proxy(&self, store: &Backend, host: &str) -> Result<cache::ProxyEntry, StoreError> {
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

    async fn waf_rules(&self, store: &Backend, host: &str) -> Result<Rc<Vec<RuleSet>>, StoreError> {
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
    async fn template(&self, store: &Backend, host: &str) -> Result<Option<Rc<Look>>, StoreError> {
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

    /// Runs `f` on this worker's Lua VM (made on first use).
    fn with_lua<R>(
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
    async fn lua_page(
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
            headers: ctx
                .req
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect(),
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
            };
        }
        head.content_length = content.len() as u64;
        Response {
            head,
            body: Body::Bytes(content),
        }
    }

    /// Whether a file exists under the host root (or the fallback root).
    fn exists(&self, host: &str, name: &Name) -> bool {
        self.files.borrow_mut().open(host, &name.rel).is_ok()
    }

    /// The file name for a request, by RELIW's rules: the entry's `file`;
    /// else the path (plus `index` for a directory), and if no such file
    /// exists, the first of `try_extensions` that does, or the `gsub`
    /// remap of the path. `None`: the request names no valid file.
    fn resolve_name(
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
    async fn blob(
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
    async fn read_disk(
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
            let limit = if content::is_processed(&name.key) {
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
    async fn content(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        entry_id: &str,
        meta: &EntryMeta,
        body: &RequestBody,
    ) -> Response {
        if let Some(token) = ctx.path.strip_prefix("/.well-known/acme-challenge/") {
            match self.acme(store, &ctx.host, token).await {
                Ok(Some(value)) => {
                    return Response::bytes(Status::OK, "text/plain; charset=utf-8", value);
                }
                Ok(None) => {}
                Err(e) => return self.unavailable(ctx, "ACME token", &e).await,
            }
        }
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
            Ok(None) if content::is_processed(&name.key) => {
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
        let (body, etag, content_type) = if blob.is_markup() && !wants_source {
            let page = self.page(store, ctx, entry_id, &name, meta, &blob).await;
            (
                page.html,
                page.etag,
                HeaderValue::Static("text/html; charset=utf-8"),
            )
        } else {
            (
                blob.content.clone(),
                Rc::clone(&blob.etag),
                HeaderValue::Shared(Rc::clone(&blob.content_type)),
            )
        };
        let mut head = ResponseHead::new(Status::OK);
        head.headers.reserve(4);
        head.headers.push(("Content-Type", content_type));
        if let Some(cc) = cache_control {
            head.headers
                .push(("ETag", HeaderValue::Shared(Rc::clone(&etag))));
            head.headers
                .push(("Cache-Control", cache_control_value(meta, cc)));
            if ctx.req.method == Method::Get && if_none_match(ctx.req, &etag) {
                head.status = Status::NOT_MODIFIED;
                head.headers.remove(0);
                return Response {
                    head,
                    body: Body::Empty,
                };
            }
        }
        if blob.is_markup() {
            head.headers.push(("Vary", HeaderValue::Static("Accept")));
        }
        head.content_length = body.len() as u64;
        Response {
            head,
            body: Body::Bytes(body),
        }
    }

    /// A rendered page, from the page cache when fresh.
    async fn page(
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

    /// An ACME HTTP-01 token from `DATA:<host>:.well-known/acme-challenge/<token>`.
    async fn acme(
        &self,
        store: &Backend,
        host: &str,
        token: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Ok(None);
        }
        let name = format!(".well-known/acme-challenge/{token}");
        for h in [host, crate::files::FALLBACK_HOST] {
            if let Some(v) = store.get(&self.keys.data(h, &name)).await? {
                return Ok(Some(Bytes::from(v)));
            }
        }
        Ok(None)
    }
}

/// The `Cache-Control` value `cc` (the entry's, shared, or RELIW's default).
fn cache_control_value(meta: &EntryMeta, cc: &str) -> HeaderValue {
    match &meta.cache_control {
        Some(own) if &**own == cc => HeaderValue::Shared(Rc::clone(own)),
        _ if cc == DEFAULT_CACHE_CONTROL => HeaderValue::Static(DEFAULT_CACHE_CONTROL),
        _ => HeaderValue::Owned(cc.to_owned()),
    }
}

/// Whether `If-None-Match` names `etag` (weakly; `*` matches; RELIW's
/// unquoted hashes are understood too).
fn if_none_match(req: &RequestHead, etag: &str) -> bool {
    let Some(header) = req.header_str("if-none-match") else {
        return false;
    };
    let bare = etag.trim_matches('"');
    header.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == etag || tag == bare
    })
}
