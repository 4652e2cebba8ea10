//! The one place pgconn-pool touches a connection's socket from outside its driver: to look at it without
//! reading (is the connection still open?) and to close it under a call that the server will never answer.
//!
//! The driver ([`crate::driver`]) reads only while a call is in progress, so a server that closed an idle
//! connection is noticed by the next statement, which fails; and a call to a server that stopped (SIGSTOP,
//! a frozen VM, a network path that drops packets without a reset) waits as long as the kernel keeps the
//! connection, since neither `statement_timeout` nor a cancel request can act without that server. A
//! non-blocking `recv(MSG_PEEK)` sees the close without a round trip (pgx does the same), and shutting
//! the socket down from another thread makes a waiting call return at once.
//!
//! The descriptor is the driver's own (it opened the socket), so it is known from the start.
//!
//! Safety of the `unsafe` calls here: they are `recv` and `shutdown` on a descriptor number, with a buffer
//! of the right size; neither can break memory safety. What could go wrong is acting on the wrong
//! descriptor, and the [`crate::deadline`] registry prevents that: a descriptor is shut down only while the
//! call using it is still registered, and the connection (hence its socket) cannot be closed before that
//! call returns and unregisters.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

use crate::lifecycle::Peek;

/// A connection's socket in this process (its descriptor; the driver owns and closes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Socket(RawFd);

impl Socket {
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
