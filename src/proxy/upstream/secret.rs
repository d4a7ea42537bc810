//! The secret the bastion authenticates upstream with: an IAM token (from `aws`), the password
//! the catalog read when the database was built (`catalog/password.rs`: never read here, per
//! session), or nothing (auth mode `none`).
//!
//! Errors name the database and the source (file, variable); they never carry the secret.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{AuthError, Authenticated, UpstreamError};
use crate::aws::credentials::CredentialChain;
use crate::aws::iam::{self, Freshness, IamAuth, IamTokenError};
use crate::catalog::{Auth, Database};
use crate::proxy::handshake::{auth_command, Opening};
use crate::secret::Secret;

/// The secret for `db_user` on `db` (`None`: a session with no db-user, see
/// [`crate::rbac`]), or `None` for auth mode `none`. `freshness` says whether an IAM token
/// signed a moment ago for the same db-user will do ([`iam::Freshness`]); the other modes
/// ignore it.
pub async fn auth_secret(
    db: &Database,
    db_user: Option<&str>,
    credentials: &CredentialChain,
    freshness: Freshness,
) -> Result<Option<Secret>, UpstreamError> {
    if db.auth.needs_tls() && db.tls.is_none() && !db.allow_plaintext_auth {
        return Err(UpstreamError::PlaintextToken {
            db: db.name.clone(),
            mode: db.auth.mode_name(),
        });
    }
    match &db.auth {
        Auth::None => Ok(None),
        Auth::Managed(managed) => {
            // Boxed, as the IAM branch below: their state (an SDK call) is kilobytes, and
            // inline it would size every caller's future — every session's handshake and
            // each cleaning for reuse, auth mode `none` included — for a branch most never run.
            Box::pin(crate::managed::session_password(
                db,
                managed,
                db_user,
                credentials,
            ))
            .await
            .map(Some)
            .map_err(|e| UpstreamError::Managed {
                db: db.name.clone(),
                message: e.to_string(),
            })
        }
        Auth::Password(password) => match password.value() {
            Ok(secret) => Ok(Some(secret.clone())),
            Err(e) => Err(UpstreamError::Password {
                db: db.name.clone(),
                message: e.to_string(),
            }),
        },
        Auth::Iam {
            service,
            region,
            target,
            serverless,
        } => {
            let db_user = db_user.ok_or_else(|| UpstreamError::Token {
                db: db.name.clone(),
                message: "an IAM auth token needs a db-user".into(),
            })?;
            let auth = IamAuth {
                database: &db.name,
                service: *service,
                region: region.as_deref(),
                target,
                serverless: *serverless,
                role: db.assume_role.clone(),
            };
            Box::pin(iam::token(credentials, &auth, db_user, freshness))
                .await
                .map(Some)
                .map_err(|e| match e {
                    IamTokenError::Region(error) => UpstreamError::Region { error },
                    IamTokenError::AssumeRole(source) => UpstreamError::AssumeRole {
                        db: db.name.clone(),
                        source,
                    },
                    IamTokenError::Credentials(e) => UpstreamError::Credentials {
                        db: db.name.clone(),
                        message: e.to_string(),
                    },
                    IamTokenError::Token(e) => UpstreamError::Token {
                        db: db.name.clone(),
                        message: e.to_string(),
                    },
                })
        }
    }
}

/// The one login: send `command` (the AUTH/HELLO of `opening` with the session's secret) and
/// read its reply; a managed database's refused AWSCURRENT is followed by [`managed_fallback`]
/// on the same connection. Returns the reply and, when the fallback's password was the one
/// accepted, that password (`None`: `command`'s was). Sessions' first login and the guard's
/// re-AUTH check (`guard/session_policy.rs`) both log in here.
pub async fn login<S>(
    stream: &mut S,
    db: &Database,
    db_user: Option<&str>,
    opening: &Opening,
    credentials: &CredentialChain,
    command: &[u8],
) -> Result<(Authenticated, Option<Secret>), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match super::authenticate(stream, db, db_user, command).await {
        Err(refused @ AuthError::Rejected { .. }) => {
            // Boxed: the fallback's SDK calls would otherwise size every login's future.
            Box::pin(managed_fallback(
                stream,
                db,
                db_user,
                opening,
                credentials,
                refused,
            ))
            .await
            .map(|(done, password)| (done, Some(password)))
        }
        other => other.map(|done| (done, None)),
    }
}

/// After the upstream refused a managed database's AWSCURRENT: AWSCURRENT read afresh (another
/// bastion rotated since our cache), then AWSPREVIOUS (the cloud applies a change with a
/// delay), on the same connection; the reply and the password accepted. Any other database,
/// or no password left: `refused`.
async fn managed_fallback<S>(
    stream: &mut S,
    db: &Database,
    db_user: Option<&str>,
    opening: &Opening,
    credentials: &CredentialChain,
    refused: AuthError,
) -> Result<(Authenticated, Secret), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Auth::Managed(managed) = &db.auth else {
        return Err(refused);
    };
    let Ok(candidates) =
        crate::managed::fallback_passwords(db, managed, db_user, credentials).await
    else {
        return Err(refused);
    };
    let mut last = refused;
    for password in candidates {
        let Some(command) = auth_command(opening, db_user, Some(&password)) else {
            break;
        };
        match super::authenticate(stream, db, db_user, &command).await {
            Ok(done) => return Ok((done, password)),
            Err(e @ AuthError::Rejected { .. }) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IamService;

    /// An ElastiCache IAM database without TLS.
    fn rig() -> Database {
        super::super::iam_database(
            "rig",
            "127.0.0.1:6390",
            IamService::Elasticache,
            "us-east-1",
            "rg",
        )
    }

    /// A database stored before the plaintext rule (or migrated from format 1): its sessions
    /// get no token, whatever the credentials; `allow_plaintext_auth` lifts that.
    #[tokio::test]
    async fn an_iam_database_without_tls_gets_no_token() {
        let mut db = rig();
        let chain = CredentialChain::builder().build();
        let e = auth_secret(&db, Some("app"), &chain, Freshness::Recent)
            .await
            .unwrap_err();
        assert!(
            matches!(e, UpstreamError::PlaintextToken { .. })
                && e.to_string().contains("'rig'")
                && e.to_string().contains("allow_plaintext_auth"),
            "{e}"
        );
        db.allow_plaintext_auth = true;
        let e = auth_secret(&db, Some("app"), &chain, Freshness::Recent)
            .await
            .unwrap_err();
        assert!(matches!(e, UpstreamError::Credentials { .. }), "{e}");
    }

    /// Every session's handshake and every cleaning for reuse hold this future (and
    /// [`login`]'s) inline: the SDK calls of the IAM and managed branches are boxed where they
    /// run, so it stays small. Inline they made it 12.8 KB (release), the handshake's 27.6 KB,
    /// copied into a fresh heap block for each session.
    #[test]
    fn the_secret_and_login_futures_stay_small() {
        let db = rig();
        let chain = CredentialChain::builder().build();
        let secret = auth_secret(&db, Some("app"), &chain, Freshness::Recent);
        assert!(
            std::mem::size_of_val(&secret) <= 1024,
            "auth_secret's future is {} bytes",
            std::mem::size_of_val(&secret)
        );
        let (mut stream, _peer) = tokio::io::duplex(64);
        let opening = Opening::Auth { db_user: None };
        let login = login(&mut stream, &db, Some("app"), &opening, &chain, b"");
        assert!(
            std::mem::size_of_val(&login) <= 2048,
            "login's future is {} bytes",
            std::mem::size_of_val(&login)
        );
    }
}
