//! Where a command's keys are, from Redis' own table (`commands.rs`, generated from a real
//! server's `COMMAND` reply): enough for the audit's key count and first key, and to name a
//! container command's subcommand (`CONFIG SET`, `OBJECT ENCODING`).
//!
//! Names are matched like Redis' `strcasecmp` (ASCII case-insensitive, ending at a NUL), and a
//! name or subcommand not in the table is never echoed: the audit names commands only by the
//! table's own `&'static str`s, so a password typed where a command name goes is never logged.
//!
//! Movable keys: a `keynum` spec (EVAL, ZUNION, LMPOP…) is followed from its count argument; a
//! keyword-found one (XREAD … STREAMS, MIGRATE … KEYS, SORT … STORE) counts only the fixed
//! positions Redis' legacy range gives (none for XREAD) — documented as an undercount.

use std::cmp::Ordering;

use super::commands::COMMANDS;

/// One command's key positions (Redis' legacy first/last/step, plus a `keynum` spec).
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    /// First key's argument index (0: no fixed keys).
    pub first: u8,
    /// Last key's index; negative counts from the end (-1: the last argument).
    pub last: i8,
    pub step: u8,
    pub keynum: Option<Keynum>,
    /// A container command's subcommands, sorted by name.
    pub subcommands: &'static [Spec],
}

/// Keys counted by an argument: `count_at` holds the number, the first key is at `first`.
#[derive(Debug, Clone, Copy)]
pub struct Keynum {
    pub count_at: u8,
    pub first: u8,
    pub step: u8,
}

/// Commands whose arguments carry secrets: the audit never records any argument of theirs
/// (AUTH, HELLO … AUTH, ACL SETUSER, CONFIG SET *pass*, MIGRATE … AUTH/AUTH2), only their names.
const SECRET_BEARING: [&str; 5] = ["acl", "auth", "config", "hello", "migrate"];

impl Spec {
    /// The command named `name` (its first bytes as the framer keeps them).
    pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
        find(COMMANDS, name)
    }

    /// Its subcommand named `name`.
    pub fn subcommand(&self, name: &[u8]) -> Option<&'static Spec> {
        find(self.subcommands, name)
    }

    pub fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    pub fn secret_bearing(&self) -> bool {
        SECRET_BEARING.contains(&self.name)
    }

    /// Keys of a call with `argc` arguments (the name included), and where the first is; for a
    /// `keynum` spec `numkeys` is its count argument's value once seen.
    pub fn keys(&self, argc: u64, numkeys: Option<u64>) -> (u64, Option<u64>) {
        if let Some(k) = self.keynum {
            let Some(n) = numkeys else {
                return (0, None);
            };
            let first = u64::from(k.first);
            let step = u64::from(k.step.max(1));
            // Keys Redis would find (it refuses a numkeys past the arguments).
            let room = argc.saturating_sub(first).div_ceil(step);
            let n = n.min(room);
            return (n, (n > 0).then_some(first));
        }
        if self.first == 0 || argc <= u64::from(self.first) {
            return (0, None);
        }
        let first = u64::from(self.first);
        let last = if self.last < 0 {
            argc.saturating_sub(u64::from(self.last.unsigned_abs()))
        } else {
            u64::from(self.last as u8).min(argc - 1)
        };
        if last < first {
            return (0, None);
        }
        let step = u64::from(self.step.max(1));
        ((last - first) / step + 1, Some(first))
    }
}

fn find(table: &'static [Spec], name: &[u8]) -> Option<&'static Spec> {
    let name = match name.iter().position(|&b| b == 0) {
        Some(nul) => &name[..nul],
        None => name,
    };
    table
        .binary_search_by(|spec| cmp_lower(spec.name.as_bytes(), name))
        .ok()
        .map(|i| &table[i])
}

/// `table_name` (lower case) against `name` in any case.
fn cmp_lower(table_name: &[u8], name: &[u8]) -> Ordering {
    let n = name.iter().map(u8::to_ascii_lowercase);
    table_name.iter().copied().cmp(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(name: &str, argc: u64, numkeys: Option<u64>) -> (u64, Option<u64>) {
        Spec::lookup(name.as_bytes()).unwrap().keys(argc, numkeys)
    }

    #[test]
    fn the_table_is_sorted_so_lookups_find_every_name() {
        for w in COMMANDS.windows(2) {
            assert!(w[0].name < w[1].name, "{} {}", w[0].name, w[1].name);
        }
        for spec in COMMANDS {
            assert!(std::ptr::eq(
                Spec::lookup(spec.name.as_bytes()).unwrap(),
                spec
            ));
            for sub in spec.subcommands {
                assert!(std::ptr::eq(
                    spec.subcommand(sub.name.as_bytes()).unwrap(),
                    sub
                ));
            }
        }
        assert_eq!(Spec::lookup(b"gEt").unwrap().name, "get");
        assert_eq!(Spec::lookup(b"GET\0x").unwrap().name, "get");
        assert!(Spec::lookup(b"hunter2").is_none());
        assert!(Spec::lookup(b"").is_none());
    }

    #[test]
    fn key_positions_are_redis_own() {
        assert_eq!(keys("get", 2, None), (1, Some(1)));
        assert_eq!(keys("mset", 7, None), (3, Some(1)));
        assert_eq!(keys("del", 4, None), (3, Some(1)));
        assert_eq!(keys("smove", 4, None), (2, Some(1)));
        assert_eq!(keys("blpop", 4, None), (2, Some(1)));
        assert_eq!(keys("ping", 1, None), (0, None));
        // Arity errors: what is there.
        assert_eq!(keys("get", 1, None), (0, None));
        // EVAL script numkeys k1 k2 a1
        assert_eq!(keys("eval", 6, Some(2)), (2, Some(3)));
        assert_eq!(keys("eval", 4, Some(0)), (0, None));
        assert_eq!(keys("eval", 4, Some(9)), (1, Some(3)));
        let object = Spec::lookup(b"OBJECT").unwrap();
        assert!(object.is_container());
        let encoding = object.subcommand(b"encoding").unwrap();
        assert_eq!(encoding.keys(3, None), (1, Some(2)));
        assert!(Spec::lookup(b"config").unwrap().secret_bearing());
        assert!(Spec::lookup(b"MIGRATE").unwrap().secret_bearing());
    }
}
