//! Self-hosted Redis / Valkey: passwords applied with `ACL SETUSER` through the database's
//! `admin_user`, over the same connector (address policy, TLS) sessions use.
//!
//! A rotation adds the new password (`>new`) and removes the one of two rotations ago
//! (`<old`), so the current one stays valid for sessions that still hold it. The change is
//! idempotent: a resumed or duplicated rotation applies it again without harm. Command
//! bytes carry passwords and are zeroized; errors carry the server's error code only.

use std::time::Duration;

use zeroize::Zeroizing;

use super::rotation::Apply;
use super::ManagedError;
use crate::catalog::Database;
use crate::proxy::handshake::upstream::encode_command;
use crate::proxy::upstream::{self, AuthError, Connector, UpstreamStream};
use crate::secret::Secret;

/// Bound on connecting to the database for a password change.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `ACL SETUSER` through the admin user of one database.
pub struct AclAdmin<'a> {
    pub database: &'a Database,
    pub connector: &'a Connector,
    pub admin_user: &'a str,
    /// As the catalog read it from `admin_password_file`.
    pub admin_password: &'a Secret,
}

impl AclAdmin<'_> {
    async fn session(&self) -> Result<UpstreamStream, ManagedError> {
        let failed = |message: String| ManagedError::Admin {
            database: self.database.name.clone(),
            message,
        };
        let mut stream = self
            .connector
            .connect(self.database, CONNECT_TIMEOUT)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let auth = encode_command(&[
            b"AUTH",
            self.admin_user.as_bytes(),
            self.admin_password.expose().as_bytes(),
        ]);
        upstream::authenticate(&mut stream, self.database, Some(self.admin_user), &auth)
            .await
            .map_err(|e| failed(format!("admin_user '{}': {e}", self.admin_user)))?;
        Ok(stream)
    }

    /// `ACL SETUSER <user> >new [>old <old]`: one command, so Redis applies it whole. Adding
    /// the old password before removing it makes the removal succeed whether or not the user
    /// still has it (a resumed rotation, or another bastion's, already removed it).
    async fn setuser(
        &self,
        stream: &mut UpstreamStream,
        user: &str,
        new: &Secret,
        retire: Option<&Secret>,
    ) -> Result<(), ManagedError> {
        let op = |op: u8, password: &Secret| {
            let mut arg = Zeroizing::new(Vec::with_capacity(password.expose().len() + 1));
            arg.push(op);
            arg.extend_from_slice(password.expose().as_bytes());
            arg
        };
        let mut args = vec![op(b'>', new)];
        if let Some(old) = retire {
            args.push(op(b'>', old));
            args.push(op(b'<', old));
        }
        let mut command: Vec<&[u8]> = vec![b"ACL", b"SETUSER", user.as_bytes()];
        command.extend(args.iter().map(|a| a.as_slice()));
        let command = encode_command(&command);
        let message =
            match upstream::authenticate(stream, self.database, Some(user), &command).await {
                Ok(_) => return Ok(()),
                // Redis quotes the modifier — a password — in its error text: only the code goes on.
                Err(AuthError::Rejected { code, .. }) => format!("refused with {code}"),
                Err(e) => e.to_string(),
            };
        Err(ManagedError::Apply {
            database: self.database.name.clone(),
            user: user.to_string(),
            message: format!("ACL SETUSER {user}: {message}"),
        })
    }
}

/// What `ACL DRYRUN` says of the admin user running `ACL SETUSER` (`bastion doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetuserRight {
    Allowed,
    /// Redis' reason, e.g. "This user has no permissions to run the 'acl|setuser' command".
    Denied(String),
    /// Not known: the server refused `ACL DRYRUN` itself (its error code), or has none (< 7).
    Unknown(String),
}

impl AclAdmin<'_> {
    /// Whether `admin_user` may run `ACL SETUSER <user>`: `ACL DRYRUN` (Redis ≥ 7) as the admin
    /// user, which runs nothing and changes nothing.
    pub async fn may_setuser(&self, user: &str) -> Result<SetuserRight, ManagedError> {
        let mut stream = self.session().await?;
        let admin = self.admin_user.as_bytes();
        let command = encode_command(&[
            b"ACL",
            b"DRYRUN",
            admin,
            b"ACL",
            b"SETUSER",
            user.as_bytes(),
        ]);
        match upstream::authenticate(&mut stream, self.database, Some(self.admin_user), &command)
            .await
        {
            Ok(done) if done.reply.starts_with(b"+OK") => Ok(SetuserRight::Allowed),
            // A bulk string: why not. Redis' own words, without control characters.
            Ok(done) => {
                let text = String::from_utf8_lossy(&done.reply);
                let reason = text
                    .split_once("\r\n")
                    .map_or(&*text, |(_, rest)| rest)
                    .trim_end()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect();
                Ok(SetuserRight::Denied(reason))
            }
            Err(AuthError::Rejected { code, .. }) => Ok(SetuserRight::Unknown(format!(
                "ACL DRYRUN refused with {code} (it needs Redis 7 and +acl|dryrun)"
            ))),
            Err(e) => Err(ManagedError::Admin {
                database: self.database.name.clone(),
                message: e.to_string(),
            }),
        }
    }
}

impl Apply for AclAdmin<'_> {
    async fn apply(
        &self,
        user: &str,
        new: &Secret,
        _keep: Option<&Secret>,
        retire: Option<&Secret>,
    ) -> Result<(), ManagedError> {
        let mut stream = self.session().await?;
        self.setuser(&mut stream, user, new, retire).await
    }
}
