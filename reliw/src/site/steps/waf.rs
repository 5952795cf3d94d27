//! The WAF step, before the proxy and the routes: the global (`__`) and the
//! host's rule sets from `P:WAF` checked against the path, the query and
//! the headers. A hit is a 403 (or RELIW's redirect), a shield ban of the
//! client and a notice on `P:WAFFERS` for the fleet. Rules that cannot be
//! read fail open (logged): a store outage must not become a site outage.

use crate::config::BlockResponse;
use crate::http::Status;
use crate::site::{Ctx, Response, Site};
use crate::store::Backend;
use crate::store::Store as _;

impl Site {
    /// The refusal for a request a WAF rule matches; `None`: on it goes.
    pub(in crate::site) async fn waf(
        &self,
        store: &Backend,
        ctx: &Ctx<'_, '_>,
    ) -> Option<Response> {
        let sets = match self.waf_rules(store, &ctx.host).await {
            Ok(sets) => sets,
            Err(e) => {
                self.store_failed("WAF rules", &e);
                return None;
            }
        };
        let hit = crate::waf::check(&sets, ctx.req)?;
        self.node.waf_hits.inc();
        tracing::warn!(
            vhost = &*ctx.host,
            path = ctx.req.target,
            rule = hit.rule,
            waf_target = hit.target,
            client = %ctx.client,
            "blocked by WAF"
        );
        let seconds = ctx.config.shield.ban_seconds;
        let notice = self
            .bans
            .verdict(ctx.client, "waf", Some(hit.rule), seconds);
        self.publish_ban(store, notice).await;
        if ctx.config.waf.block_response == BlockResponse::ReliwRedirect {
            // RELIW's answer, for operators whose tooling expects it.
            let to = "http://127.0.0.1/Fuck_Off";
            return Some(Response::redirect(
                Status::MOVED_PERMANENTLY,
                to,
                Vec::new(),
            ));
        }
        Some(self.error(ctx, Status::FORBIDDEN).await)
    }

    /// Publishes a ban on `P:WAFFERS` for the other nodes.
    pub(in crate::site) async fn publish_ban(
        &self,
        store: &Backend,
        notice: Option<crate::bans::Notice>,
    ) {
        let Some(notice) = notice else { return };
        if let Err(e) = store
            .publish(&self.keys.waffers(), notice.to_json().as_bytes())
            .await
        {
            self.store_failed("P:WAFFERS (publish)", &e);
        }
    }
}
