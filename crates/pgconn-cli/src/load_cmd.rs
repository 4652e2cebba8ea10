//! `pgconn load`: N request-handler threads driving the pool exactly as a thread-per-request server does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use pgconn_cli::load::{
    LoadReport, LoadSample, PoolReport, ProcessSample, TimelineEntry, request_threads_by_cpu,
};
use pgconn_config::Settings;
use pgconn_pool::{ErrorKind, Pool, PoolMetrics, PoolState};

use crate::EXIT_INVALID;

/// Requests when neither `--requests` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 10_000;

/// `pgconn load` options.
#[derive(clap::Args)]
#[allow(clippy::struct_excessive_bools)] // command-line flags
pub(crate) struct LoadArgs {
    /// Concurrent request threads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clients: u32,
    /// Total requests across all threads (default 10000).
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Run for this many seconds instead of a number of requests.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of requests before the measurement starts (not counted; lets the pool fill up).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// The statement each request runs (no parameters).
    #[arg(long, default_value = "SELECT 1")]
    query: String,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Baseline: each thread uses one dedicated connection of its own, no pool (same query, same settings).
    #[arg(long, conflicts_with_all = ["r2d2", "checkout_only"])]
    dedicated: bool,
    /// Baseline: bare r2d2 + `r2d2_postgres` with their defaults (10 connections, a validation round trip on
    /// every checkout, no connect deadline), same query, same target.
    #[arg(long, conflicts_with = "checkout_only")]
    r2d2: bool,
    /// With --r2d2: no validation round trip at checkout (`test_on_check_out(false)`).
    #[arg(long, requires = "r2d2")]
    no_test_on_check_out: bool,
    /// With --dedicated: each thread prepares the query once and runs the prepared statement (what a
    /// statement cache gives); without it, each request runs it unnamed.
    #[arg(long, requires = "dedicated")]
    prepared: bool,
    /// With --dedicated: each connection is pgconn's own client, the pool's connection type
    /// (`pgconn_pool::Client`, no tokio runtime), instead of a `postgres::Client` with a runtime of its own:
    /// the pool's layer alone is then what differs from a pooled run.
    #[arg(long, requires = "dedicated")]
    no_runtime: bool,
    /// Measure the checkout alone: check out and return, no query.
    #[arg(long)]
    checkout_only: bool,
    /// Each request on a thread of its own, started for it and joined, as a server that starts a thread
    /// per request does: the pool then sees every checkout from a new thread. The request's time
    /// includes starting and joining the thread.
    #[arg(long, conflicts_with = "dedicated")]
    thread_per_request: bool,
    /// Every this many seconds, a sample of the interval: requests, errors by kind, the slowest request,
    /// the pool, and this process's file descriptors, memory and threads (for long runs and soak tests).
    /// With --json the output becomes JSON Lines: one `{"sample": ...}` per interval, then the report.
    #[arg(long, value_name = "SECONDS")]
    report_every: Option<f64>,
}

/// How much work: a number of requests, or until a deadline.
#[derive(Clone, Copy)]
enum Budget {
    Requests(u64),
    Until(Instant),
}

/// What one request thread saw.
struct ThreadResult {
    latency: Histogram<u64>,
    /// (ok, errors) per second of the run.
    timeline: Vec<(u64, u64)>,
    errors: BTreeMap<ErrorKind, u64>,
    /// The first error of each kind, in words.
    examples: BTreeMap<ErrorKind, String>,
    ok: u64,
}

pub(crate) fn run(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let Some(settings) = crate::settings_from_env() else { return Ok(ExitCode::from(EXIT_INVALID)) };
    if let Some(seconds) = args.duration
        && !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0)
    {
        eprintln!("--duration must be a number of seconds above 0 and at most 86400, got {seconds}");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    if let Some(seconds) = args.report_every
        && !(seconds.is_finite() && (0.1..=3600.0).contains(&seconds))
    {
        eprintln!("--report-every must be a number of seconds from 0.1 to 3600, got {seconds}");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    if !(args.warmup.is_finite() && (0.0..=3600.0).contains(&args.warmup)) {
        eprintln!("--warmup must be a number of seconds from 0 to 3600, got {}", args.warmup);
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let pool = match Pool::new(&settings) {
        Ok(pool) => pool,
        Err(e) => {
            let message = e.with_cause();
            if args.json {
                let error = serde_json::json!({"error": {"kind": e.kind().as_str(), "message": message}});
                // One line in JSON Lines mode.
                let text = if args.report_every.is_some() {
                    serde_json::to_string(&error)?
                } else {
                    serde_json::to_string_pretty(&error)?
                };
                crate::out(text)?;
            }
            eprintln!("pgconn load: cannot build the pool ({}): {message}", e.kind());
            return Ok(ExitCode::FAILURE);
        }
    };

    let clients = args.clients as usize;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let claimed = Arc::new(AtomicU64::new(0));
    let progress = Progress::new(std::io::stderr().is_terminal() && !args.json, args.report_every.is_some());
    let mut handles = Vec::with_capacity(clients);
    let query: Arc<str> = Arc::from(args.query.as_str());
    // The budget's clock starts when every thread is ready.
    let start_slot = Arc::new(std::sync::OnceLock::<(Instant, Budget)>::new());
    let dedicated = args.dedicated;
    let checkout_only = args.checkout_only;
    let bare = if args.r2d2 { Some(bare_r2d2(&settings, !args.no_test_on_check_out)?) } else { None };
    let prepared = args.prepared;
    let no_runtime = args.no_runtime;
    let thread_per_request = args.thread_per_request;
    for i in 0..clients {
        let bare = bare.clone();
        let (pool, barrier, claimed, query, start_slot, progress) = (
            pool.clone(),
            Arc::clone(&barrier),
            Arc::clone(&claimed),
            Arc::clone(&query),
            Arc::clone(&start_slot),
            progress.clone(),
        );
        let handle = thread::Builder::new()
            .name(format!("request-{i}"))
            .spawn(move || {
                let mut dedicated =
                    dedicated.then(|| Dedicated::connect(pool.settings(), no_runtime, prepared, &query));
                barrier.wait();
                let &(start, budget) = start_slot.get().expect("set before the barrier opens");
                if let Some(Err(e)) = &dedicated {
                    // No connection of its own: this client is one failure, not a loop of them.
                    return (ThreadResult::failed_to_connect(e), None);
                }
                let pooled = |sql: &str| -> Result<(), pgconn_pool::Error> {
                    if checkout_only {
                        pool.get().map(drop)
                    } else if bare.is_some() {
                        bare_request(bare.as_ref(), sql)
                    } else {
                        pool.get().and_then(|mut conn| conn.query(sql, &[]).map(drop))
                    }
                };
                let mut request = |sql: &str| -> Result<(), pgconn_pool::Error> {
                    match &mut dedicated {
                        None if thread_per_request => on_a_new_thread(|| pooled(sql)),
                        None => pooled(sql),
                        Some(Ok(dedicated)) => dedicated.request(sql),
                        Some(Err(e)) => Err(e.clone()),
                    }
                };
                let result = request_loop(&mut request, &query, start, budget, &claimed, &progress);
                // A dedicated connection stays open until the process has been sampled, as a pool's do.
                (result, dedicated.and_then(Result::ok))
            })
            .context("cannot start the request threads")?;
        handles.push(handle);
    }
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let budget = match (args.requests, args.duration) {
        (_, Some(seconds)) => Budget::Until(start + Duration::from_secs_f64(seconds)),
        (requests, None) => Budget::Requests(requests.unwrap_or(DEFAULT_REQUESTS)),
    };
    let _ = start_slot.set((start, budget));
    barrier.wait();
    let reporter = progress.spawn_reporter(start);
    let sampler = args
        .report_every
        .map(|seconds| progress.spawn_sampler(&pool, start, Duration::from_secs_f64(seconds), args.json));
    let (results, dedicated): (Vec<ThreadResult>, Vec<Option<Dedicated>>) =
        handles.into_iter().map(|h| h.join().expect("request threads do not panic")).unzip();
    let elapsed = start.elapsed();
    progress.stop(reporter);
    if let Some(sampler) = sampler.flatten() {
        let _ = sampler.join();
    }

    let mut report = new_report(&settings, args, &results, elapsed, pool.metrics(), pool.state());
    // While the pool, or the dedicated threads, still hold their connections.
    report.process = ProcessSample::now();
    drop(dedicated);
    if args.json && args.report_every.is_some() {
        // JSON Lines: the report is the last line.
        crate::out(serde_json::to_string(&report)?)?;
    } else if args.json {
        crate::out(serde_json::to_string_pretty(&report)?)?;
    } else {
        crate::out(report_text(&report).trim_end())?;
    }
    Ok(if report.errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A request thread's own connection (`--dedicated`), and its statement when prepared once (`--prepared`).
enum Dedicated {
    Postgres(postgres::Client, Option<postgres::Statement>),
    NoRuntime(pgconn_pool::Client, Option<postgres::Statement>),
}

impl Dedicated {
    fn connect(
        settings: &Settings,
        no_runtime: bool,
        prepared: bool,
        sql: &str,
    ) -> Result<Dedicated, pgconn_pool::Error> {
        if no_runtime {
            let mut client = pgconn_pool::Client::connect(settings)?;
            let statement = if prepared { Some(client.prepare(sql).map_err(failed)?) } else { None };
            Ok(Dedicated::NoRuntime(client, statement))
        } else {
            let mut client = pgconn_pool::connect(settings)?;
            let statement = if prepared { Some(client.prepare(sql).map_err(failed)?) } else { None };
            Ok(Dedicated::Postgres(client, statement))
        }
    }

    fn request(&mut self, sql: &str) -> Result<(), pgconn_pool::Error> {
        match self {
            Dedicated::Postgres(client, Some(statement)) => {
                client.query(&*statement, &[]).map(drop).map_err(failed)
            }
            Dedicated::Postgres(client, None) => client.query_typed(sql, &[]).map(drop).map_err(failed),
            Dedicated::NoRuntime(client, Some(statement)) => {
                client.query(&*statement, &[]).map(drop).map_err(failed)
            }
            Dedicated::NoRuntime(client, None) => client.query_typed(sql, &[]).map(drop).map_err(failed),
        }
    }
}

/// A dedicated client's driver error, as the load counts it.
fn failed(e: postgres::Error) -> pgconn_pool::Error {
    pgconn_pool::Error::Other { reason: e.to_string(), source: Arc::new(e) }
}

/// Runs `request` on a thread started for it, and waits for it.
fn on_a_new_thread(
    request: impl FnOnce() -> Result<(), pgconn_pool::Error> + Send,
) -> Result<(), pgconn_pool::Error> {
    thread::scope(|scope| {
        let spawned = thread::Builder::new().name("request".into()).spawn_scoped(scope, request);
        match spawned {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(pgconn_pool::Error::Unsupported("the request's thread panicked".to_owned()))
            }),
            Err(e) => Err(pgconn_pool::Error::Unsupported(format!("cannot start the request's thread: {e}"))),
        }
    })
}

/// The bare r2d2 baseline: r2d2's defaults over `r2d2_postgres`, the target of the settings.
type BarePool = r2d2::Pool<r2d2_postgres::PostgresConnectionManager<postgres::NoTls>>;

fn bare_r2d2(settings: &Settings, test_on_check_out: bool) -> anyhow::Result<BarePool> {
    let mut config = settings.target.to_postgres_config();
    config.application_name(settings.application_name());
    let manager = r2d2_postgres::PostgresConnectionManager::new(config, postgres::NoTls);
    r2d2::Pool::builder()
        .test_on_check_out(test_on_check_out)
        .build(manager)
        .context("cannot build the bare r2d2 pool")
}

fn bare_request(pool: Option<&BarePool>, sql: &str) -> Result<(), pgconn_pool::Error> {
    let other = |reason: String| pgconn_pool::Error::Unsupported(reason);
    let pool = pool.ok_or_else(|| other("no bare r2d2 pool".into()))?;
    let mut conn = pool.get().map_err(|e| other(format!("r2d2: {e}")))?;
    conn.query_typed(sql, &[]).map(drop).map_err(|e| other(e.to_string()))
}

impl ThreadResult {
    fn empty() -> ThreadResult {
        ThreadResult {
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"),
            timeline: Vec::new(),
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
            ok: 0,
        }
    }

    fn failed_to_connect(error: &pgconn_pool::Error) -> ThreadResult {
        let mut result = ThreadResult::empty();
        result.errors.insert(error.kind(), 1);
        result.examples.insert(error.kind(), error.with_cause());
        result.timeline.push((0, 1));
        result
    }
}

// Never inlined: `cargo xtask bench` counts instructions inside it by name (callgrind's `--toggle-collect`).
#[inline(never)]
fn request_loop(
    request: &mut dyn FnMut(&str) -> Result<(), pgconn_pool::Error>,
    query: &str,
    start: Instant,
    budget: Budget,
    claimed: &AtomicU64,
    progress: &Progress,
) -> ThreadResult {
    let mut result = ThreadResult::empty();
    loop {
        let began = Instant::now();
        if began < start {
            // Warming up: the request runs, nothing is counted.
            let _ = request(query);
            continue;
        }
        match budget {
            Budget::Requests(total) if claimed.fetch_add(1, Ordering::Relaxed) >= total => break,
            Budget::Until(deadline) if began >= deadline => break,
            _ => {}
        }
        // The request handler: check out, run the query, return the connection.
        let outcome = request(query);
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        result.latency.saturating_record(micros);
        progress.slowest(micros);
        let second = usize::try_from((began - start).as_secs()).unwrap_or(usize::MAX - 1);
        if result.timeline.len() <= second {
            result.timeline.resize(second + 1, (0, 0));
        }
        match outcome {
            Ok(()) => {
                result.ok += 1;
                result.timeline[second].0 += 1;
                progress.count(None);
            }
            Err(e) => {
                *result.errors.entry(e.kind()).or_default() += 1;
                result.examples.entry(e.kind()).or_insert_with(|| e.with_cause());
                result.timeline[second].1 += 1;
                progress.count(Some(e.kind()));
                log::debug!("request failed: {}", e.with_cause());
            }
        }
    }
    result
}

/// What the request threads count as they go, for the live progress line (on a terminal) and the
/// interval samples (`--report-every`); off otherwise, so that a benchmark's threads share no counter.
#[derive(Clone)]
struct Progress(Option<Arc<Live>>);

struct Live {
    ok: AtomicU64,
    /// By [`ErrorKind::ALL`]'s order.
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// The slowest request since the sampler last looked, in microseconds.
    slowest: AtomicU64,
    /// The progress line is on.
    line: bool,
    done: AtomicBool,
}

impl Live {
    fn errors(&self) -> u64 {
        self.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }
}

impl Progress {
    fn new(line: bool, samples: bool) -> Progress {
        Progress((line || samples).then(|| {
            Arc::new(Live {
                ok: AtomicU64::new(0),
                errors: std::array::from_fn(|_| AtomicU64::new(0)),
                slowest: AtomicU64::new(0),
                line,
                done: AtomicBool::new(false),
            })
        }))
    }

    fn count(&self, error: Option<ErrorKind>) {
        if let Some(live) = &self.0 {
            match error {
                None => live.ok.fetch_add(1, Ordering::Relaxed),
                Some(kind) => {
                    let index = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
                    live.errors[index].fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }

    fn slowest(&self, micros: u64) {
        if let Some(live) = &self.0 {
            live.slowest.fetch_max(micros, Ordering::Relaxed);
        }
    }

    fn spawn_reporter(&self, start: Instant) -> Option<thread::JoinHandle<()>> {
        let live = Arc::clone(self.0.as_ref().filter(|live| live.line)?);
        thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let mut last = (Instant::now(), 0);
                while !live.done.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(250));
                    let (ok, errors) = (live.ok.load(Ordering::Relaxed), live.errors());
                    let now = Instant::now();
                    let rate = rate(ok + errors - last.1, now - last.0);
                    if now - last.0 >= Duration::from_secs(1) {
                        last = (now, ok + errors);
                    }
                    eprint!(
                        "\rpgconn load: {:>5.1}s  {ok} ok  {errors} errors  {rate:.0} requests/s   ",
                        start.elapsed().as_secs_f64()
                    );
                }
                eprintln!();
            })
            .ok()
    }

    /// Prints a [`LoadSample`] every `every` from `start` until [`Progress::stop`], then one for the last
    /// part of an interval.
    fn spawn_sampler(
        &self,
        pool: &Pool,
        start: Instant,
        every: Duration,
        json: bool,
    ) -> Option<thread::JoinHandle<()>> {
        let live = Arc::clone(self.0.as_ref()?);
        let pool = pool.clone();
        thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                // Counted from the end of the warm-up: what the threads counted before is not sampled.
                let mut last: Option<(Instant, u64, [u64; ErrorKind::ALL.len()])> = None;
                let mut next = start;
                loop {
                    let done = live.done.load(Ordering::Relaxed);
                    let now = Instant::now();
                    if !done && now < next {
                        thread::sleep((next - now).min(Duration::from_millis(100)));
                        continue;
                    }
                    next += every;
                    let ok = live.ok.load(Ordering::Relaxed);
                    let errors: [u64; ErrorKind::ALL.len()] =
                        std::array::from_fn(|i| live.errors[i].load(Ordering::Relaxed));
                    let slowest = live.slowest.swap(0, Ordering::Relaxed);
                    if let Some((at, ok_before, errors_before)) = last {
                        let error_kinds: BTreeMap<String, u64> = ErrorKind::ALL
                            .iter()
                            .enumerate()
                            .filter(|&(i, _)| errors[i] > errors_before[i])
                            .map(|(i, kind)| (kind.as_str().to_owned(), errors[i] - errors_before[i]))
                            .collect();
                        let failed = error_kinds.values().sum::<u64>();
                        #[allow(clippy::cast_precision_loss)] // microseconds far below 2^52
                        let sample = LoadSample {
                            t_s: now.saturating_duration_since(start).as_secs_f64(),
                            interval_s: now.saturating_duration_since(at).as_secs_f64(),
                            requests: ok - ok_before + failed,
                            ok: ok - ok_before,
                            errors: failed,
                            error_kinds,
                            max_latency_ms: slowest as f64 / 1000.0,
                            pool: pool.state(),
                            process: ProcessSample::now(),
                            request_threads_by_cpu: request_threads_by_cpu(),
                        };
                        match print_sample(&sample, json) {
                            // Nobody reads the samples any more: the run ends here, as a program
                            // writing to a closed pipe does (the report would go nowhere either).
                            Err(e) if e.downcast_ref::<crate::StdoutClosed>().is_some() => {
                                std::process::exit(i32::from(crate::EXIT_STDOUT_CLOSED))
                            }
                            Err(e) => log::warn!("cannot write a sample: {e}"),
                            Ok(()) => {}
                        }
                    }
                    last = Some((now, ok, errors));
                    if done {
                        return;
                    }
                }
            })
            .ok()
    }

    fn stop(&self, reporter: Option<thread::JoinHandle<()>>) {
        if let Some(live) = &self.0 {
            live.done.store(true, Ordering::Relaxed);
        }
        if let Some(reporter) = reporter {
            let _ = reporter.join();
        }
    }
}

fn print_sample(sample: &LoadSample, json: bool) -> anyhow::Result<()> {
    if json {
        return crate::out(serde_json::to_string(&serde_json::json!({ "sample": sample }))?);
    }
    let kinds: Vec<String> = sample.error_kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let process = sample
        .process
        .as_ref()
        .map_or(String::new(), |p| format!("  fds {}  rss {} kB  threads {}", p.fds, p.rss_kb, p.threads));
    let cpus = sample.request_threads_by_cpu.as_ref().map_or(String::new(), |counts| {
        let counts: Vec<String> = counts.iter().map(u64::to_string).collect();
        format!("  request threads by cpu {}", counts.join("/"))
    });
    crate::out(format_args!(
        "{:>7.1}s  {} ok  {} errors{}  slowest {:.1}ms  pool {}/{} in use{}{}",
        sample.t_s,
        sample.ok,
        sample.errors,
        if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) },
        sample.max_latency_ms,
        sample.pool.in_use,
        sample.pool.size,
        process,
        cpus
    ))
}

#[allow(clippy::cast_precision_loss)] // request counts far below 2^52
fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

/// The report of a run: the keys are an interface (docs/cli.md).
fn new_report(
    settings: &Settings,
    args: &LoadArgs,
    results: &[ThreadResult],
    elapsed: Duration,
    metrics: PoolMetrics,
    state: PoolState,
) -> LoadReport {
    let mut latency = Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds");
    let mut error_kinds: BTreeMap<String, u64> =
        ErrorKind::ALL.iter().map(|k| (k.as_str().to_owned(), 0)).collect();
    let mut timeline: Vec<TimelineEntry> = Vec::new();
    let mut error_examples = BTreeMap::new();
    let mut ok = 0;
    for result in results {
        latency.add(&result.latency).expect("same bounds");
        ok += result.ok;
        for (kind, count) in &result.errors {
            *error_kinds.entry(kind.as_str().to_owned()).or_default() += count;
        }
        for (kind, example) in &result.examples {
            error_examples.entry(kind.as_str().to_owned()).or_insert_with(|| example.clone());
        }
        for (second, &(ok, errors)) in result.timeline.iter().enumerate() {
            if timeline.len() <= second {
                timeline.extend((timeline.len()..=second).map(|second| TimelineEntry {
                    second,
                    ok: 0,
                    errors: 0,
                }));
            }
            timeline[second].ok += ok;
            timeline[second].errors += errors;
        }
    }
    let errors = error_kinds.values().sum();
    LoadReport {
        strategy: settings.strategy.as_str().to_owned(),
        persistent: settings.persistent(),
        dedicated: args.dedicated,
        baseline: match (args.dedicated, args.r2d2, args.checkout_only) {
            (true, _, _) if args.prepared && args.no_runtime => "dedicated-prepared-no-runtime",
            (true, _, _) if args.no_runtime => "dedicated-no-runtime",
            (true, _, _) if args.prepared => "dedicated-prepared",
            (true, _, _) => "dedicated",
            (_, true, _) => "r2d2",
            (_, _, true) => "pgconn-checkout",
            _ => "pgconn",
        }
        .to_owned(),
        clients: args.clients,
        thread_per_request: args.thread_per_request,
        query: args.query.clone(),
        requests: ok + errors,
        ok,
        errors,
        error_kinds,
        error_examples,
        elapsed_s: elapsed.as_secs_f64(),
        throughput_rps: rate(ok + errors, elapsed),
        latency_ms: pgconn_pool::quantiles(&latency),
        checkout_wait_ms: metrics.checkout_wait_ms,
        timeline,
        pool: PoolReport { state, metrics },
        process: None,
    }
}

/// The report in words.
fn report_text(report: &LoadReport) -> String {
    let kinds: Vec<String> =
        report.error_kinds.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
    let l = &report.latency_ms;
    let w = &report.checkout_wait_ms;
    let m = &report.pool.metrics;
    let mut examples = String::new();
    for (kind, message) in &report.error_examples {
        let _ = writeln!(examples, "first error     {kind}: {message}");
    }
    format!(
        "strategy        {} ({})\n\
             clients         {}{}\n\
             requests        {} ({} ok, {} errors{})\n\
             elapsed         {:.2}s\n\
             throughput      {:.0} requests/s\n\
             latency         p50 {:.3}ms  p95 {:.3}ms  p99 {:.3}ms  max {:.3}ms\n\
             checkout wait   p50 {:.3}ms  p99 {:.3}ms\n\
             pool            size {} (max {}), opened {}, closed {}, validations {} (skipped {})\n{}",
        report.strategy,
        match (report.baseline.as_str(), report.persistent) {
            ("dedicated", _) => "dedicated connection per thread, no pool",
            ("dedicated-prepared", _) => "dedicated connection per thread, no pool, the query prepared once",
            ("dedicated-no-runtime", _) => "dedicated connection per thread, no pool, no tokio runtime",
            ("dedicated-prepared-no-runtime", _) => {
                "dedicated connection per thread, no pool, no tokio runtime, the query prepared once"
            }
            ("r2d2", _) => "bare r2d2 + r2d2_postgres, defaults",
            ("pgconn-checkout", _) => "checkout and return only, no query",
            (_, true) => "persistent",
            (_, false) => "connect per request",
        },
        report.clients,
        if report.thread_per_request { ", a thread per request" } else { "" },
        report.requests,
        report.ok,
        report.errors,
        if kinds.is_empty() { String::new() } else { format!(": {}", kinds.join(", ")) },
        report.elapsed_s,
        report.throughput_rps,
        l.p50,
        l.p95,
        l.p99,
        l.max,
        w.p50,
        w.p99,
        report.pool.state.size,
        report.pool.state.max_size,
        m.connections_opened,
        m.connections_closed.total(),
        m.validations,
        m.validations_skipped,
        examples,
    )
}
