//! Records, mutations and histories for the store's tests.

use proptest::prelude::*;

use super::codec::{self, Header, LogEntry, FORMAT_VERSION, HEADER_LEN};
use super::records::*;
use super::state::State;

pub fn n(s: &str) -> Name {
    Name::try_from(s).unwrap()
}

pub fn p(s: &str) -> Pattern {
    Pattern::try_from(s).unwrap()
}

pub fn db(name: &str, port: u16, auth: u8) -> DatabaseRecord {
    DatabaseRecord {
        name: n(name),
        host: heapless::String::try_from("redis.internal").unwrap(),
        port,
        tls: (auth != 2).then(|| TlsRecord {
            ca_file: Some(PathText::try_from("/etc/ssl/ca.pem").unwrap()),
            server_name: None,
        }),
        auth: match auth % 3 {
            0 => AuthRecord::Iam {
                service: IamServiceRecord::Memorydb,
                region: Some(heapless::String::try_from("us-east-1").unwrap()),
                target: heapless::String::try_from("cluster-1").unwrap(),
                serverless: port % 2 == 0,
            },
            1 => AuthRecord::Password {
                password_file: None,
                password_env: Some(heapless::String::try_from("BASTION_REDIS_PW").unwrap()),
            },
            _ => AuthRecord::None,
        },
        default_db_user: Some(p("app")),
        assume_role: (auth == 0 && port % 3 == 0).then(|| AssumeRoleRecord {
            role_arn: heapless::String::try_from("arn:aws:iam::123456789012:role/cache-connect")
                .unwrap(),
            external_id: Some(heapless::String::try_from("ext-1").unwrap()),
            session_name: None,
        }),
        allow_plaintext_auth: false,
        legacy_auth: auth == 1 && port % 2 == 0,
        relay: if port % 5 == 0 {
            super::records::RelayRecord::Passthrough
        } else {
            super::records::RelayRecord::Guard
        },
        allow_addresses: if port % 7 == 0 {
            heapless::Vec::from_slice(&[("169.254.10.0".parse().unwrap(), 24)]).unwrap()
        } else {
            heapless::Vec::new()
        },
    }
}

pub fn role(name: &str, db_names: &[&str]) -> RoleRecord {
    RoleRecord {
        name: n(name),
        db_users: heapless::Vec::from_slice(&[p("app-*")]).unwrap(),
        db_names: db_names.iter().map(|d| p(d)).collect(),
        commands: None,
        keys: None,
    }
}

pub fn user(name: &str, roles: &[&str], unix: Option<&str>) -> UserRecord {
    UserRecord {
        name: n(name),
        roles: roles.iter().map(|r| n(r)).collect(),
        unix_user: unix.map(|u| heapless::String::try_from(u).unwrap()),
    }
}

pub fn cert(serial: u8, user: &str, not_before: i64) -> CertRecord {
    CertRecord {
        serial: Serial::from_slice(&[0x7f, serial]).unwrap(),
        user: n(user),
        not_before,
        not_after: not_before + 3600,
        revoked_at: None,
    }
}

pub fn ca() -> CaRecord {
    CaRecord {
        common_name: n("bastion-ca"),
        fingerprint_sha256: [0xab; 32],
        not_before: 0,
        not_after: 10 * 365 * 86400,
    }
}

pub fn managed(database: &str, db_user: &str, generation: u64) -> ManagedUserRecord {
    ManagedUserRecord {
        database: n(database),
        db_user: p(db_user),
        secret_arn: heapless::String::try_from(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:bastion/app-AbCdEf",
        )
        .unwrap(),
        last_rotation: (generation > 0).then_some(1_700_000_000 + generation as i64),
        generation,
        unmanaged_since: (generation % 2 == 1).then_some(1_700_000_100),
    }
}

/// One of every kind of mutation, in an order the state accepts.
pub fn one_of_each() -> Vec<Mutation> {
    vec![
        Mutation::PutDatabase(db("cache", 6379, 0)),
        Mutation::PutDatabase(db("pw", 6380, 1)),
        Mutation::PutDatabase(db("plain", 6381, 2)),
        Mutation::PutRole(role("ops", &["*"])),
        Mutation::PutUser(user("alice", &["ops"], Some("alice"))),
        Mutation::IssueCert(cert(1, "alice", 100)),
        Mutation::RevokeCert {
            serial: Serial::from_slice(&[0x7f, 1]).unwrap(),
            at: 200,
        },
        Mutation::SetCa(ca()),
        Mutation::PutManagedUser(managed("cache", "app", 1)),
        Mutation::RemoveManagedUser {
            database: n("cache"),
            db_user: p("app"),
        },
        Mutation::RemoveDatabase(n("plain")),
        Mutation::RemoveUser(n("alice")),
        Mutation::RemoveRole(n("ops")),
    ]
}

const NAMES: [&str; 4] = ["a", "b", "c-1", "d.x"];

fn arb_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&NAMES[..])
}

/// Random mutations over a small name space, so removals and references often hit. Many are
/// refused by the state; [`History::build`] keeps the accepted ones.
pub fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (arb_name(), any::<u16>(), 0u8..3)
            .prop_map(|(a, port, auth)| Mutation::PutDatabase(db(a, port, auth))),
        arb_name().prop_map(|a| Mutation::RemoveDatabase(n(a))),
        (arb_name(), prop::sample::subsequence(&NAMES[..], 0..3))
            .prop_map(|(a, dbs)| Mutation::PutRole(role(a, &dbs))),
        arb_name().prop_map(|a| Mutation::RemoveRole(n(a))),
        (
            arb_name(),
            prop::sample::subsequence(&NAMES[..], 0..3),
            prop::option::of(arb_name())
        )
            .prop_map(|(a, roles, unix)| Mutation::PutUser(user(a, &roles, unix))),
        arb_name().prop_map(|a| Mutation::RemoveUser(n(a))),
        (0u8..6, arb_name(), 0i64..10_000).prop_map(|(s, u, t)| Mutation::IssueCert(cert(s, u, t))),
        (0u8..6, any::<i64>()).prop_map(|(s, at)| Mutation::RevokeCert {
            serial: Serial::from_slice(&[0x7f, s]).unwrap(),
            at
        }),
        Just(Mutation::SetCa(ca())),
        (arb_name(), arb_name(), any::<u64>())
            .prop_map(|(d, u, g)| Mutation::PutManagedUser(managed(d, u, g))),
        (arb_name(), arb_name()).prop_map(|(d, u)| Mutation::RemoveManagedUser {
            database: n(d),
            db_user: p(u)
        }),
    ]
}

/// An acknowledged history as recovery sees it: an optional snapshot, the log bytes, where each
/// log frame starts and ends, and the state after every seq.
pub struct History {
    pub snapshot: Option<Vec<u8>>,
    /// Seq (and index into `states`) the snapshot holds; the log's first record is one after.
    pub base: usize,
    pub log: Vec<u8>,
    /// `(start, end)` byte range of each log frame.
    pub frames: Vec<(usize, usize)>,
    /// `states[k]` is the state after seq `k`.
    pub states: Vec<State>,
}

impl History {
    /// Apply `mutations` (keeping those the state accepts); when `snapshot_half`, the first
    /// half of the accepted ones goes into a generation-1 snapshot and the rest into the log.
    pub fn build(mutations: &[Mutation], snapshot_half: bool) -> History {
        let mut state = State::default();
        let mut states = vec![state.clone()];
        let mut accepted = Vec::new();
        for m in mutations {
            if state.apply(m).is_ok() {
                accepted.push(m.clone());
                states.push(state.clone());
            }
        }
        let base = if snapshot_half { accepted.len() / 2 } else { 0 };
        let generation = u64::from(snapshot_half);
        let snapshot =
            snapshot_half.then(|| super::snapshot::encode(generation, base as u64, &states[base]));
        let mut log = codec::encode_header(
            codec::LOG_MAGIC,
            Header {
                version: FORMAT_VERSION,
                generation,
                seq: base as u64,
            },
        )
        .to_vec();
        let mut frames = Vec::new();
        for (i, m) in accepted.iter().enumerate().skip(base) {
            let start = log.len();
            log.extend_from_slice(&codec::encode_entry(&LogEntry {
                seq: i as u64 + 1,
                mutation: m.clone(),
            }));
            frames.push((start, log.len()));
        }
        History {
            snapshot,
            base,
            log,
            frames,
            states,
        }
    }

    /// Index of the frame holding byte `at`, if it is past the header.
    pub fn frame_of(&self, at: usize) -> Option<usize> {
        if at < HEADER_LEN {
            return None;
        }
        self.frames.iter().position(|&(s, e)| s <= at && at < e)
    }
}
