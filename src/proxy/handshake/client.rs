//! The client's opening frame: AUTH, HELLO, or any other command.
//!
//! Parse, don't validate: the bytes become an [`Opening`] once, here. Passwords are borrowed from
//! the buffer while the frame is read and never copied: they are not in the result and not in any
//! error message (messages name the problem and the argument's position, never its value).

use redis_protocol::resp2::decode::decode_range as resp2_decode_range;
use redis_protocol::resp2::types::RangeFrame;

use super::{frame, HandshakeError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// `AUTH <password>` or `AUTH <db-user> <password>`; the password is discarded.
    Auth { db_user: Option<String> },
    /// `HELLO [protover [AUTH <db-user> <password>] [SETNAME <name>]]`; the password is discarded.
    Hello {
        protover: Option<u8>,
        db_user: Option<String>,
        setname: Option<Vec<u8>>,
    },
    /// Any other command: forwarded verbatim once the bastion has authenticated upstream.
    /// `name` is the command name as the client spelled it (invalid UTF-8 replaced by U+FFFD).
    Command { name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub opening: Opening,
    /// Bytes of `buf` the AUTH/HELLO frame took (they are not forwarded). 0 for `Command`:
    /// everything the client sent goes upstream.
    pub consumed: usize,
}

/// Look at what the client has sent so far. `Ok(None)`: need more bytes (and `buf.len()` is
/// still within `limit`). The result must not depend on how the bytes were split across reads.
///
/// - AUTH and HELLO are answered once their whole frame is in the first `limit` bytes;
///   `consumed` is that frame's exact length, so pipelined bytes after it stay in `buf`.
/// - Any other command is answered as soon as its name is known, without waiting for the rest
///   of the frame (a client may open with `SET k <10 MB value>`), with `consumed = 0`.
/// - More than `limit` bytes without an answer is [`HandshakeError::TooLarge`].
pub fn parse_opening(buf: &[u8], limit: usize) -> Result<Option<Parsed>, HandshakeError> {
    match decide(super::window(buf, limit))? {
        Some(parsed) => Ok(Some(parsed)),
        None => super::undecided(buf, limit),
    }
}

/// The answer for `buf`, or `None` if it does not hold one yet. Monotone: once this answers for
/// a prefix, it gives the same answer for every extension of that prefix.
fn decide(buf: &[u8]) -> Result<Option<Parsed>, HandshakeError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => decide_resp(buf),
        Some(b'$' | b'+' | b'-' | b':') => Err(protocol(
            "the first frame must be a command (an array of bulk strings)",
        )),
        // Like Redis, anything that does not start a RESP frame is an inline command.
        Some(_) => decide_inline(buf),
    }
}

/// The openings the bastion answers itself; every other command goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Auth,
    Hello,
}

impl Verb {
    /// Command names are case-insensitive.
    fn of(name: &[u8]) -> Option<Verb> {
        if name.eq_ignore_ascii_case(b"AUTH") {
            Some(Verb::Auth)
        } else if name.eq_ignore_ascii_case(b"HELLO") {
            Some(Verb::Hello)
        } else {
            None
        }
    }
}

/// `*N\r\n` followed by N bulk strings. The header line is split off by [`frame::header_line`]
/// (see there for why); every element is decoded by redis-protocol.
fn decide_resp(buf: &[u8]) -> Result<Option<Parsed>, HandshakeError> {
    let Some((count, header_len)) = frame::header_line(buf) else {
        return Ok(None);
    };
    let count = array_len(count)?;
    let mut pos = header_len;
    let Some(name) = next_bulk(buf, &mut pos, 0)? else {
        return Ok(None);
    };
    if name.is_empty() {
        return Err(protocol("empty command name"));
    }
    let Some(verb) = Verb::of(name) else {
        return Ok(Some(command(name)));
    };
    // AUTH or HELLO: decide only on the whole frame. The loop ends when the elements do or the
    // bytes do, whichever is first, so a huge `count` costs nothing.
    let mut args = Vec::new();
    for index in 1..count {
        let Some(arg) = next_bulk(buf, &mut pos, index)? else {
            return Ok(None);
        };
        args.push(arg);
    }
    let opening = interpret(verb, &args)?;
    Ok(Some(Parsed {
        opening,
        consumed: pos,
    }))
}

/// The element count of a command array: decimal digits only (as Redis reads it), at least 1.
fn array_len(count: &[u8]) -> Result<usize, HandshakeError> {
    if count == b"-1" {
        return Err(protocol("the first frame is a null array, not a command"));
    }
    if count.is_empty() || !count.iter().all(u8::is_ascii_digit) {
        return Err(protocol("bad array length in the first frame"));
    }
    match std::str::from_utf8(count).ok().and_then(|s| s.parse().ok()) {
        Some(0) => Err(protocol("empty command (zero-length array)")),
        Some(n) => Ok(n),
        None => Err(protocol("bad array length in the first frame")),
    }
}

/// Decode the bulk string at `*pos` (element `index` of the command) and move past it.
fn next_bulk<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    index: usize,
) -> Result<Option<&'a [u8]>, HandshakeError> {
    let rest = buf.get(*pos..).unwrap_or_default();
    match rest.first() {
        None => return Ok(None),
        Some(b'$') => {}
        // Checked before decoding so redis-protocol never sees a nested aggregate here.
        Some(_) => {
            return Err(protocol(format!(
                "element {index} of the command is not a bulk string"
            )))
        }
    }
    match resp2_decode_range(rest) {
        Ok(Some((RangeFrame::BulkString((start, end)), len))) => {
            let value = rest
                .get(start..end)
                .ok_or_else(|| protocol(format!("malformed bulk string at element {index}")))?;
            *pos += len;
            Ok(Some(value))
        }
        Ok(Some((RangeFrame::Null, _))) => Err(protocol(format!(
            "element {index} of the command is a null bulk string"
        ))),
        Ok(Some(_)) | Err(_) => Err(protocol(format!(
            "malformed bulk string at element {index}"
        ))),
        Ok(None) => Ok(None),
    }
}

/// Redis's inline form (what telnet sends): one line, split on whitespace.
fn decide_inline(buf: &[u8]) -> Result<Option<Parsed>, HandshakeError> {
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let Some(start) = line.iter().position(|&b| !is_space(b)) else {
        return match line_end {
            Some(_) => Err(protocol("empty command")),
            None => Ok(None),
        };
    };
    // The name is known once whitespace or the end of the line follows it.
    let name = match line[start..].iter().position(|&b| is_space(b)) {
        Some(len) => &line[start..start + len],
        None if line_end.is_some() => &line[start..],
        None => return Ok(None),
    };
    // Redis unquotes inline arguments (`"AU"TH` is AUTH); rather than reimplement that, refuse.
    if has_quote(name) {
        return Err(protocol(
            "quoted inline commands are not supported; send the command as RESP",
        ));
    }
    let Some(verb) = Verb::of(name) else {
        return Ok(Some(command(name)));
    };
    let Some(line_end) = line_end else {
        return Ok(None);
    };
    let args: Vec<&[u8]> = line[start + name.len()..]
        .split(|&b| is_space(b))
        .filter(|arg| !arg.is_empty())
        .collect();
    if args.iter().any(|arg| has_quote(arg)) {
        return Err(protocol(
            "quoted arguments are not supported in an inline AUTH or HELLO; send it as RESP",
        ));
    }
    let opening = interpret(verb, &args)?;
    Ok(Some(Parsed {
        opening,
        consumed: line_end + 1,
    }))
}

/// Whitespace as Redis's `sdssplitargs` sees it (`isspace`); `\n` ends the line before this.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

fn has_quote(token: &[u8]) -> bool {
    token.iter().any(|&b| b == b'"' || b == b'\'')
}

fn command(name: &[u8]) -> Parsed {
    Parsed {
        opening: Opening::Command {
            name: String::from_utf8_lossy(name).into_owned(),
        },
        consumed: 0,
    }
}

/// The arguments (after the command name) of an AUTH or HELLO, as Redis reads them.
fn interpret(verb: Verb, args: &[&[u8]]) -> Result<Opening, HandshakeError> {
    match verb {
        Verb::Auth => match args {
            [_password] => Ok(Opening::Auth { db_user: None }),
            [user, _password] => Ok(Opening::Auth {
                db_user: Some(db_user(user)?),
            }),
            _ => Err(protocol(
                "wrong number of arguments for AUTH (expected AUTH [user] password)",
            )),
        },
        Verb::Hello => hello(args),
    }
}

/// `HELLO [protover [AUTH user password] [SETNAME name]]`: options in any order, the last one
/// of a kind wins (as in Redis's `helloCommand`).
fn hello(args: &[&[u8]]) -> Result<Opening, HandshakeError> {
    let Some((version, mut options)) = args.split_first() else {
        return Ok(Opening::Hello {
            protover: None,
            db_user: None,
            setname: None,
        });
    };
    let protover = match *version {
        b"2" => 2,
        b"3" => 3,
        _ => {
            return Err(protocol(
                "NOPROTO unsupported protocol version (HELLO accepts 2 or 3)",
            ))
        }
    };
    let (mut user, mut setname) = (None, None);
    loop {
        match options {
            [] => break,
            [option, name, _password, rest @ ..] if option.eq_ignore_ascii_case(b"AUTH") => {
                user = Some(db_user(name)?);
                options = rest;
            }
            [option, name, rest @ ..] if option.eq_ignore_ascii_case(b"SETNAME") => {
                setname = Some(name.to_vec());
                options = rest;
            }
            _ => {
                return Err(protocol(
                    "syntax error in HELLO options (expected AUTH user password, SETNAME name)",
                ))
            }
        }
    }
    Ok(Opening::Hello {
        protover: Some(protover),
        db_user: user,
        setname,
    })
}

fn db_user(name: &[u8]) -> Result<String, HandshakeError> {
    std::str::from_utf8(name)
        .map(str::to_owned)
        .map_err(|_| protocol("the database user name is not valid UTF-8"))
}

fn protocol(message: impl Into<String>) -> HandshakeError {
    HandshakeError::Protocol(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

    fn parse(buf: &[u8]) -> Result<Option<Parsed>, HandshakeError> {
        parse_opening(buf, LIMIT)
    }

    fn parsed(opening: Opening, consumed: usize) -> Result<Option<Parsed>, HandshakeError> {
        Ok(Some(Parsed { opening, consumed }))
    }

    fn is_protocol(r: Result<Option<Parsed>, HandshakeError>) -> bool {
        matches!(r, Err(HandshakeError::Protocol(_)))
    }

    #[test]
    fn auth_with_password_only() {
        let frame = b"*2\r\n$4\r\nAUTH\r\n$7\r\nhunter2\r\n";
        assert_eq!(
            parse(frame),
            parsed(Opening::Auth { db_user: None }, frame.len())
        );
    }

    #[test]
    fn auth_with_user_keeps_pipelined_bytes() {
        let frame = b"*3\r\n$4\r\nauth\r\n$5\r\nalice\r\n$7\r\nhunter2\r\n";
        let mut buf = frame.to_vec();
        buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            parse(&buf),
            parsed(
                Opening::Auth {
                    db_user: Some("alice".into())
                },
                frame.len()
            )
        );
    }

    #[test]
    fn auth_waits_for_the_whole_frame() {
        let frame = b"*3\r\n$4\r\nAuth\r\n$5\r\nalice\r\n$7\r\nhunter2\r\n";
        for end in 0..frame.len() {
            assert_eq!(parse(&frame[..end]), Ok(None), "prefix {end}");
        }
    }

    #[test]
    fn auth_arity_and_errors_never_echo_the_password() {
        for frame in [
            &b"*1\r\n$4\r\nAUTH\r\n"[..],
            b"*4\r\n$4\r\nAUTH\r\n$1\r\na\r\n$7\r\nhunter2\r\n$1\r\nb\r\n",
            b"*3\r\n$4\r\nAUTH\r\n$2\r\n\xff\xfe\r\n$7\r\nhunter2\r\n",
            b"*3\r\n$4\r\nAUTH\r\n:7\r\n$7\r\nhunter2\r\n",
            b"AUTH a hunter2 b\r\n",
            b"AUTH \"hunter2\"\r\n",
        ] {
            let err = parse(frame).unwrap_err();
            assert!(matches!(err, HandshakeError::Protocol(_)), "{err:?}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn hello_forms() {
        let cases: &[(&[u8], Opening)] = &[
            (
                b"*1\r\n$5\r\nHELLO\r\n",
                Opening::Hello {
                    protover: None,
                    db_user: None,
                    setname: None,
                },
            ),
            (
                b"*2\r\n$5\r\nhello\r\n$1\r\n3\r\n",
                Opening::Hello {
                    protover: Some(3),
                    db_user: None,
                    setname: None,
                },
            ),
            (
                b"*7\r\n$5\r\nHELLO\r\n$1\r\n2\r\n$7\r\nSETNAME\r\n$3\r\napp\r\n$4\r\nauth\r\n$5\r\nalice\r\n$2\r\npw\r\n",
                Opening::Hello {
                    protover: Some(2),
                    db_user: Some("alice".into()),
                    setname: Some(b"app".to_vec()),
                },
            ),
            (
                b"HELLO 3 AUTH alice pw SETNAME app\r\n",
                Opening::Hello {
                    protover: Some(3),
                    db_user: Some("alice".into()),
                    setname: Some(b"app".to_vec()),
                },
            ),
        ];
        for (frame, opening) in cases {
            assert_eq!(parse(frame), parsed(opening.clone(), frame.len()));
        }
    }

    #[test]
    fn hello_errors() {
        for frame in [
            &b"*2\r\n$5\r\nHELLO\r\n$1\r\n4\r\n"[..],
            b"*2\r\n$5\r\nHELLO\r\n$4\r\nAUTH\r\n",
            b"*4\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n",
            b"*3\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$7\r\nSETNAME\r\n",
            b"*3\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$5\r\nBOGUS\r\n",
            b"HELLO 1\r\n",
        ] {
            assert!(
                is_protocol(parse(frame)),
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
        let err = parse(b"HELLO 4\r\n").unwrap_err();
        assert!(err.to_string().contains("NOPROTO"));
    }

    #[test]
    fn other_commands_are_decided_on_the_name() {
        // A 10 MB SET: only the header and the name have arrived, and that is enough.
        let frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10000000\r\nxxxx";
        assert_eq!(
            parse(frame),
            parsed(Opening::Command { name: "SET".into() }, 0)
        );
        assert_eq!(parse(b"*3\r\n$3\r\nSET\r\n"), parse(frame));
        assert_eq!(parse(b"*3\r\n$3\r\nSE"), Ok(None));
        assert_eq!(
            parse(b"*1\r\n$4\r\nping\r\n"),
            parsed(
                Opening::Command {
                    name: "ping".into()
                },
                0
            )
        );
    }

    #[test]
    fn inline_commands() {
        assert_eq!(
            parse(b"PING\r\n"),
            parsed(
                Opening::Command {
                    name: "PING".into()
                },
                0
            )
        );
        assert_eq!(
            parse(b"  get"),
            Ok(None),
            "the name is not known until something follows it"
        );
        assert_eq!(
            parse(b"  get "),
            parsed(Opening::Command { name: "get".into() }, 0)
        );
        assert_eq!(
            parse(b"auth pw\nPING\r\n"),
            parsed(Opening::Auth { db_user: None }, 8)
        );
        assert_eq!(
            parse(b"AUTH alice pw\r\n"),
            parsed(
                Opening::Auth {
                    db_user: Some("alice".into())
                },
                15
            )
        );
        assert_eq!(parse(b"AUTH alice pw"), Ok(None));
        assert!(is_protocol(parse(b"\r\n")));
        assert!(is_protocol(parse(b"\"AUTH\" pw\r\n")));
    }

    #[test]
    fn malformed_first_frames() {
        for frame in [
            &b":1\r\n"[..],
            b"+OK\r\n",
            b"-ERR\r\n",
            b"$4\r\nPING\r\n",
            b"*0\r\n",
            b"*-1\r\n",
            b"*x\r\n",
            b"*+1\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n*1\r\n$4\r\nPING\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$x\r\n",
            b"*1\r\n$0\r\n\r\n",
            b"*2\r\n$4\r\nAUTH\r\n+pw\r\n",
        ] {
            assert!(
                is_protocol(parse(frame)),
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = b"*1\r\n".repeat(1_000_000);
        assert!(is_protocol(parse_opening(&deep, usize::MAX)));
    }

    #[test]
    fn limit_bounds_undecided_input() {
        let limit = 64;
        let password = "p".repeat(100);
        let frame = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
        assert_eq!(parse_opening(&frame.as_bytes()[..limit], limit), Ok(None));
        assert_eq!(
            parse_opening(frame.as_bytes(), limit),
            Err(HandshakeError::TooLarge { limit })
        );
        // A long inline line without a decision.
        assert_eq!(
            parse_opening(&b"x".repeat(limit + 1), limit),
            Err(HandshakeError::TooLarge { limit })
        );
        // A big non-AUTH command is decided on its name, whatever its size.
        let mut set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n".to_vec();
        set.extend(std::iter::repeat_n(b'v', 1000));
        assert_eq!(
            parse_opening(&set, limit),
            parsed(Opening::Command { name: "SET".into() }, 0)
        );
    }

    #[test]
    fn an_auth_frame_exactly_at_the_limit_fits() {
        let frame = b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n";
        assert_eq!(
            parse_opening(frame, frame.len()),
            parsed(Opening::Auth { db_user: None }, frame.len())
        );
        assert_eq!(
            parse_opening(frame, frame.len() - 1),
            Err(HandshakeError::TooLarge {
                limit: frame.len() - 1
            })
        );
    }
}
