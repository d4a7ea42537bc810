//! The guard's rules: what happens to each command the policy must see whole (AUTH, HELLO,
//! RESET, and any name with a NUL byte), decided on its name and arguments alone.
//!
//! The replies direction is never parsed, so the bastion cannot put a reply of its own in the
//! middle of the upstream's: every answer is a command the upstream answers, in order, instead
//! of the client's —
//! - **AUTH naming the session's own db-user** (or one-argument `AUTH <password>`, which names
//!   no user, as at the opening): the session re-authenticates as itself with the bastion's own
//!   secret for that db-user (a fresh IAM token, the password file; with auth `none`, `AUTH
//!   default <placeholder>`, which a no-password `default` user accepts). The upstream answers
//!   exactly what it answers an AUTH — `+OK`, or `+QUEUED` inside MULTI, or its refusal in
//!   subscribe mode — and nothing changes (same user). No other `+OK` command is free of side
//!   effects and of ACL checks in every context; AUTH is both (Redis never ACL-checks AUTH).
//!   For IAM it also renews the connection's authentication, as ElastiCache asks.
//! - **HELLO … AUTH naming the own db-user**: sent on without its `AUTH user password` part.
//! - **AUTH / HELLO AUTH naming another db-user, RESET, a name with a NUL byte**: refused. The
//!   command becomes one whose name is the refusal (`bastion: …`), which no server knows, so
//!   the upstream answers `-ERR unknown command 'bastion: …'` in its place — in order, with no
//!   side effect, in every context (unknown commands are refused before ACL and subscribe-mode
//!   checks; inside MULTI the transaction then aborts, as for any refused command).
//! - **A protocol error**: if the broken command was being forwarded, its bytes up to the error
//!   go on and Redis itself answers; otherwise (nothing of it was forwarded) a canonical request
//!   with the same error ([`trigger`]) is sent, so the client gets Redis' own reply, in order,
//!   and Redis closes.
//!
//! The client's password is never forwarded: held commands are dropped and replaced, never
//! passed on.

use zeroize::Zeroizing;

use super::framer::{keyword_eq, Head};
use super::ProtocolError;
use crate::proxy::handshake::upstream::encode_command;

/// Held commands with more arguments than this are refused (no legitimate AUTH or HELLO has
/// more than 7); it bounds what is kept of them.
pub const MAX_HELD_ARGS: u64 = 16;

/// The user a one-argument AUTH and a session without a db-user authenticate as.
const DEFAULT_USER: &[u8] = b"default";

/// What the guard does with a command once it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// Forward it from here on.
    Forward,
    /// Hold it (drop its bytes) and decide at its end; inspect its arguments.
    Hold(Guarded),
    /// Drop its bytes and refuse it at its end: its name (escaped, for the audit), why.
    Refuse { command: String, reason: String },
}

/// The commands held to their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    Auth,
    Hello,
    Reset,
}

impl Guarded {
    pub fn name(self) -> &'static str {
        match self {
            Guarded::Auth => "AUTH",
            Guarded::Hello => "HELLO",
            Guarded::Reset => "RESET",
        }
    }
}

/// Decide on a command by its name (compared like Redis' `strcasecmp`).
pub fn on_name(head: &Head<'_>) -> Naming {
    let refuse = |reason: String| Naming::Refuse {
        command: head.name().escape_ascii().to_string(),
        reason,
    };
    if head.name_has_nul() {
        return refuse("command names never contain a NUL byte".into());
    }
    for guarded in [Guarded::Auth, Guarded::Hello, Guarded::Reset] {
        if head.is(guarded.name()) {
            if head.argc > MAX_HELD_ARGS {
                return refuse(format!("{} with too many arguments", guarded.name()));
            }
            return Naming::Hold(guarded);
        }
    }
    Naming::Forward
}

/// Whether [`on_name`] forwards a command with this (whole) name: no NUL byte, and none of
/// the held commands. For the framer's fast path ([`super::framer::Framer::skim`]).
pub fn forwards(name: &[u8]) -> bool {
    !name.contains(&0)
        && [Guarded::Auth, Guarded::Hello, Guarded::Reset]
            .iter()
            .all(|guarded| !name.eq_ignore_ascii_case(guarded.name().as_bytes()))
}

/// One argument of a held command, as much as the framer kept (an AUTH's password among
/// them: zeroized when dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldArg {
    /// The first bytes (all of them when `whole`).
    pub bytes: Zeroizing<Vec<u8>>,
    pub whole: bool,
}

impl HeldArg {
    fn is(&self, keyword: &str) -> bool {
        keyword_eq(&self.bytes, keyword)
    }

    fn value(&self) -> Option<&[u8]> {
        self.whole.then_some(self.bytes.as_slice())
    }
}

/// A held command, complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub command: Guarded,
    /// Arguments after the name, in order (`argc - 1` of them).
    pub args: Vec<HeldArg>,
}

/// What replaces a held command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Re-authenticate upstream as the session's own db-user (its reply answers the AUTH).
    Reauth,
    /// Send this instead (HELLO without its AUTH part).
    Replace(Vec<u8>),
    /// Refused, for this reason.
    Refuse(String),
}

/// Decide on a held command. `own` is the session's db-user (`None`: the upstream's `default`
/// user, legacy one-argument AUTH or no auth).
pub fn decide(held: &Held, own: Option<&str>) -> Verdict {
    let own = own.map_or(DEFAULT_USER, str::as_bytes);
    match held.command {
        Guarded::Reset => Verdict::Refuse(
            "RESET would drop this session's authentication; reconnect instead".into(),
        ),
        Guarded::Auth => match held.args.as_slice() {
            // `AUTH <password>` names no user: the session's own, as at the opening.
            [_password] => Verdict::Reauth,
            [user, _password] if user.value() == Some(own) => Verdict::Reauth,
            [_, _] => Verdict::Refuse(another_user(own)),
            _ => Verdict::Refuse("AUTH takes [db-user] password".into()),
        },
        Guarded::Hello => hello(&held.args, own),
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, options parsed like Redis'
/// `helloCommand`: from the second argument, `AUTH` with two more arguments, `SETNAME` with one,
/// anything else a syntax error at which Redis stops (so nothing after it is sent on).
fn hello(args: &[HeldArg], own: &[u8]) -> Verdict {
    let mut kept: Vec<&[u8]> = vec![b"HELLO"];
    fn whole<'a>(arg: &'a HeldArg, kept: &mut Vec<&'a [u8]>) -> bool {
        arg.value().map(|v| kept.push(v)).is_some()
    }
    let too_long = || Verdict::Refuse("HELLO argument too long".into());
    let Some((protover, options)) = args.split_first() else {
        return Verdict::Replace(encode_command(&kept).to_vec());
    };
    if !whole(protover, &mut kept) {
        return too_long();
    }
    let mut j = 0;
    while j < options.len() {
        let more = options.len() - 1 - j;
        let opt = &options[j];
        if opt.is("AUTH") && more >= 2 {
            if options[j + 1].value() != Some(own) {
                return Verdict::Refuse(another_user(own));
            }
            j += 3;
        } else if opt.is("SETNAME") && more >= 1 {
            if !whole(opt, &mut kept) || !whole(&options[j + 1], &mut kept) {
                return too_long();
            }
            j += 2;
        } else {
            // Redis answers "Syntax error in HELLO option" here and looks no further.
            if !whole(opt, &mut kept) {
                return too_long();
            }
            break;
        }
    }
    Verdict::Replace(encode_command(&kept).to_vec())
}

fn another_user(own: &[u8]) -> String {
    format!(
        "this session is db-user '{}': reconnect as that user to use another",
        own.escape_ascii()
    )
}

/// The command that makes the upstream answer `-ERR unknown command 'bastion: <reason>', …`.
pub fn refusal(reason: &str) -> Vec<u8> {
    let name: String = format!("bastion: {reason}")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(120)
        .collect();
    encode_command(&[name.as_bytes()]).to_vec()
}

/// A request that makes Redis answer `error` exactly as it would the client's, sent when the
/// broken request never reached it (so it is at a command boundary). Only bytes of the
/// bastion's choosing: never the client's, which a server framing them differently might run.
///
/// The two "unauthenticated" errors need a connection Redis considers unauthenticated; the
/// guard frames as authenticated (the bastion authenticated it), so it never reports them.
pub fn trigger(error: ProtocolError) -> Vec<u8> {
    let too_long = || vec![b'1'; super::PROTO_INLINE_MAX_SIZE as usize + 1];
    match error {
        ProtocolError::TooBigInline => vec![b'a'; super::PROTO_INLINE_MAX_SIZE as usize + 1],
        ProtocolError::UnbalancedQuotes => b"\"\n".to_vec(),
        ProtocolError::TooBigMultibulkCount => [&b"*"[..], &too_long()].concat(),
        ProtocolError::InvalidMultibulkLength => b"*x\r\n".to_vec(),
        ProtocolError::UnauthenticatedMultibulkLength => b"*11\r\n".to_vec(),
        ProtocolError::TooBigBulkCount => [&b"*1\r\n$"[..], &too_long()].concat(),
        ProtocolError::ExpectedDollar { got } => vec![b'*', b'1', b'\r', b'\n', got, b'\r', b'\n'],
        ProtocolError::InvalidBulkLength => b"*1\r\n$-1\r\n".to_vec(),
        ProtocolError::UnauthenticatedBulkLength => b"*1\r\n$16385\r\n".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::framer::{Event, Framer, FramerConfig};
    use super::*;

    fn arg(bytes: &[u8]) -> HeldArg {
        HeldArg {
            bytes: bytes.to_vec().into(),
            whole: true,
        }
    }

    fn held(command: Guarded, args: &[&[u8]]) -> Held {
        Held {
            command,
            args: args.iter().map(|a| arg(a)).collect(),
        }
    }

    fn hello_sent(args: &[&[u8]]) -> Vec<u8> {
        let mut all: Vec<&[u8]> = vec![b"HELLO"];
        all.extend_from_slice(args);
        encode_command(&all).to_vec()
    }

    #[test]
    fn auth_as_the_own_user_is_answered_by_reauthenticating() {
        let app = Some("app");
        assert_eq!(
            decide(&held(Guarded::Auth, &[b"app", b"pw"]), app),
            Verdict::Reauth
        );
        assert_eq!(decide(&held(Guarded::Auth, &[b"pw"]), app), Verdict::Reauth);
        // Usernames are compared exactly (Redis' are case-sensitive and binary).
        for other in [&b"default"[..], b"APP", b"app\0", b"ap"] {
            assert!(matches!(
                decide(&held(Guarded::Auth, &[other, b"pw"]), app),
                Verdict::Refuse(r) if r.contains("reconnect")
            ));
        }
        // No db-user: the session is the upstream's `default` user.
        assert_eq!(
            decide(&held(Guarded::Auth, &[b"default", b"x"]), None),
            Verdict::Reauth
        );
        assert!(matches!(
            decide(&held(Guarded::Auth, &[b"app", b"x"]), None),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            decide(&held(Guarded::Auth, &[]), app),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            decide(&held(Guarded::Auth, &[b"a", b"b", b"c"]), app),
            Verdict::Refuse(_)
        ));
        let long_user = Held {
            command: Guarded::Auth,
            args: vec![
                HeldArg {
                    bytes: b"app".to_vec().into(),
                    whole: false,
                },
                arg(b"pw"),
            ],
        };
        assert!(matches!(decide(&long_user, app), Verdict::Refuse(_)));
    }

    #[test]
    fn hello_loses_its_auth_part_and_keeps_the_rest() {
        let app = Some("app");
        let h = |args: &[&[u8]]| decide(&held(Guarded::Hello, args), app);
        assert_eq!(h(&[]), Verdict::Replace(hello_sent(&[])));
        assert_eq!(h(&[b"3"]), Verdict::Replace(hello_sent(&[b"3"])));
        assert_eq!(
            h(&[b"3", b"AUTH", b"app", b"pw"]),
            Verdict::Replace(hello_sent(&[b"3"]))
        );
        assert_eq!(
            h(&[b"2", b"setname", b"n", b"auth", b"app", b"pw"]),
            Verdict::Replace(hello_sent(&[b"2", b"setname", b"n"]))
        );
        // `AUTH\0x` is AUTH to strcasecmp.
        assert_eq!(
            h(&[b"3", b"AUTH\0x", b"app", b"pw"]),
            Verdict::Replace(hello_sent(&[b"3"]))
        );
        assert!(matches!(
            h(&[b"3", b"AUTH", b"default", b"x"]),
            Verdict::Refuse(_)
        ));
        // Any AUTH naming another user is refused, even a later one that would win.
        assert!(matches!(
            h(&[b"3", b"AUTH", b"app", b"pw", b"AUTH", b"default", b"x"]),
            Verdict::Refuse(_)
        ));
        // A syntax error: Redis stops there, so nothing after it (a password) is sent.
        assert_eq!(
            h(&[b"3", b"BOGUS", b"AUTH", b"default", b"secret"]),
            Verdict::Replace(hello_sent(&[b"3", b"BOGUS"]))
        );
        // AUTH without two more arguments is an unknown option, not an AUTH.
        assert_eq!(
            h(&[b"3", b"AUTH", b"app"]),
            Verdict::Replace(hello_sent(&[b"3", b"AUTH"]))
        );
        // The protocol version is never an option.
        assert_eq!(
            h(&[b"AUTH", b"default", b"x"]),
            Verdict::Replace(hello_sent(&[b"AUTH", b"default"]))
        );
    }

    #[test]
    fn reset_and_nul_names_are_refused() {
        assert!(matches!(
            decide(&held(Guarded::Reset, &[]), Some("app")),
            Verdict::Refuse(_)
        ));
        assert_eq!(refusal("a\r\nb\0c"), b"*1\r\n$15\r\nbastion: a??b?c\r\n");
    }

    /// Every trigger makes the framer (which frames as Redis does) report that very error.
    #[test]
    fn each_trigger_is_its_own_protocol_error() {
        let errors = [
            ProtocolError::TooBigInline,
            ProtocolError::UnbalancedQuotes,
            ProtocolError::TooBigMultibulkCount,
            ProtocolError::InvalidMultibulkLength,
            ProtocolError::UnauthenticatedMultibulkLength,
            ProtocolError::TooBigBulkCount,
            ProtocolError::ExpectedDollar { got: b'f' },
            ProtocolError::ExpectedDollar { got: b'\r' },
            ProtocolError::InvalidBulkLength,
            ProtocolError::UnauthenticatedBulkLength,
        ];
        for error in errors {
            let unauth = matches!(
                error,
                ProtocolError::UnauthenticatedBulkLength
                    | ProtocolError::UnauthenticatedMultibulkLength
            );
            let mut framer = Framer::new(FramerConfig {
                authenticated: !unauth,
                ..FramerConfig::default()
            });
            let bytes = trigger(error);
            let mut rest = &bytes[..];
            let dead = loop {
                let step = framer.advance(rest);
                rest = &rest[step.consumed..];
                match step.event {
                    Some(Event::Dead { error, .. }) => break Some(error),
                    None if step.consumed == 0 => break None,
                    _ => {}
                }
            };
            assert_eq!(dead, Some(error), "{error:?}");
        }
    }
}
