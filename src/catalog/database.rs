//! One upstream database as the data path uses it: validated, with no state its rules forbid.
//!
//! Both declarations produce it — the boot config's `[[databases]]` ([`DatabaseConfig`]) and the
//! store's records (`store/convert.rs`) — through the one constructor
//! [`Database::from_declared`], each giving its fields through [`Declaration`]: a password
//! database carries its [`Password`], read when the database was built (`catalog/password.rs`),
//! and a database with `assume_role_arn` carries its ready [`RoleSpec`], whoever declared it.
//! The rules a new
//! declaration must keep ([`DatabaseConfig::check`]) are checked where it is declared (config
//! validation, the admin socket), not here: a database stored before a newer rule keeps being
//! served as it was (its sessions meet the rule at run time, e.g. no token in clear).

use std::borrow::Cow;

use super::password::{Password, SecretDirs};
use crate::aws::assume_role::{RoleSpec, DEFAULT_SESSION_NAME};
use crate::config::{AuthConfig, DatabaseConfig, IamService, RelayMode, UpstreamAddr, UpstreamTls};

/// A database the catalog serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    pub name: String,
    pub address: UpstreamAddr,
    /// Upstream TLS; `None` is plaintext.
    pub tls: Option<UpstreamTls>,
    pub auth: Auth,
    /// db-user used when the client names none and its roles allow more than one.
    pub default_db_user: Option<String>,
    /// IAM only: the role the tokens are signed as (STS AssumeRole in the database's region).
    pub assume_role: Option<RoleSpec>,
    /// IAM only: an upstream without `tls` is accepted (test rigs).
    pub allow_plaintext_auth: bool,
    /// Password only: one-argument AUTH, no db-users.
    pub legacy_auth: bool,
    pub relay: RelayMode,
    /// Ranges the address policy lets this database point into.
    pub allow_addresses: Vec<ipnet::IpNet>,
}

/// How the bastion authenticates to the upstream on the user's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A SigV4-presigned IAM auth token (ElastiCache / MemoryDB).
    Iam {
        service: IamService,
        /// `None`: the instance's region.
        region: Option<String>,
        target: String,
        serverless: bool,
    },
    /// A static password, read when the database was built (never per session).
    Password(Password),
    /// No AUTH upstream.
    None,
    /// A password the bastion generates, rotates and keeps in Secrets Manager
    /// ([`crate::managed`]).
    Managed(crate::managed::ManagedAuth),
}

impl Auth {
    pub fn mode_name(&self) -> &'static str {
        match self {
            Auth::Iam { .. } => "iam",
            Auth::Password(_) => "password",
            Auth::None => "none",
            Auth::Managed(_) => "managed",
        }
    }

    /// The password this mode read from the machine when the catalog was built: a password
    /// database's, a self-hosted managed database's admin's.
    pub fn password(&self) -> Option<&Password> {
        match self {
            Auth::Password(p) => Some(p),
            Auth::Managed(m) => m.admin_password(),
            Auth::Iam { .. } | Auth::None => None,
        }
    }

    /// [`Auth::password`], to replace with a new reading.
    pub fn password_mut(&mut self) -> Option<&mut Password> {
        match self {
            Auth::Password(p) => Some(p),
            Auth::Managed(m) => m.admin_password_mut(),
            Auth::Iam { .. } | Auth::None => None,
        }
    }

    /// Whether this mode's credential is for one named db-user (an IAM token is signed for
    /// one); see [`AuthConfig::needs_db_user`].
    pub fn needs_db_user(&self) -> bool {
        matches!(self, Auth::Iam { .. })
    }

    /// Whether this mode's secret must not cross the network in clear; see
    /// [`AuthConfig::needs_tls`].
    pub fn needs_tls(&self) -> bool {
        matches!(self, Auth::Iam { .. })
    }
}

/// One database as a declaration states it: the boot config's entry or a store record. Each
/// only hands over its own fields; what they mean together is [`Database::from_declared`]'s.
pub trait Declaration {
    fn name(&self) -> &str;
    fn address(&self) -> UpstreamAddr;
    fn tls(&self) -> Option<UpstreamTls>;
    /// The auth mode in the file's terms (a password with its two optional sources).
    fn auth(&self) -> Cow<'_, AuthConfig>;
    fn default_db_user(&self) -> Option<&str>;
    /// `assume_role_arn`, if any, with its `external_id` and `session_name`.
    fn assume_role(&self) -> Option<DeclaredRole<'_>>;
    fn allow_plaintext_auth(&self) -> bool;
    fn legacy_auth(&self) -> bool;
    fn relay(&self) -> RelayMode;
    fn allow_addresses(&self) -> Vec<ipnet::IpNet>;
    /// `managed_users`: the users a self-hosted managed database's passwords are owned for.
    fn managed_users(&self) -> Cow<'_, [String]>;
}

/// A declaration's `assume_role_arn` and the settings that go with it, as declared.
#[derive(Debug, Clone, Copy)]
pub struct DeclaredRole<'a> {
    pub arn: &'a str,
    pub external_id: Option<&'a str>,
    pub session_name: Option<&'a str>,
}

impl Declaration for DatabaseConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> UpstreamAddr {
        self.address.clone()
    }
    fn tls(&self) -> Option<UpstreamTls> {
        self.tls.clone()
    }
    fn auth(&self) -> Cow<'_, AuthConfig> {
        Cow::Borrowed(&self.auth)
    }
    fn default_db_user(&self) -> Option<&str> {
        self.default_db_user.as_deref()
    }
    fn assume_role(&self) -> Option<DeclaredRole<'_>> {
        self.assume_role_arn.as_deref().map(|arn| DeclaredRole {
            arn,
            external_id: self.external_id.as_deref(),
            session_name: self.session_name.as_deref(),
        })
    }
    fn allow_plaintext_auth(&self) -> bool {
        self.allow_plaintext_auth
    }
    fn legacy_auth(&self) -> bool {
        self.legacy_auth
    }
    fn relay(&self) -> RelayMode {
        self.relay
    }
    fn allow_addresses(&self) -> Vec<ipnet::IpNet> {
        self.allow_addresses.clone()
    }
    fn managed_users(&self) -> Cow<'_, [String]> {
        Cow::Borrowed(&self.managed_users)
    }
}

impl Database {
    /// Whether sessions authenticate upstream (IAM or password; not `none`).
    pub fn authenticates(&self) -> bool {
        !matches!(self.auth, Auth::None)
    }
    /// The typed form of `declared`, the one way to a `Database`. A password is read now under
    /// `dirs`' rules, unless `kept` (this database as the catalog in force holds it) has one from
    /// the same source that was read successfully: then that reading is kept, so only a
    /// declaration or a reload reads.
    pub fn from_declared(
        declared: &impl Declaration,
        dirs: &SecretDirs,
        kept: Option<&Database>,
    ) -> Database {
        let auth = match &*declared.auth() {
            AuthConfig::Iam {
                service,
                region,
                target,
                serverless,
            } => Auth::Iam {
                service: *service,
                region: region.clone(),
                target: target.clone(),
                serverless: *serverless,
            },
            AuthConfig::Password(source) => {
                let kept = kept.and_then(|k| match &k.auth {
                    Auth::Password(p) => Some(p),
                    _ => None,
                });
                Auth::Password(Password::keep_or_read(source.key(), source, dirs, kept))
            }
            AuthConfig::None => Auth::None,
            AuthConfig::Managed(table) => {
                let kept = kept.and_then(|k| match &k.auth {
                    Auth::Managed(m) => Some(m),
                    _ => None,
                });
                Auth::Managed(crate::managed::ManagedAuth::from_declared(
                    table,
                    &declared.managed_users(),
                    dirs,
                    kept,
                ))
            }
        };
        let assume_role = declared.assume_role().map(|role| RoleSpec {
            arn: role.arn.to_string(),
            external_id: role.external_id.map(str::to_string),
            session_name: role
                .session_name
                .unwrap_or(DEFAULT_SESSION_NAME)
                .to_string(),
            region: match &auth {
                Auth::Iam { region, .. } => region.clone(),
                _ => None,
            },
        });
        Database {
            name: declared.name().to_string(),
            address: declared.address(),
            tls: declared.tls(),
            auth,
            default_db_user: declared.default_db_user().map(str::to_string),
            assume_role,
            allow_plaintext_auth: declared.allow_plaintext_auth(),
            legacy_auth: declared.legacy_auth(),
            relay: declared.relay(),
            allow_addresses: declared.allow_addresses(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PasswordSource;
    use crate::files::Existing;

    fn declared(auth: AuthConfig) -> DatabaseConfig {
        DatabaseConfig {
            tls: Some(UpstreamTls::default()),
            ..DatabaseConfig::for_test("cache", "10.0.0.1:6379", auth)
        }
    }

    #[test]
    fn a_password_is_read_once_and_kept_until_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = SecretDirs::new(tmp.path().to_path_buf(), None);
        let path = tmp.path().join("pw");
        let write = |pw: &str| {
            crate::files::write_durably(&path, pw.as_bytes(), 0o600, Existing::Replace).unwrap()
        };
        let password = |db: &Database| match &db.auth {
            Auth::Password(p) => p
                .value()
                .map(|s| s.expose().to_string())
                .map_err(|e| e.clone()),
            other => panic!("{other:?}"),
        };
        write("one");
        let d = declared(AuthConfig::Password(PasswordSource::File(path.clone())));
        let first = Database::from_declared(&d, &dirs, None);
        assert_eq!(password(&first).unwrap(), "one");
        write("two");
        let kept = Database::from_declared(&d, &dirs, Some(&first));
        assert_eq!(password(&kept).unwrap(), "one");
        assert_eq!(kept, first);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            password(&Database::from_declared(&d, &dirs, Some(&first))).unwrap(),
            "one"
        );
        // Read again (a reload): the file is gone, and the database says so, naming the key.
        let gone = Database::from_declared(&d, &dirs, None);
        let e = password(&gone).unwrap_err();
        assert_eq!(e.field, "auth.password_file");
        // A failed reading is not kept: the next build reads again.
        write("three");
        assert_eq!(
            password(&Database::from_declared(&d, &dirs, Some(&gone))).unwrap(),
            "three"
        );
    }

    #[test]
    fn a_managed_admin_password_is_a_password_file_under_the_same_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = tmp.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        let dirs = SecretDirs::new(secrets.clone(), None);
        let inside = secrets.join("adm.pw");
        crate::files::write_durably(&inside, b"adm-pw\n", 0o600, Existing::Refuse).unwrap();
        let outside = tmp.path().join("ca.key");
        crate::files::write_durably(&outside, b"CA-KEY", 0o600, Existing::Refuse).unwrap();
        let managed = |path: &std::path::Path| DatabaseConfig {
            managed_users: vec!["app".into()],
            ..declared(AuthConfig::Managed(crate::config::ManagedAuthConfig {
                engine: Some(crate::config::SelfHostedEngine::Redis),
                admin_user: Some("adm".into()),
                admin_password_file: Some(path.to_path_buf()),
                ..Default::default()
            }))
        };
        let admin = |db: &Database| db.auth.password().expect("admin password").clone();
        let db = Database::from_declared(&managed(&inside), &dirs, None);
        assert_eq!(admin(&db).value().unwrap().expose(), "adm-pw");
        for path in [outside.clone(), "/proc/self/environ".into()] {
            let refused = Database::from_declared(&managed(&path), &dirs, Some(&db));
            let e = admin(&refused).value().unwrap_err().clone();
            assert_eq!(e.field, "auth.admin_password_file");
            assert!(e.message.contains("directly in"), "{e}");
            assert!(!e.message.contains("CA-KEY"), "{e}");
        }
        // Kept across builds like any password; a reload reads it again.
        crate::files::write_durably(&inside, b"new", 0o600, Existing::Replace).unwrap();
        let kept = Database::from_declared(&managed(&inside), &dirs, Some(&db));
        assert_eq!(admin(&kept).value().unwrap().expose(), "adm-pw");
        let mut reread = kept.clone();
        let p = reread.auth.password_mut().unwrap();
        *p = p.reread(&dirs);
        assert_eq!(admin(&reread).value().unwrap().expose(), "new");
    }

    #[test]
    fn an_assumed_role_is_ready_with_the_databases_region() {
        let mut d = declared(AuthConfig::Iam {
            service: IamService::Elasticache,
            region: Some("eu-west-1".into()),
            target: "rg".into(),
            serverless: false,
        });
        d.assume_role_arn = Some("arn:aws:iam::111122223333:role/r".into());
        let dirs = SecretDirs::new("/etc/bastion/secrets".into(), None);
        let db = Database::from_declared(&d, &dirs, None);
        let role = db.assume_role.unwrap();
        assert_eq!(role.region.as_deref(), Some("eu-west-1"));
        assert_eq!(role.session_name, DEFAULT_SESSION_NAME);
        d.external_id = Some("ext-1".into());
        let role = Database::from_declared(&d, &dirs, None)
            .assume_role
            .unwrap();
        assert_eq!(role.external_id.as_deref(), Some("ext-1"));
    }
}
