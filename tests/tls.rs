//! TLS termination, black-box: certificates made by a CA generated in the
//! test, the real binary, a rustls client that checks what it is shown.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reliw_tests::server::{Server, Site, serve_fails};
use reliw_tests::tls::{TestCa, any_cert_client, connect, get, presented};
use reliw_tests::wait_until;
use serde_json::json;

struct Certs {
    ca: TestCa,
    default: reliw_tests::tls::Leaf,
    a: reliw_tests::tls::Leaf,
    b: reliw_tests::tls::Leaf,
}

fn certs(site: &Site) -> Certs {
    let ca = TestCa::new();
    let default = ca.leaf(&site.root, "default", &["default.test"], false);
    let a = ca.leaf(&site.root, "a", &["a.test"], false);
    let b = ca.leaf(&site.root, "b", &["b.test", "www.b.test"], true);
    Certs { ca, default, a, b }
}

fn ssl(certs: &Certs, port: Option<u16>) -> serde_json::Value {
    let pair = |l: &reliw_tests::tls::Leaf| json!({"cert": l.cert, "key": l.key});
    let mut ssl = json!({
        "default": pair(&certs.default),
        "hosts": {"a.test": pair(&certs.a), "B.test": pair(&certs.b)},
    });
    if let Some(p) = port {
        ssl["port"] = p.into();
    }
    ssl
}

fn site() -> Site {
    let site = Site::new();
    site.file("a.test/index.html", b"<p>site a</p>\n")
        .file("__/index.html", b"<p>everyone</p>\n");
    site
}

#[test]
fn sni_picks_the_certificate_and_http_runs_inside() {
    let site = site();
    let certs = certs(&site);
    let server = Server::start(&site, json!({"ssl": ssl(&certs, None)}), &[]);
    let addr = server.tls_addrs[0];
    assert!(
        server.addrs.is_empty(),
        "RELIW: with ssl, port speaks TLS only"
    );

    // Verified against the test CA, one certificate per name.
    let client = certs.ca.client(&[&rustls::version::TLS13]);
    let mut a = connect(addr, "a.test", client.clone()).unwrap();
    assert_eq!(presented(&a), certs.a.der);
    assert_eq!(a.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        a.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let (status, body) = get(&mut a, "a.test", "/index.html");
    assert_eq!((status, body.as_slice()), (200, &b"<p>site a</p>\n"[..]));
    // Keep-alive inside TLS.
    let (status, _) = get(&mut a, "a.test", "/index.html");
    assert_eq!(status, 200);
    let b = connect(addr, "www.b.test", client.clone());
    assert!(
        b.is_err(),
        "www.b.test is not a configured name: the default is shown"
    );
    let b = connect(addr, "b.test", client.clone()).unwrap();
    assert_eq!(
        presented(&b),
        certs.b.der,
        "Ed25519, matched case-insensitively"
    );

    // Unknown names and no SNI at all get the default certificate.
    let unknown = connect(addr, "nobody.test", any_cert_client()).unwrap();
    assert_eq!(presented(&unknown), certs.default.der);
    let no_sni = connect(addr, "127.0.0.1", any_cert_client()).unwrap();
    assert_eq!(presented(&no_sni), certs.default.der);

    // TLS 1.2 too; resumption on the second connection.
    let tls12 = certs.ca.client(&[&rustls::version::TLS12]);
    let mut c = connect(addr, "default.test", tls12).unwrap();
    assert_eq!(
        c.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(get(&mut c, "default.test", "/index.html").0, 200);
    let mut first = connect(addr, "a.test", client.clone()).unwrap();
    assert_eq!(
        get(&mut first, "a.test", "/index.html").0,
        200,
        "tickets arrive"
    );
    let second = connect(addr, "a.test", client).unwrap();
    assert_eq!(
        second.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
}

#[test]
fn plain_and_tls_side_by_side_and_handshake_timeout() {
    let site = site();
    let certs = certs(&site);
    let server = Server::start(
        &site,
        json!({"ssl": ssl(&certs, Some(0)), "tls_handshake_timeout": 1}),
        &[],
    );
    assert_eq!((server.addrs.len(), server.tls_addrs.len()), (1, 1));
    let plain = reliw_tests::server::get(server.addrs[0], "a.test", "/index.html");
    assert_eq!(plain.status, 200);
    let mut tls = connect(
        server.tls_addrs[0],
        "a.test",
        certs.ca.client(&[&rustls::version::TLS13]),
    )
    .unwrap();
    assert_eq!(get(&mut tls, "a.test", "/index.html").0, 200);
    // The last response ends with close_notify: a clean TLS EOF.
    std::io::Write::write_all(
        &mut tls,
        b"GET /index.html HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .expect("close_notify, not a truncation");
    assert!(rest.starts_with(b"HTTP/1.1 200"));
    // A client that never says hello is cut at the handshake timeout.
    let mut idle = TcpStream::connect(server.tls_addrs[0]).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let n = idle.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Garbage instead of a ClientHello ends the connection, not the server.
    let mut junk = TcpStream::connect(server.tls_addrs[0]).unwrap();
    std::io::Write::write_all(&mut junk, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    let _ = junk.read_to_end(&mut sink);
    assert_eq!(
        reliw_tests::server::get(server.addrs[0], "a.test", "/index.html").status,
        200
    );
}

#[test]
fn sighup_reloads_certificates_and_keeps_them_when_the_new_ones_are_bad() {
    let site = site();
    let certs = certs(&site);
    let server = Server::start(&site, json!({"ssl": ssl(&certs, None)}), &[]);
    let addr = server.tls_addrs[0];
    let mut open = connect(addr, "a.test", certs.ca.client(&[&rustls::version::TLS13])).unwrap();
    assert_eq!(get(&mut open, "a.test", "/index.html").0, 200);

    // New files in place, SIGHUP: new connections see the new certificate.
    let renewed = certs
        .ca
        .leaf(&site.root, "default", &["default.test"], false);
    server.send_signal(rustix::process::Signal::HUP);
    let seen = wait_until(Duration::from_secs(5), || {
        connect(addr, "zzz.test", any_cert_client()).is_ok_and(|s| presented(&s) == renewed.der)
    });
    assert!(seen, "{}", server.log());
    // The connection opened before the reload still works.
    assert_eq!(get(&mut open, "a.test", "/index.html").0, 200);

    // A broken key: the old certificates stay.
    std::fs::write(
        &renewed.key,
        b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    server.send_signal(rustix::process::Signal::HUP);
    assert!(wait_until(Duration::from_secs(5), || server
        .log()
        .contains("keeping the old certificates")));
    let still = connect(addr, "zzz.test", any_cert_client()).unwrap();
    assert_eq!(presented(&still), renewed.der);
}

#[test]
fn broken_certificates_stop_start_up_naming_the_file() {
    let site = site();
    let certs = certs(&site);
    std::fs::write(&certs.a.cert, b"not a certificate\n").unwrap();
    let config = json!({"ssl": ssl(&certs, None), "port": 0, "data_dir": site.www()}).to_string();
    let (code, stderr) = serve_fails(&config, &site.root);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("ssl.hosts.a.test.cert") && stderr.contains("a.crt"),
        "{stderr}"
    );
    // A key that does not match its certificate.
    let other = certs.ca.leaf(&site.root, "other", &["x.test"], false);
    let mut ssl = ssl(&certs, None);
    ssl["hosts"] = json!({});
    ssl["default"]["key"] = json!(other.key);
    let config = json!({"ssl": ssl, "port": 0, "data_dir": site.www()}).to_string();
    let (code, stderr) = serve_fails(&config, &site.root);
    assert_ne!(code, 0);
    assert!(stderr.contains("ssl.default.key"), "{stderr}");
}
