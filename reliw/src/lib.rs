//! reliw: an eBPF-assisted edge web server.
//!
//! Modules:
//! - [`shield`]: the XDP shield from user space (loader, pins, bans, stats).
//! - [`cli`]: the command line (`reliw shield ...`).

pub mod cli;
pub mod shield;
