//! A worker's state: its site (store handle, caches, counters), its file
//! cache and its body budget. Nothing here is shared with other workers
//! except [`Shared`] (config, connection count); the event loop that owns
//! a worker is in `accept`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::config::Config;
use crate::files::cache::{self, FileCache};
use crate::http::RequestHead;
use crate::site::{Response, Site};
use crate::store::Store as _;

/// Per-worker state, shared by the connections of this worker only.
pub(crate) struct Worker {
    pub(super) shared: Arc<Shared>,
    site: Site,
    /// Open connections of this worker (for the shutdown drain).
    pub(super) active: Cell<usize>,
    /// Body bytes kept beyond FORM_LIMIT by this worker's requests.
    body_budget: Rc<Cell<usize>>,
}

/// Receives a request body in pieces: counts it, and keeps the first
/// `limit` bytes (`lua.max_body_size`, at least a login form's
/// [`crate::auth::FORM_LIMIT`]) for forms and Lua pages; a longer body is
/// marked as such, never buffered whole.
///
/// Beyond the first `FORM_LIMIT` bytes, what bodies keep counts against
/// one budget per worker ([`BODY_BUDGET`]), so many large uploads at once
/// cannot hold `max_connections` times `lua.max_body_size`: past the
/// budget a body is marked as too long (a Lua page then answers 413).
pub(crate) struct BodySink {
    pub(crate) bytes: u64,
    limit: usize,
    kept: crate::site::RequestBody,
    /// Bytes beyond FORM_LIMIT all sinks of this worker keep.
    budget: Rc<Cell<usize>>,
    /// This sink's share of it.
    charged: usize,
}

/// What a worker's request bodies may keep beyond their first
/// `FORM_LIMIT` bytes, together.
const BODY_BUDGET: usize = 64 << 20;

impl Drop for BodySink {
    fn drop(&mut self) {
        self.budget
            .set(self.budget.get().saturating_sub(self.charged));
    }
}

impl BodySink {
    pub(crate) fn piece(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        let mut room = self.limit.saturating_sub(self.kept.data.len());
        let free = crate::auth::FORM_LIMIT.saturating_sub(self.kept.data.len());
        if data.len().min(room) > free {
            let left = BODY_BUDGET.saturating_sub(self.budget.get());
            room = room.min(free + left);
            let charge = data.len().min(room) - free;
            self.budget.set(self.budget.get() + charge);
            self.charged += charge;
        }
        if data.len() > room {
            self.kept.overflow = true;
        }
        self.kept
            .data
            .extend_from_slice(&data[..data.len().min(room)]);
    }
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        let startup = &shared.startup;
        let workers = startup.workers.max(1) as u64;
        let limits = cache::Limits {
            max_file: startup.file_cache_max,
            max_total: startup.cache_total_size / workers,
            max_fds: startup.cache_max_fds,
            sendfile_min: startup.sendfile_min_size,
            revalidate: Duration::from_millis(startup.cache_revalidate_ms),
        };
        // A store that cannot be opened is never read as "no store": that
        // would serve data_dir statically, past routes, WAF and auth.
        let (store, unusable) = match shared.store.open() {
            Ok(store) => (store, None),
            Err(e) => {
                tracing::error!(error = %e, "store unusable; every request gets 503");
                (None, Some(e.to_string()))
            }
        };
        let site = Site::new(
            store,
            unusable,
            startup,
            Arc::clone(&shared.control),
            Arc::clone(&shared.node),
            Arc::clone(&shared.bans),
            FileCache::new(limits),
        );
        Self {
            site,
            active: Cell::new(0),
            body_budget: Rc::new(Cell::new(0)),
            shared,
        }
    }

    /// Sends this worker's pending request counters to the store (one
    /// pipeline); on failure they are kept for the next flush.
    pub(super) async fn flush_counts(&self) {
        let Some(store) = self.site.store() else {
            return;
        };
        let batch = self.site.counts.borrow_mut().take();
        let dropped = std::mem::take(&mut self.site.counts.borrow_mut().dropped);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "request counters over the per-flush bound were not counted"
            );
        }
        if batch.is_empty() {
            return;
        }
        match store.hincr_batch(&batch).await {
            Ok(values) => {
                // Only what was not applied is sent again (never twice).
                let (mut applied, mut learned, mut lost) = (Vec::new(), Vec::new(), Vec::new());
                for (increment, value) in batch.into_iter().zip(values) {
                    match value {
                        Some(v) => {
                            applied.push(increment);
                            learned.push(v);
                        }
                        None => lost.push(increment),
                    }
                }
                let mut counts = self.site.counts.borrow_mut();
                counts.learn(&applied, &learned);
                if !lost.is_empty() {
                    self.shared.node.store_errors.inc();
                    counts.restore(lost);
                }
            }
            Err(e) => {
                self.shared.node.store_errors.inc();
                tracing::debug!(error = %e, "metrics flush failed; keeping the counts");
                self.site.counts.borrow_mut().restore(batch);
            }
        }
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        self.shared.config()
    }

    pub(crate) fn body_sink(&self, _head: &RequestHead) -> BodySink {
        let limit = usize::try_from(self.config().lua.max_body_size).unwrap_or(usize::MAX);
        BodySink {
            bytes: 0,
            limit: limit.max(crate::auth::FORM_LIMIT),
            kept: crate::site::RequestBody::default(),
            budget: Rc::clone(&self.body_budget),
            charged: 0,
        }
    }

    pub(crate) async fn handle_local(
        &self,
        head: &RequestHead,
        local: crate::site::Local<'_>,
        body: BodySink,
        config: &Config,
    ) -> Response {
        self.site
            .handle_local(head, local, &body.kept, config)
            .await
    }

    pub(crate) fn site(&self) -> &Site {
        &self.site
    }

    pub(crate) fn node(&self) -> &crate::metrics::NodeMetrics {
        &self.shared.node
    }
}
