//! The reverse proxy, black-box: the real reliw binary in front of real
//! upstreams on loopback (plain HTTP, and TLS with a CA made here), routed
//! by `P:PROXY:<host>` entries in a memory-store site file.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reliw_tests::decode;
use reliw_tests::server::{Client, Server, Site};
use reliw_tests::tls::TestCa;
use reliw_tests::upstream::{Upstream, checksum, pattern, text_body};
use reliw_tests::wait_until;
use serde_json::{Value, json};

/// A site file whose hosts proxy to the given upstream entries.
fn start(site: &Site, proxies: &[(&str, Value)], extra: Value, args: &[&str]) -> Server {
    Server::start(site, proxy_config(site, proxies, extra), args)
}

/// A memory-store config whose site file holds `proxies`, with `extra` keys.
fn proxy_config(site: &Site, proxies: &[(&str, Value)], extra: Value) -> Value {
    let mut data = serde_json::Map::new();
    for (host, entry) in proxies {
        data.insert(format!("P:PROXY:{host}"), Value::String(entry.to_string()));
    }
    let file = site.root.join("site.json");
    std::fs::write(&file, Value::Object(data).to_string()).unwrap();
    let mut config = json!({
        "store": {"backend": "memory", "site_file": file},
        "redis": {"prefix": "P"},
        "log_level": "info",
        "proxy": {"response_timeout_ms": 1500, "read_timeout_ms": 1500},
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

fn plain_entry(up: &Upstream) -> Value {
    json!({"target": "127.0.0.1", "port": up.port()})
}

fn request(addr: SocketAddr, raw: &str) -> reliw_tests::server::Response {
    let mut c = Client::connect(addr);
    c.send(raw.as_bytes());
    c.response()
}

fn get(addr: SocketAddr, host: &str, path: &str) -> reliw_tests::server::Response {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
}

/// Peak and current resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn headers_are_rewritten_both_ways_and_cookies_kept_apart() {
    let site = Site::new();
    let up = Upstream::plain();
    let ca = TestCa::new();
    let cert = ca.leaf(&site.root, "site", &["site.test"], false);
    let ssl = json!({"default": {"cert": cert.cert, "key": cert.key}, "port": 0});
    let server = start(
        &site,
        &[("site.test", plain_entry(&up))],
        json!({"ssl": ssl}),
        &[],
    );

    let resp = request(
        server.addrs[0],
        "GET /echo?x=1 HTTP/1.1\r\nHost: site.test\r\nConnection: keep-alive, X-Secret\r\n\
         X-Secret: s\r\nKeep-Alive: 300\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
         X-Forwarded-For: 203.0.113.9\r\nX-Real-IP: 6.6.6.6\r\nX-Client-IP: 6.6.6.6\r\nOrigin: http://site.test\r\n\
         Referer: http://site.test/from?a=b\r\nCookie: c=1\r\nUser-Agent: t\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{}", server.log());
    let seen = up.last();
    assert!(
        seen.head.starts_with("GET /echo?x=1 HTTP/1.1\r\n"),
        "{}",
        seen.head
    );
    let upstream_origin = format!("http://127.0.0.1:{}", up.port());
    assert_eq!(
        seen.header("host").unwrap(),
        format!("127.0.0.1:{}", up.port())
    );
    assert_eq!(seen.header("origin").unwrap(), upstream_origin);
    assert_eq!(
        seen.header("referer").unwrap(),
        format!("{upstream_origin}/from?a=b")
    );
    assert_eq!(
        seen.header("x-forwarded-for").unwrap(),
        "203.0.113.9, 127.0.0.1"
    );
    assert_eq!(seen.header("x-forwarded-host").unwrap(), "site.test");
    assert_eq!(seen.header("x-forwarded-proto").unwrap(), "http");
    assert_eq!(seen.header("x-real-ip").unwrap(), "127.0.0.1");
    // RELIW's X-Client-IP: ours, never the client's.
    assert_eq!(seen.header("x-client-ip").unwrap(), "127.0.0.1");
    assert_eq!(seen.header("cookie").unwrap(), "c=1");
    for gone in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert_eq!(
            seen.header(gone),
            None,
            "{gone} reached the upstream: {}",
            seen.head
        );
    }
    // Back to the client: hop-by-hop fields gone, both cookies separately,
    // CORS naming the client's origin again.
    let cookies = resp.headers_named("set-cookie");
    // RELIW: a cookie's Domain= names the host the client asked for.
    assert_eq!(
        cookies,
        [
            "a=1; Path=/",
            "b=2; HttpOnly",
            "c=3; Domain=site.test; Path=/"
        ]
    );
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://site.test")
    );
    assert_eq!(resp.header("x-up"), Some("yes"));
    for gone in ["x-up-hop", "keep-alive"] {
        assert_eq!(resp.header(gone), None, "{gone} reached the client");
    }

    // Over TLS: X-Forwarded-Proto says so and every cookie is Secure.
    let client = ca.client(&[&rustls::version::TLS13]);
    let mut tls = reliw_tests::tls::connect(server.tls_addrs[0], "site.test", client).unwrap();
    tls.write_all(b"GET /echo HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("Set-Cookie: a=1; Path=/; Secure\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Set-Cookie: b=2; HttpOnly; Secure\r\n"),
        "{text}"
    );
    assert_eq!(up.last().header("x-forwarded-proto").unwrap(), "https");
}

#[test]
fn chunked_close_delimited_interim_and_head_responses() {
    let site = Site::new();
    let up = Upstream::plain();
    let server = start(&site, &[("site.test", plain_entry(&up))], json!({}), &[]);
    let addr = server.addr;

    // Chunk extensions and trailers from the upstream: the client gets
    // the decoded body, re-chunked.
    let mut c = Client::connect(addr);
    c.send(b"GET /chunked HTTP/1.1\r\nHost: site.test\r\n\r\n");
    let resp = c.response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.header("trailer"), None, "hop-by-hop");
    assert_eq!(resp.text(), "hello, world");
    // The same connection goes on (and the upstream connection was pooled).
    c.send(b"GET /until-close HTTP/1.1\r\nHost: site.test\r\n\r\n");
    let resp = c.response();
    assert_eq!(
        resp.text(),
        "all of this, until the close",
        "close-delimited → chunked"
    );
    c.send(b"GET /early-hints HTTP/1.1\r\nHost: site.test\r\n\r\n");
    let resp = c.response();
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "after the hints")
    );
    c.send(b"HEAD /big/1000 HTTP/1.1\r\nHost: site.test\r\n\r\n");
    let resp = c.response_to("HEAD");
    assert_eq!(resp.header("content-length"), Some("1000"));
    assert!(resp.body.is_empty());
    c.send(b"GET /after-head HTTP/1.1\r\nHost: site.test\r\n\r\n");
    assert_eq!(c.response().text(), "ok /after-head");

    // An HTTP/1.0 client gets a body of unknown length delimited by close.
    let mut c = Client::connect(addr);
    c.send(b"GET /chunked HTTP/1.0\r\nHost: site.test\r\n\r\n");
    let raw = String::from_utf8(c.read_to_close()).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("Connection: close\r\n"), "{raw}");
    assert!(raw.ends_with("\r\n\r\nhello, world"), "{raw}");
}

#[test]
fn one_pooled_upstream_connection_serves_many_requests() {
    let site = Site::new();
    let up = Upstream::plain();
    let server = start(&site, &[("site.test", plain_entry(&up))], json!({}), &[]);
    for _ in 0..5 {
        let mut c = Client::connect(server.addr);
        for i in 0..20 {
            c.send(format!("GET /n{i} HTTP/1.1\r\nHost: site.test\r\n\r\n").as_bytes());
            assert_eq!(c.response().text(), format!("ok /n{i}"));
        }
    }
    assert_eq!(up.seen().len(), 100);
    assert_eq!(up.connections(), 1, "100 requests, one upstream connection");

    // An upstream that says close gets a new connection next time.
    assert_eq!(
        get(server.addr, "site.test", "/close-after").text(),
        "closing"
    );
    assert_eq!(get(server.addr, "site.test", "/x").text(), "ok /x");
    assert_eq!(up.connections(), 2);

    // A pooled connection the upstream drops unanswered: a GET is sent
    // again on a new connection; a POST with a body is not (502).
    assert_eq!(get(server.addr, "site.test", "/arm-drop").text(), "armed");
    let before = up.connections();
    assert_eq!(
        get(server.addr, "site.test", "/retried").text(),
        "ok /retried"
    );
    assert_eq!(up.connections(), before + 1);
    assert_eq!(get(server.addr, "site.test", "/arm-drop").text(), "armed");
    let resp = request(
        server.addr,
        "POST /once HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(resp.status, 502, "a body is not replayed");
    assert!(
        server.log().contains("closed without a response"),
        "{}",
        server.log()
    );
    // What /metrics says of it: connections opened and reused, one retry.
    let opened = server.metric("reliw_proxy_upstream_connections_opened_total");
    assert_eq!(opened as usize, up.connections(), "opened");
    assert!(server.metric("reliw_proxy_upstream_connections_reused_total") >= 100.0);
    assert_eq!(server.metric("reliw_proxy_upstream_retries_total"), 1.0);
    let protocol = r#"reliw_proxy_upstream_failures_total{cause="protocol"}"#;
    assert_eq!(server.metric(protocol), 1.0, "the POST");
}

#[test]
fn upstream_failures_become_502_and_504_and_cost_nothing() {
    let site = Site::new();
    let up = Upstream::plain();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = start(
        &site,
        &[
            ("site.test", plain_entry(&up)),
            ("down.test", json!({"target": "127.0.0.1", "port": down})),
            ("broken.test", json!({"port": 80})),
        ],
        json!({}),
        &[],
    );
    let addr = server.addr;
    // Warm up, then count descriptors.
    assert_eq!(get(addr, "site.test", "/").status, 200);
    let fds = server.fd_count();

    let resp = get(addr, "down.test", "/");
    assert_eq!(resp.status, 502);
    assert!(
        server
            .log()
            .contains(&format!("upstream=\"http://127.0.0.1:{down}\"")),
        "{}",
        server.log()
    );
    assert!(server.log().contains("connect failed"), "{}", server.log());
    assert_eq!(get(addr, "broken.test", "/").status, 502);
    assert!(
        server.log().contains("invalid P:PROXY:broken.test"),
        "{}",
        server.log()
    );

    let started = Instant::now();
    assert_eq!(get(addr, "site.test", "/hang").status, 504);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(server.log().contains("no response in time"));

    // A bad first chunk: nothing reached the client yet, so it gets a 502.
    for path in ["/garbage", "/huge-head", "/bad-length", "/bad-chunk-first"] {
        let resp = get(addr, "site.test", path);
        assert_eq!(resp.status, 502, "{path}");
    }
    // Bad chunks or a stalled body after the head went out: the client's
    // connection is cut short, never given a complete-looking body.
    for path in ["/bad-chunk", "/slow-body"] {
        let mut c = Client::connect(addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n").as_bytes());
        assert!(
            c.try_response_to("GET").is_none(),
            "{path}: a truncated body must not look whole"
        );
    }
    assert!(server.log().contains("response cut"), "{}", server.log());

    // Counted by cause in /metrics.
    let failures = |cause: &str| {
        server.metric(&format!(
            r#"reliw_proxy_upstream_failures_total{{cause="{cause}"}}"#
        ))
    };
    assert_eq!(failures("connect"), 1.0);
    assert_eq!(failures("timeout"), 1.0);
    assert_eq!(failures("protocol"), 3.0);
    assert_eq!(
        failures("cut"),
        3.0,
        "bad first chunk, bad later chunk, stalled body"
    );

    // Still serving, and nothing leaked.
    assert_eq!(get(addr, "site.test", "/after").text(), "ok /after");
    assert!(
        wait_until(Duration::from_secs(5), || server.fd_count() <= fds + 1),
        "fds {} → {}",
        fds,
        server.fd_count()
    );
}

/// As RELIW, the system's CA bundle is trusted for HTTPS upstreams (here
/// `SSL_CERT_FILE` names a bundle holding the test CA), without `tls_cafile`.
#[test]
fn the_system_ca_bundle_is_trusted() {
    let site = Site::new();
    let ca = TestCa::new();
    let leaf = ca.leaf(&site.root, "upstream", &["localhost"], false);
    let up = Upstream::tls(leaf.server_config());
    let bundle = site.root.join("system-bundle.pem");
    std::fs::write(&bundle, &ca.pem).unwrap();
    let entry = json!({"target": "localhost", "scheme": "https", "port": up.port()});
    let config = proxy_config(&site, &[("bundle.test", entry)], json!({}));
    let env = format!("SSL_CERT_FILE={}", bundle.display());
    let server = Server::start_wrapped(&site, config, &[], &["env", &env]);
    let resp = get(server.addr, "bundle.test", "/echo");
    assert_eq!(resp.status, 200, "{}", server.log());
    // Without the bundle the same upstream is refused: `noca.test` in
    // tls_upstreams_are_verified_unless_told_otherwise.
}

#[test]
fn tls_upstreams_are_verified_unless_told_otherwise() {
    let site = Site::new();
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let leaf = ca.leaf(&site.root, "upstream", &["localhost"], false);
    let up = Upstream::tls(leaf.server_config());
    let silent = Upstream::silent();
    let ca_file = site.root.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let other_file = site.root.join("other.pem");
    std::fs::write(&other_file, &other_ca.pem).unwrap();
    let ca_dir = site.root.join("cas");
    std::fs::create_dir(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("a.pem"), &ca.pem).unwrap();
    std::fs::write(ca_dir.join("README"), "not a certificate").unwrap();
    let tls = |extra: Value| {
        let mut e = json!({"target": "localhost", "scheme": "https", "port": up.port()});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    let server = start(
        &site,
        &[
            ("verified.test", tls(json!({"tls_cafile": ca_file}))),
            ("capath.test", tls(json!({"tls_capath": ca_dir}))),
            ("wrongca.test", tls(json!({"tls_cafile": other_file}))),
            ("noca.test", tls(json!({}))),
            ("insecure.test", tls(json!({"tls_insecure": true}))),
            ("noverify.test", tls(json!({"tls_no_verify": true}))),
            ("nvmode.test", tls(json!({"no_verify_mode": "true"}))),
            (
                "silent.test",
                json!({"target": "127.0.0.1", "scheme": "https", "port": silent.port(), "tls_insecure": true, "tls_handshake_timeout": 1}),
            ),
        ],
        json!({}),
        &[],
    );
    let addr = server.addr;
    for host in ["verified.test", "capath.test"] {
        let resp = get(addr, host, "/echo");
        assert_eq!(resp.status, 200, "{host}: {}", server.log());
        assert!(
            resp.text()
                .contains(&format!("host: localhost:{}", up.port())),
            "{}",
            resp.text()
        );
    }
    for host in ["wrongca.test", "noca.test"] {
        assert_eq!(get(addr, host, "/").status, 502, "{host}");
    }
    assert!(server.log().contains("TLS:"), "{}", server.log());
    for host in ["insecure.test", "noverify.test", "nvmode.test"] {
        assert_eq!(get(addr, host, "/x").text(), "ok /x", "{host}");
    }
    // One warning per upstream (the three entries share one), not per request.
    assert_eq!(get(addr, "insecure.test", "/again").status, 200);
    let warnings = server.log().matches("is not verified").count();
    assert_eq!(warnings, 1, "{}", server.log());

    let started = Instant::now();
    assert_eq!(get(addr, "silent.test", "/").status, 504);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert!(
        server.log().contains("TLS handshake timed out"),
        "{}",
        server.log()
    );

    // Pooled over TLS too.
    let before = up.connections();
    for i in 0..10 {
        assert_eq!(get(addr, "verified.test", &format!("/p{i}")).status, 200);
    }
    assert!(
        up.connections() <= before + 1,
        "{} → {}",
        before,
        up.connections()
    );
}

#[test]
fn a_hundred_mib_each_way_streams_in_bounded_memory() {
    const SIZE: u64 = 100 << 20;
    let site = Site::new();
    let up = Upstream::plain();
    let server = start(
        &site,
        &[("site.test", plain_entry(&up))],
        json!({"max_body_size": SIZE * 2, "proxy": {"read_timeout_ms": 20000}}),
        &[],
    );
    assert_eq!(get(server.addr, "site.test", "/warm").status, 200);
    let (_, rss_before) = memory_kib(server.pid());

    // Download: read as it comes, check every byte.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /big/{SIZE} HTTP/1.1\r\nHost: site.test\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut got = 0u64;
    let mut bad = None;
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {got} body bytes");
        let mut data = &buf[..n];
        if head.windows(4).all(|w| w != b"\r\n\r\n") {
            head.extend_from_slice(data);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let body_start = end + 4;
            let extra = head.len() - body_start;
            data = &buf[n - extra..n];
            let text = String::from_utf8_lossy(&head[..body_start]).into_owned();
            assert!(text.contains(&format!("Content-Length: {SIZE}")), "{text}");
        }
        for (k, b) in data.iter().enumerate() {
            if bad.is_none() && *b != pattern(got + k as u64) {
                bad = Some(got + k as u64);
            }
        }
        got += data.len() as u64;
        if got >= SIZE {
            break;
        }
    }
    assert_eq!(bad, None, "body differs at byte {bad:?}");
    assert_eq!(got, SIZE);

    // Upload, with Content-Length and chunked.
    let block: Vec<u8> = (0..(1u64 << 20)).map(pattern).collect();
    let mut expect = 0u64;
    for _ in 0..(SIZE >> 20) {
        expect = checksum(expect, &block);
    }
    for chunked in [false, true] {
        let mut c = Client::connect(server.addr);
        let framing = if chunked {
            String::from("Transfer-Encoding: chunked")
        } else {
            format!("Content-Length: {SIZE}")
        };
        c.send(format!("POST /upload HTTP/1.1\r\nHost: site.test\r\n{framing}\r\n\r\n").as_bytes());
        for _ in 0..(SIZE >> 20) {
            if chunked {
                c.send(format!("{:x}\r\n", block.len()).as_bytes());
                c.send(&block);
                c.send(b"\r\n");
            } else {
                c.send(&block);
            }
        }
        if chunked {
            c.send(b"0\r\n\r\n");
        }
        let resp = c.response();
        assert_eq!(resp.text(), format!("{SIZE} {expect}"), "chunked={chunked}");
    }
    let (peak, _) = memory_kib(server.pid());
    let grew = peak.saturating_sub(rss_before);
    eprintln!("reliw RSS {rss_before} KiB before, peak {peak} KiB after 3 × 100 MiB");
    assert!(
        grew < 24 * 1024,
        "peak RSS grew by {grew} KiB moving 300 MiB"
    );
}

#[test]
fn websocket_upgrades_become_a_byte_relay() {
    let site = Site::new();
    let up = Upstream::plain();
    let server = start(&site, &[("site.test", plain_entry(&up))], json!({}), &[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: site.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Upgrade: websocket\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("connection: upgrade\r\n"),
        "{head}"
    );
    let seen = up.last();
    assert_eq!(seen.header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(
        seen.header("sec-websocket-key").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    // Both ways, several times, including more than one buffer's worth.
    for round in 0..5 {
        let msg: Vec<u8> = (0..(round * 50_000 + 10))
            .map(|i| (i % 256) as u8)
            .collect();
        s.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert!(back == msg, "round {round}");
    }
    // The client closes: the upstream sees it and the relay ends.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert_eq!(get(server.addr, "site.test", "/after").text(), "ok /after");
}

#[test]
fn the_epoll_runtime_proxies_too() {
    let site = Site::new();
    let up = Upstream::plain();
    let server = start(
        &site,
        &[("site.test", plain_entry(&up))],
        json!({}),
        &["--io", "epoll"],
    );
    assert!(server.log().contains("epoll"), "{}", server.log());
    let mut c = Client::connect(server.addr);
    for i in 0..10 {
        c.send(format!("GET /e{i} HTTP/1.1\r\nHost: site.test\r\n\r\n").as_bytes());
        assert_eq!(c.response().text(), format!("ok /e{i}"));
    }
    assert_eq!(up.connections(), 1);
    c.send(b"GET /chunked HTTP/1.1\r\nHost: site.test\r\n\r\n");
    assert_eq!(c.response().text(), "hello, world");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: site.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
}

#[test]
fn websockets_relay_over_tls_on_both_sides() {
    let site = Site::new();
    let ca = TestCa::new();
    let up_cert = ca.leaf(&site.root, "upstream", &["localhost"], false);
    let up = Upstream::tls(up_cert.server_config());
    let cert = ca.leaf(&site.root, "site", &["site.test"], false);
    let ssl = json!({"default": {"cert": cert.cert, "key": cert.key}});
    let ca_file = site.root.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let entry =
        json!({"target": "localhost", "scheme": "https", "port": up.port(), "tls_cafile": ca_file});
    let server = start(&site, &[("site.test", entry)], json!({"ssl": ssl}), &[]);
    let client = ca.client(&[&rustls::version::TLS13]);
    let mut tls = reliw_tests::tls::connect(server.tls_addrs[0], "site.test", client).unwrap();
    tls.write_all(
        b"GET /ws HTTP/1.1\r\nHost: site.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tls.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Messages both ways through two TLS layers, small and larger than a
    // TLS record (16 KiB) and than the relay buffer.
    for size in [5usize, 20_000, 100_000] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        tls.write_all(&msg).unwrap();
        let mut back = vec![0u8; size];
        tls.read_exact(&mut back).unwrap();
        assert!(back == msg, "{size} bytes came back changed");
    }
}

#[test]
fn uncompressed_upstream_answers_are_encoded_on_their_way() {
    let site = Site::new();
    let up = Upstream::plain();
    let server = start(&site, &[("app.test", plain_entry(&up))], json!({}), &[]);
    let ask = |path: &str, ae: &str| {
        request(
            server.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nAccept-Encoding: {ae}\r\n\r\n"),
        )
    };
    for coding in ["gzip", "br", "zstd"] {
        let r = ask("/text/200000", coding);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some(coding));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.header("accept-ranges"), None);
        assert_eq!(r.header("etag"), Some("W/\"v1\""));
        assert_eq!(r.header("vary"), Some("Cookie, Accept-Encoding"));
        assert!(r.body.len() < 20_000, "{coding}: {}", r.body.len());
        assert_eq!(decode(coding, &r.body), text_body(200_000), "{coding}");
        // The upstream was asked as the client asked.
        assert_eq!(up.last().header("accept-encoding").as_deref(), Some(coding));
    }
    // A stream of unknown length, in pieces.
    let r = ask("/text-stream", "gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &r.body), text_body(3000));
    // No Accept-Encoding: as the upstream sent it, with Vary.
    let r = get(server.addr, "app.test", "/text/2000");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("content-length"), Some("2000"));
    assert_eq!(r.header("vary"), Some("Cookie, Accept-Encoding"));
    assert_eq!(r.body, text_body(2000));
    // Already encoded, too small, not text, HEAD: relayed as they are.
    let r = ask("/pre-encoded", "gzip, br");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, text_body(2000));
    let r = ask("/text/100", "gzip");
    assert_eq!((r.header("content-encoding"), r.body.len()), (None, 100));
    let r = ask("/big/5000", "gzip");
    assert_eq!((r.header("content-encoding"), r.body.len()), (None, 5000));
    // Above max_size: as the upstream sent it (length and ranges kept).
    let r = ask("/text/1100000", "gzip");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("content-length"), Some("1100000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    // HEAD: the head GET gets, without a body (nor a length: the encoded
    // one is not known).
    let mut c = Client::connect(server.addr);
    c.send(b"HEAD /text/5000 HTTP/1.1\r\nHost: app.test\r\nAccept-Encoding: gzip\r\n\r\n");
    let r = c.response_to("HEAD");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("etag"), Some("W/\"v1\""));
    assert_eq!(r.header("vary"), Some("Cookie, Accept-Encoding"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("accept-ranges"), None);
    // The connection goes on: nothing of a body was sent.
    c.send(b"GET /text/100 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(c.response().body, text_body(100));
    // HTTP/1.0: no chunks, so the end is the close.
    let mut c = Client::connect(server.addr);
    c.send(b"GET /text/50000 HTTP/1.0\r\nHost: app.test\r\nAccept-Encoding: gzip\r\n\r\n");
    let raw = c.read_to_close();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(decode("gzip", &raw[split..]), text_body(50_000));
    // Off in the config: relayed as they are.
    let server = start(
        &site,
        &[("app.test", plain_entry(&up))],
        json!({"compression": {"enabled": false}}),
        &[],
    );
    let r = request(
        server.addr,
        "GET /text/5000 HTTP/1.1\r\nHost: app.test\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("Cookie"));
    assert_eq!(r.body, text_body(5000));
}
