//! Session runtimes: one single-threaded tokio runtime per core, and each session lives its
//! whole life on one of them — as a connection does on one of HAProxy's threads.
//!
//! Why not the daemon's multi-threaded runtime: its workers steal tasks from each other. Under
//! load, a worker that took several sessions' readiness from `epoll` wakes the other to share
//! them (a `futex` wake and two context switches), and a session's task moves between cores
//! from one burst to the next. Measured side by side at `-P 16` (6 interleaved rounds of 1M
//! GETs, `-c 50`): the bastion's CPU per request went from 0.86–0.91 µs to 0.73–0.77 µs
//! (HAProxy 0.71–0.78) and its throughput up 3–10 % (README, "Against the targets").
//!
//! How a connection gets here: every listener has one accept loop *per core*, each on its own
//! duplicate of the listening descriptor ([`Cores::on_each`]). The core that accepts a
//! connection keeps it unless another core has fewer sessions ([`choose`]); then the socket,
//! still unregistered, is handed to that core and registered with its `epoll` there. So a
//! burst of connections spreads evenly, and under churn most sessions stay on the core that
//! accepted them (no hand-off, no wake-up of another thread).
//!
//! A socket is registered with the `epoll` of the runtime that created it; one used from
//! another runtime still works (that runtime's driver wakes the task), but every readiness
//! costs a hand-off between threads. So sockets cross runtimes unregistered: accepted
//! connections as plain descriptors, and an upstream connection taken from the warm pool is
//! re-registered on the taking core (`upstream::warm`, [`rehome`]).
//!
//! Everything else — the admin socket, the warm pool's dials, managed users, metrics, the
//! drain — stays on the daemon's own runtime.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

thread_local! {
    /// The index of the session runtime this thread drives (`None` on any other thread).
    static CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The session runtimes. Stopped (their threads end, their tasks are dropped) by
/// [`Cores::stop`] or when dropped.
pub struct Cores {
    handles: Vec<Handle>,
    /// Live sessions per runtime (placed and not yet ended).
    loads: Arc<[AtomicUsize]>,
    stops: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl Cores {
    /// One runtime per core this process may run on (`available_parallelism`: the CPU
    /// affinity and cgroup quota systemd gives the unit), each on its own thread.
    pub fn start() -> io::Result<Cores> {
        let n = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Cores::with_threads(n)
    }

    pub fn with_threads(n: usize) -> io::Result<Cores> {
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for index in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("bastion-core-{index}"))
                .spawn(move || {
                    CORE.set(Some(index));
                    // Until told to stop (or the sender is dropped); dropping the runtime then
                    // drops the sessions still on it.
                    let _ = runtime.block_on(stopped);
                })?;
        }
        let loads = (0..handles.len()).map(|_| AtomicUsize::new(0)).collect();
        Ok(Cores {
            handles,
            loads,
            stops: Mutex::new(stops),
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The session runtime the calling thread drives, if it drives one.
    pub fn current() -> Option<usize> {
        CORE.get()
    }

    /// Live sessions per runtime, as placed.
    pub fn loads(&self) -> Vec<usize> {
        self.loads
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }

    /// Run `make(index)` on every runtime (an accept loop per core); the handles abort them.
    pub fn on_each<F, Fut>(&self, make: F) -> Vec<AbortHandle>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handles
            .iter()
            .enumerate()
            .map(|(index, handle)| handle.spawn(make(index)).abort_handle())
            .collect()
    }

    /// Run one session: on this runtime unless another has fewer sessions ([`choose`]). The
    /// session's sockets must not be registered yet — `session` registers them when first
    /// polled, on the runtime that runs it.
    pub fn spawn_session<Fut>(&self, session: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let here = Cores::current().filter(|&i| i < self.handles.len());
        let loads = self.loads();
        let target = choose(&loads, here);
        self.loads[target].fetch_add(1, Ordering::Relaxed);
        let placed = Placed {
            loads: self.loads.clone(),
            index: target,
        };
        let work = async move {
            let _placed = placed;
            session.await;
        };
        if here == Some(target) {
            tokio::spawn(work);
        } else {
            self.handles[target].spawn(work);
        }
    }

    /// End every runtime's thread; the tasks still on them are dropped.
    pub fn stop(&self) {
        let stops = std::mem::take(&mut *self.stops.lock().unwrap_or_else(|e| e.into_inner()));
        for stop in stops {
            let _ = stop.send(());
        }
    }
}

impl Drop for Cores {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Owns the runtimes for their user (the daemon): stops them when dropped, even while other
/// holders (accept loops, the Unix socket set) still keep the [`Cores`] alive.
pub struct StopOnDrop(pub Arc<Cores>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A session's place on a runtime: counted while its task lives (ended or dropped).
struct Placed {
    loads: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.loads[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a new session goes: the runtime with the fewest sessions; among equals `here` (the
/// runtime that accepted it: no hand-off), else the first.
pub fn choose(loads: &[usize], here: Option<usize>) -> usize {
    let least = loads.iter().copied().min().unwrap_or(0);
    match here {
        Some(i) if loads.get(i) == Some(&least) => i,
        _ => loads.iter().position(|&l| l == least).unwrap_or(0),
    }
}

/// Register `tcp` with the calling runtime instead of the one it was registered with: a
/// duplicate descriptor is registered here and the old one deregistered and closed. Must run
/// inside the runtime that will use the socket.
pub fn rehome(tcp: &mut TcpStream) -> io::Result<()> {
    let duplicate = tcp.as_fd().try_clone_to_owned()?;
    // Still non-blocking: the file status flags belong to the socket, not the descriptor.
    *tcp = TcpStream::from_std(std::net::TcpStream::from(duplicate))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_new_session_goes_to_the_least_loaded_runtime_and_stays_where_it_was_accepted_on_a_tie() {
        assert_eq!(choose(&[0, 0], Some(1)), 1);
        assert_eq!(choose(&[0, 0], None), 0);
        assert_eq!(choose(&[3, 1], Some(0)), 1);
        assert_eq!(choose(&[1, 3], Some(1)), 0);
        assert_eq!(choose(&[2, 2, 1], Some(0)), 2);
        assert_eq!(choose(&[5], Some(0)), 0);
        assert_eq!(choose(&[], None), 0);
    }

    #[test]
    fn a_burst_accepted_on_one_runtime_is_spread_over_all_of_them() {
        let cores = Arc::new(Cores::with_threads(2).expect("runtimes"));
        let (release, released) = tokio::sync::watch::channel(false);
        let (seen_tx, seen) = std::sync::mpsc::channel();
        // Fifty sessions that stay open, all accepted on runtime 0.
        let spawner = cores.clone();
        let accepted = cores.on_each(move |index| {
            let (spawner, released, seen_tx) = (spawner.clone(), released.clone(), seen_tx.clone());
            async move {
                if index != 0 {
                    return;
                }
                for _ in 0..50 {
                    let (mut released, seen_tx) = (released.clone(), seen_tx.clone());
                    spawner.spawn_session(async move {
                        seen_tx.send(Cores::current()).expect("test alive");
                        let _ = released.wait_for(|r| *r).await;
                    });
                }
            }
        });
        assert_eq!(accepted.len(), 2);
        let mut on = [0usize; 2];
        for _ in 0..50 {
            let core = seen
                .recv_timeout(Duration::from_secs(10))
                .expect("session ran");
            on[core.expect("on a session runtime")] += 1;
        }
        assert_eq!(
            on,
            [25, 25],
            "every session ran on the runtime it was placed on"
        );
        assert_eq!(cores.loads(), vec![25, 25]);
        // Ended sessions give their place back.
        release.send(true).expect("sessions waiting");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cores.loads() != vec![0, 0] && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(cores.loads(), vec![0, 0]);
    }

    #[test]
    fn stopping_drops_the_sessions_still_running_and_frees_their_places() {
        let cores = Cores::with_threads(2).expect("runtimes");
        let (dropped_tx, dropped) = std::sync::mpsc::channel::<()>();
        struct OnDrop(std::sync::mpsc::Sender<()>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        for _ in 0..4 {
            let guard = OnDrop(dropped_tx.clone());
            cores.spawn_session(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
        }
        assert_eq!(
            cores.loads(),
            vec![2, 2],
            "placed from outside: spread from the first"
        );
        cores.stop();
        for _ in 0..4 {
            dropped
                .recv_timeout(Duration::from_secs(10))
                .expect("a session dropped at stop");
        }
        assert_eq!(cores.loads(), vec![0, 0]);
    }

    #[test]
    fn a_rehomed_socket_is_driven_by_the_runtime_that_uses_it() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // Registered on a runtime that is then dropped: a socket still registered there
        // could never be woken again; the rehomed one is.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut stream = first.block_on(TcpStream::connect(addr)).expect("connect");
        let (mut peer, _) = listener.accept().expect("accept");
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        second.block_on(async {
            rehome(&mut stream).expect("rehome");
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::io::Write::write_all(&mut peer, b"ping").expect("peer write");
                peer
            });
            let mut buf = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
                .await
                .expect("woken by this runtime")
                .expect("read");
            assert_eq!(&buf, b"ping");
            stream.write_all(b"pong").await.expect("write");
            writer.join().expect("peer thread");
        });
    }
}
