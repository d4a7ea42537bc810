//! Pure-logic checks of the policy and its table; the comparison with Redis' own ACL is in
//! `tests/command_policy.rs`.

use super::key_flags::*;
use super::keys::{self, FINDERS, SPEC_FALLBACKS};
use super::*;

fn check(p: &CommandPolicy, words: &[&str]) -> Result<(), Denied> {
    let args: Vec<&[u8]> = words[1..].iter().map(|w| w.as_bytes()).collect();
    p.check(words[0].as_bytes(), &args)
}

#[test]
fn the_table_is_sorted_with_ids_in_order() {
    let mut next = 0u16;
    let mut walk = |list: &[CommandSpec], prefix: &str| {
        assert!(
            list.windows(2).all(|w| w[0].name < w[1].name),
            "{prefix}: sorted"
        );
        for c in list {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(c.name.starts_with(prefix));
            assert_eq!(c.id, next, "{}", c.name);
            next += 1;
            for s in c.subcommands {
                assert_eq!(s.id, next, "{}", s.name);
                assert!(s.subcommands.is_empty() && s.name.starts_with(&format!("{}|", c.name)));
                next += 1;
            }
        }
    };
    walk(commands(), "");
    assert_eq!(next, table::COMMAND_COUNT);
    assert!(commands().len() > 200, "a whole Redis 7 table");
    assert!(lookup(b"GET").is_some() && lookup(b"config").is_some());
    assert!(lookup(b"").is_none() && lookup(&[b'a'; 100]).is_none());
}

/// A command whose key specs Redis cannot use alone (incomplete, unknown, variable flags) has
/// a finder in keys.rs, or it would be denied whenever keys are restricted.
#[test]
fn every_command_with_incomplete_key_specs_has_a_finder() {
    let mut needing = Vec::new();
    for c in commands()
        .iter()
        .chain(commands().iter().flat_map(|c| c.subcommands))
    {
        let incomplete = c.key_specs.iter().any(|s| {
            s.flags & NOT_KEY == 0
                && (s.flags & (INCOMPLETE | VARIABLE_FLAGS) != 0
                    || matches!(s.begin, BeginSearch::Unknown)
                    || matches!(s.find, FindKeys::Unknown))
        });
        if incomplete && keys::has_keys(c) {
            needing.push(c.name);
        }
    }
    needing.extend_from_slice(SPEC_FALLBACKS);
    needing.sort();
    assert_eq!(needing, FINDERS);
}

#[test]
fn rules_apply_in_order_like_acl_setuser() {
    let p = CommandPolicy::parse("+@all -@dangerous +keys allkeys").unwrap();
    assert!(check(&p, &["KEYS", "*"]).is_ok());
    assert!(check(&p, &["FLUSHALL"]).is_err());
    assert!(!p.allows_all_commands());
    // Unknown commands: only while allcommands stands.
    assert_eq!(check(&p, &["NOSUCH"]), Err(Denied::UnknownCommand));
    let all = CommandPolicy::parse("+@all allkeys").unwrap();
    assert!(check(&all, &["NOSUCH"]).is_ok());
    assert!(check(&all, &["CONFIG", "NOSUCH"]).is_ok());
    assert_eq!(
        check(&p, &["CONFIG", "NOSUCH"]),
        Err(Denied::UnknownSubcommand { command: "config" })
    );
    // First-argument allowances, forgotten by a later +cmd / -cmd.
    let p = CommandPolicy::parse("+select|0 allkeys").unwrap();
    assert!(check(&p, &["select", "0"]).is_ok());
    assert!(check(&p, &["select", "1"]).is_err());
    let p = CommandPolicy::parse("+select|0 -select allkeys").unwrap();
    assert!(check(&p, &["select", "0"]).is_err());
    // AUTH and HELLO are never refused by command rules (Redis' no_auth).
    let none = CommandPolicy::parse("nocommands").unwrap();
    assert!(check(&none, &["AUTH", "a", "b"]).is_ok());
}

#[test]
fn key_patterns_need_the_access_the_command_needs() {
    let p = CommandPolicy::parse("+@all %R~ro:* %W~wo:*").unwrap();
    assert!(check(&p, &["GET", "ro:1"]).is_ok());
    assert_eq!(
        check(&p, &["SET", "ro:1", "v"]),
        Err(Denied::Key {
            command: "set",
            position: 1,
            access: Access::Write
        })
    );
    assert!(check(&p, &["SET", "wo:1", "v"]).is_ok());
    assert!(check(&p, &["SET", "wo:1", "v", "GET"]).is_err());
    assert!(check(&p, &["EVAL", "s", "1", "ro:1"]).is_err());
    assert!(check(&p, &["EVAL_RO", "s", "1", "ro:1"]).is_ok());
    assert_eq!(
        check(&p, &["EVAL", "s", "x", "ro:1"]),
        Err(Denied::KeysUnknown { command: "eval" })
    );
    // Keys unrestricted: no key is looked at.
    let p = CommandPolicy::for_role(Some("+@all"), None).unwrap();
    assert!(!p.restricts_keys());
    assert!(check(&p, &["EVAL", "s", "x", "ro:1"]).is_ok());
}

#[test]
fn role_settings_keep_command_and_key_rules_apart() {
    let e = CommandPolicy::check_rules("+get ~app:*", false).unwrap_err();
    assert!(
        e.to_string().contains("'~app:*'") && e.to_string().contains("'keys'"),
        "{e}"
    );
    let e = CommandPolicy::check_rules("~app:* +get", true).unwrap_err();
    assert!(
        e.to_string().contains("'+get'") && e.to_string().contains("'commands'"),
        "{e}"
    );
    let e = CommandPolicy::check_rules("+@read -flushal", false).unwrap_err();
    assert!(e.to_string().contains("'-flushal'"), "{e}");
    assert_eq!(
        CommandPolicy::check_rules(&"+get ".repeat(MAX_RULES_LEN), false),
        Err(RuleError::TooLong)
    );
    let p = CommandPolicy::for_role(Some("+@read"), Some("%R~app:*")).unwrap();
    assert!(check(&p, &["GET", "app:1"]).is_ok());
    assert!(check(&p, &["GET", "other"]).is_err());
    let p = CommandPolicy::for_role(None, Some("~app:*")).unwrap();
    assert!(p.allows_all_commands());
}

/// Redis compares keywords with `strcasecmp`, which stops at a NUL: `STREAMS\0x` is STREAMS to
/// its key search and to XREAD itself (which then reads `secret`). A policy that compared
/// whole arguments found no key there and let the read through.
#[test]
fn a_keyword_with_a_nul_still_marks_the_keys() {
    let p = CommandPolicy::parse("+@all ~app:*").unwrap();
    for denied in [
        "XREAD COUNT 1 STREAMS\0x secret 0",
        "XREAD STREAMS\0 secret 0",
        "XREADGROUP GROUP g c streams\0y secret >",
        "SORT app:1 STORE\0x secret",
        "GEORADIUS app:1 0 0 1 km STORE\0 secret",
    ] {
        let words: Vec<&str> = denied.split(' ').collect();
        assert!(
            matches!(check(&p, &words), Err(Denied::Key { .. })),
            "{denied:?}"
        );
    }
    assert!(check(&p, &["XREAD", "STREAMS\0x", "app:1", "0"]).is_ok());
}

/// Where the STREAMS key spec cannot be used (STREAMS also names a key, or an odd count
/// follows the last one), Redis falls back to `xreadGetKeys`: the options up to the first real
/// STREAMS, then half of the rest — checked with no particular access (any key pattern).
#[test]
fn xread_keys_fall_back_to_redis_own_finder() {
    let words = |line: &'static str| line.split(' ').collect::<Vec<_>>();
    // The CI case (a proptest seed): the spec's search from argument 4 finds the last STREAMS
    // with one argument after it, so Redis uses `xreadGetKeys` and denies the key `STREAMS`.
    let p = CommandPolicy::parse("+@all resetkeys").unwrap();
    assert_eq!(
        check(
            &p,
            &words("XREADGROUP STREAMS STREAMS app:1 3 wo:1 LIMIT other STREAMS u8")
        ),
        Err(Denied::Key {
            command: "xreadgroup",
            position: 2,
            access: Access::Any
        })
    );
    // No STREAMS after the options: a syntax error to Redis, no key to check.
    let p = CommandPolicy::parse("+@all ~app:*").unwrap();
    assert!(check(&p, &words("XREADGROUP GROUP g c x y STREAMS z")).is_ok());
    // The finder's keys carry no access flags: a write-only pattern lets them through, as
    // Redis does; the spec's keys (a well-formed call) still need read access.
    let p = CommandPolicy::parse("+@all %W~*").unwrap();
    assert!(check(
        &p,
        &words("XREADGROUP STREAMS STREAMS app:1 0 x y STREAMS z")
    )
    .is_ok());
    assert!(check(&p, &words("XREADGROUP GROUP g c STREAMS a 0")).is_err());
}

#[test]
fn perms_follow_redis_key_flags() {
    assert_eq!(keys::perms_of(RO | ACCESS), READ);
    assert_eq!(keys::perms_of(OW | UPDATE), WRITE);
    assert_eq!(keys::perms_of(RW | ACCESS | DELETE), READ | WRITE);
    assert_eq!(keys::perms_of(RO), 0);
}

proptest::proptest! {
    /// The fuzz entry point over rule lists and commands made of the words that matter, in any
    /// order and case (the corpus test runs the committed seeds).
    #[test]
    fn fuzz_entry_over_rule_and_command_words(
        rules in proptest::collection::vec(proptest::sample::select(&[
            "+@all", "-@all", "+@read", "-@write", "-@dangerous", "+get", "-GET", "+config|get",
            "-config|set", "+select|0", "+config|nosuch", "+@nosuch", "~app:*", "%R~ro:*",
            "%W~*", "allkeys", "resetkeys", "%RW~[a-", "~\\*", "nocommands", "allcommands",
        ][..]), 0..8),
        commands in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(&[
            "GET", "set", "CONFIG", "get", "SET", "EVAL", "2", "0", "app:1", "ro:1", "x",
            "MSET", "SORT", "STORE", "BITFIELD", "INCRBY", "MIGRATE", "KEYS", "", "XREAD",
            "STREAMS", "nosuch", "select", "pfmerge",
        ][..]), 1..8), 0..6),
    ) {
        let mut data = rules.join(" ").into_bytes();
        for c in commands {
            data.push(b'\n');
            data.extend_from_slice(c.join(" ").as_bytes());
        }
        fuzz_policy(&data);
    }
}

proptest::proptest! {
    /// `args_needed` never lies: with only the arguments it asks for, every command of the
    /// table is decided as with all of them, under policies of every shape.
    #[test]
    fn args_needed_is_enough_to_decide(
        rules in proptest::collection::vec(proptest::sample::select(&[
            "+@all", "-@all", "+@read", "-@write", "-@dangerous", "+@slow", "-@fast", "+get",
            "+config|get", "-config|set", "+select|0", "+object", "+client|id", "-xinfo",
        ][..]), 0..6),
        keys in proptest::option::of(proptest::sample::select(&["~app:*", "%R~*", "%W~a*"][..])),
        args in proptest::collection::vec(proptest::sample::select(&[
            "GET", "0", "1", "app:1", "ro:1", "STORE", "STREAMS", "ENCODING", "USAGE", "STREAM",
        ][..]), 0..6),
    ) {
        let rules = format!("{} {}", rules.join(" "), keys.map_or("allkeys".to_string(), |k| format!("resetkeys {k}")));
        let policy = CommandPolicy::parse(&rules).unwrap();
        let session = SessionPolicy::of_roles([Some(Arc::new(policy.clone()))]);
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        for c in commands() {
            let name = c.name.as_bytes();
            let mut argv = args.clone();
            if let Some(sub) = c.subcommands.get(args.len() % c.subcommands.len().max(1)) {
                argv.insert(0, sub.name.split_once('|').unwrap().1.as_bytes());
            }
            let full = policy.check(name, &argv);
            let short: &[&[u8]] = match policy.args_needed(name) {
                ArgsNeeded::None => &[],
                ArgsNeeded::First => &argv[..argv.len().min(1)],
                ArgsNeeded::All => &argv,
            };
            proptest::prop_assert_eq!(policy.check(name, short), full.clone(), "{} [{}]", c.name, rules);
            let short: &[&[u8]] = match session.args_needed(name) {
                ArgsNeeded::None => &[],
                ArgsNeeded::First => &argv[..argv.len().min(1)],
                ArgsNeeded::All => &argv,
            };
            proptest::prop_assert_eq!(session.check(name, short), full, "{} [{}]", c.name, rules);
        }
        proptest::prop_assert_eq!(policy.args_needed(b"nosuch"), ArgsNeeded::None);
    }
}
