//! RELIW site semantics, black-box: the real binary serving a site from a
//! real redis-server (started here on a free port) and from the embedded
//! memory store loaded from a site file. One behavioural suite runs
//! against both, and over HTTP/2 as well as HTTP/1.1; what only Redis can
//! show (FILES writes, the control channel, outages, SCAN bounds) follows,
//! and the whole suite again on a real Redis Cluster with a failover.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::time::Duration;

use reliw_tests::redis::{RedisCluster, RedisServer};
use reliw_tests::server::{Client, Response, Server, Site};
use reliw_tests::wait_until;
use serde_json::{Value, json};

const HOST: &str = "site.test";

/// The site: RELIW keys, as a site file or loaded into Redis.
fn site_data() -> Value {
    json!({
        "RLW:API:site.test": [
            ["/", "home", true],
            ["^/static/", "static"],
            ["/shared.txt", "static", true],
            ["/cached.txt", "static", true],
            ["/form", "form", true],
            ["^/docs/", "docs"],
            ["/about", "pages", true],
            ["^/old/", "old"],
            ["/broken", "broken", true],
            ["/nometa", "ghost", true],
            ["/missing", "lost", true],
            ["/app", "lua", true],
            ["/private", "private", true],
            ["/limited", "limited", true],
            ["/vip", "vip", true],
            ["^/%.well%-known/acme%-challenge/", "acme"],
            ["%b()", "untranslatable"]
        ],
        "RLW:API:site.test:home": {"methods": {"GET": true}, "file": "index.md", "cache_control": "no-cache"},
        "RLW:API:site.test:static": {"methods": {"GET": true}, "cache_control": "max-age=60"},
        "RLW:API:site.test:form": {"methods": {"GET": true, "POST": true}, "file": "form.html"},
        "RLW:API:site.test:docs": {"methods": {"GET": true}, "index": "index.dj"},
        "RLW:API:site.test:pages": {"methods": {"GET": true}, "try_extensions": true},
        "RLW:API:site.test:old": {"methods": {"GET": true}, "gsub": {"pattern": "^/old/", "replacement": "/new/"}},
        "RLW:API:site.test:broken": {"methods": "GET"},
        "RLW:API:site.test:lost": {"methods": {"GET": true}, "error": {"404": "/img/lost.png"}},
        "RLW:API:site.test:lua": {"methods": {"GET": true}, "file": "app.lua"},
        "RLW:API:site.test:private": {"methods": {"GET": true}, "auth": ["alice"], "file": "index.md"},
        "RLW:API:site.test:acme": {"methods": {"GET": true}},
        "RLW:API:site.test:limited": {"methods": {"GET": true}, "file": "about.md",
            "rate_limit": {"GET": {"limit": 3, "period": 60}}},
        "RLW:API:site.test:vip": {"methods": {"GET": true}, "file": "about.md",
            "rate_limit": {"GET": {"limit": 1, "period": 60}, "whitelisted_ip": "127.0.0.1"}},
        "RLW:TITLES:site.test": {"index.md": "Home Page"},
        "RLW:FILES:site.test:/cached.txt": {
            "content": "from the FILES record", "hash": "abc123", "size": "21", "mime": "text/plain", "title": ""
        },
        "RLW:DATA:site.test:.well-known/acme-challenge/tok-123": "tok-123.keyauth",
        "RLW:DATA:proxied.test:.well-known/acme-challenge/px-tok": "px-tok.keyauth",
        "RLW:DATA:__:.well-known/acme-challenge/fleet-tok": "fleet-tok.keyauth",
        "RLW:WAF": {"__": {"query": ["%.php$"]}, "site.test": {"headers": {"user-agent": ["sqlmap"]}}},
        "RLW:PROXY:proxied.test": {"target": "127.0.0.1", "port": 9},
        "RLW:API:tpl.test": [["/", "home", true]],
        "RLW:API:tpl.test:home": {"methods": {"GET": true}, "file": "index.md"},
        "RLW:DATA:tpl.test:template": "<html><title>{{title}}</title><body class=\"custom\">{{{content}}}</body></html>",
        "RLW:API:cold.test": [["/", "home", true]],
        "RLW:API:cold.test:home": {"methods": {"GET": true}, "file": "index.md"}
    })
}

fn site_files() -> Site {
    let site = Site::new();
    site.file("site.test/index.md", b"# Welcome\n\nHello *there*.\n")
        .file("site.test/static/site.css", b"body { color: red }\n")
        .file("site.test/form.html", b"<form method=post></form>\n")
        .file("site.test/docs/index.dj", b"# Docs\n\n_djot_ here\n")
        .file("site.test/about.md", b"# About us\n")
        .file("site.test/new/page.html", b"<p>new place</p>\n")
        .file(
            "site.test/app.lua",
            b"return function(method, query, args) return '<p>lua ' .. method .. ' ' .. query .. ' ' .. args .. '</p>', 200 end\n",
        )
        .file("__/shared.txt", b"for every host\n")
        .file("tpl.test/index.md", b"# Templated\n")
        .file("cold.test/index.md", b"# Cold\n");
    site
}

fn memory_server(site: &Site, extra: Value) -> Server {
    let file = site.root.join("site.json");
    std::fs::write(&file, site_data().to_string()).unwrap();
    let mut config = json!({
        "store": {"backend": "memory", "site_file": file},
        "metrics": {"port": 0, "flush_ms": 100},
    });
    merge(&mut config, extra);
    Server::start(site, config, &[])
}

fn redis_server(site: &Site, redis: &RedisServer, extra: Value) -> Server {
    redis.load(&site_data());
    let mut config = json!({
        "store": {"backend": "redis"},
        "redis": redis.config_json(),
        "metrics": {"port": 0, "flush_ms": 100},
    });
    merge(&mut config, extra);
    let server = Server::start(site, config, &[]);
    // Subscribing drops the caches (messages before it were missed), so
    // tests that warm a cache wait for it.
    let subscribed = wait_until(Duration::from_secs(10), || {
        let (_, n): (String, i64) = redis.cmd(&["PUBSUB", "NUMSUB", "RLW:CTL"]);
        n > 0
    });
    assert!(subscribed, "{}", server.log());
    std::thread::sleep(Duration::from_millis(50));
    server
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            match (b.get_mut(&k), v) {
                (Some(Value::Object(inner)), Value::Object(v)) => inner.extend(v),
                (_, v) => {
                    b.insert(k, v);
                }
            }
        }
    }
}

thread_local! {
    /// This test's requests go over HTTP/2 (h2c, one connection each)
    /// instead of HTTP/1.1.
    static OVER_H2: Cell<bool> = const { Cell::new(false) };
}

/// One request with extra header lines, on a fresh connection.
fn request(server: &Server, method: &str, host: &str, path: &str, headers: &str) -> Response {
    if OVER_H2.get() {
        let req = reliw_tests::h2::Req {
            method,
            host,
            path,
            headers,
            body: b"",
        };
        return reliw_tests::h2::request(server.addr, &req);
    }
    let mut c = Client::connect(server.addr);
    c.send(
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{headers}\r\n")
            .as_bytes(),
    );
    c.response_to(method)
}

fn get(server: &Server, path: &str) -> Response {
    request(server, "GET", HOST, path, "")
}

fn scrape(server: &Server) -> Response {
    Client::connect(server.metrics.unwrap()).get("localhost", "/metrics")
}

/// The number in "asked for N times" on a 404 page.
fn hit_count(page: &str) -> u64 {
    let at = page.find(" times").unwrap();
    page[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

/// The pipeline, step by step, as a visitor sees it.
fn behaves_like_reliw(server: &Server) {
    // Rendered markdown in the built-in template, title from TITLES.
    let home = get(server, "/");
    assert_eq!(home.status, 200, "{}", server.log());
    assert_eq!(
        home.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = home.text();
    assert!(
        html.contains("<h1>Welcome</h1>") && html.contains("<em>there</em>"),
        "{html}"
    );
    assert!(html.contains("<title>Home Page</title>"), "{html}");
    assert_eq!(home.header("cache-control"), Some("no-cache"));
    let page_etag = home.header("etag").unwrap().to_owned();
    // The source for clients that ask for markdown.
    let source = request(server, "GET", HOST, "/", "Accept: text/markdown\r\n");
    assert_eq!(source.text(), "# Welcome\n\nHello *there*.\n");
    assert_eq!(
        source.header("content-type"),
        Some("text/markdown; charset=utf-8")
    );
    // HEAD: the GET's headers, no body.
    let head = request(server, "HEAD", HOST, "/", "");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(home.body.len().to_string().as_str())
    );
    assert_eq!(head.header("etag"), Some(page_etag.as_str()));

    // A static file by pattern route: type, sha256 ETag, entry's Cache-Control.
    let css = get(server, "/static/site.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.text(), "body { color: red }\n");
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("cache-control"), Some("max-age=60"));
    let etag = css.header("etag").unwrap().to_owned();
    assert!(etag.len() == 66 && etag.starts_with('"'), "{etag}");
    // 304 for GET, quoted, weak or RELIW's bare hash; never for other methods.
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        etag.trim_matches('"').to_owned(),
    ] {
        let r = request(
            server,
            "GET",
            HOST,
            "/static/site.css",
            &format!("If-None-Match: {inm}\r\n"),
        );
        assert_eq!(r.status, 304, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let head = request(
        server,
        "HEAD",
        HOST,
        "/static/site.css",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("20"))
    );
    // RELIW's rule: validators and Cache-Control only with the entry's
    // `cache_control`, or for CSS and images.
    let form = get(server, "/form");
    assert_eq!(
        (form.header("etag"), form.header("cache-control")),
        (None, None)
    );
    let post = request(server, "POST", HOST, "/form", "If-None-Match: *\r\n");
    assert_eq!(post.status, 200, "POST never gets 304");
    assert_eq!(post.text(), "<form method=post></form>\n");
    // Methods.
    let put = request(server, "PUT", HOST, "/form", "");
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, POST, HEAD"));
    assert_eq!(
        request(server, "POST", HOST, "/static/site.css", "").status,
        405
    );

    // index, try_extensions, gsub, the `__` fallback, a FILES record.
    let docs = get(server, "/docs/");
    assert!(
        docs.status == 200 && docs.text().contains("Docs</h1>"),
        "{}",
        docs.text()
    );
    assert!(docs.text().contains("<em>djot</em>"));
    let about = get(server, "/about");
    assert!(about.status == 200 && about.text().contains("<h1>About us</h1>"));
    let moved = get(server, "/old/page.html");
    assert_eq!(
        (moved.status, moved.text().as_str()),
        (200, "<p>new place</p>\n")
    );
    let shared = get(server, "/shared.txt");
    assert_eq!(
        (shared.status, shared.text().as_str()),
        (200, "for every host\n")
    );
    let cached = get(server, "/cached.txt");
    assert_eq!(
        cached.text(),
        "from the FILES record",
        "FILES is read before the disk"
    );
    assert_eq!(cached.header("etag"), Some("\"abc123\""));

    // ACME HTTP-01 tokens from DATA.
    let token = get(server, "/.well-known/acme-challenge/tok-123");
    assert_eq!(
        (token.status, token.text().as_str()),
        (200, "tok-123.keyauth")
    );

    // Errors, each an HTML page through the template.
    let missing = get(server, "/nothing-here");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("404 Not Found"));
    let first = hit_count(&missing.text());
    let again = hit_count(&get(server, "/nothing-here").text());
    assert_eq!(again, first + 1, "the 404 page counts its hits");
    let lost = get(server, "/missing");
    assert_eq!(lost.status, 404);
    assert!(
        lost.text().contains("src=\"/img/lost.png\""),
        "{}",
        lost.text()
    );
    assert_eq!(get(server, "/broken").status, 500, "invalid metadata");
    assert_eq!(get(server, "/nometa").status, 500, "missing metadata");
    let app = request(server, "GET", HOST, "/app?x=1", "");
    assert_eq!(app.status, 200, "{}", server.log());
    assert!(
        app.text().contains("<p>lua GET /app x=1</p>"),
        "a Lua page in the template: {}",
        app.text()
    );
    let private = get(server, "/private");
    assert_eq!(
        private.status, 302,
        "protected pages are never served unprotected"
    );
    assert_eq!(private.header("location"), Some("/login"));
    assert_eq!(get(server, "/x.php").status, 403, "global WAF rule");
    let waf = request(server, "GET", HOST, "/", "User-Agent: sqlmap/1.7\r\n");
    assert_eq!(waf.status, 403, "host WAF rule");
    assert_eq!(request(server, "GET", "proxied.test", "/", "").status, 502);
    assert_eq!(request(server, "GET", "bad host", "/", "").status, 400);
    assert_eq!(get(server, "/a/../../etc/passwd").status, 400);
    assert_eq!(request(server, "GET", "nosuch.test", "/", "").status, 404);

    // Rate limits: a fixed window per (host, method, path, address).
    for _ in 0..3 {
        assert_eq!(get(server, "/limited").status, 200);
    }
    let limited = get(server, "/limited");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("60"));
    assert_eq!(
        request(server, "HEAD", HOST, "/limited", "").status,
        200,
        "per method"
    );
    for _ in 0..3 {
        assert_eq!(get(server, "/vip").status, 200, "whitelisted_ip");
    }

    // A site's own template.
    let tpl = request(server, "GET", "tpl.test", "/", "");
    assert!(
        tpl.text()
            .starts_with("<html><title></title><body class=\"custom\"><h1>Templated</h1>"),
        "{}",
        tpl.text()
    );

    // Metrics: RELIW's fleet counters (flushed every 100 ms) and the node's.
    let wanted = format!("http_requests_total{{host=\"{HOST}\",code=\"200\"}}");
    let mut text = String::new();
    let flushed = wait_until(Duration::from_secs(5), || {
        text = scrape(server).text();
        text.contains(&wanted)
    });
    assert!(flushed, "{text}");
    assert!(text.contains(&format!(
        "http_requests_by_method{{host=\"{HOST}\",method=\"GET\"}}"
    )));
    // Routed errors are counted under the host; WAF refusals and route-less
    // 404s (attacker-chosen hosts) only in the node metrics and `unknown`.
    assert!(
        text.contains("code=\"404\"") && text.contains("code=\"500\""),
        "{text}"
    );
    assert!(text.contains("reliw_request_duration_seconds_bucket"));
    assert!(text.contains("reliw_waf_hits_total 2"), "{text}");
    let other = Client::connect(server.metrics.unwrap()).get("localhost", "/other");
    assert_eq!(other.status, 404);
    assert!(
        server.log().contains("dropped"),
        "the untranslatable route is reported"
    );
}

#[test]
fn the_pipeline_on_the_memory_store() {
    let site = site_files();
    let server = memory_server(&site, json!({}));
    behaves_like_reliw(&server);
}

#[test]
fn the_pipeline_over_http2() {
    let site = site_files();
    let server = memory_server(&site, json!({"http2": {"h2c": true}}));
    OVER_H2.set(true);
    behaves_like_reliw(&server);
    assert!(server.metric("reliw_http2_connections_total") > 30.0);
}

#[test]
fn the_pipeline_on_redis() {
    let site = site_files();
    let redis = RedisServer::start();
    let server = redis_server(&site, &redis, json!({}));
    behaves_like_reliw(&server);

    // What the server wrote to FILES for the css: RELIW's record.
    let record: Vec<(String, String)> =
        redis.cmd(&["HGETALL", "RLW:FILES:site.test:/static/site.css"]);
    let field = |name: &str| {
        record
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("content").as_deref(), Some("body { color: red }\n"));
    assert_eq!(field("size").as_deref(), Some("20"));
    assert_eq!(field("mime").as_deref(), Some("text/css"));
    let etag = get(&server, "/static/site.css")
        .header("etag")
        .unwrap()
        .to_owned();
    assert_eq!(field("hash").map(|h| format!("\"{h}\"")), Some(etag));
    let ttl: i64 = redis.cmd(&["TTL", "RLW:FILES:site.test:/static/site.css"]);
    assert!((3000..=3600).contains(&ttl), "{ttl}");
    let title: Option<String> = redis.cmd(&["HGET", "RLW:FILES:site.test:index.md", "title"]);
    assert_eq!(title.as_deref(), Some("Home Page"));
}

#[test]
fn the_pipeline_on_redis_cluster_and_its_failover() {
    let site = site_files();
    let mut cluster = RedisCluster::start();
    cluster.load(&site_data());
    // Scraped below: a host whose counters are on another primary, found
    // only by a SCAN of every primary.
    for i in 0..20 {
        redis::cmd("HSET")
            .arg(format!("RLW:METRICS:c{i:02}.test:total"))
            .arg("200")
            .arg(1)
            .exec(&mut cluster.client())
            .unwrap();
    }
    let server = Server::start(
        &site,
        json!({
            "store": {"backend": "redis"},
            // Long: only the control channel or a failover makes changes show.
            "site_cache_ttl_ms": 600_000,
            "redis": {"timeout": 1.0, "cluster": {"nodes": cluster.addresses()}},
            "metrics": {"port": 0, "flush_ms": 100},
        }),
        &[],
    );
    // The subscriber takes the first node.
    let subscribed = wait_until(Duration::from_secs(10), || {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("RLW:CTL")
            .query(&mut cluster.nodes[0].db0())
            .unwrap();
        n > 0
    });
    assert!(subscribed, "{}", server.log());
    std::thread::sleep(Duration::from_millis(50));
    behaves_like_reliw(&server);

    // FILES records and metrics land in whichever slot their key has.
    let mut con = cluster.client();
    let size: Option<String> = redis::cmd("HGET")
        .arg("RLW:FILES:site.test:/static/site.css")
        .arg("size")
        .query(&mut con)
        .unwrap();
    assert_eq!(size.as_deref(), Some("20"));
    let counted = wait_until(Duration::from_secs(5), || {
        let n: Option<i64> = redis::cmd("HGET")
            .arg("RLW:METRICS:site.test:by_method")
            .arg("GET")
            .query(&mut con)
            .unwrap();
        n.unwrap_or(0) > 10
    });
    assert!(
        counted,
        "metrics never reached the cluster: {}",
        server.log()
    );
    let fleet = scrape(&server).text();
    let hosts = fleet
        .lines()
        .filter(|l| l.starts_with("http_requests_total{") && l.contains(".test"))
        .count();
    assert!(hosts >= 21, "SCAN missed primaries: {hosts} hosts\n{fleet}");

    // A flush published on another node reaches the subscriber.
    let mut routes = site_data()["RLW:API:site.test"].clone();
    routes
        .as_array_mut()
        .unwrap()
        .insert(0, json!(["/fresh", "pages", true]));
    redis::cmd("SET")
        .arg("RLW:API:site.test")
        .arg(routes.to_string())
        .exec(&mut con)
        .unwrap();
    site.file("site.test/fresh.md", b"# Fresh\n");
    assert_eq!(get(&server, "/fresh").status, 404, "cached for ten minutes");
    redis::cmd("PUBLISH")
        .arg("RLW:CTL")
        .arg("flush site.test")
        .exec(&mut cluster.nodes[4].db0())
        .unwrap();
    let flushed = wait_until(Duration::from_secs(5), || {
        get(&server, "/fresh").status == 200
    });
    assert!(flushed, "{}", server.log());

    // The primary holding the routes dies; its replica takes over. The
    // probe is a token whose key lives on that primary too.
    let port = cluster.primary_port("RLW:API:site.test");
    let token = (0..)
        .map(|i| format!("after-failover-{i}"))
        .find(|t| {
            cluster.primary_port(&format!(
                "RLW:DATA:site.test:.well-known/acme-challenge/{t}"
            )) == port
        })
        .unwrap();
    let probe = format!("RLW:DATA:site.test:.well-known/acme-challenge/{token}");
    // And one on another primary, never asked for before (so not cached).
    let healthy = (0..)
        .map(|i| format!("healthy-shard-{i}"))
        .find(|t| {
            cluster.primary_port(&format!(
                "RLW:DATA:site.test:.well-known/acme-challenge/{t}"
            )) != port
        })
        .unwrap();
    redis::cmd("SET")
        .arg(format!(
            "RLW:DATA:site.test:.well-known/acme-challenge/{healthy}"
        ))
        .arg("from a healthy shard")
        .exec(&mut con)
        .unwrap();
    let killed = std::time::Instant::now();
    cluster.kill(port);
    // Trip the dead shard's breaker, then ask the healthy one: it answers.
    get(&server, &format!("/.well-known/acme-challenge/{token}"));
    let other = get(&server, &format!("/.well-known/acme-challenge/{healthy}"));
    assert_eq!(
        (other.status, other.text().as_str()),
        (200, "from a healthy shard"),
        "a healthy shard failed with the dead one: {}",
        server.log()
    );
    let mut failures = 0;
    let promoted = wait_until(Duration::from_secs(30), || {
        // Meanwhile the cached page keeps being served.
        if get(&server, "/about").status != 200 {
            failures += 1;
        }
        cluster
            .try_client()
            .and_then(|mut con| {
                redis::cmd("SET")
                    .arg(&probe)
                    .arg("written after the failover")
                    .exec(&mut con)
            })
            .is_ok()
    });
    assert!(promoted, "the cluster never promoted a replica");
    assert_eq!(failures, 0, "a cached page failed: {}", server.log());
    let followed = wait_until(Duration::from_secs(20), || {
        get(&server, &format!("/.well-known/acme-challenge/{token}")).text()
            == "written after the failover"
    });
    assert!(
        followed,
        "reliw never read the new primary: {}",
        server.log()
    );
    println!(
        "cluster failover: primary killed to its data served again in {:?}",
        killed.elapsed()
    );
}

#[test]
fn control_messages_invalidate_at_once() {
    let site = site_files();
    let redis = RedisServer::start();
    // A TTL of ten minutes: only the control channel can make a change show.
    let server = redis_server(&site, &redis, json!({"site_cache_ttl_ms": 600_000}));
    assert_eq!(get(&server, "/about").status, 200);
    assert_eq!(get(&server, "/fresh").status, 404);
    let mut routes = site_data()["RLW:API:site.test"].clone();
    routes
        .as_array_mut()
        .unwrap()
        .insert(0, json!(["/fresh", "pages", true]));
    let _: () = redis.cmd(&["SET", "RLW:API:site.test", &routes.to_string()]);
    site.file("site.test/fresh.md", b"# Fresh\n");
    assert_eq!(
        get(&server, "/fresh").status,
        404,
        "cached routes until told"
    );
    // Tell every node.
    let heard: i64 = redis.cmd(&["PUBLISH", "RLW:CTL", "flush site.test"]);
    assert_eq!(heard, 1);
    let seen = wait_until(Duration::from_secs(2), || {
        get(&server, "/fresh").status == 200
    });
    assert!(seen, "{}", server.log());
    // A JSON message for everything works too; junk is ignored, not fatal.
    let _: i64 = redis.cmd(&["PUBLISH", "RLW:CTL", "{\"cmd\":\"flush\"}"]);
    let _: i64 = redis.cmd(&["PUBLISH", "RLW:CTL", "reboot please"]);
    assert_eq!(get(&server, "/about").status, 200);
    assert!(wait_until(Duration::from_secs(2), || server
        .log()
        .contains("ignored message")));
}

#[test]
fn redis_outage_gives_503_and_recovers_without_restart() {
    let site = site_files();
    let mut redis = RedisServer::start();
    let port = redis.port;
    let server = redis_server(&site, &redis, json!({"site_cache_ttl_ms": 200}));
    assert_eq!(get(&server, "/about").status, 200);
    redis.kill();
    // Cached pages are still served; what was never read gets 503.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        assert_eq!(get(&server, "/about").status, 200, "{}", server.log());
    }
    let cold = request(&server, "GET", "cold.test", "/", "");
    assert_eq!(cold.status, 503);
    assert_eq!(cold.header("retry-after"), Some("1"));
    assert_eq!(scrape(&server).status, 503, "no partial scrape");
    // Redis returns (empty): provisioned again, served again, same process.
    let redis = RedisServer::start_on(port);
    redis.load(&site_data());
    let back = wait_until(Duration::from_secs(10), || {
        request(&server, "GET", "cold.test", "/", "").status == 200
    });
    assert!(back, "{}", server.log());
    assert_eq!(scrape(&server).status, 200);
}

#[test]
fn metrics_scrapes_do_not_leak_and_scan_is_bounded() {
    let site = site_files();
    let redis = RedisServer::start();
    let mut con = redis.client();
    for i in 0..40 {
        redis::cmd("HSET")
            .arg(format!("RLW:METRICS:h{i:02}.test:total"))
            .arg("200")
            .arg(1)
            .exec(&mut con)
            .unwrap();
    }
    let server = redis_server(
        &site,
        &redis,
        json!({"metrics": {"scan_count": 5, "scan_limit": 10}}),
    );
    let first = scrape(&server).text();
    let hosts = first
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .count();
    assert!(
        (1..=10).contains(&hosts),
        "scan_limit bounds the hosts: {hosts}"
    );
    let before = server.fd_count();
    for _ in 0..2000 {
        assert_eq!(scrape(&server).status, 200);
    }
    let after = server.fd_count();
    assert!(after <= before + 2, "fds {before} -> {after}");
}

#[test]
fn counters_are_flushed_at_shutdown() {
    let site = site_files();
    let redis = RedisServer::start();
    let mut server = redis_server(&site, &redis, json!({"metrics": {"flush_ms": 3_600_000}}));
    for _ in 0..3 {
        assert_eq!(get(&server, "/about").status, 200);
    }
    let before: Option<i64> = redis.cmd(&["HGET", "RLW:METRICS:site.test:total", "200"]);
    assert_eq!(before, None, "nothing flushed yet");
    let code = server.signal_and_wait(rustix::process::Signal::TERM, Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let total: Option<i64> = redis.cmd(&["HGET", "RLW:METRICS:site.test:total", "200"]);
    assert_eq!(total, Some(3));
    let by_request: Option<i64> =
        redis.cmd(&["HGET", "RLW:METRICS:site.test:by_request", "/about"]);
    assert_eq!(by_request, Some(3));
}

#[test]
fn redis_down_at_start_is_waited_for() {
    let site = site_files();
    // A port with nothing on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = json!({
        "store": {"backend": "redis"},
        "redis": {"host": "127.0.0.1", "port": port, "db": 13, "timeout": 1.0},
        "metrics": {"port": 0},
    });
    let server = Server::start(&site, config, &[]);
    let r = get(&server, "/about");
    assert_eq!(r.status, 503, "no store yet");
    assert!(r.text().contains("503"), "an error page, not a reset");
    let redis = RedisServer::start_on(port);
    redis.load(&site_data());
    let up = wait_until(Duration::from_secs(10), || {
        get(&server, "/about").status == 200
    });
    assert!(up, "{}", server.log());
}

#[test]
fn rendered_pages_are_encoded_once_and_validate_per_coding() {
    use std::io::Read as _;
    let site = site_files();
    let server = memory_server(&site, json!({"compression": {"min_size": 64}}));
    let plain = get(&server, "/");
    let etag = plain.header("etag").unwrap().to_owned();
    let gz_etag = format!("{}-gzip\"", etag.strip_suffix('"').unwrap());
    for round in 0..3 {
        let r = request(&server, "GET", HOST, "/", "Accept-Encoding: gzip\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("gzip"), "round {round}");
        assert_eq!(r.header("vary"), Some("Accept, Accept-Encoding"));
        assert_eq!(r.header("etag"), Some(gz_etag.as_str()));
        let mut html = Vec::new();
        flate2::read::GzDecoder::new(&r.body[..])
            .read_to_end(&mut html)
            .unwrap();
        assert_eq!(html, plain.body, "the encoded page decodes to the page");
    }
    // The gzip tag validates the gzip form.
    let r = request(
        &server,
        "GET",
        HOST,
        "/",
        &format!("Accept-Encoding: gzip\r\nIf-None-Match: {gz_etag}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(gz_etag.as_str()));
    // Encoded once, then served from the worker's forms.
    let text = scrape(&server).text();
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        value("reliw_compressed_responses_total{coding=\"gzip\",source=\"encoded\"}"),
        1,
        "{text}"
    );
    assert_eq!(
        value("reliw_compressed_responses_total{coding=\"gzip\",source=\"cached\"}"),
        2,
        "{text}"
    );
    // The markdown source is a representation of its own, encoded too.
    let r = request(
        &server,
        "GET",
        HOST,
        "/",
        "Accept: text/markdown\r\nAccept-Encoding: gzip\r\n",
    );
    assert_eq!(
        r.header("content-encoding"),
        None,
        "below min_size: as it is"
    );
    assert_eq!(r.text(), "# Welcome\n\nHello *there*.\n");
}

#[test]
fn acme_tokens_are_answered_before_the_waf_the_proxy_and_the_routes() {
    let site = site_files();
    let server = memory_server(&site, json!({}));
    let token = |host: &str, path: &str, extra: &str| request(&server, "GET", host, path, extra);
    // A routed host, by a client the WAF would refuse (sqlmap).
    let r = token(
        HOST,
        "/.well-known/acme-challenge/tok-123",
        "User-Agent: sqlmap/1.7\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "tok-123.keyauth"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    // ... while the WAF still guards every other path.
    assert_eq!(token(HOST, "/", "User-Agent: sqlmap/1.7\r\n").status, 403);
    // A proxied host (its upstream is down: forwarding would be a 502).
    let r = token("proxied.test", "/.well-known/acme-challenge/px-tok", "");
    assert_eq!((r.status, r.text().as_str()), (200, "px-tok.keyauth"));
    assert_eq!(token("proxied.test", "/other", "").status, 502);
    // A host with no routes at all, from the fleet-wide `__` fallback.
    let r = token("nowhere.test", "/.well-known/acme-challenge/fleet-tok", "");
    assert_eq!((r.status, r.text().as_str()), (200, "fleet-tok.keyauth"));
    // HEAD gets the head.
    let r = request(
        &server,
        "HEAD",
        "nowhere.test",
        "/.well-known/acme-challenge/fleet-tok",
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("17"));
    // Unknown tokens and other methods go on down the pipeline.
    assert_eq!(
        token("nowhere.test", "/.well-known/acme-challenge/nope", "").status,
        404
    );
    assert_eq!(
        token("proxied.test", "/.well-known/acme-challenge/nope", "").status,
        502,
        "an unknown token on a proxied host is the upstream's business"
    );
    let r = request(
        &server,
        "POST",
        "nowhere.test",
        "/.well-known/acme-challenge/fleet-tok",
        "",
    );
    assert_ne!(r.text(), "fleet-tok.keyauth");
}
