//! libpq connection strings, both forms, read to libpq's keyword → value map exactly as libpq 15's
//! `PQconninfoParse` reads them: URLs (`postgresql://[user[:password]@][host][:port][,...][/dbname][?k=v&...]`)
//! and keyword/value strings (`host=db port=5432 dbname=app user=app`).
//!
//! This is the syntax layer only: values stay text, as libpq keeps them; `Settings` layers the
//! `PG*` variables, the password file and the defaults under them and checks each value. The one
//! deliberate difference at this layer: in a URL, after the first `@`, further `@`s up to the host part's
//! end (a `?` or a `/`) still belong to the user part, so an unencoded `@` in a password parses (libpq takes
//! the rest as a host name); `docs/configuration.md` lists every difference, and a test compares this
//! module with libpq itself.
//!
//! No message here repeats a URL's user, password, hosts or ports (a malformed URL can put a password
//! anywhere in them), nor a keyword it does not know when the string holds a password (an unencoded `&`
//! or space in a password makes its tail look like a keyword).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::conn::{ChannelBinding, ConnParams, Host, SslMode, TargetSessionAttrs};

/// How pgconn treats one of libpq's keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Read and applied.
    Read,
    /// Accepted so that pasted strings work; it changes nothing here (the values that would are refused).
    NoEffect,
    /// Refused, with what to do instead.
    Refused(&'static str),
}

/// One libpq keyword: its name, the environment variable libpq reads for it, and what pgconn does with it.
#[derive(Debug, Clone, Copy)]
pub struct Keyword {
    /// The keyword, as in a keyword/value string or a URL's query.
    pub name: &'static str,
    /// libpq's environment variable for it, if any (`PGHOST` for `host`).
    pub envvar: Option<&'static str>,
    /// What pgconn does with it.
    pub support: Support,
}

const fn kw(name: &'static str, envvar: Option<&'static str>, support: Support) -> Keyword {
    Keyword { name, envvar, support }
}

/// libpq 15's keywords (`PQconndefaults`), in its order, with `load_balance_hosts` from libpq 16.
pub const KEYWORDS: &[Keyword] = &[
    kw(
        "service",
        Some("PGSERVICE"),
        Support::Refused("pg_service.conf is not read; write the service's parameters in the string itself"),
    ),
    kw("user", Some("PGUSER"), Support::Read),
    kw("password", Some("PGPASSWORD"), Support::Read),
    kw("passfile", Some("PGPASSFILE"), Support::Read),
    kw("channel_binding", Some("PGCHANNELBINDING"), Support::Read),
    kw("connect_timeout", Some("PGCONNECT_TIMEOUT"), Support::Read),
    kw("dbname", Some("PGDATABASE"), Support::Read),
    kw("host", Some("PGHOST"), Support::Read),
    kw("hostaddr", Some("PGHOSTADDR"), Support::Read),
    kw("port", Some("PGPORT"), Support::Read),
    kw("client_encoding", Some("PGCLIENTENCODING"), Support::NoEffect),
    kw("options", Some("PGOPTIONS"), Support::Read),
    kw("application_name", Some("PGAPPNAME"), Support::Read),
    kw("fallback_application_name", None, Support::Read),
    kw("keepalives", None, Support::Read),
    kw("keepalives_idle", None, Support::Read),
    kw("keepalives_interval", None, Support::Read),
    kw("keepalives_count", None, Support::Read),
    kw("tcp_user_timeout", None, Support::Read),
    kw("sslmode", Some("PGSSLMODE"), Support::Read),
    kw("sslcompression", Some("PGSSLCOMPRESSION"), Support::NoEffect),
    kw("sslcert", Some("PGSSLCERT"), Support::Read),
    kw("sslkey", Some("PGSSLKEY"), Support::Read),
    kw(
        "sslpassword",
        None,
        Support::Refused(
            "encrypted client keys are not supported; store the key unencrypted (openssl pkey -in KEY -out \
             PLAIN) with mode 0600",
        ),
    ),
    kw("sslrootcert", Some("PGSSLROOTCERT"), Support::Read),
    kw(
        "sslcrl",
        Some("PGSSLCRL"),
        Support::Refused("certificate revocation lists are not checked by pgconn; leave sslcrl out"),
    ),
    kw(
        "sslcrldir",
        Some("PGSSLCRLDIR"),
        Support::Refused("certificate revocation lists are not checked by pgconn; leave sslcrldir out"),
    ),
    kw("sslsni", Some("PGSSLSNI"), Support::NoEffect),
    kw(
        "requirepeer",
        Some("PGREQUIREPEER"),
        Support::Refused("the peer of a Unix socket is not checked by pgconn; leave requirepeer out"),
    ),
    kw("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION"), Support::NoEffect),
    kw("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION"), Support::NoEffect),
    kw("gssencmode", Some("PGGSSENCMODE"), Support::NoEffect),
    kw("krbsrvname", Some("PGKRBSRVNAME"), Support::NoEffect),
    kw("gsslib", Some("PGGSSLIB"), Support::NoEffect),
    kw(
        "replication",
        None,
        Support::Refused("replication connections are not pooled; open them with a replication client"),
    ),
    kw("target_session_attrs", Some("PGTARGETSESSIONATTRS"), Support::Read),
    kw("load_balance_hosts", Some("PGLOADBALANCEHOSTS"), Support::Read),
];

/// The keyword named `name`, if libpq (15, or 16 for `load_balance_hosts`) knows it.
pub fn keyword(name: &str) -> Option<&'static Keyword> {
    KEYWORDS.iter().find(|k| k.name == name)
}

/// The keywords pgconn reads or accepts (every one not refused).
pub fn accepted_keywords() -> impl Iterator<Item = &'static str> {
    KEYWORDS.iter().filter(|k| !matches!(k.support, Support::Refused(_))).map(|k| k.name)
}

/// One connection string read to libpq's keywords and their values, text as libpq keeps it: a URL's
/// hosts and ports joined by commas (`h1,h2` and `5432,`), everything percent-decoded. A keyword given
/// twice keeps its last value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    values: BTreeMap<&'static str, String>,
}

impl ConnInfo {
    /// The value given for `keyword`, if any (possibly empty, as libpq keeps it).
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.values.get(keyword).map(String::as_str)
    }

    /// Every keyword given, with its value, in keyword order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.values.iter().map(|(k, v)| (*k, v.as_str()))
    }

    fn set(&mut self, keyword: &'static str, value: String) {
        self.values.insert(keyword, value);
    }
}

/// Reads a connection string, a URL or keyword/value pairs, as `PQconninfoParse` does. Errors are
/// messages to put after the variable's name, every one found.
///
/// # Errors
/// The string is neither form, or is malformed, or names a keyword libpq does not know.
pub fn parse(text: &str) -> Result<ConnInfo, Vec<String>> {
    match parse_partial(text) {
        (Some(info), errors) if errors.is_empty() => Ok(info),
        (_, errors) => Err(errors),
    }
}

/// As [`parse`], but also what could be read of a URL with problems in some of its parts (a value that
/// does not decode), so that the rest can still be checked and every problem reported at once.
pub(crate) fn parse_partial(text: &str) -> (Option<ConnInfo>, Vec<String>) {
    if let Some(rest) = strip_scheme(text) {
        return parse_url(rest, may_hold_password(text));
    }
    let scheme_like = text.find("://").is_some_and(|at| text.find('=').is_none_or(|eq| at < eq));
    if scheme_like || !text.contains('=') {
        return (
            None,
            vec![
                "must be a libpq URL starting with postgresql:// or postgres:// (such as \
                 postgresql://user:password@host:5432/dbname) or keyword=value pairs (such as host=db \
                 dbname=app user=app)"
                    .to_owned(),
            ],
        );
    }
    match parse_keyword_value(text) {
        Ok(info) => (Some(info), Vec::new()),
        Err(errors) => (None, errors),
    }
}

/// libpq's scheme test (case-sensitive, as libpq's).
fn strip_scheme(text: &str) -> Option<&str> {
    text.strip_prefix("postgresql://").or_else(|| text.strip_prefix("postgres://"))
}

/// Whether `text` may hold a password, in which case names pgconn does not know are not repeated.
fn may_hold_password(text: &str) -> bool {
    text.to_ascii_lowercase().contains("password")
        || strip_scheme(text).is_some_and(|rest| {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            authority.find('@').is_some_and(|at| authority[..at].contains(':'))
        })
}

/// A keyword for a message: itself when libpq knows it or the string holds no password, else not shown.
fn unknown_keyword(name: &str, hide: bool) -> String {
    if hide {
        "a keyword libpq does not know (not shown: the string holds a password, and an unencoded `&` or \
         space in a password makes its tail look like a keyword)"
            .to_owned()
    } else {
        let mut shown: String = name.chars().take(40).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        format!("{shown:?}, a keyword libpq does not know")
    }
}

fn store(info: &mut ConnInfo, name: &str, value: String, hide: bool) -> Result<(), String> {
    // libpq: the old `requiressl` writes sslmode (a value starting with 1: require, else prefer).
    if name == "requiressl" {
        let mode = if value.starts_with('1') { "require" } else { "prefer" };
        info.set("sslmode", mode.to_owned());
        return Ok(());
    }
    match keyword(name) {
        Some(keyword) => {
            info.set(keyword.name, value);
            Ok(())
        }
        None => Err(format!(
            "names {}; known: {}",
            unknown_keyword(name, hide),
            accepted_keywords().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// libpq's `conninfo_uri_parse_options`, `rest` being what follows the scheme.
fn parse_url(rest: &str, hide: bool) -> (Option<ConnInfo>, Vec<String>) {
    let mut errors = Vec::new();
    let mut info = ConnInfo::default();

    // libpq: the user part ends at the first `@` before the first `/`. Further `@`s before the host
    // part's end still belong to it (an unencoded `@` in a password).
    let path_start = rest.find('/').unwrap_or(rest.len());
    let region = &rest[..path_start];
    let user_end = region.find('@').map(|first| {
        let after = &region[first + 1..];
        let host_part = &after[..after.find('?').unwrap_or(after.len())];
        host_part.rfind('@').map_or(first, |more| first + 1 + more)
    });
    let mut p = match user_end {
        Some(at) => {
            let (user, password) = match rest[..at].split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (&rest[..at], None),
            };
            if !user.is_empty() {
                match decode(user) {
                    Ok(user) => info.set("user", user),
                    Err(e) => errors.push(format!("the user {e}")),
                }
            }
            if let Some(password) = password.filter(|p| !p.is_empty()) {
                match decode(password) {
                    Ok(password) => info.set("password", password),
                    Err(e) => errors.push(format!("the password {e}")),
                }
            }
            &rest[at + 1..]
        }
        None => rest,
    };

    // Hosts and ports, joined by commas as libpq keeps them (`h1,h2` and `5433,`).
    let mut hosts = String::new();
    let mut ports = String::new();
    loop {
        if let Some(bracketed) = p.strip_prefix('[') {
            let Some(close) = bracketed.find(']') else {
                errors.push("has a `[` without its `]` (write IPv6 addresses as [::1]:5432)".to_owned());
                return (None, errors);
            };
            if close == 0 {
                errors.push("has an empty IPv6 address in brackets".to_owned());
                return (None, errors);
            }
            hosts.push_str(&bracketed[..close]);
            p = &bracketed[close + 1..];
            if p.chars().next().is_some_and(|c| !":/?,".contains(c)) {
                errors.push("has text after an IPv6 address's `]` that is not `:port`".to_owned());
                return (None, errors);
            }
        } else {
            let end = p.find([':', '/', '?', ',']).unwrap_or(p.len());
            hosts.push_str(&p[..end]);
            p = &p[end..];
        }
        if let Some(after) = p.strip_prefix(':') {
            let end = after.find(['/', '?', ',']).unwrap_or(after.len());
            ports.push_str(&after[..end]);
            p = &after[end..];
        }
        match p.strip_prefix(',') {
            Some(after) => {
                p = after;
                hosts.push(',');
                ports.push(',');
            }
            None => break,
        }
    }
    if !hosts.is_empty() {
        match decode(&hosts) {
            Ok(hosts) => info.set("host", hosts),
            Err(e) => errors.push(format!("the host part {e}")),
        }
    }
    if !ports.is_empty() {
        match decode(&ports) {
            Ok(ports) => info.set("port", ports),
            Err(e) => errors.push(format!("a port {e}")),
        }
    }

    if let Some(after) = p.strip_prefix('/') {
        let end = after.find('?').unwrap_or(after.len());
        let dbname = &after[..end];
        if !dbname.is_empty() {
            match decode(dbname) {
                Ok(dbname) => info.set("dbname", dbname),
                Err(e) => errors.push(format!("the database name {e}")),
            }
        }
        p = &after[end..];
    }
    if let Some(query) = p.strip_prefix('?') {
        let mut rest = query;
        let mut index = 0;
        while !rest.is_empty() {
            index += 1;
            let end = rest.find('&').unwrap_or(rest.len());
            let pair = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or("");
            if let Err(e) = query_param(&mut info, pair, index, hide) {
                errors.push(e);
            }
        }
    }
    (Some(info), errors)
}

/// One `key=value` of a URL's query, libpq's `conninfo_uri_parse_params`.
fn query_param(info: &mut ConnInfo, pair: &str, index: usize, hide: bool) -> Result<(), String> {
    let Some((key, value)) = pair.split_once('=') else {
        // Not echoed: it may be the end of a password with an unencoded `&` (`?password=se&cret`).
        return Err(
            "has a query parameter without `=value` (an `&` inside a value must be written %26)".to_owned()
        );
    };
    let key = decode(key).map_err(|e| format!("a query parameter name {e}"))?;
    if value.contains('=') {
        let shown =
            if keyword(&key).is_some() || !hide { format!("{key:?}") } else { format!("number {index}") };
        return Err(format!(
            "query parameter {shown} has a second `=` (an `=` inside a value must be written %3D, as \
             libpq requires)"
        ));
    }
    let value = decode(value).map_err(|e| {
        if key == "password" { format!("the password {e}") } else { format!("query parameter {key:?} {e}") }
    })?;
    // libpq: `ssl=true` is JDBC's spelling of sslmode=require.
    if key == "ssl" && value == "true" {
        info.set("sslmode", "require".to_owned());
        return Ok(());
    }
    store(info, &key, value, hide).map_err(|e| format!("query parameter {e}"))
}

/// libpq's `conninfo_parse`: `keyword = value` pairs separated by blanks; a value is single-quoted to
/// hold blanks, and `\` escapes the next character, quoted or not.
fn parse_keyword_value(text: &str) -> Result<ConnInfo, Vec<String>> {
    let hide = may_hold_password(text);
    let mut info = ConnInfo::default();
    let mut errors = Vec::new();
    let mut chars = text.chars().peekable();
    let mut index = 0usize;
    loop {
        while chars.next_if(|c| is_space(*c)).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        index += 1;
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !is_space(*c)) {
            name.push(c);
        }
        while chars.next_if(|c| is_space(*c)).is_some() {}
        if chars.next() != Some('=') {
            let shown = if keyword(&name).is_some() { format!(" ({name})") } else { String::new() };
            errors.push(format!(
                "keyword/value pair {index}{shown} has no `=` (write keyword=value; quote a value with \
                 blanks in it: password='a b')"
            ));
            return Err(errors);
        }
        while chars.next_if(|c| is_space(*c)).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        errors.push(format!(
                            "keyword/value pair {index} has a quoted value without its closing `'`"
                        ));
                        return Err(errors);
                    }
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !is_space(*c)) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if value.contains('\0') {
            errors.push(format!("keyword/value pair {index} contains a zero byte"));
            continue;
        }
        if let Err(e) = store(&mut info, &name, value, hide) {
            errors.push(format!("keyword/value pair {index} {e}"));
        }
    }
    if errors.is_empty() { Ok(info) } else { Err(errors) }
}

/// C's `isspace` in the C locale, as libpq tests blanks.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Percent-decodes `text`; the error says what is wrong without repeating the text.
pub(crate) fn decode(text: &str) -> Result<String, String> {
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

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const RESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
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
    let addrs: Vec<String> =
        params.endpoints.iter().filter_map(|e| e.hostaddr.map(|a| a.to_string())).collect();
    if !addrs.is_empty() {
        query.push(format!("hostaddr={}", encode(&addrs.join(","))));
    }
    if params.sslmode != SslMode::default() {
        query.push(format!("sslmode={}", params.sslmode));
    }
    if let Some(cert) = &params.sslrootcert {
        query.push(format!("sslrootcert={}", encode(&cert.to_string())));
    }
    for (name, path) in [("sslcert", &params.sslcert), ("sslkey", &params.sslkey)] {
        if let Some(path) = path {
            query.push(format!("{name}={}", encode(&path.to_string_lossy())));
        }
    }
    if params.channel_binding != ChannelBinding::default() {
        query.push(format!("channel_binding={}", params.channel_binding.as_str()));
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
    if params.load_balance_hosts {
        query.push("load_balance_hosts=random".to_owned());
    }
    let tcp = &params.tcp;
    if let Some(on) = tcp.keepalives {
        query.push(format!("keepalives={}", u8::from(on)));
    }
    if let Some(idle) = tcp.keepalives_idle {
        query.push(format!("keepalives_idle={}", idle.as_secs()));
    }
    if let Some(interval) = tcp.keepalives_interval {
        query.push(format!("keepalives_interval={}", interval.as_secs()));
    }
    if let Some(count) = tcp.keepalives_count {
        query.push(format!("keepalives_count={count}"));
    }
    if let Some(timeout) = tcp.user_timeout {
        query.push(format!("tcp_user_timeout={}", timeout.as_millis()));
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(String, String)> {
        match parse(text) {
            Ok(info) => info.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            Err(e) => panic!("{text}: {e:?}"),
        }
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = expected.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        v.sort();
        v
    }

    #[test]
    fn urls_keep_hosts_and_ports_as_libpq_joins_them() {
        assert_eq!(
            values("postgresql://u:p@h1:1,[::1],h3:3/d?sslmode=require"),
            pairs(&[
                ("user", "u"),
                ("password", "p"),
                ("host", "h1,::1,h3"),
                ("port", "1,,3"),
                ("dbname", "d"),
                ("sslmode", "require")
            ])
        );
        assert_eq!(
            values("postgresql://u@:12345/db?host=/path"),
            pairs(&[("user", "u"), ("port", "12345"), ("dbname", "db"), ("host", "/path")])
        );
        assert_eq!(values("postgresql://h1,/d"), pairs(&[("host", "h1,"), ("port", ","), ("dbname", "d")]));
        assert_eq!(values("postgresql://h?ssl=true"), pairs(&[("host", "h"), ("sslmode", "require")]));
        assert_eq!(values("postgresql://"), pairs(&[]));
    }

    #[test]
    fn keyword_value_strings() {
        assert_eq!(
            values(r"host=h  port = 5433 dbname='my db' user=a\ b password='it\'s' options='-c x=1'"),
            pairs(&[
                ("host", "h"),
                ("port", "5433"),
                ("dbname", "my db"),
                ("user", "a b"),
                ("password", "it's"),
                ("options", "-c x=1")
            ])
        );
        assert_eq!(values("host='' dbname=d"), pairs(&[("host", ""), ("dbname", "d")]));
        // libpq skips blanks after `=`: an empty value must be quoted.
        assert_eq!(values("host= dbname=d"), pairs(&[("host", "dbname=d")]));
        assert_eq!(values("dbname=a dbname=b"), pairs(&[("dbname", "b")]));
    }

    #[test]
    fn errors_never_repeat_what_may_be_a_password() {
        for text in [
            "host=h password=hunter2 hunter3",
            "host=h password=hunter2 hunter3=x",
            "postgresql://u@h/d?password=sec&hunter3",
            "postgresql://u@h/d?password=sec&hunter3=x",
            "postgresql://u:hunter2@h/d?hunter3=x",
        ] {
            let errors = parse(text).expect_err(text).join("\n");
            assert!(!errors.contains("hunter"), "{text}: {errors}");
        }
        // Without a password, an unknown keyword is named.
        let errors = parse("host=h sslmod=require").expect_err("unknown").join("\n");
        assert!(errors.contains("\"sslmod\""), "{errors}");
    }
}
