//! Thin entry point: parse the command line, run it, print errors with their causes.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = bastion::cli::Cli::parse();
    match bastion::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bastion: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
