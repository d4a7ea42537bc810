//! The daemon compacts its store: past the log threshold after admin writes (in the background,
//! once the write is acknowledged), and at start when the recovered log is already long. Either
//! way every acknowledged write is still there after a restart.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use bastion::admin::client;
use bastion::admin::wire::{Declared, Reply, Request};
use bastion::store::compaction::COMPACT_AFTER_RECORDS;
use bastion::store::{Mutation, Store, LOG_FILE, SNAPSHOT_FILE};

use support::process::poll;
use support::store_daemon::{add_role, role, role_names, StoreDaemon};

fn log_len(store: &Path) -> u64 {
    std::fs::metadata(store.join(LOG_FILE))
        .map(|m| m.len())
        .unwrap_or_else(|e| panic!("{}: {e}", store.join(LOG_FILE).display()))
}

fn names(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("r{i:04}")).collect()
}

#[test]
fn admin_writes_compact_the_log_and_survive_restarts() {
    let mut d = StoreDaemon::start();
    let socket = d.socket();
    let store = d.store_dir();
    let mut expected = BTreeSet::new();
    // Exactly the threshold, in imports of 100 records each: the last one makes it due.
    let all = names(0..COMPACT_AFTER_RECORDS);
    let mut peak = 0;
    for batch in all.chunks(100) {
        assert!(!store.join(SNAPSHOT_FILE).exists(), "compacted too early");
        let declared = Declared {
            roles: batch.iter().map(|n| role(n)).collect(),
            ..Declared::default()
        };
        match client::call(&socket, &Request::Import(declared)) {
            Ok(Reply::Imported(_)) => {}
            other => panic!("import: {other:?}"),
        }
        expected.extend(batch.iter().cloned());
        peak = peak.max(log_len(&store));
    }
    d.bastion()
        .expect_log_line(0, &["compacted the log into a snapshot"], &[]);
    let compacted = poll(Duration::from_secs(10), || {
        (store.join(SNAPSHOT_FILE).exists() && log_len(&store) < peak / 10).then_some(())
    });
    assert!(
        compacted.is_some(),
        "log still {} bytes (peak {peak})",
        log_len(&store)
    );

    // Writes after the compaction go to the new log.
    for name in names(COMPACT_AFTER_RECORDS..COMPACT_AFTER_RECORDS + 5) {
        add_role(&socket, &name).expect("acknowledged");
        expected.insert(name);
    }
    assert_eq!(role_names(&socket), expected);

    d.stop();
    d.up();
    assert_eq!(role_names(&d.socket()), expected, "after a clean restart");
    d.kill();
    d.up();
    assert_eq!(role_names(&d.socket()), expected, "after kill -9");
}

#[test]
fn a_long_recovered_log_is_compacted_at_start() {
    let mut d = StoreDaemon::start();
    d.stop();
    let store = d.store_dir();
    let all = names(0..COMPACT_AFTER_RECORDS);
    {
        // Written by the store itself while the daemon is down: a log past the threshold.
        let mut s = Store::open(&store).expect("open the store");
        for name in &all {
            s.apply(Mutation::PutRole(role(name))).expect("apply");
        }
    }
    let before = log_len(&store);
    d.up();
    d.bastion()
        .expect_log_line(0, &["compacted the recovered log into a snapshot"], &[]);
    assert!(store.join(SNAPSHOT_FILE).exists());
    assert!(
        log_len(&store) < before / 10,
        "log {} bytes, was {before}",
        log_len(&store)
    );
    assert_eq!(
        role_names(&d.socket()),
        all.into_iter().collect::<BTreeSet<_>>()
    );
}
