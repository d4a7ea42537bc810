//! Who may use the admin socket: root, or a member of the configured admin group, as the kernel
//! reports the caller (SO_PEERCRED) — never anything the caller says about itself.

use crate::identity::peer::PeerCred;

/// The caller of one admin connection, once authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// The account name, or the uid in digits when it has none.
    pub name: String,
}

/// The admin group, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct AdminGroup {
    pub name: String,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("admin.group: no local group named '{0}'")]
pub struct UnknownGroup(pub String);

impl AdminGroup {
    pub fn resolve(name: &str) -> Result<AdminGroup, UnknownGroup> {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(AdminGroup {
                name: name.to_string(),
                gid: g.gid.as_raw(),
            }),
            _ => Err(UnknownGroup(name.to_string())),
        }
    }
}

/// Root, or (with a group) a caller whose primary gid is the group's or whose account is one of
/// its members. `None` means refused.
pub fn authorize(cred: &PeerCred, group: Option<&AdminGroup>) -> Option<Caller> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cred.uid))
        .ok()
        .flatten();
    let name = user
        .as_ref()
        .map(|u| u.name.clone())
        .unwrap_or_else(|| cred.uid.to_string());
    let caller = Caller {
        uid: cred.uid,
        name,
    };
    if cred.uid == 0 {
        return Some(caller);
    }
    let group = group?;
    if cred.gid == group.gid || user.as_ref().is_some_and(|u| u.gid.as_raw() == group.gid) {
        return Some(caller);
    }
    // Supplementary membership, as /etc/group (or NSS) lists it now.
    let members = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(group.gid))
        .ok()
        .flatten()
        .map(|g| g.mem)
        .unwrap_or_default();
    members.contains(&caller.name).then_some(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(uid: u32, gid: u32) -> PeerCred {
        PeerCred {
            uid,
            gid,
            pid: None,
        }
    }

    #[test]
    fn root_always_others_only_through_the_group() {
        assert_eq!(authorize(&cred(0, 0), None).unwrap().name, "root");
        assert!(authorize(&cred(65534, 65534), None).is_none());
        let group = AdminGroup {
            name: "bastion-admin".into(),
            gid: 4242,
        };
        assert!(authorize(&cred(65534, 65534), Some(&group)).is_none());
        assert!(authorize(&cred(65534, 4242), Some(&group)).is_some());
    }
}
