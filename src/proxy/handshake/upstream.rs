//! What the bastion says to the upstream, and reading its one reply.
//!
//! Commands are encoded by redis-protocol; the reply is framed by [`super::frame::reply_extent`]
//! (depth-bounded) and decoded by redis-protocol's RESP3 decoder, which also reads RESP2.

use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;
use redis_protocol::resp3::decode::complete::decode as resp3_decode;
use redis_protocol::resp3::types::OwnedFrame;

use super::client::Opening;
use super::{frame, HandshakeError};
use crate::secret::Secret;
use zeroize::Zeroizing;

/// The user a one-argument `AUTH <password>` authenticates as (Redis 6+; `requirepass` sets
/// its password). HELLO has no one-argument AUTH form, so HELLO names it.
pub const DEFAULT_USER: &str = "default";

/// The command that authenticates upstream for `opening`, or `None` when nothing needs sending
/// (auth mode `none` and the client did not send HELLO).
///
/// - AUTH / other command + secret → `AUTH <db_user> <secret>`, or with no db-user the
///   one-argument `AUTH <secret>` (`requirepass`, an ElastiCache AUTH token without RBAC, and
///   Redis before 6, which knows no users)
/// - HELLO → `HELLO <protover or 2> [AUTH <db_user or default> <secret>] [SETNAME <name>]`
///   (verified against redis-server 7 with `requirepass`: `HELLO 3 AUTH default <password>`)
///
/// The bytes carry the secret, so they come back in a buffer that is zeroized on drop: write
/// them and drop them; never log them.
pub fn auth_command(
    opening: &Opening,
    db_user: Option<&str>,
    secret: Option<&Secret>,
) -> Option<Zeroizing<Vec<u8>>> {
    let secret = secret.map(|s| s.expose().as_bytes());
    match opening {
        Opening::Auth { .. } | Opening::Command { .. } => {
            let secret = secret?;
            Some(match db_user {
                Some(user) => encode_command(&[b"AUTH", user.as_bytes(), secret]),
                None => encode_command(&[b"AUTH", secret]),
            })
        }
        Opening::Hello {
            protover, setname, ..
        } => {
            let protover: &[u8] = match protover {
                Some(3) => b"3",
                _ => b"2",
            };
            let mut args: Vec<&[u8]> = vec![b"HELLO", protover];
            if let Some(secret) = secret {
                let user = db_user.unwrap_or(DEFAULT_USER);
                args.extend([&b"AUTH"[..], user.as_bytes(), secret]);
            }
            if let Some(name) = setname {
                args.extend([&b"SETNAME"[..], name]);
            }
            Some(encode_command(&args))
        }
    }
}

/// A command as a RESP array of bulk strings (zeroized on drop: it may carry a secret).
pub fn encode_command(args: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let elements: Vec<BorrowedFrame> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&elements);
    let mut out = vec![0; frame.encode_len(false)];
    // Cannot fail: `out` is exactly `encode_len` long, and arrays of bulk strings always encode.
    let written = encode_borrowed(&mut out, &frame, false).expect("buffer sized by encode_len");
    out.truncate(written);
    Zeroizing::new(out)
}

/// One upstream reply frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Length of the whole frame in the buffer (forwarded verbatim to the client when it asked).
    pub len: usize,
    /// `Some(text)` when the reply is an error (`WRONGPASS invalid …`), without the leading `-`.
    pub error: Option<String>,
}

/// Parse one RESP2/RESP3 reply from the upstream. `Ok(None)`: need more bytes.
///
/// Split-invariant like the opening parser: only the first `limit` bytes are looked at, and more
/// than `limit` bytes without a complete frame is [`HandshakeError::TooLarge`].
pub fn parse_reply(buf: &[u8], limit: usize) -> Result<Option<Reply>, HandshakeError> {
    let window = super::window(buf, limit);
    let Some(len) = frame::reply_extent(window)? else {
        return super::undecided(buf, limit);
    };
    // The extent is complete and at most MAX_REPLY_DEPTH deep, so the decoder's recursion is
    // bounded. It has the last word on whether the frame is well formed.
    let frame = match resp3_decode(&window[..len]) {
        Ok(Some((frame, decoded))) if decoded == len => frame,
        _ => return Err(malformed()),
    };
    let error = match frame {
        OwnedFrame::SimpleError { data, .. } => Some(data),
        OwnedFrame::BlobError { data, .. } => Some(String::from_utf8_lossy(&data).into_owned()),
        OwnedFrame::Hello { .. } => return Err(malformed()),
        _ => None,
    };
    Ok(Some(Reply { len, error }))
}

fn malformed() -> HandshakeError {
    HandshakeError::Protocol("upstream reply: malformed frame".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_bytes(o: &Opening, u: &str, s: Option<&Secret>) -> Option<Vec<u8>> {
        auth_command(o, Some(u), s).map(|z| z.to_vec())
    }

    #[test]
    fn no_db_user_is_one_argument_auth_or_hello_as_default() {
        let auth = |o: &Opening, s: Option<&Secret>| auth_command(o, None, s).map(|z| z.to_vec());
        let one_arg = b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cr3t\r\n".to_vec();
        let opening = Opening::Auth {
            db_user: Some("mallory".into()),
        };
        assert_eq!(auth(&opening, Some(&secret())), Some(one_arg.clone()));
        let cmd = Opening::Command { name: "GET".into() };
        assert_eq!(auth(&cmd, Some(&secret())), Some(one_arg));
        assert_eq!(auth(&cmd, None), None);
        let hello = Opening::Hello {
            protover: Some(3),
            db_user: Some("ignored".into()),
            setname: None,
        };
        assert_eq!(
            auth(&hello, Some(&secret())).unwrap(),
            b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$6\r\ns3cr3t\r\n"
        );
    }

    fn secret() -> Secret {
        Secret::new("s3cr3t")
    }

    #[test]
    fn auth_and_commands_authenticate_with_auth() {
        let expected = b"*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$6\r\ns3cr3t\r\n".to_vec();
        let auth = Opening::Auth { db_user: None };
        assert_eq!(
            auth_bytes(&auth, "alice", Some(&secret())),
            Some(expected.clone())
        );
        let cmd = Opening::Command { name: "GET".into() };
        assert_eq!(auth_bytes(&cmd, "alice", Some(&secret())), Some(expected));
        assert_eq!(auth_bytes(&auth, "alice", None), None);
        assert_eq!(auth_bytes(&cmd, "alice", None), None);
    }

    #[test]
    fn the_mapped_db_user_wins_over_the_clients() {
        let auth = Opening::Auth {
            db_user: Some("mallory".into()),
        };
        let bytes = auth_bytes(&auth, "alice", Some(&secret())).unwrap();
        assert_eq!(
            bytes,
            b"*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$6\r\ns3cr3t\r\n"
        );
    }

    #[test]
    fn hello_keeps_protover_and_setname() {
        let hello = Opening::Hello {
            protover: Some(3),
            db_user: Some("ignored".into()),
            setname: Some(b"app".to_vec()),
        };
        assert_eq!(
            auth_bytes(&hello, "alice", Some(&secret())).unwrap(),
            b"*7\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$6\r\ns3cr3t\r\n$7\r\nSETNAME\r\n$3\r\napp\r\n"
        );
        assert_eq!(
            auth_bytes(&hello, "alice", None).unwrap(),
            b"*4\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$7\r\nSETNAME\r\n$3\r\napp\r\n"
        );
        let bare = Opening::Hello {
            protover: None,
            db_user: None,
            setname: None,
        };
        assert_eq!(
            auth_bytes(&bare, "alice", Some(&secret())).unwrap(),
            b"*5\r\n$5\r\nHELLO\r\n$1\r\n2\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$6\r\ns3cr3t\r\n"
        );
        assert_eq!(
            auth_bytes(&bare, "alice", None).unwrap(),
            b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n"
        );
    }

    fn reply(buf: &[u8]) -> Reply {
        parse_reply(buf, 4096).unwrap().unwrap()
    }

    #[test]
    fn simple_replies() {
        assert_eq!(
            reply(b"+OK\r\n+PONG\r\n"),
            Reply {
                len: 5,
                error: None
            }
        );
        let wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
        assert_eq!(
            reply(wrongpass),
            Reply {
                len: wrongpass.len(),
                error: Some("WRONGPASS invalid username-password pair or user is disabled.".into())
            }
        );
        assert_eq!(
            reply(b"!21\r\nSYNTAX invalid syntax\r\n"),
            Reply {
                len: 28,
                error: Some("SYNTAX invalid syntax".into())
            }
        );
        assert_eq!(
            reply(b":1\r\n"),
            Reply {
                len: 4,
                error: None
            }
        );
    }

    /// What Redis 7 answers to `HELLO 3` and `HELLO 2`.
    const HELLO3: &[u8] = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.4\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*1\r\n%3\r\n$4\r\nname\r\n$2\r\nft\r\n$3\r\nver\r\n:1\r\n$4\r\npath\r\n$0\r\n\r\n";
    const HELLO2: &[u8] = b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.4\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";

    #[test]
    fn hello_replies_in_both_protocols() {
        for hello in [HELLO3, HELLO2] {
            let mut buf = hello.to_vec();
            buf.extend_from_slice(b"+OK\r\n");
            assert_eq!(
                reply(&buf),
                Reply {
                    len: hello.len(),
                    error: None
                }
            );
            assert_eq!(parse_reply(&hello[..hello.len() - 1], 4096), Ok(None));
        }
    }

    #[test]
    fn reply_limits_and_errors() {
        assert_eq!(
            parse_reply(HELLO3, 16),
            Err(HandshakeError::TooLarge { limit: 16 })
        );
        assert_eq!(parse_reply(&HELLO3[..16], 16), Ok(None));
        for bad in [
            &b"?\r\n"[..],
            b"HELLO 3\r\n",
            b"%1\r\n*0\r\n+x\r\n",
            b"-\xff\r\n",
            b"*?\r\n",
            b":x\r\n",
        ] {
            assert!(
                matches!(parse_reply(bad, 4096), Err(HandshakeError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
