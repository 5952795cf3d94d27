//! `cargo xtask bench --only flood`: what a legitimate client keeps while
//! the server is under attack, with the shield on, with it off, and for
//! nginx, in network namespaces made here (addresses in 198.18.0.0/15 only).
//!
//! ```text
//!   cli 198.18.20.2 ──── srv 198.18.20.1      (legitimate client: wrk, prober)
//!   atk 198.18.21.2-251 ─ srv 198.18.21.1      (attacker; spoofs 198.18.128.0/17)
//! ```
//!
//! The server runs on CPU 0; the client, the prober and the attacker on
//! CPU 1, the attacker at nice 19 so it takes every cycle the client leaves
//! but cannot starve it (the point is the server's core, not the client's).
//! veth runs the XDP program in the sender's context, so drops cost the
//! attacker's core, as a NIC queue's would cost its own; the server's veth
//! ends steer every packet XDP passes to CPU 0 (RPS), so whatever the shield
//! lets through is paid for on the server's core.
//!
//! Cases, each first without and then with the attack, on a fresh server:
//! - `l7`: the attacker's 250 addresses send requests for a WAF-matching
//!   path (`/wp-login.php`) over keep-alive connections.
//! - `conn`: 16 attacker addresses open connections for a plain file as
//!   fast as they can, over the shield's SYN budget (10/s per source).
//! - `syn`: SYNs from random sources in 198.18.128.0/17 (raw socket,
//!   bounded by time and count); the server answers them (the attacker's
//!   namespace discards the answers). The shield answers with SYN cookies
//!   from XDP above 2000 SYNs a second (`shield.syn_cookies` auto).
//!
//! Every veth end outside the server runs an empty shield (native XDP,
//! passing everything), for all servers alike: XDP_TX on a veth reaches
//! its peer only then.
//!
//! Reported per case and server: the legitimate client's req/s (wrk, 16
//! keep-alive connections, 1 KiB file) as a ratio to its no-attack run,
//! CPU 0's busy time per legitimate request (all of it: server, kernel,
//! softirq), and the prober's handshakes (one new connection every 200 ms,
//! 1 s timeout). The attack runs 3 s before the measured window, so bans
//! and escalations are in place: the window is the steady state.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{Running, Sample, parse_wrk};

const PORT: u16 = 8080;
const SERVER_FOR_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
const CLIENT: &str = "198.18.20.2";
const SERVER_FOR_ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 21, 1);
/// Attacker addresses: 198.18.21.2 ..= 198.18.21.251.
const ATTACKER_ADDRESSES: u8 = 250;
/// The `conn` case's attacker uses the first of them.
const CONN_ATTACKER_ADDRESSES: u8 = 16;
/// Spoofed SYN sources: 198.18.128.0/17.
const SPOOF_BASE: u32 = u32::from_be_bytes([198, 18, 128, 0]);
const SPOOF_SPAN: u32 = 1 << 15;
/// The most SYNs one `syn` case sends, whatever the time.
const SYN_MAX: u64 = 50_000_000;
const WARM_UP: Duration = Duration::from_secs(3);
const CLIENT_CONNECTIONS: u32 = 16;
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// The namespaces and pins of one run; removed on drop, whatever failed.
struct Lab {
    tag: String,
    pins: Vec<PathBuf>,
}

impl Lab {
    fn ns(&self, which: &str) -> String {
        format!("rf{which}-{}", self.tag)
    }

    fn ip(&self, which: &str, args: &[&str]) -> Result<()> {
        crate::run_checked(Command::new("ip").arg("-n").arg(self.ns(which)).args(args))
    }

    /// `program args` in namespace `which` (network only: the pins stay
    /// visible), pinned to `cpu`.
    fn command(&self, which: &str, cpu: u32, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns(which)))
            .args(["taskset", "-c", &cpu.to_string()])
            .arg(program);
        c
    }

    fn sh(&self, which: &str, script: &str) -> Result<()> {
        crate::run_checked(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns(which),
            "sh",
            "-c",
            script,
        ]))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for which in ["srv", "cli", "atk"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(which)])
                .stderr(Stdio::null())
                .status();
        }
        for pin in &self.pins {
            let _ = std::fs::remove_dir_all(pin);
            let _ = std::fs::remove_file(book_path(pin));
        }
    }
}

/// Where reliw keeps the ban book of a pin root (see `reliw::bans`).
fn book_path(pin_root: &Path) -> PathBuf {
    let dir = pin_root.join(format!("v{}", reliw_common::LAYOUT_VERSION));
    let name: String = dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/run/reliw").join(format!("{}.bans.json", name.trim_matches('_')))
}

fn build_lab() -> Result<Lab> {
    let lab = Lab {
        tag: std::process::id().to_string(),
        pins: Vec::new(),
    };
    for which in ["srv", "cli", "atk"] {
        crate::run_checked(Command::new("ip").args(["netns", "add", &lab.ns(which)]))?;
        lab.ip(which, &["link", "set", "lo", "up"])?;
    }
    crate::run_checked(Command::new("ip").args([
        "-n",
        &lab.ns("srv"),
        "link",
        "add",
        "fs0",
        "type",
        "veth",
        "peer",
        "name",
        "fc0",
        "netns",
        &lab.ns("cli"),
    ]))?;
    crate::run_checked(Command::new("ip").args([
        "-n",
        &lab.ns("srv"),
        "link",
        "add",
        "fs1",
        "type",
        "veth",
        "peer",
        "name",
        "fa0",
        "netns",
        &lab.ns("atk"),
    ]))?;
    lab.ip("srv", &["addr", "add", "198.18.20.1/24", "dev", "fs0"])?;
    lab.ip("srv", &["addr", "add", "198.18.21.1/24", "dev", "fs1"])?;
    lab.ip(
        "cli",
        &["addr", "add", &format!("{CLIENT}/24"), "dev", "fc0"],
    )?;
    for i in 0..ATTACKER_ADDRESSES {
        lab.ip(
            "atk",
            &[
                "addr",
                "add",
                &format!("198.18.21.{}/24", 2 + i),
                "dev",
                "fa0",
            ],
        )?;
    }
    for (which, dev) in [
        ("srv", "fs0"),
        ("srv", "fs1"),
        ("cli", "fc0"),
        ("atk", "fa0"),
    ] {
        lab.ip(which, &["link", "set", dev, "up"])?;
    }
    // Answers to spoofed sources go back to the attacker's namespace,
    // which does not forward them: nothing leaves the lab.
    lab.ip(
        "srv",
        &[
            "route",
            "add",
            "198.18.128.0/17",
            "via",
            "198.18.21.2",
            "dev",
            "fs1",
        ],
    )?;
    // What XDP passes is processed on the server's core.
    lab.sh(
        "srv",
        "echo 1 > /sys/class/net/fs0/queues/rx-0/rps_cpus && echo 1 > /sys/class/net/fs1/queues/rx-0/rps_cpus",
    )?;
    Ok(lab)
}

/// XDP_TX from a veth end (the shield's SYN cookies) reaches the peer only
/// if the peer runs XDP natively: an empty shield, passing everything, on
/// the client's and the attacker's ends, for every server alike.
fn attach_peers(lab: &mut Lab, root: &Path) -> Result<()> {
    for (which, dev) in [("cli", "fc0"), ("atk", "fa0")] {
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/reliw-bench-flood-{}-{which}", lab.tag));
        lab.pins.push(pin_root.clone());
        let mut attach = Command::new("nsenter");
        attach
            .arg(format!("--net=/run/netns/{}", lab.ns(which)))
            .arg(root.join("target/release/reliw"))
            .args(["shield", "--pin-root"])
            .arg(&pin_root)
            .args(["attach", "--iface", dev, "--mode", "drv", "--persist"])
            .stdout(Stdio::null());
        crate::run_checked(&mut attach)?;
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `ns`, pinned to CPU 1, at
/// `nice` (threads it spawns inherit all three).
fn spawn_in<T: Send + 'static>(
    ns: &str,
    nice: i32,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<Result<T>> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .context("setns")?;
        let mut cpus = rustix::thread::CpuSet::new();
        cpus.set(1);
        rustix::thread::sched_setaffinity(None, &cpus).context("sched_setaffinity")?;
        if nice != 0 {
            rustix::process::nice(nice).context("nice")?;
        }
        Ok(f())
    })
}

fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    match handle.join() {
        Ok(result) => result,
        Err(_) => bail!("a bench thread panicked"),
    }
}

/// The server under test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    ShieldOn,
    ShieldOff,
    Nginx,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Self::ShieldOn => "reliw shield on",
            Self::ShieldOff => "reliw shield off",
            Self::Nginx => "nginx",
        }
    }
}

/// Starts `server` in the server namespace on CPU 0 and waits for it.
fn start(lab: &mut Lab, root: &Path, dir: &Path, server: Server, n: usize) -> Result<Running> {
    let running = match server {
        Server::Nginx => {
            let conf = dir.join("nginx-flood.conf");
            std::fs::write(&conf, nginx_conf(dir))?;
            Running {
                child: lab
                    .command("srv", 0, Path::new("nginx"))
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting nginx")?,
                name: "nginx",
            }
        }
        Server::ShieldOn | Server::ShieldOff => {
            let pin_root = PathBuf::from(format!("/sys/fs/bpf/reliw-bench-flood-{}-{n}", lab.tag));
            lab.pins.push(pin_root.clone());
            let interfaces: Vec<&str> = if server == Server::ShieldOn {
                vec!["fs0", "fs1"]
            } else {
                Vec::new()
            };
            let config = serde_json::json!({
                "ip": "0.0.0.0",
                "port": PORT,
                "data_dir": dir.join("www"),
                "workers": 1,
                "log_level": "warn",
                "backlog": 4096,
                "max_connections": 65536,
                "max_requests_per_connection": 0,
                "store": {"backend": "memory", "site_file": dir.join("site.json")},
                "metrics": {"disabled": true},
                "shield": {
                    "interfaces": interfaces, "mode": "drv", "pin_root": pin_root,
                    "ban_seconds": 600,
                    "rate_limit": {"syns_per_second": 10, "syn_burst": 20, "escalate_after_seconds": 2},
                    "syn_cookies": {"mode": "auto", "above_per_second": 2000},
                },
            });
            let path = dir.join(format!("reliw-flood-{n}.json"));
            std::fs::write(&path, config.to_string())?;
            Running {
                child: lab
                    .command("srv", 0, &root.join("target/release/reliw"))
                    .args(["serve", "--config"])
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(
                        dir.join(format!("reliw-flood-{n}.log")),
                    )?)
                    .spawn()
                    .context("starting reliw")?,
                name: "reliw",
            }
        }
    };
    let up = join(spawn_in(&lab.ns("cli"), 0, || {
        let addr = SocketAddr::from((SERVER_FOR_CLIENT, PORT));
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }))?;
    if !up {
        bail!("{} did not start listening in the lab", server.name());
    }
    Ok(running)
}

fn nginx_conf(dir: &Path) -> String {
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx-flood.pid;
error_log {dir}/nginx-flood.error.log warn;
events {{ worker_connections 65536; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    types {{ application/octet-stream bin; }}
    server {{
        listen 0.0.0.0:{PORT} backlog=4096;
        root {dir}/www/flood.test;
    }}
}}
"#,
        dir = dir.display()
    )
}

/// The site: a 1 KiB file, and a WAF rule for `.php` paths.
fn write_site(dir: &Path) -> Result<()> {
    let www = dir.join("www/flood.test");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("1k.bin"), vec![b'x'; 1024])?;
    let site = serde_json::json!({
        "RLW:API:flood.test": [["/1k.bin", "file", true]],
        "RLW:API:flood.test:file": {"methods": {"GET": true}},
        "RLW:WAF": {"__": {"query": ["%.php$"]}},
    });
    std::fs::write(dir.join("site.json"), site.to_string())?;
    Ok(())
}

/// CPU 0's busy time (everything but idle and iowait), in USER_HZ ticks.
fn cpu0_busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu0 "))
        .context("/proc/stat has no cpu0 line")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    Ok(fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum())
}

/// The legitimate client's window: wrk (keep-alive) and the prober (new
/// connections) side by side, and CPU 0 over the same time.
struct Window {
    sample: Sample,
    errors: String,
    cpu0_us_per_request: f64,
    handshakes: u32,
    probes: u32,
    /// Slowest completed handshake.
    handshake_max_ms: f64,
}

fn legitimate_window(lab: &Lab, duration: u64) -> Result<Window> {
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = Arc::clone(&stop);
        spawn_in(&lab.ns("cli"), 0, move || {
            let addr = SocketAddr::from((SERVER_FOR_CLIENT, PORT));
            let (mut ok, mut tried, mut slowest) = (0u32, 0u32, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                tried += 1;
                if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                    ok += 1;
                    slowest = slowest.max(start.elapsed());
                }
                std::thread::sleep(PROBE_EVERY.saturating_sub(start.elapsed()));
            }
            (ok, tried, slowest)
        })
    };
    let before = cpu0_busy_ticks()?;
    let out = lab
        .command("cli", 1, Path::new("wrk"))
        .args([
            "-t1",
            "--latency",
            "--timeout",
            "5s",
            "-H",
            "Host: flood.test",
        ])
        .arg(format!("-c{CLIENT_CONNECTIONS}"))
        .arg(format!("-d{duration}s"))
        .arg(format!("http://{SERVER_FOR_CLIENT}:{PORT}/1k.bin"))
        .stderr(Stdio::inherit())
        .output()
        .context("running wrk in the client namespace")?;
    let busy = cpu0_busy_ticks()? - before;
    stop.store(true, Ordering::Relaxed);
    let (handshakes, probes, slowest) = join(prober)?;
    if !out.status.success() {
        bail!("wrk failed in the client namespace");
    }
    let (sample, errors) = parse_wrk(&out.stdout)?;
    // USER_HZ is 100: a tick is 10 ms.
    let cpu0_us_per_request = busy as f64 * 10_000.0 / sample.requests.max(1) as f64;
    Ok(Window {
        sample,
        errors,
        cpu0_us_per_request,
        handshakes,
        probes,
        handshake_max_ms: slowest.as_secs_f64() * 1e3,
    })
}

/// An attack running in the attacker namespace until stopped.
struct Attack {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<Result<()>>>>,
    /// Requests answered (l7, conn) or SYNs sent (syn).
    done: Arc<AtomicU64>,
    /// Connection attempts that failed or timed out (l7, conn).
    refused: Arc<AtomicU64>,
}

impl Attack {
    fn finish(self) -> Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            join(t)??;
        }
        Ok((
            self.done.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        ))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    L7,
    Conn,
    Syn,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::L7 => "l7 flood, 250 banned sources",
            Self::Conn => "connection flood, 16 sources",
            Self::Syn => "spoofed SYN flood",
        }
    }
}

const ATTACK_THREADS: u8 = 8;

fn attacker_address(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 21, 2 + i)
}

fn start_attack(lab: &Lab, kind: Kind, duration: Duration) -> Attack {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let threads = match kind {
        Kind::Syn => {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            vec![spawn_in(&lab.ns("atk"), 19, move || {
                syn_flood(&stop, &done, deadline)
            })]
        }
        Kind::L7 | Kind::Conn => (0..ATTACK_THREADS)
            .map(|t| {
                let (stop, done, refused) =
                    (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&refused));
                spawn_in(&lab.ns("atk"), 19, move || {
                    let sources = match kind {
                        Kind::Conn => CONN_ATTACKER_ADDRESSES,
                        _ => ATTACKER_ADDRESSES,
                    };
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let source = attacker_address(i % sources);
                        i = i.wrapping_add(ATTACK_THREADS);
                        match connect_from(source) {
                            Some(stream) => {
                                let n = match kind {
                                    Kind::L7 => keep_asking(stream, &stop),
                                    _ => ask_once(stream),
                                };
                                done.fetch_add(n, Ordering::Relaxed);
                            }
                            None => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect(),
    };
    Attack {
        stop,
        threads,
        done,
        refused,
    }
}

/// A connection from `source` to the server, or `None` within 200 ms.
fn connect_from(source: Ipv4Addr) -> Option<TcpStream> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).ok()?;
    bind(&fd, &SocketAddrV4::new(source, 0)).ok()?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true).ok()?;
    // Blocking connect with a send timeout: SO_SNDTIMEO bounds connect().
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Send,
        Some(Duration::from_millis(200)),
    )
    .ok()?;
    connect(&fd, &SocketAddrV4::new(SERVER_FOR_ATTACKER, PORT)).ok()?;
    let stream = TcpStream::from(fd);
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    Some(stream)
}

/// Up to 100 requests for the WAF-matching path on one connection.
fn keep_asking(mut stream: TcpStream, stop: &AtomicBool) -> u64 {
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    for _ in 0..100 {
        if stop.load(Ordering::Relaxed)
            || stream
                .write_all(b"GET /wp-login.php HTTP/1.1\r\nHost: flood.test\r\n\r\n")
                .is_err()
        {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => answered += 1,
        }
    }
    answered
}

/// One request for the file, `Connection: close`.
fn ask_once(mut stream: TcpStream) -> u64 {
    if stream
        .write_all(b"GET /1k.bin HTTP/1.1\r\nHost: flood.test\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return 0;
    }
    let mut sink = Vec::new();
    match stream.read_to_end(&mut sink) {
        Ok(n) if n > 0 => 1,
        _ => 0,
    }
}

/// SYNs from random 198.18.128.0/17 sources to the server, through a raw
/// IP socket (the kernel fills in the IP checksum and length).
fn syn_flood(stop: &AtomicBool, sent: &AtomicU64, deadline: Instant) -> Result<()> {
    use rustix::net::{AddressFamily, SocketType, ipproto, sendto, socket};
    let fd = socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::RAW))
        .context("raw socket for the SYN flood")?;
    let dst = SocketAddrV4::new(SERVER_FOR_ATTACKER, PORT);
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut packet = [0u8; 40];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && n < SYN_MAX {
        if n.is_multiple_of(1024) && Instant::now() >= deadline {
            break;
        }
        // xorshift64: cheap, and enough to spread sources and ports.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let src = SPOOF_BASE + (rng as u32 % SPOOF_SPAN);
        let port = 1024 + (rng >> 32) as u16 % 60000;
        syn_packet(&mut packet, src, port, (rng >> 16) as u32);
        if sendto(&fd, &packet, rustix::net::SendFlags::empty(), &dst).is_ok() {
            n += 1;
        }
        if n.is_multiple_of(4096) {
            sent.store(n, Ordering::Relaxed);
        }
    }
    sent.store(n, Ordering::Relaxed);
    Ok(())
}

/// A 20-byte IP header and a 20-byte TCP SYN, checksummed.
fn syn_packet(p: &mut [u8; 40], src: u32, sport: u16, seq: u32) {
    let dst = u32::from(SERVER_FOR_ATTACKER);
    p.fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.to_be_bytes());
    p[16..20].copy_from_slice(&dst.to_be_bytes());
    let tcp = &mut p[20..];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&PORT.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut sum: u32 = 0;
    for word in [src >> 16, src & 0xffff, dst >> 16, dst & 0xffff, 6, 20] {
        sum += word;
    }
    for pair in tcp.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !(sum as u16);
    tcp[16..18].copy_from_slice(&checksum.to_be_bytes());
}

/// One line of the table, and its JSON.
fn report(
    kind: Kind,
    server: Server,
    base: &Window,
    hit: &Window,
    attack: (u64, u64),
) -> (String, serde_json::Value) {
    let ratio = hit.sample.rps / base.sample.rps.max(1.0);
    let attack_text = match kind {
        Kind::Syn => format!("{} SYNs sent", attack.0),
        _ => format!(
            "{} attack requests answered, {} connects failed",
            attack.0, attack.1
        ),
    };
    let line = format!(
        "flood {:<30} {:<17} legit {:>8.0} -> {:>8.0} req/s  ratio {ratio:.2}  cpu0 {:>5.1} -> {:>5.1} us/req  handshakes {}/{} (slowest {:.0} ms)  [{attack_text}]{}\n",
        kind.name(),
        server.name(),
        base.sample.rps,
        hit.sample.rps,
        base.cpu0_us_per_request,
        hit.cpu0_us_per_request,
        hit.handshakes,
        hit.probes,
        hit.handshake_max_ms,
        if hit.errors.is_empty() {
            String::new()
        } else {
            format!("  wrk: {}", hit.errors)
        },
    );
    let json = serde_json::json!({
        "case": kind.name(), "server": server.name(),
        "baseline_rps": base.sample.rps, "attack_rps": hit.sample.rps, "ratio": ratio,
        "baseline_cpu0_us_per_request": base.cpu0_us_per_request,
        "attack_cpu0_us_per_request": hit.cpu0_us_per_request,
        "attack_p99_us": hit.sample.p99_us, "baseline_p99_us": base.sample.p99_us,
        "handshakes": hit.handshakes, "probes": hit.probes,
        "handshake_max_ms": hit.handshake_max_ms,
        "attack_done": attack.0, "attack_failed": attack.1, "wrk_errors": hit.errors,
    });
    (line, json)
}

pub(crate) fn run(root: &Path, duration: u64) -> Result<(String, serde_json::Value)> {
    let dir = root.join("target/bench/flood");
    std::fs::create_dir_all(&dir)?;
    write_site(&dir)?;
    let mut lab = build_lab()?;
    attach_peers(&mut lab, root)?;
    println!(
        "bench flood: server on CPU 0 (RPS steers passed packets there), wrk and the prober on CPU 1, \
         the attacker on CPU 1 at nice 19; {duration}s windows, attack {WARM_UP:?} ahead of its window"
    );
    let mut table = String::new();
    let mut results = Vec::new();
    let mut n = 0;
    for kind in [Kind::L7, Kind::Conn, Kind::Syn] {
        for server in [Server::ShieldOn, Server::ShieldOff, Server::Nginx] {
            n += 1;
            let running = start(&mut lab, root, &dir, server, n)?;
            let base = legitimate_window(&lab, duration)?;
            let attack = start_attack(&lab, kind, WARM_UP + Duration::from_secs(duration + 2));
            std::thread::sleep(WARM_UP);
            let hit = legitimate_window(&lab, duration);
            let counts = attack.finish()?;
            let hit = hit?;
            let (line, json) = report(kind, server, &base, &hit, counts);
            print!("{line}");
            table.push_str(&line);
            results.push(json);
            drop(running);
        }
    }
    let json = serde_json::json!({"duration_s": duration, "results": results});
    std::fs::write(
        root.join("target/bench/flood.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok((table, json))
}
