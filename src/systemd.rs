//! The systemd contract of `bastion serve`: readiness, reload, watchdog and status over
//! `sd_notify` (SIGHUP itself is handled in [`crate::reload`]), and journald as the log sink when
//! stderr is connected to it.
//!
//! Every notify call is a no-op when `NOTIFY_SOCKET` is absent (a shell, a test, a container),
//! and a failed notify is logged, never fatal: the daemon serves whether or not anyone listens.
//!
//! Must never: send READY=1 before the caller has bound every listener with its final mode
//! (systemd starts dependants on READY), or ping the watchdog from anything but a task on the
//! daemon's own runtime (a thread of its own would keep pinging while the runtime is stuck).

use std::os::fd::AsFd as _;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

/// How often the `STATUS=` line is refreshed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// The journald field prefix: audit field `db_user` becomes `BASTION_DB_USER`.
pub const JOURNAL_FIELD_PREFIX: &str = "BASTION";

/// Tell systemd every listener is bound (or a reload has ended): `READY=1` with a `STATUS=` line.
/// `PR_SET_DUMPABLE 0` for this process: the daemon holds the CA key, passwords and tokens, so
/// it never writes a core file and same-uid processes cannot ptrace it or read its memory
/// (the unit also sets `LimitCORE=0`).
pub fn no_core_dumps() -> nix::Result<()> {
    nix::sys::prctl::set_dumpable(false)
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Replace the `STATUS=` line (`systemctl status bastion` shows it).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tell systemd a clean stop has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// When systemd runs us with `WatchdogSec=` (`WATCHDOG_USEC`, and `WATCHDOG_PID` naming this
/// process), spawn a task on the current runtime that sends `WATCHDOG=1` at half the interval.
/// It is an ordinary task on purpose: when the runtime stops polling tasks, pings stop and
/// systemd restarts the daemon. `None` when no watchdog is asked for.
pub fn spawn_watchdog() -> Option<JoinHandle<()>> {
    let timeout = sd_notify::watchdog_enabled()?;
    let period = (timeout / 2).max(Duration::from_millis(1));
    tracing::info!(
        timeout_ms = timeout.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        // A late tick means the runtime was stalled: ping once, don't burst to catch up.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}

/// Refresh `STATUS=` every `every` with the text `line` produces (sessions, credential source).
/// A no-op task when `NOTIFY_SOCKET` is absent.
pub fn spawn_status(
    every: Duration,
    line: impl Fn() -> String + Send + 'static,
) -> Option<JoinHandle<()>> {
    std::env::var_os("NOTIFY_SOCKET")?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; READY=1 already carried a status.
        tick.tick().await;
        loop {
            tick.tick().await;
            status(&line());
        }
    }))
}

/// Tell systemd a reload has begun (`RELOADING=1`, with `MONOTONIC_USEC=` as systemd ≥ 253
/// requires for `Type=notify-reload`). [`ready`] ends it, whether the reload worked or not.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A journald layer when stderr is connected to the journal and the journal socket answers.
/// User fields get the [`JOURNAL_FIELD_PREFIX`]: `event` → `BASTION_EVENT`, span field
/// `client.addr` → `BASTION_CLIENT_ADDR`; `message` stays `MESSAGE`.
pub fn journald_layer() -> Option<tracing_journald::Layer> {
    let journal_stream = std::env::var("JOURNAL_STREAM").ok()?;
    if !stderr_is(&journal_stream) {
        return None;
    }
    let layer = tracing_journald::layer().ok()?;
    Some(
        layer
            .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
            .with_syslog_identifier("bastion".into()),
    )
}

/// Whether stderr is the stream `JOURNAL_STREAM` (`<device>:<inode>`) names. systemd sets the
/// variable for the service's own stderr; a child whose stderr was redirected inherits the
/// variable but must keep writing to its stderr (systemd.exec(5), `$JOURNAL_STREAM`).
fn stderr_is(journal_stream: &str) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_core_dumps_clears_the_dumpable_flag() {
        no_core_dumps().expect("prctl");
        assert!(!nix::sys::prctl::get_dumpable().expect("prctl"));
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is(""));
        assert!(!stderr_is("garbage"));
        assert!(!stderr_is("1:x"));
        let st = nix::sys::stat::fstat(std::io::stderr().as_fd()).expect("fstat stderr");
        assert!(stderr_is(&format!("{}:{}", st.st_dev, st.st_ino)));
        assert!(!stderr_is(&format!("{}:{}", st.st_dev, st.st_ino + 1)));
    }
}
