//! `cargo xtask bench --only failover`: what clients see when the Redis
//! primary dies under load, for a Sentinel-watched master and for a Redis
//! Cluster, on loopback.
//!
//! For each topology, and with rate limits failing closed and then open,
//! reliw (CPU 0, one worker) serves a site from Redis while:
//! - wrk (CPU 1, 32 keep-alive connections) asks for a cached page (`/`):
//!   its failures are what a failover costs pages that need no Redis;
//! - a prober (one new connection every 20 ms, 1 s timeout) asks for a
//!   rate-limited page (`/limited`, an INCR in Redis per request): failing
//!   closed, a 503 while the counter cannot be read, so its first and last
//!   failure after the kill time the outage of Redis-backed answers;
//!   failing open, the page is served uncounted meanwhile.
//!
//! 3 s into the run the primary holding the prober's counter is SIGKILLed.
//! After the run, a session stored before the kill must still open
//! `/private` (it lived on the replica that took over).
//!
//! Reported: wrk's req/s and non-2xx, the prober's failures, the time from
//! the kill to its first failure and to its first success after the last
//! one (the recovery).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{free_port, parse_wrk, wait_for_port};

const HOST: &str = "fo.test";
/// A RELIW-shaped session token (21 URL-safe characters).
const SESSION: &str = "benchfailoversession1";
/// The rate-limit counter the prober's requests increment.
const LIMIT_KEY: &str = "RLW:LIMITS:fo.test:GET:/limited:127.0.0.1";
const KILL_AFTER: Duration = Duration::from_secs(3);

/// A redis-server (or sentinel) killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start(dir: &Path, extra: &[String]) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new("taskset")
            .args(["-c", "1", "redis-server", "--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .args(["--dbfilename", &format!("{port}.rdb")])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (cargo xtask setup installs it)")?;
        wait_for_port(port, "redis")?;
        Ok(Self {
            child: Some(child),
            port,
        })
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cli(args: &[String]) -> Result<String> {
    let out = Command::new("redis-cli").args(args).output()?;
    if !out.status.success() {
        bail!(
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} never happened")
}

/// The site's keys, as `redis-cli` arguments.
fn site_commands() -> Vec<Vec<String>> {
    let routes = serde_json::json!([
        ["/", "home", true],
        ["/limited", "limited", true],
        ["/private", "private", true]
    ]);
    let entries = [
        (
            "home",
            serde_json::json!({"methods": {"GET": true}, "file": "index.html"}),
        ),
        (
            "limited",
            serde_json::json!({"methods": {"GET": true}, "file": "index.html",
                "rate_limit": {"GET": {"limit": 100_000_000, "period": 3600}}}),
        ),
        (
            "private",
            serde_json::json!({"methods": {"GET": true}, "file": "index.html", "auth": ["alice"]}),
        ),
    ];
    let mut commands = vec![vec![
        String::from("SET"),
        format!("RLW:API:{HOST}"),
        routes.to_string(),
    ]];
    for (name, entry) in entries {
        commands.push(vec![
            String::from("SET"),
            format!("RLW:API:{HOST}:{name}"),
            entry.to_string(),
        ]);
    }
    // A session opens a page only while its user exists.
    commands.push(vec![
        String::from("HSET"),
        format!("RLW:USERS:{HOST}"),
        String::from("alice"),
        serde_json::json!({"pass": "unused", "salt": "unused"}).to_string(),
    ]);
    commands.push(vec![
        String::from("SET"),
        format!("RLW:SESSIONS:{HOST}:{SESSION}"),
        String::from("alice"),
        String::from("EX"),
        String::from("10800"),
    ]);
    commands
}

/// A topology running: its servers, the `redis` config section, and
/// which server to kill.
struct Topology {
    servers: Vec<Redis>,
    redis: serde_json::Value,
    victim: usize,
}

fn sentinel(dir: &Path) -> Result<Topology> {
    let master = Redis::start(dir, &[])?;
    for cmd in site_commands() {
        let mut args = vec![
            String::from("-p"),
            master.port.to_string(),
            String::from("-n"),
            String::from("13"),
        ];
        args.extend(cmd);
        cli(&args)?;
    }
    let replica = Redis::start(
        dir,
        &[
            String::from("--replicaof"),
            String::from("127.0.0.1"),
            master.port.to_string(),
        ],
    )?;
    wait_for("the replica's sync", || {
        cli(&[
            String::from("-p"),
            replica.port.to_string(),
            String::from("INFO"),
            String::from("replication"),
        ])
        .is_ok_and(|i| i.contains("master_link_status:up"))
    })?;
    let port = free_port()?;
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor bench 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds bench 500\nsentinel failover-timeout bench 3000\n",
            dir.display(),
            master.port
        ),
    )?;
    let child = Command::new("taskset")
        .args(["-c", "1", "redis-server"])
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server --sentinel")?;
    wait_for_port(port, "redis")?;
    let watcher = Redis {
        child: Some(child),
        port,
    };
    Ok(Topology {
        servers: vec![master, replica, watcher],
        redis: serde_json::json!({"db": 13, "timeout": 1.0,
            "sentinel": {"master": "bench", "addresses": [format!("127.0.0.1:{port}")]}}),
        victim: 0,
    })
}

fn cluster(dir: &Path) -> Result<Topology> {
    let mut servers = Vec::new();
    for _ in 0..6 {
        let conf = dir.join(format!("nodes-{}.conf", free_port()?));
        servers.push(Redis::start(
            dir,
            &[
                String::from("--cluster-enabled"),
                String::from("yes"),
                String::from("--cluster-config-file"),
                conf.display().to_string(),
                String::from("--cluster-node-timeout"),
                String::from("1000"),
                String::from("--cluster-replica-validity-factor"),
                String::from("0"),
            ],
        )?);
    }
    let nodes: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let mut create = vec![String::from("--cluster"), String::from("create")];
    create.extend(nodes.iter().cloned());
    create.extend([
        String::from("--cluster-replicas"),
        String::from("1"),
        String::from("--cluster-yes"),
    ]);
    cli(&create)?;
    let info = |port: u16, what: &str| {
        cli(&[
            String::from("-p"),
            port.to_string(),
            String::from(what),
            String::from(if what == "CLUSTER" {
                "INFO"
            } else {
                "replication"
            }),
        ])
        .unwrap_or_default()
    };
    wait_for("the cluster's ok state and its replicas' sync", || {
        servers.iter().all(|s| {
            info(s.port, "CLUSTER").contains("cluster_state:ok") && {
                let r = info(s.port, "INFO");
                r.contains("role:master") || r.contains("master_link_status:up")
            }
        })
    })?;
    for cmd in site_commands() {
        let mut args = vec![
            String::from("-c"),
            String::from("-p"),
            servers[0].port.to_string(),
        ];
        args.extend(cmd);
        cli(&args)?;
    }
    // The primary of the prober's counter.
    let slot = cli(&[
        String::from("-p"),
        servers[0].port.to_string(),
        String::from("CLUSTER"),
        String::from("KEYSLOT"),
        String::from(LIMIT_KEY),
    ])?;
    let slot: u16 = slot.parse()?;
    let nodes_text = cli(&[
        String::from("-p"),
        servers[0].port.to_string(),
        String::from("CLUSTER"),
        String::from("NODES"),
    ])?;
    let victim_port = nodes_text
        .lines()
        .filter(|l| l.contains("master"))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let port: u16 = words.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
            words[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            })
            .then_some(port)
        })
        .context("no primary serves the counter's slot")?;
    let victim = servers
        .iter()
        .position(|s| s.port == victim_port)
        .context("the victim")?;
    Ok(Topology {
        servers,
        redis: serde_json::json!({"timeout": 1.0, "cluster": {"nodes": nodes}}),
        victim,
    })
}

/// One GET with a fresh connection: its status (0: no answer in 1 s).
fn status(port: u16, path: &str, cookie: Option<&str>) -> u16 {
    let attempt = || -> std::io::Result<u16> {
        let mut s =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        let cookie = cookie
            .map(|c| format!("Cookie: rlw_session_token={c}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{cookie}Connection: close\r\n\r\n")
                .as_bytes(),
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    };
    attempt().unwrap_or(0)
}

/// What one topology's run measured.
struct Outcome {
    wrk_rps: f64,
    wrk_requests: u64,
    wrk_failures: u64,
    probes: usize,
    probe_failures: usize,
    first_failure_ms: Option<u128>,
    recovered_ms: Option<u128>,
    session_kept: bool,
}

fn measure(
    root: &Path,
    dir: &Path,
    mut topology: Topology,
    duration: u64,
    fail_closed: bool,
) -> Result<Outcome> {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join(HOST))?;
    std::fs::write(www.join(HOST).join("index.html"), "<p>served</p>\n")?;
    let port = free_port()?;
    let config = dir.join("reliw.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "ip": "127.0.0.1", "port": port, "data_dir": www, "workers": 1,
            "log_level": "warn", "metrics": {"disabled": true},
            "store": {"backend": "redis"}, "redis": topology.redis,
            "rate_limit": {"fail_closed": fail_closed},
        })
        .to_string(),
    )?;
    let mut reliw = Command::new("taskset")
        .args(["-c", "0"])
        .arg(root.join("target/release/reliw"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("reliw.log"))?)
        .spawn()
        .context("starting reliw")?;
    let result = (|| {
        wait_for_port(port, "reliw")?;
        wait_for("reliw's first Redis-backed answer", || {
            status(port, "/limited", None) == 200
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let prober = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.push((started.elapsed(), status(port, "/limited", None)));
                    std::thread::sleep(Duration::from_millis(20));
                }
                seen
            })
        };
        let wrk = std::thread::spawn(move || {
            Command::new("taskset")
                .args(["-c", "1", "wrk", "-t1", "-c32", "--timeout", "2s"])
                .arg(format!("-d{duration}s"))
                .args(["-H", &format!("Host: {HOST}")])
                .arg(format!("http://127.0.0.1:{port}/"))
                .output()
        });
        std::thread::sleep(KILL_AFTER);
        let killed_at = started.elapsed();
        topology.servers[topology.victim].kill();
        let out = wrk
            .join()
            .map_err(|_| anyhow::anyhow!("wrk thread"))?
            .context("running wrk")?;
        // The prober goes on until Redis-backed answers are back (or 30 s).
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end && status(port, "/limited", None) != 200 {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let seen = prober
            .join()
            .map_err(|_| anyhow::anyhow!("prober thread"))?;
        let (sample, _) = parse_wrk(&out.stdout)?;
        let wrk_failures = wrk_failures(&String::from_utf8_lossy(&out.stdout));
        let after: Vec<&(Duration, u16)> = seen.iter().filter(|(t, _)| *t >= killed_at).collect();
        let failures: Vec<Duration> = after
            .iter()
            .filter(|(_, s)| *s != 200)
            .map(|(t, _)| *t - killed_at)
            .collect();
        let recovered_ms = match failures.last() {
            None => Some(0),
            Some(last) => after
                .iter()
                .find(|(t, s)| *s == 200 && *t - killed_at > *last)
                .map(|(t, _)| (*t - killed_at).as_millis()),
        };
        Ok(Outcome {
            wrk_rps: sample.rps,
            wrk_requests: sample.requests,
            wrk_failures,
            probes: seen.len(),
            probe_failures: seen.iter().filter(|(_, s)| *s != 200).count(),
            first_failure_ms: failures.first().map(Duration::as_millis),
            recovered_ms,
            session_kept: status(port, "/private", Some(SESSION)) == 200,
        })
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &reliw.id().to_string()])
        .status();
    let _ = reliw.wait();
    result
}

/// Every failure wrk reports: non-2xx answers and socket errors
/// (`Socket errors: connect 0, read 2, write 0, timeout 1`).
fn wrk_failures(report: &str) -> u64 {
    report
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Non-2xx") || l.starts_with("Socket errors:"))
        .flat_map(|l| l.split([' ', ',']))
        .filter_map(|w| w.parse::<u64>().ok())
        .sum()
}

/// Runs both topologies: the table and the JSON written to
/// `target/bench/failover.json`.
pub(crate) fn run(root: &Path, duration: u64) -> Result<(String, serde_json::Value)> {
    let duration = duration.max(10);
    let mut table = String::from(
        "| topology | rate limits | wrk req/s (cached page) | wrk failures | prober failures / probes | first failure after kill | Redis-backed answers back after kill | session kept |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut results = Vec::new();
    let topologies = [
        ("sentinel", sentinel as fn(&Path) -> Result<Topology>),
        ("cluster", cluster),
    ];
    for ((name, start), fail_closed) in topologies.into_iter().flat_map(|t| [(t, true), (t, false)])
    {
        let mode = if fail_closed {
            "fail closed"
        } else {
            "fail open"
        };
        let dir = root
            .join("target/bench/failover")
            .join(format!("{name}-{}", mode.replace(' ', "-")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        println!("failover: {name}, rate limits {mode}: starting Redis");
        let topology = start(&dir)?;
        println!(
            "failover: {name}: {duration} s of load, the primary killed at {} s",
            KILL_AFTER.as_secs()
        );
        let o = measure(root, &dir, topology, duration, fail_closed)?;
        let ms = |v: Option<u128>| v.map_or(String::from("never"), |v| format!("{v} ms"));
        let line = format!(
            "| {name} | {mode} | {:.0} | {} of {} | {} / {} | {} | {} | {} |\n",
            o.wrk_rps,
            o.wrk_failures,
            o.wrk_requests,
            o.probe_failures,
            o.probes,
            ms(o.first_failure_ms),
            // Failing open, answers never depended on Redis.
            if fail_closed {
                ms(o.recovered_ms)
            } else {
                String::from("n/a")
            },
            if o.session_kept { "yes" } else { "NO" }
        );
        print!("{line}");
        table.push_str(&line);
        results.push(serde_json::json!({
            "topology": name, "fail_closed": fail_closed, "wrk_rps": o.wrk_rps, "wrk_requests": o.wrk_requests,
            "wrk_failures": o.wrk_failures, "probes": o.probes, "probe_failures": o.probe_failures,
            "first_failure_ms": o.first_failure_ms, "recovered_ms": o.recovered_ms,
            "session_kept": o.session_kept,
        }));
    }
    let json = serde_json::json!({"duration_s": duration, "kill_after_s": KILL_AFTER.as_secs(), "results": results});
    std::fs::write(
        root.join("target/bench/failover.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok((table, json))
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_failures_count_non_2xx_and_socket_errors() {
        let report = "  Non-2xx or 3xx responses: 12\n  Socket errors: connect 1, read 2, write 0, timeout 3\nRequests/sec: 100.0\n";
        assert_eq!(super::wrk_failures(report), 18);
        assert_eq!(super::wrk_failures("Requests/sec: 5\n"), 0);
    }
}
