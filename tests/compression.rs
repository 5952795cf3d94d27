//! Response compression from outside: `Accept-Encoding` negotiation with
//! q-values, gzip/brotli/zstd bodies that decode to the file, ETags per
//! coding, 304s, HEAD, ranges, 406, precompressed siblings, cached forms,
//! rendered pages, and the config that turns it off.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use reliw_tests::decode;
use reliw_tests::server::{Client, Response, Server, Site, serve_fails};
use serde_json::json;

const MODES: [&[&str]; 2] = [&["--io", "uring"], &["--io", "epoll"]];

/// Below the default `min_size` (512), yet it compresses.
const SMALL: &str =
    "short text, below min_size; short text, below min_size; short text, below min_size\n";

/// About 20 KiB of HTML that compresses well.
fn page() -> Vec<u8> {
    let mut html = b"<!doctype html><title>t</title>\n".to_vec();
    for i in 0..400 {
        html.extend_from_slice(format!("<p>paragraph {i} of a page reliw serves</p>\n").as_bytes());
    }
    html
}

fn site() -> Site {
    let site = Site::new();
    site.file("__/page.html", &page())
        .file("__/small.txt", SMALL.as_bytes())
        .file("__/image.png", &vec![0x89u8; 4096])
        .file("__/app.js", &b"console.log('identity form');\n".repeat(100));
    site
}

fn request(server: &Server, method: &str, path: &str, fields: &[(&str, &str)]) -> Response {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: example.com\r\n");
    for (name, value) in fields {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let mut client = Client::connect(server.addr);
    client.send(text.as_bytes());
    client.response_to(method)
}

fn get_with(server: &Server, path: &str, accept_encoding: &str) -> Response {
    request(server, "GET", path, &[("Accept-Encoding", accept_encoding)])
}

fn with_quotes_suffix(etag: &str, coding: &str) -> String {
    format!("{}-{coding}\"", etag.strip_suffix('"').unwrap())
}

#[test]
fn static_files_are_encoded_as_the_client_asks_on_both_runtimes() {
    for mode in MODES {
        let site = site();
        let server = Server::start(&site, json!({}), mode);
        let plain = request(&server, "GET", "/page.html", &[]);
        assert_eq!(plain.status, 200);
        assert_eq!(plain.body, page(), "{mode:?}");
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
        assert_eq!(plain.header("accept-ranges"), Some("bytes"));
        let etag = plain.header("etag").unwrap().to_owned();

        for (ae, want) in [
            ("gzip", "gzip"),
            ("br", "br"),
            ("zstd", "zstd"),
            ("gzip, deflate, br, zstd", "br"),
            ("br;q=0.5, gzip", "gzip"),
            ("br;q=0, zstd;q=0.1, gzip;q=0.05", "zstd"),
            ("*", "br"),
            ("x-gzip", "gzip"),
        ] {
            let r = get_with(&server, "/page.html", ae);
            assert_eq!(r.status, 200, "{ae}");
            assert_eq!(r.header("content-encoding"), Some(want), "{ae} {mode:?}");
            assert_eq!(r.header("vary"), Some("Accept-Encoding"));
            assert_eq!(r.header("accept-ranges"), None, "{ae}");
            assert_eq!(
                r.header("content-length").unwrap(),
                r.body.len().to_string()
            );
            assert!(r.body.len() < page().len() / 5, "{ae}: {}", r.body.len());
            assert_eq!(decode(want, &r.body), page(), "{ae}");
            assert_eq!(
                r.header("etag").unwrap(),
                with_quotes_suffix(&etag, want),
                "{ae}"
            );
        }
        // Codings we do not offer, or refused ones: identity.
        for ae in ["deflate", "gzip;q=0", "identity", "identity, gzip;q=0.5"] {
            let r = get_with(&server, "/page.html", ae);
            assert_eq!(r.header("content-encoding"), None, "{ae}");
            assert_eq!(r.body, page(), "{ae}");
        }
    }
}

#[test]
fn small_binary_and_refused_identity() {
    let site = site();
    let server = Server::start(&site, json!({}), &[]);
    // Below min_size: identity, unless the client refuses identity.
    let r = get_with(&server, "/small.txt", "gzip");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), SMALL);
    let r = get_with(&server, "/small.txt", "identity;q=0, gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &r.body), SMALL.as_bytes());
    // Even where the encoded form is no smaller (a tiny body).
    site.file("__/tiny.txt", b"ab");
    let r = get_with(&server, "/tiny.txt", "identity;q=0, gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &r.body), b"ab");
    // Not a listed type: never encoded, and nothing to vary on.
    let r = get_with(&server, "/image.png", "gzip, br");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.body.len(), 4096);
    // Identity refused and no coding we offer accepted: 406.
    for ae in ["identity;q=0", "*;q=0", "deflate, identity;q=0"] {
        let r = get_with(&server, "/page.html", ae);
        assert_eq!(r.status, 406, "{ae}");
        assert_eq!(r.text(), "406 Not Acceptable\n", "{ae}");
    }
}

#[test]
fn head_ranges_and_conditional_requests() {
    let site = site();
    let server = Server::start(&site, json!({}), &[]);
    let get = get_with(&server, "/page.html", "gzip");
    let gz_etag = get.header("etag").unwrap().to_owned();
    // HEAD: the head GET would get, no body.
    let mut client = Client::connect(server.addr);
    client.send(
        b"HEAD /page.html HTTP/1.1\r\nHost: example.com\r\nAccept-Encoding: gzip\r\n\r\n\
          GET /small.txt HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    let head = client.response_to("HEAD");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(head.header("content-length"), get.header("content-length"));
    assert_eq!(head.header("etag"), Some(gz_etag.as_str()));
    assert!(head.body.is_empty());
    // Nothing of a body leaked: the next response on the connection is whole.
    assert_eq!(client.response().text(), SMALL);

    // A range is served from the identity form.
    let r = request(
        &server,
        "GET",
        "/page.html",
        &[("Accept-Encoding", "gzip, br"), ("Range", "bytes=0-14")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, &page()[..15]);

    // 304 for the encoded form's tag names that form back.
    let r = request(
        &server,
        "GET",
        "/page.html",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &gz_etag)],
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(gz_etag.as_str()));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert!(r.body.is_empty());
    // ... but only for a client that takes gzip: a cache revalidating its
    // gzip copy for a client without gzip gets the form that client takes.
    for (ae, coding) in [("br", Some("br")), ("", None), ("identity", None)] {
        let r = request(
            &server,
            "GET",
            "/page.html",
            &[("Accept-Encoding", ae), ("If-None-Match", &gz_etag)],
        );
        assert_eq!(r.status, 200, "{ae}");
        assert_eq!(r.header("content-encoding"), coding, "{ae}");
    }
    // A 304 for the identity tag varies as its 200 does.
    let etag = request(&server, "GET", "/page.html", &[])
        .header("etag")
        .unwrap()
        .to_owned();
    let r = request(&server, "GET", "/page.html", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    // An If-Range with the encoded form's tag does not apply the range
    // (ranges are of the identity form): the whole file comes back.
    let r = request(
        &server,
        "GET",
        "/page.html",
        &[("Range", "bytes=0-9"), ("If-Range", &gz_etag)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, page());
}

#[test]
fn precompressed_siblings_are_served_when_fresh() {
    let site = site();
    let js = b"console.log('identity form');\n".repeat(100);
    // The sibling decodes to something else, so the test can tell it was
    // served rather than the file encoded on the fly.
    let marker = b"console.log('from the .br sibling');\n".repeat(50);
    let mut br = Vec::new();
    brotli::BrotliCompress(&mut &marker[..], &mut br, &Default::default()).unwrap();
    site.file("__/app.js.br", &br);
    let server = Server::start(&site, json!({}), &[]);
    let r = get_with(&server, "/app.js", "gzip, br");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(decode("br", &r.body), marker);
    assert_eq!(r.body, br);
    // A client without br gets gzip made on the fly from the file itself.
    let r = get_with(&server, "/app.js", "gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &r.body), js);
    // No Accept-Encoding: the file.
    assert_eq!(request(&server, "GET", "/app.js", &[]).body, js);
    // The sibling itself is still a file of its own.
    assert_eq!(request(&server, "GET", "/app.js.br", &[]).body, br);
    // An empty sibling is no brotli stream: never served.
    site.file("__/page.html.br", b"");
    let r = get_with(&server, "/page.html", "br");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(decode("br", &r.body), page());

    // A sibling older than its file is stale: not served.
    let site = self::site();
    site.file("__/app.js.br", &br);
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(site.www().join("__/app.js.br"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let server = Server::start(&site, json!({}), &[]);
    let r = get_with(&server, "/app.js", "br");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(decode("br", &r.body), js, "the stale sibling was served");
}

#[test]
fn a_hot_file_is_encoded_once() {
    let site = site();
    let server = Server::start(&site, json!({}), &[]);
    for _ in 0..5 {
        let r = get_with(&server, "/page.html", "gzip");
        assert_eq!(decode("gzip", &r.body), page());
    }
    let encoded = "reliw_compressed_responses_total{coding=\"gzip\",source=\"encoded\"}";
    let cached = "reliw_compressed_responses_total{coding=\"gzip\",source=\"cached\"}";
    assert_eq!(server.metric(encoded), 1.0);
    assert_eq!(server.metric(cached), 4.0);
    // A changed file is a new form (the cache is keyed by the file's
    // identity), after the file cache's revalidation interval.
    let server2 = Server::start(&site, json!({"cache_revalidate_ms": 1}), &[]);
    get_with(&server2, "/page.html", "gzip");
    let mut changed = page();
    changed.extend_from_slice(b"<p>one more</p>\n");
    std::thread::sleep(Duration::from_millis(20));
    site.file("__/page.html", &changed);
    std::thread::sleep(Duration::from_millis(20));
    let r = get_with(&server2, "/page.html", "gzip");
    assert_eq!(decode("gzip", &r.body), changed);
    assert_eq!(server2.metric(encoded), 2.0);
}

#[test]
fn compression_can_be_turned_off_and_bad_keys_stop_start_up() {
    let site = site();
    let server = Server::start(&site, json!({"compression": {"enabled": false}}), &[]);
    let r = get_with(&server, "/page.html", "gzip, br");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.body, page());
    // Only gzip offered, and a lower size floor.
    let server = Server::start(
        &site,
        json!({"compression": {"encodings": ["gzip"], "min_size": 10}}),
        &[],
    );
    assert_eq!(
        get_with(&server, "/page.html", "br, zstd, gzip").header("content-encoding"),
        Some("gzip")
    );
    assert_eq!(
        get_with(&server, "/small.txt", "gzip").header("content-encoding"),
        Some("gzip")
    );
    for (config, key) in [
        (
            r#"{"compression": {"encodings": ["lzma"]}}"#,
            "compression.encodings",
        ),
        (
            r#"{"compression": {"gzip_level": 12}}"#,
            "compression.gzip_level",
        ),
        (
            r#"{"compression": {"min_size": 10, "max_size": 5}}"#,
            "compression.min_size",
        ),
        (
            r#"{"compression": {"types": ["html"]}}"#,
            "compression.types",
        ),
    ] {
        let (code, stderr) = serve_fails(config, &site.root);
        assert_ne!(code, 0, "{config}");
        assert!(stderr.contains(key), "{config}: {stderr}");
    }
}

#[test]
fn lua_pages_are_encoded_per_response_and_their_own_fields_are_honoured() {
    let site = site();
    let text = "lua says hello to the page, again and again. ".repeat(40);
    site.file(
        "lua.test/plain.lua",
        format!("return function() return '{text}', 200, {{['content-type'] = 'text/plain', etag = '\"lua1\"'}} end\n").as_bytes(),
    )
    .file(
        "lua.test/own.lua",
        format!("return function() return '{text}', 200, {{['content-type'] = 'text/plain', ['content-encoding'] = 'identity-ish'}} end\n").as_bytes(),
    )
    .file(
        "lua.test/keep.lua",
        format!("return function() return '{text}', 200, {{['content-type'] = 'text/plain', ['cache-control'] = 'no-transform'}} end\n").as_bytes(),
    );
    let entry = |file: &str| json!({"methods": {"GET": true}, "file": file}).to_string();
    let data = json!({
        "RLW:API:lua.test": json!([["/plain", "plain", true], ["/own", "own", true], ["/keep", "keep", true]]).to_string(),
        "RLW:API:lua.test:plain": entry("plain.lua"),
        "RLW:API:lua.test:own": entry("own.lua"),
        "RLW:API:lua.test:keep": entry("keep.lua"),
    });
    let file = site.root.join("site.json");
    std::fs::write(&file, data.to_string()).unwrap();
    let server = Server::start(
        &site,
        json!({"store": {"backend": "memory", "site_file": file}}),
        &[],
    );
    let ask = |path: &str| {
        let mut c = Client::connect(server.addr);
        c.send(
            format!("GET {path} HTTP/1.1\r\nHost: lua.test\r\nAccept-Encoding: gzip\r\n\r\n")
                .as_bytes(),
        );
        c.response()
    };
    let r = ask("/plain");
    assert_eq!(r.status, 200, "{}", server.log());
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        r.header("etag"),
        Some("\"lua1-gzip\""),
        "the page's tag, per coding"
    );
    assert_eq!(decode("gzip", &r.body), text.as_bytes());
    // A page that encodes its own body is not encoded again.
    let r = ask("/own");
    assert_eq!(r.headers_named("content-encoding"), ["identity-ish"]);
    assert_eq!(r.text(), text);
    // no-transform: as it is.
    let r = ask("/keep");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), text);
}
