//! `kill -9` of the daemon in a loop while admin writes go through its socket: no write that
//! was acknowledged is lost.
//!
//! Each cycle starts the real `bastion serve` on the same state directory, runs writers that
//! each replace their own role with the next version (`db_users = ["v<n>"]`) through the admin
//! client library, SIGKILLs the daemon at a moment that varies from cycle to cycle, and after
//! the restart checks every writer's role: it must hold the last acknowledged version, or the
//! one that was in flight when the daemon died — never an older one. Hundreds of writes over
//! the cycles also cross the compaction threshold, so some kills land in or around a compaction.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bastion::admin::client;
use bastion::admin::wire::{Reply, Request};
use bastion::config::RoleConfig;
use bastion::store::records::RoleRecord;

use support::process::poll;
use support::store_daemon::StoreDaemon;

const CYCLES: u64 = 50;
const WRITERS: usize = 3;

fn versioned(writer: usize, version: u64) -> RoleRecord {
    RoleRecord::try_from(&RoleConfig {
        name: format!("w{writer}"),
        db_users: vec![format!("v{version}")],
        db_names: vec!["*".into()],
        ..RoleConfig::default()
    })
    .expect("a valid role")
}

/// Each writer's role version in the store, through the admin socket.
#[track_caller]
fn versions(socket: &std::path::Path) -> Vec<u64> {
    let Ok(Reply::Roles(roles)) = client::call(socket, &Request::ListRoles) else {
        panic!("ListRoles failed");
    };
    (0..WRITERS)
        .map(|w| {
            let role = roles
                .iter()
                .find(|r| r.name.as_str() == format!("w{w}"))
                .unwrap_or_else(|| panic!("role w{w} is gone: {roles:?}"));
            role.db_users[0]
                .strip_prefix('v')
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("w{w}: {:?}", role.db_users))
        })
        .collect()
}

#[test]
fn acknowledged_admin_writes_survive_kill_9_in_a_loop() {
    let mut d = StoreDaemon::start();
    let socket = d.socket();
    for w in 0..WRITERS {
        let put = Request::PutRole {
            record: versioned(w, 0),
            replace: false,
        };
        client::call(&socket, &put).expect("create the writers' roles");
    }
    // The last version each writer got an acknowledgement for.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let mut total_acks = 0;

    for cycle in 0..CYCLES {
        let before: u64 = acked.iter().map(|a| a.load(Ordering::SeqCst)).sum();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (acked, socket) = (acked.clone(), socket.clone());
                thread::spawn(move || loop {
                    let next = acked[w].load(Ordering::SeqCst) + 1;
                    let put = Request::PutRole {
                        record: versioned(w, next),
                        replace: true,
                    };
                    match client::call(&socket, &put) {
                        Ok(Reply::Done { .. }) => acked[w].store(next, Ordering::SeqCst),
                        // The daemon died under us: this write may or may not have landed.
                        Err(_) => return,
                        Ok(other) => panic!("unexpected reply {other:?}"),
                    }
                })
            })
            .collect();
        // Kill only once this cycle has had an acknowledged write, then after a delay that
        // varies from cycle to cycle (0..60 ms), so kills land in different places of a write.
        let started = poll(Duration::from_secs(30), || {
            let now: u64 = acked.iter().map(|a| a.load(Ordering::SeqCst)).sum();
            (now > before).then_some(())
        });
        assert!(
            started.is_some(),
            "cycle {cycle}: no write was acknowledged"
        );
        thread::sleep(Duration::from_millis(cycle * 37 % 60));
        d.kill();
        for w in writers {
            w.join().expect("writer thread");
        }
        let acked_now: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        total_acks = acked_now.iter().sum();

        d.up();
        let stored = versions(&d.socket());
        for w in 0..WRITERS {
            assert!(
                stored[w] == acked_now[w] || stored[w] == acked_now[w] + 1,
                "cycle {cycle}: writer {w} was acknowledged v{} but the store holds v{} \
                 (all: acked {acked_now:?}, stored {stored:?})",
                acked_now[w],
                stored[w]
            );
            // A write that landed unacknowledged is the truth now: continue from it.
            acked[w].store(stored[w], Ordering::SeqCst);
        }
    }
    assert!(total_acks >= CYCLES, "{total_acks} acknowledged writes");
}
