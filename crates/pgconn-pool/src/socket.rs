//! The one place pgconn-pool touches a connection's socket directly: to close it under a call that the
//! server will never answer.
//!
//! The `postgres` crate reads its socket inside a blocking call and offers no way to interrupt it: a
//! server process that stops (SIGSTOP, a frozen VM, a network path that drops packets without a reset)
//! holds the caller forever, and neither the server's `statement_timeout` nor a cancel request can act,
//! since both need that server process. Shutting the socket down from another thread makes the blocked
//! read return at once. To know which socket, each new TCP connection asks the server for the port it
//! sees us on (`inet_client_port()`, one round trip per new connection) and finds the socket of this
//! process with that local port and the server's port as its peer.
//!
//! Safety of the `unsafe` calls here: they are `getsockname`, `getpeername` and `shutdown` on file
//! descriptor numbers, with buffers of the right size; none of them can break memory safety. What could go
//! wrong is acting on the wrong descriptor, and the [`crate::deadline`] registry prevents that: a
//! descriptor is shut down only while the call using it is still registered, and the connection (hence
//! its socket) cannot be closed before that call returns and unregisters.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// The connection's socket in this process, found from its local and peer ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Socket(RawFd);

impl Socket {
    /// Finds the TCP socket of `client`: asks the server for the ports it sees, then looks through this
    /// process's descriptors. `None` for a Unix-socket connection or when it cannot be told apart.
    pub(crate) fn of(client: &mut postgres::Client) -> Option<Socket> {
        let row = client.query_typed_one("SELECT inet_client_port(), inet_server_port()", &[]).ok()?;
        let (local, peer): (Option<i32>, Option<i32>) = (row.get(0), row.get(1));
        let (local, peer) = (u16::try_from(local?).ok()?, u16::try_from(peer?).ok()?);
        let mut found = None;
        for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse::<RawFd>().ok()) else {
                continue;
            };
            if port(fd, libc::getsockname) == Some(local) && port(fd, libc::getpeername) == Some(peer) {
                if found.is_some() {
                    return None; // Two candidates: do not guess.
                }
                found = Some(Socket(fd));
            }
        }
        found
    }

    /// Shuts the socket down both ways: a read blocked on it returns at once.
    pub(crate) fn shutdown(self) {
        // SAFETY: see the module documentation; `shutdown` on any descriptor number is memory-safe.
        unsafe {
            libc::shutdown(self.0, libc::SHUT_RDWR);
        }
    }
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
