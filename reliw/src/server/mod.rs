//! The server process: listeners, worker threads, signals.
//!
//! - `listener`: SO_REUSEPORT sockets, one per worker and address.
//! - `accept`: one thread and runtime per worker, its accept loops.
//! - `worker`: a worker's state (site, caches, body budget).
//! - `conn`: the per-connection driver around the sans-IO codec.
//! - `exchange`: one request, head to last byte; `finish`: its metrics
//!   and access-log line, once per request.
//! - `forward`: a proxied exchange (acquire, send, await head, relay).
//! - `deadline`: reads with a deadline on tokio's clock.
//! - `transport`: the I/O seam (tokio-uring or epoll).
//! - `date`: the cached `Date` header.
//!
//! Shutdown order (SIGTERM or SIGINT): every worker stops accepting and
//! closes its listeners; idle keep-alive connections close at once; a
//! request in flight finishes and its connection then closes (its response
//! says `Connection: close`); after `shutdown_grace` seconds what remains is
//! cut. Then the threads are joined, the shield detaches (dropped last), and
//! the process exits 0. SIGHUP reloads the config file: a bad one is logged
//! and the old one kept.

mod accept;
mod conn;
mod date;
mod deadline;
mod exchange;
mod finish;
mod forward;
#[cfg(test)]
mod harness;
mod http2;
mod listener;
mod stream;
#[cfg(test)]
mod tests;
pub mod tls;
mod transport;
mod upstream;
mod worker;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::watch;

use crate::bans::{self, Bans};
use crate::config::{Config, Startup};
use crate::metrics::NodeMetrics;
use crate::shield::{Shield, ShieldOptions};
use crate::site::control::{self, Control};
use crate::store::StoreSpec;

/// Which I/O runtime the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring if it can be set up here, else epoll.
    Auto,
    Uring,
    Epoll,
}

impl FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" => Ok(Self::Uring),
            "epoll" => Ok(Self::Epoll),
            _ => Err(format!("'{s}' is not an I/O mode (auto, uring, epoll)")),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// io_uring was demanded (`--io uring`) but is not available.
    #[error("io_uring is not available here: {0}")]
    NoUring(std::io::Error),
    /// A certificate or key could not be used.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// The configured store cannot be used (a bad site file, a Redis
    /// section reliw cannot honour).
    #[error("{0}")]
    Store(#[from] crate::store::StoreSetupError),
    /// `ssl.acme` cannot start (its key file).
    #[error("{0}")]
    Acme(#[from] crate::acme::AcmeError),
    /// Threads or signal handlers could not be set up.
    #[error("{what}: {source}")]
    Setup {
        what: &'static str,
        source: std::io::Error,
    },
}

/// State all workers share.
pub(crate) struct Shared {
    /// What the server started with and keeps (see `config::startup`).
    pub(crate) startup: Startup,
    /// The live rest, swapped on SIGHUP; connections take a snapshot.
    config: RwLock<Arc<Config>>,
    connections: AtomicUsize,
    full_logged_at: AtomicU64,
    /// The site store every worker opens a handle to.
    pub(crate) store: StoreSpec,
    /// Invalidations of the workers' site caches.
    pub(crate) control: Arc<Control>,
    pub(crate) node: Arc<NodeMetrics>,
    /// This node's bans (WAF and rate-limit verdicts, and peers').
    pub(crate) bans: Arc<Bans>,
    /// The TLS config new connections get (swapped on SIGHUP).
    tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// ACME certificates, kept across SIGHUP's new TLS configs.
    acme: Arc<crate::acme::LiveCertificates>,
}

impl Shared {
    pub(crate) fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace_config(&self, new: Config) {
        let mut slot = self.config.write().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(new);
    }

    /// The TLS config for a new connection.
    pub(crate) fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes a connection slot unless `max_connections` are open.
    pub(crate) fn try_admit(&self) -> bool {
        let max = self.config().max_connections;
        let prev = self.connections.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub(crate) fn release(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Logs that the connection cap was hit, at most once a second.
    pub(crate) fn log_full(&self) {
        let now = crate::shield::clock::unix_seconds();
        let last = self.full_logged_at.swap(now, Ordering::Relaxed);
        if last != now {
            tracing::warn!(
                max_connections = self.config().max_connections,
                "connection limit reached; answering 503"
            );
        }
    }
}

/// glibc gives the top of a heap back to the kernel once 128 KiB are free
/// there. HTTP/2 streams (some 10 KiB of state each, hundreds at once on
/// a busy connection) grow and shrink a worker's heap every burst, and
/// every regrowth page-faults: measured at 5% of the CPU and a sixth of
/// the h2 throughput. Up to 16 MiB free per arena is kept instead.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any worker thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
    }
}

/// Runs the server until SIGTERM or SIGINT. `config_path` is re-read on SIGHUP.
pub fn run(config: Config, config_path: Option<PathBuf>, io: IoMode) -> Result<(), ServerError> {
    let signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|source| {
            ServerError::Setup {
                what: "installing signal handlers",
                source,
            }
        })?;
    let mut signals = signals;
    tune_allocator();
    let io = resolve_io_mode(io)?;
    let workers = config.workers;
    let store = StoreSpec::from_config(&config)?;

    // Certificates and listeners first: a bad certificate or a port in use
    // fails start-up before anything else.
    let acme = Arc::new(crate::acme::LiveCertificates::default());
    let tls = match &config.ssl {
        Some(ssl) => Some(tls::load(ssl, config.http2.enabled, &acme)?),
        None => None,
    };
    let mut per_worker: Vec<Vec<accept::Listening>> = (0..workers).map(|_| Vec::new()).collect();
    // (port, TLS?): RELIW serves TLS on `port` when `ssl` is set; with
    // `ssl.port` plain HTTP stays on `port` and TLS goes there.
    let ports: Vec<(u16, bool)> = match &config.ssl {
        None => vec![(config.port, false)],
        Some(ssl) => match ssl.port {
            None => vec![(config.port, true)],
            Some(p) => vec![(config.port, false), (p, true)],
        },
    };
    for (port, is_tls) in ports {
        let mut addrs: Vec<SocketAddr> = vec![SocketAddr::new(config.ip, port)];
        if let Some(v6) = config.ipv6 {
            addrs.push(SocketAddr::new(IpAddr::V6(v6), port));
        }
        for addr in addrs {
            let (listeners, bound) = listener::bind_reuseport(addr, workers, config.backlog)
                .map_err(|source| ServerError::Listen { addr, source })?;
            for (slot, l) in per_worker.iter_mut().zip(listeners) {
                slot.push(accept::Listening {
                    socket: l,
                    tls: is_tls,
                });
            }
            // On stdout, for people and for tests that started us on port 0;
            // a closed stdout is no reason to stop.
            let scheme = if is_tls { "https" } else { "http" };
            let _ = writeln!(std::io::stdout(), "listening on {scheme}://{bound}");
        }
    }

    let mut shield = if config.shield.interfaces.is_empty() {
        Shield::disabled()
    } else {
        let tick = crate::shield::clock::tick();
        let plan = crate::shield::rate::plan(&config.shield.rate_limit, tick);
        for (key, raised) in [
            ("packet_burst", plan.raised.0),
            ("syn_burst", plan.raised.1),
        ] {
            if let Some(burst) = raised {
                tracing::warn!(
                    "shield.rate_limit.{key} raised to {burst}: the XDP clock ticks every {tick:?}, and a smaller burst would cap the rate"
                );
            }
        }
        let mut listening = vec![config.port];
        listening.extend(config.ssl.as_ref().and_then(|s| s.port));
        let cookies = crate::shield::syncookies::plan(&config.shield.syn_cookies, &listening);
        Shield::start_or_disabled(&ShieldOptions {
            interfaces: config.shield.interfaces.clone(),
            mode: config.shield.mode,
            dry_run: Some(config.shield.dry_run),
            pin_root: Some(config.shield.pin_root.clone()),
            rate_limits: Some(plan.limits),
            syn_cookies: Some(cookies),
            ..ShieldOptions::default()
        })
    };

    let node = Arc::new(NodeMetrics::new(shield.maps_handle()));
    if !config.metrics.disabled {
        let addr = crate::metrics::listener::spawn(
            &config.metrics,
            store.clone(),
            config.redis.prefix.clone(),
            Arc::clone(&node),
        )
        .map_err(|source| ServerError::Setup {
            what: "starting the metrics listener",
            source,
        })?;
        let _ = writeln!(std::io::stdout(), "metrics on http://{addr}/metrics");
    }
    let control = Arc::new(Control::new());
    let startup = config.startup();
    let bans = Arc::new(Bans::new(shield.maps_handle(), shield.pin_dir(), &startup));
    bans.spawn_book_writer()
        .map_err(|source| ServerError::Setup {
            what: "starting the ban book writer",
            source,
        })?;
    if let StoreSpec::Redis(redis) = &store {
        subscribe(redis, Arc::clone(&control), Arc::clone(&bans))?;
    }
    if let Some(reports) = shield.take_escalations() {
        let rate = &config.shield.rate_limit;
        bans.spawn_escalation_banner(
            reports,
            store.clone(),
            crate::store::Keys::new(&config.redis.prefix).waffers(),
            rate.ban_seconds.unwrap_or(config.shield.ban_seconds),
        )
        .map_err(|source| ServerError::Setup {
            what: "starting the escalation banner",
            source,
        })?;
    }

    crate::acme::spawn(&config, &store, &acme, &node)?;
    let shared = Arc::new(Shared {
        startup,
        config: RwLock::new(Arc::new(config)),
        connections: AtomicUsize::new(0),
        full_logged_at: AtomicU64::new(0),
        store,
        control,
        node,
        bans,
        tls: RwLock::new(tls),
        acme,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    for (i, listeners) in per_worker.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let rx = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("reliw-worker-{i}"))
            .spawn(move || {
                let result = match io {
                    IoMode::Uring | IoMode::Auto => accept::run_uring(listeners, shared, rx),
                    IoMode::Epoll => accept::run_epoll(listeners, shared, rx),
                };
                if let Err(e) = result {
                    tracing::error!(worker = i, error = %e, "worker failed");
                }
            })
            .map_err(|source| ServerError::Setup {
                what: "spawning a worker thread",
                source,
            })?;
        threads.push(thread);
    }
    tracing::info!(workers, io = ?io, shield = shield.is_active(), "reliw serving");
    let _ = writeln!(std::io::stdout(), "ready");

    for signal in signals.forever() {
        match signal {
            SIGHUP => reload(&shared, config_path.as_deref()),
            _ => break,
        }
    }
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    let _ = stop_tx.send(true);
    for t in threads {
        let _ = t.join();
    }
    drop(shield);
    tracing::info!("stopped");
    Ok(())
}

/// Picks the runtime, probing io_uring once in `Auto`.
fn resolve_io_mode(io: IoMode) -> Result<IoMode, ServerError> {
    let probe = || tokio_uring::Runtime::new(&tokio_uring::builder()).map(drop);
    match io {
        IoMode::Epoll => {
            tracing::info!("I/O: epoll (as asked)");
            Ok(IoMode::Epoll)
        }
        IoMode::Uring => {
            probe().map_err(ServerError::NoUring)?;
            tracing::info!("I/O: io_uring");
            Ok(IoMode::Uring)
        }
        IoMode::Auto => match probe() {
            Ok(()) => {
                tracing::info!("I/O: io_uring");
                Ok(IoMode::Uring)
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable; I/O: epoll");
                Ok(IoMode::Epoll)
            }
        },
    }
}

/// Follows `P:CTL` (after any gap in the subscription the caches are
/// dropped, since messages sent meanwhile were missed) and `P:WAFFERS`
/// (bans decided by other nodes).
fn subscribe(
    redis: &crate::config::RedisConfig,
    control: Arc<Control>,
    bans: Arc<Bans>,
) -> Result<(), ServerError> {
    use crate::store::subscriber::{Event, spawn};
    let keys = crate::store::Keys::new(&redis.prefix);
    let (ctl, waffers) = (keys.ctl(), keys.waffers());
    let channels = vec![ctl.clone(), waffers.clone()];
    spawn(redis.clone(), channels, move |event| match event {
        // Messages may have been missed while unsubscribed: read everything
        // again, but keep the copies for a store that is failing (over).
        Event::Subscribed => control.invalidate(control::Scope::Stale),
        Event::Message { channel, payload } if channel == waffers => {
            match bans::Notice::parse(payload, bans.default_seconds) {
                Ok(notice) => {
                    bans.apply(&notice);
                }
                Err(e) => tracing::warn!(
                    channel,
                    message = %String::from_utf8_lossy(payload),
                    "ignored ban message: {e}"
                ),
            }
        }
        Event::Message { channel, payload } => match control::parse_message(payload) {
            Ok(scope) => {
                tracing::info!(channel, ?scope, "control: dropping cached site data");
                control.invalidate(scope);
            }
            Err(e) => tracing::warn!(
                channel,
                message = %String::from_utf8_lossy(payload),
                "control: ignored message: {e}"
            ),
        },
    })
    .map_err(|source| ServerError::Setup {
        what: "starting the Redis subscriber",
        source,
    })
}

/// SIGHUP: the config file, then the memory store's site file.
fn reload(shared: &Shared, path: Option<&std::path::Path>) {
    reload_config(shared, path);
    if let StoreSpec::Memory(store) = &shared.store {
        let config = shared.config();
        if let Some(file) = &config.store.site_file {
            // The prefix the site runs with, whatever the new file says.
            match store.reload(file, &shared.startup.redis.prefix) {
                Ok(()) => {
                    shared.control.invalidate(control::Scope::All);
                    tracing::info!(path = %file.display(), "SIGHUP: site file reloaded");
                }
                Err(e) => tracing::error!("SIGHUP: keeping the old site data: {e}"),
            }
        }
    }
}

fn reload_config(shared: &Shared, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: no config file to reload (running on defaults)");
        return;
    };
    match Config::load(path) {
        Ok(mut new) => {
            // Certificates first, when TLS runs: a file that cannot be used
            // keeps the whole old config, never half of the new one.
            let running_tls = shared.tls().is_some();
            let ssl = new.ssl.as_ref().filter(|_| running_tls);
            let h2 = new.http2.enabled;
            let tls = match ssl.map(|s| tls::load(s, h2, &shared.acme)).transpose() {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::error!("SIGHUP: keeping the old certificates and the old config: {e}");
                    return;
                }
            };
            let frozen = shared.startup.changed(&new.startup());
            if !frozen.is_empty() {
                tracing::warn!(
                    keys = frozen.join(", "),
                    "SIGHUP: these keys change only on restart; their running values stay"
                );
            }
            // The store connection cannot change under the running site.
            new.redis = shared.startup.redis.clone();
            if tls.is_some() {
                *shared.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
                tracing::info!("SIGHUP: certificates reloaded for new connections");
            }
            shared.replace_config(new);
            tracing::info!(path = %path.display(), "SIGHUP: config reloaded");
        }
        Err(e) => tracing::error!("SIGHUP: keeping the old config: {e}"),
    }
}
