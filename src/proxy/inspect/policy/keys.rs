//! Where a command's keys are, and what it does with them: Redis 7.0's
//! `getKeysFromCommandWithSpecs` — the key specs when they are complete and their flags fixed,
//! otherwise the command's own key finder (`setGetKeys`, `bitfieldGetKeys`, `sortGetKeys`,
//! `migrateGetKeys`, `sortROGetKeys`), which Redis also falls back to when complete specs fail
//! on the arguments at hand (`xreadGetKeys`). A command that needs a finder this file does not
//! have gives `None`, and the policy denies it when keys are restricted
//! (`tests/command_policy.rs` checks that no command of the table is in that case).
//!
//! Keywords (STREAMS, STORE, GET, KEYS…) are compared as Redis' `strcasecmp` compares them,
//! up to a NUL byte: `STREAMS\0x` is STREAMS to Redis' key search and to the command itself.

use super::key_flags::*;
use super::{BeginSearch, CommandSpec, FindKeys, KeySpec, READ, WRITE};
use crate::proxy::guard::framer::keyword_eq;

/// One key: its argument position (1 = first after the name) and the permissions it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub position: usize,
    pub perms: u8,
}

/// Commands whose key specs are incomplete or variable, or can fail on some arguments
/// ([`SPEC_FALLBACKS`]), with Redis' own finder for them.
pub(super) const FINDERS: &[&str] = &[
    "bitfield",
    "migrate",
    "set",
    "sort",
    "sort_ro",
    "xread",
    "xreadgroup",
];

/// Of [`FINDERS`], the commands whose key specs are complete but fail on some arguments (the
/// STREAMS keyword found with one argument after it), where Redis then uses the finder.
#[cfg(test)]
pub(super) const SPEC_FALLBACKS: &[&str] = &["xread", "xreadgroup"];

/// `doesCommandHaveKeys`: some key spec is a real key.
pub(super) fn has_keys(cmd: &CommandSpec) -> bool {
    cmd.key_specs.iter().any(|s| s.flags & NOT_KEY == 0)
}

/// Where found keys go: a list (the policy checks each) or a count (the audit).
pub(super) trait Keys: Default {
    fn push(&mut self, key: Key);
}

impl Keys for Vec<Key> {
    fn push(&mut self, key: Key) {
        Vec::push(self, key);
    }
}

/// How many keys a call has and the position of the first, in the order Redis' `COMMAND
/// GETKEYS` lists them — without a list as long as the call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyCount {
    pub count: u64,
    /// Argument index of the first key (1 = the first after the name).
    pub first: Option<usize>,
}

impl Keys for KeyCount {
    fn push(&mut self, key: Key) {
        self.count += 1;
        self.first.get_or_insert(key.position);
    }
}

/// The keys of `cmd` called with `args` (after the name), or `None` if they cannot be found.
pub(super) fn find<A: AsRef<[u8]>>(cmd: &CommandSpec, args: &[A]) -> Option<Vec<Key>> {
    walk(cmd, args.len() + 1, |i| args.get(i - 1).map(AsRef::as_ref))
}

/// `getKeysFromCommandWithSpecs` for a call of `argc` arguments (the name included), reading
/// argument `i` (1 = the first after the name) through `arg`: `None` where it is not at hand
/// (taken as empty). Arguments are read only by keyword searches, `numkeys` and the finders.
pub(super) fn walk<'a, K: Keys>(
    cmd: &CommandSpec,
    argc: usize,
    arg: impl Fn(usize) -> Option<&'a [u8]> + Copy,
) -> Option<K> {
    let has_varflags = cmd.key_specs.iter().any(|s| s.flags & VARIABLE_FLAGS != 0);
    if !has_varflags {
        if let Some(keys) = from_specs(cmd.key_specs, argc, arg) {
            return Some(keys);
        }
    }
    // With too few arguments (Redis refuses the arity before its ACL) a finder may name a
    // position past the end: there is no key there.
    let within = |keys: Vec<Key>| {
        let mut found = K::default();
        keys.into_iter()
            .filter(|k| k.position < argc)
            .for_each(|k| found.push(k));
        found
    };
    let keys = match cmd.name {
        name if !FINDERS.contains(&name) => None,
        "set" => Some(set_keys(argc, arg)),
        "bitfield" => Some(bitfield_keys(argc, arg)),
        "sort" => Some(sort_keys(argc, arg)),
        "migrate" => Some(migrate_keys(argc, arg)),
        "xread" | "xreadgroup" => Some(xread_keys(argc, arg)),
        // `sortROGetKeys`: only the sorted key (BY/GET patterns are not keys to ACL).
        "sort_ro" => Some(vec![Key {
            position: 1,
            perms: perms_of(RO | ACCESS),
        }]),
        _ => None,
    };
    keys.map(within)
}

/// What a key spec's flags need: `ACCESS` reads, `INSERT`/`DELETE`/`UPDATE` write.
pub(super) fn perms_of(flags: u16) -> u8 {
    let mut perms = 0;
    if flags & ACCESS != 0 {
        perms |= READ;
    }
    if flags & (INSERT | DELETE | UPDATE) != 0 {
        perms |= WRITE;
    }
    perms
}

/// `getKeysUsingKeySpecs` without partial results: `None` where Redis returns -1.
fn from_specs<'a, K: Keys>(
    specs: &[KeySpec],
    argc: usize,
    get: impl Fn(usize) -> Option<&'a [u8]>,
) -> Option<K> {
    let argc = argc as i64;
    let arg = |i: i64| -> &[u8] {
        usize::try_from(i)
            .ok()
            .filter(|&i| i >= 1)
            .and_then(&get)
            .unwrap_or_default()
    };
    let mut keys = K::default();
    for spec in specs {
        if spec.flags & NOT_KEY != 0 {
            continue;
        }
        let mut first = match spec.begin {
            BeginSearch::Index(pos) => i64::from(pos),
            BeginSearch::Keyword { keyword, startfrom } => {
                let startfrom = i64::from(startfrom);
                let (start, end) = if startfrom > 0 {
                    (startfrom, argc - 1)
                } else {
                    (argc + startfrom, 1)
                };
                let mut found = 0;
                let mut i = start;
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if keyword_eq(arg(i), keyword) {
                        found = i + 1;
                        break;
                    }
                    i = if start <= end { i + 1 } else { i - 1 };
                }
                if found == 0 {
                    continue;
                }
                found
            }
            BeginSearch::Unknown => return None,
        };
        let (last, step) = match spec.find {
            FindKeys::Range {
                lastkey,
                keystep,
                limit,
            } => {
                let (lastkey, limit) = (i64::from(lastkey), i64::from(limit));
                let last = if lastkey >= 0 {
                    first + lastkey
                } else if limit == 0 {
                    argc + lastkey
                } else {
                    // Redis asserts lastkey == -1 here (the generator checks the table does).
                    first + ((argc - first) / limit + lastkey)
                };
                (last, i64::from(keystep))
            }
            FindKeys::Keynum {
                keynumidx,
                firstkey,
                keystep,
            } => {
                let at = first + i64::from(keynumidx);
                if at >= argc {
                    return None;
                }
                let numkeys: i64 = std::str::from_utf8(arg(at)).ok()?.parse().ok()?;
                if numkeys < 0 || !is_redis_integer(arg(at)) {
                    return None;
                }
                if numkeys == 0 {
                    // Redis: an invalid spec, so the command's finder decides, and every
                    // keynum finder (`genericGetKeys` and kin) finds no key at all for 0 —
                    // not even a destination found by an earlier spec. `EVAL s 0` runs.
                    return Some(K::default());
                }
                first += i64::from(firstkey);
                (first.checked_add(numkeys)? - 1, i64::from(keystep))
            }
            FindKeys::Unknown => return None,
        };
        if last >= argc || last < first || first >= argc {
            return None;
        }
        if step < 1 {
            return None;
        }
        let mut i = first;
        while i <= last {
            if i >= argc || i < first {
                // Variadic commands with too few arguments: Redis finds no key here and the
                // command fails its own syntax check.
                i += step;
                continue;
            }
            keys.push(Key {
                position: i as usize,
                perms: perms_of(spec.flags),
            });
            i += step;
        }
        if spec.flags & INCOMPLETE != 0 {
            return None;
        }
    }
    Some(keys)
}

/// `string2ll`: no leading `+`, no leading zeros, no spaces (what `str::parse` lets through
/// beyond it).
fn is_redis_integer(s: &[u8]) -> bool {
    match s {
        [b'0'] => true,
        [b'-', rest @ ..] => matches!(rest.first(), Some(b'1'..=b'9')),
        [first, ..] => (b'1'..=b'9').contains(first),
        [] => false,
    }
}

/// `setGetKeys`: the key is read as well when `GET` is among the options.
fn set_keys<'a>(argc: usize, arg: impl Fn(usize) -> Option<&'a [u8]>) -> Vec<Key> {
    let get = (3..argc).any(|i| arg(i).is_some_and(|a| keyword_eq(a, "get")));
    let flags = if get {
        RW | ACCESS | UPDATE
    } else {
        OW | UPDATE
    };
    vec![Key {
        position: 1,
        perms: perms_of(flags),
    }]
}

/// `bitfieldGetKeys`: read-only when every operation is `GET` (or `OVERFLOW`).
fn bitfield_keys<'a>(argc: usize, arg: impl Fn(usize) -> Option<&'a [u8]>) -> Vec<Key> {
    let mut readonly = true;
    let mut i = 2;
    while i < argc {
        let remargs = argc - i - 1;
        let a = arg(i).unwrap_or_default();
        if keyword_eq(a, "get") && remargs >= 2 {
            i += 2;
        } else if (keyword_eq(a, "set") || keyword_eq(a, "incrby")) && remargs >= 3 {
            readonly = false;
            break;
        } else if keyword_eq(a, "overflow") && remargs >= 1 {
            i += 1;
        } else {
            readonly = false;
            break;
        }
        i += 1;
    }
    let flags = if readonly {
        RO | ACCESS
    } else {
        RW | ACCESS | UPDATE
    };
    vec![Key {
        position: 1,
        perms: perms_of(flags),
    }]
}

/// `sortGetKeys`: the sorted key, and the last `STORE` destination.
fn sort_keys<'a>(argc: usize, arg: impl Fn(usize) -> Option<&'a [u8]>) -> Vec<Key> {
    let mut keys = vec![Key {
        position: 1,
        perms: perms_of(RO | ACCESS),
    }];
    let mut store = None;
    let skips: [(&str, usize); 3] = [("limit", 2), ("get", 1), ("by", 1)];
    let mut i = 2;
    while i < argc {
        let a = arg(i).unwrap_or_default();
        // Redis checks STORE inside the loop over the skip list, before its first entry.
        if let Some((_, skip)) = skips.iter().find(|(name, _)| keyword_eq(a, name)) {
            i += skip;
        } else if keyword_eq(a, "store") && i + 1 < argc {
            store = Some(i + 1);
        }
        i += 1;
    }
    if let Some(position) = store {
        keys.push(Key {
            position,
            perms: perms_of(OW | UPDATE),
        });
    }
    keys
}

/// `migrateGetKeys`: the key argument, or every key after `KEYS` (when the key argument is
/// empty).
fn migrate_keys<'a>(argc: usize, arg: impl Fn(usize) -> Option<&'a [u8]>) -> Vec<Key> {
    let (mut first, mut num) = (3, 1);
    if argc > 6 {
        let mut i = 6;
        while i < argc {
            let a = arg(i).unwrap_or_default();
            if keyword_eq(a, "keys") {
                if !arg(3).unwrap_or_default().is_empty() {
                    return Vec::new();
                }
                first = i + 1;
                num = argc - first;
                break;
            }
            if keyword_eq(a, "auth") {
                i += 1;
            } else if keyword_eq(a, "auth2") {
                i += 2;
            }
            i += 1;
        }
    }
    (first..first + num)
        .map(|position| Key {
            position,
            perms: perms_of(RW | ACCESS | DELETE),
        })
        .collect()
}

/// `xreadGetKeys`: skip the options (BLOCK n, COUNT n, GROUP g c, NOACK) up to the first
/// STREAMS; any other word first is a syntax error (no key). Half of what follows are keys,
/// with no flags (Redis 7.0: any key pattern lets them pass); an odd count is a syntax error.
fn xread_keys<'a>(argc: usize, arg: impl Fn(usize) -> Option<&'a [u8]>) -> Vec<Key> {
    let mut streams = None;
    let mut i = 1;
    while i < argc {
        let a = arg(i).unwrap_or_default();
        if keyword_eq(a, "block") || keyword_eq(a, "count") {
            i += 1;
        } else if keyword_eq(a, "group") {
            i += 2;
        } else if keyword_eq(a, "noack") {
        } else if keyword_eq(a, "streams") {
            streams = Some(i);
            break;
        } else {
            break;
        }
        i += 1;
    }
    let Some(at) = streams else {
        return Vec::new();
    };
    let rest = argc - at - 1;
    if rest == 0 || rest % 2 != 0 {
        return Vec::new();
    }
    (at + 1..at + 1 + rest / 2)
        .map(|position| Key { position, perms: 0 })
        .collect()
}
