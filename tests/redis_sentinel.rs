//! Redis Sentinel: reliw finds the master through a real sentinel
//! (`redis-server --sentinel`) and follows a failover by itself; cached
//! pages are served meanwhile.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reliw_tests::redis::{RedisServer, free_port};
use reliw_tests::server::{Server, Site, get, serve_fails};
use reliw_tests::wait_until;
use serde_json::json;

const HOST: &str = "ha.test";

/// A sentinel on a free port watching `master` as `mymaster`; killed on drop.
struct Sentinel {
    child: Child,
    port: u16,
}

impl Sentinel {
    fn start(dir: &std::path::Path, master_port: u16) -> Self {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 500\n\
                 sentinel failover-timeout mymaster 3000\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "sentinel did not listen on {port}");
        Self { child, port }
    }

    /// The master's port as the sentinel names it now.
    fn master_port(&self) -> Option<u16> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        let mut con = client.get_connection().ok()?;
        let addr: Vec<String> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query(&mut con)
            .ok()?;
        addr.get(1)?.parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_master_is_found_through_sentinel_and_a_failover_is_followed() {
    let site = Site::new();
    site.file("ha.test/index.html", b"<p>highly available</p>");
    let mut master = RedisServer::start();
    master.load(&json!({
        "RLW:API:ha.test": [["/", "home", true], ["^/%.well%-known/", "acme"]],
        "RLW:API:ha.test:home": {"methods": {"GET": true}, "file": "index.html"},
        "RLW:API:ha.test:acme": {"methods": {"GET": true}},
    }));
    let replica_port = free_port();
    let replica = RedisServer::start_with(
        replica_port,
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    );
    let synced = wait_until(Duration::from_secs(10), || {
        let route: Option<String> = redis::cmd("GET")
            .arg("RLW:API:ha.test")
            .query(&mut replica.client())
            .ok()
            .flatten();
        route.is_some()
    });
    assert!(synced, "the replica never caught up");
    let sentinel = Sentinel::start(&site.root, master.port);
    let server = Server::start(
        &site,
        json!({
            "store": {"backend": "redis"},
            "site_cache_ttl_ms": 100,
            "redis": {"db": 13, "timeout": 1.0,
                      "sentinel": {"master": "mymaster", "addresses": [format!("127.0.0.1:{}", sentinel.port)]}},
        }),
        &[],
    );
    let r = get(server.addr, HOST, "/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "<p>highly available</p>"),
        "{}",
        server.log()
    );

    // The master dies; the sentinel promotes the replica.
    let killed = Instant::now();
    master.kill();
    let mut cached_failures = 0;
    let promoted = wait_until(Duration::from_secs(30), || {
        // Meanwhile the cached page keeps being served.
        let r = get(server.addr, HOST, "/");
        if r.status != 200 {
            if cached_failures == 0 {
                eprintln!("first failure: {} {}", r.status, r.text());
            }
            cached_failures += 1;
        }
        sentinel.master_port() == Some(replica_port)
    });
    assert!(promoted, "the sentinel never promoted the replica");
    assert_eq!(
        cached_failures,
        0,
        "a cached page failed during the failover: {}",
        server.log()
    );
    // Data written to the new master only is served: reliw follows it.
    let _: () = redis::cmd("SET")
        .arg("RLW:DATA:ha.test:.well-known/acme-challenge/after-failover")
        .arg("served by the new master")
        .query(&mut replica.client())
        .unwrap();
    let followed = wait_until(Duration::from_secs(20), || {
        get(
            server.addr,
            HOST,
            "/.well-known/acme-challenge/after-failover",
        )
        .text()
            == "served by the new master"
    });
    assert!(
        followed,
        "reliw never read from the new master: {}",
        server.log()
    );
    println!(
        "failover: master killed to data from the new master served in {:?}",
        killed.elapsed()
    );
}

#[test]
fn bad_sentinel_settings_stop_start_up_naming_the_key() {
    let site = Site::new();
    for (sentinel, key) in [
        (
            json!({"master": "", "addresses": ["127.0.0.1:26379"]}),
            "redis.sentinel.master",
        ),
        (
            json!({"master": "m", "addresses": []}),
            "redis.sentinel.addresses",
        ),
        (
            json!({"master": "m", "addresses": ["no-port"]}),
            "redis.sentinel.addresses",
        ),
    ] {
        let config = json!({
            "data_dir": site.www(),
            "port": 0,
            "store": {"backend": "redis"},
            "redis": {"sentinel": sentinel},
            "metrics": {"disabled": true},
        });
        let (code, stderr) = serve_fails(&config.to_string(), &site.root);
        assert_ne!(code, 0, "{stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}
