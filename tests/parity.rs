//! RELIW parity, black-box: behaviours checked against the original RELIW
//! source, and the holes that once made protected files public. Each test
//! is one thing a RELIW operator would see, on the real binary with the
//! memory store (and Redis where only Redis shows it).
#![allow(clippy::unwrap_used)]

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
            ["^/files/", "files"]
        ],
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
        .file("parity.test/files/plain.txt", b"plain\n");
    site
}

fn memory_server(site: &Site, extra: Value) -> Server {
    let file = site.root.join("site.json");
    std::fs::write(&file, site_data().to_string()).unwrap();
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
    let mut c = Client::connect(server.addr);
    c.send(format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n").as_bytes());
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
        "redis": {"host": "127.0.0.1", "port": 1, "ssl": true},
        "metrics": {"disabled": true},
    });
    let (code, stderr) = serve_fails(&config.to_string(), &site.root);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("redis.ssl"), "{stderr}");
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
