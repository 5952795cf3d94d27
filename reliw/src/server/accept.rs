//! A worker's event loop: one thread, one runtime (tokio-uring, or tokio
//! with epoll), its own SO_REUSEPORT listeners; accepting, admitting a
//! connection against `max_connections`, TLS, then the driver; the drain
//! at shutdown.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::conn;
use super::tls::Tls;
use super::transport::{Acceptor, Connect, EpollListener, UringListener};
use super::upstream::Upstreams;
use super::worker::Worker;
use crate::http::Status;

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

async fn connection<T: Connect + super::transport::IntoStream>(
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
        Ok(tls) if tls.is_h2() => {
            tracing::trace!(%peer, sni = tls.server_name(), "TLS established, HTTP/2");
            conn::serve_h2(tls, peer, Rc::clone(&slot.worker), &upstreams, shutdown).await;
        }
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
