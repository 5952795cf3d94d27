//! The rate-limit step, after auth and methods: an entry's per-method
//! `rate_limit` counted per client in a store window. Over the limit is a
//! 429 with `Retry-After` (and a strike towards a shield ban when
//! `rate_limit.ban` is set); a counter that cannot be read passes the
//! request, or is a 503 with `rate_limit.fail_closed`.

use crate::http::{HeaderValue, Status};
use crate::site::meta::EntryMeta;
use crate::site::{Ctx, Response, Site};
use crate::store::Backend;
use crate::store::Store as _;
use crate::store::StoreError;
use std::net::IpAddr;
use std::time::Duration;

impl Site {
    /// The refusal for a request over its entry's limit; `None`: on it goes.
    pub(in crate::site) async fn limit(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
        meta: &EntryMeta,
    ) -> Option<Response> {
        let client = ctx.client;
        match self.rate_limited(store, ctx, meta, client).await {
            Limit::Pass => None,
            Limit::Over(retry_after) => {
                if let Some(seconds) = self.bans.strike(client) {
                    let notice = self.bans.verdict(client, "rate_limit", None, seconds);
                    self.publish_ban(store, notice).await;
                }
                let mut r = self.error(ctx, Status::TOO_MANY_REQUESTS).await;
                r.head
                    .headers
                    .push(("Retry-After", HeaderValue::from(retry_after.to_string())));
                Some(r)
            }
            Limit::Unknown(e) => Some(self.unavailable(ctx, "the rate-limit counter", &e).await),
        }
    }

    /// RELIW's fixed window: `LIMITS:<host>:<method>:<path>:<ip>` counted
    /// with INCR (the window set on the first hit), one round trip. The
    /// address is the socket peer's, never a request header. A store that
    /// cannot count lets the request through (logged and counted).
    pub(in crate::site) async fn rate_limited(
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
}

/// The rate-limit step's verdict.
pub(in crate::site) enum Limit {
    Pass,
    /// Over the limit: retry after this many seconds.
    Over(u64),
    /// The counter could not be read and the config says fail closed.
    Unknown(StoreError),
}
