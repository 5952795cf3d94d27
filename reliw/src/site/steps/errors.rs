//! Error answers and counting: every response the site makes itself is
//! counted once in RELIW's metrics, and error pages go through the host's
//! template (503s do not, the store being the problem).

use crate::http::HeaderValue;
use crate::http::Status;
use crate::look::Look;
use crate::site::Ctx;
use crate::site::Response;
use crate::site::Site;
use crate::site::page;
use crate::store::StoreError;
use bytes::Bytes;

impl Site {
    pub(in crate::site) fn count(&self, ctx: &Ctx<'_, '_>, status: Status) {
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

    pub(in crate::site) fn store_failed(&self, what: &str, e: &StoreError) {
        self.node.store_errors.inc();
        if self.store_log.ready() {
            tracing::warn!(error = %e, "store: cannot read {what}");
        }
    }

    pub(in crate::site) async fn unavailable(
        &self,
        ctx: &Ctx<'_, '_>,
        what: &str,
        e: &StoreError,
    ) -> Response {
        self.store_failed(what, e);
        let mut r = self.error(ctx, Status::SERVICE_UNAVAILABLE).await;
        r.head
            .headers
            .push(("Retry-After", HeaderValue::Static("1")));
        r
    }

    /// An error page through the site's template, counted in the metrics.
    pub(in crate::site) async fn error(&self, ctx: &Ctx<'_, '_>, status: Status) -> Response {
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
}
