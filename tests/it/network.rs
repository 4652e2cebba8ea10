//! Network faults: a path that goes silent (a dead switch, a frozen VM, a host gone without a reset), made
//! with the kernel's packet filter in a private network namespace. Each test re-runs itself under
//! `unshare -n` (loopback only), starts its own PostgreSQL (and PgBouncer) there, and drops packets with
//! `nft` for a few seconds under load; every request must end within its bound with a typed error, the
//! pool must serve normally once the path heals, and no file descriptor or thread may be left behind.
//!
//! Needs root (CI runs as root), `unshare`, `ip` and `nft` (`apt-get install nftables iproute2`). Each case
//! prints what requests saw (the figures of `docs/operations.md`); `--nocapture` shows them.
#![allow(clippy::print_stderr)]

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use pgconn_config::Settings;
use pgconn_pool::{ErrorKind, Pool};
use pgconn_tests::{ClusterOptions, private_cluster, private_pgbouncer};

use crate::faults::Load;

/// Set in the child that runs a test's body inside the namespace: the test's name.
const INNER: &str = "PGCONN_TEST_NETNS_CASE";

/// Runs `body` in a private network namespace: re-runs this test (`name`) under `unshare -n`.
#[track_caller]
fn in_private_network(name: &str, body: impl FnOnce()) {
    if std::env::var(INNER).as_deref() == Ok(name) {
        run("ip", &["link", "set", "lo", "up"]);
        return body();
    }
    let root = pgconn_testkit::signal::is_root();
    let missing: Vec<&str> = ["unshare", "ip", "nft"]
        .into_iter()
        .filter(|tool| !pgconn_testkit::system_tool_installed(tool))
        .collect();
    assert!(
        root && missing.is_empty(),
        "network fault tests need root and unshare, ip and nft (missing: {missing:?}; root: {root}): \
         apt-get install nftables iproute2, and run `cargo xtask test` as root, as CI does"
    );
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("unshare")
        .args(["-n", "--"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(INNER, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{text}");
    assert!(
        output.status.success() && text.contains("1 passed"),
        "{name} in a private network namespace failed ({}):\n{text}",
        output.status
    );
}

#[track_caller]
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Packets matching `rule` (nft syntax, on the input hook) are dropped until this is dropped.
struct Blackhole;

impl Blackhole {
    fn new(rule: &str) -> Blackhole {
        run("nft", &["add", "table", "inet", "pgconn_fault"]);
        run("nft", &["add", "chain", "inet", "pgconn_fault", "in", "{ type filter hook input priority 0; }"]);
        let mut args = vec!["add", "rule", "inet", "pgconn_fault", "in"];
        args.extend(rule.split_whitespace());
        run("nft", &args);
        Blackhole
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        run("nft", &["delete", "table", "inet", "pgconn_fault"]);
    }
}

/// Open file descriptors and threads of this process.
fn resources() -> (usize, usize) {
    let count = |dir: &str| std::fs::read_dir(dir).unwrap().count();
    (count("/proc/self/fd"), count("/proc/self/task"))
}

const BOUNDS: [(&str, &str); 5] = [
    ("DB_QUERY_TIMEOUT", "1500"),
    ("DB_CONNECT_TIMEOUT", "2"),
    ("DB_POOL_TIMEOUT", "2000"),
    ("DB_POOL_MAX_SIZE", "4"),
    ("DB_POOL_MIN_IDLE", "4"),
];

/// The longest a request may take under [`BOUNDS`]: the checkout's wait (2 s) plus one validation of an
/// idle connection (2 s) plus one call (1.5 s), and the watchdog's period and some scheduling.
const REQUEST_BOUND: Duration = Duration::from_secs(6);

fn settings(url: &str, pgbouncer: Option<&str>) -> Settings {
    let mut vars = vec![("DATABASE_URL".to_owned(), url.to_owned())];
    if let Some(pgbouncer) = pgbouncer {
        vars.push(("USE_PGBOUNCER".to_owned(), "true".to_owned()));
        vars.push(("PGBOUNCER_URL".to_owned(), pgbouncer.to_owned()));
    }
    vars.extend(BOUNDS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Settings::from_vars(vars).unwrap()
}

/// Blackholes `rule` for 3 s under load on `pool`, heals it, and checks the bounds, the kinds, the
/// recovery.
#[track_caller]
fn blackhole_under_load(pool: &Pool, what: &str, rule: &str, sql: &'static str) {
    let load = Load::start_with(pool, 4, sql, Duration::from_millis(5));
    thread::sleep(Duration::from_millis(300));
    let hole = Blackhole::new(rule);
    let started = Instant::now();
    thread::sleep(Duration::from_secs(3));
    drop(hole);
    let healed = Instant::now();
    thread::sleep(Duration::from_secs(4));
    let outcomes = load.finish();
    let allowed = [
        ErrorKind::QueryTimeout,
        ErrorKind::PoolTimeout,
        ErrorKind::ConnectTimeout,
        ErrorKind::ConnectionLost,
    ];
    for &(at, took, error) in &outcomes {
        assert!(took < REQUEST_BOUND, "{what}: a request took {took:?}");
        if let Some(kind) = error {
            assert!(allowed.contains(&kind), "{what}: unexpected {kind}");
        }
        assert!(
            error.is_none() || at < healed + Duration::from_millis(1500),
            "{what}: {error:?} {:?} after the path healed",
            at.saturating_duration_since(healed)
        );
    }
    let failed: Vec<ErrorKind> = outcomes.iter().filter_map(|o| o.2).collect();
    let worst = outcomes.iter().map(|o| o.1).max().unwrap_or_default();
    let after = outcomes.iter().filter(|o| o.0 > healed + Duration::from_millis(1500)).count();
    eprintln!(
        "{what}: {} requests, {} failed {failed:?}, longest {worst:?}, {after} after healing; hole {:?}",
        outcomes.len(),
        failed.len(),
        healed - started
    );
    assert!(!failed.is_empty(), "{what}: the blackhole was not seen at all");
    assert!(after > 20, "{what}: only {after} requests after the path healed");
}

/// Every request of a fresh checkout while the server's answers are dropped ends within its bound, and
/// building a pool while SYN-ACKs are dropped fails as `connect_timeout`.
#[track_caller]
fn silent_checkouts_and_connects(pool: &Pool, settings: &Settings, port: u16) {
    // Validation: idle past the bypass window, then the answers stop.
    thread::sleep(Duration::from_millis(700));
    {
        let _hole = Blackhole::new(&format!("tcp sport {port} drop"));
        let started = Instant::now();
        let result = pool.get().and_then(|mut conn| conn.query("SELECT 1", &[]).map(drop));
        let took = started.elapsed();
        let kind = result.expect_err("the server cannot answer").kind();
        assert!(took < REQUEST_BOUND, "validation: {took:?}");
        eprintln!("validation: {kind} after {took:?}");
    }
    // Connect: the server's SYN-ACK is dropped.
    {
        let _hole = Blackhole::new(&format!("tcp sport {port} tcp flags & (syn | ack) == syn | ack drop"));
        let started = Instant::now();
        let error = Pool::new(settings).err().expect("no pool without a handshake");
        let took = started.elapsed();
        assert_eq!(error.kind(), ErrorKind::ConnectTimeout, "{error}");
        assert!(took < settings.connect_timeout + Duration::from_millis(500), "connect: {took:?}");
        eprintln!("connect: {} after {took:?}", error.kind());
    }
    let one: i32 = pool.get().unwrap().query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
}

/// Checks out every connection of `pool` until each knows its socket: connects that ran together may
/// have to look again at a later checkout (`docs/pool.md`, "Finding the socket").
#[track_caller]
fn every_socket_found(pool: &Pool) {
    for _ in 0..10 {
        let held: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
        if held.iter().all(pgconn_pool::PooledConn::has_deadline) {
            return;
        }
        // A socket is ambiguous while other connections to the same server are being opened (r2d2 fills
        // the pool in the background); once they are claimed, the next checkout finds it.
        drop(held);
        thread::sleep(Duration::from_millis(100));
    }
    panic!("some connection's socket was not found in 10 checkouts");
}

/// Waits (at most 20 s) for the descriptors and threads to come back to `before`, give or take `slack`.
#[track_caller]
fn nothing_leaks(before: (usize, usize)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = resources();
    while (now.0 > before.0 + 2 || now.1 > before.1 + 2) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        now = resources();
    }
    assert!(
        now.0 <= before.0 + 2 && now.1 <= before.1 + 2,
        "(fds, threads) before {before:?}, after {now:?}"
    );
}

#[test]
fn silent_paths_to_postgresql_are_bounded_and_healed() {
    in_private_network("network::silent_paths_to_postgresql_are_bounded_and_healed", || {
        let cluster = private_cluster(&ClusterOptions::default());
        let port = cluster.info().port;
        let settings = settings(&cluster.info().database_url(), None);
        let pool = Pool::new(&settings).unwrap();
        every_socket_found(&pool);
        let before = resources();
        blackhole_under_load(&pool, "server to client", &format!("tcp sport {port} drop"), "SELECT 1");
        blackhole_under_load(&pool, "client to server", &format!("tcp dport {port} drop"), "SELECT 1");
        blackhole_under_load(&pool, "mid-query", &format!("tcp sport {port} drop"), "SELECT pg_sleep(0.2)");
        silent_checkouts_and_connects(&pool, &settings, port);
        nothing_leaks(before);
    });
}

#[test]
fn silent_paths_through_pgbouncer_are_bounded_and_healed() {
    in_private_network("network::silent_paths_through_pgbouncer_are_bounded_and_healed", || {
        let cluster = private_cluster(&ClusterOptions::default());
        let bouncer = private_pgbouncer(&cluster, &[]);
        let bouncer_port = bouncer.info().port;
        let settings = settings(&cluster.info().database_url(), Some(&bouncer.info().database_url()));
        let pool = Pool::new(&settings).unwrap();
        every_socket_found(&pool);
        let before = resources();
        let rule = format!("tcp sport {bouncer_port} drop");
        blackhole_under_load(&pool, "PgBouncer to client", &rule, "SELECT 1");
        let rule = format!("tcp dport {bouncer_port} drop");
        blackhole_under_load(&pool, "client to PgBouncer", &rule, "SELECT 1");
        let rule = format!("tcp sport {} drop", cluster.info().port);
        blackhole_under_load(&pool, "PostgreSQL to PgBouncer", &rule, "SELECT 1");
        silent_checkouts_and_connects(&pool, &settings, bouncer_port);
        nothing_leaks(before);
    });
}
