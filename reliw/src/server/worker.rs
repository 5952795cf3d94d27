//! A worker: one thread, one runtime (tokio-uring, or tokio with epoll),
//! its own SO_REUSEPORT listeners, its own file cache. Nothing here is
//! shared with other workers except [`Shared`] (config, connection count).

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;

use super::Shared;
use super::conn;
use super::tls::Tls;
use super::transport::{Acceptor, Connect, EpollListener, UringListener};
use super::upstream::Upstreams;
use crate::config::Config;
use crate::files::cache::{self, FileCache};
use crate::http::{RequestHead, Status};
use crate::site::{Response, Site};
use crate::store::Store as _;

/// Per-worker state, shared by the connections of this worker only.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    site: Site,
    /// Open connections of this worker (for the shutdown drain).
    active: Cell<usize>,
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
        let config = shared.config();
        let workers = config.workers.max(1) as u64;
        let limits = cache::Limits {
            max_file: config.cache_max_size,
            max_total: config.cache_total_size / workers,
            max_fds: config.cache_max_fds,
            sendfile_min: config.sendfile_min_size,
            revalidate: Duration::from_millis(config.cache_revalidate_ms),
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
            &config,
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
    async fn flush_counts(&self) {
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
            Ok(values) => self.site.counts.borrow_mut().learn(&batch, &values),
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

    pub(crate) async fn front(
        &self,
        head: &RequestHead,
        peer: SocketAddr,
        config: &Config,
    ) -> crate::site::Front {
        self.site.front(head, peer.ip(), config).await
    }

    pub(crate) async fn handle_local(
        &self,
        head: &RequestHead,
        local: crate::site::Local,
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

    /// One access-log line (target `access`).
    pub(crate) fn access_log(
        &self,
        config: &Config,
        request: Option<(&RequestHead, Instant)>,
        peer: SocketAddr,
        status: Status,
        bytes: u64,
        served: u64,
    ) {
        let node = &self.shared.node;
        node.bytes_sent.inc_by(bytes);
        if let Some((_, started)) = request {
            node.request_duration
                .observe(started.elapsed().as_secs_f64());
        }
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let client = match request {
            Some((req, _)) if !config.trusted_proxies.is_empty() => {
                crate::client_ip::client_address(
                    peer.ip(),
                    req,
                    &config.trusted_proxy_cidrs,
                    &config.client_ip_header,
                )
            }
            _ => peer.ip().to_canonical(),
        };
        let (vhost, method, path, forwarded_for, duration, headers) = match request {
            Some((req, started)) => {
                let mut headers = String::new();
                for name in &config.log_headers {
                    if let Some(v) = req.header_str(&name.to_ascii_lowercase()) {
                        let _ = write!(headers, "{name}={v:?} ");
                    }
                }
                (
                    req.host.clone().unwrap_or_default(),
                    req.method.as_str(),
                    req.target.clone(),
                    req.header_str("x-forwarded-for").unwrap_or("").to_owned(),
                    started.elapsed(),
                    headers,
                )
            }
            None => (
                String::new(),
                "-",
                String::new(),
                String::new(),
                Duration::ZERO,
                String::new(),
            ),
        };
        tracing::info!(
            target: "access",
            vhost,
            method,
            path,
            status = status.code(),
            bytes,
            duration_us = duration.as_micros() as u64,
            client_ip = %client,
            peer = %peer.ip(),
            forwarded_for,
            request_no = served,
            headers = headers.trim_end(),
        );
    }
}

/// A listening socket of a worker, and whether it speaks TLS.
pub(crate) struct Listening {
    pub(crate) socket: std::net::TcpListener,
    pub(crate) tls: bool,
}

/// Holds a connection slot; gives it back on drop.
struct Slot {
    worker: Rc<Worker>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.worker.active.set(self.worker.active.get() - 1);
        self.worker.shared.node.connections_open.dec();
        self.worker.shared.release();
    }
}

fn admit(worker: &Rc<Worker>) -> Option<Slot> {
    if !worker.shared.try_admit() {
        return None;
    }
    worker.active.set(worker.active.get() + 1);
    worker.shared.node.connections_open.inc();
    Some(Slot {
        worker: Rc::clone(worker),
    })
}

/// Runs a worker on io_uring until shutdown; `Err` if io_uring cannot be set up.
pub(crate) fn run_uring(
    listeners: Vec<Listening>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let runtime = tokio_uring::Runtime::new(&tokio_uring::builder())?;
    runtime.block_on(serve_listeners(
        listeners,
        shared,
        shutdown,
        UringListener::new,
    ));
    Ok(())
}

/// Runs a worker on plain tokio (epoll) until shutdown.
pub(crate) fn run_epoll(
    listeners: Vec<Listening>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(
        &runtime,
        serve_listeners(listeners, shared, shutdown, EpollListener::new),
    );
    Ok(())
}

/// One accept loop per listener, until shutdown; then the drain. Both
/// runtimes run tasks on a tokio `LocalSet`, so `spawn_local` serves both.
async fn serve_listeners<A: Acceptor + 'static>(
    listeners: Vec<Listening>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    wrap: fn(std::net::TcpListener) -> std::io::Result<A>,
) {
    let worker = Rc::new(Worker::new(shared));
    let upstreams: Rc<Upstreams<A::Conn>> =
        Rc::new(Upstreams::new(Arc::clone(&worker.shared.node)));
    let flusher = {
        let worker = Rc::clone(&worker);
        let upstreams = Rc::clone(&upstreams);
        let mut shutdown = shutdown.clone();
        tokio::task::spawn_local(async move {
            loop {
                let config = worker.config();
                let every = Duration::from_millis(config.metrics.flush_ms);
                tokio::select! {
                    _ = tokio::time::sleep(every) => {
                        worker.flush_counts().await;
                        upstreams.sweep(Duration::from_millis(config.proxy.pool_idle_timeout_ms));
                    }
                    _ = shutdown.changed() => break,
                }
            }
        })
    };
    let mut accepts = Vec::new();
    for Listening { socket, tls } in listeners {
        let listener = match wrap(socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up a listener");
                continue;
            }
        };
        let worker = Rc::clone(&worker);
        let upstreams = Rc::clone(&upstreams);
        let mut shutdown = shutdown.clone();
        accepts.push(tokio::task::spawn_local(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = shutdown.changed() => break,
                };
                match accepted {
                    Ok((io, peer)) => {
                        worker.shared.bans.handshakes.saw(peer.ip());
                        let worker = Rc::clone(&worker);
                        let upstreams = Rc::clone(&upstreams);
                        let rx = shutdown.clone();
                        tokio::task::spawn_local(connection(io, peer, worker, upstreams, rx, tls));
                    }
                    Err(e) => accept_backoff(e).await,
                }
            }
            listener.close();
        }));
    }
    for a in accepts {
        let _ = a.await;
    }
    drain(&worker).await;
    let _ = flusher.await;
    upstreams.sweep(Duration::ZERO);
    // What the last requests counted.
    worker.flush_counts().await;
}

async fn connection<T: Connect>(
    mut io: T,
    peer: SocketAddr,
    worker: Rc<Worker>,
    upstreams: Rc<Upstreams<T>>,
    shutdown: watch::Receiver<bool>,
    tls: bool,
) {
    let Some(slot) = admit(&worker) else {
        worker.shared.log_full();
        let mut out = Vec::new();
        let mut head = crate::http::ResponseHead::new(Status::SERVICE_UNAVAILABLE);
        head.close = true;
        super::date::with_date(|d| head.encode(d, &mut out));
        let _ = io.write_all(out).await;
        io.shutdown_write();
        return;
    };
    if !tls {
        conn::serve(
            io,
            peer,
            Rc::clone(&slot.worker),
            &upstreams,
            shutdown,
            false,
        )
        .await;
        return;
    }
    let Some(config) = worker.shared.tls() else {
        return;
    };
    let timeout = worker.config().handshake_timeout();
    match Tls::accept(io, config, timeout).await {
        Ok(tls) => {
            tracing::trace!(%peer, sni = tls.server_name(), "TLS established");
            conn::serve(
                tls,
                peer,
                Rc::clone(&slot.worker),
                &upstreams,
                shutdown,
                true,
            )
            .await;
        }
        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
    }
    drop(slot);
}

/// Out of fds or similar: log, and give the system a moment.
async fn accept_backoff(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// After the listeners closed: wait for this worker's connections to end,
/// up to the grace period; what is left is cut when the runtime drops.
async fn drain(worker: &Worker) {
    let grace = Duration::from_secs(worker.config().shutdown_grace);
    let deadline = Instant::now() + grace;
    while worker.active.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if worker.active.get() > 0 {
        tracing::warn!(
            open = worker.active.get(),
            "grace period over; closing connections"
        );
    }
}
