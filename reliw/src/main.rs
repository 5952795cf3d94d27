//! The `reliw` binary: parses the command line and hands over to [`reliw::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = reliw::cli::Cli::parse();
    match reliw::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reliw: error: {e}");
            ExitCode::FAILURE
        }
    }
}
