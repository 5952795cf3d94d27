//! The WAF feeding the XDP shield of every node, end to end with real
//! parts: a client namespace C, two server namespaces running two real
//! `reliw serve` (edge-1 in S1, edge-2 in S2) with the shield in native
//! mode on their veth ends, one real redis-server (in S1, reached by S2 over
//! its own link), and a second client namespace D.
//!
//! ```text
//!   C 198.18.1.2 ── S1 198.18.1.1 (edge-1, XDP)      D 198.18.4.2 ── S1 198.18.4.1 (XDP)
//!   C 198.18.1.2 ── S2 198.18.2.1 (edge-2, XDP)      S1 198.18.3.1 (redis) ── S2 198.18.3.2
//! ```
//!
//! C has one address on both of its links, so "the client" is one address
//! for both nodes, as it would be on the internet.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reliw::shield::maps::ShieldMaps;
use reliw_tests::server::{Client, Server, Site};
use reliw_tests::{
    Netns, PinRoot, connects, mac, require_privileges, unique, veth_link, wait_until,
};
use serde_json::json;

/// redis-server inside a namespace; killed on drop.
struct NsRedis(Child);

impl Drop for NsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(ns: &Netns, ip: &'static str, path: &'static str) -> u16 {
    ns.run(move || {
        let addr = format!("{ip}:8080").parse().unwrap();
        Client::connect(addr).get("waf.test", path).status
    })
}

fn banned(pin: &PinRoot, ip: &str) -> bool {
    let maps = ShieldMaps::open_pinned(&reliw::shield::loader::pin_dir(pin.path())).unwrap();
    maps.ban_of(ip.parse().unwrap())
        .unwrap()
        .is_some_and(|b| !b.expired)
}

/// The topology above with both edges serving `waf.test` (a WAF rule for
/// `%.php$`, a route limited to 1 GET a minute) and `shield.rate_limit`
/// set to `shield_rate_limit` on both.
fn fleet(shield_rate_limit: serde_json::Value) -> Fleet {
    let (c, d, s1, s2) = (
        Netns::new(unique("c")),
        Netns::new(unique("d")),
        Netns::new(unique("s")),
        Netns::new(unique("t")),
    );
    let (c_a, c_b, s1_a, s2_b) = (unique("v"), unique("v"), unique("v"), unique("v"));
    let (d_a, s1_d, s1_r, s2_r) = (unique("v"), unique("v"), unique("v"), unique("v"));
    veth_link(
        &c,
        &c_a,
        ("198.18.1.2", "fd00:198:18:1::2"),
        &s1,
        &s1_a,
        ("198.18.1.1", "fd00:198:18:1::1"),
    );
    veth_link(
        &c,
        &c_b,
        ("198.18.2.2", "fd00:198:18:2::2"),
        &s2,
        &s2_b,
        ("198.18.2.1", "fd00:198:18:2::1"),
    );
    veth_link(
        &d,
        &d_a,
        ("198.18.4.2", "fd00:198:18:4::2"),
        &s1,
        &s1_d,
        ("198.18.4.1", "fd00:198:18:4::1"),
    );
    veth_link(
        &s1,
        &s1_r,
        ("198.18.3.1", "fd00:198:18:3::1"),
        &s2,
        &s2_r,
        ("198.18.3.2", "fd00:198:18:3::2"),
    );
    // C speaks to S2 from its S1-side address too.
    c.ip(&["addr", "add", "198.18.1.2/32", "dev", &c_b]);
    c.ip(&[
        "route",
        "add",
        "198.18.2.1/32",
        "dev",
        &c_b,
        "src",
        "198.18.1.2",
    ]);
    s2.ip(&["route", "add", "198.18.1.2/32", "dev", &s2_b]);
    let c_b_mac = mac(&c, &c_b);
    s2.ip(&[
        "neigh",
        "replace",
        "198.18.1.2",
        "lladdr",
        &c_b_mac,
        "dev",
        &s2_b,
        "nud",
        "permanent",
    ]);

    let redis = NsRedis(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &s1.name,
                "redis-server",
                "--port",
                "6379",
                "--bind",
                "198.18.3.1",
            ])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = wait_until(Duration::from_secs(10), || {
        connects(&s2, "198.18.3.1", 6379)
    });
    assert!(up, "redis in S1 reachable from S2");
    s2.run(|| {
        let mut con = redis::Client::open("redis://198.18.3.1:6379/13")
            .unwrap()
            .get_connection()
            .unwrap();
        let routes = json!([["/", "home", true], ["/limited", "limited", true]]).to_string();
        let home = json!({"methods": {"GET": true}, "file": "index.md"}).to_string();
        let limited = json!({"methods": {"GET": true}, "file": "index.md",
                "rate_limit": {"GET": {"limit": 1, "period": 60}}})
        .to_string();
        let rules = json!({"query": ["%.php$"]}).to_string();
        for (k, v) in [
            ("RLW:API:waf.test", routes),
            ("RLW:API:waf.test:home", home),
            ("RLW:API:waf.test:limited", limited),
        ] {
            redis::cmd("SET").arg(k).arg(v).exec(&mut con).unwrap();
        }
        redis::cmd("HSET")
            .arg("RLW:WAF")
            .arg("__")
            .arg(rules)
            .exec(&mut con)
            .unwrap();
    });

    let (pin1, pin2) = (PinRoot::new("edge1"), PinRoot::new("edge2"));
    let (site1, site2) = (Site::new(), Site::new());
    for site in [&site1, &site2] {
        site.file("waf.test/index.md", b"# hello\n");
    }
    let config = |node: &str, ifaces: Vec<&str>, pin: &PinRoot| {
        json!({
            "ip": "0.0.0.0", "port": 8080, "node_name": node,
            "store": {"backend": "redis"},
            "redis": {"host": "198.18.3.1", "port": 6379, "db": 13, "timeout": 1.0},
            "metrics": {"disabled": true},
            "shield": {"interfaces": ifaces, "mode": "drv", "pin_root": pin.path(),
                "ban_seconds": 4, "rate_limit": shield_rate_limit.clone()},
            "rate_limit": {"ban": {"over": 2, "window": 60, "ban_seconds": 2}},
        })
    };
    // nsenter switches only the network namespace, so the pins land in
    // the host's /sys/fs/bpf (ip netns exec would remount /sys).
    let edge1 = Server::start_wrapped(
        &site1,
        config("edge-1", vec![&s1_a, &s1_d], &pin1),
        &[],
        &["nsenter", &format!("--net=/run/netns/{}", s1.name)],
    );
    let edge2 = Server::start_wrapped(
        &site2,
        config("edge-2", vec![&s2_b], &pin2),
        &[],
        &["nsenter", &format!("--net=/run/netns/{}", s2.name)],
    );
    for (edge, ip) in [(&edge1, "198.18.1.1"), (&edge2, "198.18.2.1")] {
        let subscribed = wait_until(Duration::from_secs(10), || {
            edge.log().contains("subscribed")
        });
        assert!(subscribed, "{}", edge.log());
        assert_eq!(get(&c, ip, "/"), 200, "{}", edge.log());
    }
    assert_eq!(get(&d, "198.18.4.1", "/"), 200);

    Fleet {
        c,
        d,
        s1,
        s2,
        redis,
        pin1,
        pin2,
        edge1,
        edge2,
        _sites: (site1, site2),
    }
}

/// Namespaces, redis and the two edges; the servers stop first on drop.
struct Fleet {
    edge1: Server,
    edge2: Server,
    _sites: (Site, Site),
    redis: NsRedis,
    pin1: PinRoot,
    pin2: PinRoot,
    c: Netns,
    d: Netns,
    s1: Netns,
    s2: Netns,
}

mod privileged {
    use super::*;

    #[test]
    fn a_waf_hit_drops_the_client_at_every_node() {
        require_privileges();
        let Fleet {
            c,
            d,
            s1,
            s2,
            redis,
            pin1,
            pin2,
            edge1,
            edge2,
            _sites,
        } = fleet(json!({}));
        // The WAF hit on edge-1 (timed from the request that triggers it:
        // the ban is published before the 403 is written).
        let decided = Instant::now();
        assert_eq!(get(&c, "198.18.1.1", "/wp-login.php"), 403);
        assert!(banned(&pin1, "198.18.1.2"), "{}", edge1.log());
        // ...reaches edge-2 through P:WAFFERS.
        let arrived = wait_until(Duration::from_secs(5), || banned(&pin2, "198.18.1.2"));
        let propagation = decided.elapsed();
        assert!(arrived, "{}", edge2.log());
        println!("WAF ban in edge-2's shield {propagation:?} after the request hit edge-1");
        // The client's packets are dropped by both kernels; D is served.
        assert!(!connects(&c, "198.18.1.1", 8080), "dropped at edge-1");
        assert!(!connects(&c, "198.18.2.1", 8080), "dropped at edge-2");
        assert_eq!(
            get(&d, "198.18.4.1", "/"),
            200,
            "another client is still served"
        );
        // The ban book says who decided and why.
        let list = pin2.shield(None, &["list", "--json"]);
        let listing = list.ok().json();
        let ban = &listing["bans"][0];
        assert_eq!(ban["ip"], "198.18.1.2");
        assert_eq!(ban["reason"], "waf");
        assert_eq!(ban["origin"], "edge-1", "{listing}");
        assert_eq!(ban["rule"], "%.php$");
        // Bans end by themselves (ban_seconds 4).
        let lifted = wait_until(Duration::from_secs(8), || {
            connects(&c, "198.18.1.1", 8080) && connects(&c, "198.18.2.1", 8080)
        });
        assert!(lifted, "the bans expired");

        // Escalation: D keeps hitting the limit (1 a minute) and is banned.
        assert_eq!(get(&d, "198.18.4.1", "/limited"), 200);
        for _ in 0..3 {
            assert_eq!(get(&d, "198.18.4.1", "/limited"), 429);
        }
        assert!(banned(&pin1, "198.18.4.2"), "{}", edge1.log());
        assert!(!connects(&d, "198.18.4.1", 8080));
        assert!(wait_until(Duration::from_secs(5), || banned(
            &pin2,
            "198.18.4.2"
        )));
        let lifted = wait_until(Duration::from_secs(6), || connects(&d, "198.18.4.1", 8080));
        assert!(lifted, "the escalation ban expired");

        // RELIW's bare-address message is a ban of the default length on
        // every node.
        s2.run(|| {
            let mut con = redis::Client::open("redis://198.18.3.1:6379/13")
                .unwrap()
                .get_connection()
                .unwrap();
            redis::cmd("PUBLISH")
                .arg("RLW:WAFFERS")
                .arg("198.18.9.9")
                .exec(&mut con)
                .unwrap();
        });
        assert!(wait_until(Duration::from_secs(5), || {
            banned(&pin1, "198.18.9.9") && banned(&pin2, "198.18.9.9")
        }));

        // Never banned: allowlisted clients and the node's own addresses.
        pin1.shield(None, &["allow", "198.18.4.0/24"]).ok();
        assert_eq!(
            get(&d, "198.18.4.1", "/x.php"),
            403,
            "still refused by the WAF"
        );
        assert!(!banned(&pin1, "198.18.4.2"), "but not banned");
        assert_eq!(get(&s1, "198.18.1.1", "/x.php"), 403);
        assert!(!banned(&pin1, "198.18.1.1"));
        let log = edge1.log();
        assert!(
            log.contains("not banning 198.18.4.2: in the shield's allow list"),
            "{log}"
        );
        assert!(
            log.contains("not banning 198.18.1.1: one of this node's own addresses"),
            "{log}"
        );
        drop((edge1, edge2, redis));
    }

    /// A source that keeps opening connections past its XDP SYN budget is
    /// dropped in the kernel, then banned on this node and, through
    /// `P:WAFFERS`, on the other; a well-behaved client is served throughout.
    #[test]
    fn a_source_that_stays_over_its_xdp_budget_is_banned_at_every_node() {
        require_privileges();
        let fleet = fleet(json!({
            "syns_per_second": 5, "syn_burst": 5, "escalate_after_seconds": 1,
        }));
        let Fleet {
            c, d, pin1, pin2, ..
        } = &fleet;
        // D opens connections for 3 s as fast as a 50 ms connect timeout
        // lets it (20-100 a second): over budget for the whole time.
        let (attempts, connected, took) = d.run(|| {
            let addr: std::net::SocketAddr = "198.18.4.1:8080".parse().unwrap();
            let start = Instant::now();
            let (mut attempts, mut connected) = (0u32, 0u32);
            while start.elapsed() < Duration::from_secs(3) {
                attempts += 1;
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
                    connected += 1;
                }
            }
            (attempts, connected, start.elapsed())
        });
        println!("flood: {attempts} connection attempts, {connected} connected, in {took:?}");
        assert!(
            wait_until(Duration::from_secs(3), || banned(pin1, "198.18.4.2")),
            "edge-1 banned the flooding source: {}",
            fleet.edge1.log()
        );
        let stats = pin1.shield(None, &["stats", "--json"]).ok().json();
        assert!(
            stats["dropped_rate_syn"].as_u64().unwrap() > 0,
            "SYNs over budget were dropped: {stats}"
        );
        assert!(
            connected <= 5 + 3 * 5 + 1,
            "no more connections than the burst and 3 s of the rate allow: {connected}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || banned(pin2, "198.18.4.2")),
            "edge-2 heard of the ban: {}",
            fleet.edge2.log()
        );
        let listing = pin2.shield(None, &["list", "--json"]).ok().json();
        let ban = &listing["bans"][0];
        assert_eq!(ban["ip"], "198.18.4.2", "{listing}");
        assert_eq!(ban["reason"], "rate_limit", "{listing}");
        assert_eq!(ban["origin"], "edge-1", "{listing}");
        assert_eq!(ban["rule"], "xdp syn budget", "{listing}");
        assert!(!connects(d, "198.18.4.1", 8080), "banned at edge-1");
        // C, within its budget, was never affected.
        assert_eq!(get(c, "198.18.1.1", "/"), 200);
        assert_eq!(get(c, "198.18.2.1", "/"), 200);
    }
}
