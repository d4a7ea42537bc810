//! The fuzz entry point for the rule parser and the check (`fuzz/fuzz_targets/command_policy.rs`,
//! replayed by `tests/fuzz_corpora.rs`), in the library so `cargo test` runs it too.
//!
//! The first line of `data` is a rule list; every further line is a command, its words split
//! on spaces. Rules either compile or fail with an error naming a rule; a compiled policy
//! checks every command without panicking, decides the same whatever the case of the name, and
//! a denial is one line naming an argument position inside the command.

use super::{CommandPolicy, Denied};

/// Fuzz the rule parser and the policy check: never panic, case-blind, positions in range.
pub fn fuzz_policy(data: &[u8]) {
    let mut lines = data.split(|b| *b == b'\n');
    let rules = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let policy = match CommandPolicy::parse(&rules) {
        Ok(policy) => policy,
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty() && !message.contains('\n'), "{message}");
            return;
        }
    };
    let _ = CommandPolicy::for_role(Some(&rules), None);
    for line in lines {
        let mut words = line.split(|b| *b == b' ');
        let name = words.next().unwrap_or_default();
        let args: Vec<&[u8]> = words.collect();
        let decision = policy.check(name, &args);
        assert_eq!(
            policy.check(&name.to_ascii_uppercase(), &args),
            decision,
            "case of the name"
        );
        if let Err(denied) = decision {
            if let Denied::Key { position, .. } = denied {
                assert!(position >= 1 && position <= args.len(), "{denied:?}");
            }
            let resp = denied.to_resp();
            assert!(resp.starts_with(b"-NOPERM bastion: ") && resp.ends_with(b"\r\n"));
            assert!(!resp[..resp.len() - 2].contains(&b'\n'));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_corpus_runs() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/command_policy");
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/command_policy") {
            fuzz_policy(&std::fs::read(entry.expect("seed").path()).expect("seed file"));
            seeds += 1;
        }
        assert!(seeds > 0);
    }
}
