//! libpq connection URLs: `postgresql://[user[:password]@][host][:port][,...][/dbname][?param=value&...]`.
//!
//! The rules are libpq's (`postgres://` or `postgresql://`; percent-encoding anywhere; IPv6 hosts in
//! brackets; a host that decodes to an absolute path is a socket directory; query parameters override
//! what the authority says; the user part ends at the first `@` before the path, as libpq reads it) with
//! two deliberate differences: after that first `@`, further `@`s up to the host part's end (a `?` or a
//! `/`) still belong to the user part, so an unencoded `@` in a password parses (libpq would take the
//! rest as a host); and `connect_timeout=0` (libpq: wait forever) is refused, because no wait in pgconn is
//! unbounded. An `@` in a query value (`?application_name=worker@web1`) is never taken for the user part.
//!
//! No message here ever contains anything from the authority (user, password, hosts, ports): a
//! malformed URL can put a password anywhere in it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::conn::{ConnParams, DEFAULT_PORT, Endpoint, Host, Password, SslMode, TargetSessionAttrs};

/// The query parameters pgconn understands; any other is refused rather than silently ignored.
pub const SUPPORTED_PARAMS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "application_name",
    "fallback_application_name",
    "connect_timeout",
    "options",
    "target_session_attrs",
];

/// What one URL says; `None` where it says nothing.
#[derive(Debug, Default)]
pub(crate) struct UrlParts {
    pub(crate) hosts: Vec<Host>,
    pub(crate) ports: Vec<Option<u16>>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<Password>,
    pub(crate) dbname: Option<String>,
    pub(crate) sslmode: Option<SslMode>,
    pub(crate) sslrootcert: Option<PathBuf>,
    pub(crate) application_name: Option<String>,
    pub(crate) fallback_application_name: Option<String>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) options: Option<String>,
    pub(crate) target_session_attrs: Option<TargetSessionAttrs>,
}

impl UrlParts {
    /// The endpoints: every host with its port, libpq's way (one port for all hosts, or one per host).
    pub(crate) fn endpoints(&self) -> Result<Vec<Endpoint>, String> {
        let hosts = if self.hosts.is_empty() {
            vec![Host::Unix(PathBuf::from(crate::conn::DEFAULT_SOCKET_DIR))]
        } else {
            self.hosts.clone()
        };
        let ports: Vec<u16> = match self.ports.len() {
            0 => vec![DEFAULT_PORT; hosts.len()],
            1 => vec![self.ports[0].unwrap_or(DEFAULT_PORT); hosts.len()],
            n if n == hosts.len() => self.ports.iter().map(|p| p.unwrap_or(DEFAULT_PORT)).collect(),
            n => {
                return Err(format!(
                    "names {} hosts but {n} ports; give one port for all hosts or one per host",
                    hosts.len()
                ));
            }
        };
        Ok(hosts.into_iter().zip(ports).map(|(host, port)| Endpoint { host, port }).collect())
    }
}

/// Parses a libpq URL. Errors are messages to put after the variable's name, all of them at once.
pub(crate) fn parse(url: &str) -> Result<UrlParts, Vec<String>> {
    let mut errors = Vec::new();
    let mut parts = UrlParts::default();
    let Some(rest) = strip_scheme(url) else {
        return Err(vec![
            "must start with postgresql:// or postgres:// (a libpq URL such as \
             postgresql://user:password@host:5432/dbname)"
                .to_owned(),
        ]);
    };

    // libpq: the user part ends at the first `@` before the first `/`. Further `@`s before any `?` still
    // belong to it (an unencoded `@` in a password); an `@` in the query never does.
    let path_start = rest.find('/').unwrap_or(rest.len());
    let region = &rest[..path_start];
    let user_end = region.find('@').map(|first| {
        let after = &region[first + 1..];
        let host_part = &after[..after.find('?').unwrap_or(after.len())];
        host_part.rfind('@').map_or(first, |more| first + 1 + more)
    });
    let rest = match user_end {
        Some(at) => {
            let (user, password) = match rest[..at].split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (&rest[..at], None),
            };
            match decode(user) {
                Ok(user) if !user.is_empty() => parts.user = Some(user),
                Ok(_) => {}
                Err(e) => errors.push(format!("the user {e}")),
            }
            match password.map(decode) {
                Some(Ok(password)) if !password.is_empty() => parts.password = Some(Password::new(password)),
                Some(Err(e)) => errors.push(format!("the password {e}")),
                _ => {}
            }
            &rest[at + 1..]
        }
        None => rest,
    };

    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    if !authority.is_empty() {
        for (i, spec) in authority.split(',').enumerate() {
            match host_port(spec) {
                Ok((host, port)) => {
                    parts.hosts.push(host);
                    parts.ports.push(port);
                }
                Err(e) => errors.push(format!("host {} of the URL {e}", i + 1)),
            }
        }
        if parts.ports.iter().all(Option::is_none) {
            parts.ports.clear();
        }
    }

    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if let Some(dbname) = path.strip_prefix('/') {
        match decode(dbname) {
            Ok(dbname) if !dbname.is_empty() => parts.dbname = Some(dbname),
            Ok(_) => {}
            Err(e) => errors.push(format!("the database name {e}")),
        }
    }

    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        if let Err(e) = query_param(&mut parts, pair) {
            errors.push(e);
        }
    }

    if errors.is_empty() { Ok(parts) } else { Err(errors) }
}

fn strip_scheme(url: &str) -> Option<&str> {
    ["postgresql://", "postgres://"].into_iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(scheme))
            .map(|_| &url[scheme.len()..])
    })
}

/// One `host[:port]` or `[ipv6][:port]` of the authority.
fn host_port(spec: &str) -> Result<(Host, Option<u16>), String> {
    let (host, port) = if let Some(bracketed) = spec.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return Err("has a `[` without its `]` (write IPv6 addresses as [::1]:5432)".to_owned());
        };
        if address.is_empty() {
            return Err("has an empty IPv6 address in brackets".to_owned());
        }
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':').ok_or("has text after its `]` that is not `:port`")?),
        };
        return Ok((Host::Tcp(decode(address)?), port.map(authority_port).transpose()?.flatten()));
    } else {
        match spec.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (spec, None),
        }
    };
    let host = decode(host)?;
    if host.is_empty() {
        return Err("has a port but no host".to_owned());
    }
    Ok((Host::parse(&host), port.map(authority_port).transpose()?.flatten()))
}

/// A port in the authority; an empty one means the default. The text is never echoed.
fn authority_port(text: &str) -> Result<Option<u16>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(Some(port)),
        _ => Err("has a port that is not a number from 1 to 65535".to_owned()),
    }
}

fn query_param(parts: &mut UrlParts, pair: &str) -> Result<(), String> {
    let Some((key, value)) = pair.split_once('=') else {
        // Not echoed: it may be the end of a password with an unencoded `&` (`?password=se&cret`).
        return Err(
            "has a query parameter without `=value` (an `&` inside a value must be written %26)".to_owned()
        );
    };
    let key = decode(key).map_err(|e| format!("a query parameter name {e}"))?;
    let value = decode(value).map_err(|e| {
        if key == "password" { format!("the password {e}") } else { format!("query parameter {key} {e}") }
    })?;
    let empty_is_none = |value: String| (!value.is_empty()).then_some(value);
    match key.as_str() {
        "host" => {
            parts.hosts = Vec::new();
            for (i, host) in value.split(',').enumerate() {
                if host.is_empty() {
                    return Err(format!("query parameter host has an empty host (number {})", i + 1));
                }
                parts.hosts.push(Host::parse(host));
            }
        }
        "port" => {
            parts.ports = value
                .split(',')
                .map(|port| match port {
                    "" => Ok(None),
                    port => match port.parse::<u16>() {
                        Ok(n) if n > 0 => Ok(Some(n)),
                        _ => Err(format!(
                            "query parameter port must be a number from 1 to 65535, got \"{port}\""
                        )),
                    },
                })
                .collect::<Result<_, _>>()?;
        }
        "dbname" => parts.dbname = empty_is_none(value),
        "user" => parts.user = empty_is_none(value),
        "password" => parts.password = empty_is_none(value).map(Password::new),
        "sslmode" => {
            parts.sslmode = Some(value.parse().map_err(|()| {
                format!(
                    "query parameter sslmode must be one of disable, allow, prefer, require, verify-ca, \
                     verify-full, got \"{value}\""
                )
            })?);
        }
        "sslrootcert" => parts.sslrootcert = empty_is_none(value).map(PathBuf::from),
        "application_name" => parts.application_name = Some(value),
        "fallback_application_name" => parts.fallback_application_name = Some(value),
        "connect_timeout" => {
            parts.connect_timeout = match value.trim().parse::<u64>() {
                Ok(0) => {
                    return Err("query parameter connect_timeout=0 would wait forever; give whole seconds \
                                from 1 to 3600, or leave it out and set DB_CONNECT_TIMEOUT"
                        .to_owned());
                }
                Ok(s) if s <= 3600 => Some(Duration::from_secs(s)),
                _ => {
                    return Err(format!(
                        "query parameter connect_timeout must be whole seconds from 1 to 3600, got \"{value}\""
                    ));
                }
            };
        }
        "options" => parts.options = empty_is_none(value),
        "target_session_attrs" => {
            parts.target_session_attrs = Some(match value.as_str() {
                "any" => TargetSessionAttrs::Any,
                "read-write" => TargetSessionAttrs::ReadWrite,
                _ => {
                    return Err(format!(
                        "query parameter target_session_attrs must be any or read-write \
                         (the values the postgres crate implements), got \"{value}\""
                    ));
                }
            });
        }
        _ => {
            return Err(format!(
                "query parameter {key} is not supported by pgconn; supported: {}",
                SUPPORTED_PARAMS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Percent-decodes `text`; the error says what is wrong without repeating the text.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(byte) => out.push(byte),
                None => {
                    return Err(
                        "has a `%` that is not followed by two hex digits (write % as %25)".to_owned()
                    );
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        // libpq refuses it too: PostgreSQL's protocol ends strings at a zero byte.
        return Err("contains %00, a zero byte, which no PostgreSQL string can hold".to_owned());
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded".to_owned())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The URL that parses back to `params` (the password included: this is for the environment, never a log).
pub fn render(params: &ConnParams) -> String {
    let mut url = format!("postgresql://{}", encode(&params.user));
    if let Some(password) = &params.password {
        url.push(':');
        url.push_str(&encode(password.expose()));
    }
    url.push('@');
    for (i, endpoint) in params.endpoints.iter().enumerate() {
        if i > 0 {
            url.push(',');
        }
        match &endpoint.host {
            Host::Tcp(name) if name.contains(':') => {
                let _ = write!(url, "[{name}]");
            }
            Host::Tcp(name) => url.push_str(&encode(name)),
            Host::Unix(dir) => url.push_str(&encode(&dir.to_string_lossy())),
        }
        let _ = write!(url, ":{}", endpoint.port);
    }
    url.push('/');
    url.push_str(&encode(&params.dbname));
    let mut query = Vec::new();
    if params.sslmode != SslMode::default() {
        query.push(format!("sslmode={}", params.sslmode));
    }
    if let Some(cert) = &params.sslrootcert {
        query.push(format!("sslrootcert={}", encode(&cert.to_string_lossy())));
    }
    if let Some(name) = &params.application_name {
        query.push(format!("application_name={}", encode(name)));
    }
    if let Some(timeout) = params.connect_timeout {
        query.push(format!("connect_timeout={}", timeout.as_secs()));
    }
    if let Some(options) = &params.options {
        query.push(format!("options={}", encode(options)));
    }
    if params.target_session_attrs != TargetSessionAttrs::default() {
        query.push(format!("target_session_attrs={}", params.target_session_attrs.as_str()));
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}
