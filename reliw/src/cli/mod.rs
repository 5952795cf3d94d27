//! The command line: `reliw shield ...` (and, with the server issue, `serve`).
//!
//! Every command prints for a person by default and JSON with `--json`.
//! Errors come back as one line on stderr and exit status 1.

mod shield;

use clap::{Parser, Subcommand};

/// eBPF-assisted edge web server.
#[derive(Debug, Parser)]
#[command(name = "reliw", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and steer the XDP shield through its pinned maps.
    Shield(shield::ShieldArgs),
}

/// Runs a parsed command line; the error is one line for stderr.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Shield(args) => shield::run(args),
    }
}
