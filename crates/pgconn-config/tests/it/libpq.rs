//! pgconn's connection strings against libpq itself: every line of `conninfo-corpus.txt` (PostgreSQL's own
//! URI regression cases, keyword/value strings, edge cases, generated ones) goes through libpq's
//! `PQconninfoParse` (`libpq.so.5`, loaded at run time) and through [`pgconn_config::conninfo::parse`].
//! Where both accept a string, every keyword must have the same value; where only one accepts it, the case
//! must be one of the differences `docs/configuration.md` lists. Then, in a private network namespace
//! where no connection can leave the machine, libpq's `PQconnectStart` says which strings it refuses
//! before connecting (a bad port, a host/port count mismatch, a bad `sslmode`, ...); pgconn must refuse
//! those too, and accept the rest, save the listed differences.
//!
//! Needs libpq (`apt-get install libpq5`), and for the second part root and `unshare`, as CI has.
#![allow(unsafe_code, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::process::{Command, Stdio};

use pgconn_config::Settings;
use pgconn_config::conninfo;

const CORPUS: &str = include_str!("conninfo-corpus.txt");

/// Set in the child that runs the connect stage inside a private network namespace.
const INNER: &str = "PGCONN_TEST_LIBPQ_NETNS";

/// The documented differences (docs/configuration.md, "Where pgconn differs from libpq"): an id, and
/// what a test of a disagreement looks for.
const DIFFERENCES: &[&str] = &[
    "at-in-user-part",
    "utf-8",
    "load-balance-hosts",
    "connect-timeout-zero",
    "unsupported-keyword",
    "unsupported-value",
    "sslrootcert-system",
    "ca-checked-early",
    "hostaddr-for-every-host",
    "application-name-empty",
];

/// `PQconninfoOption`, libpq's option record.
#[repr(C)]
struct Option_ {
    keyword: *const c_char,
    envvar: *const c_char,
    compiled: *const c_char,
    val: *const c_char,
    label: *const c_char,
    dispchar: *const c_char,
    dispsize: c_int,
}

type ConninfoParse = unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> *mut Option_;
type ConninfoFree = unsafe extern "C" fn(*mut Option_);
type Freemem = unsafe extern "C" fn(*mut c_void);
type ConnectStart = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type Status = unsafe extern "C" fn(*const c_void) -> c_int;
type ErrorMessage = unsafe extern "C" fn(*const c_void) -> *const c_char;
type Finish = unsafe extern "C" fn(*mut c_void);

/// libpq's functions, from `libpq.so.5`.
struct Libpq {
    parse: ConninfoParse,
    free: ConninfoFree,
    freemem: Freemem,
    start: ConnectStart,
    status: Status,
    error: ErrorMessage,
    finish: Finish,
}

impl Libpq {
    fn load() -> Libpq {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to libpq's documented
        // signature (libpq-fe.h) and used only while the library stays loaded (it is never closed).
        unsafe {
            let handle = libc::dlopen(c"libpq.so.5".as_ptr(), libc::RTLD_NOW);
            assert!(
                !handle.is_null(),
                "libpq.so.5 cannot be loaded: the differential test compares pgconn with libpq itself; \
                 install it (apt-get install libpq5) and run `cargo xtask test`"
            );
            let symbol = |name: &CStr| {
                let pointer = libc::dlsym(handle, name.as_ptr());
                assert!(!pointer.is_null(), "libpq.so.5 has no {name:?}");
                pointer
            };
            Libpq {
                parse: std::mem::transmute::<*mut c_void, ConninfoParse>(symbol(c"PQconninfoParse")),
                free: std::mem::transmute::<*mut c_void, ConninfoFree>(symbol(c"PQconninfoFree")),
                freemem: std::mem::transmute::<*mut c_void, Freemem>(symbol(c"PQfreemem")),
                start: std::mem::transmute::<*mut c_void, ConnectStart>(symbol(c"PQconnectStart")),
                status: std::mem::transmute::<*mut c_void, Status>(symbol(c"PQstatus")),
                error: std::mem::transmute::<*mut c_void, ErrorMessage>(symbol(c"PQerrorMessage")),
                finish: std::mem::transmute::<*mut c_void, Finish>(symbol(c"PQfinish")),
            }
        }
    }

    /// `PQconninfoParse`: the keywords the string sets, with their values, or libpq's message.
    fn conninfo_parse(&self, text: &str) -> Result<BTreeMap<String, String>, String> {
        let text = CString::new(text).expect("no NUL in the corpus");
        // SAFETY: libpq's contract: the result is an array ended by a null keyword, freed with
        // PQconninfoFree; the error message is freed with PQfreemem.
        unsafe {
            let mut error: *mut c_char = std::ptr::null_mut();
            let options = (self.parse)(text.as_ptr(), &raw mut error);
            if options.is_null() {
                let message = if error.is_null() {
                    "(no message)".to_owned()
                } else {
                    let m = CStr::from_ptr(error).to_string_lossy().trim_end().to_owned();
                    (self.freemem)(error.cast());
                    m
                };
                return Err(message);
            }
            let mut values = BTreeMap::new();
            let mut option = options;
            while !(*option).keyword.is_null() {
                if !(*option).val.is_null() {
                    let keyword = CStr::from_ptr((*option).keyword).to_string_lossy().into_owned();
                    values.insert(keyword, CStr::from_ptr((*option).val).to_string_lossy().into_owned());
                }
                option = option.add(1);
            }
            (self.free)(options);
            Ok(values)
        }
    }

    /// `PQconnectStart`: `Err` with libpq's message when it refuses the options before connecting
    /// (anything but a failure to reach a server).
    fn options_check(&self, text: &str) -> Result<(), String> {
        let text = CString::new(text).expect("no NUL in the corpus");
        // SAFETY: PQconnectStart returns a connection object (or null on out-of-memory) that PQfinish frees;
        // the error message belongs to it and is copied before.
        unsafe {
            let conn = (self.start)(text.as_ptr());
            assert!(!conn.is_null(), "PQconnectStart: out of memory");
            let bad = (self.status)(conn) == 1;
            let message = CStr::from_ptr((self.error)(conn)).to_string_lossy().into_owned();
            (self.finish)(conn);
            if !bad {
                return Ok(());
            }
            let refused: Vec<&str> = message
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace))
                .filter(|l| {
                    !l.starts_with("could not translate host name") && !l.starts_with("connection to server")
                })
                .collect();
            if refused.is_empty() { Ok(()) } else { Err(refused.join(" | ")) }
        }
    }
}

/// Every string of the corpus, with its line number.
fn corpus() -> Vec<(usize, &'static str)> {
    CORPUS
        .split('\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(i, line)| (i + 1, line))
        .collect()
}

/// Which documented difference explains a disagreement over `text`, if any.
fn syntax_difference(
    text: &str,
    libpq: &Result<BTreeMap<String, String>, String>,
    ours: &Result<BTreeMap<String, String>, Vec<String>>,
) -> Option<&'static str> {
    let is_url = text.starts_with("postgresql://") || text.starts_with("postgres://");
    if let (Err(message), Ok(values)) = (libpq, ours)
        && message.contains("load_balance_hosts")
        && values.contains_key("load_balance_hosts")
    {
        return Some("load-balance-hosts");
    }
    if let Err(errors) = ours
        && errors.iter().any(|e| e.contains("is not UTF-8"))
    {
        return Some("utf-8");
    }
    if is_url {
        // libpq ends the user part at the first `@`; pgconn at the last one before the host part ends.
        let rest = text.split_once("://").map_or("", |(_, rest)| rest);
        let region = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(first) = region.find('@') {
            let after = &region[first + 1..];
            let host_part = &after[..after.find('?').unwrap_or(after.len())];
            if host_part.contains('@') {
                return Some("at-in-user-part");
            }
        }
    }
    None
}

#[test]
fn connection_strings_read_as_libpq_reads_them() {
    let libpq = Libpq::load();
    let mut agreed = 0;
    let mut explained: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (line, text) in corpus() {
        let theirs = libpq.conninfo_parse(text);
        let ours = conninfo::parse(text)
            .map(|info| info.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect::<BTreeMap<_, _>>());
        let same = match (&theirs, &ours) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if same {
            agreed += 1;
            continue;
        }
        match syntax_difference(text, &theirs, &ours) {
            Some(id) => explained.entry(id).or_default().push(line),
            None => failures.push(format!("line {line}: {text}\n  libpq:  {theirs:?}\n  pgconn: {ours:?}")),
        }
    }
    eprintln!("libpq agreement: {agreed} strings the same; documented differences: {explained:?}");
    assert!(
        failures.is_empty(),
        "{} strings read differently from libpq:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(agreed > 400, "the corpus is smaller than expected: {agreed}");
}

/// What a refusal by pgconn of a string libpq's options check passes is explained by.
fn option_difference(text: &str, problems: &[String]) -> Option<&'static str> {
    let all = problems.join("\n");
    // verify-ca/verify-full without a CA file: libpq refuses at the TLS handshake, after this check.
    if all.contains("no sslrootcert=PATH") && text.contains("verify-") {
        return Some("ca-checked-early");
    }
    let checks: &[(&str, &str)] = &[
        ("would wait forever", "connect-timeout-zero"),
        ("is not supported:", "unsupported-keyword"),
        ("is not implemented by the postgres crate", "unsupported-value"),
        ("(the postgres crate always uses UTF8)", "unsupported-value"),
        ("GSSAPI encryption is not supported", "unsupported-value"),
        ("pgconn negotiates TLS 1.2 or 1.3", "unsupported-value"),
        ("pgconn always sends the host name", "unsupported-value"),
        ("may not be used with sslrootcert=system", "sslrootcert-system"),
        ("an address for every host or for none", "hostaddr-for-every-host"),
        ("is not UTF-8", "utf-8"),
    ];
    checks.iter().find(|(needle, _)| all.contains(needle)).map(|(_, id)| *id)
}

#[test]
fn values_refused_and_accepted_as_libpq_does() {
    if std::env::var_os(INNER).is_none() {
        return rerun_in_private_network("libpq::values_refused_and_accepted_as_libpq_does");
    }
    let libpq = Libpq::load();
    let mut failures = Vec::new();
    let mut explained: BTreeMap<&str, usize> = BTreeMap::new();
    let mut agreed = 0;
    for (line, text) in corpus() {
        // Only strings both parsers read the same; the syntax test covers the rest.
        let (Ok(theirs), Ok(ours)) = (libpq.conninfo_parse(text), conninfo::parse(text)) else { continue };
        if ours.iter().count() != theirs.len() {
            continue;
        }
        let libpq_verdict = libpq.options_check(text);
        let pgconn_verdict =
            Settings::from_vars([("DATABASE_URL", text), ("HOME", "/nonexistent/pgconn-libpq-test")])
                .map_err(|e| e.problems().iter().map(|p| p.message.clone()).collect::<Vec<_>>());
        match (&libpq_verdict, &pgconn_verdict) {
            (Ok(()), Ok(_)) | (Err(_), Err(_)) => agreed += 1,
            // libpq reads connect_timeout only in a blocking connect (PQconnectdb), which refuses a
            // value that is not a number; PQconnectStart never looks at it.
            (Ok(()), Err(problems))
                if problems.iter().all(|p| p.contains("parameter connect_timeout must be whole seconds")) =>
            {
                agreed += 1;
            }
            (Ok(()), Err(problems)) => match option_difference(text, problems) {
                Some(id) => *explained.entry(id).or_default() += 1,
                None => failures.push(format!("line {line}: {text}\n  libpq accepts; pgconn: {problems:?}")),
            },
            (Err(message), Ok(_)) => {
                failures.push(format!("line {line}: {text}\n  libpq refuses ({message}); pgconn accepts"));
            }
        }
    }
    eprintln!("libpq options check: {agreed} the same; documented differences: {explained:?}");
    assert!(
        failures.is_empty(),
        "{} strings judged differently from libpq:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_difference_is_documented() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md"))
        .expect("docs/configuration.md is readable");
    for id in DIFFERENCES {
        assert!(
            docs.contains(&format!("`{id}`")),
            "docs/configuration.md does not list the difference `{id}`"
        );
    }
}

/// Re-runs `name` under `unshare -n` (loopback only, down): libpq's connects fail at once there.
fn rerun_in_private_network(name: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    assert!(
        root,
        "the libpq options check runs libpq's connect in a private network namespace (unshare -n), which \
         needs root; run `cargo xtask test` as root, as CI does"
    );
    let output = Command::new("unshare")
        .args(["-n", "--"])
        .arg(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent/pgconn-libpq-test")
        .env(INNER, "1")
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs (apt-get install util-linux)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{text}");
    assert!(
        output.status.success() && text.contains("1 passed"),
        "{name} in a private network namespace failed:\n{text}"
    );
}
