//! The few socket- and process-level things actix does not do for us: a
//! listener with a deep backlog, a capped send buffer per connection, the
//! open-file limit, the threads' scheduling policy, and cutting off the
//! socket of a session whose actor is no longer polled.

use socket2::{Domain, SockRef, Socket, Type};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Connections waiting to be accepted before the kernel refuses more. std
/// binds with 128; a burst of dashboards reconnecting at once overflows that.
pub const LISTEN_BACKLOG: i32 = 2048;

/// A listening socket on `addr` with [`LISTEN_BACKLOG`].
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std does: a restarted server may bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Caps the kernel send buffer of a connection (0 keeps autotuning), so a
/// slow reader's in-flight backlog stays small.
pub fn cap_send_buffer(tcp: &impl std::os::fd::AsFd, bytes: usize) {
    if bytes > 0 {
        if let Err(e) = SockRef::from(tcp).set_send_buffer_size(bytes) {
            log::debug!("could not set SO_SNDBUF: {e}");
        }
    }
}

/// Raises the soft open-file limit to the hard limit: every WebSocket is a
/// file descriptor, and the default soft limit (often 1024) would cap
/// sessions far below what the machine allows.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass,
    // which lives on this stack frame for the whole call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                log::info!("open-file limit raised from {old} to {}", lim.rlim_max);
            }
        }
    }
}

/// Puts the calling thread under Linux's `SCHED_BATCH` policy. Threads
/// inherit it from the thread that creates them, so `serve` calls this
/// first, before the actix system and its threads exist, and every thread of
/// the server runs under it.
///
/// Why: a connect goes through several threads (actix-server's acceptor, an
/// HTTP worker, the blocking pool for its lookups, the realtime arbiter for
/// its join), and under `SCHED_OTHER` each hand-off to a sleeping thread
/// preempts whatever runs on that core. In a reconnect storm that is a
/// context switch per connection and thread, a fifth of the server's CPU;
/// under `SCHED_BATCH` a woken thread waits for the running one's time slice
/// (a few ms at most, and not at all on an idle core), so the work is taken
/// in batches. Nothing here needs a privilege, and the nice value is
/// unchanged (docs/BENCHMARKS.md, storm: "Batch scheduling").
#[cfg(target_os = "linux")]
pub fn batch_scheduling() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param` for the duration of the call;
    // pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Other systems have no `SCHED_BATCH`; the setting is ignored there.
#[cfg(not(target_os = "linux"))]
pub fn batch_scheduling() -> std::io::Result<()> {
    Ok(())
}

/// The socket under a connection, recorded when it is accepted, so a stalled
/// session can be cut off from outside its (unpolled) actor.
#[derive(Debug, Clone, Copy)]
pub struct ConnSocket {
    pub fd: RawFd,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl ConnSocket {
    pub fn of(tcp: &impl AsRawFd, local: SocketAddr, peer: SocketAddr) -> Self {
        Self {
            fd: tcp.as_raw_fd(),
            local,
            peer,
        }
    }

    /// Shuts the socket down, waking its connection so it fails and drops
    /// the actor. The fd number is only trusted after its addresses are
    /// checked against the recorded ones: if the connection was closed and
    /// the number reused, the 4-tuple differs (or it is no socket at all)
    /// and nothing is touched.
    pub fn shutdown(&self) -> bool {
        // SAFETY: the borrow lives only for this call and never closes the
        // fd. The fd may have been closed and reused since it was recorded;
        // every use below is a syscall that fails harmlessly on a non-socket,
        // and the shutdown happens only once the 4-tuple proves it is still
        // the same connection.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let sock = SockRef::from(&fd);
        let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
        if addr(sock.peer_addr()) != Some(self.peer) || addr(sock.local_addr()) != Some(self.local)
        {
            return false;
        }
        sock.shutdown(std::net::Shutdown::Both).is_ok()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The policy of the calling thread.
    fn policy() -> libc::c_int {
        // SAFETY: no arguments besides pid 0, the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// `serve` relies on this: set once before the runtime starts, the
    /// policy reaches every thread started after (here: a thread of a
    /// thread, as the pools' threads are started by the runtime's).
    #[test]
    fn batch_scheduling_is_inherited_by_the_threads_started_after() {
        let (own, child, grandchild) = std::thread::spawn(|| {
            super::batch_scheduling().expect("SCHED_BATCH needs no privilege");
            let (child, grandchild) = std::thread::spawn(|| {
                let grandchild = std::thread::spawn(policy).join().unwrap();
                (policy(), grandchild)
            })
            .join()
            .unwrap();
            (policy(), child, grandchild)
        })
        .join()
        .unwrap();
        assert_eq!(
            (own, child, grandchild),
            (libc::SCHED_BATCH, libc::SCHED_BATCH, libc::SCHED_BATCH)
        );
        // Only the thread that asked (and its descendants) changed.
        assert_eq!(policy(), libc::SCHED_OTHER);
    }
}
