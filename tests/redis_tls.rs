//! Redis over TLS and with ACLs: a real redis-server with a TLS port and
//! certificates made here (rcgen), reliw's site data read through it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use reliw_tests::redis::{RedisServer, free_port};
use reliw_tests::server::{Server, Site, get, serve_fails};
use reliw_tests::tls::{Leaf, TestCa};
use reliw_tests::wait_until;
use serde_json::{Value, json};

const HOST: &str = "tls.test";

fn site() -> Site {
    let site = Site::new();
    site.file("tls.test/index.html", b"<p>from behind TLS</p>");
    site
}

fn site_data() -> Value {
    json!({
        "RLW:API:tls.test": [["/", "home", true]],
        "RLW:API:tls.test:home": {"methods": {"GET": true}, "file": "index.html"},
    })
}

/// A redis-server with a TLS port beside its plain one (the plain one
/// provisions); `clients`: `tls-auth-clients` (`yes` asks reliw for a
/// certificate).
fn tls_redis(dir: &Path, ca: &TestCa, clients: &str) -> (RedisServer, u16) {
    let leaf = ca.leaf(dir, "redis", &["127.0.0.1"], false);
    let ca_file = dir.join("redis-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let tls_port = free_port();
    let (port, cert, key, ca_path) = (
        tls_port.to_string(),
        leaf.cert.to_str().unwrap().to_owned(),
        leaf.key.to_str().unwrap().to_owned(),
        ca_file.to_str().unwrap().to_owned(),
    );
    let redis = RedisServer::start_with(
        free_port(),
        &[
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca_path,
            "--tls-auth-clients",
            clients,
        ],
    );
    let up = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });
    assert!(up, "redis did not listen for TLS on {tls_port}");
    redis.load(&site_data());
    (redis, tls_port)
}

fn reliw(site: &Site, tls_port: u16, redis: Value) -> Server {
    let mut section =
        json!({"host": "127.0.0.1", "port": tls_port, "db": 13, "timeout": 1.0, "ssl": true});
    for (k, v) in redis.as_object().unwrap() {
        section[k] = v.clone();
    }
    Server::start(
        site,
        json!({"store": {"backend": "redis"}, "redis": section}),
        &[],
    )
}

fn ca_file(site: &Site, ca: &TestCa, name: &str) -> String {
    let path = site.root.join(name);
    std::fs::write(&path, &ca.pem).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn site_data_is_read_over_tls_and_the_certificate_is_checked() {
    let site = site();
    let ca = TestCa::new();
    let (_redis, tls_port) = tls_redis(&site.root, &ca, "no");
    let server = reliw(
        &site,
        tls_port,
        json!({"tls": {"ca_file": ca_file(&site, &ca, "ca.pem")}}),
    );
    let r = get(server.addr, HOST, "/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "<p>from behind TLS</p>"),
        "{}",
        server.log()
    );

    // A Redis whose certificate does not chain to the CA given: no data,
    // a 503, never a plain-text fallback.
    let other = TestCa::new();
    let server = reliw(
        &site,
        tls_port,
        json!({"tls": {"ca_file": ca_file(&site, &other, "other.pem")}}),
    );
    assert_eq!(get(server.addr, HOST, "/").status, 503);
}

#[test]
fn a_redis_that_asks_for_client_certificates_gets_reliws() {
    let site = site();
    let ca = TestCa::new();
    let (_redis, tls_port) = tls_redis(&site.root, &ca, "yes");
    let ca_path = ca_file(&site, &ca, "ca.pem");
    // Without a client certificate: refused by Redis, 503 here.
    let server = reliw(&site, tls_port, json!({"tls": {"ca_file": ca_path}}));
    assert_eq!(get(server.addr, HOST, "/").status, 503);
    let Leaf { cert, key, .. } = ca.leaf(&site.root, "reliw-client", &["reliw"], false);
    let server = reliw(
        &site,
        tls_port,
        json!({"tls": {"ca_file": ca_path, "cert_file": cert, "key_file": key}}),
    );
    let r = get(server.addr, HOST, "/");
    assert_eq!(r.status, 200, "{}", server.log());
}

#[test]
fn an_acl_user_is_logged_in_as_itself() {
    let site = site();
    let redis = RedisServer::start();
    redis.load(&site_data());
    let _: String = redis.cmd(&[
        "ACL", "SETUSER", "edge", "on", ">s3cret", "~RLW:*", "&*", "+@all",
    ]);
    let start = |pass: &str| {
        Server::start(
            &site,
            json!({
                "store": {"backend": "redis"},
                "redis": {"host": "127.0.0.1", "port": redis.port, "db": 13, "timeout": 1.0,
                          "auth": {"user": "edge", "pass": pass}},
            }),
            &[],
        )
    };
    let server = start("s3cret");
    assert_eq!(get(server.addr, HOST, "/").status, 200, "{}", server.log());
    let server = start("wrong");
    assert_eq!(get(server.addr, HOST, "/").status, 503);
}

#[test]
fn unusable_tls_settings_stop_start_up_naming_the_key() {
    let site = site();
    let ca = TestCa::new();
    let ca_path = ca_file(&site, &ca, "ca.pem");
    std::fs::write(site.root.join("junk.pem"), b"not a certificate").unwrap();
    let junk = site.root.join("junk.pem");
    for (redis, key) in [
        (
            json!({"ssl": true, "tls": {"ca_file": "/nonexistent/ca.pem"}}),
            "redis.tls.ca_file",
        ),
        (
            json!({"ssl": false, "tls": {"ca_file": ca_path}}),
            "redis.tls",
        ),
        (
            json!({"ssl": true, "tls": {"ca_file": ca_path, "cert_file": ca_path}}),
            "redis.tls.cert_file",
        ),
        (json!({"ssl": true, "tls": {"ca_file": junk}}), "redis.tls"),
    ] {
        let config = json!({
            "data_dir": site.www(),
            "port": 0,
            "store": {"backend": "redis"},
            "redis": redis,
            "metrics": {"disabled": true},
        });
        let (code, stderr) = serve_fails(&config.to_string(), &site.root);
        assert_ne!(code, 0, "{redis}: {stderr}");
        assert!(stderr.contains(key), "{redis}: {stderr}");
    }
}
