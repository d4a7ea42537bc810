//! Command policy (issue 12): a role's ACL-style rules (`+@read -@dangerous -flushall`,
//! `~app:*`, `%R~shared:*`) compiled once, then asked per command whether the session may send
//! it. A denied command is answered by the bastion itself with [`Denied`]'s `-NOPERM` text and
//! never reaches the upstream.
//!
//! The decision is Redis 7.0's own ACL decision (`ACLSelectorCheckCmd`): command bits per
//! command and subcommand, the first-argument allowances (`+select|0`), `allcommands`, the
//! key positions and read/write flags of each command's key specs, and Redis' glob
//! (`stringmatchlen`). Categories and key specs come from [`table`], generated from a real
//! `redis-server` by `tests/command_policy.rs` (which fails if the committed table differs from
//! what the installed Redis says) and compared there with `ACL DRYRUN` over the whole table.
//!
//! Deliberate differences: unknown commands (and unknown subcommands) are denied unless the
//! rules end in `allcommands` (Redis would answer "unknown command" itself); a command whose
//! keys cannot be found from its arguments (a malformed `numkeys`) is denied when keys are
//! restricted (Redis finds no keys and lets the command fail); channel rules are not part of
//! the policy (as `allchannels`); selectors `(…)` are not supported. In inspect mode a command
//! decided by its arguments is denied when it outgrows the bytes the guard holds back to check
//! it (`guard::driver::HOLD_CAP`, 64 KiB: under a key-restricted role, a `SET` with a larger
//! value), or is an inline command with more arguments than the framer keeps (32).
//!
//! Not seen here: commands a script runs (`EVAL`/`FCALL` → `redis.call`) — allowing
//! `@scripting` allows whatever the db-user's own ACL allows; and a transaction: Redis refuses a
//! denied command queued in `MULTI` and then aborts `EXEC` (`EXECABORT`), so the caller must
//! make `EXEC` fail too after answering a denial inside `MULTI`.
//!
//! What this module must never do: echo an argument value (a key, a password) in a denial,
//! panic on anything a client sends, or allow what Redis with the same rules would deny.

mod fuzz;
mod glob;
mod keys;
#[rustfmt::skip]
mod table;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use fuzz::fuzz_policy;
pub use keys::KeyCount;

/// Longest rule text a role may hold (`commands` or `keys`); checked by the config and store.
pub const MAX_RULES_LEN: usize = 1024;

/// One Redis command (or subcommand, `config|get`) as `COMMAND INFO` describes it.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case full name: `get`, `config|get`.
    pub name: &'static str,
    /// Index into the policy's command bits (table order, subcommands after their parent).
    pub id: u16,
    pub arity: i32,
    /// `no_auth` (AUTH, HELLO): never refused by command rules, as in Redis.
    pub no_auth: bool,
    /// Bit `i` set: in category [`table::CATEGORIES`]`[i]`.
    pub categories: u64,
    pub key_specs: &'static [KeySpec],
    /// Sorted by name.
    pub subcommands: &'static [CommandSpec],
}

/// One key spec of a command: where its keys are and how it uses them.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// [`key_flags`] bits.
    pub flags: u16,
    pub begin: BeginSearch,
    pub find: FindKeys,
}

#[derive(Debug, Clone, Copy)]
pub enum BeginSearch {
    Index(i32),
    Keyword {
        keyword: &'static str,
        startfrom: i32,
    },
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub enum FindKeys {
    Range {
        lastkey: i32,
        keystep: i32,
        limit: i32,
    },
    Keynum {
        keynumidx: i32,
        firstkey: i32,
        keystep: i32,
    },
    Unknown,
}

/// Key spec flags as `COMMAND INFO` names them.
pub mod key_flags {
    pub const RO: u16 = 1 << 0;
    pub const RW: u16 = 1 << 1;
    pub const OW: u16 = 1 << 2;
    pub const RM: u16 = 1 << 3;
    pub const ACCESS: u16 = 1 << 4;
    pub const UPDATE: u16 = 1 << 5;
    pub const INSERT: u16 = 1 << 6;
    pub const DELETE: u16 = 1 << 7;
    pub const NOT_KEY: u16 = 1 << 8;
    pub const INCOMPLETE: u16 = 1 << 9;
    pub const VARIABLE_FLAGS: u16 = 1 << 10;
    /// Name → bit, for the generator and its test.
    pub const NAMES: &[(&str, u16)] = &[
        ("RO", RO),
        ("RW", RW),
        ("OW", OW),
        ("RM", RM),
        ("access", ACCESS),
        ("update", UPDATE),
        ("insert", INSERT),
        ("delete", DELETE),
        ("not_key", NOT_KEY),
        ("incomplete", INCOMPLETE),
        ("variable_flags", VARIABLE_FLAGS),
    ];
}

/// Every command Redis knows, sorted by name.
pub fn commands() -> &'static [CommandSpec] {
    table::COMMANDS
}

/// The ACL categories, in `ACL CAT` order (bit `i` of [`CommandSpec::categories`]).
pub fn categories() -> &'static [&'static str] {
    table::CATEGORIES
}

/// The Redis version the table was generated from.
pub fn table_version() -> &'static str {
    table::REDIS_VERSION
}

/// Look up a command by name, ASCII case-insensitively.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    find(table::COMMANDS, name, b"")
}

impl CommandSpec {
    /// Its subcommand named `sub` (any case): `config` + `get` → `config|get`.
    pub fn subcommand(&'static self, sub: &[u8]) -> Option<&'static CommandSpec> {
        lookup_sub(self, sub)
    }

    /// The keys of a call with `argc` arguments (the name included) as Redis' `COMMAND
    /// GETKEYS` finds them: how many, and where the first is. `arg(i)` gives argument `i`
    /// (1 = the first after the name), `None` where it is not at hand (taken as empty: only
    /// keyword searches, `numkeys` and a few commands' own finders read arguments, and a
    /// prefix of a long argument serves them). `None`: Redis finds no keys either way
    /// ("Invalid arguments" for `COMMAND GETKEYS`).
    pub fn key_count<'a>(
        &self,
        argc: u64,
        arg: impl Fn(usize) -> Option<&'a [u8]> + Copy,
    ) -> Option<KeyCount> {
        if !keys::has_keys(self) {
            return Some(KeyCount::default());
        }
        keys::walk(self, usize::try_from(argc).unwrap_or(usize::MAX), arg)
    }

    /// Whether [`CommandSpec::key_count`] reads arguments at all (a keyword search, a
    /// `numkeys`, a command's own finder); if not, `argc` alone places its keys.
    pub fn keys_read_args(&self) -> bool {
        keys::FINDERS.contains(&self.name)
            || self.key_specs.iter().any(|s| {
                s.flags & (key_flags::INCOMPLETE | key_flags::VARIABLE_FLAGS) != 0
                    || !matches!(s.begin, BeginSearch::Index(_))
                    || !matches!(s.find, FindKeys::Range { .. })
            })
    }
}

/// Look up `parent|sub` among `parent`'s subcommands.
fn lookup_sub(parent: &'static CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    find(parent.subcommands, sub, parent.name.as_bytes())
}

/// Binary search `list` for `prefix|name` (or `name` with no prefix), case-insensitively.
fn find(list: &'static [CommandSpec], name: &[u8], prefix: &[u8]) -> Option<&'static CommandSpec> {
    let full_len = if prefix.is_empty() {
        name.len()
    } else {
        prefix.len() + 1 + name.len()
    };
    // Longest name in the table is short; anything longer is unknown without a copy.
    if full_len > 64 || name.is_empty() {
        return None;
    }
    let mut buf = [0u8; 64];
    let mut at = 0;
    if !prefix.is_empty() {
        buf[..prefix.len()].copy_from_slice(prefix);
        buf[prefix.len()] = b'|';
        at = prefix.len() + 1;
    }
    for (slot, b) in buf[at..full_len].iter_mut().zip(name) {
        *slot = b.to_ascii_lowercase();
    }
    let key = &buf[..full_len];
    list.binary_search_by(|c| c.name.as_bytes().cmp(key))
        .ok()
        .map(|i| &list[i])
}

/// A command refused by the policy. Its `Display` is the error text the client gets (without
/// RESP's leading `-`): names from the table only, never a value the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The rules do not allow this command (or subcommand, `config|set`).
    Command { command: &'static str },
    /// Not a command this Redis knows, and the rules are not `allcommands`.
    UnknownCommand,
    /// Not a subcommand of `command` this Redis knows, and the rules are not `allcommands`.
    UnknownSubcommand { command: &'static str },
    /// The key at argument `position` (1 = the first argument after the name) is not matched
    /// by a key pattern with the access the command needs.
    Key {
        command: &'static str,
        position: usize,
        access: Access,
    },
    /// Keys are restricted and the command's keys cannot be found from its arguments.
    KeysUnknown { command: &'static str },
}

/// The access a key needs, from its key spec's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Neither read nor write flags (e.g. `EXISTS`): any pattern that matches will do.
    Any,
    Read,
    Write,
    ReadWrite,
}

impl Access {
    fn from_bits(bits: u8) -> Access {
        match bits {
            0 => Access::Any,
            READ => Access::Read,
            WRITE => Access::Write,
            _ => Access::ReadWrite,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Any => "access",
            Access::Read => "read access",
            Access::Write => "write access",
            Access::ReadWrite => "read and write access",
        })
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NOPERM bastion: ")?;
        match self {
            Denied::Command { command } => {
                write!(f, "the role's command policy does not allow '{command}'")
            }
            Denied::UnknownCommand => {
                f.write_str("the role's command policy does not allow unknown commands")
            }
            Denied::UnknownSubcommand { command } => write!(
                f,
                "the role's command policy does not allow unknown '{command}' subcommands"
            ),
            Denied::Key {
                command,
                position,
                access,
            } => write!(
                f,
                "no key pattern of the role's policy gives {access} to argument {position} of \
                 '{command}'"
            ),
            Denied::KeysUnknown { command } => write!(
                f,
                "the keys of this '{command}' cannot be found and the role's policy restricts keys"
            ),
        }
    }
}

impl std::error::Error for Denied {}

impl Denied {
    /// The whole RESP error reply: `-NOPERM bastion: …\r\n`.
    pub fn to_resp(&self) -> Vec<u8> {
        format!("-{self}\r\n").into_bytes()
    }
}

/// How much of a command [`CommandPolicy::check`] needs to decide it — so a caller can decide
/// as soon as the name is framed, and hold a command's bytes only when the policy looks at them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ArgsNeeded {
    /// The name alone decides: `check(name, &[])` answers as it would with every argument.
    None,
    /// The name and the first argument (a subcommand, an allowed first argument):
    /// `check(name, &args[..1])` answers as with every argument.
    First,
    /// Every argument (the keys).
    All,
}

/// A rule the parser refused, with the rule as written (rules come from the operator's
/// configuration, never from a client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("unknown command '{name}' in rule '{rule}'")]
    UnknownCommand { rule: String, name: String },
    #[error("unknown category '{name}' in rule '{rule}'")]
    UnknownCategory { rule: String, name: String },
    #[error("rule '{rule}': a first argument may only follow a command without subcommands")]
    FirstArgOfSubcommand { rule: String },
    #[error("rule '{rule}': empty first argument")]
    EmptyFirstArg { rule: String },
    #[error("rule '{rule}': bad key permission (use ~pattern, %R~, %W~ or %RW~)")]
    BadKeyPermission { rule: String },
    #[error("rule '{rule}': key patterns cannot be added after allkeys (use resetkeys first)")]
    AfterAllKeys { rule: String },
    #[error("rule '{rule}' is a {found} rule: it belongs in '{belongs}'")]
    WrongKind {
        rule: String,
        found: &'static str,
        belongs: &'static str,
    },
    #[error("unsupported rule '{rule}' (command rules: +@cat -@cat +cmd -cmd +cmd|sub -cmd|sub allcommands nocommands; key rules: ~pattern %R~pattern %W~pattern allkeys resetkeys)")]
    Unsupported { rule: String },
    #[error("rules are longer than {MAX_RULES_LEN} bytes")]
    TooLong,
    #[error("no rules (write 'nocommands' or 'resetkeys' to allow nothing)")]
    Empty,
    #[error("rules hold a control character (separate rules with spaces)")]
    Control,
}

const READ: u8 = 1;
const WRITE: u8 = 2;

/// A key pattern with the permissions it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    pattern: Box<[u8]>,
    /// [`READ`] | [`WRITE`].
    perms: u8,
}

/// Compiled rules: what one role may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPolicy {
    all_commands: bool,
    /// Bit per [`CommandSpec::id`].
    allowed: Vec<u64>,
    /// `+cmd|arg` for commands without subcommands: allowed first arguments, lower-case.
    first_args: BTreeMap<u16, Vec<Box<[u8]>>>,
    all_keys: bool,
    patterns: Vec<KeyPattern>,
}

/// Which kind of rule a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Command,
    Key,
}

impl CommandPolicy {
    /// Rules applied, in order, to a blank Redis user: no commands, no keys — exactly what
    /// `ACL SETUSER u reset on nopass allchannels <rules>` would allow.
    pub fn parse(rules: &str) -> Result<CommandPolicy, RuleError> {
        let mut policy = CommandPolicy::blank();
        policy.apply(rules, None)?;
        Ok(policy)
    }

    /// A role's policy: `commands` holds command rules only (from no commands), `keys` key
    /// rules only (from no keys); a missing `keys` means `allkeys`, a missing `commands`
    /// `allcommands`.
    pub fn for_role(
        commands: Option<&str>,
        keys: Option<&str>,
    ) -> Result<CommandPolicy, RuleError> {
        let mut policy = CommandPolicy::blank();
        policy.apply(commands.unwrap_or("allcommands"), Some(Kind::Command))?;
        policy.apply(keys.unwrap_or("allkeys"), Some(Kind::Key))?;
        Ok(policy)
    }

    /// Check one rule list as a role's `commands` (`keys == false`) or `keys` setting.
    pub fn check_rules(rules: &str, keys: bool) -> Result<(), RuleError> {
        if rules.chars().any(char::is_control) {
            return Err(RuleError::Control);
        }
        if rules.trim_ascii().is_empty() {
            return Err(RuleError::Empty);
        }
        let kind = if keys { Kind::Key } else { Kind::Command };
        CommandPolicy::blank().apply(rules, Some(kind))
    }

    /// May a session send `name` with `args` (the arguments after the name)?
    pub fn check<A: AsRef<[u8]>>(&self, name: &[u8], args: &[A]) -> Result<(), Denied> {
        let Some(base) = lookup(name) else {
            return if self.all_commands {
                Ok(())
            } else {
                Err(Denied::UnknownCommand)
            };
        };
        let (cmd, first_arg_at) = match (base.subcommands.is_empty(), args.first()) {
            (false, Some(sub)) => match lookup_sub(base, sub.as_ref()) {
                Some(cmd) => (cmd, 1),
                None if self.all_commands => return Ok(()),
                None => return Err(Denied::UnknownSubcommand { command: base.name }),
            },
            _ => (base, 0),
        };
        if !self.all_commands && !cmd.no_auth && !self.bit(cmd.id) {
            let allowed_by_first_arg = args.get(first_arg_at).is_some_and(|arg| {
                self.first_args
                    .get(&cmd.id)
                    .is_some_and(|list| list.iter().any(|a| a.eq_ignore_ascii_case(arg.as_ref())))
            });
            if !allowed_by_first_arg {
                return Err(Denied::Command { command: cmd.name });
            }
        }
        if self.all_keys || !keys::has_keys(cmd) {
            return Ok(());
        }
        let Some(found) = keys::find(cmd, args) else {
            return Err(Denied::KeysUnknown { command: cmd.name });
        };
        for key in found {
            let arg = args.get(key.position - 1).map_or(&[][..], |a| a.as_ref());
            if !self.key_allowed(arg, key.perms) {
                return Err(Denied::Key {
                    command: cmd.name,
                    position: key.position,
                    access: Access::from_bits(key.perms),
                });
            }
        }
        Ok(())
    }

    /// How much of a command named `name` the decision needs.
    pub fn args_needed(&self, name: &[u8]) -> ArgsNeeded {
        let Some(cmd) = lookup(name) else {
            return ArgsNeeded::None;
        };
        if !cmd.subcommands.is_empty() {
            // The subcommand decides the bit and the keys.
            let subs_with_keys = cmd.subcommands.iter().any(keys::has_keys);
            return if !self.all_keys && subs_with_keys {
                ArgsNeeded::All
            } else {
                ArgsNeeded::First
            };
        }
        let by_bit = self.all_commands || cmd.no_auth || self.bit(cmd.id);
        let first_args = !by_bit && self.first_args.contains_key(&cmd.id);
        if !by_bit && !first_args {
            return ArgsNeeded::None;
        }
        if !self.all_keys && keys::has_keys(cmd) {
            ArgsNeeded::All
        } else if first_args {
            ArgsNeeded::First
        } else {
            ArgsNeeded::None
        }
    }

    /// False when every key is allowed: the caller then needs only the name and the first
    /// argument (a subcommand or an allowed first argument) to decide.
    pub fn restricts_keys(&self) -> bool {
        !self.all_keys
    }

    /// True when every command is allowed (`allcommands` not narrowed since).
    pub fn allows_all_commands(&self) -> bool {
        self.all_commands
    }

    fn blank() -> CommandPolicy {
        CommandPolicy {
            all_commands: false,
            allowed: vec![0; usize::from(table::COMMAND_COUNT).div_ceil(64)],
            first_args: BTreeMap::new(),
            all_keys: false,
            patterns: Vec::new(),
        }
    }

    fn apply(&mut self, rules: &str, only: Option<Kind>) -> Result<(), RuleError> {
        if rules.len() > MAX_RULES_LEN {
            return Err(RuleError::TooLong);
        }
        for rule in rules.split_ascii_whitespace() {
            let kind = kind_of(rule);
            if let Some(expected) = only {
                if kind != expected {
                    return Err(RuleError::WrongKind {
                        rule: rule.to_string(),
                        found: kind.describe(),
                        belongs: kind.setting(),
                    });
                }
            }
            match kind {
                Kind::Command => self.apply_command_rule(rule)?,
                Kind::Key => self.apply_key_rule(rule)?,
            }
        }
        Ok(())
    }

    fn apply_command_rule(&mut self, rule: &str) -> Result<(), RuleError> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "allcommands" | "+@all" => {
                self.all_commands = true;
                self.allowed.iter_mut().for_each(|w| *w = u64::MAX);
                self.first_args.clear();
                return Ok(());
            }
            "nocommands" | "-@all" => {
                self.all_commands = false;
                self.allowed.iter_mut().for_each(|w| *w = 0);
                self.first_args.clear();
                return Ok(());
            }
            _ => {}
        }
        let allow = lower.starts_with('+');
        let Some(body) = lower.strip_prefix(['+', '-']) else {
            return Err(RuleError::Unsupported {
                rule: rule.to_string(),
            });
        };
        if let Some(category) = body.strip_prefix('@') {
            let bit = table::CATEGORIES
                .iter()
                .position(|c| *c == category)
                .ok_or_else(|| RuleError::UnknownCategory {
                    rule: rule.to_string(),
                    name: category.to_string(),
                })?;
            self.change_category(table::COMMANDS, 1 << bit, allow);
            return Ok(());
        }
        let unknown = || RuleError::UnknownCommand {
            rule: rule.to_string(),
            name: body.to_string(),
        };
        if let Some(cmd) = lookup_full(body) {
            self.change(cmd, allow);
            return Ok(());
        }
        // `+cmd|arg` for a command without subcommands: a first-argument allowance.
        let Some((name, arg)) = body.rsplit_once('|').filter(|_| allow) else {
            return Err(unknown());
        };
        if lookup_full(name).is_some_and(|c| c.name.contains('|')) {
            return Err(RuleError::FirstArgOfSubcommand {
                rule: rule.to_string(),
            });
        }
        let cmd = lookup_full(name).ok_or_else(unknown)?;
        if arg.is_empty() {
            return Err(RuleError::EmptyFirstArg {
                rule: rule.to_string(),
            });
        }
        if !cmd.subcommands.is_empty() {
            // `+config|nosuch`: Redis refuses an unknown subcommand.
            return Err(unknown());
        }
        let list = self.first_args.entry(cmd.id).or_default();
        if !list.iter().any(|a| **a == *arg.as_bytes()) {
            list.push(arg.as_bytes().into());
        }
        Ok(())
    }

    fn apply_key_rule(&mut self, rule: &str) -> Result<(), RuleError> {
        if rule.eq_ignore_ascii_case("allkeys") || rule == "~*" {
            self.all_keys = true;
            self.patterns.clear();
            return Ok(());
        }
        if rule.eq_ignore_ascii_case("resetkeys") {
            self.all_keys = false;
            self.patterns.clear();
            return Ok(());
        }
        if self.all_keys {
            return Err(RuleError::AfterAllKeys {
                rule: rule.to_string(),
            });
        }
        let bad = || RuleError::BadKeyPermission {
            rule: rule.to_string(),
        };
        let (perms, pattern) = if let Some(p) = rule.strip_prefix('~') {
            (READ | WRITE, p)
        } else {
            let spec = rule.strip_prefix('%').ok_or_else(bad)?;
            let (letters, p) = spec.split_once('~').ok_or_else(bad)?;
            let mut perms = 0;
            for c in letters.bytes() {
                let bit = match c.to_ascii_uppercase() {
                    b'R' => READ,
                    b'W' => WRITE,
                    _ => return Err(bad()),
                };
                if perms & bit != 0 {
                    return Err(bad());
                }
                perms |= bit;
            }
            if perms == 0 {
                return Err(bad());
            }
            (perms, p)
        };
        match self
            .patterns
            .iter_mut()
            .find(|k| *k.pattern == *pattern.as_bytes())
        {
            Some(existing) => existing.perms |= perms,
            None => self.patterns.push(KeyPattern {
                pattern: pattern.as_bytes().into(),
                perms,
            }),
        }
        Ok(())
    }

    /// `ACLChangeSelectorPerm`: the command's bit, its first arguments forgotten, and every
    /// subcommand's bit.
    fn change(&mut self, cmd: &CommandSpec, allow: bool) {
        self.set_bit(cmd.id, allow);
        self.first_args.remove(&cmd.id);
        for sub in cmd.subcommands {
            self.set_bit(sub.id, allow);
        }
    }

    /// `ACLSetSelectorCommandBitsForCategory`: every command and subcommand in the category.
    fn change_category(&mut self, list: &[CommandSpec], category: u64, allow: bool) {
        for cmd in list {
            if cmd.categories & category != 0 {
                self.change(cmd, allow);
            }
            self.change_category(cmd.subcommands, category, allow);
        }
    }

    fn set_bit(&mut self, id: u16, allow: bool) {
        let (word, bit) = (usize::from(id) / 64, 1u64 << (id % 64));
        if allow {
            self.allowed[word] |= bit;
        } else {
            self.allowed[word] &= !bit;
            self.all_commands = false;
        }
    }

    fn bit(&self, id: u16) -> bool {
        self.allowed[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }

    /// `ACLSelectorCheckKey`: a pattern with at least the needed permissions matches.
    fn key_allowed(&self, key: &[u8], needed: u8) -> bool {
        self.patterns
            .iter()
            .any(|p| p.perms & needed == needed && glob::matches(&p.pattern, key))
    }
}

/// A session's policy: the union of its roles' policies (a command passes if one of them
/// allows it, as a Redis user's selectors do), or no restriction at all when one of its roles
/// sets no policy.
#[derive(Debug, Clone, Default)]
pub struct SessionPolicy {
    /// `None`: unrestricted.
    roles: Option<Vec<Arc<CommandPolicy>>>,
}

impl SessionPolicy {
    /// Every command, every key (a role without `commands`/`keys`, or no inspect mode).
    pub fn unrestricted() -> SessionPolicy {
        SessionPolicy { roles: None }
    }

    /// The union of the roles' policies; a `None` (a role without a policy) makes it
    /// unrestricted. No roles at all allows nothing.
    pub fn of_roles(roles: impl IntoIterator<Item = Option<Arc<CommandPolicy>>>) -> SessionPolicy {
        let roles: Option<Vec<_>> = roles.into_iter().collect();
        SessionPolicy {
            roles: roles.map(|r| {
                if r.is_empty() {
                    vec![Arc::new(CommandPolicy::blank())]
                } else {
                    r
                }
            }),
        }
    }

    pub fn is_unrestricted(&self) -> bool {
        self.roles.is_none()
    }

    /// Whether any key is restricted: if not, [`SessionPolicy::check`] needs only the name and
    /// the first argument (a subcommand or an allowed first argument), never the keys.
    pub fn restricts_keys(&self) -> bool {
        self.roles
            .as_ref()
            .is_some_and(|r| r.iter().all(|p| p.restricts_keys()))
    }

    /// How much of a command named `name` the decision needs (the most any role needs).
    pub fn args_needed(&self, name: &[u8]) -> ArgsNeeded {
        self.roles.as_ref().map_or(ArgsNeeded::None, |roles| {
            roles
                .iter()
                .map(|p| p.args_needed(name))
                .max()
                .unwrap_or(ArgsNeeded::None)
        })
    }

    /// May the session send `name` with `args` (the arguments after the name)? Denied only
    /// if every role denies; the denial is the first role's.
    pub fn check<A: AsRef<[u8]>>(&self, name: &[u8], args: &[A]) -> Result<(), Denied> {
        let Some(roles) = &self.roles else {
            return Ok(());
        };
        let mut first = None;
        for policy in roles {
            match policy.check(name, args) {
                Ok(()) => return Ok(()),
                Err(denied) => {
                    first.get_or_insert(denied);
                }
            }
        }
        // `roles` is never empty (`of_roles`), so a denial was recorded.
        Err(first.unwrap_or(Denied::UnknownCommand))
    }
}

/// Look up `cmd` or `cmd|sub` (already lower-case) as a rule names it.
fn lookup_full(name: &str) -> Option<&'static CommandSpec> {
    match name.split_once('|') {
        None => lookup(name.as_bytes()),
        Some((base, sub)) => lookup_sub(lookup(base.as_bytes())?, sub.as_bytes()),
    }
}

fn kind_of(rule: &str) -> Kind {
    let lower = rule.to_ascii_lowercase();
    if rule.starts_with(['~', '%']) || lower == "allkeys" || lower == "resetkeys" {
        Kind::Key
    } else {
        Kind::Command
    }
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Key => "key",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Kind::Command => "commands",
            Kind::Key => "keys",
        }
    }
}

#[cfg(test)]
mod tests;
