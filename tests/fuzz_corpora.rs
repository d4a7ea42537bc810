//! Every cargo-fuzz target's seed corpus (`fuzz/seeds/<target>/`), replayed on stable Rust
//! through the same library entry points the targets call, so a crash a campaign found (and
//! saved into the corpus) stays a regression test. A target without a corpus fails here.

use std::path::Path;

type Entry = fn(&[u8]);

/// Target name (as in fuzz/Cargo.toml) → the library entry point it calls.
const TARGETS: &[(&str, Entry)] = &[
    ("opening", bastion::proxy::handshake::fuzz_opening),
    ("reply", bastion::proxy::handshake::fuzz_reply),
    ("store_recovery", bastion::store::fuzz_recover),
    ("guard_framer", bastion::proxy::guard::fuzz_framer),
    ("admin_request", bastion::admin::wire::fuzz_request),
    ("imds_credentials", bastion::aws::imds::fuzz_credentials),
    ("settings", bastion::cli::import::fuzz_settings),
    ("config", bastion::config::fuzz_config),
    ("inspect_replies", bastion::proxy::inspect::fuzz_replies),
];

#[test]
fn every_target_is_listed_and_every_corpus_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let declared: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "bastion-fuzz")
        .collect();
    let mut listed: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    let mut declared_sorted = declared.clone();
    listed.sort();
    declared_sorted.sort();
    assert_eq!(
        listed, declared_sorted,
        "fuzz/Cargo.toml and this list differ"
    );

    for (name, entry) in TARGETS {
        let dir = root.join("seeds").join(name);
        let mut seeds = 0;
        for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = file.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            let replay = std::panic::catch_unwind(|| entry(&bytes));
            assert!(replay.is_ok(), "{name}: {} panics", path.display());
            seeds += 1;
        }
        assert!(seeds > 0, "{name}: empty corpus in {}", dir.display());
    }
}
