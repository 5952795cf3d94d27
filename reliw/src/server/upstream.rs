//! Connections to upstreams: opened (TCP, then TLS for `https`) within
//! the configured timeouts, and pooled per worker, keyed by address and
//! TLS settings, so a busy upstream sees a few long-lived connections
//! rather than one per request.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::tls::Tls;
use super::transport::{Connect, Transport, idle_and_open};
use crate::config::Config;
use crate::http::Status;
use crate::metrics::NodeMetrics;
use crate::proxy::upstream_tls;
use crate::proxy::{PoolKey, ProxyTarget, UpstreamTls};

/// A connection to an upstream.
pub(crate) enum UpConn<U> {
    Plain(U),
    Tls(Box<Tls<U>>),
}

impl<U: Transport> Transport for UpConn<U> {
    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Self::Plain(io) => io.read(buf).await,
            Self::Tls(io) => io.read(buf).await,
        }
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Self::Plain(io) => io.write_all(buf).await,
            Self::Tls(io) => io.write_all(buf).await,
        }
    }

    async fn write_head_body(&mut self, head: Vec<u8>, body: Bytes) -> io::Result<()> {
        match self {
            Self::Plain(io) => io.write_head_body(head, body).await,
            Self::Tls(io) => io.write_head_body(head, body).await,
        }
    }

    async fn write_head_file(
        &mut self,
        head: Vec<u8>,
        file: Rc<File>,
        start: u64,
        len: u64,
    ) -> io::Result<()> {
        match self {
            Self::Plain(io) => io.write_head_file(head, file, start, len).await,
            Self::Tls(io) => io.write_head_file(head, file, start, len).await,
        }
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(io) => io.wait_readable().await,
            Self::Tls(io) => io.wait_readable().await,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Plain(io) => io.fd(),
            Self::Tls(io) => io.fd(),
        }
    }

    async fn finish(&mut self) {
        match self {
            Self::Plain(io) => io.finish().await,
            Self::Tls(io) => io.finish().await,
        }
    }

    fn shutdown_write(&self) {
        match self {
            Self::Plain(io) => io.shutdown_write(),
            Self::Tls(io) => io.shutdown_write(),
        }
    }

    fn shutdown_both(&self) {
        match self {
            Self::Plain(io) => io.shutdown_both(),
            Self::Tls(io) => io.shutdown_both(),
        }
    }
}

/// Why no connection could be opened.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Refused, unreachable, no address: 502.
    Failed(String),
    /// No answer in time (TCP or TLS): 504.
    Timeout(&'static str),
    /// The TLS handshake failed (certificate, protocol): 502.
    Tls(String),
}

impl ConnectError {
    /// The cause label in `reliw_proxy_upstream_failures_total`.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            Self::Failed(_) => "connect",
            Self::Timeout(_) => "timeout",
            Self::Tls(_) => "tls",
        }
    }

    pub(crate) fn status(&self) -> Status {
        match self {
            Self::Timeout(_) => Status::GATEWAY_TIMEOUT,
            Self::Failed(_) | Self::Tls(_) => Status::BAD_GATEWAY,
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(e) => write!(f, "connect failed: {e}"),
            Self::Timeout(stage) => write!(f, "{stage} timed out"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

/// A pooled connection and when it went idle.
type Idle<U> = (UpConn<U>, Instant);

/// A worker's upstream connections: the idle ones, and the TLS client
/// configs built so far.
pub(crate) struct Upstreams<U> {
    idle: RefCell<HashMap<PoolKey, Vec<Idle<U>>>>,
    tls: RefCell<HashMap<UpstreamTls, Arc<rustls::ClientConfig>>>,
    warned: RefCell<HashSet<PoolKey>>,
    /// Relay buffers, reused: a fresh 64 KiB buffer per request made
    /// malloc trim and grow the heap at every request.
    buffers: RefCell<Vec<Vec<u8>>>,
    node: Arc<NodeMetrics>,
}

/// A connection back in the pool this recently is not checked for a
/// close before reuse (one syscall saved per request); if the upstream
/// did close it, the retry covers idempotent requests.
const FRESH: Duration = Duration::from_millis(250);

/// Most spare relay buffers kept per worker.
const SPARE_BUFFERS: usize = 256;

impl<U: Connect> Upstreams<U> {
    pub(crate) fn new(node: Arc<NodeMetrics>) -> Self {
        Self {
            node,
            idle: RefCell::new(HashMap::new()),
            tls: RefCell::new(HashMap::new()),
            warned: RefCell::new(HashSet::new()),
            buffers: RefCell::new(Vec::new()),
        }
    }

    /// The node's metrics (for the proxy's counters).
    pub(crate) fn node(&self) -> &NodeMetrics {
        &self.node
    }

    /// An empty buffer of at least `size` bytes' capacity.
    pub(crate) fn buffer(&self, size: usize) -> Vec<u8> {
        match self.buffers.borrow_mut().pop() {
            Some(mut b) => {
                b.reserve(size);
                b
            }
            None => Vec::with_capacity(size),
        }
    }

    /// Gives a buffer back for reuse (unless it grew large).
    pub(crate) fn recycle(&self, mut buf: Vec<u8>, size: usize) {
        let mut spare = self.buffers.borrow_mut();
        if buf.capacity() <= size * 2 && spare.len() < SPARE_BUFFERS {
            buf.clear();
            spare.push(buf);
        }
    }

    /// The most recently used idle connection to `key` that is still
    /// open and quiet; older or closed ones are dropped on the way.
    pub(crate) fn take_idle(&self, key: &PoolKey, max_idle: Duration) -> Option<UpConn<U>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            let idle = since.elapsed();
            if idle < max_idle && (idle < FRESH || idle_and_open(conn.fd())) {
                self.node.upstream_reused.inc();
                return Some(conn);
            }
            conn.shutdown_both();
        }
        None
    }

    /// Pools `conn` for the next request to `key`, keeping at most `cap`.
    pub(crate) fn put_back(&self, key: &PoolKey, conn: UpConn<U>, cap: usize) {
        if cap == 0 {
            conn.shutdown_both();
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = match idle.get_mut(key) {
            Some(list) => list,
            None => idle.entry(key.clone()).or_default(),
        };
        list.push((conn, Instant::now()));
        if list.len() > cap {
            let (oldest, _) = list.remove(0);
            oldest.shutdown_both();
        }
    }

    /// Closes idle connections older than `max_idle` or closed by the
    /// upstream (run now and then, so idle sockets do not linger).
    pub(crate) fn sweep(&self, max_idle: Duration) {
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|(conn, since)| {
                let keep = since.elapsed() < max_idle && idle_and_open(conn.fd());
                if !keep {
                    conn.shutdown_both();
                }
                keep
            });
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Opens a new connection to `target`.
    pub(crate) async fn open(
        &self,
        target: &ProxyTarget,
        config: &Config,
    ) -> Result<UpConn<U>, ConnectError> {
        self.node.upstream_opened.inc();
        let timeout = Duration::from_millis(config.proxy.connect_timeout_ms);
        let tcp = tokio::time::timeout(timeout, connect_any::<U>(&target.host, target.port))
            .await
            .map_err(|_| ConnectError::Timeout("connect"))??;
        let Some(settings) = &target.tls else {
            return Ok(UpConn::Plain(tcp));
        };
        let client_config = self.client_config(settings, target)?;
        let name = upstream_tls::server_name(&target.host).map_err(ConnectError::Tls)?;
        let handshake_timeout = target
            .handshake_timeout
            .unwrap_or(config.handshake_timeout());
        match Tls::connect(tcp, client_config, name, handshake_timeout).await {
            Ok(tls) => Ok(UpConn::Tls(Box::new(tls))),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                Err(ConnectError::Timeout("TLS handshake"))
            }
            Err(e) => Err(ConnectError::Tls(e.to_string())),
        }
    }

    fn client_config(
        &self,
        settings: &UpstreamTls,
        target: &ProxyTarget,
    ) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
        if !settings.verify && self.warned.borrow_mut().insert(target.pool_key.clone()) {
            tracing::warn!(
                upstream = target.origin,
                "upstream certificate is not verified (tls_insecure / tls_no_verify / no_verify_mode)"
            );
        }
        if let Some(config) = self.tls.borrow().get(settings) {
            return Ok(Arc::clone(config));
        }
        // Not cached when it fails: the operator may fix the file.
        let config = upstream_tls::client_config(settings).map_err(ConnectError::Tls)?;
        self.tls
            .borrow_mut()
            .insert(settings.clone(), Arc::clone(&config));
        Ok(config)
    }
}

/// Connects to the first address of `host` that answers.
async fn connect_any<U: Connect>(host: &str, port: u16) -> Result<U, ConnectError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return U::connect(SocketAddr::new(ip, port))
            .await
            .map_err(|e| ConnectError::Failed(e.to_string()));
    }
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ConnectError::Failed(format!("cannot resolve {host}: {e}")))?;
    let mut last = ConnectError::Failed(format!("{host} has no address"));
    for addr in addrs {
        match U::connect(addr).await {
            Ok(conn) => return Ok(conn),
            Err(e) => last = ConnectError::Failed(format!("{addr}: {e}")),
        }
    }
    Err(last)
}
