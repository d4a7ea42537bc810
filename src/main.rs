//! Thin entry point: parse the command line, run it, print the error chain, exit code.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    // As a login shell (`-bastion`, `bastion -c LINE`) the command line is `bastion console …`.
    let args = bastion::cli::console::argv(std::env::args_os());
    let cli = bastion::cli::Cli::parse_from(args);
    match bastion::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bastion: {}", bastion::cli::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
