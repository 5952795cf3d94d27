//! The ACME step, first after host and path validation: an HTTP-01
//! challenge (`GET /.well-known/acme-challenge/<token>`) is answered from
//! `DATA:<host>:.well-known/acme-challenge/<token>` (falling back to
//! `DATA:__:...`) before the WAF, the proxy and the routes, for every
//! host: a CA must reach the token whatever the WAF rules say, and a
//! proxied host, or a site whose routes do not cover the path, must still
//! be validated. Whichever node of the fleet the CA reaches answers, since
//! the token is in the shared store.
//!
//! Contract:
//! - Only GET and HEAD of a well-formed token (RFC 8555: base64url
//!   characters) are looked at; anything else goes on down the pipeline.
//! - A token found → 200 `text/plain`, the key authorization as stored.
//! - No token, or the store failing → the request goes on as if this step
//!   were not there (a site may serve such paths from its files).
//! - Lookups go through the site cache (hits and misses), so made-up
//!   tokens cost no round trip each within `site_cache_ttl_ms`.

use bytes::Bytes;

use super::super::{Ctx, Response, Site};
use crate::http::{Method, Status};
use crate::site::cache::HostPair;
use crate::store::{Backend, Store as _, StoreError};

/// Where the tokens are asked for.
const PREFIX: &str = "/.well-known/acme-challenge/";

impl Site {
    /// The ACME step (see the module doc): `Some` answers the request.
    pub(in crate::site) async fn acme(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
    ) -> Option<Response> {
        if !matches!(ctx.req.method, Method::Get | Method::Head) {
            return None;
        }
        let token = ctx.path.strip_prefix(PREFIX)?;
        if !is_token(token) {
            return None;
        }
        match self.acme_token(store, &ctx.host, token).await {
            Ok(Some(value)) => {
                self.count(ctx, Status::OK);
                Some(Response::bytes(
                    Status::OK,
                    "text/plain; charset=utf-8",
                    value,
                ))
            }
            Ok(None) => None,
            Err(e) => {
                self.store_failed("ACME token", &e);
                None
            }
        }
    }

    /// The key authorization stored for `token`, for `host` or `__`.
    async fn acme_token(
        &self,
        store: &Backend,
        host: &str,
        token: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        self.cached(
            |c| &mut c.acme,
            &(host, token) as &dyn HostPair,
            || (host.to_owned(), token.to_owned()),
            || async move {
                let name = format!(".well-known/acme-challenge/{token}");
                for h in [host, crate::files::FALLBACK_HOST] {
                    if let Some(v) = store.get(&self.keys.data(h, &name)).await? {
                        return Ok(Some(Bytes::from(v)));
                    }
                }
                Ok(None)
            },
        )
        .await
    }
}

/// RFC 8555 tokens are base64url (no padding); RELIW's allowed `.` too.
fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::is_token;

    #[test]
    fn tokens_are_base64url() {
        assert!(is_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        assert!(is_token("tok-123.keyauth"));
        for bad in ["", "a/b", "a%2fb", "..%00", "x y", &"a".repeat(257)] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
