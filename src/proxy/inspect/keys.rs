//! What the audit needs of Redis' command table: a command (and subcommand) by the name the
//! client sent, whether it carries secrets, and its keys — all from the one table the command
//! policy uses (`policy/table.rs`, generated from a real server by `tests/command_policy.rs`).
//!
//! Names are matched like Redis' `strcasecmp` (ASCII case-insensitive, ending at a NUL), and a
//! name or subcommand not in the table is never echoed: the audit names commands only by the
//! table's own `&'static str`s, so a password typed where a command name goes is never logged.
//!
//! Keys are counted as Redis' `COMMAND GETKEYS` finds them ([`CommandSpec::key_count`]): key
//! specs by index, keyword search (XREAD … STREAMS, GEORADIUS … STORE, MIGRATE … KEYS) and
//! `numkeys` (EVAL, ZUNION, LMPOP…), and Redis' own finders where the specs are not enough
//! (SORT, MIGRATE, SET, BITFIELD). The tap keeps the first [`AUDIT_ARGS`] arguments' prefixes
//! of a sampled command for it; a keyword past them is not seen.

use super::policy::{self, CommandSpec};

/// The audit's name for a table entry.
pub type Spec = CommandSpec;

/// Of a sampled command, how many arguments the audit keeps (their first bytes) to find its
/// keys by keyword or `numkeys`.
pub const AUDIT_ARGS: u64 = 256;

/// Commands whose arguments carry secrets: the audit never records any argument of theirs
/// (AUTH, HELLO … AUTH, ACL SETUSER, CONFIG SET *pass*, MIGRATE … AUTH/AUTH2), only their names.
const SECRET_BEARING: [&str; 5] = ["acl", "auth", "config", "hello", "migrate"];

impl CommandSpec {
    /// The command named `name` (its first bytes as the framer keeps them).
    pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
        policy::lookup(c_str(name))
    }

    /// Its subcommand named `name` (as the framer keeps it).
    pub fn subcommand_named(&'static self, name: &[u8]) -> Option<&'static Spec> {
        self.subcommand(c_str(name))
    }

    pub fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// Its container's name (`config` for `config|get`), or its own.
    pub fn base_name(&self) -> &'static str {
        self.name.split('|').next().unwrap_or(self.name)
    }

    /// In the table's `@blocking` category (BLPOP, XREAD, …; not WAIT, which blocks too).
    pub fn blocking(&self) -> bool {
        policy::categories()
            .iter()
            .position(|&c| c == "blocking")
            .is_some_and(|bit| self.categories & (1 << bit) != 0)
    }

    pub fn secret_bearing(&self) -> bool {
        SECRET_BEARING.contains(&self.base_name())
    }
}

/// A name up to its first NUL, as `strcasecmp` compares it.
fn c_str(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == 0) {
        Some(nul) => &name[..nul],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of `words` (the name first): count and first position.
    fn keys(words: &[&str]) -> (u64, Option<usize>) {
        let spec = Spec::lookup(words[0].as_bytes()).unwrap();
        let spec = match words.get(1) {
            Some(sub) if spec.is_container() => spec.subcommand_named(sub.as_bytes()).unwrap(),
            _ => spec,
        };
        let c = spec
            .key_count(words.len() as u64, |i| words.get(i).map(|w| w.as_bytes()))
            .unwrap_or_default();
        (c.count, c.first)
    }

    #[test]
    fn names_are_found_like_strcasecmp_and_never_invented() {
        assert_eq!(Spec::lookup(b"gEt").unwrap().name, "get");
        assert_eq!(Spec::lookup(b"GET\0x").unwrap().name, "get");
        assert!(Spec::lookup(b"hunter2").is_none());
        assert!(Spec::lookup(b"").is_none());
        let object = Spec::lookup(b"OBJECT").unwrap();
        assert!(object.is_container());
        assert_eq!(
            object.subcommand_named(b"Encoding").unwrap().name,
            "object|encoding"
        );
        assert!(object.subcommand_named(b"nosuch").is_none());
        assert!(Spec::lookup(b"config").unwrap().secret_bearing());
        let set = Spec::lookup(b"config")
            .unwrap()
            .subcommand_named(b"set")
            .unwrap();
        assert!(set.secret_bearing());
        assert!(Spec::lookup(b"MIGRATE").unwrap().secret_bearing());
        assert!(!Spec::lookup(b"get").unwrap().secret_bearing());
    }

    #[test]
    fn key_positions_are_redis_own() {
        assert_eq!(keys(&["get", "k"]), (1, Some(1)));
        assert_eq!(keys(&["mset", "a", "1", "b", "2", "c", "3"]), (3, Some(1)));
        assert_eq!(keys(&["del", "a", "b", "c"]), (3, Some(1)));
        assert_eq!(keys(&["blpop", "a", "b", "0"]), (2, Some(1)));
        assert_eq!(keys(&["ping"]), (0, None));
        // EVAL script numkeys k1 k2 a1
        assert_eq!(keys(&["eval", "s", "2", "k1", "k2", "a"]), (2, Some(3)));
        assert_eq!(keys(&["eval", "s", "0", "a"]), (0, None));
        assert_eq!(keys(&["object", "encoding", "k"]), (1, Some(2)));
        // Found by keyword: what the legacy range never counted.
        assert_eq!(
            keys(&["xread", "count", "2", "streams", "s1", "s2", "0", "0"]),
            (2, Some(4))
        );
        assert_eq!(
            keys(&["georadius", "g", "0", "0", "1", "km", "store", "dst"]),
            (2, Some(1))
        );
        assert_eq!(
            keys(&["migrate", "h", "1", "", "0", "5", "keys", "a", "b"]),
            (2, Some(7))
        );
        assert_eq!(keys(&["zunion", "2", "a", "b"]), (2, Some(2)));
    }
}
