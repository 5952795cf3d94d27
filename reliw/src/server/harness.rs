//! The in-process harness (quinn's `Pair` is the model): one worker and the
//! real connection driver, [`conn::serve`], over one end of a socket pair,
//! with the memory store and tokio's paused clock. A test writes bytes at
//! the other end and reads what the server answers; timers fire as soon as
//! both sides wait, so a 10 s header timeout costs no wall time.
//!
//! A Unix socket pair rather than a pure in-memory pipe: the transport
//! contract includes `fd()` (non-blocking peeks) and half-close, and a
//! socket pair gives both exactly as TCP does, still without any network.

use std::io;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::watch;

use super::transport::{Epoll, Transport};
use super::upstream::Upstreams;
use super::worker::Worker;
use super::{Shared, conn};
use crate::bans::Bans;
use crate::config::Config;
use crate::metrics::NodeMetrics;
use crate::site::control::Control;
use crate::store::StoreSpec;
use crate::store::memory::MemoryStore;

/// The server's end of a connection.
pub(crate) struct Memory(UnixStream);

impl super::transport::IntoStream for Memory {
    type Stream = UnixStream;
    fn into_stream(self) -> io::Result<UnixStream> {
        Ok(self.0)
    }
}

impl Transport for Memory {
    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() == buf.len() {
            buf.reserve(16 * 1024);
        }
        let r = self.0.read_buf(&mut buf).await;
        (r, buf)
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let r = self.0.write_all(&buf).await;
        (r, buf)
    }

    async fn write_head_body(&mut self, head: Vec<u8>, body: Bytes) -> io::Result<()> {
        self.0.write_all(&head).await?;
        self.0.write_all(&body).await
    }

    async fn write_head_file(
        &mut self,
        head: Vec<u8>,
        file: Rc<std::fs::File>,
        start: u64,
        len: u64,
    ) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let mut data = vec![0; usize::try_from(len).map_err(io::Error::other)?];
        file.read_exact_at(&mut data, start)?;
        self.0.write_all(&head).await?;
        self.0.write_all(&data).await
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        self.0.readable().await
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(&self.0).shutdown(std::net::Shutdown::Write);
    }

    fn shutdown_both(&self) {
        let _ = socket2::SockRef::from(&self.0).shutdown(std::net::Shutdown::Both);
    }
}

/// One worker of a server, with its site in the memory store.
pub(crate) struct Harness {
    pub(crate) shared: Arc<Shared>,
    pub(crate) worker: Rc<Worker>,
    pub(crate) store: Arc<MemoryStore>,
    upstreams: Rc<Upstreams<Epoll>>,
    shutdown: watch::Sender<bool>,
}

/// Runs `test` on a current-thread runtime with the clock paused (timers
/// fire as soon as every task waits) and a `LocalSet`, as a worker has.
pub(crate) fn run<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a test runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, test());
}

impl Harness {
    /// A worker for `config` over the site in `site` (a site file's JSON,
    /// keys with the `RLW:` prefix).
    pub(crate) fn new(config: Config, site: &str) -> Self {
        let store =
            Arc::new(MemoryStore::from_json(site, &config.redis.prefix).expect("site JSON"));
        let node = Arc::new(NodeMetrics::new(None));
        let bans = Arc::new(Bans::new(None, None, &config.startup()));
        let shared = Arc::new(Shared {
            startup: config.startup(),
            config: RwLock::new(Arc::new(config)),
            connections: AtomicUsize::new(0),
            full_logged_at: AtomicU64::new(0),
            store: StoreSpec::Memory(Arc::clone(&store)),
            control: Arc::new(Control::new()),
            node: Arc::clone(&node),
            bans,
            tls: RwLock::new(None),
            acme: Arc::default(),
        });
        let worker = Rc::new(Worker::new(Arc::clone(&shared)));
        let (shutdown, _) = watch::channel(false);
        Self {
            shared,
            worker,
            store,
            upstreams: Rc::new(Upstreams::new(node)),
            shutdown,
        }
    }

    /// A config for tests: files under `data_dir`, the memory store.
    pub(crate) fn config(data_dir: &std::path::Path) -> Config {
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            workers: 1,
            ..Config::default()
        };
        config.store.backend = crate::config::StoreBackend::Memory;
        config
    }

    /// A new client connection from `peer`, served by a task of its own.
    pub(crate) fn connect_from(&self, peer: std::net::SocketAddr) -> Client {
        let (client, server) = UnixStream::pair().expect("a socket pair");
        let worker = Rc::clone(&self.worker);
        let upstreams = Rc::clone(&self.upstreams);
        let shutdown = self.shutdown.subscribe();
        let task = tokio::task::spawn_local(async move {
            conn::serve(Memory(server), peer, worker, &upstreams, shutdown, false).await;
        });
        Client {
            io: client,
            buf: Vec::new(),
            task,
        }
    }

    pub(crate) fn connect(&self) -> Client {
        self.connect_from("198.18.0.10:40000".parse().expect("an address"))
    }

    /// Starts the shutdown every connection of this worker watches.
    pub(crate) fn shut_down(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// The test's end of a connection.
pub(crate) struct Client {
    io: UnixStream,
    /// Bytes read past the last response.
    buf: Vec<u8>,
    task: tokio::task::JoinHandle<()>,
}

/// A response as the client read it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("the server reads");
    }

    /// A GET with a Host header.
    pub(crate) async fn get(&mut self, host: &str, path: &str) -> Reply {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.send(request.as_bytes()).await;
        self.reply(false).await.expect("a response")
    }

    /// Reads one response (`head_only`: the answer to a HEAD, no body);
    /// `None` if the server closed first.
    pub(crate) async fn reply(&mut self, head_only: bool) -> Option<Reply> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) =
                parsed.parse(&self.buf).expect("a valid response head")
            {
                let status = parsed.code.expect("a status");
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().expect("a numeric length"));
                let length = if head_only || status == 304 || status < 200 {
                    0
                } else {
                    length
                };
                while self.buf.len() < len + length {
                    if !self.fill().await {
                        panic!("the connection closed inside a body");
                    }
                }
                let body = self.buf[len..len + length].to_vec();
                self.buf.drain(..len + length);
                return Some(Reply {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "closed inside a head: {:?}", self.buf);
                return None;
            }
        }
    }

    /// Whether the server closes (EOF) with nothing more to read.
    pub(crate) async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }

    /// Waits until the server's task for this connection is over.
    pub(crate) async fn finished(self) {
        drop(self.io);
        self.task.await.expect("the connection task ends cleanly");
    }

    async fn fill(&mut self) -> bool {
        self.buf.reserve(16 * 1024);
        match tokio::time::timeout(Duration::from_secs(3600), self.io.read_buf(&mut self.buf)).await
        {
            Ok(Ok(n)) => n > 0,
            Ok(Err(_)) => false,
            Err(_) => panic!("no answer in an hour of (paused) time"),
        }
    }
}

/// A data directory for one test, removed when dropped.
pub(crate) struct TempSite {
    pub(crate) dir: std::path::PathBuf,
}

impl TempSite {
    /// `files`: (path under the data directory, content).
    pub(crate) fn new(files: &[(&str, &str)]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("reliw-harness-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, content) in files {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("a test directory");
            std::fs::write(file, content).expect("a test file");
        }
        std::fs::create_dir_all(&dir).expect("a test directory");
        Self { dir }
    }
}

impl Drop for TempSite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
