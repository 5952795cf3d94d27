//! The auth step, after routing: an entry with `auth` either is the login
//! or logout endpoint, or lets only its users through (a valid session in
//! `P:SESSIONS`, else a 302 to `/login` remembering where to return).

use crate::auth;
use crate::http::HeaderValue;
use crate::http::Method;
use crate::http::Status;
use crate::look::Look;
use crate::site::Ctx;
use crate::site::RequestBody;
use crate::site::Response;
use crate::site::Site;
use crate::site::meta::{Auth, EntryMeta};
use crate::site::page;
use crate::store::Backend;
use crate::store::Store as _;
use crate::store::StoreError;
use bytes::Bytes;

impl Site {
    /// The answer for an entry with `auth` when the request does not go on
    /// to the content: the login or logout endpoint's, a redirect to
    /// `/login`, or a 503 when sessions cannot be read.
    pub(in crate::site) async fn auth(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        meta: &EntryMeta,
        body: &RequestBody,
    ) -> Option<Response> {
        match &meta.auth {
            None => None,
            Some(Auth::Login) => Some(self.login(store, ctx, body).await),
            Some(Auth::Logout) => Some(self.logout(store, ctx).await),
            Some(Auth::Users(users)) => match self.session_user(store, ctx).await {
                Ok(Some(user)) if users.contains(&user) => None,
                Ok(_) => {
                    self.count(ctx, Status::FOUND);
                    let cookie = auth::redirect_cookie(&ctx.req.target);
                    Some(Response::redirect(Status::FOUND, "/login", vec![cookie]))
                }
                Err(e) => Some(self.unavailable(ctx, "session", &e).await),
            },
        }
    }

    /// The logged-in user of this request, if its session is valid and the
    /// user still exists.
    pub(in crate::site) async fn session_user(
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
    pub(in crate::site) async fn login(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        body: &RequestBody,
    ) -> Response {
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
    pub(in crate::site) async fn logout(&self, store: &Backend, ctx: &Ctx<'_, '_>) -> Response {
        if let Some(token) =
            auth::cookie(ctx.req, auth::SESSION_COOKIE).filter(|t| auth::plausible_token(t))
            && let Err(e) = store.del(&self.keys.session(&ctx.host, token)).await
        {
            return self.unavailable(ctx, "sessions", &e).await;
        }
        self.count(ctx, Status::SEE_OTHER);
        Response::redirect(Status::SEE_OTHER, "/", auth::expired_cookies().to_vec())
    }
}
