//! The one place pgconn-pool touches a connection's socket directly: to look at it without reading
//! (is the connection still open?) and to close it under a call that the server will never answer.
//!
//! The `postgres` crate owns the socket and offers neither: it reads only while a call is in progress,
//! so a server that closed an idle connection is noticed by the next statement, which fails; and a call
//! to a server that stopped (SIGSTOP, a frozen VM, a network path that drops packets without a reset)
//! blocks forever, since neither `statement_timeout` nor a cancel request can act without that server.
//! A non-blocking `recv(MSG_PEEK)` sees the close without a round trip (pgx does the same), and shutting
//! the socket down from another thread makes a blocked read return at once.
//!
//! Which descriptor is the connection's: the `postgres` crate does not say, so each new connection looks
//! through `/proc/self/fd` for a socket connected to its server ([`Socket::find`]) that did not exist
//! before its connect began ([`Before`]) and that no other live connection of this process has claimed.
//! One candidate is the connection's own socket. With several (connects to the same server running at the
//! same time, from this pool or from other code), a TCP connection to PostgreSQL itself asks the server
//! which port it sees (`inet_client_port()`, one round trip); a TCP connection to PgBouncer, which cannot
//! say, makes one round trip and keeps the one candidate whose kernel byte counters moved meanwhile
//! ([`Socket::by_round_trip`]); the others look again at their next checkouts and whenever they need a
//! reset, by which time the other connects have claimed theirs.
//!
//! A claim is released before its descriptor is closed, never after, so a descriptor number reused by a
//! new socket can never be mistaken for a claimed one's.
//!
//! Safety of the `unsafe` calls here: they are `getsockname`, `getpeername`, `getsockopt`, `recv` and `shutdown` on
//! file descriptor numbers, with buffers of the right size; none of them can break memory safety. What
//! could go wrong is acting on the wrong descriptor, and the claims above and the [`crate::deadline`]
//! registry prevent that: a descriptor is shut down only while the call using it is still registered,
//! and the connection (hence its socket) cannot be closed before that call returns and unregisters.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use crate::lifecycle::Peek;

/// The descriptors claimed by live connections of this process.
static CLAIMED: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

/// Where a connection's server listens, as its socket's peer address shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    /// A TCP port, on any address (the host name may resolve to several).
    Tcp(u16),
    /// A Unix socket's path (`{dir}/.s.PGSQL.{port}`).
    Unix(PathBuf),
}

/// A connection's socket in this process, claimed until [`Socket::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Socket(RawFd);

/// The sockets of this process connected to a server, before a connect to it began (by inode, which a
/// reused descriptor number does not share).
#[derive(Debug, Clone, Default)]
pub(crate) struct Before(HashSet<u64>);

impl Before {
    /// The sockets connected to one of `peers` now.
    pub(crate) fn take(peers: &[Peer]) -> Before {
        Before(descriptors().filter(|&fd| connected_to_any(fd, peers)).filter_map(inode).collect())
    }

    /// Whether `fd` is a socket connected to one of `peers` that was not there before.
    fn new_to(&self, fd: RawFd, peers: &[Peer]) -> bool {
        connected_to_any(fd, peers) && inode(fd).is_some_and(|inode| !self.0.contains(&inode))
    }
}

impl Socket {
    /// The one unclaimed socket of this process connected to one of `peers` and not in `before`,
    /// claimed; `None` when there is none or more than one.
    pub(crate) fn find(peers: &[Peer], before: &Before) -> Option<Socket> {
        claim_unique(|fd| before.new_to(fd, peers))
    }

    /// The TCP socket of `client`, a connection to PostgreSQL itself: asks the server for the ports it
    /// sees (one round trip), then looks for the unclaimed socket with those ports, and claims it.
    pub(crate) fn by_client_port(client: &mut postgres::Client) -> Option<Socket> {
        let row = client.query_typed_one("SELECT inet_client_port(), inet_server_port()", &[]).ok()?;
        let (local, peer): (Option<i32>, Option<i32>) = (row.get(0), row.get(1));
        let (local, peer) = (u16::try_from(local?).ok()?, u16::try_from(peer?).ok()?);
        claim_unique(|fd| {
            port(fd, libc::getsockname) == Some(local) && port(fd, libc::getpeername) == Some(peer)
        })
    }

    /// The one TCP socket, among those [`Socket::find`] would consider, whose byte counters moved (both
    /// ways) while `client` made one round trip and no other's did, claimed. A candidate that is busy
    /// with other traffic makes it ambiguous (`None`); an idle one is ruled out.
    pub(crate) fn by_round_trip(
        peers: &[Peer],
        before: &Before,
        client: &mut postgres::Client,
        timeout: std::time::Duration,
    ) -> Option<Socket> {
        let claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner).clone().unwrap_or_default();
        let candidates: Vec<(RawFd, (u64, u64))> = descriptors()
            .filter(|&fd| !claimed.contains(&fd) && before.new_to(fd, peers))
            .filter_map(|fd| Some((fd, counters(fd)?)))
            .collect();
        client.is_valid(timeout).ok()?;
        let mut moved = candidates
            .iter()
            .filter(|&&(fd, (received, acked))| counters(fd).is_some_and(|(r, a)| r > received && a > acked));
        let (fd, _) = *moved.next()?;
        if moved.next().is_some() {
            return None;
        }
        // Claim it unless another connection did meanwhile.
        let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
        claimed.get_or_insert_with(HashSet::new).insert(fd).then_some(Socket(fd))
    }

    /// Gives the claim up; call before the descriptor is closed.
    pub(crate) fn release(self) {
        if let Some(claimed) = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            claimed.remove(&self.0);
        }
    }

    /// Looks at the socket without reading from it or waiting: one `recv(MSG_PEEK | MSG_DONTWAIT)`.
    pub(crate) fn peek(self) -> Peek {
        let mut byte = 0_u8;
        // SAFETY: a one-byte buffer that lives across the call; MSG_PEEK leaves the data in place.
        let n = unsafe {
            libc::recv(self.0, std::ptr::addr_of_mut!(byte).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        match n {
            1.. => Peek::Readable,
            0 => Peek::Closed,
            _ => match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Peek::Quiet,
                _ => Peek::Closed,
            },
        }
    }

    /// Its descriptor, to be kept in an atomic ([`crate::watch`]).
    pub(crate) fn raw(self) -> RawFd {
        self.0
    }

    /// The socket whose descriptor [`Socket::raw`] gave.
    pub(crate) fn from_raw(fd: RawFd) -> Socket {
        Socket(fd)
    }

    /// Shuts the socket down both ways: a read blocked on it returns at once.
    pub(crate) fn shutdown(self) {
        // SAFETY: see the module documentation; `shutdown` on any descriptor number is memory-safe.
        unsafe {
            libc::shutdown(self.0, libc::SHUT_RDWR);
        }
    }
}

/// Claims the one unclaimed socket descriptor of this process that `matches`, if exactly one does.
fn claim_unique(matches: impl Fn(RawFd) -> bool) -> Option<Socket> {
    let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
    let claimed = claimed.get_or_insert_with(HashSet::new);
    let mut found = None;
    for fd in descriptors() {
        if claimed.contains(&fd) || !matches(fd) {
            continue;
        }
        if found.is_some() {
            return None; // Two candidates: do not guess.
        }
        found = Some(fd);
    }
    claimed.insert(found?);
    found.map(Socket)
}

/// This process's open file descriptors.
fn descriptors() -> impl Iterator<Item = RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse::<RawFd>().ok()))
}

/// The inode of socket `fd` (`/proc/self/fd/N` links to `socket:[INODE]`).
fn inode(fd: RawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

fn connected_to_any(fd: RawFd, peers: &[Peer]) -> bool {
    peers.iter().any(|peer| is_connected_to(fd, peer))
}

fn is_connected_to(fd: RawFd, peer: &Peer) -> bool {
    match peer {
        Peer::Tcp(port_number) => port(fd, libc::getpeername) == Some(*port_number),
        Peer::Unix(path) => unix_peer(fd).is_some_and(|peer| peer == *path),
    }
}

/// The path of the Unix socket `fd` is connected to.
fn unix_peer(fd: RawFd) -> Option<PathBuf> {
    // SAFETY: a zeroed `sockaddr_un` is a valid value, and its size is what we pass.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>()).ok()?;
    // SAFETY: the buffer and its length are valid for writing; the call fails harmlessly on a descriptor
    // that is not a socket.
    let result = unsafe { libc::getpeername(fd, std::ptr::addr_of_mut!(address).cast(), &raw mut len) };
    if result != 0 || libc::c_int::from(address.sun_family) != libc::AF_UNIX {
        return None;
    }
    let path: Vec<u8> =
        address.sun_path.iter().take_while(|&&c| c != 0).map(|&c| c.to_ne_bytes()[0]).collect();
    Some(PathBuf::from(OsStr::from_bytes(&path)))
}

/// A TCP socket's bytes received and bytes acknowledged by its peer, from `TCP_INFO`.
fn counters(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: a zeroed `tcp_info` is a valid value, and its size is what we pass.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: the buffer and its length are valid for writing; the call fails harmlessly on a descriptor
    // that is not a TCP socket.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &raw mut len,
        )
    };
    (result == 0).then_some((info.tcpi_bytes_received, info.tcpi_bytes_acked))
}

type AddressCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// The TCP port of `fd`'s local or peer address (`call` is `getsockname` or `getpeername`).
fn port(fd: RawFd, call: AddressCall) -> Option<u16> {
    // SAFETY: a zeroed `sockaddr_storage` is a valid value, and its size is what we pass.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).ok()?;
    // SAFETY: the buffer and its length are valid for writing; the call fails harmlessly on a descriptor
    // that is not a socket.
    let result = unsafe { call(fd, std::ptr::addr_of_mut!(storage).cast(), &raw mut len) };
    if result != 0 {
        return None;
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`.
            let address: libc::sockaddr_in = unsafe { std::ptr::read(std::ptr::addr_of!(storage).cast()) };
            Some(u16::from_be(address.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a `sockaddr_in6`.
            let address: libc::sockaddr_in6 = unsafe { std::ptr::read(std::ptr::addr_of!(storage).cast()) };
            Some(u16::from_be(address.sin6_port))
        }
        _ => None,
    }
}
