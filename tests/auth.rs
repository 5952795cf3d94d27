//! Logins, sessions, rate limits and who the client is, black-box against
//! the real binary and a real redis-server (and the memory store where the
//! behaviour is the same).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reliw_tests::redis::RedisServer;
use reliw_tests::server::{Client, Response, Server, Site};
use reliw_tests::wait_until;
use serde_json::{Value, json};

const HOST: &str = "auth.test";

fn site_data() -> Value {
    let alice =
        json!({"pass": reliw::auth::password_hash("salt-1", "wonderland"), "salt": "salt-1"});
    json!({
        "RLW:API:auth.test": [
            ["/login", "login", true],
            ["/logout", "logout", true],
            ["/private", "private", true],
            ["/bob-only", "bob", true],
            ["/limited", "limited", true],
            ["/", "home", true]
        ],
        "RLW:API:auth.test:login": {"methods": {"GET": true, "POST": true}, "auth": {"login": true}},
        "RLW:API:auth.test:logout": {"methods": {"GET": true}, "auth": {"logout": true}},
        "RLW:API:auth.test:private": {"methods": {"GET": true}, "auth": ["alice"], "file": "private.md"},
        "RLW:API:auth.test:bob": {"methods": {"GET": true}, "auth": ["bob"], "file": "private.md"},
        "RLW:API:auth.test:limited": {"methods": {"GET": true, "POST": true}, "file": "index.md",
            "rate_limit": {"GET": {"limit": 2, "period": 60}, "POST": {"limit": 2, "period": 60}}},
        "RLW:API:auth.test:home": {"methods": {"GET": true}, "file": "index.md"},
        "RLW:USERS:auth.test": {"alice": alice, "mallory": "not a record"}
    })
}

fn site_files() -> Site {
    let site = Site::new();
    site.file("auth.test/private.md", b"# Secret\n")
        .file("auth.test/index.md", b"# Home\n");
    site
}

fn start_redis(site: &Site, redis: &RedisServer, extra: Value) -> Server {
    redis.load(&site_data());
    let mut config = json!({
        "store": {"backend": "redis"},
        "redis": redis.config_json(),
        "site_cache_ttl_ms": 200,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    Server::start(site, config, &[])
}

fn request(server: &Server, method: &str, path: &str, headers: &str, body: &str) -> Response {
    let mut c = Client::connect(server.addr);
    c.send(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n{headers}\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    c.response_to(method)
}

fn login(server: &Server, body: &str, cookies: &str) -> Response {
    let cookie = if cookies.is_empty() {
        String::new()
    } else {
        format!("Cookie: {cookies}\r\n")
    };
    request(
        server,
        "POST",
        "/login",
        &format!("Content-Type: application/x-www-form-urlencoded\r\n{cookie}"),
        body,
    )
}

fn set_cookies(r: &Response) -> Vec<&str> {
    r.headers_named("set-cookie")
}

/// The session token a login response set.
fn token(r: &Response) -> String {
    let cookie = set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with("rlw_session_token="))
        .unwrap_or_else(|| panic!("no session cookie in {:?}", r.headers));
    cookie["rlw_session_token=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn logins_and_sessions(server: &Server) -> String {
    // Unauthenticated: to the login page, remembering where we were going.
    let r = request(server, "GET", "/private?x=1", "", "");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/login"));
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("rlw_redirect=/private?x=1;")),
        "{:?}",
        r.headers
    );
    // The form.
    let form = request(server, "GET", "/login", "", "");
    assert_eq!(form.status, 200);
    assert!(form.text().contains("name=\"password\""));
    // Every failure is a 401, never an error.
    let huge = format!(
        "login=alice&password=wonderland&pad={}",
        "x".repeat(64 * 1024)
    );
    for (body, why) in [
        ("login=alice&password=wrong", "wrong password"),
        ("login=nobody&password=wonderland", "unknown user"),
        ("login=mallory&password=x", "broken user record"),
        ("", "empty body"),
        ("login=alice", "no password"),
        ("login=alice&password=", "empty password"),
        ("login=%zz&password=%", "malformed body"),
        ("\u{0}\u{1}garbage", "garbage"),
        (huge.as_str(), "huge body"),
    ] {
        let r = login(server, body, "");
        assert_eq!(r.status, 401, "{why}");
        assert!(set_cookies(&r).is_empty(), "{why}");
    }
    // Success: a session cookie and 303 to the remembered local path.
    let ok = login(
        server,
        "login=alice&password=wonderland",
        "rlw_redirect=/private?x=1",
    );
    assert_eq!(ok.status, 303, "{}", server.log());
    assert_eq!(ok.header("location"), Some("/private?x=1"));
    let cookies = set_cookies(&ok);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("rlw_session_token="))
        .unwrap();
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    let token = token(&ok);
    assert_eq!(token.len(), 64, "256 random bits, hex");
    // Absolute or protocol-relative redirects are refused: `/` instead.
    for evil in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
    ] {
        let r = login(
            server,
            "login=alice&password=wonderland",
            &format!("rlw_redirect={evil}"),
        );
        assert_eq!(r.header("location"), Some("/"), "{evil}");
    }
    // The session opens the page, for the right user only.
    let cookie = format!("Cookie: rlw_session_token={token}\r\n");
    let page = request(server, "GET", "/private", &cookie, "");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Secret"));
    assert_eq!(request(server, "GET", "/bob-only", &cookie, "").status, 302);
    assert_eq!(
        request(
            server,
            "GET",
            "/private",
            "Cookie: rlw_session_token=deadbeef\r\n",
            ""
        )
        .status,
        302
    );
    // Logout ends the session and expires both cookies.
    let out = request(server, "GET", "/logout", &cookie, "");
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/"));
    let expired = set_cookies(&out);
    assert_eq!(expired.len(), 2);
    assert!(expired.iter().all(|c| c.contains("Max-Age=0")));
    assert_eq!(request(server, "GET", "/private", &cookie, "").status, 302);
    token
}

#[test]
fn logins_on_redis() {
    let site = site_files();
    let redis = RedisServer::start();
    let server = start_redis(&site, &redis, json!({}));
    let old = logins_and_sessions(&server);
    let gone: Option<String> = redis.cmd(&["GET", &format!("RLW:SESSIONS:{HOST}:{old}")]);
    assert_eq!(gone, None, "logout deleted the session");
    // Sessions live three hours, then end.
    let ok = login(&server, "login=alice&password=wonderland", "");
    let token = token(&ok);
    let key = format!("RLW:SESSIONS:{HOST}:{token}");
    let ttl: i64 = redis.cmd(&["TTL", &key]);
    assert!((10_700..=10_800).contains(&ttl), "{ttl}");
    let user: String = redis.cmd(&["GET", &key]);
    assert_eq!(user, "alice");
    let cookie = format!("Cookie: rlw_session_token={token}\r\n");
    assert_eq!(request(&server, "GET", "/private", &cookie, "").status, 200);
    let _: i64 = redis.cmd(&["PEXPIRE", &key, "1"]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        request(&server, "GET", "/private", &cookie, "").status,
        302,
        "expired"
    );
}

#[test]
fn logins_on_the_memory_store() {
    let site = site_files();
    let file = site.root.join("site.json");
    std::fs::write(&file, site_data().to_string()).unwrap();
    let server = Server::start(
        &site,
        json!({"store": {"backend": "memory", "site_file": file}}),
        &[],
    );
    logins_and_sessions(&server);
}

#[test]
fn rate_limits_count_the_socket_peer_unless_a_trusted_proxy_speaks() {
    let site = site_files();
    let redis = RedisServer::start();
    // Untrusted peer: a spoofed X-Forwarded-For changes nothing.
    let server = start_redis(&site, &redis, json!({}));
    for i in 0..2 {
        let r = request(
            &server,
            "GET",
            "/limited",
            &format!("X-Forwarded-For: 198.18.9.{i}\r\n"),
            "",
        );
        assert_eq!(r.status, 200);
    }
    let r = request(
        &server,
        "GET",
        "/limited",
        "X-Forwarded-For: 198.18.9.77\r\n",
        "",
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("60"));
    let counter: i64 = redis.cmd(&["GET", &format!("RLW:LIMITS:{HOST}:GET:/limited:127.0.0.1")]);
    assert_eq!(counter, 3, "counted for the socket peer");
    // Per method and per path.
    assert_eq!(request(&server, "POST", "/limited", "", "").status, 200);
    assert_eq!(request(&server, "GET", "/", "", "").status, 200);
    drop(server);

    // Behind a trusted proxy, each client has its own window.
    let _: i64 = redis.cmd(&["DEL", &format!("RLW:LIMITS:{HOST}:GET:/limited:127.0.0.1")]);
    let server = start_redis(&site, &redis, json!({"trusted_proxies": ["127.0.0.1/32"]}));
    for client in ["198.18.9.1", "198.18.9.2"] {
        for _ in 0..2 {
            let xff = format!("X-Forwarded-For: 203.0.113.9, {client}\r\n");
            assert_eq!(request(&server, "GET", "/limited", &xff, "").status, 200);
        }
        let xff = format!("X-Forwarded-For: {client}\r\n");
        assert_eq!(
            request(&server, "GET", "/limited", &xff, "").status,
            429,
            "{client}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(2), || server
            .log()
            .contains("client_ip=198.18.9.2")),
        "the access log names the client, not the proxy"
    );
}

#[test]
fn rate_limits_fail_open_or_closed_when_redis_is_gone() {
    let (site_a, site_b) = (site_files(), site_files());
    let mut redis = RedisServer::start();
    let open = start_redis(&site_a, &redis, json!({}));
    let closed = start_redis(
        &site_b,
        &redis,
        json!({"rate_limit": {"fail_closed": true}}),
    );
    for server in [&open, &closed] {
        assert_eq!(
            request(server, "GET", "/limited", "X-Warm: 1\r\n", "").status,
            200
        );
    }
    redis.kill();
    std::thread::sleep(Duration::from_millis(300));
    // The route is cached; the counter cannot be read.
    assert_eq!(
        request(&open, "GET", "/limited", "", "").status,
        200,
        "{}",
        open.log()
    );
    assert_eq!(request(&closed, "GET", "/limited", "", "").status, 503);
    let metrics = Client::connect(open.metrics.unwrap()).get("localhost", "/metrics");
    assert_eq!(
        metrics.status, 503,
        "the fleet counters are gone with Redis"
    );
    let logged = wait_until(Duration::from_secs(2), || {
        open.log().contains("letting the request through")
    });
    assert!(logged, "{}", open.log());
}
