//! Authenticating on an open upstream connection: write the one AUTH/HELLO (or the doctor's
//! PING), read the one reply with the handshake's RESP3 decoder, and explain a refusal.
//!
//! The one owner of that exchange: sessions and `bastion doctor` both call [`authenticate`], so
//! the client and the operator read the same words for the same refusal. The request bytes
//! carry the secret: they are written and never kept, logged or echoed.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::catalog::{Auth, Database};
use crate::proxy::handshake::upstream::DEFAULT_USER;
use crate::proxy::handshake::{parse_reply, HandshakeError, Reply};

/// Upper bound on the upstream's reply to AUTH/HELLO (a HELLO map is a few hundred bytes).
pub const MAX_REPLY: usize = 1024 * 1024;

/// The upstream accepted the request.
#[derive(Debug)]
pub struct Authenticated {
    /// The upstream's reply frame, verbatim (a client that sent AUTH/HELLO gets it as is).
    pub reply: Vec<u8>,
    /// Bytes the upstream sent after that reply (normally none).
    pub extra: Vec<u8>,
}

/// Why authenticating failed, and on which database and address. `Display` is safe to show the
/// client: no secret, only the upstream's error code and a control-free prefix of its text.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("upstream '{db}' ({addr}) failed during AUTH: {source}")]
    Io {
        db: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("upstream '{db}' ({addr}) closed the connection during AUTH")]
    Closed { db: String, addr: String },
    #[error("upstream '{db}' sent a malformed reply to AUTH: {source}")]
    Malformed { db: String, source: HandshakeError },
    /// The upstream answered with an error; `explained` names the likely cause.
    #[error("{explained}")]
    Rejected { code: String, explained: String },
}

/// Write `request` (AUTH/HELLO built by `proxy::handshake::auth_command`, or a PING), read one
/// reply frame. `db_user` is who the request authenticates as (`None`: the default user), for
/// the explanation of a refusal.
pub async fn authenticate<S>(
    stream: &mut S,
    db: &Database,
    db_user: Option<&str>,
    request: &[u8],
) -> Result<Authenticated, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = |source: std::io::Error| AuthError::Io {
        db: db.name.clone(),
        addr: db.address.to_string(),
        source,
    };
    stream.write_all(request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut buf = BytesMut::with_capacity(1024);
    let Reply { len, error } = loop {
        match parse_reply(&buf, MAX_REPLY) {
            Ok(Some(reply)) => break reply,
            Ok(None) => {}
            Err(source) => {
                return Err(AuthError::Malformed {
                    db: db.name.clone(),
                    source,
                })
            }
        }
        if stream.read_buf(&mut buf).await.map_err(io)? == 0 {
            return Err(AuthError::Closed {
                db: db.name.clone(),
                addr: db.address.to_string(),
            });
        }
    };
    if let Some(error) = error {
        return Err(AuthError::Rejected {
            code: error_code(&error).to_string(),
            explained: explain_rejection(db, db_user, &error),
        });
    }
    let extra = buf.split_off(len).to_vec();
    Ok(Authenticated {
        reply: buf.to_vec(),
        extra,
    })
}

/// The first word of an error reply (`WRONGPASS`, `NOAUTH`, …).
fn error_code(error: &str) -> &str {
    error.split_whitespace().next().unwrap_or("")
}

/// Turn the upstream's refusal of our AUTH/HELLO into an operator-grade message naming the
/// likely cause (the client and `bastion doctor` see it).
///
/// `error` is the upstream's error text; only its code and a control-free prefix are echoed.
fn explain_rejection(db: &Database, db_user: Option<&str>, error: &str) -> String {
    let code = error_code(error);
    let auth_failure =
        matches!(code, "WRONGPASS" | "NOAUTH" | "NOPERM") || error.contains("invalid password");
    if !auth_failure {
        return format!(
            "upstream '{}' refused the handshake: {}",
            db.name,
            sanitize(error)
        );
    }
    let user = db_user.unwrap_or(DEFAULT_USER);
    match &db.auth {
        Auth::Iam { service, target, .. } => format!(
            "upstream '{}' rejected the IAM auth token for db-user '{user}' ({code}): check that the \
             bastion's AWS principal is allowed {} on '{target}' and on user '{user}', and that \
             user '{user}' exists with IAM authentication enabled",
            db.name,
            service.connect_action(),
        ),
        Auth::Password(_) if db_user.is_none() => format!(
            "upstream '{}' rejected the password sent with one-argument AUTH (no db-user: the \
             server's default user) ({code})",
            db.name
        ),
        Auth::Password(_) => format!(
            "upstream '{}' rejected the password for db-user '{user}' ({code})",
            db.name
        ),
        Auth::Managed(_) => format!(
            "upstream '{}' rejected the managed password of db-user '{user}' ({code}): see \
             `bastion managed ls` for its last rotation",
            db.name
        ),
        Auth::None => format!(
            "upstream '{}' requires authentication ({code}) but its auth mode is 'none'",
            db.name
        ),
    }
}

fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IamService;

    #[test]
    fn rejection_names_the_cause() {
        let db =
            super::super::iam_database("cache", "h:6379", IamService::Memorydb, "eu-west-1", "c1");
        let m = explain_rejection(
            &db,
            Some("app"),
            "WRONGPASS invalid username-password pair or user is disabled.",
        );
        assert!(
            m.contains("IAM auth token") && m.contains("memorydb:Connect") && m.contains("'app'"),
            "{m}"
        );
        let m = explain_rejection(&db, Some("app"), "NOPROTO unsupported protocol version");
        assert!(m.contains("NOPROTO") && !m.contains("IAM"), "{m}");
    }
}
