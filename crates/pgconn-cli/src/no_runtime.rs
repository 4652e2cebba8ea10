//! `pgconn load --dedicated --no-runtime`: a measurement baseline, not part of the pool.
//!
//! The `postgres` crate drives each connection with a tokio runtime of its own (two `eventpoll`
//! descriptors and an `eventfd` beside the socket, an `epoll_wait` or two per round trip, and the
//! runtime's bookkeeping on every call). This baseline runs the same driver, `tokio-postgres`, on the
//! request thread without any runtime: a nonblocking socket, readiness remembered as tokio remembers it,
//! and `poll(2)` when nothing can proceed. What it measures is what a pgconn connection would cost
//! without that runtime (`docs/pool.md`, "What a connection costs"). TCP and Unix sockets, no TLS, one
//! host; the settings' connect timeout bounds the connect.

use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use pgconn_config::{Host, Settings, SslMode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, NoTls};

/// One connection: `tokio-postgres`'s client, and the driver that runs its calls.
pub(crate) struct Client {
    pub(crate) client: tokio_postgres::Client,
    pub(crate) driver: Driver,
}

/// The connection future and what it waits on.
pub(crate) struct Driver {
    connection: Pin<Box<tokio_postgres::Connection<Socket, NoTlsStream>>>,
    io: Arc<Io>,
    woken: Arc<Woken>,
    waker: Waker,
}

/// What the socket is known to be ready for, shared by the socket (which learns it is not) and the
/// driver (which learns from `poll(2)` that it is).
struct Io {
    fd: RawFd,
    readable: AtomicBool,
    write_blocked: AtomicBool,
}

/// The socket, nonblocking, owned.
struct Socket {
    fd: OwnedFd,
    io: Arc<Io>,
}

/// Set by every wake-up: a future that was woken is polled again before the thread waits.
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

impl Client {
    /// Connects to the first host of the settings' target, bounded by their connect timeout.
    pub(crate) fn connect(settings: &Settings) -> Result<Client, pgconn_pool::Error> {
        let target = &settings.target;
        let failed = |reason: String| pgconn_pool::Error::Unsupported(format!("--no-runtime: {reason}"));
        if matches!(target.sslmode, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) {
            return Err(failed(format!(
                "sslmode={} asks for TLS, which this baseline does not do; measure it on a target without TLS",
                target.sslmode.as_str()
            )));
        }
        let timeout = settings.connect_timeout;
        let deadline = Instant::now() + timeout;
        let endpoint = target.primary();
        let fd: OwnedFd = match &endpoint.host {
            Host::Tcp(name) => {
                let address = match endpoint.hostaddr {
                    Some(address) => std::net::SocketAddr::new(address, endpoint.port),
                    None => std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), endpoint.port))
                        .map_err(|e| failed(format!("cannot resolve {name}: {e}")))?
                        .next()
                        .ok_or_else(|| failed(format!("{name} has no address")))?,
                };
                let stream = TcpStream::connect_timeout(&address, timeout)
                    .map_err(|e| failed(format!("cannot connect to {address}: {e}")))?;
                stream.set_nodelay(true).map_err(|e| failed(e.to_string()))?;
                stream.set_nonblocking(true).map_err(|e| failed(e.to_string()))?;
                stream.into()
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", endpoint.port));
                let stream = UnixStream::connect(&path)
                    .map_err(|e| failed(format!("cannot connect to {}: {e}", path.display())))?;
                stream.set_nonblocking(true).map_err(|e| failed(e.to_string()))?;
                stream.into()
            }
        };
        let io = Arc::new(Io {
            fd: fd.as_raw_fd(),
            readable: AtomicBool::new(true),
            write_blocked: AtomicBool::new(false),
        });
        let mut config = tokio_postgres::Config::new();
        config.user(&target.user).dbname(&target.dbname).ssl_mode(tokio_postgres::config::SslMode::Disable);
        if let Some(password) = &target.password {
            config.password(password.expose());
        }
        config.application_name(settings.application_name());
        let woken = Arc::new(Woken(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&woken));
        let socket = Socket { fd, io: Arc::clone(&io) };
        let mut connecting = pin!(config.connect_raw(socket, NoTls));
        let mut cx = Context::from_waker(&waker);
        let (client, connection) = loop {
            if let Poll::Ready(result) = connecting.as_mut().poll(&mut cx) {
                break result.map_err(|e| failed(format!("cannot connect: {e}")))?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait(&io, Some(left)).map_err(|e| failed(e.to_string()))? {
                return Err(failed(format!("no connection within {} ms", timeout.as_millis())));
            }
        };
        Ok(Client { client, driver: Driver { connection: Box::pin(connection), io, woken, waker } })
    }
}

impl Driver {
    /// Runs `future` (a call on the client) to its end on this thread, driving the connection meanwhile.
    pub(crate) fn block_on<T>(
        &mut self,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, pgconn_pool::Error> {
        let failed =
            |e: &dyn std::fmt::Display| pgconn_pool::Error::Unsupported(format!("--no-runtime: {e}"));
        let mut future = pin!(future);
        let mut cx = Context::from_waker(&self.waker);
        loop {
            self.woken.0.store(false, Ordering::Release);
            if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
                return result.map_err(|e| failed(&e));
            }
            // The connection writes what the call queued and reads what the server sent, until the
            // socket has nothing more for it.
            loop {
                match self.connection.as_mut().poll_message(&mut cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => log::info!("{notice}"),
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => return Err(failed(&e)),
                    Poll::Ready(None) => return Err(failed(&"the server closed the connection")),
                }
            }
            if !self.woken.0.load(Ordering::Acquire) {
                wait(&self.io, None).map_err(|e| failed(&e))?;
            }
        }
    }
}

/// Waits until the socket is readable (or writable, if a write was blocked), at most `timeout`;
/// whether it became ready.
fn wait(io: &Io, timeout: Option<Duration>) -> io::Result<bool> {
    let write = io.write_blocked.swap(false, Ordering::AcqRel);
    let mut fds = [libc::pollfd {
        fd: io.fd,
        events: libc::POLLIN | if write { libc::POLLOUT } else { 0 },
        revents: 0,
    }];
    let millis = timeout.map_or(-1, |t| i32::try_from(t.as_millis().max(1)).unwrap_or(i32::MAX));
    // SAFETY: one pollfd that lives across the call.
    #[allow(unsafe_code)]
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
    match n {
        0 => Ok(false),
        1.. => {
            io.readable.store(true, Ordering::Release);
            Ok(true)
        }
        _ => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted { Ok(true) } else { Err(error) }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.io.readable.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Into the buffer's spare capacity, uninitialized, as tokio's own sockets read: initializing it
        // first would write 8 KiB of zeros on every read.
        // SAFETY: `recv` writes at most `unfilled.len()` bytes into memory the buffer owns, and only the
        // `n` bytes it wrote are marked initialized.
        #[allow(unsafe_code)]
        let read = unsafe {
            let unfilled = buf.unfilled_mut();
            let room = unfilled.len();
            let n = libc::recv(self.fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), room, 0);
            usize::try_from(n).map(|n| {
                buf.assume_init(n);
                buf.advance(n);
                n < room
            })
        };
        match read {
            Ok(short) => {
                // A short read emptied the socket (tokio infers the same): no `recv` just to hear EAGAIN.
                if short {
                    self.io.readable.store(false, Ordering::Release);
                }
                Poll::Ready(Ok(()))
            }
            Err(_) => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => {
                    self.io.readable.store(false, Ordering::Release);
                    Poll::Pending
                }
                e if e.kind() == io::ErrorKind::Interrupted => Poll::Pending,
                e => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // SAFETY: `send` reads at most `buf.len()` bytes of `buf`.
        #[allow(unsafe_code)]
        let n =
            unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        match usize::try_from(n) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(_) => match io::Error::last_os_error() {
                e if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    self.io.write_blocked.store(true, Ordering::Release);
                    Poll::Pending
                }
                e => Poll::Ready(Err(e)),
            },
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
