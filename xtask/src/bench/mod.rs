//! `cargo xtask bench [--quick]`: every performance claim measured side by side in one run, written to
//! `docs/benchmarks.md` with the machine, the tables, a plot and the command behind every figure.
//!
//! Starts its own PostgreSQL (`max_connections = 100`) and PgBouncer, then runs the release `pgconn load`
//! (pgconn pooled, connect-per-request, through PgBouncer, and the anchors `--dedicated` and `--r2d2`) and
//! `pgbench` (`-M simple`, and `-C` for connect-per-transaction), all with the same query, `SELECT 1`; then
//! eight threads like for like on `SELECT 1` and a point query (statement cache on and off, dedicated
//! clients prepared and unnamed, pgbench in each protocol mode); then the PgBouncer tier with prepared
//! statements (PgBouncer 1.18 against a newer one with `max_prepared_statements`, `newer_pgbouncer.rs`).
//!
//! Measuring and writing are apart:
//! - `measure.rs` runs one contender (`pgconn load`, `pgbench`) and reads its figures; it also describes
//!   the machine;
//! - this file runs the sections, in the order that keeps the comparisons fair (interleaved rounds), and
//!   fills a [`Results`] with their figures;
//! - `results.rs` has those types, plain figures and no Markdown, and judges the targets from them;
//! - `render.rs` turns a [`Results`] into `docs/benchmarks.md` and the plot `docs/benchmarks.svg`, with
//!   no measuring.

mod measure;
mod render;
mod results;

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::reports::ProcessSample;
use measure::{Bench, Contender, Counter, Counts, median, range};
use results::{
    Cell, Checkout, Concurrency, ConnectionCost, EightThreads, Growth, Latency, LoadRow, PgbenchModes,
    PgbenchRow, PreparedPgBouncer, PreparedRows, Results, Scale, ScaleRow, SingleThread, Throughput, Work,
    WorkRow,
};

/// The point query of the eight-thread section, on `pgbench -i -s 5`'s accounts.
const POINT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711";

pub(crate) fn run(quick: bool) -> Result<u8> {
    let started = Instant::now();
    let pgconn = crate::build_pgconn_release()?;
    let (cluster, bouncer) = crate::scale::start_servers(&pgconn)?;
    let script = cluster.dir().join("select1.sql");
    std::fs::write(&script, "SELECT 1;\n").context("cannot write the pgbench script")?;
    let mut b = Bench {
        pgconn,
        database_url: cluster.info().database_url(),
        bouncer: bouncer.info().clone(),
        bindir: cluster.info().bindir.clone(),
        password: cluster.info().password.clone(),
        port: cluster.info().port,
        script,
        commands: Vec::new(),
    };
    let single = single_thread(&mut b, quick)?;
    let checkout = checkout(&mut b)?;
    let cost = connection_cost(&mut b)?;
    let concurrency = concurrency(&mut b, quick)?;
    // Run here, after the grid; the document shows it after the grid too, before the targets and scale.
    let eight_threads = eight_threads(&mut b, &cluster, POINT, quick)?;
    // After eight_threads, which makes the point query's table.
    let prepared_pgbouncer = prepared_pgbouncer(&mut b, &cluster, POINT, quick)?;
    let work = work(&mut b, quick)?;
    let scale = scale(&mut b, quick)?;
    drop(bouncer);
    cluster.stop()?;
    let results = Results {
        quick,
        machine: measure::machine(),
        written: measure::now_utc(),
        elapsed_s: started.elapsed().as_secs_f64(),
        single,
        checkout,
        cost,
        concurrency,
        eight_threads,
        prepared_pgbouncer,
        work,
        scale,
        commands: b.commands,
    };
    let docs = crate::workspace_root().join("docs");
    let svg_path = docs.join("benchmarks.svg");
    std::fs::write(&svg_path, render::plot(&results.concurrency))
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    let path = docs.join("benchmarks.md");
    std::fs::write(&path, render::render(&results))
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "xtask: bench: wrote {} and {} in {:.0}s",
        path.display(),
        svg_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// Section: the client's work per request, counted (instructions with valgrind, system calls with
/// strace), pooled against dedicated doing the same, on `SELECT 1`. Not run when either tool is missing.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn work(b: &mut Bench, quick: bool) -> Result<Work> {
    let (clients, requests) = (2, if quick { (2000, 6000) } else { (5000, 15000) });
    let missing: Vec<&str> = ["valgrind", "strace"]
        .into_iter()
        .filter(|tool| !pgconn_testkit::system_tool_installed(tool))
        .collect();
    if !missing.is_empty() {
        let why =
            format!("not run: {} not installed (`apt-get install valgrind strace`)", missing.join(" and "));
        eprintln!("xtask: bench: client work per request {why}");
        return Ok(Work { clients, requests, rows: Err(why) });
    }
    let env = |cache: bool| {
        let mut env = pool_env(8);
        if !cache {
            env.push(("DB_STATEMENT_CACHE", "0".into()));
        }
        env
    };
    let contenders: [Contender<'_>; 5] = [
        ("pgconn pooled, statement cache on", env(true), vec![], false),
        ("dedicated, prepared once", vec![], vec!["--dedicated", "--prepared"], false),
        ("pgconn pooled, `DB_STATEMENT_CACHE=0`", env(false), vec![], false),
        ("dedicated, unnamed each time", vec![], vec!["--dedicated"], false),
        (
            "dedicated pgconn `Client`, prepared once",
            vec![],
            vec!["--dedicated", "--prepared", "--no-runtime"],
            false,
        ),
    ];
    let mut count_all = || -> Result<Vec<WorkRow>> {
        let mut rows = Vec::new();
        for (name, env, args, _) in &contenders {
            let per_request =
                |short: u64, long: u64| long.saturating_sub(short) as f64 / (requests.1 - requests.0) as f64;
            let mut counts = |counter| -> Result<(Counts, Counts)> {
                Ok((
                    b.counted(counter, env, args, clients, requests.0)?,
                    b.counted(counter, env, args, clients, requests.1)?,
                ))
            };
            let (cache, calls) = (counts(Counter::Cache)?, counts(Counter::Syscalls)?);
            // One run suffices: start-up is outside the request loop it counts in.
            let footprint = b.counted(Counter::Footprint, env, args, clients, requests.0)?;
            rows.push(WorkRow {
                name: (*name).to_owned(),
                instructions: per_request(cache.0.instructions, cache.1.instructions),
                i1_misses: per_request(cache.0.i1_misses, cache.1.i1_misses),
                syscalls: per_request(calls.0.syscalls, calls.1.syscalls),
                hot_lines: footprint.hot_lines,
            });
        }
        Ok(rows)
    };
    // A tool that fails here (strace without ptrace in a container, say) costs this section, not the run.
    let rows = match count_all() {
        Ok(rows) => Ok(rows),
        Err(err) if err.is::<pgconn_testkit::Interrupted>() => return Err(err),
        Err(err) => {
            let why = format!("not run: {err:#}");
            eprintln!("xtask: bench: client work per request {why}");
            Err(why)
        }
    };
    Ok(Work { clients, requests, rows })
}

/// Interleaved rounds of 8 request threads on each of `queries` (`SELECT 1`, then the point query): a round
/// runs every contender once, `run(b, i, args)` running contender `i` with the load's common arguments;
/// a round with errors counts 0. Each contender's median and lowest and highest round, in `names`' order.
fn interleaved(
    b: &mut Bench,
    names: &[String],
    queries: [&str; 2],
    (rounds, seconds, warmup): (u32, u32, u32),
    mut run: impl FnMut(&mut Bench, usize, &[&str]) -> Result<Cell>,
) -> Result<Vec<Throughput>> {
    let (secs, warm) = (seconds.to_string(), warmup.to_string());
    let mut rows: Vec<Throughput> =
        names.iter().map(|name| Throughput { name: name.clone(), ..Throughput::default() }).collect();
    for (q, query) in queries.into_iter().enumerate() {
        let mut cells: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        for _ in 0..rounds {
            for (i, values) in cells.iter_mut().enumerate() {
                let args = ["--clients", "8", "--duration", &secs, "--warmup", &warm, "--query", query];
                let cell = run(b, i, &args)?;
                values.push(if cell.errors == 0 { cell.rps } else { 0.0 });
            }
        }
        for (row, values) in rows.iter_mut().zip(cells) {
            row.ranges[q] = range(&values);
            *if q == 0 { &mut row.select1 } else { &mut row.point } = median(values);
        }
    }
    Ok(rows)
}

/// `pgbench -M MODE -c 8 -j JOBS` against `port` for each of `modes`, on each of `scripts` (`SELECT 1`,
/// then the point query).
fn pgbench_modes(
    b: &mut Bench,
    port: u16,
    modes: &[(&str, u32)],
    seconds: u32,
    [select1_script, point_script]: &[std::path::PathBuf; 2],
) -> Result<Vec<PgbenchModes>> {
    let mut rows = Vec::new();
    for &(mode, jobs) in modes {
        let select1 = b.pgbench_with(port, 8, jobs, seconds, mode, select1_script, &[])?;
        let point = b.pgbench_with(port, 8, jobs, seconds, mode, point_script, &[])?;
        rows.push(PgbenchModes { mode: mode.to_owned(), jobs, select1, point });
    }
    Ok(rows)
}

/// Section 6, the PgBouncer tier with prepared statements: pgconn through PgBouncer 1.18 and through a
/// newer PgBouncer with `max_prepared_statements` (the one `cargo xtask test` builds,
/// [`crate::newer_pgbouncer`]), the statement cache off and on, in interleaved rounds (medians); pgbench
/// through the newer one. Not run (and said so) when the newer PgBouncer cannot be built or started.
fn prepared_pgbouncer(
    b: &mut Bench,
    cluster: &pgconn_testkit::Cluster,
    point: &str,
    quick: bool,
) -> Result<PreparedPgBouncer> {
    let (rounds, seconds, warmup): (u32, u32, u32) = if quick { (1, 2, 1) } else { (3, 4, 2) };
    let mut section =
        PreparedPgBouncer { version: String::new(), rounds, seconds, warmup, measured: Err(String::new()) };
    // The same sizes as the PgBouncer 1.18 of every other section (`scale::start_servers`).
    let sizes = [("PGBOUNCER_MAX_CLIENT_CONN", "6000"), ("PGBOUNCER_DEFAULT_POOL_SIZE", "40")];
    let started = crate::newer_pgbouncer::ensure_built().and_then(|program| {
        section.version = crate::newer_pgbouncer::version_line(&program).unwrap_or_default();
        crate::newer_pgbouncer::start(cluster, &b.pgconn, &program, &sizes)
    });
    let newer = match started {
        Ok(newer) => newer,
        Err(err) if err.is::<pgconn_testkit::Interrupted>() => return Err(err),
        Err(err) => {
            let why = format!("{err:#}");
            eprintln!("xtask: bench: PgBouncer with prepared statements not run: {why}");
            section.measured = Err(why);
            return Ok(section);
        }
    };
    let version = section.version.clone();
    let (old, new) = (b.bouncer.clone(), newer.info().clone());
    let old_label = "USE_PGBOUNCER=true (PgBouncer 1.18)".to_owned();
    let new_label = format!("USE_PGBOUNCER=true ({version})");
    let mut on_env = pool_env(8);
    on_env.push(("PGBOUNCER_PREPARED_STATEMENTS", "true".into()));
    let contenders = [
        ("pgconn via PgBouncer 1.18".to_owned(), &old, &old_label, pool_env(8)),
        (format!("pgconn via {version}"), &new, &new_label, pool_env(8)),
        (format!("pgconn via {version}, `PGBOUNCER_PREPARED_STATEMENTS=true`"), &new, &new_label, on_env),
    ];
    let names: Vec<String> = contenders.iter().map(|(name, ..)| name.clone()).collect();
    let rows = interleaved(b, &names, ["SELECT 1", point], (rounds, seconds, warmup), |b, i, args| {
        let (_, bouncer, label, env) = &contenders[i];
        b.load_via(Some((bouncer, label)), env, args)
    })?;
    let scripts = [b.script.clone(), cluster.dir().join("point.sql")];
    let pgbench = pgbench_modes(b, new.port, &[("prepared", 2), ("simple", 2)], seconds, &scripts)?;
    drop(newer);
    let Ok([old, off, on]) = <[Throughput; 3]>::try_from(rows) else { bail!("one row per contender") };
    section.measured = Ok(PreparedRows { old, off, on, pgbench });
    Ok(section)
}

/// The environment that sizes `pgconn`'s pool in front of PgBouncer for `size` clients.
fn pool_env(size: u32) -> Vec<(&'static str, String)> {
    vec![
        ("DB_POOL_MAX_SIZE", size.to_string()),
        ("DB_POOL_MIN_IDLE", "0".into()),
        ("DB_POOL_TIMEOUT", "60000".into()),
        ("DB_CONNECT_TIMEOUT", "60".into()),
    ]
}

/// Section 1, single-thread latency: rounds alternating the contenders; medians over the rounds.
fn single_thread(b: &mut Bench, quick: bool) -> Result<SingleThread> {
    let rounds: u32 = if quick { 2 } else { 7 };
    let requests: u32 = if quick { 3000 } else { 20000 };
    let per_request_requests: u32 = 500;
    let single: [Contender<'_>; 5] = [
        ("dedicated `postgres::Client`", vec![], vec!["--dedicated"], false),
        ("pgconn pooled", vec![], vec![], false),
        ("bare r2d2 + r2d2_postgres, defaults", vec![], vec!["--r2d2"], false),
        ("pgconn through PgBouncer", vec![], vec![], true),
        ("connect per request (`DB_CONN_MAX_AGE=0`)", vec![("DB_CONN_MAX_AGE", "0".into())], vec![], false),
    ];
    let (n_pooled, n_per_request) = (requests.to_string(), per_request_requests.to_string());
    let mut per_round: Vec<Vec<Cell>> = vec![Vec::new(); single.len()];
    for _ in 0..rounds {
        for (i, (_, env, extra, pgb)) in single.iter().enumerate() {
            let n = if i == 4 { &n_per_request } else { &n_pooled };
            let mut args = vec!["--clients", "1", "--requests", n];
            args.extend(extra.iter().copied());
            let cell = b.load(env, &args, *pgb)?;
            per_round[i].push(cell);
        }
    }
    let latency = |i: usize| {
        let cells = &per_round[i];
        Latency {
            name: single[i].0.to_owned(),
            p50: median(cells.iter().map(|c| c.p50).collect()),
            p99: median(cells.iter().map(|c| c.p99).collect()),
            mean: median(cells.iter().map(|c| c.mean).collect()),
            errors: cells.iter().map(|c| c.errors).sum(),
        }
    };
    Ok(SingleThread {
        rounds,
        requests,
        per_request_requests,
        dedicated: latency(0),
        pooled: latency(1),
        r2d2: latency(2),
        pgbouncer: latency(3),
        per_request: latency(4),
    })
}

/// Section 2, checkout alone.
fn checkout(b: &mut Bench) -> Result<Checkout> {
    let cell = b.load(&[], &["--clients", "1", "--requests", "1000000", "--checkout-only"], false)?;
    Ok(Checkout { rps: cell.rps })
}

/// Section 2b, what one connection costs the client process: a pool of 1 against a pool of 41.
fn connection_cost(b: &mut Bench) -> Result<ConnectionCost> {
    // The process with 1 connection and with 41, open until it is sampled: a pool's (its size at the end),
    // or the request threads' own (`--dedicated`, one each).
    let growth = |b: &mut Bench, pool: bool, extra: &[&str]| -> Result<Growth> {
        let mut run = |n: &str| -> Result<(u64, ProcessSample)> {
            let env = if pool {
                vec![("DB_POOL_MAX_SIZE", n.to_owned()), ("DB_POOL_MIN_IDLE", n.to_owned())]
            } else {
                Vec::new()
            };
            let args: Vec<&str> = ["--clients", n, "--duration", "1"].iter().chain(extra).copied().collect();
            let cell = b.load(&env, &args, false)?;
            let process = cell.process.context(
                "pgconn load reported no process sample (no /proc here?): the cost of a connection cannot be measured",
            )?;
            Ok((if pool { cell.size } else { n.parse()? }, process))
        };
        let ((one_size, one), (many_size, many)) = (run("1")?, run("41")?);
        Ok(Growth { one_size, many_size, one, many })
    };
    let pooled = growth(b, true, &["--warmup", "1"])?;
    let mut dedicated = Vec::new();
    for (name, extra) in [
        ("`postgres::Client` (`--dedicated`)", &["--dedicated", "--prepared"][..]),
        (
            "pgconn's `Client` (`--dedicated --no-runtime`)",
            &["--dedicated", "--prepared", "--no-runtime"][..],
        ),
    ] {
        dedicated.push((name.to_owned(), growth(b, false, extra)?));
    }
    Ok(ConnectionCost { pooled, dedicated })
}

/// Section 3, throughput and p99 by concurrency: each `pgconn load` contender at each client count,
/// then `pgbench` direct, through PgBouncer and connecting per transaction.
fn concurrency(b: &mut Bench, quick: bool) -> Result<Concurrency> {
    let levels = vec![1, 8, 50, 500];
    let seconds: u32 = if quick { 1 } else { 5 };
    let dedicated = load_row(b, &("dedicated", vec![], vec!["--dedicated"], false), &levels, seconds)?;
    let pooled = load_row(b, &("pgconn pooled (10)", vec![], vec![], false), &levels, seconds)?;
    let pgbouncer = load_row(b, &("pgconn via PgBouncer", vec![], vec![], true), &levels, seconds)?;
    let per_request = load_row(
        b,
        &("connect per request", vec![("DB_CONN_MAX_AGE", "0".into())], vec![], false),
        &levels,
        seconds,
    )?;
    let (port, bouncer_port) = (b.port, b.bouncer.port);
    let pgbench_direct = pgbench_row(b, "pgbench direct", port, &[], &levels, seconds)?;
    let pgbench_pgbouncer = pgbench_row(b, "pgbench via PgBouncer", bouncer_port, &[], &levels, seconds)?;
    let pgbench_per_connection = pgbench_row(b, "pgbench -C direct", port, &["-C"], &levels, seconds)?;
    Ok(Concurrency {
        seconds,
        levels,
        dedicated,
        pooled,
        pgbouncer,
        per_request,
        pgbench_direct,
        pgbench_pgbouncer,
        pgbench_per_connection,
    })
}

/// One `pgconn load` contender at each client count of `levels`, `seconds` each after a warm-up.
fn load_row(b: &mut Bench, contender: &Contender<'_>, levels: &[u32], seconds: u32) -> Result<LoadRow> {
    let (name, env, extra, pgb) = contender;
    let secs = seconds.to_string();
    let mut cells = Vec::new();
    for &clients in levels {
        let c = clients.to_string();
        let mut env = env.clone();
        if *pgb {
            env.extend(pool_env(clients));
        }
        let warmup = if *pgb && clients > 50 { "5" } else { "1" };
        let mut args = vec!["--clients", c.as_str(), "--duration", secs.as_str(), "--warmup", warmup];
        args.extend(extra.iter().copied());
        cells.push(b.load(&env, &args, *pgb)?);
    }
    Ok(LoadRow { name: (*name).to_owned(), cells })
}

/// `pgbench -M simple` with `extra` against `port` at each client count of `levels`.
fn pgbench_row(
    b: &mut Bench,
    name: &str,
    port: u16,
    extra: &[&str],
    levels: &[u32],
    seconds: u32,
) -> Result<PgbenchRow> {
    let mut cells = Vec::new();
    for &clients in levels {
        cells.push(b.pgbench(port, clients, seconds, extra)?);
    }
    Ok(PgbenchRow { name: name.to_owned(), cells })
}

/// Section 4, scale through PgBouncer, and where connect-per-request fails.
fn scale(b: &mut Bench, quick: bool) -> Result<Scale> {
    let mut pgbouncer = Vec::new();
    let scale_levels: &[u32] = if quick { &[1000] } else { &[1000, 5000] };
    for &clients in scale_levels {
        let c = clients.to_string();
        let (d, w) = if quick { ("3", "8") } else { ("15", "25") };
        let cell = b.load(&pool_env(clients), &["--clients", &c, "--duration", d, "--warmup", w], true)?;
        pgbouncer.push(ScaleRow { clients, cell });
    }
    let mut per_request = Vec::new();
    let sweep: &[u32] = if quick { &[50, 100, 150] } else { &[50, 75, 100, 125, 150, 200] };
    for &clients in sweep {
        let c = clients.to_string();
        let cell = b.load(
            &[("DB_CONN_MAX_AGE", "0".into())],
            &[
                "--clients",
                &c,
                "--duration",
                if quick { "3" } else { "5" },
                "--query",
                "SELECT pg_sleep(0.05)",
            ],
            false,
        )?;
        per_request.push(ScaleRow { clients, cell });
    }
    Ok(Scale { pgbouncer, per_request })
}

/// Section 5, eight threads like for like: 8 request threads on `SELECT 1` and on a point query
/// (`pgbench -i -s 5`'s accounts): pgconn with the statement cache on and off against dedicated clients
/// that run the query prepared once and unnamed each time, bare r2d2 without its checkout test, in
/// interleaved rounds (medians); and pgbench in each protocol mode.
fn eight_threads(
    b: &mut Bench,
    cluster: &pgconn_testkit::Cluster,
    point: &str,
    quick: bool,
) -> Result<EightThreads> {
    let port = b.port.to_string();
    let init = format!("pgbench -i -s 5 -q -h 127.0.0.1 -U pgconn_app pgconn_test -p {port}");
    eprintln!("xtask: bench: {init}");
    b.commands.push(init);
    let output = Command::new(b.bindir.join("pgbench"))
        .args(["-i", "-s", "5", "-q", "-h", "127.0.0.1", "-U", "pgconn_app", "pgconn_test", "-p", &port])
        .env("PGPASSWORD", &b.password)
        .output()
        .context("cannot run pgbench -i")?;
    anyhow::ensure!(
        output.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let point_script = cluster.dir().join("point.sql");
    std::fs::write(&point_script, format!("{point};\n")).context("cannot write the pgbench script")?;
    let select1_script = b.script.clone();

    let contenders: [Contender<'_>; 6] = [
        ("pgconn pooled, statement cache on (the default)", vec![], vec![], false),
        ("pgconn pooled, `DB_STATEMENT_CACHE=0`", vec![("DB_STATEMENT_CACHE", "0".into())], vec![], false),
        (
            "dedicated, prepared once (`--dedicated --prepared`)",
            vec![],
            vec!["--dedicated", "--prepared"],
            false,
        ),
        ("dedicated, unnamed each time (`--dedicated`)", vec![], vec!["--dedicated"], false),
        (
            "bare r2d2, no checkout test (`--r2d2 --no-test-on-check-out`)",
            vec![],
            vec!["--r2d2", "--no-test-on-check-out"],
            false,
        ),
        (
            "dedicated pgconn `Client`, prepared once (`--dedicated --prepared --no-runtime`)",
            vec![],
            vec!["--dedicated", "--prepared", "--no-runtime"],
            false,
        ),
    ];
    // Five rounds: a round on this machine sometimes settles at a lower rate for seconds, pooled more often
    // than dedicated (the scheduler left the request threads unevenly spread over the CPUs,
    // docs/pool.md, "Rounds that settle low"), and a median of five outvotes two of those.
    let rounds: u32 = if quick { 1 } else { 5 };
    let seconds: u32 = if quick { 2 } else { 4 };
    // Steady state: a pooled client often reaches its rate 1 to 3 s after it starts here, a dedicated one
    // within 0.5 s (`pgconn load --report-every 0.5`, which shows the threads' spread, docs/pool.md).
    let warmup: u32 = if quick { 1 } else { 3 };
    let names: Vec<String> = contenders.iter().map(|(name, ..)| (*name).to_owned()).collect();
    let rows = interleaved(b, &names, ["SELECT 1", point], (rounds, seconds, warmup), |b, i, args| {
        let (_, env, extra, _) = &contenders[i];
        let args: Vec<&str> = args.iter().chain(extra).copied().collect();
        b.load(env, &args, false)
    })?;
    let modes = [("prepared", 2), ("prepared", 8), ("extended", 2), ("simple", 2)];
    let pgbench = pgbench_modes(b, b.port, &modes, seconds, &[select1_script, point_script])?;
    let Ok([cache_on, cache_off, dedicated_prepared, dedicated_unnamed, r2d2, no_runtime]) =
        <[Throughput; 6]>::try_from(rows)
    else {
        bail!("one row per contender")
    };
    Ok(EightThreads {
        rounds,
        seconds,
        warmup,
        point: point.to_owned(),
        cache_on,
        cache_off,
        dedicated_prepared,
        dedicated_unnamed,
        r2d2,
        no_runtime,
        pgbench,
    })
}
