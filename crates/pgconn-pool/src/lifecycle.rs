//! The pool's decisions about one connection, as pure functions of what it knows, so that they can be
//! tested without a server.
//!
//! ```text
//!  connecting ──ok──> idle ──checkout──> checked out ──return──> returned ──clean──────> idle
//!      │               │  ↑                   │                      ├──reset ok──────> idle
//!   failed             │  └──validated────┐   │ failed in use        ├──reset failed──> closing
//!                      │                  │   ↓                      └──panic/broken──> closing
//!                      ├──peek: readable──┘  broken ──return──> closing ──> closed
//!                      ├──peek: closed, expired, validation failed ──────> closing
//!                      └──idle past IDLE_TIMEOUT (r2d2's reaper) ────────> closing
//! ```
//!
//! - **checkout** ([`at_checkout`]): an expired connection is closed; one whose socket shows that the
//!   server closed it (end of file) is closed; one with bytes waiting (a FATAL message before the close,
//!   a notification, a TLS record) is validated with a round trip, which reads them; a quiet one returned
//!   less than [`crate::VALIDATION_BYPASS`] ago is handed out with no round trip; an older one is
//!   validated. The look at the socket is one non-blocking `recv(MSG_PEEK)`, about a microsecond, skipped
//!   for a connection returned less than [`crate::PEEK_BYPASS`] (1 ms) ago.
//! - **return** ([`at_return`]): a connection that broke in use, or whose borrower is panicking, is
//!   closed; one with a transaction open, failed or unknown is rolled back; one whose session state may
//!   have changed (direct tier, or PgBouncer in session mode) gets `DISCARD ALL`, which keeps the startup
//!   settings; a reset runs under a deadline, and a connection that cannot be reset within it, or whose
//!   socket is not known (so the reset could not be bounded), is closed. A connection whose statements
//!   cannot have changed anything goes back as it is, with no round trip.

use std::time::Duration;

use crate::manager::VALIDATION_BYPASS;
use crate::metrics::CloseReason;
use crate::session::TxStatus;

/// What a non-blocking look at an idle connection's socket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peek {
    /// Nothing to read: the server has said nothing since the last call.
    Quiet,
    /// Bytes are waiting (a FATAL before a close, a notification, a TLS record).
    Readable,
    /// End of file or a socket error: the server or the network closed it.
    Closed,
    /// The pool does not know this connection's socket.
    Unknown,
    /// Not looked at: it came back less than [`crate::PEEK_BYPASS`] ago.
    Skipped,
}

/// What the pool knows of an idle connection at checkout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Idle {
    /// Past its `DB_CONN_MAX_AGE` deadline.
    pub(crate) expired: bool,
    /// The driver already knows it is closed.
    pub(crate) closed: bool,
    /// What its socket shows.
    pub(crate) peek: Peek,
    /// Since it was returned, or opened if it never was.
    pub(crate) quiet_for: Duration,
}

/// What to do with an idle connection at checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkout {
    /// Hand it out as it is.
    Hand,
    /// Validate it with a round trip first.
    Validate,
    /// Close it, for this reason.
    Close(CloseReason),
}

pub(crate) fn at_checkout(idle: Idle) -> Checkout {
    if idle.expired {
        return Checkout::Close(CloseReason::MaxAge);
    }
    if idle.closed || idle.peek == Peek::Closed {
        return Checkout::Close(CloseReason::ClosedByServer);
    }
    let quiet = matches!(idle.peek, Peek::Quiet | Peek::Unknown | Peek::Skipped);
    if quiet && idle.quiet_for < VALIDATION_BYPASS { Checkout::Hand } else { Checkout::Validate }
}

/// What the pool knows of a connection being returned.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::struct_excessive_bools)] // independent facts, each read once
pub(crate) struct Returned {
    /// Its borrower's thread is unwinding from a panic.
    pub(crate) panicking: bool,
    /// It failed in use (or is marked to be closed for another reason).
    pub(crate) closing: Option<CloseReason>,
    /// Its transaction status.
    pub(crate) tx: TxStatus,
    /// Its session state may have changed.
    pub(crate) dirty: bool,
    /// Session state is reset on this tier (direct, or PgBouncer in session mode); through PgBouncer in
    /// transaction mode it is refused before it is sent instead.
    pub(crate) resets_session: bool,
    /// A reset would run under a deadline (the pool knows the connection's socket).
    pub(crate) bounded: bool,
}

impl Returned {
    /// `ROLLBACK` is needed: a transaction is open, failed or unknown.
    fn rollback(self) -> bool {
        self.tx != TxStatus::Idle
    }

    /// `DISCARD ALL` is needed: the session may have changed, on a tier that resets it.
    fn discard(self) -> bool {
        self.dirty && self.resets_session
    }

    /// Some reset is needed (whether or not it could be bounded).
    pub(crate) fn needs_reset(self) -> bool {
        self.rollback() || self.discard()
    }
}

/// What to do with a returned connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    /// Back into the pool as it is.
    Keep,
    /// Reset it, then back into the pool.
    Reset {
        /// `ROLLBACK` first.
        rollback: bool,
        /// `DISCARD ALL`.
        discard: bool,
    },
    /// Close it, for this reason.
    Close(CloseReason),
}

pub(crate) fn at_return(returned: Returned) -> Return {
    if let Some(reason) = returned.closing {
        return Return::Close(reason);
    }
    if returned.panicking {
        return Return::Close(CloseReason::Panicked);
    }
    match (returned.needs_reset(), returned.bounded) {
        (false, _) => Return::Keep,
        (true, true) => Return::Reset { rollback: returned.rollback(), discard: returned.discard() },
        (true, false) => Return::Close(CloseReason::Unclean),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Checkout, Idle, Peek, Return, Returned, at_checkout, at_return};
    use crate::metrics::CloseReason;
    use crate::session::TxStatus;

    #[track_caller]
    fn checkout(peek: Peek, idle_ms: u64, expected: Checkout) {
        let idle = Idle { expired: false, closed: false, peek, quiet_for: Duration::from_millis(idle_ms) };
        assert_eq!(at_checkout(idle), expected, "{idle:?}");
    }

    #[test]
    fn checkout_costs_a_round_trip_only_when_the_socket_or_the_clock_asks_for_one() {
        checkout(Peek::Quiet, 10, Checkout::Hand);
        checkout(Peek::Unknown, 10, Checkout::Hand);
        checkout(Peek::Skipped, 0, Checkout::Hand);
        checkout(Peek::Quiet, 600, Checkout::Validate);
        checkout(Peek::Readable, 10, Checkout::Validate);
        checkout(Peek::Closed, 10, Checkout::Close(CloseReason::ClosedByServer));
        let base = Idle { expired: false, closed: true, peek: Peek::Quiet, quiet_for: Duration::ZERO };
        assert_eq!(at_checkout(base), Checkout::Close(CloseReason::ClosedByServer));
        let expired = Idle { expired: true, closed: false, ..base };
        assert_eq!(at_checkout(expired), Checkout::Close(CloseReason::MaxAge));
    }

    const CLEAN: Returned = Returned {
        panicking: false,
        closing: None,
        tx: TxStatus::Idle,
        dirty: false,
        resets_session: true,
        bounded: true,
    };

    #[track_caller]
    fn check(returned: Returned, expected: Return) {
        assert_eq!(at_return(returned), expected, "{returned:?}");
    }

    #[test]
    fn a_clean_connection_goes_back_as_it_is() {
        check(CLEAN, Return::Keep);
        check(Returned { bounded: false, ..CLEAN }, Return::Keep);
        // Through PgBouncer in transaction mode session state is refused, not reset.
        check(Returned { dirty: true, resets_session: false, ..CLEAN }, Return::Keep);
    }

    #[test]
    fn an_open_failed_or_unknown_transaction_is_rolled_back() {
        for tx in [TxStatus::InTransaction, TxStatus::Failed, TxStatus::Unknown] {
            check(Returned { tx, ..CLEAN }, Return::Reset { rollback: true, discard: false });
            check(
                Returned { tx, resets_session: false, dirty: true, ..CLEAN },
                Return::Reset { rollback: true, discard: false },
            );
            check(Returned { tx, dirty: true, ..CLEAN }, Return::Reset { rollback: true, discard: true });
        }
        check(Returned { dirty: true, ..CLEAN }, Return::Reset { rollback: false, discard: true });
    }

    #[test]
    fn what_cannot_be_reset_safely_is_closed() {
        check(Returned { panicking: true, ..CLEAN }, Return::Close(CloseReason::Panicked));
        check(
            Returned { panicking: true, tx: TxStatus::InTransaction, ..CLEAN },
            Return::Close(CloseReason::Panicked),
        );
        check(Returned { closing: Some(CloseReason::Broken), ..CLEAN }, Return::Close(CloseReason::Broken));
        check(
            Returned { tx: TxStatus::Failed, bounded: false, ..CLEAN },
            Return::Close(CloseReason::Unclean),
        );
        check(Returned { dirty: true, bounded: false, ..CLEAN }, Return::Close(CloseReason::Unclean));
    }
}
