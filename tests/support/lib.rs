//! Fixtures for reliw's black-box tests: the real binary, private pin roots
//! on bpffs, and network namespaces joined by veth pairs.
//!
//! Every fixture removes what it made on drop, which also runs when a test
//! fails (panics unwind through it).
#![allow(clippy::unwrap_used, clippy::panic)] // test fixtures: fail loudly

pub mod h2;
pub mod redis;
pub mod server;
pub mod tls;
pub mod upstream;

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Fails the calling test with a clear message unless it can use bpf, XDP
/// and network namespaces (root). Privileged tests live in modules named
/// `privileged`; `RELIW_SKIP_PRIVILEGED=1 cargo xtask test` leaves them out
/// and reports them as skipped rather than passed.
pub fn require_privileges() {
    if !rustix::process::geteuid().is_root() {
        panic!(
            "this test needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) for XDP and network \
             namespaces: run it as root, or skip the privileged tests with \
             `RELIW_SKIP_PRIVILEGED=1 cargo xtask test` (or `cargo test -- --skip privileged::`)"
        );
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The release `reliw` binary, built (or brought up to date) once per test process.
pub fn reliw_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["build", "--quiet", "--release", "-p", "reliw"])
            .status()
            .expect("cargo build starts");
        assert!(status.success(), "building the reliw binary failed");
    });
    workspace_root().join("target/release/reliw")
}

/// The outcome of one `reliw` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and parses stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "reliw failed: {}", self.stderr);
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Asserts success.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "reliw failed: {}{}", self.stdout, self.stderr);
        self
    }

    /// Asserts a failure with exactly one line on stderr that contains `needle`.
    #[track_caller]
    pub fn fails_with(&self, needle: &str) {
        assert_ne!(self.code, 0, "expected failure, got: {}", self.stdout);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one error line, got: {:?}",
            self.stderr
        );
        assert!(
            lines[0].contains(needle),
            "{:?} does not mention {needle:?}",
            lines[0]
        );
    }
}

/// A private pin root on bpffs; its pins (and links) go when it drops.
pub struct PinRoot {
    path: PathBuf,
}

impl PinRoot {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/reliw-test-{}-{tag}-{n}",
            std::process::id()
        ));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `reliw shield ARGS` against this pin root (in `netns`, if given).
    pub fn shield(&self, netns: Option<&str>, args: &[&str]) -> Run {
        let out = self.command(netns, args).output().expect("reliw starts");
        Run::from(out)
    }

    /// The command line of `reliw shield ARGS` for this pin root.
    pub fn command(&self, netns: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = match netns {
            // nsenter switches only the network namespace, so /sys/fs/bpf
            // stays the host's (ip netns exec would remount /sys).
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(reliw_bin());
                c
            }
            None => Command::new(reliw_bin()),
        };
        cmd.env("RELIW_LOG", "warn")
            .args(["shield", "--pin-root"])
            .arg(&self.path)
            .args(args);
        cmd
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        // Unlinking pins on bpffs releases maps and detaches pinned links.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs a command that must succeed (setup of namespaces and links).
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A network namespace that is deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        sh_quiet(&["ip", "netns", "del", &name]);
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// Runs `ip ARGS` inside this namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("namespace thread")
    }

    /// Spawns `f` on a thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("netns handle");
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth ends, and with them the peers.
        sh_quiet(&["ip", "netns", "del", &self.name]);
    }
}

/// Short, unique-per-process names (interface names are limited to 15 bytes).
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "r{}{tag}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Joins `a` (interface `a_if`) and `b` (interface `b_if`) with a veth pair,
/// addresses both sides (v4 /24 and v6 /64, no DAD), brings them up and
/// installs permanent neighbour entries, so no ARP or NDP crosses the link
/// and every packet on it is one the test sent.
pub fn veth_link(
    a: &Netns,
    a_if: &str,
    a_addrs: (&str, &str),
    b: &Netns,
    b_if: &str,
    b_addrs: (&str, &str),
) {
    sh(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    for (ns, iface, (v4, v6)) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", iface]);
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", iface, "nodad"]);
        ns.ip(&["link", "set", iface, "up"]);
    }
    let mac_a = mac(a, a_if);
    let mac_b = mac(b, b_if);
    for (ns, iface, peer_mac, (v4, v6)) in [(a, a_if, &mac_b, b_addrs), (b, b_if, &mac_a, a_addrs)]
    {
        for addr in [v4, v6] {
            ns.ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                peer_mac,
                "dev",
                iface,
                "nud",
                "permanent",
            ]);
        }
    }
}

/// The MAC address of `iface` in `ns`.
pub fn mac(ns: &Netns, iface: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", iface])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "link/ether" {
            return words.next().expect("mac after link/ether").to_owned();
        }
    }
    panic!("no MAC for {iface}: {text}");
}

/// A dual-stack TCP listener on a thread inside a namespace; it accepts and
/// closes connections until dropped, counting them.
pub struct Listener {
    pub port: u16,
    accepted: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn start(ns: &Netns) -> Self {
        let accepted = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (acc, stp) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = ns.spawn(move || {
            // [::] with IPV6_V6ONLY off (Linux default) takes IPv4 too.
            let listener = TcpListener::bind("[::]:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            tx.send(listener.local_addr().expect("addr").port())
                .expect("port");
            while !stp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => *acc.lock().unwrap() += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("listener port");
        Self {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> u32 {
        *self.accepted.lock().unwrap()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long a connection attempt waits. Below the initial SYN retransmission
/// timeout (1 s), so each failed attempt is exactly one SYN on the wire.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(400);

/// Whether a TCP connection from inside `ns` to `ip:port` succeeds. A
/// connection that succeeds is closed in full (our FIN, their FIN, our ACK)
/// before this returns, so no packet of it is still in flight afterwards.
pub fn connects(ns: &Netns, ip: &str, port: u16) -> bool {
    let addr = SocketAddr::new(ip.parse::<IpAddr>().expect("ip"), port);
    ns.run(move || {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) else {
            return false;
        };
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        // The listener closes after accepting: EOF means its FIN arrived,
        // and the kernel acknowledged it before read returns.
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut stream, &mut sink).is_ok()
    })
}

/// Polls `cond` until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A response body in `coding` (gzip, br or zstd), decoded; panics on a
/// body that is not whole.
pub fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => brotli::BrotliDecompress(&mut &body[..], &mut out).unwrap(),
        "zstd" => out = zstd::stream::decode_all(body).unwrap(),
        other => panic!("unknown coding {other}"),
    }
    out
}
