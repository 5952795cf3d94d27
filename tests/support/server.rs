//! A real `reliw serve` on loopback with a site of its own, and a raw HTTP
//! client that sends exact bytes and reads exact responses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::reliw_bin;

/// A site directory under the system temp dir, removed on drop.
pub struct Site {
    pub root: PathBuf,
}

impl Site {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "reliw-site-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("www/__")).unwrap();
        Self { root }
    }

    pub fn www(&self) -> PathBuf {
        self.root.join("www")
    }

    /// Writes `data_dir/<rel>`.
    pub fn file(&self, rel: &str, content: &[u8]) -> &Self {
        let path = self.www().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }
}

impl Default for Site {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A running `reliw serve`; SIGKILLed on drop if still running.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Every address printed at start (IPv4, then IPv6 if configured).
    pub addrs: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls_addrs: Vec<SocketAddr>,
    /// The metrics listener, unless disabled.
    pub metrics: Option<SocketAddr>,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts reliw with `config` (a JSON object; `port` 0 and `data_dir`
    /// are filled in) and extra arguments such as `--io epoll`.
    pub fn start(site: &Site, config: serde_json::Value, args: &[&str]) -> Self {
        Self::start_wrapped(site, config, args, &[])
    }

    /// Like [`Server::start`], with the binary run under `wrapper` (a
    /// command and its arguments, e.g. `setpriv ...`).
    pub fn start_wrapped(
        site: &Site,
        mut config: serde_json::Value,
        args: &[&str],
        wrapper: &[&str],
    ) -> Self {
        let obj = config.as_object_mut().unwrap();
        obj.entry("port").or_insert(0.into());
        obj.entry("data_dir")
            .or_insert(site.www().to_str().unwrap().into());
        obj.entry("workers").or_insert(1.into());
        // Plain static serving unless the test sets up a store; the
        // metrics listener on a free port unless the test says otherwise.
        obj.entry("store")
            .or_insert(serde_json::json!({"backend": "static"}));
        let metrics = obj
            .entry("metrics")
            .or_insert(serde_json::json!({}))
            .as_object_mut()
            .unwrap();
        metrics.entry("port").or_insert(0.into());
        // A second server on the same site gets files of its own (its log
        // must not be cut short by the second start).
        let (config_path, stderr_path) = (1..)
            .map(|n| match n {
                1 => (site.root.join("config.json"), site.root.join("stderr.log")),
                n => (
                    site.root.join(format!("config-{n}.json")),
                    site.root.join(format!("stderr-{n}.log")),
                ),
            })
            .find(|(_, log)| !log.exists())
            .unwrap();
        std::fs::write(&config_path, config.to_string()).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(reliw_bin());
                c
            }
            None => Command::new(reliw_bin()),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("RELIW_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut addrs = Vec::new();
        let mut tls_addrs = Vec::new();
        let mut metrics_addr = None;
        // Everything reliw announces on stdout, up to "ready".
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim();
            if line == "ready" {
                break;
            }
            if let Some(rest) = line.strip_prefix("metrics on http://") {
                metrics_addr = rest.strip_suffix("/metrics").and_then(|a| a.parse().ok());
            } else if let Some(rest) = line.strip_prefix("listening on https://") {
                tls_addrs.push(rest.parse::<SocketAddr>().unwrap());
            } else if let Some(rest) = line.strip_prefix("listening on http://") {
                addrs.push(rest.parse::<SocketAddr>().unwrap());
            } else {
                panic!(
                    "reliw did not start: {line:?}; stderr: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        }
        let addr = addrs.first().or(tls_addrs.first()).copied().unwrap();
        Self {
            child: Some(child),
            addr,
            addrs,
            tls_addrs,
            metrics: metrics_addr,
            stderr_path,
        }
    }

    /// A series' value from `/metrics` (0 when it is absent); `series` is
    /// the name with its labels, as printed.
    pub fn metric(&self, series: &str) -> f64 {
        let text = Client::connect(self.metrics.unwrap())
            .get("localhost", "/metrics")
            .text();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Open file descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends `signal` and waits up to `limit` for the exit; the exit code.
    pub fn signal_and_wait(
        &mut self,
        signal: rustix::process::Signal,
        limit: Duration,
    ) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        rustix::process::kill_process(rustix::process::Pid::from_child(child), signal).unwrap();
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn send_signal(&self, signal: rustix::process::Signal) {
        let child = self.child.as_ref().unwrap();
        rustix::process::kill_process(rustix::process::Pid::from_child(child), signal).unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated field (`Set-Cookie`), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection with a read buffer.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        self.stream.write_all(bytes).unwrap();
        self
    }

    /// Reads one response to a request with `method` (HEAD has no body).
    pub fn response_to(&mut self, method: &str) -> Response {
        self.try_response_to(method)
            .unwrap_or_else(|| panic!("no response; had {:?}", String::from_utf8_lossy(&self.buf)))
    }

    pub fn response(&mut self) -> Response {
        self.response_to("GET")
    }

    /// One response, or `None` if the connection closed first.
    pub fn try_response_to(&mut self, method: &str) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap();
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let len = if method == "HEAD" || status == 304 || status < 200 {
                    0
                } else {
                    len
                };
                let chunked = headers.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")
                });
                if chunked && len == 0 && method != "HEAD" {
                    self.buf.drain(..n);
                    let body = self.chunked_body()?;
                    return Some(Response {
                        status,
                        headers,
                        body,
                    });
                }
                while self.buf.len() < n + len {
                    if !self.fill() {
                        return None;
                    }
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Some(Response {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// One CRLF-terminated line from the buffer (reading more as needed).
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// A chunked body, decoded (extensions and trailers dropped); `None`
    /// if the connection ended first.
    fn chunked_body(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Some(body);
            }
            while self.buf.len() < size + 2 {
                if !self.fill() {
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    /// Everything until the server closes (a close-delimited body).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Whether the server closed the connection (EOF) within `limit`.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut chunk = [0u8; 4096];
        let closed = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        closed
    }

    /// Sends a request and reads its response.
    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        self.response()
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    Client::connect(addr).get(host, path)
}

/// Runs `reliw serve --config FILE` expecting a start-up failure; its stderr.
pub fn serve_fails(config_text: &str, dir: &Path) -> (i32, String) {
    let path = dir.join("bad.json");
    std::fs::write(&path, config_text).unwrap();
    let err_path = dir.join("bad.stderr");
    let mut child = Command::new(reliw_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // A config that is accepted starts a server that never exits: bound
    // the wait so such a test fails instead of hanging the suite.
    let exited = crate::wait_until(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("reliw did not refuse {config_text}: it was still running after 20 s");
    }
    let status = child.wait().unwrap();
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}
