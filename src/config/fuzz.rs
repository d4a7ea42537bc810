//! Fuzz entry point for the boot config's TOML (`fuzz/fuzz_targets/config.rs`, replayed by
//! `tests/fuzz_corpora.rs`): any bytes give a validated `Config` or a `ConfigError`, never a
//! panic, and a config that passed keeps its listeners' addresses and routing together.

use std::path::Path;

use super::Config;

/// Parse `bytes` as the boot config. The config holds no secret (passwords come from files or
/// the environment), so an error may quote the offending line — only the outcome is checked.
pub fn fuzz_config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            // Sorting by lifetime keeps every TLS listener's address with its routing.
            assert_eq!(config.boot.tcp.len(), config.live.tcp.len());
            assert!(config.live.limits.max_sessions >= 1);
            // What the daemon derives from a valid config must not panic either.
            let _ = config.boot.admin_socket();
        }
        Err(e) => {
            // Display must work (it is what the operator sees) and name the file or a key.
            let message = e.to_string();
            assert!(
                message.starts_with("config"),
                "unexpected error shape: {message}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_corpus_parses_or_fails_cleanly() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/config");
        for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/config") {
            fuzz_config(&std::fs::read(entry.expect("seed").path()).expect("seed file"));
        }
    }
}
