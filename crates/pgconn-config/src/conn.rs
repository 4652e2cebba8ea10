//! Where and how to connect: one PostgreSQL (or PgBouncer) endpoint list with its connection parameters.

use std::fmt;
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
}

impl TargetSessionAttrs {
    /// libpq's name of the value.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
        }
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
    /// CA certificate file for `verify-ca` and `verify-full`.
    pub sslrootcert: Option<PathBuf>,
    /// `application_name` given in the URL, if any.
    pub application_name: Option<String>,
    /// `connect_timeout` given in the URL, if any (`DB_CONNECT_TIMEOUT` wins when set).
    pub connect_timeout: Option<Duration>,
    /// The `options` startup parameter given in the URL (command-line options for the server), if any.
    pub options: Option<String>,
    /// Which host of several is acceptable.
    pub target_session_attrs: TargetSessionAttrs,
}

impl ConnParams {
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
        let mut config = postgres::Config::new();
        for endpoint in &self.endpoints {
            match &endpoint.host {
                Host::Tcp(name) => config.host(name),
                Host::Unix(dir) => config.host_path(dir),
            };
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
        });
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
