//! RELIW parity, black-box: behaviours checked against the original RELIW
//! source, and the holes that once made protected files public. Each test
//! is one thing a RELIW operator would see, on the real binary with the
//! memory store (and Redis where only Redis shows it).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use reliw_tests::server::{Client, Response, Server, Site, serve_fails};
use serde_json::{Value, json};

const HOST: &str = "parity.test";

fn site_data() -> Value {
    json!({
        "RLW:API:parity.test": [
            ["/", "home", true],
            ["/big", "big", true],
            ["/app", "lua", true],
            ["/private", "private", true],
            ["/api", "api", true],
            ["/boom", "boom", true],
            ["/spin", "spin", true],
            ["/nostatus", "nostatus", true],
            ["/login", "login", true],
            ["/titled", "titled", true],
            ["/gone", "gone", true],
            ["^/files/", "files"]
        ],
        "RLW:API:parity.test:api": {"methods": {"GET": true, "POST": true}, "file": "api.lua"},
        "RLW:API:parity.test:boom": {"methods": {"GET": true}, "file": "boom.lua"},
        "RLW:API:parity.test:spin": {"methods": {"GET": true}, "file": "spin.lua"},
        "RLW:API:parity.test:nostatus": {"methods": {"GET": true}, "file": "nostatus.lua"},
        "RLW:API:parity.test:login": {"methods": {"GET": true, "POST": true}, "auth": {"login": true}},
        "RLW:API:parity.test:titled": {"methods": {"GET": true}, "file": "titled.md"},
        "RLW:API:parity.test:gone": {"methods": {"GET": true}, "file": "nothing.md",
            "error": {"404": "<p class=\"gone\">It was here</p>"}},
        "RLW:TITLES:parity.test": {"titled.md": "A RELIW title"},
        "RLW:USERS:parity.test": {"alice": "{\"pass\": \"PASS\", \"salt\": \"pepper\"}"},
        "RLW:SESSIONS:parity.test:V1StGXR8_Z5jdHi6B-myT": "alice",
        "RLW:DATA:parity.test:template.lua": "return { footer = '<footer class=\"mine\">${title}</footer></body></html>', errors = { [404] = { title = 'Lost in parity', msg = { 'Nothing here, friend.' } } } }",
        "RLW:API:my_site.test": [["/", "home", true]],
        "RLW:API:my_site.test:home": {"methods": {"GET": true}, "file": "index.md"},
        "RLW:API:::1": [["/", "home", true]],
        "RLW:API:::1:home": {"methods": {"GET": true}, "file": "index.md"},
        "RLW:API:parity.test:home": {"methods": {"GET": true}, "file": "index.md"},
        "RLW:API:parity.test:big": {"methods": {"GET": true}, "file": "big.md"},
        "RLW:API:parity.test:lua": {"methods": {"GET": true}, "file": "app.lua"},
        "RLW:API:parity.test:private": {"methods": {"GET": true}, "auth": ["alice"], "file": "secret.md"},
        "RLW:API:parity.test:files": {"methods": {"GET": true}},
        "RLW:WAF": {"__": {"query": ["%.php$", "^/admin"]}}
    })
}

fn site_files() -> Site {
    let site = Site::new();
    let big = format!("# Big page\n\n{}\n", "lorem ipsum ".repeat(2000));
    site.file("parity.test/index.md", b"# Welcome\n\nHello *there*.\n")
        .file("parity.test/big.md", big.as_bytes())
        .file(
            "parity.test/app.lua",
            b"-- the source must never be sent\nreturn 1\n",
        )
        .file("parity.test/secret.md", b"# Secret\n")
        .file("parity.test/files/x.php", b"<?php echo 1; ?>\n")
        .file("parity.test/files/plain.txt", b"plain\n")
        .file("parity.test/files/site.css", b"body {}\n")
        .file("parity.test/files/main.rs", b"fn main() {}\n")
        .file("parity.test/files/app.js", b"let x = 1;\n")
        .file("parity.test/titled.md", b"# Titled\n")
        .file(
            "parity.test/api.lua",
            br#"local json = require("cjson")
return function(method, query, args, headers, body)
    return json.encode({method = method, query = query, args = args,
        client = headers["x-client-ip"], body = body or "(none)"}), 201,
        {["Content-Type"] = "application/json", ["Set-Cookie"] = {"a=1", "b=2"}}
end
"#,
        )
        .file(
            "parity.test/boom.lua",
            b"return function() error('kaboom') end\n",
        )
        .file(
            "parity.test/spin.lua",
            b"return function() while true do end end\n",
        )
        .file(
            "parity.test/nostatus.lua",
            b"return function() return 'content only' end\n",
        )
        .file("my_site.test/index.md", b"# Underscored\n")
        .file("::1/index.md", b"# Six\n");
    site
}

fn memory_server(site: &Site, extra: Value) -> Server {
    let file = site.root.join("site.json");
    let hash = reliw::auth::password_hash("pepper", "s3cret");
    let data = site_data().to_string().replace("PASS", &hash);
    std::fs::write(&file, data).unwrap();
    let mut config = json!({
        "store": {"backend": "memory", "site_file": file},
        "metrics": {"disabled": true},
    });
    if let (Some(base), Value::Object(extra)) = (config.as_object_mut(), extra) {
        base.extend(extra);
    }
    Server::start(site, config, &[])
}

fn request(server: &Server, method: &str, path: &str, headers: &str) -> Response {
    request_to(server, HOST, method, path, headers)
}

fn request_to(server: &Server, host: &str, method: &str, path: &str, headers: &str) -> Response {
    let mut c = Client::connect(server.addr);
    c.send(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n").as_bytes());
    c.response_to(method)
}

fn get(server: &Server, path: &str) -> Response {
    request(server, "GET", path, "")
}

/// A Redis section reliw cannot honour stops start-up, naming the key: it
/// must never fall back to static serving of `data_dir`, where files
/// behind `auth` would be public.
#[test]
fn an_unusable_redis_section_refuses_to_start() {
    let site = site_files();
    let config = json!({
        "data_dir": site.www(),
        "port": 0,
        "store": {"backend": "redis"},
        "redis": {"host": "127.0.0.1", "port": 1, "ssl": true, "tls": {"ca_file": "/nonexistent/ca.pem"}},
        "metrics": {"disabled": true},
    });
    let (code, stderr) = serve_fails(&config.to_string(), &site.root);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("redis.tls.ca_file"), "{stderr}");
}

/// RELIW's `cache_max_size: 0` keeps nothing in memory, but pages are
/// still rendered and Lua sources never sent.
#[test]
fn rendering_does_not_depend_on_the_cache_size() {
    let site = site_files();
    for size in [0, 100] {
        let server = memory_server(&site, json!({"cache_max_size": size}));
        let home = get(&server, "/");
        assert_eq!(home.status, 200, "{}", server.log());
        assert!(home.text().contains("<h1>Welcome</h1>"), "{}", home.text());
        let big = get(&server, "/big");
        assert_eq!(big.status, 200);
        assert!(
            big.text().contains("<h1>Big page</h1>"),
            "cache_max_size {size}"
        );
        assert_eq!(big.header("content-type"), Some("text/html; charset=utf-8"));
        let app = get(&server, "/app");
        assert!(
            !app.text().contains("the source must never be sent"),
            "cache_max_size {size}: {}",
            app.text()
        );
        let private = get(&server, "/private");
        assert_eq!(private.status, 302, "auth still applies");
        // Plain files are still served, from disk.
        let plain = get(&server, "/files/plain.txt");
        assert_eq!((plain.status, plain.text().as_str()), (200, "plain\n"));
    }
}

/// WAF path rules match the path: a query string or an encoded letter
/// does not get `/x.php` past `%.php$`; query strings are matched too.
#[test]
fn waf_path_rules_are_not_evaded_by_a_query_string() {
    let site = site_files();
    let server = memory_server(&site, json!({}));
    assert_eq!(get(&server, "/files/plain.txt").status, 200);
    for path in [
        "/files/x.php",
        "/files/x.php?x",
        "/files/x.php?a=1&b=2",
        "/files/x.%70hp",
        "/admin/x",
        "/files/plain.txt?next=/x.php",
    ] {
        let r = get(&server, path);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }
    assert!(server.log().contains("blocked by WAF"));
}

/// RELIW's Lua pages: the call, the answers, the site's template.lua, and
/// failures that are a 500 and a log line, never a stalled worker.
#[test]
fn lua_pages_and_template_lua_work_as_in_reliw() {
    let site = site_files();
    let server = memory_server(&site, json!({"workers": 1, "lua": {"time_limit_ms": 300}}));
    // A page answering with its own headers (sent as they are).
    let mut c = Client::connect(server.addr);
    c.send(
        format!("POST /api?x=1&y=2 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 7\r\n\r\nhello=1")
            .as_bytes(),
    );
    let api = c.response_to("POST");
    assert_eq!(api.status, 201, "{}", server.log());
    assert_eq!(api.header("content-type"), Some("application/json"));
    let echoed: Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(
        echoed,
        json!({"method": "POST", "query": "/api", "args": "x=1&y=2",
               "client": "127.0.0.1", "body": "hello=1"})
    );
    let cookies = api.headers_named("set-cookie");
    assert_eq!(cookies, ["a=1", "b=2"]);
    let get_api = get(&server, "/api");
    let echoed: Value = serde_json::from_slice(&get_api.body).unwrap();
    assert_eq!(
        (echoed["args"].as_str(), echoed["body"].as_str()),
        (Some(""), Some("(none)"))
    );

    // A page without headers goes into the template; template.lua's footer.
    let titled = get(&server, "/titled");
    assert!(
        titled
            .text()
            .contains("<footer class=\"mine\">A RELIW title</footer>"),
        "template.lua footer with the TITLES title: {}",
        titled.text()
    );
    // template.lua's error texts.
    let lost = get(&server, "/nowhere");
    assert_eq!(lost.status, 404);
    assert!(
        lost.text().contains("Lost in parity") && lost.text().contains("Nothing here, friend."),
        "{}",
        lost.text()
    );

    // Failures: 500 and a log line, and the worker keeps serving.
    assert_eq!(get(&server, "/boom").status, 500);
    assert_eq!(get(&server, "/nostatus").status, 500);
    let started = Instant::now();
    assert_eq!(get(&server, "/spin").status, 500);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        get(&server, "/api").status,
        201,
        "the one worker is still serving"
    );
    let log = server.log();
    assert!(log.contains("kaboom"), "{log}");
    assert!(log.contains("time budget"), "{log}");
    assert!(log.contains("gave no status"), "{log}");
}

/// A session RELIW issued (a 21-character nanoid) keeps its user logged in.
#[test]
fn reliw_session_tokens_are_accepted() {
    let site = site_files();
    let server = memory_server(&site, json!({}));
    assert_eq!(get(&server, "/private").status, 302);
    let inside = request(
        &server,
        "GET",
        "/private",
        "Cookie: rlw_session_token=V1StGXR8_Z5jdHi6B-myT\r\n",
    );
    assert_eq!(inside.status, 200, "{}", server.log());
    assert!(inside.text().contains("<h1>Secret</h1>"));
    let forged = request(
        &server,
        "GET",
        "/private",
        "Cookie: rlw_session_token=V1StGXR8_Z5jdHi6B-myX\r\n",
    );
    assert_eq!(forged.status, 302);
}

/// A config copied from RELIW starts and means what it meant.
#[test]
fn a_reliw_config_starts_with_reliw_meanings() {
    let site = site_files();
    let server = memory_server(
        &site,
        json!({"ip": "localhost", "log_level": 10, "keepalive_idle_timeout": 0.4,
               "fork_limit": 4, "metrics": {"disabled": true, "scan_count": 5000}}),
    );
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    let mut c = Client::connect(server.addr);
    c.send(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
    assert_eq!(c.response_to("GET").status, 200);
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "a 0.4 s idle timeout"
    );
    let log = server.log();
    assert!(log.contains("scan_count"), "clamped with a warning: {log}");
}

/// Responses as RELIW sent them: validators only where RELIW sent them,
/// error entries as HTML, TITLES names as written, RELIW's MIME types,
/// hosts with underscores and bare IPv6 hosts.
#[test]
fn responses_follow_reliw() {
    let site = site_files();
    let server = memory_server(&site, json!({}));
    let page = get(&server, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        (page.header("cache-control"), page.header("etag")),
        (None, None),
        "a rendered page gets no max-age by default"
    );
    let css = get(&server, "/files/site.css");
    assert_eq!(css.header("cache-control"), Some("max-age=86400"));
    assert!(css.header("etag").is_some());
    let head = request(&server, "HEAD", "/", "");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(page.body.len().to_string().as_str())
    );
    let gone = get(&server, "/gone");
    assert_eq!(gone.status, 404);
    assert!(
        gone.text().contains("<p class=\"gone\">It was here</p>"),
        "{}",
        gone.text()
    );
    let titled = get(&server, "/titled");
    assert!(
        titled.text().contains("<title>A RELIW title</title>"),
        "{}",
        titled.text()
    );
    let rs = get(&server, "/files/main.rs");
    assert_eq!(rs.header("content-type"), Some("text/plain; charset=utf-8"));
    let js = get(&server, "/files/app.js");
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let underscored = request_to(&server, "my_site.test", "GET", "/", "");
    assert!(
        underscored.text().contains("Underscored"),
        "{}",
        underscored.text()
    );
    let six = request_to(&server, "[::1]:8080", "GET", "/", "");
    assert!(six.text().contains("<h1>Six</h1>"), "{}", six.text());
    assert_eq!(request_to(&server, "__", "GET", "/", "").status, 400);
}

/// `log_format: json`: every line one JSON object, the access fields as
/// they were.
#[test]
fn json_logs() {
    let site = site_files();
    let server = memory_server(&site, json!({"log_format": "json", "log_level": "access"}));
    assert_eq!(get(&server, "/").status, 200);
    let mut access = None;
    let found = reliw_tests::wait_until(Duration::from_secs(5), || {
        access = server
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["target"] == "access");
        access.is_some()
    });
    assert!(found, "{}", server.log());
    let access = access.unwrap();
    for field in [
        "vhost",
        "method",
        "path",
        "status",
        "bytes",
        "client_ip",
        "duration_us",
    ] {
        assert!(!access[field].is_null(), "{field} in {access}");
    }
    assert_eq!(access["status"], 200);
    for line in server.log().lines().filter(|l| l.starts_with('{')) {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "{line}");
    }
}

/// The example site `cargo xtask run` serves: its Lua page inside its
/// template.lua, the page's JSON answer, and the template's error texts.
#[test]
fn the_example_site_runs_its_lua_page_and_template() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/site");
    let site = Site::new();
    let server = Server::start(
        &site,
        json!({
            "data_dir": example.join("www"),
            "store": {"backend": "memory", "site_file": example.join("site.json")},
            "metrics": {"disabled": true},
        }),
        &[],
    );
    let hello = request_to(&server, "localhost", "GET", "/hello?who=<you>", "");
    assert_eq!(hello.status, 200, "{}", server.log());
    let html = hello.text();
    assert!(html.contains("<h1>Hello from Lua</h1>"), "{html}");
    assert!(html.contains("who=&lt;you&gt;"), "the page escapes: {html}");
    assert!(
        html.contains("served by reliw from RELIW site data"),
        "template.lua footer: {html}"
    );
    let as_json = request_to(&server, "localhost", "GET", "/hello?format=json", "");
    assert_eq!(as_json.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&as_json.body).unwrap();
    assert_eq!(
        (v["path"].as_str(), v["client"].as_str()),
        (Some("/hello"), Some("127.0.0.1"))
    );
    let missing = request_to(&server, "localhost", "GET", "/nope", "");
    assert_eq!(missing.status, 404);
    assert!(
        missing.text().contains("<title>Not here</title>"),
        "{}",
        missing.text()
    );
    let home = request_to(&server, "localhost", "GET", "/", "");
    assert_eq!(home.status, 200);
}
