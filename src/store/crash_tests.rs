//! The store on a real file system: acknowledgement, permissions, the writer lock, recovery of
//! cut and damaged logs through `Store::open`, and a crash at each step of compaction.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::codec::HEADER_LEN;
use super::error::{RecordError, RecoveryError, StoreError};
use super::records::*;
use super::state::State;
use super::test_support::*;
use super::{CompactStep, Mutation, Store, LOG_FILE, SNAPSHOT_FILE};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A temp dir the store accepts (0700; tempfile's default depends on the umask).
fn private_tmp() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    tmp
}

fn fill(store: &mut Store, muts: &[Mutation]) {
    for m in muts {
        store.apply(m.clone()).unwrap();
    }
}

#[test]
fn writes_survive_reopen_with_private_files_and_one_writer() {
    let tmp = private_tmp();
    let dir = tmp.path().join("store");
    let mut s = Store::open(&dir).unwrap();
    assert!(s.recovery_report().log_recreated);
    let muts = one_of_each();
    for (i, m) in muts.iter().enumerate() {
        assert_eq!(s.apply(m.clone()).unwrap().0, i as u64 + 1);
    }
    let state = s.state().clone();

    assert_eq!(mode(&dir), 0o700);
    for f in [LOG_FILE, super::LOCK_FILE] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let e = Store::open(&dir).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("store.lock"), "{e}");

    s.compact().unwrap();
    assert_eq!(mode(&dir.join(SNAPSHOT_FILE)), 0o600);
    drop(s);
    let s = Store::open(&dir).unwrap();
    assert_eq!(s.state(), &state);
    assert_eq!(s.last_seq().0, muts.len() as u64);
    assert_eq!(s.generation(), 1);
}

#[test]
fn a_group_readable_directory_is_refused() {
    let tmp = private_tmp();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let e = Store::open(tmp.path()).unwrap_err();
    assert!(
        matches!(e, StoreError::InsecureDir { mode: 0o750, .. }),
        "{e}"
    );
}

#[test]
fn a_refused_mutation_writes_nothing() {
    let tmp = private_tmp();
    let mut s = Store::open(tmp.path()).unwrap();
    s.apply(Mutation::PutRole(role("ops", &[]))).unwrap();
    let before = std::fs::read(tmp.path().join(LOG_FILE)).unwrap();
    let e = s
        .apply(Mutation::PutUser(user("alice", &["nope"], None)))
        .unwrap_err();
    assert!(e.to_string().contains("users.alice.roles") && e.to_string().contains("nope"));
    assert_eq!(std::fs::read(tmp.path().join(LOG_FILE)).unwrap(), before);
    s.apply(Mutation::PutUser(user("alice", &["ops"], Some("alice"))))
        .unwrap();
    let e = s.apply(Mutation::RemoveRole(n("ops"))).unwrap_err();
    assert!(
        matches!(e, StoreError::Record(RecordError::RoleInUse { .. })),
        "{e}"
    );
    let e = s
        .apply(Mutation::PutUser(user("bob", &[], Some("alice"))))
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Record(RecordError::DuplicateUnixUser { .. })),
        "{e}"
    );
    let e = s
        .apply(Mutation::IssueCert(cert(1, "carol", 0)))
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Record(RecordError::UnknownUser { .. })),
        "{e}"
    );
    assert_eq!(s.last_seq().0, 2);
    drop(s);
    assert_eq!(Store::open(tmp.path()).unwrap().last_seq().0, 2);
}

#[test]
fn store_wide_bounds_are_named() {
    let mut st = State::default();
    for i in 0..MAX_ROLES {
        st.apply(&Mutation::PutRole(role(&format!("r{i}"), &[])))
            .unwrap();
    }
    // Replacing one is fine at the bound; a new one is not.
    st.apply(&Mutation::PutRole(role("r0", &["x"]))).unwrap();
    let e = st
        .apply(&Mutation::PutRole(role("one-more", &[])))
        .unwrap_err()
        .to_string();
    assert!(e.contains("MAX_ROLES") && e.contains("roles"), "{e}");

    let mut st = State::default();
    for i in 0..MAX_DATABASES {
        st.apply(&Mutation::PutDatabase(db(&format!("d{i}"), 1, 2)))
            .unwrap();
    }
    let e = st
        .apply(&Mutation::PutDatabase(db("x", 1, 2)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("MAX_DATABASES"), "{e}");
}

#[test]
fn every_record_type_round_trips_through_postcard() {
    let mut st = State::default();
    for m in one_of_each() {
        let bytes = postcard::to_stdvec(&m).unwrap();
        assert_eq!(postcard::from_bytes::<Mutation>(&bytes).unwrap(), m);
        st.apply(&m).unwrap();
    }
    let d = db("x", 1, 0);
    let bytes = postcard::to_stdvec(&d).unwrap();
    assert_eq!(postcard::from_bytes::<DatabaseRecord>(&bytes).unwrap(), d);
    let c = ca();
    assert_eq!(
        postcard::from_bytes::<CaRecord>(&postcard::to_stdvec(&c).unwrap()).unwrap(),
        c
    );
    let m = managed("x", "app", 3);
    assert_eq!(
        postcard::from_bytes::<ManagedUserRecord>(&postcard::to_stdvec(&m).unwrap()).unwrap(),
        m
    );
    let bytes = postcard::to_stdvec(&st).unwrap();
    assert_eq!(postcard::from_bytes::<State>(&bytes).unwrap(), st);
}

#[test]
fn over_capacity_bytes_do_not_decode() {
    // A 65-byte name written by hand (a postcard string is a varint length and the bytes).
    let mut bytes = vec![65u8];
    bytes.extend(std::iter::repeat_n(b'a', 65));
    assert!(postcard::from_bytes::<Name>(&bytes).is_err());
}

/// Cut the log at every offset and open it as a store: the recovered state is the prefix, the
/// torn tail is gone from the file, and appending afterwards gives a log that recovers whole.
#[test]
fn store_open_truncates_a_torn_tail_at_every_cut() {
    let tmp = private_tmp();
    let src = tmp.path().join("src");
    let mut s = Store::open(&src).unwrap();
    let muts = one_of_each();
    let mut states = vec![s.state().clone()];
    let mut ends = vec![];
    for m in &muts {
        s.apply(m.clone()).unwrap();
        states.push(s.state().clone());
        ends.push(std::fs::metadata(src.join(LOG_FILE)).unwrap().len() as usize);
    }
    drop(s);
    let log = std::fs::read(src.join(LOG_FILE)).unwrap();

    for cut in 0..=log.len() {
        let dir = tmp.path().join(format!("cut{cut}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.join(LOG_FILE), &log[..cut]).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let mut s = Store::open(&dir).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(s.state(), &states[whole], "cut {cut}");
        let valid = if whole == 0 {
            HEADER_LEN
        } else {
            ends[whole - 1]
        };
        if cut >= HEADER_LEN && cut > valid {
            assert_eq!(
                s.recovery_report().torn_tail,
                Some((valid as u64, (cut - valid) as u64))
            );
        }
        s.apply(Mutation::PutRole(role("after-cut", &[]))).unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.last_seq().0, whole as u64 + 1, "cut {cut}");
        assert!(s.state().role("after-cut").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn damage_followed_by_a_valid_record_is_refused_with_offset_and_seq() {
    let tmp = private_tmp();
    let mut s = Store::open(tmp.path()).unwrap();
    let mut ends = vec![HEADER_LEN as u64];
    for m in one_of_each() {
        s.apply(m).unwrap();
        ends.push(std::fs::metadata(tmp.path().join(LOG_FILE)).unwrap().len());
    }
    drop(s);
    let path = tmp.path().join(LOG_FILE);
    let mut log = std::fs::read(&path).unwrap();
    // Damage the payload of the third record (seq 3).
    log[ends[2] as usize + 10] ^= 0x40;
    std::fs::write(&path, &log).unwrap();
    let e = Store::open(tmp.path()).unwrap_err();
    let StoreError::Recovery { path: p, source } = &e else {
        panic!("{e}")
    };
    assert_eq!(p, &path);
    match **source {
        RecoveryError::Corrupt {
            offset,
            seq,
            next_valid,
            ..
        } => assert_eq!((offset, seq, next_valid), (ends[2], 3, Some(ends[3]))),
        ref other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("offset {}", ends[2]))
            && msg.contains("seq 3")
            && msg.contains("CRC"),
        "{msg}"
    );
    // Nothing was truncated.
    assert_eq!(std::fs::read(&path).unwrap(), log);
}

#[test]
fn a_valid_crc_with_bad_content_is_refused_even_at_the_tail() {
    use super::codec::{encode_entry, encode_frame, LogEntry};
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (encode_frame(b"\xff\xff\xff"), "decode"),
        (
            encode_entry(&LogEntry {
                seq: 9,
                mutation: Mutation::SetCa(ca()),
            }),
            "sequence number 9",
        ),
        (
            encode_entry(&LogEntry {
                seq: 2,
                mutation: Mutation::RemoveRole(n("never")),
            }),
            "cannot be applied",
        ),
    ];
    for (frame, expect) in cases {
        let tmp = private_tmp();
        let mut s = Store::open(tmp.path()).unwrap();
        s.apply(Mutation::SetCa(ca())).unwrap();
        drop(s);
        let path = tmp.path().join(LOG_FILE);
        let mut log = std::fs::read(&path).unwrap();
        log.extend_from_slice(&frame);
        std::fs::write(&path, &log).unwrap();
        let e = Store::open(tmp.path()).unwrap_err().to_string();
        assert!(e.contains(expect) && e.contains("seq 2"), "{expect}: {e}");
    }
}

/// A crash at each step of compaction: the reopened store has every acknowledged mutation and
/// keeps working (and compacting) afterwards.
#[test]
fn compaction_crash_windows_lose_nothing() {
    let steps = [
        Some(CompactStep::SnapshotWritten),
        Some(CompactStep::SnapshotRenamed),
        None,
    ];
    for step in steps {
        for earlier_compaction in [false, true] {
            let tmp = private_tmp();
            let dir = tmp.path();
            let mut s = Store::open(dir).unwrap();
            let muts = one_of_each();
            fill(&mut s, &muts[..5]);
            if earlier_compaction {
                s.compact().unwrap();
            }
            fill(&mut s, &muts[5..]);
            let state = s.state().clone();
            let seq = s.last_seq();
            let generation = s.generation();
            match step {
                Some(step) => s.compact_until(Some(step)).unwrap(),
                None => s.compact().unwrap(),
            }
            if step == Some(CompactStep::SnapshotRenamed) {
                // And the new log's temp file was written but not renamed.
                let log = dir.join(LOG_FILE);
                crate::files::TempFile::write(&log, b"partial", 0o600)
                    .unwrap()
                    .abandon();
            }
            drop(s);

            let label = format!("{step:?} earlier={earlier_compaction}");
            let left = temp_files(dir);
            // The crash left one temp file (the snapshot's, or the new log's), or none.
            assert_eq!(left.len(), usize::from(step.is_some()), "{label}: {left:?}");
            let mut s = Store::open(dir).unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(s.state(), &state, "{label}");
            assert_eq!(s.last_seq(), seq, "{label}");
            let expect_gen = generation + u64::from(step != Some(CompactStep::SnapshotWritten));
            assert_eq!(s.generation(), expect_gen, "{label}");
            assert_eq!(temp_files(dir), Vec::<String>::new(), "{label}");

            s.apply(Mutation::PutRole(role("later", &[]))).unwrap();
            s.compact().unwrap();
            s.apply(Mutation::PutRole(role("later2", &[]))).unwrap();
            drop(s);
            let s = Store::open(dir).unwrap();
            assert_eq!(s.last_seq().0, seq.0 + 2, "{label}");
            assert!(s.state().role("later").is_some() && s.state().role("later2").is_some());
        }
    }
}

#[test]
fn an_old_snapshot_with_a_newer_log_is_refused() {
    let tmp = private_tmp();
    let mut s = Store::open(tmp.path()).unwrap();
    s.apply(Mutation::SetCa(ca())).unwrap();
    s.compact().unwrap();
    let old_snapshot = std::fs::read(tmp.path().join(SNAPSHOT_FILE)).unwrap();
    s.apply(Mutation::PutRole(role("r", &[]))).unwrap();
    s.compact().unwrap();
    drop(s);
    std::fs::write(tmp.path().join(SNAPSHOT_FILE), old_snapshot).unwrap();
    let e = Store::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&e, StoreError::Recovery { source, .. }
            if matches!(**source, RecoveryError::SnapshotBehindLog { .. })),
        "{e}"
    );
}

/// The temporary files (`.store.snap.tmp-…`, `.store.log.tmp-…`) in the store directory.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".store.") && n.contains(".tmp-"))
        .collect()
}
