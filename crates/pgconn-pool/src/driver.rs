//! A pooled connection's client: `tokio-postgres` driven on the calling thread, with no async runtime.
//!
//! The `postgres` crate wraps `tokio-postgres` in a tokio runtime per connection: two `eventpoll`
//! descriptors and an `eventfd` beside the socket, two `epoll_wait` calls per round trip, and the runtime's
//! bookkeeping on every call (about 28% of the client's instructions on a prepared `SELECT 1`,
//! `docs/pool.md`, "What the runtime costs"). A thread-per-request server blocks on its query anyway, so
//! here the calling thread drives the connection itself: the socket is nonblocking, a call polls its
//! future and the connection's until neither can move, and then the thread waits in `poll(2)` for the
//! socket. What the socket is ready for is remembered as tokio remembers it (a read that comes back short,
//! or with `EAGAIN`, means "wait before reading again"), so a round trip is three system calls: `sendto`,
//! `poll`, `recvfrom`.
//!
//! The socket is this module's own, so the pool knows its descriptor from the start (for looking at an idle
//! connection and for closing one under a hung call, [`crate::socket`]). Connecting follows
//! `tokio-postgres`'s own connect: each host in order (shuffled with `load_balance_hosts=random`), each of
//! its addresses, TCP keepalives and `TCP_USER_TIMEOUT` on the socket, TLS as [`crate::tls`] sets it up,
//! and `target_session_attrs` checked with `SHOW transaction_read_only`; every wait is bounded by the
//! connect deadline.
//!
//! [`Client`]'s methods are `postgres::Client`'s, with the same arguments, results and errors, for the
//! part of its API a pooled connection needs: statements, prepared statements, the simple query protocol,
//! `COPY`. Notifications are not kept (`LISTEN` needs a session of its own: [`crate::connect`]).
//!
//! Safety of the `unsafe` calls here: `recv`, `send`, `poll` and `setsockopt` on the socket this module
//! owns, with buffers and lengths that are valid for the call.
#![allow(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use pgconn_config::{ConnParams, Host, TargetSessionAttrs};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Error, NoTls, Row, SimpleQueryMessage, Statement, ToStatement};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A connection's TCP keepalive and user timeout, set on its socket (`connect.rs` has the defaults).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpOptions {
    pub(crate) keepalives: bool,
    pub(crate) idle: Duration,
    pub(crate) interval: Duration,
    pub(crate) count: u32,
    pub(crate) user_timeout: Duration,
}

/// Why a connect failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Resolving the host or opening the socket failed (`address` is `host:port` or the socket's path).
    Socket { address: String, error: io::Error },
    /// The server, TLS or authentication refused: the driver's error.
    Driver(Error),
    /// `target_session_attrs` asked for what this server's sessions are not: the driver's words for it
    /// (`database does not allow writes`, `database is not read only`).
    Attrs(&'static str),
    /// The connect deadline passed.
    TimedOut,
}

/// One connection to PostgreSQL (or PgBouncer), driven by the thread that calls it.
pub struct Client {
    inner: tokio_postgres::Client,
    driver: Driver,
    origin: Arc<Origin>,
}

/// Where a connection went and how, for its cancel requests (a connection of their own to the same
/// server).
struct Origin {
    address: String,
    target: Target,
    hostname: Option<String>,
    tls: Option<MakeRustlsConnect>,
    tcp: TcpOptions,
    /// The connect timeout, which bounds a cancel request too.
    timeout: Duration,
}

/// Cancels what a [`Client`] is running, from any thread ([`Client::cancel_token`]).
#[derive(Clone)]
pub struct CancelToken {
    token: tokio_postgres::CancelToken,
    origin: Arc<Origin>,
}

impl CancelToken {
    /// Asks the server to cancel the statement the connection is running now, over a connection of its
    /// own to the same address (TLS as the connection's), within the connect timeout. The server answers
    /// nothing: success means it received the request; the statement, if still running, then fails with
    /// `57014` (`query_canceled`).
    ///
    /// # Errors
    /// When the request could not be sent (the server unreachable, TLS refused, the timeout passed).
    pub fn cancel_query(&self) -> Result<(), Error> {
        let origin = &*self.origin;
        let deadline = Instant::now() + origin.timeout;
        let failed = |e: ConnectError| match e {
            ConnectError::Driver(e) => e,
            ConnectError::Socket { error, .. } => io_error(error),
            ConnectError::Attrs(what) => io_error(io::Error::other(what)),
            ConnectError::TimedOut => {
                io_error(io::Error::new(io::ErrorKind::TimedOut, "the cancel request timed out"))
            }
        };
        let (socket, mut driver) =
            open_socket(&origin.address, &origin.target, origin.tcp, deadline).map_err(failed)?;
        match (&origin.tls, &origin.hostname) {
            (Some(tls), Some(hostname)) => {
                let connect = tls_for(tls, hostname).map_err(io_error)?;
                run(&mut driver, self.token.cancel_query_raw(socket, connect), deadline).map_err(failed)
            }
            _ => run(&mut driver, self.token.cancel_query_raw(socket, NoTls), deadline).map_err(failed),
        }
    }
}

/// The connection's half: the protocol state machine, and what its socket is ready for.
struct Driver {
    /// `None` once it ended (the server closed it, or it failed): calls then fail as closed.
    connection: Option<Connection>,
    /// The socket's descriptor, open until the client is dropped, even after the connection ended: the
    /// pool keeps its number (to look at it, to shut it down under a hung call) for as long as it holds the
    /// client, and a number closed early could meanwhile name another connection's socket.
    _fd: Arc<OwnedFd>,
    io: Arc<Io>,
    woken: Arc<Woken>,
    waker: Waker,
}

/// The TLS stream of `tokio-postgres-rustls` (its type is not exported by name).
type TlsStream = <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<Socket>>::Stream;

// The plain connection, the common one, inline; a TLS connection's state (five times larger) boxed.
#[allow(clippy::large_enum_variant)]
enum Connection {
    Plain(tokio_postgres::Connection<Socket, NoTlsStream>),
    Tls(Box<tokio_postgres::Connection<Socket, TlsStream>>),
}

impl Connection {
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<AsyncMessage, Error>>> {
        match self {
            Connection::Plain(connection) => connection.poll_message(cx),
            Connection::Tls(connection) => connection.poll_message(cx),
        }
    }
}

/// What the socket is known to be ready for: the socket learns it is not, `poll(2)` that it is.
struct Io {
    fd: RawFd,
    readable: AtomicBool,
    write_blocked: AtomicBool,
}

/// The connection's socket, nonblocking; its descriptor is closed when both the connection and its
/// [`Driver`] are gone.
pub(crate) struct Socket {
    fd: Arc<OwnedFd>,
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
    /// Opens one connection with the pool's settings (target, TLS, application name, statement timeout,
    /// connect deadline, TCP keepalives), outside any pool: pgconn's own connection, as the pool's are.
    ///
    /// # Errors
    /// As [`crate::Pool::new`].
    pub fn connect(settings: &pgconn_config::Settings) -> Result<Client, crate::Error> {
        crate::connect::Connector::new(settings)?.connect()
    }

    /// Opens a connection to the first host of `params` that takes it, by `config`'s startup parameters and
    /// authentication, with `tls` for TCP hosts (`None`: plain only), within `deadline`.
    pub(crate) fn open(
        params: &ConnParams,
        config: &tokio_postgres::Config,
        tls: Option<&MakeRustlsConnect>,
        tcp: TcpOptions,
        timeout: Duration,
    ) -> Result<Client, ConnectError> {
        let deadline = Instant::now() + timeout;
        let mut order: Vec<usize> = (0..params.endpoints.len()).collect();
        if params.load_balance_hosts {
            shuffle(&mut order);
        }
        let mut last = ConnectError::Socket {
            address: String::new(),
            error: io::Error::new(io::ErrorKind::InvalidInput, "no host to connect to"),
        };
        for i in order {
            let endpoint = &params.endpoints[i];
            // `hostaddr`, when given, is where to connect (over TCP, as libpq does), whatever `host` says.
            let attempts: Vec<(String, Target)> = match (&endpoint.host, endpoint.hostaddr) {
                (_, Some(address)) => {
                    let to = SocketAddr::new(address, endpoint.port);
                    vec![(to.to_string(), Target::Tcp(to))]
                }
                (Host::Unix(dir), None) => {
                    let path = dir.join(format!(".s.PGSQL.{}", endpoint.port));
                    vec![(path.display().to_string(), Target::Unix(path))]
                }
                (Host::Tcp(name), None) => match (name.as_str(), endpoint.port).to_socket_addrs() {
                    Ok(addresses) => {
                        let mut addresses: Vec<SocketAddr> = addresses.collect();
                        if addresses.is_empty() {
                            last = ConnectError::Socket {
                                address: format!("{name}:{}", endpoint.port),
                                error: io::Error::new(
                                    io::ErrorKind::InvalidInput,
                                    "could not resolve any addresses",
                                ),
                            };
                        }
                        if params.load_balance_hosts {
                            shuffle(&mut addresses);
                        }
                        addresses
                            .into_iter()
                            .map(|a| (format!("{name}:{}", endpoint.port), Target::Tcp(a)))
                            .collect()
                    }
                    Err(error) => {
                        last = ConnectError::Socket { address: format!("{name}:{}", endpoint.port), error };
                        continue;
                    }
                },
            };
            let hostname = match &endpoint.host {
                Host::Tcp(name) => Some(name.as_str()),
                Host::Unix(_) => None,
            };
            for (address, target) in attempts {
                match connect_once(
                    &address,
                    &target,
                    hostname,
                    config,
                    tls,
                    tcp,
                    (deadline, timeout),
                    params.target_session_attrs,
                ) {
                    Ok(client) => return Ok(client),
                    Err(ConnectError::TimedOut) => return Err(ConnectError::TimedOut),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    /// The socket's descriptor, for looking at it and for shutting it down under a hung call.
    pub(crate) fn fd(&self) -> RawFd {
        self.driver.io.fd
    }

    /// Runs a statement (prepared, or a text prepared unnamed) and returns its rows.
    ///
    /// # Errors
    /// The server's error, or the connection's.
    pub fn query<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.driver.block_on(self.inner.query(query, params))
    }

    /// Runs a statement that returns exactly one row.
    ///
    /// # Errors
    /// As [`Client::query`], and when it returns no row or more than one.
    pub fn query_one<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.driver.block_on(self.inner.query_one(query, params))
    }

    /// Runs a statement that returns at most one row.
    ///
    /// # Errors
    /// As [`Client::query`], and when it returns more than one row.
    pub fn query_opt<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.driver.block_on(self.inner.query_opt(query, params))
    }

    /// Runs a statement text with parameters of the given types, unnamed, in one round trip.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn query_typed(
        &mut self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        self.driver.block_on(self.inner.query_typed(query, params))
    }

    /// [`Client::query_typed`] for exactly one row.
    ///
    /// # Errors
    /// As [`Client::query_one`].
    pub fn query_typed_one(
        &mut self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Row, Error> {
        self.driver.block_on(self.inner.query_typed_one(query, params))
    }

    /// [`Client::query_typed`] for at most one row.
    ///
    /// # Errors
    /// As [`Client::query_opt`].
    pub fn query_typed_opt(
        &mut self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Option<Row>, Error> {
        self.driver.block_on(self.inner.query_typed_opt(query, params))
    }

    /// Runs a statement and returns the number of rows it affected.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn execute<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.driver.block_on(self.inner.execute(query, params))
    }

    /// [`Client::execute`] of a text with parameters of the given types, unnamed, in one round trip.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn execute_typed(
        &mut self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, Error> {
        self.driver.block_on(self.inner.execute_typed(query, params))
    }

    /// Prepares a statement on this connection.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn prepare(&mut self, query: &str) -> Result<Statement, Error> {
        self.driver.block_on(self.inner.prepare(query))
    }

    /// Prepares a statement with the given parameter types.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn prepare_typed(&mut self, query: &str, types: &[Type]) -> Result<Statement, Error> {
        self.driver.block_on(self.inner.prepare_typed(query, types))
    }

    /// Runs one or more statements with the simple query protocol; values come back as text.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn simple_query(&mut self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.driver.block_on(self.inner.simple_query(query))
    }

    /// Runs one or more statements, without parameters or results.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn batch_execute(&mut self, query: &str) -> Result<(), Error> {
        self.driver.block_on(self.inner.batch_execute(query))
    }

    /// Starts a `COPY ... FROM STDIN`: write the data to the writer, then [`CopyInWriter::finish`] it.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn copy_in<T>(&mut self, query: &T) -> Result<CopyInWriter<'_>, Error>
    where
        T: ?Sized + ToStatement,
    {
        let sink = self.driver.block_on(self.inner.copy_in(query))?;
        Ok(CopyInWriter { client: self, sink: Box::pin(sink), buffer: BytesMut::new() })
    }

    /// Starts a `COPY ... TO STDOUT`: read the data from the reader.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn copy_out<T>(&mut self, query: &T) -> Result<CopyOutReader<'_>, Error>
    where
        T: ?Sized + ToStatement,
    {
        let stream = self.driver.block_on(self.inner.copy_out(query))?;
        Ok(CopyOutReader { client: self, stream: Box::pin(stream), chunk: Bytes::new() })
    }

    /// Starts a transaction (`BEGIN`): the [`ClientTransaction`] derefs to this client, so every method
    /// runs in it; [`ClientTransaction::commit`] commits it, and dropping it without a commit rolls it back
    /// (one round trip, so that no lock it took outlives it).
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn transaction(&mut self) -> Result<ClientTransaction<'_>, Error> {
        self.batch_execute("BEGIN")?;
        Ok(ClientTransaction { client: self, depth: 0, done: false })
    }

    /// What cancels the statement this connection is running, from another thread.
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken { token: self.inner.cancel_token(), origin: Arc::clone(&self.origin) }
    }

    /// Whether the connection has ended (the server closed it, or it failed).
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed() || self.driver.connection.is_none()
    }

    /// One empty round trip within `timeout`: whether the connection still works.
    ///
    /// # Errors
    /// The connection's error, or a timeout (after which the connection is in an unknown state: close it).
    pub fn is_valid(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        match self.driver.block_on_until(self.inner.simple_query(""), Some(deadline)) {
            Some(result) => result.map(drop),
            None => Err(Error::__private_api_timeout()),
        }
    }

    /// Forgets the types the driver looked up, and its statements for looking them up (after `DISCARD
    /// ALL`, which deallocated them).
    pub fn clear_type_cache(&self) {
        self.inner.clear_type_cache();
    }
}

impl Drop for Client {
    /// Says goodbye (`Terminate`) if the socket takes it at once, and closes the socket: never waits for
    /// the server, which may be gone.
    fn drop(&mut self) {
        self.inner.__private_api_close();
        // Replies that already arrived (to a statement's Close queued after the last call) are read, so that
        // the driver may still queue its Terminate.
        self.driver.io.readable.store(true, Ordering::Release);
        if let Some(connection) = self.driver.connection.as_mut() {
            let mut cx = Context::from_waker(&self.driver.waker);
            for _ in 0..4 {
                if !matches!(connection.poll_message(&mut cx), Poll::Ready(Some(Ok(_)))) {
                    break;
                }
            }
        }
    }
}

impl Driver {
    /// Runs `future` (a call on the client) to its end on this thread, driving the connection meanwhile.
    fn block_on<T>(&mut self, future: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        self.block_on_until(future, None).unwrap_or_else(|| Err(Error::__private_api_timeout()))
    }

    /// [`Driver::block_on`] until `deadline`: `None` when it passed first.
    fn block_on_until<T>(
        &mut self,
        future: impl Future<Output = Result<T, Error>>,
        deadline: Option<Instant>,
    ) -> Option<Result<T, Error>> {
        let mut future = pin!(future);
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let mut polls_after_the_end = 0_u32;
        loop {
            if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
                return Some(result);
            }
            // Cleared after the call's poll: what it woke is the connection (a request queued), polled
            // next anyway. A wake during the connection's poll (a response for the call) is what counts.
            self.woken.0.store(false, Ordering::Release);
            let Some(connection) = self.connection.as_mut() else {
                // It ended: the call's channel to it is closed, and its next poll fails as closed. (Bounded
                // all the same: a call must never spin.)
                polls_after_the_end += 1;
                if polls_after_the_end > 2 {
                    return Some(Err(io_error(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the connection has ended",
                    ))));
                }
                continue;
            };
            // The connection writes what the call queued and reads what the server sent, until the socket
            // has nothing more for it.
            loop {
                match connection.poll_message(&mut cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => {
                        log::info!("{}: {}", notice.severity(), notice.message());
                    }
                    Poll::Ready(Some(Ok(AsyncMessage::Notification(notification)))) => {
                        log::debug!("notification on channel {} not kept", notification.channel());
                    }
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => {
                        self.connection = None;
                        return Some(Err(e));
                    }
                    Poll::Ready(None) => {
                        self.connection = None;
                        break;
                    }
                }
            }
            if self.connection.is_none() || self.woken.0.load(Ordering::Acquire) {
                continue;
            }
            let timeout = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return None,
                },
                None => None,
            };
            if let Err(e) = wait(&self.io, timeout) {
                // Not a state poll(2) returns for a socket we own; the connection cannot go on.
                log::warn!("waiting for a connection's socket failed, closing it: {e}");
                self.connection = None;
            }
        }
    }
}

/// Waits until the socket is readable (or writable, if a write was blocked), at most `timeout`.
fn wait(io: &Io, timeout: Option<Duration>) -> io::Result<()> {
    let write = io.write_blocked.swap(false, Ordering::AcqRel);
    let mut fds = [libc::pollfd {
        fd: io.fd,
        events: libc::POLLIN | if write { libc::POLLOUT } else { 0 },
        revents: 0,
    }];
    let millis = timeout.map_or(-1, |t| i32::try_from(t.as_millis().max(1)).unwrap_or(i32::MAX));
    // SAFETY: one pollfd that lives across the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
    if n < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(error) };
    }
    if n > 0 {
        // Readable, or closed, or failed: the next read says which.
        io.readable.store(true, Ordering::Release);
    }
    Ok(())
}

/// Where one connect attempt goes.
#[derive(Debug, Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

/// One attempt: the socket, the startup (TLS and authentication), and `target_session_attrs`.
#[allow(clippy::too_many_arguments)]
fn connect_once(
    address: &str,
    target: &Target,
    hostname: Option<&str>,
    config: &tokio_postgres::Config,
    tls: Option<&MakeRustlsConnect>,
    tcp: TcpOptions,
    (deadline, timeout): (Instant, Duration),
    attrs: TargetSessionAttrs,
) -> Result<Client, ConnectError> {
    let socket_failed = |error: io::Error| ConnectError::Socket { address: address.to_owned(), error };
    let (socket, mut driver) = open_socket(address, target, tcp, deadline)?;
    // TLS over TCP only: PostgreSQL offers none over a Unix socket (and libpq ignores sslmode there).
    let (inner, connection) = if let (Some(tls), Some(hostname)) = (tls, hostname) {
        let connect = tls_for(tls, hostname).map_err(socket_failed)?;
        let (client, connection) = run(&mut driver, config.connect_raw(socket, connect), deadline)?;
        (client, Connection::Tls(Box::new(connection)))
    } else {
        let mut plain;
        let config = if matches!(target, Target::Unix(_)) {
            plain = config.clone();
            plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
            &plain
        } else {
            config
        };
        let (client, connection) = run(&mut driver, config.connect_raw(socket, NoTls), deadline)?;
        (client, Connection::Plain(connection))
    };
    driver.connection = Some(connection);
    let origin = Arc::new(Origin {
        address: address.to_owned(),
        target: target.clone(),
        hostname: hostname.map(str::to_owned),
        tls: tls.cloned(),
        tcp,
        timeout,
    });
    let mut client = Client { inner, driver, origin };
    let wanted = match attrs {
        TargetSessionAttrs::Any => return Ok(client),
        TargetSessionAttrs::ReadWrite => ("off", "database does not allow writes"),
        TargetSessionAttrs::ReadOnly => ("on", "database is not read only"),
    };
    let show = client.inner.simple_query("SHOW transaction_read_only");
    let messages = match client.driver.block_on_until(show, Some(deadline)) {
        Some(messages) => messages.map_err(ConnectError::Driver)?,
        None => return Err(ConnectError::TimedOut),
    };
    let read_only = messages.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    });
    // As tokio-postgres: refused only for the opposite answer.
    if read_only.is_some_and(|value| value != wanted.0 && matches!(value, "on" | "off")) {
        Err(ConnectError::Attrs(wanted.1))
    } else {
        Ok(client)
    }
}

/// The TLS side of one connect (or cancel request) to `hostname`, from the pool's rustls configuration.
fn tls_for(
    tls: &MakeRustlsConnect,
    hostname: &str,
) -> io::Result<<MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<Socket>>::TlsConnect> {
    tokio_postgres::tls::MakeTlsConnect::<Socket>::make_tls_connect(&mut tls.clone(), hostname)
        .map_err(|e| io::Error::other(format!("TLS: {e}")))
}

/// Opens the socket to `target` (named `address` in errors), nonblocking, and a driver around it with no
/// connection yet.
fn open_socket(
    address: &str,
    target: &Target,
    tcp: TcpOptions,
    deadline: Instant,
) -> Result<(Socket, Driver), ConnectError> {
    let socket_failed = |error: io::Error| ConnectError::Socket { address: address.to_owned(), error };
    let left = || deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero());
    let fd: OwnedFd = match target {
        Target::Tcp(to) => {
            // A kernel timeout before the deadline (a blackholed address, about 2 minutes) is this address
            // failing, and the next one is tried; only the deadline itself ends the connect.
            let stream = TcpStream::connect_timeout(to, left().ok_or(ConnectError::TimedOut)?)
                .map_err(|e| if left().is_none() { ConnectError::TimedOut } else { socket_failed(e) })?;
            stream.set_nodelay(true).map_err(socket_failed)?;
            set_tcp_options(stream.as_raw_fd(), tcp).map_err(socket_failed)?;
            stream.set_nonblocking(true).map_err(socket_failed)?;
            stream.into()
        }
        Target::Unix(path) => connect_unix(path).map_err(socket_failed)?,
    };
    let io = Arc::new(Io {
        fd: fd.as_raw_fd(),
        readable: AtomicBool::new(true),
        write_blocked: AtomicBool::new(false),
    });
    let woken = Arc::new(Woken(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&woken));
    let fd = Arc::new(fd);
    let socket = Socket { fd: Arc::clone(&fd), io: Arc::clone(&io) };
    let driver = Driver { connection: None, _fd: fd, io, woken, waker };
    Ok((socket, driver))
}

/// A nonblocking connect to a Unix socket: it succeeds or fails at once (a server whose listen queue is full
/// answers `EAGAIN`), so it never waits for the server to accept.
fn connect_unix(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    use std::os::unix::ffi::OsStrExt as _;
    // SAFETY: a zeroed `sockaddr_un` is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= address.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the socket's path is too long"));
    }
    address.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap_or_default();
    for (to, &from) in address.sun_path.iter_mut().zip(bytes) {
        *to = libc::c_char::from_ne_bytes([from]);
    }
    // SAFETY: `socket` returns a new descriptor or -1; a new one is owned from here on.
    let fd = unsafe {
        libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by this thread and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>()).unwrap_or(0);
    // SAFETY: the address and its size are valid for the call.
    let result = unsafe { libc::connect(fd.as_raw_fd(), std::ptr::addr_of!(address).cast(), len) };
    if result == 0 { Ok(fd) } else { Err(io::Error::last_os_error()) }
}

/// Runs a future that uses the socket directly, before there is a connection (a connect's TLS, startup
/// message and authentication; a cancel request), to its end within `deadline`.
fn run<T>(
    driver: &mut Driver,
    future: impl Future<Output = Result<T, Error>>,
    deadline: Instant,
) -> Result<T, ConnectError> {
    let mut future = pin!(future);
    let waker = driver.waker.clone();
    let mut cx = Context::from_waker(&waker);
    loop {
        driver.woken.0.store(false, Ordering::Release);
        if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            return result.map_err(ConnectError::Driver);
        }
        if driver.woken.0.load(Ordering::Acquire) {
            continue;
        }
        let left = deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero());
        let Some(left) = left else { return Err(ConnectError::TimedOut) };
        wait(&driver.io, Some(left))
            .map_err(|error| ConnectError::Socket { address: String::new(), error })?;
    }
}

/// `SO_KEEPALIVE` with its idle time, interval and count, and `TCP_USER_TIMEOUT`, as `tokio-postgres`
/// sets them on the sockets it opens.
fn set_tcp_options(fd: RawFd, tcp: TcpOptions) -> io::Result<()> {
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| -> io::Result<()> {
        let size = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
        // SAFETY: an int option, its address and size valid for the call.
        let result = unsafe { libc::setsockopt(fd, level, name, std::ptr::addr_of!(value).cast(), size) };
        if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    };
    let secs = |d: Duration| libc::c_int::try_from(d.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    if tcp.keepalives {
        set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(tcp.idle))?;
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(tcp.interval))?;
        set(
            libc::IPPROTO_TCP,
            libc::TCP_KEEPCNT,
            libc::c_int::try_from(tcp.count).unwrap_or(libc::c_int::MAX),
        )?;
    }
    let millis = libc::c_int::try_from(tcp.user_timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, millis)
}

/// Shuffles `items` (for `load_balance_hosts=random`), from the standard library's random hasher keys.
fn shuffle<T>(items: &mut [T]) {
    use std::hash::BuildHasher as _;
    let random = std::collections::hash_map::RandomState::new();
    for i in (1..items.len()).rev() {
        let j = usize::try_from(random.hash_one(i) % (i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

/// A driver error that carries an I/O error, for a connect that failed before the driver ran (the error
/// types of the pool keep the driver's error as their source, and the driver makes its own only itself).
pub(crate) fn io_error(error: io::Error) -> Error {
    /// A stream whose every use fails with the error.
    struct Failed(Option<io::Error>);
    impl Failed {
        fn fail<T>(&mut self) -> Poll<io::Result<T>> {
            Poll::Ready(Err(self.0.take().unwrap_or_else(|| io::Error::other("failed"))))
        }
    }
    impl AsyncRead for Failed {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.fail()
        }
    }
    impl AsyncWrite for Failed {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
            self.fail()
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.fail()
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.fail()
        }
    }
    let mut config = tokio_postgres::Config::new();
    config.user("pgconn").ssl_mode(tokio_postgres::config::SslMode::Disable);
    let mut startup = pin!(config.connect_raw(Failed(Some(error)), NoTls));
    let mut cx = Context::from_waker(Waker::noop());
    match startup.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => e,
        // The stream fails at its first use, which is the startup message's write.
        _ => Error::__private_api_timeout(),
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.io.readable.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Into the buffer's spare capacity, uninitialized, as tokio's own sockets read: initializing it
        // first would write its 8 KiB of zeros on every read.
        // SAFETY: `recv` writes at most `room` bytes into memory the buffer owns, and only the `n` bytes it
        // wrote are marked initialized.
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
                // A short read emptied the socket (tokio infers the same): no `recv` only to hear EAGAIN.
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
        // SAFETY: `send` reads at most `buf.len()` bytes of `buf`. MSG_NOSIGNAL: a closed peer is an
        // error here, not a SIGPIPE for the process.
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
        // SAFETY: `shutdown` of the socket this value owns.
        unsafe {
            libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR);
        }
        Poll::Ready(Ok(()))
    }
}

/// A transaction on a [`Client`] ([`Client::transaction`]), rolled back when dropped without
/// [`ClientTransaction::commit`].
pub struct ClientTransaction<'a> {
    client: &'a mut Client,
    /// 0 for the transaction, n for the n-th nested savepoint.
    depth: u32,
    done: bool,
}

impl ClientTransaction<'_> {
    /// A transaction inside this one: a savepoint, committed by releasing it and rolled back to (as
    /// `postgres::Transaction::transaction` does); a `BEGIN` here would only warn and leave one
    /// transaction, so the inner commit would commit the outer work.
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn transaction(&mut self) -> Result<ClientTransaction<'_>, Error> {
        let depth = self.depth + 1;
        self.client.batch_execute(&format!("SAVEPOINT pgconn_client_{depth}"))?;
        Ok(ClientTransaction { client: self.client, depth, done: false })
    }

    /// Commits the transaction (for a savepoint: releases it).
    ///
    /// # Errors
    /// As [`Client::query`] (a transaction with a failed statement answers `COMMIT` with a rollback, which
    /// is not an error: the server reports `ROLLBACK`).
    pub fn commit(mut self) -> Result<(), Error> {
        self.done = true;
        match self.depth {
            0 => self.client.batch_execute("COMMIT"),
            depth => self.client.batch_execute(&format!("RELEASE SAVEPOINT pgconn_client_{depth}")),
        }
    }

    /// Rolls the transaction back now (for a savepoint: back to where it started).
    ///
    /// # Errors
    /// As [`Client::query`].
    pub fn rollback(mut self) -> Result<(), Error> {
        self.done = true;
        self.roll_back()
    }

    fn roll_back(&mut self) -> Result<(), Error> {
        match self.depth {
            0 => self.client.batch_execute("ROLLBACK"),
            depth => self.client.batch_execute(&format!(
                "ROLLBACK TO SAVEPOINT pgconn_client_{depth}; RELEASE SAVEPOINT pgconn_client_{depth}"
            )),
        }
    }
}

impl std::ops::Deref for ClientTransaction<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
    }
}

impl std::ops::DerefMut for ClientTransaction<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
    }
}

impl Drop for ClientTransaction<'_> {
    /// Rolls back, and waits for it (as `postgres::Transaction` does): a rollback only queued would keep
    /// the transaction's locks until the connection's next call.
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.roll_back()
        {
            log::debug!("rolling back a dropped transaction failed: {e}");
        }
    }
}

/// The writer of a `COPY ... FROM STDIN` ([`Client::copy_in`]); [`CopyInWriter::finish`] ends the copy,
/// dropping the writer without it aborts the copy.
pub struct CopyInWriter<'a> {
    client: &'a mut Client,
    sink: Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    buffer: BytesMut,
}

/// What [`CopyInWriter`] sends at once, at least.
const COPY_CHUNK: usize = 4096;

impl CopyInWriter<'_> {
    /// Sends what is buffered and ends the copy; the rows copied.
    ///
    /// # Errors
    /// The server's error (a malformed row, a constraint), or the connection's.
    pub fn finish(mut self) -> Result<u64, Error> {
        self.send()?;
        let sink = self.sink.as_mut();
        self.client.driver.block_on(sink.finish())
    }

    fn send(&mut self) -> Result<(), Error> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        let mut chunk = Some(chunk);
        let sink = &mut self.sink;
        self.client.driver.block_on(std::future::poll_fn(|cx| {
            use futures_sink::Sink as _;
            if chunk.is_some() {
                match sink.as_mut().poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        if let Some(chunk) = chunk.take() {
                            sink.as_mut().start_send(chunk)?;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            sink.as_mut().poll_flush(cx)
        }))
    }
}

impl io::Write for CopyInWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= COPY_CHUNK {
            self.send().map_err(io::Error::other)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send().map_err(io::Error::other)
    }
}

/// The reader of a `COPY ... TO STDOUT` ([`Client::copy_out`]).
pub struct CopyOutReader<'a> {
    client: &'a mut Client,
    stream: Pin<Box<tokio_postgres::CopyOutStream>>,
    chunk: Bytes,
}

impl io::Read for CopyOutReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.chunk.has_remaining() {
            let stream = &mut self.stream;
            let next = self.client.driver.block_on(std::future::poll_fn(|cx| {
                use futures_core::Stream as _;
                match stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Ok(Some(chunk))),
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Err(e)),
                    Poll::Ready(None) => Poll::Ready(Ok(None)),
                    Poll::Pending => Poll::Pending,
                }
            }));
            match next.map_err(io::Error::other)? {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.remaining());
        self.chunk.copy_to_slice(&mut out[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_becomes_the_drivers_error_with_it_as_the_cause() {
        let error = io_error(io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused"));
        let cause = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<io::Error>());
        assert_eq!(cause.map(io::Error::kind), Some(io::ErrorKind::ConnectionRefused), "{error}");
    }

    #[test]
    fn a_shuffle_keeps_every_item() {
        let mut items: Vec<u32> = (0..20).collect();
        shuffle(&mut items);
        items.sort_unstable();
        assert_eq!(items, (0..20).collect::<Vec<_>>());
    }
}
