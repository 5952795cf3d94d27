//! HTTP/2, black-box: the real binary spoken to by the `h2` crate's client
//! over TLS (ALPN) and h2c, and by a frame-level client that floods,
//! stalls and misbehaves. The site pipeline over h2 runs in `site.rs`
//! (`the_pipeline_over_http2`); here: negotiation, file bodies within flow
//! control, the proxy, and the hardening cases with their counters.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use reliw_tests::h2::{H2, Raw, Req, frame, get_block, kind};
use reliw_tests::server::{Server, Site};
use reliw_tests::tls::TestCa;
use reliw_tests::upstream::{Upstream, checksum, pattern};
use reliw_tests::{decode, wait_until};
use serde_json::{Value, json};

const ENHANCE_YOUR_CALM: u32 = 0xb;
const NO_ERROR: u32 = 0x0;

fn big(n: usize) -> Vec<u8> {
    (0..n as u64).map(pattern).collect()
}

fn site() -> Site {
    let site = Site::new();
    let page: String = (0..4000).map(|i| format!("<p>line {i}</p>\n")).collect();
    site.file("__/index.html", b"<p>hello over h2</p>\n")
        .file("__/big.bin", &big(3 << 20))
        .file("__/page.html", page.as_bytes());
    site
}

fn h2c_server(site: &Site, extra: Value) -> Server {
    let mut config = json!({"http2": {"h2c": true}});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    Server::start(site, config, &[])
}

fn alpn_client(ca: &TestCa, protocols: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut config = (*ca.client(&[&rustls::version::TLS13])).clone();
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    std::sync::Arc::new(config)
}

#[test]
fn tls_clients_that_offer_h2_get_it_and_others_keep_http1() {
    let site = site();
    let ca = TestCa::new();
    let leaf = ca.leaf(&site.root, "a", &["a.test"], false);
    let ssl = json!({"default": {"cert": leaf.cert, "key": leaf.key}});
    let server = Server::start(&site, json!({"ssl": ssl, "request_header_timeout": 1}), &[]);
    let addr = server.tls_addrs[0];

    // h2 chosen, then not even the preface: closed after the header timeout.
    let silent = reliw_tests::tls::connect(addr, "a.test", alpn_client(&ca, &[b"h2"])).unwrap();
    assert_eq!(silent.conn.alpn_protocol(), Some(&b"h2"[..]));
    let counted = wait_until(Duration::from_secs(5), || {
        server.metric("reliw_http2_closed_total{reason=\"handshake_timeout\"}") == 1.0
    });
    assert!(counted, "{}", server.log());
    drop(silent);

    let mut h2 = H2::tls(addr, "a.test", alpn_client(&ca, &[b"h2", b"http/1.1"]))
        .expect("h2 chosen when offered");
    let r = h2.request(&Req::get("a.test", "/index.html")).unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "<p>hello over h2</p>\n")
    );
    assert_eq!(r.header("content-length"), Some("21"));
    assert_eq!(r.header("server"), Some("reliw"));
    assert!(r.header("connection").is_none());
    // A body far larger than the initial window, read whole and intact.
    let r = h2.request(&Req::get("a.test", "/big.bin")).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == big(3 << 20), "3 MiB arrive in order");

    let old = alpn_client(&ca, &[b"http/1.1"]);
    assert!(
        H2::tls(addr, "a.test", old).is_none(),
        "http/1.1 only: no h2"
    );
    let mut tls =
        reliw_tests::tls::connect(addr, "a.test", ca.client(&[&rustls::version::TLS13])).unwrap();
    assert_eq!(
        reliw_tests::tls::get(&mut tls, "a.test", "/index.html").0,
        200
    );

    let off = Server::start(
        &site,
        json!({"ssl": {"default": {"cert": leaf.cert, "key": leaf.key}}, "http2": {"enabled": false}}),
        &[],
    );
    let offered = alpn_client(&ca, &[b"h2", b"http/1.1"]);
    assert!(H2::tls(off.tls_addrs[0], "a.test", offered).is_none());
    assert_eq!(server.metric("reliw_http2_connections_total"), 1.0);
}

#[test]
fn files_over_h2_ranges_validators_compression_and_many_streams() {
    let site = site();
    let server = h2c_server(&site, json!({}));
    let mut c = H2::h2c(server.addr);

    let range = Req {
        headers: "Range: bytes=100-199\r\n",
        ..Req::get("localhost", "/big.bin")
    };
    let r = c.request(&range).unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/3145728"));
    assert_eq!(r.body, big(200)[100..]);

    let first = c.request(&Req::get("localhost", "/index.html")).unwrap();
    let etag = first.header("etag").unwrap().to_owned();
    let inm = format!("If-None-Match: {etag}\r\n");
    let again = Req {
        headers: &inm,
        ..Req::get("localhost", "/index.html")
    };
    let r = c.request(&again).unwrap();
    assert_eq!((r.status, r.body.len()), (304, 0));

    let head = Req {
        method: "HEAD",
        ..Req::get("localhost", "/big.bin")
    };
    let r = c.request(&head).unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some("3145728"));

    for coding in ["gzip", "br", "zstd"] {
        let ae = format!("Accept-Encoding: {coding}\r\n");
        let req = Req {
            headers: &ae,
            ..Req::get("localhost", "/page.html")
        };
        let r = c.request(&req).unwrap();
        assert_eq!(r.header("content-encoding"), Some(coding));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let page = std::fs::read(site.www().join("__/page.html")).unwrap();
        assert_eq!(decode(coding, &r.body), page);
    }
    let refuse = Req {
        headers: "Accept-Encoding: identity;q=0\r\n",
        ..Req::get("localhost", "/page.html")
    };
    assert_eq!(c.request(&refuse).unwrap().status, 406);

    // 100 streams at once on one connection (the limit is 128): the
    // large ones share the connection window, all complete intact.
    let mut reqs = Vec::new();
    for i in 0..100 {
        reqs.push(if i % 10 == 0 {
            Req::get("localhost", "/big.bin")
        } else {
            Req::get("localhost", "/index.html")
        });
    }
    let started = Instant::now();
    for (i, r) in c.concurrent(&reqs).into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        if i % 10 == 0 {
            assert!(r.body.len() == 3 << 20 && r.body == big(3 << 20));
        } else {
            assert_eq!(r.text(), "<p>hello over h2</p>\n");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // The access log has each stream.
    let log = server.log();
    assert!(log.matches("path=\"/index.html\"").count() >= 92, "{log}");
}

fn proxy_server(site: &Site, up: &Upstream, extra: Value) -> Server {
    let file = site.root.join("site.json");
    let entry = json!({"target": "127.0.0.1", "port": up.port()}).to_string();
    // Nothing listens on the discard port.
    let down = json!({"target": "127.0.0.1", "port": 9}).to_string();
    let data = json!({ "P:PROXY:app.test": entry, "P:PROXY:down.test": down });
    std::fs::write(&file, data.to_string()).unwrap();
    let mut config = json!({
        "store": {"backend": "memory", "site_file": file},
        "redis": {"prefix": "P"},
        "http2": {"h2c": true},
        "proxy": {"response_timeout_ms": 1500, "read_timeout_ms": 1500},
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    Server::start(site, config, &[])
}

#[test]
fn the_proxy_forwards_h2_streams_to_http1_upstreams() {
    let site = Site::new();
    let up = Upstream::plain();
    let server = proxy_server(&site, &up, json!({}));
    let mut c = H2::h2c(server.addr);

    let r = c.request(&Req::get("app.test", "/hello")).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok /hello"));
    let seen = up.last();
    let upstream_host = format!("127.0.0.1:{}", up.port());
    assert_eq!(seen.header("host"), Some(upstream_host));
    assert_eq!(seen.header("x-forwarded-host").as_deref(), Some("app.test"));

    // A body of unknown length goes up chunked, whole; a large answer
    // comes back within the client's window.
    let body: Vec<u8> = (0..2_000_000u64).map(|i| (i * 7 % 256) as u8).collect();
    let upload = Req {
        method: "POST",
        body: &body,
        ..Req::get("app.test", "/upload")
    };
    let r = c.request(&upload).unwrap();
    assert_eq!(r.status, 200, "{}", server.log());
    assert_eq!(r.text(), format!("{} {}", body.len(), checksum(0, &body)));
    let r = c.request(&Req::get("app.test", "/big/5000000")).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body.len() == 5_000_000
            && r.body
                .iter()
                .enumerate()
                .all(|(i, b)| *b == pattern(i as u64))
    );
    // Chunked answers lose their framing, not their bytes.
    let r = c.request(&Req::get("app.test", "/chunked")).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("transfer-encoding").is_none());
    assert!(!r.body.is_empty());

    // An answer cut mid-body resets the stream, not the connection.
    let cut = c.request(&Req::get("app.test", "/bad-chunk"));
    assert!(cut.is_err(), "{cut:?}");
    assert_eq!(
        c.request(&Req::get("app.test", "/after")).unwrap().status,
        200
    );

    // An upstream that is down: the 502 page, on h2 as on HTTP/1.1.
    let r = c.request(&Req::get("down.test", "/gone")).unwrap();
    assert_eq!(r.status, 502);
    assert!(server.metric("reliw_http2_stream_resets_total{reason=\"upstream_cut\"}") >= 1.0);
}

/// Sends `prelude`, then frames `one` as fast as the socket takes them,
/// then expects a GOAWAY with ENHANCE_YOUR_CALM and the connection closed.
fn flood(server: &Server, what: &str, prelude: &[u8], one: &[u8]) {
    let mut raw = Raw::connect(server.addr);
    raw.send_bytes(prelude);
    let mut burst = Vec::new();
    for _ in 0..200 {
        burst.extend_from_slice(one);
    }
    for _ in 0..50 {
        if !raw.send_bytes(&burst) {
            break;
        }
    }
    assert_eq!(
        raw.goaway(Duration::from_secs(5)),
        Some(ENHANCE_YOUR_CALM),
        "{what}: {}",
        server.log()
    );
    assert!(raw.closed_within(Duration::from_secs(3)), "{what}");
    let series = format!("reliw_http2_closed_total{{reason=\"flood_{what}\"}}");
    assert_eq!(server.metric(&series), 1.0, "{what}");
}

#[test]
fn floods_get_a_goaway_and_a_counter() {
    let site = site();
    let server = h2c_server(&site, json!({"http2": {"h2c": true, "flood_limit": 100}}));
    flood(&server, "ping", &[], &frame(kind::PING, 0, 0, &[0; 8]));
    flood(&server, "settings", &[], &frame(kind::SETTINGS, 0, 0, &[]));
    // Empty DATA frames on an open stream (a POST whose body never comes).
    let post = frame(
        kind::HEADERS,
        0x4,
        1,
        &get_block("localhost", "/index.html", "POST"),
    );
    flood(
        &server,
        "empty_frames",
        &post,
        &frame(kind::DATA, 0, 1, &[]),
    );
    // Rapid reset: open a stream and cancel it, again and again.
    let mut resets = Vec::new();
    for id in (1..400u32).step_by(2) {
        resets.extend(frame(
            kind::HEADERS,
            0x5,
            id,
            &get_block("localhost", "/", "GET"),
        ));
        resets.extend(frame(kind::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let mut raw = Raw::connect(server.addr);
    raw.send_bytes(&resets);
    assert_eq!(raw.goaway(Duration::from_secs(5)), Some(ENHANCE_YOUR_CALM));
    assert!(raw.closed_within(Duration::from_secs(3)));
    let resets_seen = server.metric("reliw_http2_closed_total{reason=\"flood_reset\"}")
        + server.metric("reliw_http2_closed_total{reason=\"enhance_your_calm\"}");
    assert_eq!(resets_seen, 1.0, "{}", server.log());

    // CONTINUATION flood: a header block that never ends (the codec's own
    // bound per block, max(5, list size / frame size + 25%), answers it).
    let calm = || {
        server.metric("reliw_http2_closed_total{reason=\"enhance_your_calm\"}")
            + server.metric("reliw_http2_closed_total{reason=\"flood_continuation\"}")
    };
    let calm_before = calm();
    let mut raw = Raw::connect(server.addr);
    raw.send(kind::HEADERS, 0x1, 1, &get_block("localhost", "/", "GET"));
    for _ in 0..100 {
        if !raw.send(kind::CONTINUATION, 0, 1, &[0x40, 1, b'x', 1, b'y']) {
            break;
        }
    }
    assert_eq!(raw.goaway(Duration::from_secs(5)), Some(ENHANCE_YOUR_CALM));
    assert_eq!(calm() - calm_before, 1.0, "{}", server.log());

    // Other clients were served all along.
    let r = H2::h2c(server.addr)
        .request(&Req::get("localhost", "/index.html"))
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(server.log().contains("HTTP/2 flood"));
}

#[test]
fn limits_and_timeouts_end_streams_and_connections() {
    let site = site();
    let server = h2c_server(
        &site,
        json!({
            "http2": {"h2c": true, "max_concurrent_streams": 8, "max_header_list_size": 4096},
            "request_body_timeout": 1,
            "keepalive_idle_timeout": 1,
            "request_header_timeout": 1,
        }),
    );

    // The server's SETTINGS carry the limits.
    let mut raw = Raw::connect(server.addr);
    let settings = raw.frame(Duration::from_secs(2)).unwrap();
    assert_eq!(settings.kind, kind::SETTINGS);
    let params: Vec<(u16, u32)> = settings
        .payload
        .chunks(6)
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes(p[2..6].try_into().unwrap()),
            )
        })
        .collect();
    assert!(params.contains(&(0x3, 8)), "{params:?}");
    assert!(params.contains(&(0x6, 4096)), "{params:?}");

    // A stream whose body never comes: 408 after request_body_timeout.
    raw.get(1, "/index.html", true);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answered = false;
    while Instant::now() < deadline && !answered {
        if let Some(f) = raw.frame(Duration::from_millis(500)) {
            answered = f.kind == kind::HEADERS && f.stream == 1;
        }
    }
    assert!(answered, "{}", server.log());
    assert!(server.log().contains("status=408"), "{}", server.log());
    assert_eq!(
        server.metric("reliw_http2_stream_resets_total{reason=\"body_timeout\"}"),
        1.0
    );
    // Then idle: a GOAWAY (NO_ERROR) after keepalive_idle_timeout.
    assert_eq!(raw.goaway(Duration::from_secs(5)), Some(NO_ERROR));
    assert!(raw.closed_within(Duration::from_secs(5)));
    assert!(server.metric("reliw_http2_closed_total{reason=\"idle\"}") >= 1.0);

    // Past max_concurrent_streams a stream is refused (REFUSED_STREAM, safe
    // to retry), the others served; the connection carries on.
    let mut c = H2::h2c(server.addr);
    let reqs: Vec<Req> = (0..20).map(|_| Req::get("localhost", "/big.bin")).collect();
    let mut served = 0;
    for r in c.concurrent(&reqs) {
        match r {
            Ok(r) => {
                assert_eq!(r.status, 200);
                served += 1;
            }
            Err(e) => assert_eq!(e.reason(), Some(h2::Reason::REFUSED_STREAM), "{e}"),
        }
    }
    assert!(served >= 8, "{served}");
    assert_eq!(
        c.request(&Req::get("localhost", "/index.html"))
            .unwrap()
            .status,
        200
    );

    // A header list over max_header_list_size: refused, connection alive.
    let huge = format!("X-Big: {}\r\n", "a".repeat(8000));
    let req = Req {
        headers: &huge,
        ..Req::get("localhost", "/index.html")
    };
    let refused = c.request(&req);
    assert!(
        refused.as_ref().is_err() || refused.as_ref().unwrap().status == 431,
        "{refused:?}"
    );
    assert_eq!(
        c.request(&Req::get("localhost", "/index.html"))
            .unwrap()
            .status,
        200
    );

    // A client that sends the preface and nothing more is idle: closed.
    let mut quiet = Raw::connect(server.addr);
    assert_eq!(quiet.goaway(Duration::from_secs(5)), Some(NO_ERROR));
}

#[test]
fn h2c_is_off_unless_configured() {
    let site = site();
    let server = Server::start(&site, json!({}), &[]);
    let mut raw = Raw::connect(server.addr);
    assert!(raw.goaway(Duration::from_secs(2)).is_none());
    assert!(raw.closed_within(Duration::from_secs(2)));
    // HTTP/1.1 on the same port is untouched by h2c being on.
    let on = h2c_server(&site, json!({}));
    let r = reliw_tests::server::get(on.addr, "localhost", "/index.html");
    assert_eq!(r.status, 200);
}

#[test]
fn the_epoll_runtime_serves_h2_too() {
    let site = site();
    let ca = TestCa::new();
    let leaf = ca.leaf(&site.root, "a", &["a.test"], false);
    let config = json!({
        "ssl": {"default": {"cert": leaf.cert, "key": leaf.key}, "port": 0},
        "http2": {"h2c": true},
    });
    let server = Server::start(&site, config, &["--io", "epoll"]);
    assert!(server.log().contains("epoll"), "{}", server.log());
    let mut tls = H2::tls(server.tls_addrs[0], "a.test", alpn_client(&ca, &[b"h2"])).unwrap();
    let mut plain = H2::h2c(server.addr);
    for c in [&mut tls, &mut plain] {
        let reqs: Vec<Req> = (0..10).map(|_| Req::get("a.test", "/big.bin")).collect();
        for r in c.concurrent(&reqs) {
            let r = r.unwrap();
            assert!(r.status == 200 && r.body == big(3 << 20));
        }
    }
}
