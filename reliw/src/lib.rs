//! reliw: an eBPF-assisted edge web server.
//!
//! Modules:
//! - [`shield`]: the XDP shield from user space (loader, pins, bans, stats).
//! - [`config`]: the JSON configuration (RELIW's keys and defaults).
//! - [`http`]: the sans-IO HTTP/1.1 codec.
//! - [`lua_pattern`]: RELIW's Lua patterns, translated for linear-time matching.
//! - [`render`]: markdown and djot to HTML, logic-less page templates.
//! - [`files`]: static files with kernel-enforced confinement, and their cache.
//! - [`store`]: RELIW site data: the Store trait, Redis and embedded backends.
//! - [`site`]: what a request gets (the site pipeline).
//! - [`server`]: listeners, workers, connections, signals.
//! - [`cli`]: the command line (`reliw serve`, `reliw shield ...`).

// The connection driver's futures nest deeply (exchange, forward, the
// site's steps, the store's Sentinel failover): rustc's default depth
// of 128 is too shallow to lay them out.
#![recursion_limit = "256"]

pub mod acme;
pub mod auth;
pub mod background;
pub mod bans;
pub mod cli;
pub mod client_ip;
pub mod compress;
pub mod config;
pub mod files;
pub mod http;
pub mod look;
pub mod lua;
pub mod lua_pattern;
pub mod metrics;
pub mod proxy;
pub mod render;
pub mod server;
pub mod shield;
pub mod site;
pub mod store;
pub mod waf;
