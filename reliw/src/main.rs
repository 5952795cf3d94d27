//! The `reliw` binary: parses the command line and hands over to [`reliw::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("RELIW_LOG", "info"))
        .format_timestamp_millis()
        .init();
    let cli = reliw::cli::Cli::parse();
    match reliw::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reliw: error: {e}");
            ExitCode::FAILURE
        }
    }
}
