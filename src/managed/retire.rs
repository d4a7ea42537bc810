//! Secrets of users that stopped being managed (tag removed or false, dropped from
//! `managed_users`): kept for `secret_grace_period`, then deleted.
//!
//! The secrets looked at are the bastion's own only: listed by their tags
//! ([`super::secrets::SecretStore::list_owned`]: `bastion.dev/managed-by=bastion`, this
//! database, a db-user) and with exactly the name the bastion gives that user's secret. When
//! such a user is seen unmanaged, the moment and the secret's ARN go into the store (a
//! `ManagedUserRecord` with `unmanaged_since`), so the grace period survives a restart; once it
//! is over the secret is deleted by that ARN — a secret made again under the same name is
//! another one and starts a grace period of its own. A user managed again before then keeps
//! its secret (the record goes).
//!
//! Must never delete a secret it did not tag, nor one a managed user still uses.

use std::time::Duration;

use super::secrets::Owned;
use crate::store::records::ManagedUserRecord;

/// What to do about one user's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The user stopped being managed now: record it, with its secret's ARN.
    Mark { user: String, arn: String },
    /// Managed again before its grace period ended: forget the record, keep the secret.
    Unmark { user: String },
    /// The grace period is over: delete the secret `arn`, then forget the record.
    Delete {
        user: String,
        arn: String,
        name: String,
        since: i64,
    },
    /// The recorded secret is gone (deleted by someone else): forget the record.
    Forget { user: String },
}

/// The steps for one database: `owned` its secrets as listed, `name_of` the name the bastion
/// gives a user's secret, `managed` whether a user is managed now (by any database of this
/// bastion that shares the secret), `records` the store's records of this database.
pub fn plan(
    owned: &[Owned],
    name_of: impl Fn(&str) -> String,
    managed: impl Fn(&str) -> bool,
    records: &[ManagedUserRecord],
    now: i64,
    grace: Duration,
) -> Vec<Step> {
    let mut users: Vec<&str> = records
        .iter()
        .map(|r| r.db_user.as_str())
        .chain(owned.iter().map(|o| o.user.as_str()))
        .collect();
    users.sort_unstable();
    users.dedup();
    let mut steps = Vec::new();
    for user in users {
        let record = records
            .iter()
            .find(|r| r.db_user.as_str() == user)
            .and_then(|r| Some((r.secret_arn.as_str(), r.unmanaged_since?)));
        let secret = owned
            .iter()
            .find(|o| o.user == user && o.name == name_of(user));
        let user = user.to_string();
        if managed(&user) {
            if record.is_some() {
                steps.push(Step::Unmark { user });
            }
            continue;
        }
        match (record, secret) {
            (None, None) => {}
            (None, Some(o)) => steps.push(Step::Mark {
                user,
                arn: o.arn.clone(),
            }),
            (Some(_), None) => steps.push(Step::Forget { user }),
            // Another secret under the name: its own grace period from now.
            (Some((arn, _)), Some(o)) if o.arn != arn => steps.push(Step::Mark {
                user,
                arn: o.arn.clone(),
            }),
            (Some((_, since)), Some(o)) => {
                if since.saturating_add(grace.as_secs() as i64) <= now {
                    steps.push(Step::Delete {
                        user,
                        arn: o.arn.clone(),
                        name: o.name.clone(),
                        since,
                    });
                }
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(100);

    fn owned(user: &str, arn: &str) -> Owned {
        Owned {
            arn: arn.into(),
            name: name_of(user),
            user: user.into(),
        }
    }

    fn name_of(user: &str) -> String {
        format!("bastion/redis/db/user/{user}")
    }

    fn record(user: &str, arn: &str, since: Option<i64>) -> ManagedUserRecord {
        ManagedUserRecord {
            database: "db".try_into().unwrap(),
            db_user: user.try_into().unwrap(),
            secret_arn: arn.try_into().unwrap(),
            last_rotation: None,
            generation: 0,
            unmanaged_since: since,
        }
    }

    #[test]
    fn unmanaged_is_marked_then_deleted_after_the_grace_only() {
        let secrets = [owned("app", "arn:1"), owned("gone", "arn:2")];
        let managed = |u: &str| u == "app";
        assert_eq!(
            plan(&secrets, name_of, managed, &[], 1000, GRACE),
            [Step::Mark {
                user: "gone".into(),
                arn: "arn:2".into()
            }]
        );
        let records = [record("gone", "arn:2", Some(1000))];
        assert_eq!(plan(&secrets, name_of, managed, &records, 1099, GRACE), []);
        assert_eq!(
            plan(&secrets, name_of, managed, &records, 1100, GRACE),
            [Step::Delete {
                user: "gone".into(),
                arn: "arn:2".into(),
                name: name_of("gone"),
                since: 1000
            }]
        );
    }

    #[test]
    fn managed_again_keeps_the_secret_and_forgets_the_record() {
        let secrets = [owned("app", "arn:1")];
        let records = [record("app", "arn:1", Some(0))];
        assert_eq!(
            plan(&secrets, name_of, |_| true, &records, 10_000, GRACE),
            [Step::Unmark { user: "app".into() }]
        );
    }

    #[test]
    fn another_secret_under_the_name_or_another_name_is_not_deleted() {
        // Made again under the same name since it was marked: a grace period of its own.
        let records = [record("app", "arn:old", Some(0))];
        assert_eq!(
            plan(
                &[owned("app", "arn:new")],
                name_of,
                |_| false,
                &records,
                10_000,
                GRACE
            ),
            [Step::Mark {
                user: "app".into(),
                arn: "arn:new".into()
            }]
        );
        // Gone meanwhile: the record goes.
        assert_eq!(
            plan(&[], name_of, |_| false, &records, 10_000, GRACE),
            [Step::Forget { user: "app".into() }]
        );
        // Tagged for this user but not the name the bastion gives it: never touched.
        let odd = Owned {
            arn: "arn:x".into(),
            name: "bastion/redis/other/user/app".into(),
            user: "app".into(),
        };
        assert_eq!(plan(&[odd], name_of, |_| false, &[], 10_000, GRACE), []);
    }
}
