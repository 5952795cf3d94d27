//! SYN cookies answered in XDP, end to end: a client namespace and a
//! server namespace joined by a veth pair, the real `reliw serve` in the
//! server namespace with the shield in native mode on its veth end and
//! `shield.syn_cookies` on. Every handshake the program answers with a
//! cookie must be completed by the kernel's listener from the client's ACK,
//! or the client would get a reset instead of its page.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reliw_tests::server::{Server, Site};
use reliw_tests::{Netns, PinRoot, require_privileges, unique, veth_link};
use serde_json::json;

mod privileged {
    use super::*;

    #[test]
    fn handshakes_answered_with_an_xdp_cookie_complete_in_both_families() {
        require_privileges();
        let (server, client) = (Netns::new(unique("s")), Netns::new(unique("c")));
        let (srv_if, cli_if) = (unique("v"), unique("v"));
        veth_link(
            &client,
            &cli_if,
            ("198.18.5.2", "fd00:198:18:5::2"),
            &server,
            &srv_if,
            ("198.18.5.1", "fd00:198:18:5::1"),
        );
        // XDP_TX on a veth end reaches its peer only when the peer runs
        // XDP in native mode too (a NIC needs nothing of the kind): an
        // empty shield, which passes everything, on the client's end.
        let peer_pins = PinRoot::new("cookie-peer");
        peer_pins
            .shield(
                Some(&client.name),
                &["attach", "--iface", &cli_if, "--mode", "drv", "--persist"],
            )
            .ok();
        let site = Site::new();
        site.file("cookie.test/index.html", b"<p>made it</p>\n");
        let pins = PinRoot::new("cookies");
        let edge = Server::start_wrapped(
            &site,
            json!({
                "ip": "0.0.0.0", "ipv6": "::", "port": 8080,
                "metrics": {"disabled": true},
                "shield": {"interfaces": [&srv_if], "mode": "drv", "pin_root": pins.path(),
                    "syn_cookies": {"mode": "on"}},
            }),
            &[],
            &["nsenter", &format!("--net=/run/netns/{}", server.name)],
        );
        let sysctl = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &server.name,
                "cat",
                "/proc/sys/net/ipv4/tcp_syncookies",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&sysctl.stdout).trim(),
            "2",
            "reliw set the sysctl the cookie path needs: {}",
            edge.log()
        );

        const CONNECTIONS: u32 = 40;
        let started = std::time::Instant::now();
        let statuses = client.run(|| {
            let mut statuses = Vec::new();
            for i in 0..CONNECTIONS {
                let addr = if i % 2 == 0 {
                    "198.18.5.1:8080"
                } else {
                    "[fd00:198:18:5::1]:8080"
                };
                statuses.push((addr, fetch(addr)));
            }
            statuses
        });
        let took = started.elapsed();
        assert!(
            statuses
                .iter()
                .all(|(_, s)| s.as_deref() == Ok("HTTP/1.1 200 OK")),
            "every connection served: {statuses:?}; {}",
            edge.log()
        );
        // A SYN-ACK that never arrived would cost a 1 s SYN retransmit.
        assert!(
            took < Duration::from_secs(5),
            "{CONNECTIONS} handshakes took {took:?}: some SYN-ACKs were lost"
        );
        let stats = pins.shield(None, &["stats", "--json"]).ok().json();
        let answered = stats["syn_cookie"].as_u64().unwrap();
        // One SYN a second per CPU is left to the kernel; the rest are ours.
        let cpus = std::thread::available_parallelism().unwrap().get() as u64;
        assert!(
            answered + 2 * cpus >= u64::from(CONNECTIONS),
            "the program answered the handshakes: {stats}"
        );
        assert!(answered > 0, "{stats}");
        // A SYN to a port reliw does not serve is the kernel's.
        let before = answered;
        let refused = client.run(|| {
            std::net::TcpStream::connect_timeout(
                &"198.18.5.1:9".parse().unwrap(),
                Duration::from_secs(1),
            )
            .is_err()
        });
        assert!(refused, "nothing listens on port 9");
        let stats = pins.shield(None, &["stats", "--json"]).ok().json();
        assert_eq!(stats["syn_cookie"].as_u64().unwrap(), before, "{stats}");
        drop(edge);
    }
}

/// The status line of `GET /index.html` over a new connection to `addr`.
fn fetch(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /index.html HTTP/1.1\r\nHost: cookie.test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}
