//! The Redis backend: one lazily connecting `ConnectionManager` per worker
//! (it reconnects by itself with backoff), and a timeout on every call, so a
//! Redis that is down or slow turns into [`StoreError::Unavailable`] and a
//! 503 for the requests that need it, never a stuck or dead worker. When
//! Redis comes back, the next call succeeds without a restart.
//!
//! With `redis.sentinel`, the master is asked of the sentinels (the
//! `redis` crate's Sentinel client) and the connection to it kept; a
//! connection failure or a `READONLY` answer (the old master, demoted)
//! drops it, so the next call asks the sentinels again and follows a
//! failover by itself.
//!
//! With `redis.cluster`, the `redis` crate's cluster client routes each
//! command to the primary of its key's slot and follows MOVED, ASK and
//! failovers itself. RELIW's key schema is kept as it is (no hash tags):
//! every multi-command pipeline touches one key, and the metrics batch,
//! whose keys are spread over slots, goes as concurrent commands instead.
//! SCAN walks every primary with its own cursor. A cluster has only db 0,
//! so `redis.db` is not used there.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{IntoConnectionInfo, RedisError};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{Store, StoreError};
use crate::config::RedisConfig;

/// A Redis store for one worker (the connection lives on its runtime).
#[derive(Clone)]
pub struct RedisStore {
    link: Link,
    timeout: Duration,
    breaker: Arc<Breaker>,
}

/// How calls reach Redis.
#[derive(Clone)]
enum Link {
    /// `host`:`port`, reconnected by the manager.
    Direct(ConnectionManager),
    /// The master the sentinels name.
    Sentinel(Failover),
    /// A Redis Cluster: connected on first use (and again after a failed
    /// first connect), then kept; the crate follows the slots.
    Cluster(Arc<Cluster>),
}

/// A cluster client and its connection, once made.
struct Cluster {
    client: redis::cluster::ClusterClient,
    connection: tokio::sync::OnceCell<ClusterConnection>,
}

impl Cluster {
    async fn connection(&self) -> redis::RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// The master as the sentinels name it, and the connection to it while
/// it works.
#[derive(Clone)]
struct Failover {
    sentinels: Arc<tokio::sync::Mutex<SentinelClient>>,
    master: Arc<std::sync::Mutex<Option<MultiplexedConnection>>>,
    connection: AsyncConnectionConfig,
}

impl Failover {
    fn current(&self) -> Option<MultiplexedConnection> {
        self.master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The master's connection: the kept one, else a new one to whichever
    /// server the sentinels name now.
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(con) = self.current() {
            return Ok(con);
        }
        let mut sentinels = self.sentinels.lock().await;
        if let Some(con) = self.current() {
            return Ok(con);
        }
        let client = sentinels.async_get_client().await?;
        let con = client
            .get_multiplexed_async_connection_with_config(&self.connection)
            .await?;
        *self
            .master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(con.clone());
        Ok(con)
    }

    /// After `e`: whether the master may have moved (then the connection
    /// is dropped and the sentinels asked again on the next call).
    fn note(&self, e: &RedisError) {
        if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            self.forget();
        }
    }

    /// Drops the master's connection: the next call asks the sentinels.
    fn forget(&self) {
        *self
            .master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// What a call sends: one command, or a pipeline of them.
#[derive(Clone, Copy)]
enum Query<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
}

impl Query<'_> {
    async fn on<T: redis::FromRedisValue>(
        self,
        con: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<T> {
        match self {
            Query::Cmd(cmd) => cmd.query_async(con).await,
            Query::Pipe(pipe) => pipe.query_async(con).await,
        }
    }
}

/// After a connection failure, calls fail at once for [`Breaker::PAUSE`]
/// instead of each waiting out the timeout while Redis is down; one call
/// per pause probes again. So an outage costs cached pages nothing and
/// uncached ones a fast 503.
///
/// In a cluster, one breaker per hash slot: a dead primary makes its own
/// slots fail fast while every other shard keeps answering.
struct Breaker {
    /// Milliseconds since `epoch` until which calls fail fast (0: closed),
    /// one entry, or one per slot.
    open_until_ms: Box<[AtomicU64]>,
    epoch: std::sync::OnceLock<Instant>,
}

impl Breaker {
    const PAUSE: Duration = Duration::from_millis(500);
    const SLOTS: usize = 16_384;

    fn new(per_slot: bool) -> Self {
        let n = if per_slot { Self::SLOTS } else { 1 };
        Self {
            open_until_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epoch: std::sync::OnceLock::new(),
        }
    }

    /// Which breaker guards a call on `key` (`None`: a call on no key,
    /// which in a cluster no slot's breaker holds back).
    fn entry(&self, key: Option<&str>) -> Option<&AtomicU64> {
        match self.open_until_ms.len() {
            1 => self.open_until_ms.first(),
            _ => self.open_until_ms.get(usize::from(slot(key?.as_bytes()))),
        }
    }

    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_open(&self, key: Option<&str>) -> bool {
        self.entry(key)
            .is_some_and(|e| self.now_ms() < e.load(Ordering::Relaxed))
    }

    fn trip(&self, key: Option<&str>) {
        if let Some(e) = self.entry(key) {
            e.store(
                self.now_ms() + Self::PAUSE.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
    }

    fn reset(&self, key: Option<&str>) {
        if let Some(e) = self.entry(key) {
            e.store(0, Ordering::Relaxed);
        }
    }
}

/// A key's cluster hash slot: CRC16 (XMODEM) of the key, or of its hash
/// tag (the text between the first `{` and the next `}`, when not empty),
/// modulo 16384.
fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = key.get(open + 1..)?;
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(key) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

impl RedisStore {
    /// Sets up the connection manager; it connects on first use, so this
    /// succeeds even while Redis is down. Must run inside a tokio runtime.
    pub fn new(config: &RedisConfig) -> Result<Self, StoreError> {
        let timeout = Duration::from_secs_f64(config.timeout);
        let link = if config.cluster.is_some() {
            Link::Cluster(Arc::new(Cluster {
                client: cluster_client(config)?,
                connection: tokio::sync::OnceCell::new(),
            }))
        } else if config.sentinel.is_some() {
            Link::Sentinel(Failover {
                sentinels: Arc::new(tokio::sync::Mutex::new(sentinel_client(config)?)),
                master: Arc::new(std::sync::Mutex::new(None)),
                connection: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout)),
            })
        } else {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(2));
            Link::Direct(
                ConnectionManager::new_lazy_with_config(client(config)?, manager_config)
                    .map_err(backend)?,
            )
        };
        let per_slot = matches!(link, Link::Cluster(_));
        Ok(Self {
            link,
            timeout,
            breaker: Arc::new(Breaker::new(per_slot)),
        })
    }

    /// `cmd`, whose key (for the breaker) is `key`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        key: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.exec(Some(key), Query::Cmd(cmd)).await
    }

    /// `pipe`, every command of it on `key`.
    async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        key: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.exec(Some(key), Query::Pipe(pipe)).await
    }

    /// One command or pipeline on whichever link this store has.
    async fn exec<T: redis::FromRedisValue>(
        &self,
        key: Option<&str>,
        query: Query<'_>,
    ) -> Result<T, StoreError> {
        match &self.link {
            Link::Direct(manager) => {
                let mut con = manager.clone();
                self.guarded(key, query.on(&mut con)).await
            }
            Link::Sentinel(failover) => {
                self.guarded(key, async {
                    let mut con = failover.connection().await?;
                    let r = query.on(&mut con).await;
                    if let Err(e) = &r {
                        failover.note(e);
                    }
                    r
                })
                .await
            }
            Link::Cluster(cluster) => {
                self.guarded(key, async {
                    let mut con = cluster.connection().await?;
                    query.on(&mut con).await
                })
                .await
            }
        }
    }

    /// HINCRBYs over a cluster: one command each, all at once (their keys
    /// are in different slots, which a pipeline may not span), each with
    /// its own timeout, so one dead shard fails only its own increments.
    async fn hincr_spread(&self, increments: &[(String, String, i64)]) -> Vec<Option<i64>> {
        let calls = increments.iter().map(|(key, field, by)| async move {
            let mut cmd = redis::cmd("HINCRBY");
            cmd.arg(key).arg(field).arg(*by);
            self.run::<i64>(key, &cmd).await.ok()
        });
        futures_util::future::join_all(calls).await
    }

    /// SCAN over a cluster: every primary in turn, each with its own
    /// cursor (a cursor means nothing to another node).
    async fn scan_cluster(
        &self,
        cluster: &Cluster,
        pattern: &str,
        count: u32,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let primaries: redis::Value = self
            .guarded(None, async {
                let mut con = cluster.connection().await?;
                con.route_command(
                    redis::cmd("PING"),
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                )
                .await
            })
            .await?;
        let redis::Value::Map(primaries) = primaries else {
            return Err(StoreError::Backend(String::from(
                "the cluster did not list its primaries",
            )));
        };
        let mut keys = Vec::new();
        for (address, _) in primaries {
            let address: String =
                redis::from_redis_value(address).map_err(|e| StoreError::Backend(e.to_string()))?;
            let Some((host, port)) = crate::config::node_address(&address) else {
                continue;
            };
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let mut cursor: u64 = 0;
            loop {
                let cmd = scan_command(cursor, pattern, count);
                let reply = self
                    .guarded(None, async {
                        let mut con = cluster.connection().await?;
                        con.route_command(cmd, route.clone()).await
                    })
                    .await?;
                let (next, batch): (u64, Vec<String>) = redis::from_redis_value(reply)
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                if take(&mut keys, batch, limit) || next == 0 {
                    break;
                }
                cursor = next;
            }
            if keys.len() >= limit {
                break;
            }
        }
        Ok(keys)
    }

    /// A call on `key` with the timeout and the breaker around it.
    async fn guarded<T>(
        &self,
        key: Option<&str>,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        if self.breaker.is_open(key) {
            return Err(StoreError::Unavailable(String::from(
                "redis is unreachable (retrying every 500 ms)",
            )));
        }
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(classify),
            Err(_) => {
                // A master that stopped answering may have been replaced.
                if let Link::Sentinel(failover) = &self.link {
                    failover.forget();
                }
                Err(StoreError::Unavailable(String::from(
                    "redis call timed out",
                )))
            }
        };
        match &result {
            Err(StoreError::Unavailable(_)) => self.breaker.trip(key),
            _ => self.breaker.reset(key),
        }
        result
    }
}

/// Builds what `config` asks for without connecting, so a section that
/// cannot work (a certificate file without a certificate, say) stops
/// start-up.
pub fn check(config: &RedisConfig) -> Result<(), StoreError> {
    if config.cluster.is_some() {
        return cluster_client(config).map(drop);
    }
    match config.sentinel {
        Some(_) => sentinel_client(config).map(drop),
        None => client(config).map(drop),
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
    let certificates = certificates(config)?;
    redis::Client::build_with_tls(info, certificates)
        .map_err(|e| StoreError::Backend(format!("redis.tls: {e}")))
}

/// A Sentinel client for `config.sentinel` (no connection yet): the
/// master's connections carry `redis.db`, `redis.auth` and, with
/// `redis.ssl`, TLS with `redis.tls`; the sentinels are asked in plain
/// TCP with `redis.sentinel.auth`.
fn sentinel_client(config: &RedisConfig) -> Result<SentinelClient, StoreError> {
    let Some(s) = &config.sentinel else {
        return Err(StoreError::Backend(String::from(
            "redis.sentinel is not set",
        )));
    };
    let addresses = s
        .addresses
        .iter()
        .filter_map(|a| crate::config::node_address(a))
        .map(|(host, port)| redis::ConnectionAddr::Tcp(host, port));
    let mut builder = SentinelClientBuilder::new(addresses, &s.master, SentinelServerType::Master)
        .map_err(|e| StoreError::Backend(format!("redis.sentinel: {e}")))?
        .set_client_to_redis_db(i64::from(config.db));
    if let Some(auth) = &config.auth {
        if let Some(user) = &auth.user {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(pass) = &auth.pass {
            builder = builder.set_client_to_redis_password(pass);
        }
    }
    if let Some(auth) = &s.auth {
        if let Some(user) = &auth.user {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(pass) = &auth.pass {
            builder = builder.set_client_to_sentinel_password(pass);
        }
    }
    if config.ssl {
        builder = builder
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_redis_certificates(certificates(config)?);
    }
    builder
        .build()
        .map_err(|e| StoreError::Backend(format!("redis.sentinel: {e}")))
}

/// A cluster client for `config.cluster` (no connection yet): the nodes
/// with `redis.auth`, and TLS with `redis.tls` under `redis.ssl`. Retries
/// are short and few: a call must end within `redis.timeout` anyway.
fn cluster_client(config: &RedisConfig) -> Result<redis::cluster::ClusterClient, StoreError> {
    let Some(c) = &config.cluster else {
        return Err(StoreError::Backend(String::from(
            "redis.cluster is not set",
        )));
    };
    let timeout = Duration::from_secs_f64(config.timeout);
    let nodes = c
        .nodes
        .iter()
        .filter_map(|a| crate::config::node_address(a));
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(auth) = &config.auth {
        if let Some(user) = &auth.user {
            builder = builder.username(user.clone());
        }
        if let Some(pass) = &auth.pass {
            builder = builder.password(pass.clone());
        }
    }
    if config.ssl {
        builder = builder.certs(certificates(config)?);
    }
    builder
        .build()
        .map_err(|e| StoreError::Backend(format!("redis.cluster: {e}")))
}

/// A client for connections of their own, like pub/sub: `host`:`port`;
/// with Sentinel, whichever server the sentinels name master now; in a
/// cluster, node `attempt` of `redis.cluster.nodes` (round robin), since
/// a PUBLISH on any node reaches subscribers on every node.
pub async fn subscription_client(
    config: &RedisConfig,
    attempt: usize,
) -> Result<redis::Client, StoreError> {
    if let Some(cluster) = &config.cluster {
        let nodes: Vec<(String, u16)> = cluster
            .nodes
            .iter()
            .filter_map(|a| crate::config::node_address(a))
            .collect();
        let Some((host, port)) = nodes.get(attempt % nodes.len().max(1)) else {
            return Err(StoreError::Backend(String::from(
                "redis.cluster.nodes is empty",
            )));
        };
        let node = RedisConfig {
            host: host.clone(),
            port: *port,
            db: 0,
            cluster: None,
            ..config.clone()
        };
        return client(&node);
    }
    if config.sentinel.is_none() {
        return client(config);
    }
    let mut sentinels = sentinel_client(config)?;
    sentinels.async_get_client().await.map_err(classify)
}

/// The certificates `redis.tls` names, read and checked.
fn certificates(config: &RedisConfig) -> Result<redis::TlsCertificates, StoreError> {
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
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
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
    use redis::ServerErrorKind::{ClusterDown, MasterDown, TryAgain};
    let cluster_trouble = matches!(
        e.kind(),
        redis::ErrorKind::Server(ClusterDown | MasterDown | TryAgain)
    );
    if cluster_trouble
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// `SCAN <cursor> MATCH <pattern> COUNT <count>`.
fn scan_command(cursor: u64, pattern: &str, count: u32) -> redis::Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count);
    cmd
}

/// Adds `batch` to `keys` up to `limit`: whether the limit was reached.
fn take(keys: &mut Vec<String>, batch: Vec<String>, limit: usize) -> bool {
    let room = limit.saturating_sub(keys.len());
    keys.extend(batch.into_iter().take(room));
    keys.len() >= limit
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)
}

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(key, redis::cmd("GET").arg(key)).await
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(key, redis::cmd("HGET").arg(key).arg(field)).await
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut pairs: Vec<(String, Vec<u8>)> =
            self.run(key, redis::cmd("HGETALL").arg(key)).await?;
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
        self.run_pipe(key, &pipe).await
    }

    async fn set_with_ttl(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.run(
            key,
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(secs(ttl)),
        )
        .await
    }

    async fn set_nx_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = self
            .run(
                key,
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("EX")
                    .arg(secs(ttl)),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn del_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        // One script, so the check and the DEL cannot straddle an expiry
        // and another node's SET.
        const SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
        let n: i64 = self
            .run(
                key,
                redis::cmd("EVAL").arg(SCRIPT).arg(1).arg(key).arg(value),
            )
            .await?;
        Ok(n > 0)
    }

    async fn del(&self, key: &str) -> Result<bool, StoreError> {
        let n: i64 = self.run(key, redis::cmd("DEL").arg(key)).await?;
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
        let (n,): (i64,) = self.run_pipe(key, &pipe).await?;
        Ok(n)
    }

    async fn hincr_batch(
        &self,
        increments: &[(String, String, i64)],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let Some((first, _, _)) = increments.first() else {
            return Ok(Vec::new());
        };
        if let Link::Cluster(_) = &self.link {
            return Ok(self.hincr_spread(increments).await);
        }
        let mut pipe = redis::pipe();
        for (key, field, by) in increments {
            pipe.cmd("HINCRBY").arg(key).arg(field).arg(*by);
        }
        let values: Vec<i64> = self.run_pipe(first, &pipe).await?;
        Ok(values.into_iter().map(Some).collect())
    }

    async fn scan(
        &self,
        pattern: &str,
        count: u32,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        if let Link::Cluster(cluster) = &self.link {
            return self.scan_cluster(cluster, pattern, count, limit).await;
        }
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let cmd = scan_command(cursor, pattern, count);
            let (next, batch): (u64, Vec<String>) = self.exec(None, Query::Cmd(&cmd)).await?;
            if take(&mut keys, batch, limit) || next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn publish(&self, channel: &str, message: &[u8]) -> Result<i64, StoreError> {
        self.run(channel, redis::cmd("PUBLISH").arg(channel).arg(message))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::slot;

    #[test]
    fn slots_are_redis_cluster_keyslots() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"a{}b"), slot(b"a{}b"), "an empty tag is no tag");
        assert_ne!(slot(b"a{}b"), slot(b""));
    }
}
