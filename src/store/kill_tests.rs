//! `kill -9` during writes: a child process (this test binary, re-run on the helper test below)
//! applies mutations and compacts, printing each seq once `apply` has returned it; the parent
//! SIGKILLs it at a random moment, reopens the store and checks that every printed seq is there —
//! and that the state is exactly the one after the last recovered seq, never more or less.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::records::Pattern;
use super::state::State;
use super::test_support::{p, role};
use super::{Mutation, Store};

/// The child's store directory; when it is unset the helper test does nothing.
const CHILD_DIR_ENV: &str = "BASTION_STORE_KILL_CHILD_DIR";
const HELPER: &str = "store::kill_tests::kill9_child_helper";
const CYCLES: usize = 50;
/// Roles the child cycles through: seq `s` writes role `r{s % SLOTS}` holding pattern `s{s}`.
const SLOTS: u64 = 64;

/// The mutation the child writes as seq `seq`: a pure function of `seq`, so the parent knows
/// the exact state after any prefix.
fn mutation_for(seq: u64) -> Mutation {
    let mut r = role(&format!("r{}", seq % SLOTS), &[]);
    r.db_names.push(p(&format!("s{seq}"))).unwrap();
    Mutation::PutRole(r)
}

fn expected_state(last_seq: u64) -> State {
    let mut st = State::default();
    for seq in 1..=last_seq {
        st.apply(&mutation_for(seq)).unwrap();
    }
    st
}

#[test]
fn kill9_child_helper() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let mut store = Store::open(Path::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        let next = store.last_seq().0 + 1;
        let seq = store.apply(mutation_for(next)).unwrap();
        assert_eq!(seq.0, next);
        // Written straight to fd 1 (not through the test harness's capture), after the fsync.
        writeln!(out, "ack {}", seq.0).unwrap();
        out.flush().unwrap();
        if seq.0 % 23 == 0 {
            store.compact().unwrap();
            writeln!(out, "compacted {}", seq.0).unwrap();
        }
    }
}

#[test]
fn kill9_during_writes_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let mut rng = XorShift::seeded();
    let mut max_acked = 0u64;
    let mut compactions = 0;
    // Informational: how often a kill left a torn tail or an interrupted compaction to repair.
    let (mut torn, mut recreated) = (0, 0);
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args([HELPER, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Kill after a random number of acknowledgements (sometimes at once, during recovery),
        // or after a time limit should the child stall.
        let kill_after = rng.below(40);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = BufReader::new(stdout).lines();
        let mut acked = Vec::new();
        while acked.len() < kill_after as usize && Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => record(&line, &mut acked, &mut compactions),
                _ => break,
            }
        }
        // A random extra moment, so the kill lands anywhere in apply or compact.
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        // What the child printed before it died was acknowledged too.
        for line in lines.map_while(Result::ok) {
            record(&line, &mut acked, &mut compactions);
        }

        let store = Store::open(&dir).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let last = store.last_seq().0;
        torn += usize::from(store.recovery_report().torn_tail.is_some());
        recreated += usize::from(store.recovery_report().log_recreated);
        if let Some(&a) = acked.iter().max() {
            max_acked = max_acked.max(a);
        }
        assert!(
            last >= max_acked,
            "cycle {cycle}: acknowledged seq {max_acked} but recovered only up to {last}"
        );
        for &seq in &acked {
            let slot = store.state().role(&format!("r{}", seq % SLOTS));
            let held: Option<&Pattern> = slot.and_then(|r| r.db_names.last());
            let held_seq: u64 = held.map_or(0, |s| s[1..].parse().unwrap());
            assert!(
                held_seq >= seq && held_seq % SLOTS == seq % SLOTS,
                "cycle {cycle}: acknowledged seq {seq} is missing"
            );
        }
        assert_eq!(store.state(), &expected_state(last), "cycle {cycle}");
    }
    eprintln!(
        "kill -9: {CYCLES} cycles, {max_acked} acknowledged writes, {compactions} compactions; \
         repaired at open: {torn} torn tails, {recreated} logs restarted"
    );
    assert!(
        max_acked > CYCLES as u64,
        "the child barely wrote: {max_acked}"
    );
    assert!(compactions > 0, "no compaction ran during the test");
}

fn record(line: &str, acked: &mut Vec<u64>, compactions: &mut usize) {
    if let Some(seq) = line.strip_prefix("ack ") {
        acked.push(seq.trim().parse().unwrap());
    } else if line.starts_with("compacted ") {
        *compactions += 1;
    }
}

/// A small PRNG for kill timing (reproducibility is not needed; variety is).
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        XorShift(t | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
