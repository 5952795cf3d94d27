//! The configuration: RELIW's JSON keys and defaults, plus reliw's own.
//!
//! Loading is strict where a mistake would be silent: a wrong type, an
//! out-of-range value, a missing certificate file, or an unknown key that
//! looks like a typo of a known one (edit distance ≤ 2) fails start-up with
//! a message naming the key. Other unknown keys are logged as warnings, so
//! a RELIW config with keys reliw does not use still starts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

mod startup;
pub use startup::Startup;

/// Where the config comes from when `--config` is not given.
pub const ENV_VAR: &str = "RELIW_CONFIG_FILE";
pub const DEFAULT_PATH: &str = "/etc/reliw/config.json";

/// Why a config was refused; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not JSON, or a value of the wrong type.
    #[error("config {}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    /// A value outside its allowed range, or a missing file it names.
    #[error("config key '{key}': {detail}")]
    Invalid { key: String, detail: String },
    /// An unknown key that is probably a typo.
    #[error("config key '{key}' is unknown (did you mean '{suggestion}'?)")]
    Typo { key: String, suggestion: String },
}

/// `node_name`, else the host name.
pub fn node_or_host_name(node_name: Option<&str>) -> String {
    node_name.map(str::to_owned).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| String::from("reliw"))
    })
}

fn invalid(key: &str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        detail: detail.into(),
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    /// IPv4 (or any) listen address.
    pub ip: IpAddr,
    /// 0 picks a free port (printed at start: `listening on ...`).
    pub port: u16,
    /// Also listen on this IPv6 address (IPV6_V6ONLY) when set.
    pub ipv6: Option<Ipv6Addr>,
    /// Site files: `data_dir/<host>/<path>`, falling back to `data_dir/__/<path>`.
    pub data_dir: PathBuf,
    /// Largest file kept in the in-process file cache (bytes).
    pub cache_max_size: u64,
    /// Total memory of the file cache (bytes, shared out among workers).
    pub cache_total_size: u64,
    /// Age (ms) after which a cached file is checked against the disk.
    pub cache_revalidate_ms: u64,
    /// Open descriptors each worker keeps for sendfile of cached big files.
    pub cache_max_fds: usize,
    /// Files from this size on go out with sendfile instead of from memory.
    pub sendfile_min_size: u64,
    pub backlog: u32,
    pub max_body_size: u64,
    /// Longest request line or header line (bytes); beyond it 414 or 431.
    pub request_line_limit: usize,
    /// Largest request head in total (bytes); beyond it 431.
    pub request_head_limit: usize,
    /// Most header fields in a request; beyond it 431.
    pub max_header_count: usize,
    /// Seconds a kept-alive connection may sit idle between requests.
    pub keepalive_idle_timeout: f64,
    /// Seconds from the first byte of a request to the end of its head.
    pub request_header_timeout: f64,
    /// Seconds allowed for a whole request body.
    pub request_body_timeout: f64,
    pub tls_handshake_timeout: f64,
    /// error, warn, info, access (info plus the access log), debug, trace.
    pub log_level: LogLevel,
    /// Request headers copied into the access log.
    pub log_headers: Vec<String>,
    pub redis: RedisConfig,
    pub metrics: MetricsConfig,
    pub ssl: Option<SslConfig>,
    /// Worker threads, each with its own listener (default: one per core).
    pub workers: usize,
    /// Open connections across all workers; beyond it a fast 503.
    pub max_connections: usize,
    /// Requests on one connection before `Connection: close` (0: no cap).
    pub max_requests_per_connection: u64,
    /// RELIW's name for a concurrency cap; read as `max_connections`.
    pub fork_limit: Option<usize>,
    /// RELIW's name for a per-connection cap; read as `max_requests_per_connection`.
    pub requests_per_fork: Option<u64>,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    pub shutdown_grace: u64,
    pub shield: ShieldSection,
    /// Where site data (routes, metadata, users, ...) comes from.
    pub store: StoreSection,
    /// How long routes, metadata, WAF rules, proxy configs and templates
    /// are served from the in-process cache before they are re-read
    /// (a message on `P:CTL` drops them at once).
    pub site_cache_ttl_ms: u64,
    /// Peers (CIDRs) whose client-address header is believed; for everyone
    /// else the socket peer is the client.
    pub trusted_proxies: Vec<String>,
    /// `trusted_proxies`, parsed once at load (used per request).
    #[serde(skip)]
    pub trusted_proxy_cidrs: Vec<crate::shield::addr::Cidr>,
    /// The header trusted proxies name the client in: `x-forwarded-for`
    /// (right-most address not itself a trusted proxy) or `x-real-ip`.
    pub client_ip_header: ClientIpHeader,
    pub waf: WafSection,
    pub rate_limit: RateLimitSection,
    pub proxy: ProxySection,
    /// RELIW's Lua pages and `template.lua`: the sandbox's budgets.
    pub lua: LuaSection,
    /// Response compression: gzip, brotli and zstd by `Accept-Encoding`.
    pub compression: CompressionSection,
    /// HTTP/2 to clients: over TLS (ALPN `h2`) and cleartext (`h2c`).
    pub http2: Http2Section,
    /// How log lines are written: `text` (default) or `json` (RELIW's
    /// format: one JSON object a line).
    pub log_format: LogFormat,
    /// This node's name in ban records and `P:WAFFERS` messages (default:
    /// the host name).
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct WafSection {
    pub block_response: BlockResponse,
}

impl Default for WafSection {
    fn default() -> Self {
        Self {
            block_response: BlockResponse::Forbidden,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RateLimitSection {
    /// When the counter cannot be read: refuse (503) instead of letting
    /// the request through.
    pub fail_closed: bool,
    /// Ban clients that keep hitting 429: `over` denials within `window`
    /// seconds ban them for `ban_seconds` (default `shield.ban_seconds`).
    pub ban: Option<RateLimitBan>,
}

/// The reverse proxy (`P:PROXY:<host>`): timeouts, the upstream pool
/// and the relay buffer. Times in milliseconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ProxySection {
    /// TCP connect to an upstream (name lookup included); then 502 (refused)
    /// or 504 (no answer).
    pub connect_timeout_ms: u64,
    /// From the end of the request to the first byte of the response; then 504.
    pub response_timeout_ms: u64,
    /// Longest silence while a response body (or our upload to the
    /// upstream) is in flight; then the exchange is cut.
    pub read_timeout_ms: u64,
    /// Longest silence on an upgraded (WebSocket) connection.
    pub tunnel_idle_timeout_ms: u64,
    /// How long an idle upstream connection stays pooled.
    pub pool_idle_timeout_ms: u64,
    /// Idle connections pooled per upstream per worker (0: no pooling).
    pub pool_max_idle: usize,
    /// Bytes read at a time from either side: with the client buffer,
    /// what one proxied request costs in memory, whatever the body size.
    pub buffer_size: usize,
    /// Largest response head an upstream may send; beyond it 502.
    pub max_response_head: usize,
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            response_timeout_ms: 60_000,
            read_timeout_ms: 60_000,
            tunnel_idle_timeout_ms: 600_000,
            pool_idle_timeout_ms: 30_000,
            pool_max_idle: 64,
            buffer_size: 64 * 1024,
            max_response_head: 64 * 1024,
        }
    }
}

/// Budgets of the per-worker Lua VM.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct LuaSection {
    /// Bytes the VM of one worker may allocate.
    pub memory_limit: usize,
    /// Wall time one page (or template.lua) call may take.
    pub time_limit_ms: u64,
    /// Largest request body a Lua page is given (a larger one: 413).
    /// `max_body_size` still bounds every body first, so a value above it
    /// (the default with a small `max_body_size`) means `max_body_size`.
    pub max_body_size: u64,
}

impl Default for LuaSection {
    fn default() -> Self {
        Self {
            memory_limit: 64 << 20,
            time_limit_ms: 1000,
            max_body_size: 1 << 20,
        }
    }
}

/// `key` lists at least one `what`, each `host:port`.
fn check_addresses(key: &str, addresses: &[String], what: &str) -> Result<(), ConfigError> {
    if addresses.is_empty() {
        return Err(invalid(key, format!("must list at least one {what}")));
    }
    match addresses.iter().find(|a| node_address(a).is_none()) {
        Some(a) => Err(invalid(key, format!("{a:?} is not host:port"))),
        None => Ok(()),
    }
}

/// A sentinel's or cluster node's `host:port` (IPv6 in brackets), split.
pub fn node_address(a: &str) -> Option<(String, u16)> {
    let (host, port) = a.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// HTTP/2 to clients (see `server::h2`): what a connection may hold and
/// how fast it may send control frames before it gets a GOAWAY.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct Http2Section {
    /// Offer `h2` in the TLS handshake (ALPN); off: HTTP/1.1 only.
    pub enabled: bool,
    /// Cleartext HTTP/2 with prior knowledge on the plain listener (a
    /// connection that opens with the HTTP/2 preface).
    pub h2c: bool,
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Largest decoded header list of a request (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub max_header_list_size: u32,
    /// Bytes of a request body a stream may send before we read them.
    pub stream_window: u32,
    /// The same, for all streams of a connection together.
    pub connection_window: u32,
    /// PING, SETTINGS, RST_STREAM, empty DATA and CONTINUATION frames a
    /// connection may send, of each kind, per 10 seconds; one more is a
    /// flood and gets a GOAWAY (ENHANCE_YOUR_CALM).
    pub flood_limit: u32,
}

impl Default for Http2Section {
    fn default() -> Self {
        Self {
            enabled: true,
            h2c: false,
            max_concurrent_streams: 128,
            max_header_list_size: 65_536,
            stream_window: 256 * 1024,
            connection_window: 1 << 20,
            flood_limit: 1000,
        }
    }
}

/// Response compression (see `compress` and `site::steps::encode`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct CompressionSection {
    /// RELIW's key: off sends every body as it is.
    pub enabled: bool,
    /// Codings offered, in the server's order of preference (`br`,
    /// `zstd`, `gzip`); the client's q-values come first.
    pub encodings: Vec<String>,
    /// `encodings`, parsed once at load.
    #[serde(skip)]
    pub offered: Vec<crate::http::coding::Coding>,
    /// Media types encoded (`type/*` for a whole major type).
    pub types: Vec<String>,
    /// Bodies below this are sent as they are (unless the client refuses
    /// identity).
    pub min_size: u64,
    /// Bodies above this are never encoded on the fly (precompressed
    /// siblings are still served).
    pub max_size: u64,
    pub gzip_level: u32,
    pub brotli_level: u32,
    pub zstd_level: i32,
    /// Serve `file.br` / `file.zst` / `file.gz` beside `file` when present
    /// and not older than it.
    pub precompressed: bool,
    /// Bytes of encoded forms each worker keeps.
    pub cache_size: u64,
}

impl Default for CompressionSection {
    fn default() -> Self {
        use crate::http::coding::Coding;
        Self {
            enabled: true,
            encodings: Coding::ALL.iter().map(|c| c.token().to_owned()).collect(),
            offered: Coding::ALL.to_vec(),
            types: [
                "text/*",
                "application/javascript",
                "application/json",
                "application/xml",
                "application/xhtml+xml",
                "application/rss+xml",
                "application/atom+xml",
                "application/manifest+json",
                "application/wasm",
                "image/svg+xml",
                "font/ttf",
                "font/otf",
            ]
            .map(String::from)
            .to_vec(),
            min_size: 512,
            max_size: 1 << 20,
            gzip_level: 6,
            brotli_level: 5,
            zstd_level: 3,
            precompressed: true,
            cache_size: 16 << 20,
        }
    }
}

/// The form of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `waf.block_response`: what a WAF hit gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum BlockResponse {
    /// A 403 page through the site's template.
    #[default]
    #[serde(rename = "403")]
    Forbidden,
    /// RELIW's 301 to `http://127.0.0.1/Fuck_Off`, for tooling that expects it.
    #[serde(rename = "reliw-redirect")]
    ReliwRedirect,
}

/// `shield.syn_cookies.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CookieMode {
    #[default]
    Off,
    /// Every SYN to the ports.
    On,
    /// While a CPU sees more than `above_per_second` SYNs for the ports,
    /// divided among the CPUs.
    Auto,
}

/// `client_ip_header`: where trusted proxies name the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum ClientIpHeader {
    /// The right-most address that is not itself a trusted proxy.
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// One address.
    #[serde(rename = "x-real-ip")]
    XRealIp,
}

impl ClientIpHeader {
    /// The (lower-case) field name.
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::XRealIp => "x-real-ip",
        }
    }
}

/// `log_level`, after RELIW's numbers and unknown names were mapped
/// (see `apply_reliw_forms`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    /// Info without the access log.
    Info,
    /// Info and the access log.
    #[default]
    Access,
    Debug,
    Trace,
    Off,
}

impl LogLevel {
    /// The tracing filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info,access=off",
            Self::Access => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
            Self::Off => "off",
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RateLimitBan {
    pub over: u32,
    pub window: u64,
    pub ban_seconds: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            ipv6: None,
            data_dir: PathBuf::from("/www"),
            cache_max_size: 5_242_880,
            cache_total_size: 67_108_864,
            cache_revalidate_ms: 1000,
            cache_max_fds: 1024,
            sendfile_min_size: crate::files::cache::SENDFILE_MIN,
            backlog: 256,
            max_body_size: 5_242_880,
            request_line_limit: 8192,
            request_head_limit: 65_536,
            max_header_count: 100,
            keepalive_idle_timeout: 15.0,
            request_header_timeout: 10.0,
            request_body_timeout: 30.0,
            tls_handshake_timeout: 10.0,
            log_level: LogLevel::Access,
            log_headers: ["referer", "x-real-ip", "user-agent"]
                .map(String::from)
                .to_vec(),
            redis: RedisConfig::default(),
            metrics: MetricsConfig::default(),
            ssl: None,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 16_384,
            max_requests_per_connection: 10_000,
            fork_limit: None,
            requests_per_fork: None,
            shutdown_grace: 10,
            shield: ShieldSection::default(),
            store: StoreSection::default(),
            site_cache_ttl_ms: 1000,
            trusted_proxies: Vec::new(),
            trusted_proxy_cidrs: Vec::new(),
            client_ip_header: ClientIpHeader::XForwardedFor,
            waf: WafSection::default(),
            rate_limit: RateLimitSection::default(),
            proxy: ProxySection::default(),
            lua: LuaSection::default(),
            compression: CompressionSection::default(),
            http2: Http2Section::default(),
            log_format: LogFormat::Text,
            node_name: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub prefix: String,
    /// Seconds per Redis call.
    pub timeout: f64,
    /// RELIW's key: talk TLS to Redis (certificates checked against
    /// `tls.ca_file`, else the system's roots).
    pub ssl: bool,
    pub tls: RedisTls,
    /// Redis ACL user (Redis 6+) and password, or a password alone.
    pub auth: Option<RedisAuth>,
    /// Find the master through Redis Sentinel (and follow its failovers)
    /// instead of `host`/`port`.
    pub sentinel: Option<SentinelConfig>,
    /// A Redis Cluster, found from these nodes, instead of `host`/`port`.
    pub cluster: Option<ClusterConfig>,
}

/// Redis Cluster: nodes to learn the cluster's layout from.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterConfig {
    /// Nodes as `host:port`; any reachable one is enough, so name several.
    pub nodes: Vec<String>,
}

/// Redis Sentinel: which master, and where the sentinels are.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct SentinelConfig {
    /// The master's name in the sentinels' `sentinel monitor <name> ...`.
    pub master: String,
    /// Sentinels as `host:port`, asked in turn.
    pub addresses: Vec<String>,
    /// The sentinels' own credentials (`requirepass` in sentinel.conf).
    pub auth: Option<RedisAuth>,
}

/// Certificates for `redis.ssl`: PEM files read at start.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RedisTls {
    /// The CA (bundle) Redis's certificate must chain to; unset: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for a Redis with
    /// `tls-auth-clients yes`; both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            host: String::from("127.0.0.1"),
            port: 6379,
            db: 13,
            prefix: String::from("RLW"),
            timeout: 5.0,
            ssl: false,
            tls: RedisTls::default(),
            auth: None,
            sentinel: None,
            cluster: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct RedisAuth {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub pass: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    pub ip: IpAddr,
    /// 0 picks a free port (printed at start: `listening on ...`).
    pub port: u16,
    pub disabled: bool,
    pub scan_count: u32,
    pub scan_limit: u32,
    /// How often in-process request counters are flushed to the store.
    pub flush_ms: u64,
}

/// The site store backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Redis, as RELIW (the default: a RELIW config works unchanged).
    #[default]
    Redis,
    /// The embedded store, loaded from `store.site_file`.
    Memory,
    /// No site data: `data_dir/<host>/<path>` is served as it is, GET and
    /// HEAD only (a plain static server).
    Static,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct StoreSection {
    pub backend: StoreBackend,
    /// The site file of the memory backend (a JSON object of RELIW keys).
    pub site_file: Option<PathBuf>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9101,
            disabled: false,
            scan_count: 100,
            scan_limit: 2000,
            flush_ms: 1000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SslConfig {
    /// Required unless `acme` is given (then, as RELIW, a name without a
    /// certificate in `hosts` fails its handshake).
    #[serde(default)]
    pub default: Option<CertPair>,
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, CertPair>,
    /// TLS on this port and plain HTTP on `port` (e.g. 443 and 80). Unset:
    /// TLS on `port` only, as RELIW.
    #[serde(default)]
    pub port: Option<u16>,
    /// Certificates issued by an ACME CA for the whole fleet (see
    /// `crate::acme`); RELIW's own keys are read the same way.
    #[serde(default)]
    pub acme: Option<AcmeConfig>,
}

/// `ssl.acme`: RELIW's keys (`account`, `certificates`, `providers`,
/// `renew_time`) and reliw's (`directory` onwards).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct AcmeConfig {
    /// The account's contact e-mail address.
    pub account: Option<String>,
    pub certificates: Vec<AcmeCertificate>,
    /// RELIW's DNS provider settings: reliw runs `dns_hook` instead and
    /// passes it the provider's name.
    pub providers: Option<serde_json::Value>,
    /// Seconds before expiry when a certificate is renewed (RELIW: 30 days).
    pub renew_time: u64,
    /// The CA's directory URL (RELIW: Let's Encrypt's production one).
    pub directory: String,
    /// A PEM CA the directory's HTTPS certificate chains to (a private or
    /// test CA); unset: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The 32-byte key (64 hex digits) that encrypts private keys in the
    /// store; required to run.
    pub key_file: Option<PathBuf>,
    /// For dns-01: a command run as `<hook> present|cleanup <domain>
    /// <record name> <TXT value> <provider>`.
    pub dns_hook: Option<PathBuf>,
    /// Seconds to wait after the hook's `present` for DNS to propagate.
    pub dns_wait: f64,
    /// Seconds between looks at the stored certificates (pickup and
    /// renewal); the same on every node.
    pub check_interval: f64,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            account: None,
            certificates: Vec::new(),
            providers: None,
            renew_time: 30 * 86_400,
            directory: String::from("https://acme-v02.api.letsencrypt.org/directory"),
            ca_file: None,
            key_file: None,
            dns_hook: None,
            dns_wait: 120.0,
            check_interval: 60.0,
        }
    }
}

/// One certificate: its names (the first names it in the store) and how
/// the CA checks them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct AcmeCertificate {
    pub names: Vec<String>,
    /// `http-01` or `dns-01`; unset: `dns-01` when RELIW's `provider` is
    /// given, else `http-01`.
    pub challenge: Option<AcmeChallenge>,
    /// RELIW's DNS provider name (given to `dns_hook`).
    pub provider: Option<String>,
}

impl AcmeCertificate {
    pub fn challenge(&self) -> AcmeChallenge {
        match (self.challenge, &self.provider) {
            (Some(c), _) => c,
            (None, Some(_)) => AcmeChallenge::Dns01,
            (None, None) => AcmeChallenge::Http01,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum AcmeChallenge {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "dns-01")]
    Dns01,
}

impl AcmeConfig {
    /// Why this block cannot run here, if it cannot (a copied RELIW block
    /// without reliw's `key_file`, say): start-up warns and goes on with
    /// file certificates.
    pub fn not_run_because(&self, store: StoreBackend) -> Option<&'static str> {
        if self.certificates.is_empty() {
            Some("it names no certificates")
        } else if self.key_file.is_none() {
            Some(
                "ssl.acme.key_file (the key that encrypts certificate keys in the store) is not set",
            )
        } else if store != StoreBackend::Redis {
            Some(
                "it needs store.backend redis (the fleet shares the lock and the certificates there)",
            )
        } else {
            None
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ShieldSection {
    /// Interfaces to attach the XDP shield to; empty: shield off.
    pub interfaces: Vec<String>,
    /// skb (generic), drv (native) or auto.
    pub mode: crate::shield::AttachMode,
    pub dry_run: bool,
    /// Default ban length for WAF and rate-limit bans.
    pub ban_seconds: u64,
    /// Where the shield pins its maps.
    pub pin_root: PathBuf,
    /// Per-source packet budgets enforced in XDP (off unless a rate is set).
    pub rate_limit: ShieldRateLimit,
    /// SYN cookies answered in XDP.
    pub syn_cookies: ShieldSynCookies,
}

impl Default for ShieldSection {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: crate::shield::AttachMode::Auto,
            dry_run: false,
            ban_seconds: 600,
            pin_root: PathBuf::from(crate::shield::DEFAULT_PIN_ROOT),
            rate_limit: ShieldRateLimit::default(),
            syn_cookies: ShieldSynCookies::default(),
        }
    }
}

/// `shield.syn_cookies`: SYN-ACKs with SYN cookies sent from XDP for the
/// listening ports, so a SYN flood never reaches the kernel's SYN queue.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct ShieldSynCookies {
    pub mode: CookieMode,
    /// Ports to answer for; empty: the ports reliw listens on.
    pub ports: Vec<u16>,
    /// `auto`'s threshold, SYNs per second for the whole node.
    pub above_per_second: u64,
}

impl Default for ShieldSynCookies {
    fn default() -> Self {
        Self {
            mode: CookieMode::Off,
            ports: Vec::new(),
            above_per_second: 2000,
        }
    }
}

/// `shield.rate_limit`: per-source budgets in the XDP program, one for
/// every packet and one for TCP SYNs. A rate of 0 turns its budget off.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct ShieldRateLimit {
    /// Packets per second from one source (any protocol).
    pub packets_per_second: u64,
    /// Packets a source may send at once before the rate applies
    /// (default: one second's worth).
    pub packet_burst: Option<u64>,
    /// New TCP connections (SYNs) per second from one source.
    pub syns_per_second: u64,
    /// SYNs a source may send at once (default: one second's worth).
    pub syn_burst: Option<u64>,
    /// IPv6 sources share one budget per prefix of this length.
    pub ipv6_prefix: u32,
    /// A source over a budget for this many seconds without a second's
    /// pause is banned on every node; 0: never.
    pub escalate_after_seconds: u64,
    /// Length of such a ban (default `shield.ban_seconds`).
    pub ban_seconds: Option<u64>,
}

impl Default for ShieldRateLimit {
    fn default() -> Self {
        Self {
            packets_per_second: 0,
            packet_burst: None,
            syns_per_second: 0,
            syn_burst: None,
            ipv6_prefix: 64,
            escalate_after_seconds: 10,
            ban_seconds: None,
        }
    }
}

/// Known keys, per object path, for typo detection.
const TOP_KEYS: &[&str] = &[
    "ip",
    "port",
    "ipv6",
    "data_dir",
    "cache_max_size",
    "cache_total_size",
    "cache_revalidate_ms",
    "cache_max_fds",
    "sendfile_min_size",
    "backlog",
    "max_body_size",
    "request_line_limit",
    "request_head_limit",
    "max_header_count",
    "keepalive_idle_timeout",
    "request_header_timeout",
    "request_body_timeout",
    "tls_handshake_timeout",
    "log_level",
    "log_headers",
    "redis",
    "metrics",
    "ssl",
    "workers",
    "max_connections",
    "max_requests_per_connection",
    "fork_limit",
    "requests_per_fork",
    "shutdown_grace",
    "shield",
    "store",
    "site_cache_ttl_ms",
    "trusted_proxies",
    "client_ip_header",
    "waf",
    "rate_limit",
    "proxy",
    "lua",
    "log_format",
    "node_name",
    "compression",
    "http2",
];
const HTTP2_KEYS: &[&str] = &[
    "enabled",
    "h2c",
    "max_concurrent_streams",
    "max_header_list_size",
    "stream_window",
    "connection_window",
    "flood_limit",
];
const COMPRESSION_KEYS: &[&str] = &[
    "enabled",
    "encodings",
    "types",
    "min_size",
    "max_size",
    "gzip_level",
    "brotli_level",
    "zstd_level",
    "precompressed",
    "cache_size",
];
const LUA_KEYS: &[&str] = &["memory_limit", "time_limit_ms", "max_body_size"];
const REDIS_KEYS: &[&str] = &[
    "host", "port", "db", "prefix", "timeout", "ssl", "tls", "auth", "sentinel", "cluster",
];
const REDIS_SENTINEL_KEYS: &[&str] = &["master", "addresses", "auth"];
const REDIS_CLUSTER_KEYS: &[&str] = &["nodes"];
const REDIS_TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file"];
const METRICS_KEYS: &[&str] = &[
    "ip",
    "port",
    "disabled",
    "scan_count",
    "scan_limit",
    "flush_ms",
];
const STORE_KEYS: &[&str] = &["backend", "site_file"];
const WAF_KEYS: &[&str] = &["block_response"];
const RATE_LIMIT_KEYS: &[&str] = &["fail_closed", "ban"];
const SHIELD_KEYS: &[&str] = &[
    "interfaces",
    "mode",
    "dry_run",
    "ban_seconds",
    "pin_root",
    "rate_limit",
    "syn_cookies",
];
const SHIELD_SYN_COOKIES_KEYS: &[&str] = &["mode", "ports", "above_per_second"];
const SHIELD_RATE_LIMIT_KEYS: &[&str] = &[
    "packets_per_second",
    "packet_burst",
    "syns_per_second",
    "syn_burst",
    "ipv6_prefix",
    "escalate_after_seconds",
    "ban_seconds",
];
const PROXY_KEYS: &[&str] = &[
    "connect_timeout_ms",
    "response_timeout_ms",
    "read_timeout_ms",
    "tunnel_idle_timeout_ms",
    "pool_idle_timeout_ms",
    "pool_max_idle",
    "buffer_size",
    "max_response_head",
];
const SSL_KEYS: &[&str] = &["default", "hosts", "port", "acme"];
const ACME_KEYS: &[&str] = &[
    "account",
    "certificates",
    "providers",
    "renew_time",
    "directory",
    "ca_file",
    "key_file",
    "dns_hook",
    "dns_wait",
    "check_interval",
];

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "access", "debug", "trace", "off"];

impl Config {
    /// Which file to read: `--config`, else `$RELIW_CONFIG_FILE`, else
    /// `/etc/reliw/config.json` if it exists; `None` means built-in defaults.
    pub fn locate(flag: Option<&Path>) -> Option<PathBuf> {
        if let Some(path) = flag {
            return Some(path.to_owned());
        }
        if let Some(path) = std::env::var_os(ENV_VAR) {
            return Some(PathBuf::from(path));
        }
        let default = Path::new(DEFAULT_PATH);
        default.exists().then(|| default.to_owned())
    }

    /// Reads and validates a config file; warnings go to the log.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (config, warnings) = Self::load_with_warnings(path)?;
        for w in warnings {
            tracing::warn!("config {}: {w}", path.display());
        }
        Ok(config)
    }

    /// Reads and validates a config file; the config and its warnings
    /// (for a caller that sets up logging from the config first).
    pub fn load_with_warnings(path: &Path) -> Result<(Self, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let (config, warnings) = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { detail, .. } => ConfigError::Parse {
                path: path.to_owned(),
                detail,
            },
            other => other,
        })?;
        Ok((config, warnings))
    }

    /// Parses and validates config text; returns the config and warnings.
    pub fn parse(text: &str) -> Result<(Self, Vec<String>), ConfigError> {
        let parse_error = |detail: String| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            detail,
        };
        let mut value: Value =
            serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let mut warnings = Vec::new();
        reliw_values(&mut value, &mut warnings)?;
        let Value::Object(top) = &value else {
            return Err(parse_error(String::from(
                "the config must be a JSON object",
            )));
        };
        check_keys("", top, TOP_KEYS, &mut warnings)?;
        for (section, keys) in [
            ("redis", REDIS_KEYS),
            ("metrics", METRICS_KEYS),
            ("shield", SHIELD_KEYS),
            ("ssl", SSL_KEYS),
            ("store", STORE_KEYS),
            ("waf", WAF_KEYS),
            ("rate_limit", RATE_LIMIT_KEYS),
            ("proxy", PROXY_KEYS),
            ("lua", LUA_KEYS),
            ("compression", COMPRESSION_KEYS),
            ("http2", HTTP2_KEYS),
        ] {
            if let Some(Value::Object(obj)) = top.get(section) {
                check_keys(section, obj, keys, &mut warnings)?;
            }
        }
        for (key, keys) in [
            ("tls", REDIS_TLS_KEYS),
            ("sentinel", REDIS_SENTINEL_KEYS),
            ("cluster", REDIS_CLUSTER_KEYS),
        ] {
            if let Some(Value::Object(redis)) = top.get("redis")
                && let Some(Value::Object(obj)) = redis.get(key)
            {
                check_keys(&format!("redis.{key}"), obj, keys, &mut warnings)?;
            }
        }
        if let Some(Value::Object(ssl)) = top.get("ssl")
            && let Some(Value::Object(acme)) = ssl.get("acme")
        {
            check_keys("ssl.acme", acme, ACME_KEYS, &mut warnings)?;
        }
        for (key, keys) in [
            ("rate_limit", SHIELD_RATE_LIMIT_KEYS),
            ("syn_cookies", SHIELD_SYN_COOKIES_KEYS),
        ] {
            if let Some(Value::Object(shield)) = top.get("shield")
                && let Some(Value::Object(obj)) = shield.get(key)
            {
                check_keys(&format!("shield.{key}"), obj, keys, &mut warnings)?;
            }
        }
        let mut config: Config = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            invalid(&path, e.into_inner().to_string())
        })?;
        config.apply_reliw_aliases(&mut warnings);
        config.validate()?;
        for t in &mut config.compression.types {
            t.make_ascii_lowercase();
        }
        config.compression.offered = config
            .compression
            .encodings
            .iter()
            .filter_map(|t| crate::http::coding::Coding::from_token(t))
            .collect();
        config.trusted_proxy_cidrs = config
            .trusted_proxies
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        Ok((config, warnings))
    }

    fn apply_reliw_aliases(&mut self, warnings: &mut Vec<String>) {
        if let Some(limit) = self.fork_limit {
            // RELIW counted connections per listener (IPv4, IPv6); reliw
            // counts them across all, so the cap is scaled to the same total.
            let addresses = 1 + usize::from(self.ipv6.is_some());
            let ports = match &self.ssl {
                Some(ssl) if ssl.port.is_some() => 2,
                _ => 1,
            };
            let listeners = addresses * ports;
            self.max_connections = limit.max(1).saturating_mul(listeners);
            if listeners > 1 {
                warnings.push(format!(
                    "fork_limit {limit} applies per listener in RELIW; reliw caps all {listeners} listeners together at max_connections {}",
                    self.max_connections
                ));
            }
        }
        if let Some(ssl) = &self.ssl
            && let Some(acme) = &ssl.acme
        {
            if let Some(why) = acme.not_run_because(self.store.backend) {
                warnings.push(format!(
                    "ssl.acme is not run, {why}: certificates come from ssl.default and ssl.hosts files"
                ));
            } else if ssl.port.is_none()
                && acme
                    .certificates
                    .iter()
                    .any(|c| c.challenge() == AcmeChallenge::Http01)
            {
                warnings.push(String::from(
                    "ssl.acme: http-01 needs plain HTTP on port 80, and without ssl.port this node speaks only TLS on `port`: set ssl.port, or let another node of the fleet take the CA's checks",
                ));
            }
        }
        if let Some(limit) = self.requests_per_fork {
            self.max_requests_per_connection = limit;
        }
    }

    fn validate_sentinel(&self) -> Result<(), ConfigError> {
        let Some(s) = &self.redis.sentinel else {
            return Ok(());
        };
        if s.master.is_empty() {
            return Err(invalid(
                "redis.sentinel.master",
                "must name the monitored master",
            ));
        }
        check_addresses("redis.sentinel.addresses", &s.addresses, "sentinel")
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let Some(c) = &self.redis.cluster else {
            return Ok(());
        };
        if self.redis.sentinel.is_some() {
            return Err(invalid(
                "redis.cluster",
                "cannot be used with redis.sentinel (a cluster fails over by itself)",
            ));
        }
        check_addresses("redis.cluster.nodes", &c.nodes, "node")
    }

    fn validate_acme(&self) -> Result<(), ConfigError> {
        let Some(acme) = self.ssl.as_ref().and_then(|s| s.acme.as_ref()) else {
            return Ok(());
        };
        if !(1.0..=86_400.0).contains(&acme.check_interval) {
            return Err(invalid(
                "ssl.acme.check_interval",
                "must be between 1 and 86400 seconds",
            ));
        }
        if !(0.0..=3_600.0).contains(&acme.dns_wait) {
            return Err(invalid("ssl.acme.dns_wait", "must be 0 to 3600 seconds"));
        }
        if !acme.directory.starts_with("https://") {
            return Err(invalid("ssl.acme.directory", "must be an https:// URL"));
        }
        for cert in &acme.certificates {
            if cert.names.is_empty() {
                return Err(invalid(
                    "ssl.acme.certificates",
                    "each certificate needs names",
                ));
            }
            for name in &cert.names {
                let bare = name.strip_prefix("*.").unwrap_or(name);
                if bare.is_empty() || bare.contains(['*', '/', ':', ' ']) {
                    return Err(invalid(
                        "ssl.acme.certificates",
                        format!("{name:?} is not a DNS name"),
                    ));
                }
                if name.starts_with("*.") && cert.challenge() == AcmeChallenge::Http01 {
                    return Err(invalid(
                        "ssl.acme.certificates",
                        format!("{name}: a wildcard needs the dns-01 challenge"),
                    ));
                }
            }
            if cert.challenge() == AcmeChallenge::Dns01 && acme.dns_hook.is_none() {
                return Err(invalid(
                    "ssl.acme.dns_hook",
                    format!("is required for the dns-01 certificate {:?}", cert.names[0]),
                ));
            }
        }
        for (key, file) in [
            ("ssl.acme.key_file", &acme.key_file),
            ("ssl.acme.ca_file", &acme.ca_file),
        ] {
            if let Some(path) = file
                && !path.is_file()
            {
                return Err(invalid(key, format!("{} is not a file", path.display())));
            }
        }
        Ok(())
    }

    fn validate_redis_tls(&self) -> Result<(), ConfigError> {
        let t = &self.redis.tls;
        let any = t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some();
        if any && !self.redis.ssl {
            return Err(invalid(
                "redis.tls",
                "names certificates but redis.ssl is false",
            ));
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err(invalid(
                "redis.tls.cert_file",
                "a client certificate needs both cert_file and key_file",
            ));
        }
        for (key, file) in [
            ("redis.tls.ca_file", &t.ca_file),
            ("redis.tls.cert_file", &t.cert_file),
            ("redis.tls.key_file", &t.key_file),
        ] {
            if let Some(path) = file
                && let Err(e) = std::fs::metadata(path)
            {
                return Err(invalid(key, format!("cannot read {}: {e}", path.display())));
            }
        }
        Ok(())
    }

    fn validate_http2(&self) -> Result<(), ConfigError> {
        let h = &self.http2;
        if !(1..=10_000).contains(&h.max_concurrent_streams) {
            return Err(invalid(
                "http2.max_concurrent_streams",
                "must be 1 to 10000",
            ));
        }
        if !(1024..=1 << 20).contains(&h.max_header_list_size) {
            return Err(invalid(
                "http2.max_header_list_size",
                "must be 1 KiB to 1 MiB",
            ));
        }
        // RFC 9113: a window is at most 2^31-1; below 16 KiB uploads crawl.
        for (key, v) in [
            ("http2.stream_window", h.stream_window),
            ("http2.connection_window", h.connection_window),
        ] {
            if !(16_384..=i32::MAX as u32).contains(&v) {
                return Err(invalid(key, "must be 16 KiB to 2^31-1"));
            }
        }
        if h.flood_limit < 10 {
            return Err(invalid("http2.flood_limit", "must be at least 10"));
        }
        Ok(())
    }

    fn validate_compression(&self) -> Result<(), ConfigError> {
        use crate::http::coding::Coding;
        let c = &self.compression;
        let mut seen = Vec::new();
        for token in &c.encodings {
            match Coding::from_token(token) {
                Some(coding) if !seen.contains(&coding) => seen.push(coding),
                Some(_) => {
                    return Err(invalid(
                        "compression.encodings",
                        format!("{token} is listed twice"),
                    ));
                }
                None => {
                    return Err(invalid(
                        "compression.encodings",
                        format!("unknown coding {token:?} (br, zstd, gzip)"),
                    ));
                }
            }
        }
        if let Some(t) = c.types.iter().find(|t| !t.contains('/')) {
            return Err(invalid(
                "compression.types",
                format!("{t:?} is not a media type"),
            ));
        }
        if c.min_size > c.max_size {
            return Err(invalid(
                "compression.min_size",
                "must not exceed compression.max_size",
            ));
        }
        if c.max_size > 64 << 20 {
            return Err(invalid("compression.max_size", "must be at most 64 MiB"));
        }
        if !(1..=9).contains(&c.gzip_level) {
            return Err(invalid("compression.gzip_level", "must be 1 to 9"));
        }
        if c.brotli_level > 11 {
            return Err(invalid("compression.brotli_level", "must be 0 to 11"));
        }
        if !(1..=19).contains(&c.zstd_level) {
            return Err(invalid("compression.zstd_level", "must be 1 to 19"));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(invalid(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        // Seconds, fractions allowed (RELIW's socket timeouts are doubles).
        let seconds = |key: &str, v: f64| {
            if (0.001..=86_400.0).contains(&v) {
                Ok(())
            } else {
                Err(invalid(key, "must be between 0.001 and 86400 seconds"))
            }
        };
        seconds("keepalive_idle_timeout", self.keepalive_idle_timeout)?;
        seconds("request_header_timeout", self.request_header_timeout)?;
        seconds("request_body_timeout", self.request_body_timeout)?;
        seconds("tls_handshake_timeout", self.tls_handshake_timeout)?;
        self.validate_compression()?;
        self.validate_http2()?;
        self.validate_redis_tls()?;
        self.validate_sentinel()?;
        self.validate_cluster()?;
        self.validate_acme()?;
        let l = &self.lua;
        if !(1 << 20..=4 << 30).contains(&l.memory_limit) {
            return Err(invalid(
                "lua.memory_limit",
                "must be 1 MiB to 4 GiB (bytes)",
            ));
        }
        if !(1..=60_000).contains(&l.time_limit_ms) {
            return Err(invalid("lua.time_limit_ms", "must be 1 to 60000"));
        }
        let p = &self.proxy;
        positive("proxy.connect_timeout_ms", p.connect_timeout_ms)?;
        positive("proxy.response_timeout_ms", p.response_timeout_ms)?;
        positive("proxy.read_timeout_ms", p.read_timeout_ms)?;
        positive("proxy.tunnel_idle_timeout_ms", p.tunnel_idle_timeout_ms)?;
        if !(4096..=16 << 20).contains(&p.buffer_size) {
            return Err(invalid(
                "proxy.buffer_size",
                "must be 4096 to 16777216 bytes",
            ));
        }
        if !(1024..=1 << 20).contains(&p.max_response_head) {
            return Err(invalid(
                "proxy.max_response_head",
                "must be 1024 to 1048576 bytes",
            ));
        }
        positive("backlog", u64::from(self.backlog))?;
        positive("max_connections", self.max_connections as u64)?;
        if self.workers == 0 || self.workers > 1024 {
            return Err(invalid("workers", "must be between 1 and 1024"));
        }
        if !(256..=1_048_576).contains(&self.request_line_limit) {
            return Err(invalid(
                "request_line_limit",
                "must be between 256 and 1048576",
            ));
        }
        if self.request_head_limit < self.request_line_limit || self.request_head_limit > 16_777_216
        {
            return Err(invalid(
                "request_head_limit",
                "must be at least request_line_limit and at most 16777216",
            ));
        }
        if !(1..=10_000).contains(&self.max_header_count) {
            return Err(invalid("max_header_count", "must be between 1 and 10000"));
        }
        if !(1..=1000).contains(&self.metrics.scan_count) {
            return Err(invalid("metrics.scan_count", "must be between 1 and 1000"));
        }
        if !(1..=10_000).contains(&self.metrics.scan_limit) {
            return Err(invalid("metrics.scan_limit", "must be between 1 and 10000"));
        }
        if !(self.redis.timeout > 0.0 && self.redis.timeout.is_finite()) {
            return Err(invalid(
                "redis.timeout",
                "must be a positive number of seconds",
            ));
        }
        positive("shield.ban_seconds", self.shield.ban_seconds)?;
        let rate = &self.shield.rate_limit;
        if !(1..=128).contains(&rate.ipv6_prefix) {
            return Err(invalid(
                "shield.rate_limit.ipv6_prefix",
                "must be between 1 and 128",
            ));
        }
        for (rate_key, burst_key, per_second, burst) in [
            (
                "packets_per_second",
                "packet_burst",
                rate.packets_per_second,
                rate.packet_burst,
            ),
            (
                "syns_per_second",
                "syn_burst",
                rate.syns_per_second,
                rate.syn_burst,
            ),
        ] {
            if burst == Some(0) {
                return Err(invalid(
                    &format!("shield.rate_limit.{burst_key}"),
                    "must be greater than 0",
                ));
            }
            if per_second > 1_000_000_000 {
                return Err(invalid(
                    &format!("shield.rate_limit.{rate_key}"),
                    "must be at most 1000000000 (one per nanosecond)",
                ));
            }
        }
        if let Some(seconds) = rate.ban_seconds {
            positive("shield.rate_limit.ban_seconds", seconds)?;
        }
        let cookies = &self.shield.syn_cookies;
        if cookies.ports.len() > 8 || cookies.ports.contains(&0) {
            return Err(invalid(
                "shield.syn_cookies.ports",
                "at most 8 ports, none of them 0",
            ));
        }
        positive(
            "shield.syn_cookies.above_per_second",
            cookies.above_per_second,
        )?;
        if !(10..=3_600_000).contains(&self.metrics.flush_ms) {
            return Err(invalid(
                "metrics.flush_ms",
                "must be between 10 and 3600000",
            ));
        }
        for (i, cidr) in self.trusted_proxies.iter().enumerate() {
            if cidr.parse::<crate::shield::addr::Cidr>().is_err() {
                return Err(invalid(
                    &format!("trusted_proxies[{i}]"),
                    format!("'{cidr}' is not an address or CIDR"),
                ));
            }
        }
        if let Some(ban) = &self.rate_limit.ban
            && (ban.over == 0 || ban.window == 0 || ban.ban_seconds == Some(0))
        {
            return Err(invalid(
                "rate_limit.ban",
                "over, window and ban_seconds must be greater than 0",
            ));
        }
        if self.site_cache_ttl_ms > 3_600_000 {
            return Err(invalid("site_cache_ttl_ms", "must be at most 3600000"));
        }
        match (&self.store.backend, &self.store.site_file) {
            (StoreBackend::Memory, None) => {
                return Err(invalid(
                    "store.site_file",
                    "the memory backend needs a site file",
                ));
            }
            (StoreBackend::Memory, Some(path)) if !path.is_file() => {
                return Err(invalid(
                    "store.site_file",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
            _ => {}
        }
        if let Some(ssl) = &self.ssl {
            if ssl.default.is_none() && ssl.acme.is_none() {
                return Err(invalid("ssl.default", "is required (a cert and key file)"));
            }
            let pairs = ssl
                .default
                .iter()
                .map(|d| (String::from("ssl.default"), d))
                .chain(
                    ssl.hosts
                        .iter()
                        .map(|(host, pair)| (format!("ssl.hosts.{host}"), pair)),
                );
            for (key, pair) in pairs {
                for (what, path) in [("cert", &pair.cert), ("key", &pair.key)] {
                    if !path.is_file() {
                        return Err(invalid(
                            &format!("{key}.{what}"),
                            format!("{} does not exist or is not a file", path.display()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Request head timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_header_timeout)
    }

    /// Idle keep-alive timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.keepalive_idle_timeout)
    }

    /// This node's name: `node_name`, else the host name.
    pub fn node(&self) -> String {
        node_or_host_name(self.node_name.as_deref())
    }

    /// The start-up part of this config.
    pub fn startup(&self) -> Startup {
        Startup::of(self)
    }

    /// Whole-body timeout.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_body_timeout)
    }

    /// TLS handshake timeout (clients and upstreams without their own).
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.tls_handshake_timeout)
    }
}

/// RELIW's way with some values, applied before the strict reading:
/// `ip` may be `*` (every address) or a host name (resolved, first
/// address), `log_level` a number (RELIW's 0/10/20/30/40) or an unknown
/// name (RELIW read it as `info`), `metrics.scan_count`/`scan_limit` out
/// of range are clamped. Each change that RELIW made silently is a warning.
fn reliw_values(value: &mut Value, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let Value::Object(top) = value else {
        return Ok(());
    };
    if let Some(ip) = top.get_mut("ip") {
        listen_address("ip", ip, warnings)?;
    }
    if let Some(Value::Object(metrics)) = top.get_mut("metrics") {
        if let Some(ip) = metrics.get_mut("ip") {
            listen_address("metrics.ip", ip, warnings)?;
        }
        for (key, lo, hi) in [("scan_count", 1.0, 1000.0), ("scan_limit", 1.0, 10_000.0)] {
            if let Some(v) = metrics.get_mut(key)
                && let Some(n) = v.as_f64()
            {
                let clamped = n.round().clamp(lo, hi);
                if clamped != n {
                    warnings.push(format!(
                        "metrics.{key} {n} clamped to {clamped}, as RELIW does"
                    ));
                }
                *v = Value::from(clamped as u64);
            }
        }
    }
    if let Some(level) = top.get_mut("log_level") {
        let name = match &*level {
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or(20.0);
                Some(match n {
                    n if n <= 0.0 => "debug",
                    n if n <= 10.0 => "access",
                    n if n <= 20.0 => "info",
                    n if n <= 30.0 => "warn",
                    n if n <= 40.0 => "error",
                    _ => "off",
                })
            }
            Value::String(s) if !LOG_LEVELS.contains(&s.as_str()) => {
                warnings.push(format!(
                    "log_level '{s}' is not one of {}; using info, as RELIW did",
                    LOG_LEVELS.join(", ")
                ));
                Some("info")
            }
            _ => None,
        };
        if let Some(name) = name {
            *level = Value::from(name);
        }
    }
    Ok(())
}

/// `*` → 0.0.0.0; a name → its first address (IPv4 first); an address stays.
fn listen_address(key: &str, v: &mut Value, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let Value::String(text) = &*v else {
        return Ok(());
    };
    if text.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let addr = if text == "*" {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        use std::net::ToSocketAddrs as _;
        let found: Vec<IpAddr> = (text.as_str(), 0)
            .to_socket_addrs()
            .map_err(|e| {
                invalid(
                    key,
                    format!("'{text}' is not an address and does not resolve: {e}"),
                )
            })?
            .map(|a| a.ip())
            .collect();
        let Some(addr) = found
            .iter()
            .find(|a| a.is_ipv4())
            .or(found.first())
            .copied()
        else {
            return Err(invalid(key, format!("'{text}' resolves to no address")));
        };
        warnings.push(format!("{key} '{text}' resolved to {addr}"));
        addr
    };
    *v = Value::from(addr.to_string());
    Ok(())
}

fn check_keys(
    section: &str,
    obj: &serde_json::Map<String, Value>,
    known: &[&str],
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for key in obj.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let full = if section.is_empty() {
            key.clone()
        } else {
            format!("{section}.{key}")
        };
        let nearest = known
            .iter()
            .map(|k| (edit_distance(key, k), *k))
            .min_by_key(|(d, _)| *d);
        match nearest {
            Some((d, suggestion)) if d <= 2 && key.len() > 2 => {
                return Err(ConfigError::Typo {
                    key: full,
                    suggestion: if section.is_empty() {
                        suggestion.to_owned()
                    } else {
                        format!("{section}.{suggestion}")
                    },
                });
            }
            _ => warnings.push(format!("unknown key '{full}' ignored")),
        }
    }
    Ok(())
}

/// Levenshtein distance; keys are short, so the quadratic cost is nothing.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn fixed_value_keys_are_typed_and_refused_by_path() {
        let (c, _) = Config::parse(
            r#"{"waf": {"block_response": "reliw-redirect"}, "client_ip_header": "x-real-ip",
                "shield": {"mode": "native", "syn_cookies": {"mode": "auto"}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.waf.block_response, BlockResponse::ReliwRedirect);
        assert_eq!(c.client_ip_header.name(), "x-real-ip");
        assert_eq!(c.shield.mode, crate::shield::AttachMode::Drv);
        assert_eq!(c.shield.syn_cookies.mode, CookieMode::Auto);
        for (bad, key) in [
            (
                r#"{"waf": {"block_response": "404"}}"#,
                "waf.block_response",
            ),
            (r#"{"client_ip_header": "forwarded"}"#, "client_ip_header"),
            (
                r#"{"shield": {"syn_cookies": {"mode": "yes"}}}"#,
                "shield.syn_cookies.mode",
            ),
        ] {
            let e = Config::parse(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(key) && e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn redis_cluster_settings_are_checked() {
        let (c, _) = Config::parse(
            r#"{"redis": {"cluster": {"nodes": ["10.0.0.1:7000", "[fd00::1]:7001"]}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let nodes = &c.redis.cluster.as_ref().map(|c| c.nodes.len());
        assert_eq!(*nodes, Some(2));
        for (bad, key, says) in [
            (
                r#"{"redis": {"cluster": {"nodes": []}}}"#,
                "redis.cluster.nodes",
                "at least one",
            ),
            (
                r#"{"redis": {"cluster": {"nodes": ["nohost"]}}}"#,
                "redis.cluster.nodes",
                "host:port",
            ),
            (
                r#"{"redis": {"cluster": {"nodes": ["a:1"]}, "sentinel": {"master": "m", "addresses": ["b:2"]}}}"#,
                "redis.cluster",
                "sentinel",
            ),
            (
                r#"{"redis": {"cluster": {"node": ["a:1"]}}}"#,
                "redis.cluster.node",
                "unknown",
            ),
        ] {
            let e = err(bad);
            assert!(e.contains(key) && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn acme_settings_are_checked() {
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let acme = |extra: &str| {
            format!(
                r#"{{"ssl": {{"acme": {{"key_file": "{key}", "certificates": [{{"names": ["a.test"]}}]{extra}}}}}}}"#
            )
        };
        let (c, warnings) = Config::parse(&acme("")).unwrap_or_else(|e| panic!("{e}"));
        let a = c.ssl.and_then(|s| s.acme).unwrap_or_default();
        assert_eq!(a.certificates[0].challenge(), AcmeChallenge::Http01);
        assert_eq!(a.renew_time, 30 * 86_400);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("http-01 needs plain HTTP")),
            "{warnings:?}"
        );
        // RELIW's provider means dns-01, which needs the hook.
        let provider = acme("").replace(r#"["a.test"]}"#, r#"["*.a.test"], "provider": "vultr"}"#);
        assert!(err(&provider).contains("ssl.acme.dns_hook"));
        for (bad, says) in [
            (
                acme("").replace("a.test", "*.a.test"),
                "wildcard needs the dns-01",
            ),
            (acme(r#", "directory": "http://ca.test/dir""#), "https://"),
            (acme(r#", "check_interval": 0"#), "ssl.acme.check_interval"),
            (
                acme("").replace(key, "/nonexistent/acme.key"),
                "ssl.acme.key_file",
            ),
        ] {
            let e = err(&bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        let (_, warnings) = Config::parse(r#"{"ssl": {"acme": {"account": "ops@a.test", "certificates": [{"names": ["a.test"]}]}}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("not run") && w.contains("key_file")),
            "{warnings:?}"
        );
    }

    #[test]
    fn empty_object_gives_reliw_defaults() {
        let (c, warnings) = Config::parse("{}").unwrap_or_else(|e| panic!("{e}"));
        assert!(warnings.is_empty());
        assert_eq!(c.ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.port, 8080);
        assert_eq!(c.data_dir, PathBuf::from("/www"));
        assert_eq!(c.max_body_size, 5_242_880);
        assert_eq!(c.request_line_limit, 8192);
        assert_eq!(c.idle_timeout(), Duration::from_secs(15));
        assert_eq!(c.redis.db, 13);
        assert_eq!(c.redis.prefix, "RLW");
        assert_eq!(c.metrics.port, 9101);
        assert_eq!(c.log_headers, ["referer", "x-real-ip", "user-agent"]);
    }

    #[test]
    fn wrong_types_and_ranges_name_the_key() {
        assert!(err(r#"{"port": "80"}"#).contains("'port'"));
        assert!(err(r#"{"port": 70000}"#).contains("'port'"));
        assert!(err(r#"{"redis": {"port": -1}}"#).contains("'redis.port'"));
        assert!(err(r#"{"metrics": {"scan_count": "many"}}"#).contains("metrics.scan_count"));
        assert!(err(r#"{"log_level": true}"#).contains("log_level"));
        assert!(err(r#"{"request_header_timeout": 0}"#).contains("request_header_timeout"));
        assert!(err(r#"{"ip": "no-such-host.invalid"}"#).contains("'ip'"));
        assert!(err(r#"{"ssl": {"hosts": {}}}"#).contains("ssl.default"));
        assert!(err(r#"{"workers": 0}"#).contains("'workers'"));
        assert!(err(r#"{"shield": {"mode": "fast"}}"#).contains("shield.mode"));
        assert!(err("[1]").contains("JSON object"));
        assert!(err("{").contains("EOF"));
    }

    #[test]
    fn a_copied_reliw_config_means_what_it_meant() {
        let text = r#"{"ip": "*", "log_level": 10, "keepalive_idle_timeout": 2.5,
            "request_body_timeout": 0.5, "fork_limit": 64, "ipv6": "::",
            "metrics": {"ip": "localhost", "scan_count": 5000, "scan_limit": 0},
            "ssl": {"acme": {"account": "ops@example.com"}},
            "compression": {"enabled": true}}"#;
        let (c, warnings) = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.metrics.ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.log_level, LogLevel::Access);
        assert_eq!(c.idle_timeout(), Duration::from_millis(2500));
        assert_eq!(c.body_timeout(), Duration::from_millis(500));
        assert_eq!((c.metrics.scan_count, c.metrics.scan_limit), (1000, 1));
        assert_eq!(
            c.max_connections, 128,
            "fork_limit per listener, two listeners"
        );
        assert!(c.ssl.as_ref().is_some_and(|s| s.default.is_none()));
        for needle in [
            "scan_count",
            "scan_limit",
            "fork_limit",
            "ssl.acme",
            "metrics.ip",
        ] {
            assert!(
                warnings.iter().any(|w| w.contains(needle)),
                "{needle}: {warnings:?}"
            );
        }
        for (level, name) in [
            ("0", LogLevel::Debug),
            ("10", LogLevel::Access),
            ("20", LogLevel::Info),
            ("30", LogLevel::Warn),
            ("40", LogLevel::Error),
            ("100", LogLevel::Off),
            ("\"loud\"", LogLevel::Info),
        ] {
            let (c, _) = Config::parse(&format!(r#"{{"log_level": {level}}}"#))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.log_level, name, "{level}");
        }
    }

    #[test]
    fn typos_fail_and_other_unknown_keys_warn() {
        assert!(err(r#"{"prot": 80}"#).contains("'prot' is unknown (did you mean 'port'?)"));
        assert!(err(r#"{"redis": {"hots": "x"}}"#).contains("did you mean 'redis.host'"));
        let (_, warnings) =
            Config::parse(r#"{"completely_new_thing": 1}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(warnings, ["unknown key 'completely_new_thing' ignored"]);
    }

    #[test]
    fn missing_cert_files_fail() {
        let e = err(
            r#"{"ssl": {"default": {"cert": "/nonexistent/c.pem", "key": "/nonexistent/k.pem"}}}"#,
        );
        assert!(e.contains("ssl.default.cert"), "{e}");
    }

    #[test]
    fn reliw_fork_keys_become_connection_caps() {
        let (c, _) = Config::parse(r#"{"fork_limit": 64, "requests_per_fork": 5}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.max_connections, 64);
        assert_eq!(c.max_requests_per_connection, 5);
    }
}
