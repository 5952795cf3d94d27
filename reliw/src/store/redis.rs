//! The Redis backend: one lazily connecting `ConnectionManager` per worker
//! (it reconnects by itself with backoff), and a timeout on every call, so a
//! Redis that is down or slow turns into [`StoreError::Unavailable`] and a
//! 503 for the requests that need it, never a stuck or dead worker. When
//! Redis comes back, the next call succeeds without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, RedisError};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{Store, StoreError};
use crate::config::RedisConfig;

/// A Redis store for one worker (the connection lives on its runtime).
#[derive(Clone)]
pub struct RedisStore {
    manager: ConnectionManager,
    timeout: Duration,
    breaker: Arc<Breaker>,
}

/// After a connection failure, calls fail at once for [`Breaker::PAUSE`]
/// instead of each waiting out the timeout while Redis is down; one call
/// per pause probes again. So an outage costs cached pages nothing and
/// uncached ones a fast 503.
#[derive(Default)]
struct Breaker {
    /// Milliseconds since `epoch` until which calls fail fast (0: closed).
    open_until_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Breaker {
    const PAUSE: Duration = Duration::from_millis(500);

    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_open(&self) -> bool {
        self.now_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    fn trip(&self) {
        let until = self.now_ms() + Self::PAUSE.as_millis() as u64;
        self.open_until_ms.store(until, Ordering::Relaxed);
    }

    fn reset(&self) {
        self.open_until_ms.store(0, Ordering::Relaxed);
    }
}

impl RedisStore {
    /// Sets up the connection manager; it connects on first use, so this
    /// succeeds even while Redis is down. Must run inside a tokio runtime.
    pub fn new(config: &RedisConfig) -> Result<Self, StoreError> {
        let client = client(config)?;
        let timeout = Duration::from_secs_f64(config.timeout);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager =
            ConnectionManager::new_lazy_with_config(client, manager_config).map_err(backend)?;
        Ok(Self {
            manager,
            timeout,
            breaker: Arc::new(Breaker::default()),
        })
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut con = self.manager.clone();
        self.guarded(cmd.query_async::<T>(&mut con)).await
    }

    async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut con = self.manager.clone();
        self.guarded(pipe.query_async::<T>(&mut con)).await
    }

    /// A call with the timeout and the breaker around it.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        if self.breaker.is_open() {
            return Err(StoreError::Unavailable(String::from(
                "redis is unreachable (retrying every 500 ms)",
            )));
        }
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(classify),
            Err(_) => Err(StoreError::Unavailable(String::from(
                "redis call timed out",
            ))),
        };
        match &result {
            Err(StoreError::Unavailable(_)) => self.breaker.trip(),
            _ => self.breaker.reset(),
        }
        result
    }
}

/// A client for `config` (no connection is made yet).
pub fn client(config: &RedisConfig) -> Result<redis::Client, StoreError> {
    let mut settings = redis::RedisConnectionInfo::default().set_db(i64::from(config.db));
    if let Some(auth) = &config.auth {
        if let Some(user) = &auth.user {
            settings = settings.set_username(user);
        }
        if let Some(pass) = &auth.pass {
            settings = settings.set_password(pass);
        }
    }
    if !config.ssl {
        let info = (config.host.as_str(), config.port)
            .into_connection_info()
            .map_err(backend)?
            .set_redis_settings(settings);
        return redis::Client::open(info).map_err(backend);
    }
    // TLS: the server's name (or IP address) is checked against its
    // certificate; never `insecure`.
    let info = redis::ConnectionAddr::TcpTls {
        host: config.host.clone(),
        port: config.port,
        insecure: false,
        tls_params: None,
    }
    .into_connection_info()
    .map_err(backend)?
    .set_redis_settings(settings);
    // Read and checked here (at start-up, for the whole process): a file
    // without a certificate or key would otherwise mean an empty trust
    // store or no client certificate, found out only per request.
    let read = |key: &str, path: &std::path::Path, what: Pem| {
        let bytes = std::fs::read(path).map_err(|e| {
            StoreError::Backend(format!("{key}: cannot read {}: {e}", path.display()))
        })?;
        let found = match what {
            Pem::Certificates => {
                CertificateDer::pem_slice_iter(&bytes)
                    .filter_map(Result::ok)
                    .count()
                    > 0
            }
            Pem::Key => PrivateKeyDer::from_pem_slice(&bytes).is_ok(),
        };
        if !found {
            return Err(StoreError::Backend(format!(
                "{key}: no PEM {} in {}",
                match what {
                    Pem::Certificates => "certificate",
                    Pem::Key => "private key",
                },
                path.display()
            )));
        }
        Ok(bytes)
    };
    let t = &config.tls;
    let root_cert = match &t.ca_file {
        Some(path) => Some(read("redis.tls.ca_file", path, Pem::Certificates)?),
        None => None,
    };
    let client_tls = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("redis.tls.cert_file", cert, Pem::Certificates)?,
            client_key: read("redis.tls.key_file", key, Pem::Key)?,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| StoreError::Backend(format!("redis.tls: {e}")))
}

/// What a PEM file given for `redis.tls` must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    Key,
}

fn backend(e: RedisError) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Connection trouble is `Unavailable` (503, retried later); anything the
/// server said is `Backend`.
fn classify(e: RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)
}

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(redis::cmd("GET").arg(key)).await
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(redis::cmd("HGET").arg(key).arg(field)).await
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut pairs: Vec<(String, Vec<u8>)> = self.run(redis::cmd("HGETALL").arg(key)).await?;
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(pairs)
    }

    async fn hset_with_ttl(
        &self,
        key: &str,
        fields: &[(&str, &[u8])],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut hset = redis::cmd("HSET");
        hset.arg(key);
        for (f, v) in fields {
            hset.arg(*f).arg(*v);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(hset).ignore();
        pipe.cmd("EXPIRE").arg(key).arg(secs(ttl)).ignore();
        self.run_pipe(&pipe).await
    }

    async fn set_with_ttl(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.run(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(secs(ttl)),
        )
        .await
    }

    async fn del(&self, key: &str) -> Result<bool, StoreError> {
        let n: i64 = self.run(redis::cmd("DEL").arg(key)).await?;
        Ok(n > 0)
    }

    async fn incr_window(&self, key: &str, window: Duration) -> Result<i64, StoreError> {
        // EXPIRE ... NX sets the window only when the counter has none, so
        // the pipeline is one round trip and a lost EXPIRE heals itself.
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(key);
        pipe.cmd("EXPIRE")
            .arg(key)
            .arg(secs(window))
            .arg("NX")
            .ignore();
        let (n,): (i64,) = self.run_pipe(&pipe).await?;
        Ok(n)
    }

    async fn hincr_batch(
        &self,
        increments: &[(String, String, i64)],
    ) -> Result<Vec<i64>, StoreError> {
        if increments.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (key, field, by) in increments {
            pipe.cmd("HINCRBY").arg(key).arg(field).arg(*by);
        }
        self.run_pipe(&pipe).await
    }

    async fn scan(
        &self,
        pattern: &str,
        count: u32,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(count),
                )
                .await?;
            for key in batch {
                if keys.len() >= limit {
                    return Ok(keys);
                }
                keys.push(key);
            }
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn publish(&self, channel: &str, message: &[u8]) -> Result<i64, StoreError> {
        self.run(redis::cmd("PUBLISH").arg(channel).arg(message))
            .await
    }
}
