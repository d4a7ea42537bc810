//! Roles → which databases and which database users a bastion user may reach.
//!
//! Pure decisions, no I/O: the session asks before it opens any upstream connection.
//!
//! A session's db-user, in order: the one the client names in AUTH/HELLO (if a role allows
//! it); else the database's `default_db_user` (if a role allows it); else the one concrete
//! (wildcard-free) db-user the roles allow. A session may also have **no db-user**: on a
//! `legacy_auth` database always (the upstream has no users; a client's db-user is ignored like
//! its password), and on a password or `none` database when the client names none, there is no
//! `default_db_user` and no role that reaches the database lists any db-user. Such a session
//! authenticates as the upstream's default user: one-argument `AUTH <password>` (see
//! [`crate::proxy::handshake::auth_command`]). IAM tokens are signed for one user, so an IAM
//! session always has one.

use std::sync::Arc;

use crate::catalog::{Catalog, Database};
use crate::config::RoleConfig;
use crate::proxy::inspect::policy::SessionPolicy;

/// Why a user was refused. The `Display` text goes back to the client as `-ERR bastion: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("unknown database '{0}'")]
    UnknownDatabase(String),
    #[error("user '{user}' is not allowed to reach database '{db}'")]
    DatabaseNotAllowed { user: String, db: String },
    #[error("user '{user}' is not allowed to act as db-user '{db_user}' on database '{db}'")]
    DbUserNotAllowed {
        user: String,
        db: String,
        db_user: String,
    },
    #[error(
        "user '{user}' sent no db-user for database '{db}' and none is implied: \
         send AUTH <db-user> <anything>"
    )]
    NoDbUser { user: String, db: String },
    /// The user's roles restrict commands, which only `relay = "inspect"` can enforce: fail
    /// closed rather than relay commands the policy would refuse.
    #[error(
        "user '{user}' has a command policy, which database '{db}' cannot enforce (it needs \
         relay = \"inspect\"; ask an admin)"
    )]
    PolicyNeedsInspect { user: String, db: String },
}

/// What [`authorize`] granted: the database as this catalog defines it, and the db-user.
#[derive(Debug, Clone)]
pub struct Authorized<'c> {
    pub database: &'c Arc<Database>,
    /// `None`: a session with no db-user (the upstream's default user).
    pub db_user: Option<String>,
}

/// Decide whether `user` may reach `db`, and as which db-user (the rules are in the module
/// docs). `requested` is what the client named in AUTH/HELLO.
pub fn authorize<'c>(
    catalog: &'c Catalog,
    user: &str,
    db: &str,
    requested: Option<&str>,
) -> Result<Authorized<'c>, Denied> {
    let database = catalog
        .database(db)
        .ok_or_else(|| Denied::UnknownDatabase(db.to_string()))?;
    let db_user = db_user(catalog, database, user, requested)?;
    Ok(Authorized { database, db_user })
}

/// Whether some opening could still be granted `db` for `user` — asked once the client is
/// identified, before its opening frame (which may name a db-user) has arrived, so the session
/// can dial the upstream early. `Err` when no db-user can come of it: the database is unknown,
/// no role reaches it, or it needs a db-user (IAM) and the roles list none. The opening is
/// still decided by [`authorize`]; this only keeps the bastion from dialing for nobody.
pub fn may_connect<'c>(
    catalog: &'c Catalog,
    user: &str,
    db: &str,
) -> Result<&'c Arc<Database>, Denied> {
    let database = catalog
        .database(db)
        .ok_or_else(|| Denied::UnknownDatabase(db.to_string()))?;
    let roles = roles_reaching(catalog, database, user)?;
    let some_db_user = database.legacy_auth
        || !database.auth.needs_db_user()
        || roles.iter().any(|r| !r.db_users.is_empty());
    if !some_db_user {
        return Err(Denied::NoDbUser {
            user: user.to_string(),
            db: db.to_string(),
        });
    }
    Ok(database)
}

/// The roles of `user` that reach `database` (none: refused).
fn roles_reaching<'c>(
    catalog: &'c Catalog,
    database: &Database,
    user: &str,
) -> Result<Vec<&'c RoleConfig>, Denied> {
    let db = database.name.as_str();
    let refused = || Denied::DatabaseNotAllowed {
        user: user.to_string(),
        db: db.to_string(),
    };
    let user_cfg = catalog.user(user).ok_or_else(refused)?;
    let roles: Vec<_> = catalog
        .roles_of(user_cfg)
        .filter(|r| r.db_names.iter().any(|p| glob_match(p, db)))
        .collect();
    if roles.is_empty() {
        return Err(refused());
    }
    Ok(roles)
}

/// The db-user decision for `user` on `database`; `Ok(None)` is a session with no db-user.
fn db_user(
    catalog: &Catalog,
    database: &Database,
    user: &str,
    requested: Option<&str>,
) -> Result<Option<String>, Denied> {
    let db = database.name.as_str();
    let roles = roles_reaching(catalog, database, user)?;
    if database.legacy_auth {
        return Ok(None);
    }
    let allowed = |candidate: &str| {
        roles
            .iter()
            .any(|r| r.db_users.iter().any(|p| glob_match(p, candidate)))
    };
    match requested {
        Some(db_user) if allowed(db_user) => Ok(Some(db_user.to_string())),
        Some(db_user) => Err(Denied::DbUserNotAllowed {
            user: user.to_string(),
            db: db.to_string(),
            db_user: db_user.to_string(),
        }),
        None => {
            if let Some(default) = &database.default_db_user {
                if allowed(default) {
                    return Ok(Some(default.clone()));
                }
            }
            let lists_none = roles.iter().all(|r| r.db_users.is_empty());
            if lists_none && !database.auth.needs_db_user() {
                return Ok(None);
            }
            let mut concrete: Vec<&str> = roles
                .iter()
                .flat_map(|r| r.db_users.iter())
                .filter(|p| !p.contains('*'))
                .map(String::as_str)
                .collect();
            concrete.sort_unstable();
            concrete.dedup();
            match concrete.as_slice() {
                [only] => Ok(Some(only.to_string())),
                _ => Err(Denied::NoDbUser {
                    user: user.to_string(),
                    db: db.to_string(),
                }),
            }
        }
    }
}

/// The command policy of a session `authorize` granted: the union of the policies of `user`'s
/// roles that reach `database` and allow `db_user` (every reaching role for a session without
/// a db-user); unrestricted when one of those roles sets no policy.
pub fn command_policy(
    catalog: &Catalog,
    user: &str,
    database: &Database,
    db_user: Option<&str>,
) -> SessionPolicy {
    let Ok(roles) = roles_reaching(catalog, database, user) else {
        // Not granted at all: nothing is allowed.
        return SessionPolicy::of_roles([]);
    };
    SessionPolicy::of_roles(
        roles
            .into_iter()
            .filter(|r| db_user.is_none_or(|u| r.db_users.iter().any(|p| glob_match(p, u))))
            .map(|r| catalog.policy_of(&r.name).cloned()),
    )
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let (p, v) = (pattern.as_bytes(), value.as_bytes());
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The db-user part of the grant (the database is the catalog's, see `grant_names_the_database`).
    fn db_user_of(
        catalog: &Catalog,
        user: &str,
        db: &str,
        requested: Option<&str>,
    ) -> Result<Option<String>, Denied> {
        authorize(catalog, user, db, requested).map(|a| a.db_user)
    }
    use crate::config::{AuthConfig, DatabaseConfig, RoleConfig, UserConfig};

    fn catalog(default_db_user: Option<&str>, db_users: &[&str]) -> Catalog {
        catalog_with(AuthConfig::None, false, default_db_user, db_users)
    }

    fn catalog_with(
        auth: AuthConfig,
        legacy_auth: bool,
        default_db_user: Option<&str>,
        db_users: &[&str],
    ) -> Catalog {
        let db = DatabaseConfig {
            name: "cache".into(),
            address: "127.0.0.1:6379".parse().unwrap(),
            tls: None,
            auth,
            default_db_user: default_db_user.map(String::from),
            assume_role_arn: None,
            external_id: None,
            session_name: None,
            allow_plaintext_auth: false,
            legacy_auth,
            relay: Default::default(),
            allow_addresses: Vec::new(),
            managed_users: Vec::new(),
        };
        let role = RoleConfig {
            name: "r".into(),
            db_users: db_users.iter().map(|s| s.to_string()).collect(),
            db_names: vec!["cach*".into()],
            ..RoleConfig::default()
        };
        let user = UserConfig {
            name: "alice".into(),
            roles: vec!["r".into()],
            unix_user: None,
        };
        Catalog::build(&[db], &[role], &[user], &Default::default(), None).unwrap()
    }

    /// A session's command policy is the union of the roles that grant it: a read-only role
    /// for `app-*`, an unrestricted one for `admin`, another database's role not counted.
    #[test]
    fn command_policy_comes_from_the_roles_that_grant_the_session() {
        let base = catalog(None, &[]);
        let db = base.database("cache").unwrap();
        let role =
            |name: &str, db_users: &[&str], db_names: &[&str], commands: Option<&str>| RoleConfig {
                name: name.into(),
                db_users: db_users.iter().map(|s| s.to_string()).collect(),
                db_names: db_names.iter().map(|s| s.to_string()).collect(),
                commands: commands.map(String::from),
                keys: None,
            };
        let roles = [
            role("readers", &["app-*"], &["cache"], Some("+@read")),
            role("admins", &["admin"], &["cache"], None),
            role("elsewhere", &["app-*"], &["other"], Some("+@all")),
        ];
        let user = UserConfig {
            name: "alice".into(),
            roles: roles.iter().map(|r| r.name.clone()).collect(),
            unix_user: None,
        };
        let declared: Vec<DatabaseConfig> = Vec::new();
        let c = Catalog::build(&declared, &roles, &[user], &Default::default(), None).unwrap();
        let app = command_policy(&c, "alice", db, Some("app-1"));
        assert!(app.check(b"GET", &[b"k"]).is_ok());
        assert!(app.check(b"SET", &[&b"k"[..], b"v"]).is_err());
        assert!(command_policy(&c, "alice", db, Some("admin")).is_unrestricted());
        // No db-user: every reaching role counts, and the unrestricted one wins.
        assert!(command_policy(&c, "alice", db, None).is_unrestricted());
        // A user no role lets in gets nothing.
        assert!(command_policy(&c, "bob", db, None)
            .check(b"PING", &[] as &[&[u8]])
            .is_err());

        // A rule that no longer compiles (declared checks bypassed) fails closed.
        let broken = [role(
            "broken",
            &["app-*"],
            &["cache"],
            Some("+nosuchcommand"),
        )];
        let user = UserConfig {
            name: "alice".into(),
            roles: vec!["broken".into()],
            unix_user: None,
        };
        let c = Catalog::build(&declared, &broken, &[user], &Default::default(), None).unwrap();
        let p = command_policy(&c, "alice", db, Some("app-1"));
        assert!(!p.is_unrestricted());
        assert!(p.check(b"PING", &[] as &[&[u8]]).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("app-*", "app-1"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("app-*", "ap"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("*-ro", "x-ro"));
    }

    /// The grant carries the catalog's own definition of the database: the session connects
    /// with exactly what was authorized, without a second lookup.
    #[test]
    fn grant_names_the_database() {
        let c = catalog(None, &["app-*"]);
        let grant = authorize(&c, "alice", "cache", Some("app-1")).unwrap();
        assert!(Arc::ptr_eq(grant.database, c.database("cache").unwrap()));
        assert_eq!(grant.db_user.as_deref(), Some("app-1"));
    }

    /// The early dial's question: may some opening be granted? Never for an unknown database,
    /// a user no role lets in, or an IAM database whose roles list no db-user.
    #[test]
    fn may_connect_only_where_some_db_user_can_come_of_it() {
        let iam = AuthConfig::Iam {
            service: crate::config::IamService::Elasticache,
            region: None,
            target: "rg".into(),
            serverless: false,
        };
        let c = catalog(None, &["app-*"]);
        assert!(Arc::ptr_eq(
            may_connect(&c, "alice", "cache").unwrap(),
            c.database("cache").unwrap()
        ));
        assert!(matches!(
            may_connect(&c, "alice", "other"),
            Err(Denied::UnknownDatabase(_))
        ));
        assert!(matches!(
            may_connect(&c, "bob", "cache"),
            Err(Denied::DatabaseNotAllowed { .. })
        ));
        // No db-user listed: fine where the upstream's default user is (auth none/password)...
        assert!(may_connect(&catalog(None, &[]), "alice", "cache").is_ok());
        // ...never for IAM, whose tokens are per db-user; a listed one (even a pattern) may be.
        let c = catalog_with(iam.clone(), false, None, &[]);
        assert!(matches!(
            may_connect(&c, "alice", "cache"),
            Err(Denied::NoDbUser { .. })
        ));
        let c = catalog_with(iam, false, None, &["app-*"]);
        assert!(may_connect(&c, "alice", "cache").is_ok());
    }

    #[test]
    fn explicit_db_user_is_checked() {
        let c = catalog(None, &["app-*"]);
        assert_eq!(
            db_user_of(&c, "alice", "cache", Some("app-1")).unwrap(),
            Some("app-1".into())
        );
        assert!(matches!(
            db_user_of(&c, "alice", "cache", Some("admin")),
            Err(Denied::DbUserNotAllowed { .. })
        ));
        assert!(matches!(
            db_user_of(&c, "alice", "other", Some("app-1")),
            Err(Denied::UnknownDatabase(_))
        ));
        assert!(matches!(
            db_user_of(&c, "bob", "cache", Some("app-1")),
            Err(Denied::DatabaseNotAllowed { .. })
        ));
    }

    #[test]
    fn default_db_user_rules() {
        let user = |c: &Catalog| db_user_of(c, "alice", "cache", None).unwrap().unwrap();
        let c = catalog(None, &["reader"]);
        assert_eq!(user(&c), "reader");
        let c = catalog(None, &["reader", "writer"]);
        assert!(matches!(
            db_user_of(&c, "alice", "cache", None),
            Err(Denied::NoDbUser { .. })
        ));
        let c = catalog(Some("writer"), &["*"]);
        assert_eq!(user(&c), "writer");
        let c = catalog(Some("admin"), &["reader"]);
        assert_eq!(user(&c), "reader");
    }

    #[test]
    fn no_db_user_when_the_roles_list_none_or_the_database_is_legacy() {
        let password =
            AuthConfig::Password(crate::config::PasswordSource::Env("BASTION_PW".into()));
        let iam = AuthConfig::Iam {
            service: crate::config::IamService::Elasticache,
            region: None,
            target: "rg".into(),
            serverless: false,
        };
        // Roles that list no db-user: the upstream's default user (one-argument AUTH)...
        let c = catalog_with(password.clone(), false, None, &[]);
        assert_eq!(db_user_of(&c, "alice", "cache", None).unwrap(), None);
        // ...but a db-user the client names must still be allowed.
        assert!(matches!(
            db_user_of(&c, "alice", "cache", Some("admin")),
            Err(Denied::DbUserNotAllowed { .. })
        ));
        assert_eq!(
            db_user_of(&catalog(None, &[]), "alice", "cache", None).unwrap(),
            None
        );
        // Patterns only is not "none": the client must name one.
        let c = catalog_with(password.clone(), false, None, &["app-*"]);
        assert!(matches!(
            db_user_of(&c, "alice", "cache", None),
            Err(Denied::NoDbUser { .. })
        ));
        // IAM tokens are per user: never without one.
        let c = catalog_with(iam, false, None, &[]);
        assert!(matches!(
            db_user_of(&c, "alice", "cache", None),
            Err(Denied::NoDbUser { .. })
        ));
        // legacy_auth: no db-user whatever the client or the roles say; the database must
        // still be reachable.
        let c = catalog_with(password, true, None, &["reader"]);
        assert_eq!(db_user_of(&c, "alice", "cache", Some("x")).unwrap(), None);
        assert_eq!(db_user_of(&c, "alice", "cache", None).unwrap(), None);
        assert!(matches!(
            db_user_of(&c, "bob", "cache", None),
            Err(Denied::DatabaseNotAllowed { .. })
        ));
    }
}
