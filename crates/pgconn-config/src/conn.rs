//! Where and how to connect: one PostgreSQL (or PgBouncer) endpoint list with its connection parameters.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The default PostgreSQL port.
pub const DEFAULT_PORT: u16 = 5432;

/// The socket directory an empty URL host means (libpq's default on Debian).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Where a server listens: a TCP host name or address, or a Unix-socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or an IP address (IPv6 without brackets).
    Tcp(String),
    /// The directory holding the server's Unix socket (`.s.PGSQL.<port>`).
    Unix(PathBuf),
}

impl Host {
    /// A host as libpq reads it: a value starting with `/` is a socket directory.
    pub fn parse(value: &str) -> Host {
        if value.starts_with('/') { Host::Unix(PathBuf::from(value)) } else { Host::Tcp(value.to_owned()) }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(name) => f.write_str(name),
            Host::Unix(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// One host and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where the server listens.
    pub host: Host,
    /// Its port (for a socket directory, the number in the socket's file name).
    pub port: u16,
    /// `hostaddr`: the address to connect to without a name lookup; `host` is then the name TLS checks
    /// and the password file matches.
    pub hostaddr: Option<IpAddr>,
}

impl Endpoint {
    /// A host and port without `hostaddr`.
    pub fn new(host: Host, port: u16) -> Endpoint {
        Endpoint { host, port, hostaddr: None }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Tcp(name) if name.contains(':') => write!(f, "[{name}]:{}", self.port),
            host => write!(f, "{host}:{}", self.port),
        }
    }
}

/// A password. Its `Debug` never shows it and it has no `Display`; read it with [`Password::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for the one place that sends it to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// libpq's `sslmode`.
///
/// Defaults to `prefer`, as in libpq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Try without TLS first, then with it.
    Allow,
    /// Try TLS first, then without it.
    #[default]
    Prefer,
    /// TLS without checking the server's certificate.
    Require,
    /// TLS, and the server's certificate must be signed by `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// Every mode, in libpq's order.
    pub const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// libpq's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = ();

    fn from_str(value: &str) -> Result<SslMode, ()> {
        SslMode::ALL.into_iter().find(|mode| mode.as_str() == value).ok_or(())
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// libpq's `target_session_attrs`: which of several hosts is acceptable.
///
/// Defaults to `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSessionAttrs {
    /// The first host that accepts the connection.
    #[default]
    Any,
    /// The first host that accepts writes (a primary), for failover between hosts.
    ReadWrite,
    /// The first host whose sessions are read-only (`transaction_read_only` on: a standby, or a server
    /// with `default_transaction_read_only`).
    ReadOnly,
}

impl TargetSessionAttrs {
    /// libpq's name of the value.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
        }
    }
}

/// libpq's `channel_binding`: whether SCRAM authentication binds itself to the TLS connection.
///
/// Defaults to `prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBinding {
    /// Never.
    Disable,
    /// When the server offers it over TLS.
    #[default]
    Prefer,
    /// Always: a connection whose authentication cannot be bound (no TLS, no SCRAM, a server or PgBouncer
    /// without `SCRAM-SHA-256-PLUS`) fails.
    Require,
}

impl ChannelBinding {
    /// libpq's name of the value.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

/// `sslrootcert`: where the CA certificates that sign the server's certificate are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslRootCert {
    /// A PEM file of CA certificates (or the server's own self-signed certificate).
    File(PathBuf),
    /// `system`: the operating system's trusted CAs (libpq 16); implies `verify-full`.
    System,
}

impl fmt::Display for SslRootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SslRootCert::File(path) => write!(f, "{}", path.display()),
            SslRootCert::System => f.write_str("system"),
        }
    }
}

/// TCP keepalive and user timeout of the connections; `None` leaves pgconn's default (see
/// `docs/operations.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tcp {
    /// `keepalives`: `Some(false)` turns keepalive probes off.
    pub keepalives: Option<bool>,
    /// `keepalives_idle`: silence before the first probe.
    pub keepalives_idle: Option<Duration>,
    /// `keepalives_interval`: time between unanswered probes.
    pub keepalives_interval: Option<Duration>,
    /// `keepalives_count`: unanswered probes before the connection is given up.
    pub keepalives_count: Option<u32>,
    /// `tcp_user_timeout`: unacknowledged data this long closes the connection; zero is the kernel's
    /// default.
    pub user_timeout: Option<Duration>,
}

/// Where a connection parameter's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A variable: `DATABASE_URL`, `PGBOUNCER_URL`, `DB_HOST`, `PGHOST`, ...
    Var(&'static str),
    /// A line of a password file.
    Passfile {
        /// The file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
    },
    /// A file found where libpq looks by default (`~/.postgresql/root.crt`).
    DefaultFile,
    /// The default (libpq's, or pgconn's for the `DB_*` form's `localhost`), or a value derived from
    /// another (the database name from the user).
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Var(name) => f.write_str(name),
            Source::Passfile { path, line } => write!(f, "password file {} line {line}", path.display()),
            Source::DefaultFile => f.write_str("default file"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// Which source gave each connection parameter, by libpq keyword (`host`, `user`, `password`, ...).
///
/// Any two compare equal: parameters are equal when they connect the same way, wherever their values
/// came from.
#[derive(Debug, Clone, Default)]
pub struct Sources(pub(crate) BTreeMap<&'static str, Source>);

impl PartialEq for Sources {
    fn eq(&self, _other: &Sources) -> bool {
        true
    }
}

impl Eq for Sources {}

impl Sources {
    /// The source of `keyword`'s value; `None` when it has no value.
    pub fn get(&self, keyword: &str) -> Option<&Source> {
        self.0.get(keyword)
    }

    /// Every keyword with a value, and its source, in keyword order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Source)> {
        self.0.iter().map(|(k, s)| (*k, s))
    }
}

/// Everything needed to open one connection, except the timeouts `Settings` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnParams {
    /// The hosts to try, in order; never empty.
    pub endpoints: Vec<Endpoint>,
    /// The database name.
    pub dbname: String,
    /// The role to log in as.
    pub user: String,
    /// The password, if any; redacted in `Debug`.
    pub password: Option<Password>,
    /// TLS mode.
    pub sslmode: SslMode,
    /// The CA certificates for `verify-ca` and `verify-full` (and `require`, which then checks the chain
    /// as libpq does).
    pub sslrootcert: Option<SslRootCert>,
    /// The client certificate (PEM) sent when the server asks for one.
    pub sslcert: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted, mode 0600 or less).
    pub sslkey: Option<PathBuf>,
    /// SCRAM channel binding.
    pub channel_binding: ChannelBinding,
    /// `application_name` given in the URL, if any.
    pub application_name: Option<String>,
    /// `connect_timeout` given in the URL, if any (`DB_CONNECT_TIMEOUT` wins when set).
    pub connect_timeout: Option<Duration>,
    /// The `options` startup parameter given in the URL (command-line options for the server), if any.
    pub options: Option<String>,
    /// Which host of several is acceptable.
    pub target_session_attrs: TargetSessionAttrs,
    /// `load_balance_hosts=random`: try the hosts in a random order (each connection anew).
    pub load_balance_hosts: bool,
    /// TCP keepalive and user timeout.
    pub tcp: Tcp,
    /// Where each value came from, for `pgconn config`.
    pub sources: Sources,
}

impl ConnParams {
    /// Parameters for `endpoints`, `dbname` and `user`, with libpq's defaults for everything else (no
    /// password, `sslmode=prefer`, ...).
    pub fn new(endpoints: Vec<Endpoint>, dbname: impl Into<String>, user: impl Into<String>) -> ConnParams {
        ConnParams {
            endpoints,
            dbname: dbname.into(),
            user: user.into(),
            password: None,
            sslmode: SslMode::default(),
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            channel_binding: ChannelBinding::default(),
            application_name: None,
            connect_timeout: None,
            options: None,
            target_session_attrs: TargetSessionAttrs::default(),
            load_balance_hosts: false,
            tcp: Tcp::default(),
            sources: Sources::default(),
        }
    }

    /// The first host and port, the one named in summaries.
    pub fn primary(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// A `postgres::Config` with every parameter set here; the caller adds timeouts and the
    /// application name it decides.
    ///
    /// `verify-ca` and `verify-full` ask the `postgres` crate for TLS (`require`); the certificate checks
    /// belong to the TLS connector the pool builds from `sslmode` and `sslrootcert`.
    pub fn to_postgres_config(&self) -> postgres::Config {
        postgres::Config::from(self.to_tokio_postgres_config())
    }

    /// [`ConnParams::to_postgres_config`] as the configuration of `tokio-postgres`, the driver under the
    /// `postgres` crate (what pgconn-pool's own connections are started with).
    pub fn to_tokio_postgres_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        for endpoint in &self.endpoints {
            match &endpoint.host {
                Host::Tcp(name) => config.host(name),
                Host::Unix(dir) => config.host_path(dir),
            };
            if let Some(address) = endpoint.hostaddr {
                config.hostaddr(address);
            }
            config.port(endpoint.port);
        }
        config.dbname(&self.dbname).user(&self.user);
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        config.ssl_mode(match self.sslmode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => postgres::config::SslMode::Require,
        });
        if let Some(name) = &self.application_name {
            config.application_name(name);
        }
        if let Some(options) = &self.options {
            config.options(options);
        }
        if let Some(timeout) = self.connect_timeout {
            config.connect_timeout(timeout);
        }
        config.target_session_attrs(match self.target_session_attrs {
            TargetSessionAttrs::Any => postgres::config::TargetSessionAttrs::Any,
            TargetSessionAttrs::ReadWrite => postgres::config::TargetSessionAttrs::ReadWrite,
            TargetSessionAttrs::ReadOnly => postgres::config::TargetSessionAttrs::ReadOnly,
        });
        config.channel_binding(match self.channel_binding {
            ChannelBinding::Disable => postgres::config::ChannelBinding::Disable,
            ChannelBinding::Prefer => postgres::config::ChannelBinding::Prefer,
            ChannelBinding::Require => postgres::config::ChannelBinding::Require,
        });
        if self.load_balance_hosts {
            config.load_balance_hosts(postgres::config::LoadBalanceHosts::Random);
        }
        if let Some(on) = self.tcp.keepalives {
            config.keepalives(on);
        }
        if let Some(idle) = self.tcp.keepalives_idle {
            config.keepalives_idle(idle);
        }
        if let Some(interval) = self.tcp.keepalives_interval {
            config.keepalives_interval(interval);
        }
        if let Some(count) = self.tcp.keepalives_count {
            config.keepalives_retries(count);
        }
        if let Some(timeout) = self.tcp.user_timeout {
            config.tcp_user_timeout(timeout);
        }
        config
    }
}

impl fmt::Display for ConnParams {
    /// `user@host:port/dbname`, with every host when there are several; never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@", self.user)?;
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{endpoint}")?;
        }
        write!(f, "/{}", self.dbname)
    }
}
