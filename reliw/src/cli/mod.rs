//! The command line: `reliw serve` and `reliw shield ...`.
//!
//! Every command prints for a person by default and JSON with `--json`
//! where it prints data. Errors come back as one line on stderr and exit
//! status 1.

mod shield;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server::{self, IoMode};

/// eBPF-assisted edge web server.
#[derive(Debug, Parser)]
#[command(name = "reliw", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server.
    Serve {
        /// Config file (default: $RELIW_CONFIG_FILE, then /etc/reliw/config.json,
        /// else built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// I/O runtime: auto (io_uring if available, else epoll), uring, epoll.
        #[arg(long, default_value = "auto")]
        io: String,
    },
    /// Inspect and steer the XDP shield through its pinned maps.
    Shield(shield::ShieldArgs),
}

/// Runs a parsed command line; the error is one line for stderr.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { config, io } => {
            let io: IoMode = io.parse()?;
            let path = Config::locate(config.as_deref());
            let (config, warnings) = match &path {
                Some(p) => Config::load_with_warnings(p).map_err(|e| e.to_string())?,
                None => (Config::default(), Vec::new()),
            };
            init_logging(config.log_level.directive(), config.log_format);
            if let Some(p) = &path {
                for w in warnings {
                    tracing::warn!("config {}: {w}", p.display());
                }
            }
            match &path {
                Some(p) => tracing::info!(config = %p.display(), "config loaded"),
                None => tracing::info!("no config file; running on built-in defaults"),
            }
            server::run(config, path, io).map_err(|e| e.to_string())
        }
        Command::Shield(args) => {
            init_logging("info", crate::config::LogFormat::Text);
            shield::run(args)
        }
    }
}

/// Logs to stderr. `RELIW_LOG` (an env-filter directive) overrides the
/// config's `log_level`; `access` is `info` plus the access log. With
/// `log_format: json` every line is one JSON object (the event's fields,
/// `timestamp`, `level` and `target` at the top level), as RELIW logged.
fn init_logging(directive: &str, format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELIW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directive));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}
