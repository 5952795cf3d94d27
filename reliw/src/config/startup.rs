//! The keys read once, when the process or a worker starts: listeners,
//! workers, the file cache, logging, the store connection, the metrics
//! listener, Lua budgets, the ban book and the shield. Whatever freezes a
//! value at start takes it from [`Startup`], never from a [`Config`]
//! snapshot, so the type says what SIGHUP cannot change. Everything else
//! in `Config` is live: a reload reaches every connection opened after it.
//!
//! A reload that changes one of these keys is applied without it, and
//! [`Startup::changed`] names the key in a warning.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use super::{
    Config, CookieMode, LogFormat, LogLevel, RateLimitBan, RedisConfig, ShieldRateLimit,
    StoreBackend,
};
use crate::shield::AttachMode;

macro_rules! startup_keys {
    ($c:ident => { $( $key:literal $field:ident : $ty:ty = $get:expr ),* $(,)? }) => {
        /// What a running server keeps from the config it started with.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Startup {
            $( pub $field: $ty, )*
        }

        impl Startup {
            pub fn of($c: &Config) -> Self {
                Self { $( $field: $get, )* }
            }

            /// The keys whose values differ in `other`, as the config names them.
            pub fn changed(&self, other: &Self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $( if self.$field != other.$field { keys.push($key); } )*
                keys
            }
        }
    };
}

startup_keys!(c => {
    "ip" ip: IpAddr = c.ip,
    "port" port: u16 = c.port,
    "ipv6" ipv6: Option<Ipv6Addr> = c.ipv6,
    "backlog" backlog: u32 = c.backlog,
    "workers" workers: usize = c.workers,
    "ssl (on or off)" tls: bool = c.ssl.is_some(),
    "ssl.port" tls_port: Option<u16> = c.ssl.as_ref().and_then(|s| s.port),
    "ssl.acme" acme: Option<super::AcmeConfig> = c.ssl.as_ref().and_then(|s| s.acme.clone()),
    "data_dir" data_dir: PathBuf = c.data_dir.clone(),
    "cache_max_size (the file cache's)" file_cache_max: u64 = c.cache_max_size,
    "cache_total_size" cache_total_size: u64 = c.cache_total_size,
    "cache_revalidate_ms" cache_revalidate_ms: u64 = c.cache_revalidate_ms,
    "cache_max_fds" cache_max_fds: usize = c.cache_max_fds,
    "sendfile_min_size" sendfile_min_size: u64 = c.sendfile_min_size,
    "compression.cache_size" compression_cache_size: u64 = c.compression.cache_size,
    "site_cache_ttl_ms" site_cache_ttl_ms: u64 = c.site_cache_ttl_ms,
    "log_level" log_level: LogLevel = c.log_level,
    "log_format" log_format: LogFormat = c.log_format,
    "store.backend" store_backend: StoreBackend = c.store.backend,
    "redis" redis: RedisConfig = c.redis.clone(),
    "metrics (all but flush_ms)" metrics: (IpAddr, u16, bool, u32, u32) = (
        c.metrics.ip,
        c.metrics.port,
        c.metrics.disabled,
        c.metrics.scan_count,
        c.metrics.scan_limit,
    ),
    "lua.memory_limit" lua_memory_limit: usize = c.lua.memory_limit,
    "lua.time_limit_ms" lua_time_limit_ms: u64 = c.lua.time_limit_ms,
    "rate_limit.ban" rate_limit_ban: Option<RateLimitBan> = c.rate_limit.ban.clone(),
    "node_name" node_name: Option<String> = c.node_name.clone(),
    "shield.ban_seconds (for bans heard from other nodes and rate-limit bans)"
        ban_seconds: u64 = c.shield.ban_seconds,
    "shield.interfaces" shield_interfaces: Vec<String> = c.shield.interfaces.clone(),
    "shield.mode" shield_mode: AttachMode = c.shield.mode,
    "shield.dry_run (change it live with `reliw shield dry-run`)"
        shield_dry_run: bool = c.shield.dry_run,
    "shield.pin_root" shield_pin_root: PathBuf = c.shield.pin_root.clone(),
    "shield.rate_limit (change it live with `reliw shield rate`)"
        shield_rate_limit: ShieldRateLimit = c.shield.rate_limit.clone(),
    "shield.syn_cookies.mode" syn_cookies_mode: CookieMode = c.shield.syn_cookies.mode,
    "shield.syn_cookies (ports, above_per_second)" syn_cookies: (Vec<u16>, u64) = (
        c.shield.syn_cookies.ports.clone(),
        c.shield.syn_cookies.above_per_second,
    ),
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_exactly_the_start_up_keys_it_changed() {
        let old = Config::default();
        let mut new = old.clone();
        new.port = 9999;
        new.cache_total_size += 1;
        new.shield.syn_cookies.mode = CookieMode::Auto;
        // Live keys are not start-up keys.
        new.max_body_size += 1;
        new.proxy.buffer_size += 1;
        new.metrics.flush_ms += 1;
        assert_eq!(
            Startup::of(&old).changed(&Startup::of(&new)),
            ["port", "cache_total_size", "shield.syn_cookies.mode"]
        );
        assert!(Startup::of(&old).changed(&Startup::of(&old)).is_empty());
    }
}
