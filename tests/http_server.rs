//! The HTTP engine from outside: the real `reliw serve` on loopback, raw
//! bytes in, exact responses out. Most tests run on both I/O runtimes.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use reliw_tests::server::{Server, Site, get, serve_fails};
use serde_json::json;

const MODES: [&[&str]; 2] = [&["--io", "uring"], &["--io", "epoll"]];

fn site() -> Site {
    let site = Site::new();
    site.file("example.com/index.html", b"<h1>example</h1>")
        .file("example.com/a.txt", b"host a")
        .file("example.com/dir/index.html", b"dir index")
        .file("__/a.txt", b"fallback a")
        .file("__/b.css", b"body{}")
        .file("__/big.bin", &vec![7u8; 300_000])
        .file("__/%2e%2e", b"literal percent name");
    std::fs::write(site.root.join("secret.txt"), b"TOP SECRET").unwrap();
    std::os::unix::fs::symlink(
        site.root.join("secret.txt"),
        site.www().join("example.com/escape"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../../secret.txt", site.www().join("__/up")).unwrap();
    site
}

#[test]
fn serves_files_by_host_with_fallback_on_both_runtimes() {
    for mode in MODES {
        let site = site();
        let server = Server::start(&site, json!({}), mode);
        let r = get(server.addr, "Example.COM:8080", "/a.txt");
        assert_eq!((r.status, r.text().as_str()), (200, "host a"), "{mode:?}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("server"), Some("reliw"));
        assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")));
        assert_eq!(r.header("cache-control"), Some("max-age=86400"));
        assert_eq!(get(server.addr, "other.org", "/a.txt").text(), "fallback a");
        assert_eq!(
            get(server.addr, "example.com", "/").text(),
            "<h1>example</h1>"
        );
        assert_eq!(get(server.addr, "example.com", "/dir/").text(), "dir index");
        assert_eq!(
            get(server.addr, "example.com", "/b.css").header("content-type"),
            Some("text/css; charset=utf-8")
        );
        assert_eq!(get(server.addr, "example.com", "/missing").status, 404);
        let big = get(server.addr, "example.com", "/big.bin");
        assert_eq!(big.body.len(), 300_000);
        assert!(big.body.iter().all(|&b| b == 7));
        assert!(server.log().contains(if mode[1] == "uring" {
            "I/O: io_uring"
        } else {
            "I/O: epoll"
        }));
    }
}

#[test]
fn listens_on_ipv6_too_when_configured() {
    let site = site();
    let server = Server::start(&site, json!({"ipv6": "::1", "workers": 2}), &[]);
    assert_eq!(server.addrs.len(), 2);
    assert!(server.addrs[1].is_ipv6());
    for addr in &server.addrs {
        let r = get(*addr, "example.com", "/a.txt");
        assert_eq!(r.text(), "host a", "{addr}");
    }
}

#[test]
fn traversal_never_reads_outside_the_root() {
    for mode in MODES {
        let site = site();
        let server = Server::start(&site, json!({}), mode);
        for (host, path, want) in [
            ("example.com", "/../secret.txt", 400),
            ("example.com", "/%2e%2e/secret.txt", 400),
            ("example.com", "/%2E%2E/%2E%2E/secret.txt", 400),
            ("example.com", "/..%2fsecret.txt", 400),
            ("example.com", "/..%5csecret.txt", 400),
            ("example.com", "/..\\secret.txt", 400),
            ("example.com", "/a.txt%00.html", 400),
            ("example.com", "/escape", 404),
            ("example.com", "/up", 404),
            ("..", "/secret.txt", 400),
            ("../..", "/secret.txt", 400),
            ("__", "/a.txt", 400),
            ("example.com/..", "/secret.txt", 400),
        ] {
            let r = get(server.addr, host, path);
            assert_eq!(r.status, want, "{host} {path} ({mode:?})");
            assert!(!r.text().contains("TOP SECRET"), "{host} {path} leaked");
        }
        // Double encoding decodes once: a file literally named '%2e%2e'.
        let r = get(server.addr, "example.com", "/%252e%252e");
        assert_eq!(r.text(), "literal percent name");
        // A NUL byte in the raw target is refused by the parser.
        let mut c = server.connect();
        c.send(b"GET /a\0b HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(c.response().status, 400);
    }
}

#[test]
fn smuggling_vectors_get_400_and_close() {
    for mode in MODES {
        let site = site();
        let server = Server::start(&site, json!({}), mode);
        for (what, req) in [
            (
                "CL+TE",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "TE gzip",
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            ),
            (
                "TE chunked, identity",
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            ),
            (
                "two CL",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            ),
            (
                "CL list",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\nab",
            ),
            (
                "CL junk",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\nab",
            ),
            (
                "obs-fold",
                "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n",
            ),
            (
                "space before colon",
                "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n",
            ),
            ("bare CR", "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"),
            (
                "control byte",
                "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
            ),
            ("no Host", "GET / HTTP/1.1\r\n\r\n"),
            (
                "two Hosts",
                "GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n",
            ),
            (
                "absolute-form mismatch",
                "GET http://b.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n",
            ),
        ] {
            let mut c = server.connect();
            // A second request right behind: it must never be answered.
            c.send(req.as_bytes())
                .send(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
            let r = c.response();
            assert_eq!(r.status, 400, "{what} ({mode:?})");
            assert_eq!(r.header("connection"), Some("close"), "{what}");
            assert!(
                c.try_response_to("GET").is_none(),
                "{what}: a request after the bad one was served"
            );
        }
        let mut c = server.connect();
        c.send(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.response().status, 400, "non-ASCII target");
    }
}

#[test]
fn limits_give_the_right_status() {
    let site = site();
    let server = Server::start(
        &site,
        json!({"request_line_limit": 1024, "request_head_limit": 4096, "max_header_count": 20, "max_body_size": 1000}),
        &[],
    );
    let status = |req: String| {
        let mut c = server.connect();
        c.send(req.as_bytes());
        let r = c.response();
        assert_eq!(r.header("connection"), Some("close"));
        r.status
    };
    assert_eq!(
        status(format!(
            "GET /{} HTTP/1.1\r\nHost: h\r\n\r\n",
            "a".repeat(2000)
        )),
        414
    );
    assert_eq!(
        status(format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "a".repeat(2000)
        )),
        431
    );
    let many: String = (0..21).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status(format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n")),
        431
    );
    let big: String = (0..6)
        .map(|i| format!("X-{i}: {}\r\n", "v".repeat(900)))
        .collect();
    assert_eq!(
        status(format!("GET / HTTP/1.1\r\nHost: h\r\n{big}\r\n")),
        431
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n".into()),
        413
    );
    assert_eq!(status("BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n".into()), 501);
    assert_eq!(status("GET / HTTP/3.0\r\nHost: h\r\n\r\n".into()), 505);
}

/// A head and a chunked body that arrive in pieces (one read each, 2 ms
/// apart) are put together, not overwritten by the next piece: the
/// io_uring transport once read every piece to the start of the buffer.
#[test]
fn requests_that_arrive_in_pieces_are_read_whole() {
    for mode in MODES {
        let site = site();
        let server = Server::start(&site, json!({}), mode);
        let mut c = server.connect();
        let pieces: [&[u8]; 4] = [
            b"GET /a",
            b".txt HTTP/1.1\r\nHo",
            b"st: example.com\r\n",
            b"\r\n",
        ];
        for piece in pieces {
            c.send(piece);
            std::thread::sleep(Duration::from_millis(2));
        }
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "host a"), "{mode:?}");
        // Byte by byte, a chunk-size line and the chunk included.
        let request = b"POST /a.txt HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        for byte in request {
            c.send(std::slice::from_ref(byte));
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = c.response();
        assert_eq!(r.status, 405, "{mode:?}: the whole request was read");
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(c.response().text(), "host a", "{mode:?}");
    }
}

#[test]
fn chunked_uploads_within_and_over_the_limit() {
    for mode in MODES {
        let site = site();
        let server = Server::start(&site, json!({"max_body_size": 1000}), mode);
        // Within: decoded and discarded, 405 for a static file, and the
        // connection goes on with the next pipelined request.
        let mut c = server.connect();
        c.send(b"POST /a.txt HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..9 {
            c.send(b"64;ext=1\r\n");
            c.send(&[b'x'; 100]);
            c.send(b"\r\n");
        }
        c.send(b"0\r\nTrailer: yes\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 405, "{mode:?}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert_eq!(c.response().text(), "host a");
        // Over: cumulative chunk sizes past the limit, 413 and close.
        let mut c = server.connect();
        c.send(b"POST /a.txt HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..11 {
            c.send(b"64\r\n");
            c.send(&[b'x'; 100]);
            c.send(b"\r\n");
        }
        let r = c.response();
        assert_eq!(r.status, 413, "{mode:?}");
        assert!(c.closed_within(Duration::from_secs(2)));
    }
}

#[test]
fn pipelined_responses_come_back_in_order() {
    for mode in MODES {
        let site = site();
        let server = Server::start(&site, json!({}), mode);
        let mut c = server.connect();
        let mut batch = Vec::new();
        let paths = ["/a.txt", "/missing", "/b.css", "/big.bin", "/", "/a.txt"];
        for p in paths {
            batch.extend_from_slice(
                format!("GET {p} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes(),
            );
        }
        batch.extend_from_slice(b"HEAD /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
        c.send(&batch);
        let statuses: Vec<(u16, usize)> = paths
            .iter()
            .map(|_| {
                let r = c.response();
                (r.status, r.body.len())
            })
            .collect();
        assert_eq!(
            statuses,
            [
                (200, 6),
                (404, 14),
                (200, 6),
                (200, 300_000),
                (200, 16),
                (200, 6)
            ],
            "{mode:?}"
        );
        let head = c.response_to("HEAD");
        assert_eq!(head.header("content-length"), Some("6"));
        assert!(head.body.is_empty());
    }
}

#[test]
fn keep_alive_rules_for_http_1_0_and_1_1() {
    let site = site();
    let server = Server::start(&site, json!({"max_requests_per_connection": 3}), &[]);
    // 1.0 without keep-alive: close after the response.
    let mut c = server.connect();
    c.send(b"GET /a.txt HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c.closed_within(Duration::from_secs(2)));
    // 1.0 asking for keep-alive: kept, and said so.
    let mut c = server.connect();
    c.send(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().header("connection"), Some("keep-alive"));
    c.send(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().status, 200);
    // 1.1 with Connection: close.
    let mut c = server.connect();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(c.response().header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(2)));
    // 1.1 default: kept until max_requests_per_connection.
    let mut c = server.connect();
    for i in 1..=3 {
        let r = c.get("example.com", "/a.txt");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("connection"),
            if i < 3 { None } else { Some("close") },
            "request {i}"
        );
    }
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn expect_100_continue() {
    let site = site();
    let server = Server::start(&site, json!({}), &[]);
    let mut c = server.connect();
    c.send(b"PUT /a.txt HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response();
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    assert_eq!(c.response().status, 405);
}

#[test]
fn conditional_and_range_requests() {
    let site = site();
    let server = Server::start(&site, json!({}), &[]);
    let first = get(server.addr, "example.com", "/a.txt");
    let etag = first.header("etag").unwrap().to_owned();
    let last_modified = first.header("last-modified").unwrap().to_owned();
    let mut c = server.connect();
    let mut ask = |req: String, method: &str| {
        c.send(req.as_bytes());
        c.response_to(method)
    };
    let r = ask(
        format!("GET /a.txt HTTP/1.1\r\nHost: example.com\r\nIf-None-Match: {etag}\r\n\r\n"),
        "GET",
    );
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = ask(
        format!(
            "GET /a.txt HTTP/1.1\r\nHost: example.com\r\nIf-None-Match: \"other\", W/{etag}\r\n\r\n"
        ),
        "GET",
    );
    assert_eq!(r.status, 304, "weak comparison in a list");
    let r = ask(
        format!("HEAD /a.txt HTTP/1.1\r\nHost: example.com\r\nIf-None-Match: {etag}\r\n\r\n"),
        "HEAD",
    );
    assert_eq!(r.status, 200, "304 is for GET only");
    assert_eq!(r.header("content-length"), Some("6"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = ask(
        format!(
            "GET /a.txt HTTP/1.1\r\nHost: example.com\r\nIf-Modified-Since: {last_modified}\r\n\r\n"
        ),
        "GET",
    );
    assert_eq!(r.status, 304);
    let r = ask("GET /a.txt HTTP/1.1\r\nHost: example.com\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n".into(), "GET");
    assert_eq!(r.status, 200);
    let r = ask(
        "GET /a.txt HTTP/1.1\r\nHost: example.com\r\nRange: bytes=1-3\r\n\r\n".into(),
        "GET",
    );
    assert_eq!((r.status, r.text().as_str()), (206, "ost"));
    assert_eq!(r.header("content-range"), Some("bytes 1-3/6"));
    let r = ask(
        "GET /big.bin HTTP/1.1\r\nHost: example.com\r\nRange: bytes=-10\r\n\r\n".into(),
        "GET",
    );
    assert_eq!((r.status, r.body.len()), (206, 10));
    assert_eq!(
        r.header("content-range"),
        Some("bytes 299990-299999/300000")
    );
    let r = ask(
        "GET /a.txt HTTP/1.1\r\nHost: example.com\r\nRange: bytes=6-\r\n\r\n".into(),
        "GET",
    );
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */6"));
    let r = ask(
        "GET /a.txt HTTP/1.1\r\nHost: example.com\r\nRange: bytes=0-1\r\nIf-Range: \"stale\"\r\n\r\n".to_string(),
        "GET",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "host a"),
        "If-Range mismatch sends the whole file"
    );
    // A change on disk shows at once with revalidation on every request.
    drop(c);
    let server2 = Server::start(&site, json!({"cache_revalidate_ms": 0}), &[]);
    assert_eq!(get(server2.addr, "example.com", "/a.txt").text(), "host a");
    site.file("example.com/a.txt", b"host a, edited");
    let r = get(server2.addr, "example.com", "/a.txt");
    assert_eq!(r.text(), "host a, edited");
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

#[test]
fn slowloris_is_cut_at_the_header_timeout() {
    let site = site();
    let server = Server::start(&site, json!({"request_header_timeout": 2}), &[]);
    let mut c = server.connect();
    let started = Instant::now();
    let mut got_408 = false;
    for b in b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nX-Slow: "
        .iter()
        .cycle()
        .take(10)
    {
        if std::io::Write::write_all(&mut c.stream, &[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    if let Some(r) = c.try_response_to("GET") {
        got_408 = r.status == 408;
        assert_eq!(r.header("connection"), Some("close"));
    }
    assert!(got_408, "expected 408 for a head that never ends");
    assert!(c.closed_within(Duration::from_secs(2)));
    let cut = started.elapsed();
    assert!(
        cut >= Duration::from_millis(1900) && cut < Duration::from_secs(4),
        "cut after {cut:?}"
    );
}

#[test]
fn idle_and_body_timeouts() {
    let site = site();
    let server = Server::start(
        &site,
        json!({"keepalive_idle_timeout": 1, "request_body_timeout": 1}),
        &[],
    );
    let mut c = server.connect();
    assert_eq!(c.get("example.com", "/a.txt").status, 200);
    let t = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(3)),
        "idle connection kept open"
    );
    assert!(t.elapsed() >= Duration::from_millis(900));
    // A body that stops arriving: 408, then close.
    let mut c = server.connect();
    c.send(b"POST /a.txt HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nabc");
    let r = c.response();
    assert_eq!(r.status, 408);
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn connection_cap_answers_503() {
    let site = site();
    let server = Server::start(&site, json!({"max_connections": 2}), &[]);
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.get("example.com", "/a.txt").status, 200);
    assert_eq!(b.get("example.com", "/a.txt").status, 200);
    let mut third = server.connect();
    let r = third.response();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    drop(a);
    // The slot comes back once a connection ends.
    let ok = reliw_tests::wait_until(Duration::from_secs(3), || {
        get(server.addr, "example.com", "/a.txt").status == 200
    });
    assert!(ok);
    assert!(server.log().contains("connection limit reached"));
    drop(b);
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight() {
    for mode in MODES {
        let site = site();
        let mut server = Server::start(&site, json!({"shutdown_grace": 5}), mode);
        let mut idle = server.connect();
        assert_eq!(idle.get("example.com", "/a.txt").status, 200);
        let mut busy = server.connect();
        busy.send(b"PUT /a.txt HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nab");
        std::thread::sleep(Duration::from_millis(100));
        server.send_signal(rustix::process::Signal::TERM);
        // The idle connection goes at once; the new listener is closed.
        assert!(
            idle.closed_within(Duration::from_secs(2)),
            "idle connection survived shutdown ({mode:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            std::net::TcpStream::connect(server.addr).is_err(),
            "still accepting after SIGTERM"
        );
        // The request in flight completes, with Connection: close.
        busy.send(b"cd");
        let r = busy.response();
        assert_eq!(r.status, 405);
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(
            server.signal_and_wait(rustix::process::Signal::TERM, Duration::from_secs(5)),
            Some(0)
        );
    }
}

#[test]
fn no_fd_is_leaked_by_bad_or_abandoned_connections() {
    let site = site();
    let server = Server::start(&site, json!({}), &[]);
    let _ = get(server.addr, "example.com", "/a.txt");
    let _ = get(server.addr, "example.com", "/big.bin");
    let before = server.fd_count();
    for i in 0..200 {
        let mut c = server.connect();
        match i % 4 {
            0 => {
                c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
                let _ = c.try_response_to("GET");
            }
            1 => {
                c.send(b"GET /big.bin HTTP/1.1\r\nHost: example.com\r\n\r\n");
            }
            2 => {
                c.send(b"GET /../../x HTTP/1.1\r\nHost: e\r\n\r\n");
                let _ = c.try_response_to("GET");
            }
            _ => {
                c.send(b"GET /a.tx");
            }
        }
    }
    let settled = reliw_tests::wait_until(Duration::from_secs(5), || server.fd_count() <= before);
    assert!(settled, "fds grew from {before} to {}", server.fd_count());
}

#[test]
fn config_errors_fail_start_up_naming_the_key() {
    let site = site();
    for (text, needle) in [
        (
            r#"{"prot": 8080}"#,
            "'prot' is unknown (did you mean 'port'?)",
        ),
        (r#"{"port": "http"}"#, "'port'"),
        (
            r#"{"keepalive_idle_timeout": 0}"#,
            "'keepalive_idle_timeout'",
        ),
        (
            r#"{"metrics": {"scan_count": "many"}}"#,
            "metrics.scan_count",
        ),
        (
            r#"{"ssl": {"default": {"cert": "/nonexistent.pem", "key": "/nonexistent.key"}}}"#,
            "ssl.default.cert",
        ),
        ("{not json", "config"),
    ] {
        let (code, stderr) = serve_fails(text, &site.root);
        assert_eq!(code, 1, "{text}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn sighup_reloads_and_keeps_the_old_config_when_the_new_one_is_bad() {
    let site = site();
    let server = Server::start(&site, json!({"max_requests_per_connection": 1}), &[]);
    let mut c = server.connect();
    assert_eq!(
        c.get("example.com", "/a.txt").header("connection"),
        Some("close")
    );
    // A broken file: the old config stays.
    std::fs::write(site.root.join("config.json"), "{broken").unwrap();
    server.send_signal(rustix::process::Signal::HUP);
    assert!(reliw_tests::wait_until(Duration::from_secs(3), || server
        .log()
        .contains("keeping the old config")));
    let mut c = server.connect();
    assert_eq!(
        c.get("example.com", "/a.txt").header("connection"),
        Some("close")
    );
    // A good one takes effect for new connections; a start-up key it
    // changes keeps its running value, and the log names it.
    let config = json!({"port": 0, "data_dir": site.www(), "workers": 1,
        "max_requests_per_connection": 5, "cache_total_size": 1_000_000});
    std::fs::write(site.root.join("config.json"), config.to_string()).unwrap();
    server.send_signal(rustix::process::Signal::HUP);
    assert!(reliw_tests::wait_until(Duration::from_secs(3), || server
        .log()
        .contains("config reloaded")));
    let log = server.log();
    let warning = log
        .lines()
        .find(|l| l.contains("change only on restart"))
        .unwrap_or_else(|| panic!("no restart warning: {log}"));
    assert!(warning.contains("cache_total_size"), "{warning}");
    assert!(
        !warning.contains("max_requests_per_connection"),
        "{warning}"
    );
    let mut c = server.connect();
    assert_eq!(c.get("example.com", "/a.txt").header("connection"), None);
}

/// Tests that need root: `cargo xtask test` skips them by this module
/// name when `RELIW_SKIP_PRIVILEGED=1`.
mod privileged {
    use super::*;

    /// Sets a sysctl for the test's duration; restores it on drop.
    struct Sysctl {
        path: &'static str,
        old: String,
    }

    impl Sysctl {
        fn set(path: &'static str, value: &str) -> Self {
            let old = std::fs::read_to_string(path).unwrap();
            std::fs::write(path, value).unwrap();
            Self { path, old }
        }
    }

    impl Drop for Sysctl {
        fn drop(&mut self) {
            let _ = std::fs::write(self.path, self.old.trim());
        }
    }

    /// With `kernel.io_uring_disabled=1`, only CAP_SYS_ADMIN may set up
    /// io_uring; reliw started without that capability must notice, say
    /// so, and serve through epoll. (Other tests run as root with the
    /// capability, so they are not affected meanwhile.)
    #[test]
    fn io_uring_refused_falls_back_to_epoll() {
        reliw_tests::require_privileges();
        let site = site();
        let _restricted = Sysctl::set("/proc/sys/kernel/io_uring_disabled", "1");
        let server = Server::start_wrapped(
            &site,
            json!({}),
            &[],
            &[
                "setpriv",
                "--bounding-set=-sys_admin",
                "--inh-caps=-sys_admin",
            ],
        );
        let r = get(server.addr, "example.com", "/a.txt");
        assert_eq!(r.text(), "host a");
        let log = server.log();
        assert!(log.contains("io_uring unavailable; I/O: epoll"), "{log}");
        // Asking for io_uring outright is an error, not a silent fallback.
        let out = std::process::Command::new("setpriv")
            .args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin"])
            .arg(reliw_tests::reliw_bin())
            .args(["serve", "--io", "uring"])
            .env("RELIW_CONFIG_FILE", site.root.join("config.json"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("io_uring is not available"));
    }
}
