//! `cargo xtask soak --minutes N [--clients C] [--seed S]`: a long, bounded, mixed load on both tiers while
//! faults are injected at random, watching the client processes for anything that grows.
//!
//! It starts a throwaway PostgreSQL with PgBouncer in front, and two `pgconn load` processes for the whole
//! run, each with C request threads (default 4) and `--report-every 10`: reads on the direct tier, writes
//! through PgBouncer in transaction mode. Every 15 to 45 s (drawn from the seed, printed so that a run can
//! be repeated) it injects one fault: a PostgreSQL restart, a PgBouncer restart, every application backend
//! terminated, or, as root with `unshare`, `ip` and `nft`, a blackhole of 2 to 6 s (PostgreSQL to its
//! clients, clients to PostgreSQL, PgBouncer to its clients). For the blackholes the whole run happens in
//! a private network namespace (`unshare -n`, loopback only), so no other traffic is touched. The last
//! quarter of the run (at most 2 minutes) is quiet: the tiers must recover.
//!
//! It fails when a request outlived its bound ([`REQUEST_BOUND`]), when a tier still failed at its last
//! sample, or when a load process grew: file descriptors beyond its connections' own, threads, or resident
//! memory (see [`judge`]). It prints a row per minute and tier: requests, errors by kind, the slowest
//! request, file descriptors, memory and threads. Not part of CI; `docs/operations.md` has a recorded run.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use pgconn_testkit::{Cluster, GuardedChild, PgBouncer, ShutdownMode, StopStep, libc};

use crate::process;
use crate::reports::{self, LoadLine, LoadReport, ProcessSample, Sample};

/// Set in the copy of xtask that runs inside the private network namespace.
const INSIDE: &str = "PGCONN_SOAK_NETNS";

/// The bounds the loads run under, as in the network fault tests.
const BOUNDS: [(&str, &str); 5] = [
    ("DB_QUERY_TIMEOUT", "1500"),
    ("DB_STATEMENT_TIMEOUT", "1000"),
    ("DB_CONNECT_TIMEOUT", "2"),
    ("DB_POOL_TIMEOUT", "2000"),
    // Connections are replaced during the run, so that opening and closing them is soaked too.
    ("DB_CONN_MAX_AGE", "120"),
];

/// The longest a request may take under [`BOUNDS`]: the checkout's wait (2 s) plus one validation of an
/// idle connection (2 s) plus one call (1.5 s), and the watchdog's period and some scheduling.
const REQUEST_BOUND: Duration = Duration::from_secs(6);

/// File descriptors each open connection holds in the client: its socket, and the driver's runtime (two
/// `eventpoll`, one `eventfd`); `docs/pool.md`.
const FDS_PER_CONNECTION: i64 = 4;

/// Seconds per sample of the loads.
const SAMPLE_EVERY: u32 = 10;

const LOAD_STOP: &[StopStep] = &[StopStep { signal: libc::SIGTERM, wait: Duration::from_secs(10) }];

/// `cargo xtask soak`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Minutes of load.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(3..=1440))]
    minutes: u32,
    /// Request threads per tier.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    clients: u32,
    /// The seed of the faults' order and timing (default: the clock), to repeat a run.
    #[arg(long)]
    seed: Option<u64>,
}

/// The run's parameters, the seed drawn.
struct Settled {
    minutes: u32,
    clients: u32,
    seed: u64,
}

pub(crate) fn run(args: &Args) -> Result<u8> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let parsed = Settled { minutes: args.minutes, clients: args.clients, seed };
    let pgconn = crate::build_pgconn_release()?;
    if std::env::var_os(INSIDE).is_some() {
        let status =
            Command::new("ip").args(["link", "set", "lo", "up"]).status().context("cannot run ip")?;
        anyhow::ensure!(status.success(), "ip link set lo up failed in the private network namespace");
        return soak(&parsed, &pgconn, true);
    }
    match blackholes_unavailable() {
        None => {
            eprintln!("xtask: soak: running in a private network namespace (unshare -n), for the blackholes");
            let exe = std::env::current_exe().context("cannot find xtask's own binary")?;
            let mut cmd = Command::new("unshare");
            // The same run, the seed fixed, inside the namespace.
            let (minutes, clients, seed) =
                (parsed.minutes.to_string(), parsed.clients.to_string(), seed.to_string());
            cmd.args(["-n", "--"]).arg(exe).arg("soak").env(INSIDE, "1");
            cmd.args(["--minutes", &minutes, "--clients", &clients, "--seed", &seed]);
            let status = process::run(&mut cmd, "unshare -n xtask soak")?;
            Ok(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1))
        }
        Some(why) => {
            eprintln!("xtask: soak: no blackholes in this run ({why}); restarts and terminations only");
            soak(&parsed, &pgconn, false)
        }
    }
}

/// Why blackholes cannot be made here, if they cannot.
fn blackholes_unavailable() -> Option<String> {
    let root = pgconn_testkit::signal::is_root();
    let missing: Vec<&str> = ["unshare", "ip", "nft"]
        .into_iter()
        .filter(|tool| !pgconn_testkit::system_tool_installed(tool))
        .collect();
    match (root, missing.is_empty()) {
        (true, true) => None,
        (false, _) => Some("they need root".into()),
        (true, false) => Some(format!("missing {}: apt-get install nftables iproute2", missing.join(", "))),
    }
}

/// What a tier's load process printed.
#[derive(Default)]
struct Tier {
    samples: Vec<Sample>,
    report: Option<Box<LoadReport>>,
}

impl Tier {
    fn take(&mut self, line: LoadLine) {
        match line {
            LoadLine::Sample { sample } => self.samples.push(sample),
            LoadLine::Report(report) => self.report = Some(report),
        }
    }
}

/// The two tiers.
const TIERS: [&str; 2] = ["direct", "pgbouncer"];

fn soak(args: &Settled, pgconn: &std::path::Path, blackholes: bool) -> Result<u8> {
    let seconds = u64::from(args.minutes) * 60;
    let quiet = (seconds / 4).min(120);
    eprintln!(
        "xtask: soak: {} minutes, {} clients per tier, seed {} (repeat with --seed {}); faults until {} s, then \
         {quiet} s quiet",
        args.minutes,
        args.clients,
        args.seed,
        args.seed,
        seconds - quiet
    );
    let mut cluster = Cluster::start_temp(&process::cluster_options().setting("max_connections", "60"))?;
    let mut bouncer = PgBouncer::in_front_of(
        &cluster,
        pgconn,
        &[("PGBOUNCER_DEFAULT_POOL_SIZE", "10")],
        &process::pgbouncer_options(),
    )?;
    cluster
        .psql(
            "CREATE TABLE soak (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);\n\
             INSERT INTO soak (id) SELECT generate_series(1, 10000);\n\
             GRANT SELECT, UPDATE ON soak TO pgconn_app;\n",
        )
        .context("cannot create the soak table")?;

    let (pg_port, bouncer_port) = (cluster.info().port, bouncer.port());
    let database_url = cluster.info().database_url();
    let queries = [
        "SELECT n FROM soak WHERE id = (SELECT 1 + (random() * 9999)::int)",
        "UPDATE soak SET n = n + 1 WHERE id = (SELECT 1 + (random() * 9999)::int)",
    ];
    let (lines, received) = mpsc::channel::<(usize, LoadLine)>();
    let mut loads = Vec::new();
    for (tier, query) in queries.iter().enumerate() {
        let mut cmd = Command::new(pgconn);
        cmd.args(["load", "--json", "--query", query])
            .args(["--clients", &args.clients.to_string(), "--duration", &seconds.to_string()])
            .args(["--warmup", "2", "--report-every", &SAMPLE_EVERY.to_string()])
            .env("DATABASE_URL", &database_url)
            .env("DB_POOL_MAX_SIZE", args.clients.to_string())
            .env("RUST_LOG", "error")
            .envs(BOUNDS)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if tier == 1 {
            cmd.env("USE_PGBOUNCER", "true").env("PGBOUNCER_URL", bouncer.info().database_url());
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot start the {} load", TIERS[tier]))?;
        let stdout = child.stdout.take().context("the load has no stdout")?;
        let lines = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match reports::parse::<LoadLine>(&line, "a line of `pgconn load --report-every --json`") {
                    Ok(parsed) => {
                        let _ = lines.send((tier, parsed));
                    }
                    Err(e) => eprintln!("xtask: soak: {e:#}"),
                }
            }
        });
        loads.push(GuardedChild::new(format!("pgconn load ({})", TIERS[tier]), child, LOAD_STOP));
    }
    drop(lines);

    let started = Instant::now();
    let mut rng = Rng(args.seed.max(1));
    let mut events = Vec::new();
    let faults_until = started + Duration::from_secs(seconds - quiet);
    let mut next_fault = started + Duration::from_secs(rng.between(15, 45));
    let mut tiers: [Tier; 2] = Default::default();
    let give_up = started + Duration::from_secs(seconds + 60);
    loop {
        if process::interrupted() {
            bail!(pgconn_testkit::Interrupted);
        }
        while let Ok((tier, line)) = received.try_recv() {
            if let LoadLine::Sample { sample } = &line {
                print_sample(TIERS[tier], sample);
            }
            tiers[tier].take(line);
        }
        let mut running = 0;
        for load in &mut loads {
            if load.try_wait()?.is_none() {
                running += 1;
            }
        }
        if running == 0 {
            // The readers send what is left before their channel closes.
            for (tier, line) in &received {
                tiers[tier].take(line);
            }
            break;
        }
        let now = Instant::now();
        if now > give_up {
            bail!("the loads did not end within a minute of their duration: a request hangs");
        }
        if now >= next_fault && now < faults_until {
            let at = now.duration_since(started).as_secs();
            let fault = inject(&mut rng, blackholes, &mut cluster, &mut bouncer, pg_port, bouncer_port)?;
            eprintln!("xtask: soak: {at:>5} s  {fault}");
            events.push((at, fault));
            next_fault = Instant::now() + Duration::from_secs(rng.between(15, 45));
        }
        thread::sleep(Duration::from_millis(200));
    }

    println!("\n## Soak: {} minutes, {} clients per tier, seed {}\n", args.minutes, args.clients, args.seed);
    println!("Faults ({}):\n", events.len());
    for (at, fault) in &events {
        println!("- {at} s: {fault}");
    }
    println!("\n| minute | tier | requests | errors | slowest ms | fds | rss MB | threads | pool |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (tier, name) in TIERS.iter().enumerate() {
        for row in per_minute(&tiers[tier].samples, u64::from(args.minutes)) {
            println!("| {} | {name} | {} |", row.0, row.1);
        }
    }
    let mut failures = Vec::new();
    for (tier, name) in TIERS.iter().enumerate() {
        let Some(report) = &tiers[tier].report else {
            failures.push(format!("{name}: the load printed no report"));
            continue;
        };
        println!(
            "\n{name}: {} requests, {} errors ({}), slowest {:.0} ms",
            report.requests,
            report.errors,
            report.kinds_seen(),
            report.latency_ms.max
        );
        for (kind, example) in &report.error_examples {
            println!("- first {kind}: {example}");
        }
        failures.extend(judge(name, &tiers[tier].samples, report.latency_ms.max));
    }
    if failures.is_empty() {
        println!(
            "\nsoak passed: every request within {REQUEST_BOUND:?}, both tiers serving at the end, nothing grew"
        );
        Ok(0)
    } else {
        println!("\nsoak FAILED:");
        for failure in &failures {
            println!("- {failure}");
        }
        Ok(1)
    }
}

/// Injects one fault drawn from `rng`; returns what it did.
fn inject(
    rng: &mut Rng,
    blackholes: bool,
    cluster: &mut Cluster,
    bouncer: &mut PgBouncer,
    pg_port: u16,
    bouncer_port: u16,
) -> Result<String> {
    let kinds = if blackholes { 6 } else { 3 };
    Ok(match rng.between(0, kinds - 1) {
        0 => {
            let down = rng.between(1, 3);
            cluster.stop_server_with(ShutdownMode::Fast)?;
            thread::sleep(Duration::from_secs(down));
            cluster.start_server()?;
            format!("PostgreSQL restarted (fast shutdown, down {down} s)")
        }
        1 => {
            bouncer.restart()?;
            "PgBouncer restarted".to_owned()
        }
        2 => {
            let out = cluster.psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE usename = 'pgconn_app' AND pid <> pg_backend_pid();",
            )?;
            format!("{} application backends terminated", out.trim())
        }
        kind => {
            let (rule, what) = match kind {
                3 => (format!("tcp sport {pg_port} drop"), "PostgreSQL to its clients (and to PgBouncer)"),
                4 => (format!("tcp dport {pg_port} drop"), "clients (and PgBouncer) to PostgreSQL"),
                _ => (format!("tcp sport {bouncer_port} drop"), "PgBouncer to its clients"),
            };
            let seconds = rng.between(2, 6);
            blackhole(&rule, Duration::from_secs(seconds))?;
            format!("blackhole {seconds} s: {what}")
        }
    })
}

/// Drops packets matching `rule` (nft syntax, input hook) for `how_long`.
fn blackhole(rule: &str, how_long: Duration) -> Result<()> {
    let nft = |args: &[&str]| -> Result<()> {
        let out = Command::new("nft").args(args).output().context("cannot run nft")?;
        anyhow::ensure!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    };
    nft(&["add", "table", "inet", "pgconn_soak"])?;
    nft(&["add", "chain", "inet", "pgconn_soak", "in", "{ type filter hook input priority 0; }"])?;
    let mut args = vec!["add", "rule", "inet", "pgconn_soak", "in"];
    args.extend(rule.split_whitespace());
    let added = nft(&args);
    if added.is_ok() {
        thread::sleep(how_long);
    }
    let deleted = nft(&["delete", "table", "inet", "pgconn_soak"]);
    added.and(deleted)
}

fn print_sample(tier: &str, s: &Sample) {
    let kinds: Vec<String> = s.error_kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let process = s
        .process
        .map_or(String::new(), |p| format!("  fds {}  rss {} kB  threads {}", p.fds, p.rss_kb, p.threads));
    eprintln!(
        "xtask: soak: {:>5.0} s  {tier:<9}  {} requests  {} errors{}  slowest {:.0} ms  pool {}{process}",
        s.t_s,
        s.requests,
        s.errors,
        if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) },
        s.max_latency_ms,
        s.pool.size,
    );
}

/// The samples by minute of a run of `run_minutes`: `(minute, table cells after the tier)`. The last part
/// interval (the moments between the run's end and the load's report) counts in the last minute.
fn per_minute(samples: &[Sample], run_minutes: u64) -> Vec<(u64, String)> {
    let mut minutes: BTreeMap<u64, Vec<&Sample>> = BTreeMap::new();
    for sample in samples {
        // By the middle of the sample's interval: a sample ending at 60.0 s belongs to the first minute.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // seconds of a run, positive
        let minute =
            (((sample.t_s - sample.interval_s / 2.0).max(0.0) / 60.0) as u64).min(run_minutes.max(1) - 1);
        minutes.entry(minute).or_default().push(sample);
    }
    minutes
        .into_iter()
        .map(|(minute, samples)| {
            let requests: u64 = samples.iter().map(|s| s.requests).sum();
            let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
            for sample in &samples {
                for (kind, n) in &sample.error_kinds {
                    *kinds.entry(kind).or_default() += n;
                }
            }
            let errors = if kinds.is_empty() {
                "0".to_owned()
            } else {
                kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
            };
            let slowest = samples.iter().map(|s| s.max_latency_ms).fold(0.0, f64::max);
            let last = samples.last().and_then(|s| s.process);
            let cell = |f: fn(&ProcessSample) -> String| last.as_ref().map_or("?".to_owned(), f);
            let pool = samples.last().map_or(0, |s| s.pool.size);
            (
                minute + 1,
                format!(
                    "{requests} | {errors} | {slowest:.0} | {} | {} | {} | {pool}",
                    cell(|p| p.fds.to_string()),
                    cell(|p| format!("{}.{}", p.rss_kb / 1024, p.rss_kb % 1024 * 10 / 1024)),
                    cell(|p| p.threads.to_string()),
                ),
            )
        })
        .collect()
}

/// What is wrong with a tier's run: a request past [`REQUEST_BOUND`] (`slowest_ms`: the report's maximum),
/// more than 1 error in 1000 requests in the last full sample (or no success), or growth. Growth compares the first half of the run (after a tenth of
/// it, at most a minute) with the last quarter: file descriptors beyond [`FDS_PER_CONNECTION`] per open connection may
/// not rise by more than two connections' worth, threads not by more than 2, and the smallest resident
/// memory of the last quarter may not exceed the largest of the first half by more than 10% and 2 MB
/// (in a 10-minute run that catches a leak of about 1.5 MB a minute; longer runs catch slower ones).
fn judge(tier: &str, samples: &[Sample], slowest_ms: f64) -> Vec<String> {
    let mut failures = Vec::new();
    if slowest_ms > REQUEST_BOUND.as_secs_f64() * 1000.0 {
        failures.push(format!(
            "{tier}: a request took {slowest_ms:.0} ms, longer than its bound {REQUEST_BOUND:?}"
        ));
    }
    // The last full interval: the load's final sample may cover only the moments before its threads ended.
    let full = f64::from(SAMPLE_EVERY) / 2.0;
    match samples.iter().rev().find(|s| s.interval_s >= full) {
        // Recovered: serving, with errors at most 1 in 1000 (on a saturated machine a request now and then
        // meets its bound without a fault: docs/operations.md).
        Some(last) if last.ok > 0 && last.errors * 1000 <= last.requests => {}
        Some(last) => failures.push(format!(
            "{tier}: still failing at the end ({} ok, {} errors {:?} in the last {SAMPLE_EVERY} s)",
            last.ok, last.errors, last.error_kinds
        )),
        None => failures.push(format!("{tier}: no samples")),
    }
    let end = samples.last().map_or(0.0, |s| s.t_s);
    let with_process: Vec<(f64, ProcessSample, u32)> =
        samples.iter().filter_map(|s| Some((s.t_s, s.process?, s.pool.size))).collect();
    // The first half after a warm-up of a tenth of the run (at most a minute), against the last quarter.
    let warm = (end / 10.0).min(60.0);
    let early: Vec<_> = with_process.iter().filter(|(t, ..)| *t >= warm && *t <= end / 2.0).collect();
    let late: Vec<_> = with_process.iter().filter(|(t, ..)| *t >= end * 0.75).collect();
    if early.is_empty() || late.is_empty() {
        failures.push(format!(
            "{tier}: too short to judge growth (needs samples after the first minute in its first half)"
        ));
        return failures;
    }
    #[allow(clippy::cast_possible_wrap)] // descriptor counts
    let own_fds =
        |(_, p, size): &&(f64, ProcessSample, u32)| p.fds as i64 - FDS_PER_CONNECTION * i64::from(*size);
    let (fds_early, fds_late) = (early.iter().map(own_fds).max(), late.iter().map(own_fds).max());
    if let (Some(a), Some(b)) = (fds_early, fds_late)
        && b > a + 2 * FDS_PER_CONNECTION
    {
        failures.push(format!(
            "{tier}: file descriptors grew: {a} beyond the connections' own early, {b} at the end"
        ));
    }
    let threads =
        |set: &[&(f64, ProcessSample, u32)]| set.iter().map(|(_, p, _)| p.threads).max().unwrap_or(0);
    if threads(&late) > threads(&early) + 2 {
        failures.push(format!("{tier}: threads grew from {} to {}", threads(&early), threads(&late)));
    }
    let rss_early = early.iter().map(|(_, p, _)| p.rss_kb).max().unwrap_or(0);
    let rss_late = late.iter().map(|(_, p, _)| p.rss_kb).min().unwrap_or(0);
    if rss_late > rss_early + rss_early / 10 + 2048 {
        failures.push(format!(
            "{tier}: resident memory grew from at most {rss_early} kB to at least {rss_late} kB"
        ));
    }
    failures
}

/// xorshift64: faults drawn from a seed, so that a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number from `low` to `high`, both included.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::PoolState;

    /// The sample at `t` seconds.
    fn sample(t: u32, fds: u64, size: u32, rss_kb: u64, threads: u64) -> Sample {
        Sample {
            t_s: f64::from(t),
            interval_s: 10.0,
            requests: 100,
            ok: 100,
            errors: 0,
            error_kinds: BTreeMap::new(),
            max_latency_ms: 5.0,
            pool: PoolState { size, in_use: 0, waiting: 0 },
            process: Some(ProcessSample { fds, rss_kb, threads }),
        }
    }

    /// Ten minutes of samples, every 10 s.
    fn run(f: impl Fn(u32) -> Sample) -> Vec<Sample> {
        (1..=60).map(|i| f(i * 10)).collect()
    }

    #[test]
    fn a_steady_run_passes_and_each_kind_of_growth_fails() {
        // Pool size changing is not growth: the connections' own descriptors are set aside.
        let steady = run(|t| sample(t, 20 + 4 * u64::from(t % 3), t % 3, 8000, 7));
        assert!(judge("t", &steady, 100.0).is_empty(), "{:?}", judge("t", &steady, 100.0));
        let fds = run(|t| sample(t, 20 + u64::from(t) / 20, 2, 8000, 7));
        assert!(judge("t", &fds, 100.0)[0].contains("file descriptors grew"));
        let threads = run(|t| sample(t, 20, 2, 8000, 7 + u64::from(t) / 100));
        assert!(judge("t", &threads, 100.0)[0].contains("threads grew"));
        let rss = run(|t| sample(t, 20, 2, 8000 + 50 * u64::from(t), 7));
        let noisy = run(|t| sample(t, 20, 2, 8000 + 900 * u64::from(t % 20 / 10), 7));
        assert!(judge("t", &noisy, 100.0).is_empty(), "{:?}", judge("t", &noisy, 100.0));
        assert!(judge("t", &rss, 100.0)[0].contains("resident memory grew"));
        assert!(judge("t", &steady, 7000.0)[0].contains("longer than its bound"));
        // The load's last, part interval after its threads ended: not a failure.
        let mut tail = run(|t| sample(t, 20, 2, 8000, 7));
        let mut last = sample(600, 20, 2, 8000, 7);
        (last.interval_s, last.ok, last.requests) = (0.01, 0, 0);
        tail.push(last);
        assert!(judge("t", &tail, 100.0).is_empty(), "{:?}", judge("t", &tail, 100.0));
        // Three minutes are enough to judge.
        let short: Vec<Sample> = (1..=18).map(|i| sample(i * 10, 20, 2, 8000, 7)).collect();
        assert!(judge("t", &short, 100.0).is_empty(), "{:?}", judge("t", &short, 100.0));
        let mut failing = steady;
        if let Some(last) = failing.last_mut() {
            (last.errors, last.requests) = (3, 103);
        }
        assert!(judge("t", &failing, 100.0)[0].contains("still failing"));
        if let Some(last) = failing.last_mut() {
            (last.errors, last.requests, last.ok) = (1, 100_000, 99_999);
        }
        assert!(judge("t", &failing, 100.0).is_empty(), "1 in 100000 is recovered");
    }

    #[test]
    fn the_samples_of_pgconn_load_are_read() {
        let line = r#"{"sample":{"t_s":10.0,"interval_s":10.0,"requests":5,"ok":4,"errors":1,"error_kinds":{"pool_timeout":1},"max_latency_ms":2001.5,"pool":{"max_size":4,"size":4,"idle":1,"in_use":3,"waiting":0},"process":{"fds":30,"rss_kb":9000,"threads":8}}}"#;
        let Ok(LoadLine::Sample { sample }) = reports::parse::<LoadLine>(line, "a sample") else {
            panic!("not a sample")
        };
        assert_eq!((sample.errors, sample.pool.size, sample.process.map(|p| p.fds)), (1, 4, Some(30)));
    }
}
