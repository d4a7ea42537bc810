//! Roles → which databases and which database users a bastion user may reach.
//!
//! Pure decisions, no I/O: the session asks before it opens any upstream connection.

use crate::catalog::Catalog;

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
}

/// Decide the db-user for `user` on `db`. `requested` is what the client named in AUTH/HELLO.
///
/// With no request: the database's `default_db_user` if the roles allow it, else the single
/// concrete (wildcard-free) db-user the roles allow.
pub fn authorize(
    catalog: &Catalog,
    user: &str,
    db: &str,
    requested: Option<&str>,
) -> Result<String, Denied> {
    let database = catalog
        .database(db)
        .ok_or_else(|| Denied::UnknownDatabase(db.to_string()))?;
    let Some(user_cfg) = catalog.user(user) else {
        return Err(Denied::DatabaseNotAllowed {
            user: user.to_string(),
            db: db.to_string(),
        });
    };
    let roles: Vec<_> = catalog
        .roles_of(user_cfg)
        .filter(|r| r.db_names.iter().any(|p| glob_match(p, db)))
        .collect();
    if roles.is_empty() {
        return Err(Denied::DatabaseNotAllowed {
            user: user.to_string(),
            db: db.to_string(),
        });
    }
    let allowed = |candidate: &str| {
        roles
            .iter()
            .any(|r| r.db_users.iter().any(|p| glob_match(p, candidate)))
    };
    match requested {
        Some(db_user) if allowed(db_user) => Ok(db_user.to_string()),
        Some(db_user) => Err(Denied::DbUserNotAllowed {
            user: user.to_string(),
            db: db.to_string(),
            db_user: db_user.to_string(),
        }),
        None => {
            if let Some(default) = &database.default_db_user {
                if allowed(default) {
                    return Ok(default.clone());
                }
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
                [only] => Ok(only.to_string()),
                _ => Err(Denied::NoDbUser {
                    user: user.to_string(),
                    db: db.to_string(),
                }),
            }
        }
    }
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
    use crate::config::{AuthConfig, DatabaseConfig, RoleConfig, UserConfig};

    fn catalog(default_db_user: Option<&str>, db_users: &[&str]) -> Catalog {
        let db = DatabaseConfig {
            name: "cache".into(),
            address: "127.0.0.1:6379".parse().unwrap(),
            tls: None,
            auth: AuthConfig::None,
            default_db_user: default_db_user.map(String::from),
            assume_role_arn: None,
            external_id: None,
            session_name: None,
        };
        let role = RoleConfig {
            name: "r".into(),
            db_users: db_users.iter().map(|s| s.to_string()).collect(),
            db_names: vec!["cach*".into()],
        };
        let user = UserConfig {
            name: "alice".into(),
            roles: vec!["r".into()],
            unix_user: None,
        };
        Catalog::build(&[db], &[role], &[user]).unwrap()
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

    #[test]
    fn explicit_db_user_is_checked() {
        let c = catalog(None, &["app-*"]);
        assert_eq!(
            authorize(&c, "alice", "cache", Some("app-1")).unwrap(),
            "app-1"
        );
        assert!(matches!(
            authorize(&c, "alice", "cache", Some("admin")),
            Err(Denied::DbUserNotAllowed { .. })
        ));
        assert!(matches!(
            authorize(&c, "alice", "other", Some("app-1")),
            Err(Denied::UnknownDatabase(_))
        ));
        assert!(matches!(
            authorize(&c, "bob", "cache", Some("app-1")),
            Err(Denied::DatabaseNotAllowed { .. })
        ));
    }

    #[test]
    fn default_db_user_rules() {
        let c = catalog(None, &["reader"]);
        assert_eq!(authorize(&c, "alice", "cache", None).unwrap(), "reader");
        let c = catalog(None, &["reader", "writer"]);
        assert!(matches!(
            authorize(&c, "alice", "cache", None),
            Err(Denied::NoDbUser { .. })
        ));
        let c = catalog(Some("writer"), &["*"]);
        assert_eq!(authorize(&c, "alice", "cache", None).unwrap(), "writer");
        let c = catalog(Some("admin"), &["reader"]);
        assert_eq!(authorize(&c, "alice", "cache", None).unwrap(), "reader");
    }
}
