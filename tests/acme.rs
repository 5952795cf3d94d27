//! ACME for the fleet against a real CA: Debian's `pebble` (RFC 8555),
//! with `pebble-challtestsrv` as its DNS (every name is 127.0.0.1, TXT
//! records set by the dns-01 hook). Three reliw nodes share one Redis:
//! the CA's http-01 checks reach only the first, which runs no ACME at
//! all; of the other two one orders, both serve, and a renewal reaches
//! both without a restart. A name the CA cannot validate fails once for
//! the whole fleet, then waits out its backoff.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reliw_tests::redis::{RedisServer, free_port};
use reliw_tests::server::{Server, Site, serve_fails};
use reliw_tests::tls::{TestCa, any_cert_client, connect, presented};
use reliw_tests::wait_until;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::json;

/// A child process killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn listening(port: u16) -> bool {
    wait_until(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}

/// pebble and its DNS, for http-01 checks on `http_port`.
struct Ca {
    _dns: Daemon,
    _pebble: Daemon,
    directory: String,
    management: u16,
    dns_management: u16,
    /// The CA file for the directory's HTTPS.
    https_ca: std::path::PathBuf,
}

impl Ca {
    fn start(dir: &Path, http_port: u16) -> Self {
        let (dns_port, dns_management) = (free_port(), free_port());
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (installed by cargo xtask setup) starts");
        let dns = Daemon(dns);
        assert!(
            listening(dns_management),
            "pebble-challtestsrv did not start"
        );
        // pebble's own HTTPS certificate, from a CA made here.
        let ca = TestCa::new();
        let leaf = ca.leaf(dir, "pebble", &["localhost", "127.0.0.1"], false);
        let https_ca = dir.join("pebble-https-ca.pem");
        std::fs::write(&https_ca, &ca.pem).unwrap();
        let (listen, management) = (free_port(), free_port());
        let config = dir.join("pebble.json");
        std::fs::write(
            &config,
            json!({"pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": leaf.cert, "privateKey": leaf.key,
                "httpPort": http_port, "tlsPort": free_port(),
                "ocspResponderURL": "", "externalAccountBindingRequired": false,
            }})
            .to_string(),
        )
        .unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (installed by cargo xtask setup) starts");
        let pebble = Daemon(pebble);
        assert!(
            listening(listen) && listening(management),
            "pebble did not start"
        );
        Self {
            _dns: dns,
            _pebble: pebble,
            directory: format!("https://localhost:{listen}/dir"),
            management,
            dns_management,
            https_ca,
        }
    }

    /// A TLS client that trusts only what this CA issues.
    fn client(&self) -> Arc<rustls::ClientConfig> {
        let out = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&self.https_ca)
            .arg(format!("https://localhost:{}/roots/0", self.management))
            .output()
            .unwrap();
        assert!(out.status.success(), "pebble's root: {out:?}");
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&out.stdout) {
            roots.add(der.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// The certificate `addr` presents for `name`, if it checks out against
/// the CA's root.
fn issued(addr: SocketAddr, name: &str, client: &Arc<rustls::ClientConfig>) -> Option<Vec<u8>> {
    connect(addr, name, Arc::clone(client))
        .ok()
        .map(|s| presented(&s).to_vec())
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn one_node_orders_every_node_serves_and_renewals_reach_all_without_restart() {
    let site = Site::new();
    let redis = RedisServer::start();
    let http_port = free_port();
    let ca = Ca::start(&site.root, http_port);
    let key_file = site.root.join("acme.key");
    std::fs::write(&key_file, "7f".repeat(32)).unwrap();
    // The dns-01 hook: TXT records into pebble's DNS, each call noted.
    let hook = site.root.join("dns-hook.sh");
    let calls = site.root.join("dns-hook.calls");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1 $2 $3 $5\" >> {calls}\n\
             case \"$1\" in\n\
             present) body=\"{{\\\"host\\\":\\\"$3.\\\",\\\"value\\\":\\\"$4\\\"}}\"; path=set-txt ;;\n\
             cleanup) body=\"{{\\\"host\\\":\\\"$3.\\\"}}\"; path=clear-txt ;;\n\
             esac\n\
             exec curl -sf -X POST -d \"$body\" http://127.0.0.1:{port}/$path\n",
            calls = calls.display(),
            port = ca.dns_management
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A file certificate for every other name: it keeps working beside ACME.
    let files_ca = TestCa::new();
    let file_cert = files_ca.leaf(&site.root, "default", &["files.test"], false);
    // The CA reaches only this node; it answers the tokens other nodes
    // published in the store.
    let front = Server::start(
        &site,
        json!({
            "port": http_port,
            "store": {"backend": "redis"},
            "redis": redis.config_json(),
        }),
        &[],
    );
    // fail.test resolves where nothing listens: its validation fails.
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-d",
            r#"{"host":"fail.test.","addresses":["127.0.0.2"]}"#,
        ])
        .arg(format!("http://127.0.0.1:{}/add-a", ca.dns_management))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let node = || {
        Server::start(
            &site,
            json!({
                "port": 0,
                "store": {"backend": "redis"},
                "redis": redis.config_json(),
                "ssl": {"port": 0, "default": {"cert": file_cert.cert, "key": file_cert.key}, "acme": {
                    "account": "ops@a.test",
                    "directory": ca.directory,
                    "ca_file": ca.https_ca,
                    "key_file": key_file,
                    "dns_hook": hook,
                    "dns_wait": 1,
                    "check_interval": 1,
                    "certificates": [
                        {"names": ["a.test", "www.a.test"]},
                        {"names": ["*.w.test"], "provider": "challtestsrv"},
                        {"names": ["fail.test"]}
                    ]
                }},
            }),
            &[],
        )
    };
    let first = node();
    let second = node();
    let client = ca.client();
    let logs = || format!("{}\n--- second node ---\n{}", first.log(), second.log());
    let served = wait_until(Duration::from_secs(90), || {
        [&first, &second].iter().all(|n| {
            ["a.test", "www.a.test", "x.w.test"]
                .iter()
                .all(|name| issued(n.tls_addrs[0], name, &client).is_some())
        })
    });
    assert!(
        served,
        "not every node serves the issued certificates: {}",
        logs()
    );
    let original = issued(first.tls_addrs[0], "a.test", &client).unwrap();
    assert_eq!(
        issued(second.tls_addrs[0], "a.test", &client).unwrap(),
        original
    );
    let both = logs();
    assert_eq!(
        count(&both, "acme: certificate issued and stored"),
        2,
        "each certificate ordered once for the fleet: {both}"
    );
    assert!(
        front.log().contains("LetsEncrypt-Pebble-VA"),
        "the CA's checks reached the node without ACME: {}",
        front.log()
    );

    // The name the CA cannot validate: one failed order for the fleet,
    // then a backoff every node honours.
    let failed = || {
        [&first, &second]
            .iter()
            .map(|n| n.metric("reliw_acme_orders_total{result=\"failed\"}"))
            .sum::<f64>()
    };
    assert!(
        wait_until(Duration::from_secs(30), || failed() >= 1.0),
        "{}",
        logs()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(failed(), 1.0, "the fleet retried at once: {}", logs());
    let retry: i64 = redis.cmd(&["TTL", "RLW:ACME:RETRY:fail.test"]);
    assert!((50..=120).contains(&retry), "retry after {retry} s");
    assert!(logs().contains("acme: order failed"), "{}", logs());
    assert!(issued(first.tls_addrs[0], "fail.test", &client).is_none());

    // Names ACME does not manage get the file certificate.
    let other = connect(first.tls_addrs[0], "files.test", any_cert_client()).unwrap();
    assert_eq!(presented(&other), file_cert.der);

    // What the store keeps: the chain, the key sealed, no lock, no tokens.
    let record: Vec<(String, String)> = redis.cmd(&["HGETALL", "RLW:ACME:CERT:a.test"]);
    let field = |n: &str| {
        record
            .iter()
            .find(|(f, _)| f == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert!(field("chain").contains("BEGIN CERTIFICATE"));
    assert!(!field("key").contains("PRIVATE KEY"), "the key is sealed");
    assert_eq!(field("names"), "a.test www.a.test");
    let lock: Option<String> = redis.cmd(&["GET", "RLW:ACME:LOCK:a.test"]);
    assert_eq!(lock, None);
    let (_, tokens): (String, Vec<String>) = redis.cmd(&[
        "SCAN",
        "0",
        "MATCH",
        "RLW:DATA:*acme-challenge*",
        "COUNT",
        "1000",
    ]);
    assert!(tokens.is_empty(), "tokens left behind: {tokens:?}");
    let account: Option<String> =
        redis.cmd(&["GET", &format!("RLW:ACME:ACCOUNT:{}", ca.directory)]);
    assert!(
        account.is_some_and(|a| !a.contains("key_pkcs8")),
        "the account is stored sealed"
    );
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(
        calls.contains("present w.test _acme-challenge.w.test challtestsrv")
            && calls.contains("cleanup w.test _acme-challenge.w.test challtestsrv"),
        "{calls}"
    );

    // The renewal window opens (as if 10 s before expiry): one node
    // renews, both serve the new certificate, no restart.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 10;
    let _: i64 = redis.cmd(&[
        "HSET",
        "RLW:ACME:CERT:a.test",
        "not_after",
        &soon.to_string(),
    ]);
    let renewed = wait_until(Duration::from_secs(60), || {
        [&first, &second]
            .iter()
            .all(|n| issued(n.tls_addrs[0], "a.test", &client).is_some_and(|c| c != original))
    });
    assert!(renewed, "the renewal did not reach every node: {}", logs());
    // A SIGHUP's new TLS config keeps serving the ACME certificates.
    let renewed_cert = issued(first.tls_addrs[0], "a.test", &client).unwrap();
    first.send_signal(rustix::process::Signal::HUP);
    assert!(
        wait_until(Duration::from_secs(5), || first
            .log()
            .contains("certificates reloaded")),
        "{}",
        first.log()
    );
    assert_eq!(
        issued(first.tls_addrs[0], "a.test", &client),
        Some(renewed_cert)
    );
    assert_eq!(
        presented(&connect(first.tls_addrs[0], "files.test", any_cert_client()).unwrap()),
        file_cert.der
    );
    assert_eq!(
        count(&logs(), "acme: certificate issued and stored"),
        3,
        "{}",
        logs()
    );
    assert!(logs().contains("reason=\"renewal window\""), "{}", logs());
    // What an operator sees in the metrics.
    let issued_total: f64 = [&first, &second]
        .iter()
        .map(|n| n.metric("reliw_acme_orders_total{result=\"issued\"}"))
        .sum();
    assert_eq!(issued_total, 3.0);
    let expiry = second.metric("reliw_acme_certificate_not_after_seconds{certificate=\"a.test\"}");
    assert!(
        expiry > (soon + 86_400) as f64,
        "the renewed expiry is served: {expiry}"
    );
}

#[test]
fn a_bad_acme_key_file_stops_start_up() {
    let site = Site::new();
    let key_file = site.root.join("acme.key");
    std::fs::write(&key_file, "not hex").unwrap();
    let config = json!({
        "data_dir": site.www(), "port": 0, "metrics": {"disabled": true},
        "store": {"backend": "redis"},
        "ssl": {"acme": {"key_file": key_file, "certificates": [{"names": ["a.test"]}]}},
    });
    let (code, stderr) = serve_fails(&config.to_string(), &site.root);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("ssl.acme.key_file") && stderr.contains("64 hex digits"),
        "{stderr}"
    );
    let wildcard = json!({
        "data_dir": site.www(), "port": 0, "metrics": {"disabled": true},
        "ssl": {"acme": {"key_file": key_file, "certificates": [{"names": ["*.a.test"]}]}},
    });
    let (code, stderr) = serve_fails(&wildcard.to_string(), &site.root);
    assert_ne!(code, 0);
    assert!(stderr.contains("wildcard needs the dns-01"), "{stderr}");
}
