//! The kernel pipe a splice direction moves its bytes through: non-blocking, close-on-exec, and
//! enlarged when the kernel allows it so one `splice(2)` can carry more per call.
//!
//! Must never fail a session because the pipe could not be enlarged: the default size works, it
//! only takes more syscalls. (Unprivileged users share `fs.pipe-user-pages-soft`, 64 MiB of pipe
//! capacity by default; past it the kernel refuses `F_SETPIPE_SZ` and hands out 2-page pipes. Splice
//! stays correct with those, just slower — raise the sysctl for many concurrent sessions.)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// What we ask for; the kernel default is 64 KiB and `fs.pipe-max-size` is 1 MiB by default.
const WANTED_CAPACITY: usize = 1024 * 1024;

/// What we assume if the kernel will not say (the Linux default).
const DEFAULT_CAPACITY: usize = 64 * 1024;

/// One pipe, owned by one direction of one session. Both ends close on drop.
#[derive(Debug)]
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A fresh empty pipe, enlarged to [`WANTED_CAPACITY`] if the kernel lets us.
    pub(super) fn new() -> Result<Self, Errno> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let wanted = i32::try_from(WANTED_CAPACITY).unwrap_or(i32::MAX);
        // Failure (EPERM over the per-user limit, EBUSY, old kernel) leaves the default size,
        // which is fine: see the module docs.
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(wanted));
        let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ)
            .ok()
            .and_then(|size| usize::try_from(size).ok())
            .filter(|&size| size > 0)
            .unwrap_or(DEFAULT_CAPACITY);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// The end bytes are spliced out of.
    pub(super) fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The end bytes are spliced into.
    pub(super) fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// How many bytes the pipe holds when full: the most one splice into it can move.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_is_nonblocking_cloexec_and_reports_a_usable_capacity() {
        let pipe = Pipe::new().expect("pipe2 in a test process");
        assert!(pipe.capacity() >= 4096);
        for end in [pipe.read_end(), pipe.write_end()] {
            let fl = fcntl(end, FcntlArg::F_GETFL).expect("F_GETFL");
            assert!(OFlag::from_bits_truncate(fl).contains(OFlag::O_NONBLOCK));
            let fd = fcntl(end, FcntlArg::F_GETFD).expect("F_GETFD");
            assert!(
                nix::fcntl::FdFlag::from_bits_truncate(fd).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
            );
        }
        // An empty non-blocking pipe reports EAGAIN rather than blocking the test.
        let mut buf = [0u8; 1];
        assert_eq!(
            nix::unistd::read(pipe.read_end(), &mut buf),
            Err(Errno::EAGAIN)
        );
    }
}
