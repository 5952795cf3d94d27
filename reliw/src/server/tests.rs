//! The connection driver and the site pipeline, in process (see
//! `harness`): exact answers, virtual time.

use std::time::Duration;

use super::harness::{Harness, TempSite, run};
use crate::store::Store as _;

const SITE: &str = r#"{
    "RLW:API:site.test": [
        ["/", "home", true],
        ["/limited", "limited", true],
        ["^/static/", "static"]
    ],
    "RLW:API:site.test:home": {"methods": {"GET": true}, "file": "index.txt"},
    "RLW:API:site.test:limited": {"methods": {"GET": true}, "file": "index.txt",
        "rate_limit": {"GET": {"limit": 2, "period": 60}}},
    "RLW:API:site.test:static": {"methods": {"GET": true}, "cache_control": "max-age=60"},
    "RLW:WAF": {"site.test": {"headers": {"user-agent": ["sqlmap"]}}}
}"#;

fn files() -> TempSite {
    TempSite::new(&[
        ("site.test/index.txt", "hello from the harness\n"),
        ("site.test/static/a.css", "body{}\n"),
    ])
}

fn harness(site: &TempSite) -> Harness {
    Harness::new(Harness::config(&site.dir), SITE)
}

#[test]
fn a_routed_get_is_served_from_the_store_route() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut c = h.connect();
        let r = c.get("site.test", "/").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "hello from the harness\n");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        let r = c.get("site.test", "/nowhere").await;
        assert_eq!(r.status, 404);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        c.finished().await;
    });
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut c = h.connect();
        c.send(
            b"GET /static/a.css HTTP/1.1\r\nHost: site.test\r\n\r\n\
              HEAD / HTTP/1.1\r\nHost: site.test\r\n\r\n\
              GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        let css = c.reply(false).await.expect("first");
        assert_eq!((css.status, css.text().as_str()), (200, "body{}\n"));
        assert_eq!(css.header("cache-control"), Some("max-age=60"));
        let head = c.reply(true).await.expect("second");
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some("23"),
            "HEAD keeps the length"
        );
        let last = c.reply(false).await.expect("third");
        assert_eq!(last.text(), "hello from the harness\n");
        assert_eq!(last.header("connection"), Some("close"));
        assert!(c.closed().await, "closed after Connection: close");
        c.finished().await;
    });
}

#[test]
fn a_head_that_never_ends_gets_408_after_the_header_timeout() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut c = h.connect();
        let start = tokio::time::Instant::now();
        c.send(b"GET / HTTP/1.1\r\nHost: site").await;
        let r = c.reply(false).await.expect("a 408");
        assert_eq!(r.status, 408);
        let waited = start.elapsed();
        assert!(
            (Duration::from_secs(10)..Duration::from_secs(11)).contains(&waited),
            "408 after request_header_timeout (10 s), not {waited:?}"
        );
        assert!(c.closed().await);
        c.finished().await;
    });
}

#[test]
fn a_slow_head_is_timed_from_its_first_byte_not_per_read() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut c = h.connect();
        let start = tokio::time::Instant::now();
        // One byte every 2 s: each read is quick, the head is not.
        for b in b"GET / HTTP/1.1\r\n" {
            c.send(&[*b]).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            if start.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let r = c.reply(false).await.expect("a 408");
        assert_eq!(r.status, 408);
        assert!(start.elapsed() < Duration::from_secs(13));
        c.finished().await;
    });
}

#[test]
fn an_idle_connection_closes_quietly_after_the_keep_alive_timeout() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut c = h.connect();
        assert_eq!(c.get("site.test", "/").await.status, 200);
        let start = tokio::time::Instant::now();
        assert!(c.closed().await, "closed with no bytes");
        let waited = start.elapsed();
        assert!(
            (Duration::from_secs(15)..Duration::from_secs(16)).contains(&waited),
            "closed after keepalive_idle_timeout (15 s), not {waited:?}"
        );
        c.finished().await;
    });
}

#[test]
fn shutdown_closes_idle_connections_and_lets_a_request_in_flight_finish() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut idle = h.connect();
        assert_eq!(idle.get("site.test", "/").await.status, 200);
        let mut busy = h.connect();
        busy.send(b"GET / HTTP/1.1\r\nHost: site.test\r\n").await;
        // Let the server read the first bytes: from then on it is a
        // request in flight, not an idle connection.
        tokio::time::sleep(Duration::from_millis(10)).await;
        h.shut_down();
        assert!(idle.closed().await, "an idle connection closes at once");
        busy.send(b"\r\n").await;
        let r = busy.reply(false).await.expect("the request in flight");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        idle.finished().await;
        busy.finished().await;
    });
}

#[test]
fn a_bad_head_gets_400_and_the_connection_closes() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut c = h.connect();
        c.send(b"GET / HTTP/1.1\r\nHost: site.test\r\nBad Header\r\n\r\n")
            .await;
        let r = c.reply(false).await.expect("a 400");
        assert_eq!(r.status, 400);
        assert!(c.closed().await);
        c.finished().await;
    });
}

#[test]
fn a_waf_hit_is_refused_and_bans_the_client() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let peer = "198.18.0.77:5000".parse().expect("an address");
        let mut c = h.connect_from(peer);
        c.send(b"GET / HTTP/1.1\r\nHost: site.test\r\nUser-Agent: sqlmap/1.7\r\n\r\n")
            .await;
        let r = c.reply(false).await.expect("a refusal");
        assert_eq!(r.status, 403);
        // No shield here: the verdict still goes to the fleet.
        let published = h.store.published();
        let (channel, notice) = published.last().expect("a ban notice");
        assert_eq!(channel, "RLW:WAFFERS");
        let notice = String::from_utf8_lossy(notice);
        assert!(notice.contains("198.18.0.77"), "{notice}");
        assert!(notice.contains("waf"), "{notice}");
        c.finished().await;
    });
}

#[test]
fn a_rate_limited_route_answers_429_with_retry_after() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut c = h.connect();
        assert_eq!(c.get("site.test", "/limited").await.status, 200);
        assert_eq!(c.get("site.test", "/limited").await.status, 200);
        let r = c.get("site.test", "/limited").await;
        assert_eq!(r.status, 429);
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry), "retry after {retry}");
        c.finished().await;
    });
}

#[test]
fn a_cached_site_keeps_serving_when_the_store_entry_goes() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut c = h.connect();
        assert_eq!(c.get("site.test", "/").await.status, 200);
        h.store.del("RLW:API:site.test").await.expect("deleted");
        assert_eq!(
            c.get("site.test", "/").await.status,
            200,
            "routes come from the worker's cache within the TTL"
        );
        c.finished().await;
    });
}

/// The value of one sample line of the node's `/metrics` text.
fn metric(h: &Harness, name: &str) -> f64 {
    let mut text = String::new();
    h.shared.node.encode(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn every_answer_is_timed_and_its_bytes_counted_even_a_bad_head() {
    let site = files();
    run(|| async {
        let h = harness(&site);
        let mut c = h.connect();
        let ok = c.get("site.test", "/").await;
        c.send(b"GET / HTTP/1.1\r\nHost: site.test\r\nBad Header\r\n\r\n")
            .await;
        let bad = c.reply(false).await.expect("a 400");
        assert_eq!(bad.status, 400);
        c.finished().await;
        assert_eq!(metric(&h, "reliw_request_duration_seconds_count"), 2.0);
        let body = (ok.body.len() + bad.body.len()) as f64;
        let sent = metric(&h, "reliw_response_bytes_total");
        assert!(sent > body, "heads and bodies counted: {sent} > {body}");
    });
}
