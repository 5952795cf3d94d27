//! The same behaviour from both store backends: the embedded one and a real
//! redis-server started on a free port for the test. Then what a Redis
//! outage looks like: calls fail fast as `Unavailable`, and work again when
//! Redis returns, with the same store object.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use std::net::TcpListener;

use reliw::config::RedisConfig;
use reliw::store::memory::MemoryStore;
use reliw::store::redis::RedisStore;
use reliw::store::{Store, StoreError};
use reliw_tests::redis::RedisServer;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The behaviour every backend must have.
async fn behaves_like_reliw_redis(store: &impl Store) {
    // Strings, absent keys.
    assert_eq!(store.get("RLW:API:missing").await.unwrap(), None);
    store
        .set_with_ttl("RLW:SESSIONS:h:tok", b"alice", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.get("RLW:SESSIONS:h:tok").await.unwrap(),
        Some(b"alice".to_vec())
    );
    assert!(store.del("RLW:SESSIONS:h:tok").await.unwrap());
    assert!(!store.del("RLW:SESSIONS:h:tok").await.unwrap());
    // TTLs end keys.
    store
        .set_with_ttl("RLW:SESSIONS:h:short", b"bob", Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(store.get("RLW:SESSIONS:h:short").await.unwrap(), None);
    // Hashes.
    assert!(store.hgetall("RLW:FILES:h:/a").await.unwrap().is_empty());
    store
        .hset_with_ttl(
            "RLW:FILES:h:/a",
            &[("content", b"<p>x</p>"), ("hash", b"abc"), ("size", b"8")],
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(
        store.hget("RLW:FILES:h:/a", "hash").await.unwrap(),
        Some(b"abc".to_vec())
    );
    assert_eq!(store.hget("RLW:FILES:h:/a", "nope").await.unwrap(), None);
    let all = store.hgetall("RLW:FILES:h:/a").await.unwrap();
    let names: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["content", "hash", "size"]);
    // A type mismatch is a backend error, not a crash or a wrong answer.
    assert!(matches!(
        store.get("RLW:FILES:h:/a").await,
        Err(StoreError::Backend(_))
    ));
    // Fixed-window counters.
    for expected in 1..=3 {
        let n = store
            .incr_window("RLW:LIMITS:h:GET:/:198.18.0.1", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(n, expected);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let n = store
        .incr_window("RLW:LIMITS:h:GET:/:198.18.0.1", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(n, 1, "a new window starts after the TTL");
    // Metrics in a batch, RELIW's hash layout.
    let batch = vec![
        ("RLW:METRICS:h:total".to_owned(), "200".to_owned(), 3),
        ("RLW:METRICS:h:total".to_owned(), "404".to_owned(), 1),
        ("RLW:METRICS:h:by_method".to_owned(), "GET".to_owned(), 4),
    ];
    store.hincr_batch(&batch).await.unwrap();
    store.hincr_batch(&batch).await.unwrap();
    assert_eq!(
        store.hget("RLW:METRICS:h:total", "200").await.unwrap(),
        Some(b"6".to_vec())
    );
    assert_eq!(
        store.hget("RLW:METRICS:h:by_method", "GET").await.unwrap(),
        Some(b"8".to_vec())
    );
    store.publish("RLW:WAFFERS", b"198.18.0.66").await.unwrap();
}

#[test]
fn memory_store_behaves_like_redis() {
    let store = MemoryStore::new();
    runtime().block_on(behaves_like_reliw_redis(&store));
    assert_eq!(
        store.published(),
        [("RLW:WAFFERS".to_owned(), b"198.18.0.66".to_vec())]
    );
}

#[test]
fn redis_store_behaves_like_redis() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let store = RedisStore::new(&server.config()).unwrap();
        behaves_like_reliw_redis(&store).await;
    });
}

#[test]
fn site_files_load_reliw_keys() {
    let site = r#"{
        "RLW:API:localhost": [["/", "home", true], ["^/docs/", "docs"]],
        "RLW:API:localhost:home": {"methods": {"GET": true}, "file": "index.md"},
        "RLW:USERS:localhost": {"alice": {"pass": "00ff", "salt": "s"}},
        "RLW:WAF": {"__": {"query": ["union"]}},
        "RLW:DATA:__:greeting": "hello"
    }"#;
    let store = MemoryStore::from_json(site, "RLW").unwrap();
    runtime().block_on(async {
        let routes = store.get("RLW:API:localhost").await.unwrap().unwrap();
        let routes: serde_json::Value = serde_json::from_slice(&routes).unwrap();
        assert_eq!(routes[0][1], "home");
        let meta = store.get("RLW:API:localhost:home").await.unwrap().unwrap();
        assert!(String::from_utf8(meta).unwrap().contains("index.md"));
        let user = store
            .hget("RLW:USERS:localhost", "alice")
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(user).unwrap().contains("\"salt\""));
        assert!(store.hget("RLW:WAF", "__").await.unwrap().is_some());
        assert_eq!(
            store.get("RLW:DATA:__:greeting").await.unwrap(),
            Some(b"hello".to_vec())
        );
    });
    assert!(MemoryStore::from_json(r#"{"RLW:USERS:h": "not a hash"}"#, "RLW").is_err());
    assert!(MemoryStore::from_json("[1]", "RLW").is_err());
}

#[test]
fn redis_outage_fails_fast_and_recovers_without_a_restart() {
    let server = RedisServer::start();
    let port = server.port;
    let config = server.config();
    runtime().block_on(async {
        let store = RedisStore::new(&config).unwrap();
        store
            .set_with_ttl("RLW:k", b"v", Duration::from_secs(60))
            .await
            .unwrap();
        drop(server);
        let started = Instant::now();
        let down = store.get("RLW:k").await;
        assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        // Redis returns (empty: it does not persist): the same store works again.
        let _server = RedisServer::start_on(port);
        let mut recovered = false;
        for _ in 0..50 {
            if store.get("RLW:k").await.is_ok() {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(recovered, "the store did not reconnect");
    });
}

#[test]
fn redis_unreachable_at_start_is_not_an_error_until_used() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    runtime().block_on(async {
        let config = RedisConfig {
            port,
            timeout: 0.5,
            ..RedisConfig::default()
        };
        let store = RedisStore::new(&config).unwrap();
        assert!(matches!(
            store.get("RLW:x").await,
            Err(StoreError::Unavailable(_))
        ));
        let _server = RedisServer::start_on(port);
        let mut ok = false;
        for _ in 0..50 {
            if store.get("RLW:x").await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "the store never connected once Redis was up");
    });
}
