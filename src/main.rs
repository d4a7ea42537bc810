//! Thin entry point: parse the command line, run it, print the error chain, exit code.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = bastion::cli::Cli::parse();
    match bastion::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bastion: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `outer: cause: root cause`, skipping a cause whose text the previous message already quotes
/// (our error types name their source inline).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
