//! `cargo xtask bench [--quick]`: every performance claim measured side by side in one run, written to
//! `docs/benchmarks.md` with the machine, the tables, a plot and the command behind every figure.
//!
//! Starts its own PostgreSQL (`max_connections = 100`) and PgBouncer, then runs the release `pgconn load`
//! (pgconn pooled, connect-per-request, through PgBouncer, and the anchors `--dedicated` and `--r2d2`) and
//! `pgbench` (`-M simple`, and `-C` for connect-per-transaction), all with the same query, `SELECT 1`; then
//! eight threads like for like on `SELECT 1` and a point query (statement cache on and off, dedicated
//! clients prepared and unnamed, pgbench in each protocol mode).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result};
use pgconn_testkit::{PgBouncerInfo, signal};

use crate::process;
use crate::reports::{self, LoadOutput};

/// A contender: its name, extra environment, extra `pgconn load` arguments, and whether it goes through
/// PgBouncer.
type Contender<'a> = (&'a str, Vec<(&'a str, String)>, Vec<&'a str>, bool);

/// One measured `pgconn load` cell.
#[derive(Clone, Default)]
struct Cell {
    rps: f64,
    p50: f64,
    p99: f64,
    mean: f64,
    requests: u64,
    errors: u64,
    kinds: String,
    /// The pool's connections at the end, and the process then: file descriptors, RSS (kB), threads.
    size: u64,
    fds: u64,
    rss_kb: u64,
    threads: u64,
}

struct Bench {
    pgconn: PathBuf,
    database_url: String,
    bouncer: PgBouncerInfo,
    bindir: PathBuf,
    password: String,
    port: u16,
    script: PathBuf,
    commands: Vec<String>,
}

impl Bench {
    /// Runs `pgconn load ARGS --json` with the database's URL and `env`.
    fn load(&mut self, env: &[(&str, String)], args: &[&str], through_pgbouncer: bool) -> Result<Cell> {
        if process::interrupted() {
            return Err(pgconn_testkit::Interrupted.into());
        }
        let mut cmd = Command::new(&self.pgconn);
        cmd.arg("load").args(args).arg("--json").env_clear().env("DATABASE_URL", &self.database_url);
        let mut shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if through_pgbouncer {
            cmd.env("USE_PGBOUNCER", "true").env("PGBOUNCER_URL", self.bouncer.database_url());
            shown.insert(0, "USE_PGBOUNCER=true".into());
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).stdout(Stdio::piped()).stderr(Stdio::null());
        signal::raise_nofile_limit(&mut cmd);
        let command = format!("{} pgconn load {}", shown.join(" "), args.join(" ")).trim().to_owned();
        eprintln!("xtask: bench: {command}");
        self.commands.push(command.clone());
        let output = cmd.output().context("cannot run pgconn load")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let report = match reports::parse::<LoadOutput>(&text, &format!("`{command}`"))? {
            LoadOutput::Report(report) => report,
            LoadOutput::Failed { error } => {
                return Ok(Cell {
                    errors: 1,
                    kinds: format!("cannot build the pool: {} ({})", error.kind, error.message),
                    ..Cell::default()
                });
            }
        };
        let process = report.process;
        Ok(Cell {
            rps: report.throughput_rps,
            p50: report.latency_ms.p50,
            p99: report.latency_ms.p99,
            mean: report.latency_ms.mean,
            requests: report.requests,
            errors: report.errors,
            kinds: report.kinds_seen(),
            size: u64::from(report.pool.size),
            fds: process.map_or(0, |p| p.fds),
            rss_kb: process.map_or(0, |p| p.rss_kb),
            threads: process.map_or(0, |p| p.threads),
        })
    }

    /// Runs `pgbench -n -M simple -f SELECT1 -c C -j J -T S [extra]` against `port`; returns (tps, mean
    /// latency ms, failed or not).
    fn pgbench(
        &mut self,
        port: u16,
        clients: u32,
        seconds: u32,
        extra: &[&str],
    ) -> Result<(f64, f64, String)> {
        let script = self.script.clone();
        self.pgbench_with(port, clients, clients.clamp(1, 2), seconds, "simple", &script, extra)
    }

    /// Runs `pgbench -n -M MODE -c C -j J -T S -f SCRIPT [extra]` against `port`.
    #[allow(clippy::too_many_arguments)]
    fn pgbench_with(
        &mut self,
        port: u16,
        clients: u32,
        jobs: u32,
        seconds: u32,
        mode: &str,
        script: &Path,
        extra: &[&str],
    ) -> Result<(f64, f64, String)> {
        let jobs = jobs.to_string();
        let (c, t) = (clients.to_string(), seconds.to_string());
        let mut args = vec!["-n", "-M", mode, "-c", &c, "-j", &jobs, "-T", &t];
        args.extend_from_slice(extra);
        let script_name = script.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let script = script.to_string_lossy().into_owned();
        args.extend(["-f", &script, "-h", "127.0.0.1", "-U", "pgconn_app", "pgconn_test"]);
        let port = port.to_string();
        let command = format!("pgbench {} -p {port}", args.join(" ")).replace(&script, &script_name);
        eprintln!("xtask: bench: {command}");
        self.commands.push(command);
        let mut cmd = Command::new(self.bindir.join("pgbench"));
        cmd.args(&args)
            .args(["-p", &port])
            .env("PGPASSWORD", &self.password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        signal::raise_nofile_limit(&mut cmd);
        let output = cmd.output().context("cannot run pgbench")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let value = |key: &str| {
            let line = text.lines().find(|l| l.starts_with(key))?;
            line.split_once('=')?.1.split_whitespace().next()?.parse::<f64>().ok()
        };
        let tps = value("tps").unwrap_or(0.0);
        let latency = value("latency average").unwrap_or(0.0);
        let failed = if output.status.success() && tps > 0.0 {
            String::new()
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stderr
                .lines()
                .find(|l| l.contains("FATAL") || l.contains("error"))
                .or_else(|| stderr.lines().rfind(|l| !l.trim().is_empty()))
                .or_else(|| text.lines().rfind(|l| !l.trim().is_empty()))
                .unwrap_or("no output");
            format!("{} ({})", line.trim(), output.status)
        };
        Ok((tps, latency, failed))
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() { 0.0 } else { values[values.len() / 2] }
}

#[allow(clippy::too_many_lines, clippy::cast_precision_loss)] // one report, top to bottom
pub(crate) fn run(args: &[String]) -> Result<u8> {
    let quick = crate::scale::quick_flag(args, "bench")?;
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
    let mut doc = String::new();
    let rounds = if quick { 2 } else { 7 };
    let requests = if quick { "3000" } else { "20000" };
    let seconds: u32 = if quick { 1 } else { 5 };
    let secs = seconds.to_string();
    let pool_env = |size: u32| {
        vec![
            ("DB_POOL_MAX_SIZE", size.to_string()),
            ("DB_POOL_MIN_IDLE", "0".into()),
            ("DB_POOL_TIMEOUT", "60000".into()),
            ("DB_CONNECT_TIMEOUT", "60".into()),
        ]
    };

    // 1. Single-thread latency, rounds alternating the contenders.
    let single: [Contender<'_>; 5] = [
        ("dedicated `postgres::Client`", vec![], vec!["--dedicated"], false),
        ("pgconn pooled", vec![], vec![], false),
        ("bare r2d2 + r2d2_postgres, defaults", vec![], vec!["--r2d2"], false),
        ("pgconn through PgBouncer", vec![], vec![], true),
        ("connect per request (`DB_CONN_MAX_AGE=0`)", vec![("DB_CONN_MAX_AGE", "0".into())], vec![], false),
    ];
    let mut per_round: Vec<Vec<Cell>> = vec![Vec::new(); single.len()];
    for _ in 0..rounds {
        for (i, (_, env, extra, pgb)) in single.iter().enumerate() {
            let n = if i == 4 { "500" } else { requests };
            let mut args = vec!["--clients", "1", "--requests", n];
            args.extend(extra.iter().copied());
            let cell = b.load(env, &args, *pgb)?;
            per_round[i].push(cell);
        }
    }
    let dedicated_mean = median(per_round[0].iter().map(|c| c.mean).collect());
    let pooled_mean = median(per_round[1].iter().map(|c| c.mean).collect());
    let _ = writeln!(
        doc,
        "## Single-thread latency per request\n\n`SELECT 1`, one request thread, {rounds} rounds alternating the contenders (each round: {requests} requests; 500 for connect per request); medians over the rounds.\n\n| contender | p50 ms | p99 ms | mean ms | mean ÷ dedicated |\n|---|---|---|---|---|"
    );
    for (i, (name, ..)) in single.iter().enumerate() {
        let cells = &per_round[i];
        let mean = median(cells.iter().map(|c| c.mean).collect());
        let errors: u64 = cells.iter().map(|c| c.errors).sum();
        let _ = writeln!(
            doc,
            "| {name} | {:.3} | {:.3} | {mean:.4} | {:.2}{} |",
            median(cells.iter().map(|c| c.p50).collect()),
            median(cells.iter().map(|c| c.p99).collect()),
            mean / dedicated_mean,
            if errors > 0 { format!(" ({errors} errors)") } else { String::new() }
        );
    }
    let per_request_mean = median(per_round[4].iter().map(|c| c.mean).collect());
    let r2d2_mean = median(per_round[2].iter().map(|c| c.mean).collect());
    let _ = writeln!(
        doc,
        "\nConnect per request ÷ pooled: **{:.0}×**. Pooled ÷ dedicated: **{:.3}** (target ≤ 1.05: {}). Pooled ÷ bare r2d2: **{:.2}** (target below 1: {}).\n",
        per_request_mean / pooled_mean,
        pooled_mean / dedicated_mean,
        met(pooled_mean / dedicated_mean <= 1.05),
        pooled_mean / r2d2_mean,
        met(pooled_mean < r2d2_mean)
    );

    // 2. Checkout alone.
    let checkout = b.load(&[], &["--clients", "1", "--requests", "1000000", "--checkout-only"], false)?;
    let ns = 1e9 / checkout.rps.max(1.0);
    let _ = writeln!(
        doc,
        "## Checkout overhead\n\n`pgconn load --clients 1 --requests 1000000 --checkout-only`: check out and return, no query: **{ns:.0} ns** per checkout and return, the load loop's own timing and bookkeeping included.\n"
    );

    // 2b. What one connection costs the client process.
    let cost =
        |size: &str| vec![("DB_POOL_MAX_SIZE", size.to_owned()), ("DB_POOL_MIN_IDLE", size.to_owned())];
    let small = b.load(&cost("1"), &["--clients", "1", "--duration", "1", "--warmup", "1"], false)?;
    let large = b.load(&cost("41"), &["--clients", "41", "--duration", "1", "--warmup", "1"], false)?;
    let added = large.size.saturating_sub(small.size).max(1);
    #[allow(clippy::cast_precision_loss)]
    let per = |a: u64, b: u64| (a as f64 - b as f64) / added as f64;
    let _ = writeln!(
        doc,
        "## What a connection costs the client

The process of `pgconn load` at the end of a run, its pool's connections still open: with 1 connection ({} file descriptors, {} kB resident, {} threads) and with {} ({} fds, {} kB, {} threads). Per connection: **{:.1} file descriptors**, **{:.0} kB** resident, {:.1} threads. Each connection's descriptors, listed in `/proc/PID/fd` of a run with 3 connections: its socket, and for the tokio runtime the `postgres` crate starts per connection two `eventpoll` descriptors and an `eventfd`; the crate's API gives no way to share one runtime between connections (`postgres::Client::new` is private).
",
        small.fds,
        small.rss_kb,
        small.threads,
        large.size,
        large.fds,
        large.rss_kb,
        large.threads,
        per(large.fds, small.fds),
        per(large.rss_kb, small.rss_kb),
        per(large.threads, small.threads),
    );

    // 3. Throughput and p99 by concurrency.
    let levels: [u32; 4] = [1, 8, 50, 500];
    let strategies: [Contender<'_>; 4] = [
        ("dedicated", vec![], vec!["--dedicated"], false),
        ("pgconn pooled (10)", vec![], vec![], false),
        ("pgconn via PgBouncer", vec![], vec![], true),
        ("connect per request", vec![("DB_CONN_MAX_AGE", "0".into())], vec![], false),
    ];
    let mut grid: Vec<Vec<Cell>> = Vec::new();
    for (_, env, extra, pgb) in &strategies {
        let mut row = Vec::new();
        for &clients in &levels {
            let c = clients.to_string();
            let mut env = env.clone();
            if *pgb {
                env.extend(pool_env(clients));
            }
            let mut args = vec![
                "--clients",
                c.as_str(),
                "--duration",
                secs.as_str(),
                "--warmup",
                if *pgb && clients > 50 { "5" } else { "1" },
            ];
            args.extend(extra.iter().copied());
            row.push(b.load(&env, &args, *pgb)?);
        }
        grid.push(row);
    }
    let mut pgbench_rows = Vec::new();
    for (name, port, extra) in [
        ("pgbench direct", b.port, vec![]),
        ("pgbench via PgBouncer", b.bouncer.port, vec![]),
        ("pgbench -C direct", b.port, vec!["-C"]),
    ] {
        let mut row = Vec::new();
        for &clients in &levels {
            row.push(b.pgbench(port, clients, seconds, &extra)?);
        }
        pgbench_rows.push((name, row));
    }
    let _ = writeln!(
        doc,
        "## Throughput and p99 by concurrency\n\n`SELECT 1` for {seconds} s per cell after a warm-up; requests/s, p99 ms in parentheses; errors by kind where any. pgbench: `-M simple`, 2 jobs, the same query from a script; tps (mean latency ms).\n"
    );
    let _ = writeln!(
        doc,
        "| contender | {} |\n|---|{}",
        levels.iter().map(|l| format!("{l} clients")).collect::<Vec<_>>().join(" | "),
        "---|".repeat(levels.len())
    );
    for (i, (name, ..)) in strategies.iter().enumerate() {
        let cells: Vec<String> = grid[i]
            .iter()
            .map(|c| {
                format!(
                    "{:.0} ({:.2}){}",
                    c.rps,
                    c.p99,
                    if c.errors > 0 { format!("; {}", c.kinds) } else { String::new() }
                )
            })
            .collect();
        let _ = writeln!(doc, "| {name} | {} |", cells.join(" | "));
    }
    for (name, row) in &pgbench_rows {
        let cells: Vec<String> =
            row.iter()
                .map(|(tps, lat, failed)| {
                    if failed.is_empty() {
                        format!("{tps:.0} ({lat:.2})")
                    } else {
                        format!("failed: {failed}")
                    }
                })
                .collect();
        let _ = writeln!(doc, "| {name} | {} |", cells.join(" | "));
    }
    let ratio = |i: usize, j: usize| grid[1][j].rps / grid[i][j].rps.max(1.0);
    let vs_pgbench = |row: usize, pgbench: usize| -> String {
        levels
            .iter()
            .enumerate()
            .map(|(j, level)| {
                let (tps, _, failed) = &pgbench_rows[pgbench].1[j];
                if failed.is_empty() && *tps > 0.0 {
                    format!("{level}: {:.2}", grid[row][j].rps / tps)
                } else {
                    format!("{level}: pgbench failed")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        doc,
        "\npgconn pooled (statement cache on, so `SELECT 1` runs prepared) ÷ dedicated (unnamed each time) at 8 clients: {:.2}; like for like, see \"Eight threads, like for like\" below.\n\nRatio to pgbench at the same client count: pgconn pooled ÷ pgbench direct: {}; pgconn via PgBouncer ÷ pgbench via PgBouncer: {}; connect per request ÷ pgbench -C: {}.\n",
        ratio(0, 1),
        vs_pgbench(1, 0),
        vs_pgbench(2, 1),
        vs_pgbench(3, 2),
    );
    let svg = plot(&levels, &strategies.iter().map(|s| s.0).collect::<Vec<_>>(), &grid);
    let svg_path = crate::workspace_root().join("docs").join("benchmarks.svg");
    std::fs::write(&svg_path, svg).with_context(|| format!("cannot write {}", svg_path.display()))?;
    let _ = writeln!(doc, "![throughput and p99 by concurrency](benchmarks.svg)\n");

    // 5 (run here, written after the grid). Eight threads, like for like.
    let point = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711";
    let like = eight_threads(&mut b, &cluster, point, quick)?;

    // 4. Scale through PgBouncer, and where connect-per-request fails.
    let mut scale_rows = String::new();
    let mut scale_cells: Vec<(u32, Cell)> = Vec::new();
    let scale_levels: &[u32] = if quick { &[1000] } else { &[1000, 5000] };
    for &clients in scale_levels {
        let c = clients.to_string();
        let (d, w) = if quick { ("3", "8") } else { ("15", "25") };
        let cell = b.load(&pool_env(clients), &["--clients", &c, "--duration", d, "--warmup", w], true)?;
        scale_cells.push((clients, cell.clone()));
        let _ = writeln!(
            scale_rows,
            "| PgBouncer, {clients} clients, `SELECT 1` | {} | {} | {:.0} | {:.2} | {:.2} |",
            cell.requests,
            if cell.errors == 0 { "0".into() } else { format!("{} ({})", cell.errors, cell.kinds) },
            cell.rps,
            cell.p50,
            cell.p99
        );
    }
    let mut first_failure = None;
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
        let _ = writeln!(
            scale_rows,
            "| connect per request, {clients} clients, `SELECT pg_sleep(0.05)` | {} | {} | {:.0} | {:.2} | {:.2} |",
            cell.requests,
            if cell.errors == 0 { "0".into() } else { format!("{} ({})", cell.errors, cell.kinds) },
            cell.rps,
            cell.p50,
            cell.p99
        );
        if cell.errors > 0 && first_failure.is_none() {
            first_failure = Some(clients);
        }
    }
    doc.push_str(&like.doc);
    let scale_5000 = scale_cells.iter().find(|(clients, _)| *clients == 5000).map(|(_, cell)| cell.errors);
    let _ = writeln!(
        doc,
        "## Targets\n\n| target | measured | |\n|---|---|---|\n| pooled per-request latency ≤ 1.05× the dedicated client | {:.3}× | {} |\n| pooled below bare r2d2's default | {:.2}× | {} |\n| pooled ≥ 20× cheaper than connect-per-request | {:.0}× | {} |\n| 8-thread throughput ≥ 0.95× of 8 dedicated clients doing the same (worst of `SELECT 1` and the point query, cache on against prepared, cache off against unnamed) | {:.2}× | {} |\n| pooled with the statement cache ≥ 0.80× `pgbench -M prepared` at 8 clients, point query | {:.2}× | {} |\n| PgBouncer at 5000 clients with 0 errors | {} | {} |\n",
        pooled_mean / dedicated_mean,
        met(pooled_mean / dedicated_mean <= 1.05),
        pooled_mean / r2d2_mean,
        met(pooled_mean < r2d2_mean),
        per_request_mean / pooled_mean,
        met(per_request_mean / pooled_mean >= 20.0),
        like.worst_vs_dedicated,
        met(like.worst_vs_dedicated >= 0.95),
        like.vs_pgbench_prepared,
        met(like.vs_pgbench_prepared >= 0.80),
        scale_5000.map_or_else(|| "not run (--quick)".to_owned(), |e| format!("{e} errors")),
        scale_5000.map_or("not run", |e| met(e == 0)),
    );
    let _ = writeln!(
        doc,
        "## Scale on `max_connections = 100`\n\nPgBouncer with `default_pool_size = 40`, each client a pooled connection of its own to PgBouncer; connect-per-request clients whose requests hold the connection 50 ms.\n\n| run | requests | errors | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n{scale_rows}\nConnect per request first failed at **{}** concurrent clients.\n",
        first_failure.map_or_else(|| "none of the tested counts (up to 200)".to_owned(), |c| c.to_string())
    );

    // The document.
    drop(bouncer);
    cluster.stop()?;
    let machine = machine();
    let mut out = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench{}` on {} in {:.0} s. Every figure below comes from that one run; rerun the command to check them on your machine. Absolute times on a shared machine drift: compare side by side, within one run.\n\n## Machine\n\n{machine}\n\nEverything on 127.0.0.1: PostgreSQL with `max_connections = 100`, `fsync=off` (a throwaway cluster), SCRAM-SHA-256 authentication; PgBouncer 1.18 in transaction mode; the client on the same two cores. Release build of `pgconn`.\n\n",
        if quick { " --quick" } else { "" },
        humantime_now(),
        started.elapsed().as_secs_f64()
    );
    out.push_str(&doc);
    let _ = writeln!(
        out,
        "## The guide's claims, against this machine\n\n| claim | measured here |\n|---|---|\n| pooling turns 50–100 ms of connection overhead per request into 1–5 ms | connect + `SELECT 1` + close: {per_request_mean:.2} ms; pooled: {pooled_mean:.3} ms. Loopback and no TLS make connecting far cheaper than across a network (where 50–100 ms includes round trips and TLS); SCRAM-SHA-256's 4096 iterations are most of what is left here |\n| direct pooling holds about 100 concurrent users | pooled (10 connections) at 500 clients: {:.0} req/s, p99 {:.1} ms, {} errors |\n| connect per request falls over at a few hundred users | here from {} clients whose requests hold the connection 50 ms |\n| PgBouncer holds 5000+ | see the scale table (clients through PgBouncer on 40 server connections) |\n",
        grid[1][3].rps,
        grid[1][3].p99,
        grid[1][3].errors,
        first_failure.map_or_else(|| "more than 200".to_owned(), |c| c.to_string())
    );
    let _ = writeln!(
        out,
        "## Commands\n\nThe environment of each also holds `DATABASE_URL` of the throwaway cluster (and `PGBOUNCER_URL` with `USE_PGBOUNCER=true`); pgbench gets `PGPASSWORD`.\n\n```\n{}\n```",
        b.commands.join("\n")
    );
    let path = crate::workspace_root().join("docs").join("benchmarks.md");
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "xtask: bench: wrote {} and {} in {:.0}s",
        path.display(),
        svg_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// The "eight threads, like for like" section and its two target figures.
struct LikeForLike {
    doc: String,
    worst_vs_dedicated: f64,
    vs_pgbench_prepared: f64,
}

/// 8 request threads on `SELECT 1` and on a point query (`pgbench -i -s 5`'s accounts): pgconn with the
/// statement cache on and off against dedicated clients that run the query prepared once and unnamed each
/// time, bare r2d2 without its checkout test, in interleaved rounds (medians); and pgbench in each
/// protocol mode.
fn eight_threads(
    b: &mut Bench,
    cluster: &pgconn_testkit::Cluster,
    point: &str,
    quick: bool,
) -> Result<LikeForLike> {
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

    let contenders: [Contender<'_>; 5] = [
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
    ];
    let rounds = if quick { 1 } else { 3 };
    let seconds = if quick { "2" } else { "4" };
    let mut doc = format!(
        "## Eight threads, like for like\n\n8 request threads (or pgbench clients), {rounds} rounds alternating the pgconn contenders, {seconds} s each after 1 s of warm-up; medians. The point query is `{point}` on `pgbench -i -s 5`. The statement cache prepares a statement on its fifth use on a connection; the dedicated baselines run the same query the same way: prepared once, or unnamed (parse, bind, execute) every time.\n\n| contender | `SELECT 1` req/s | point query req/s |\n|---|---|---|\n"
    );
    let queries = ["SELECT 1", point];
    let mut medians = vec![[0.0_f64; 2]; contenders.len()];
    for (q, query) in queries.iter().enumerate() {
        let mut cells: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        for _ in 0..rounds {
            for (i, (_, env, extra, _)) in contenders.iter().enumerate() {
                let mut args =
                    vec!["--clients", "8", "--duration", seconds, "--warmup", "1", "--query", query];
                args.extend(extra.iter().copied());
                let cell = b.load(env, &args, false)?;
                cells[i].push(if cell.errors == 0 { cell.rps } else { 0.0 });
            }
        }
        for (i, values) in cells.into_iter().enumerate() {
            medians[i][q] = median(values);
        }
    }
    for (i, (name, ..)) in contenders.iter().enumerate() {
        let _ = writeln!(doc, "| {name} | {:.0} | {:.0} |", medians[i][0], medians[i][1]);
    }
    let pg_seconds: u32 = if quick { 2 } else { 4 };
    let mut pgbench_prepared_point = 0.0;
    for (mode, jobs) in [("prepared", 2), ("prepared", 8), ("extended", 2), ("simple", 2)] {
        let mut row = Vec::new();
        for script in [&select1_script, &point_script] {
            let (tps, _, failed) = b.pgbench_with(b.port, 8, jobs, pg_seconds, mode, script, &[])?;
            if mode == "prepared" && jobs == 2 && script == &point_script {
                pgbench_prepared_point = tps;
            }
            row.push(if failed.is_empty() { format!("{tps:.0}") } else { format!("failed: {failed}") });
        }
        let _ = writeln!(doc, "| `pgbench -M {mode} -c 8 -j {jobs}` | {} | {} |", row[0], row[1]);
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let like = [
        ("`SELECT 1`, cache on ÷ dedicated prepared", ratio(medians[0][0], medians[2][0])),
        ("`SELECT 1`, cache off ÷ dedicated unnamed", ratio(medians[1][0], medians[3][0])),
        ("point query, cache on ÷ dedicated prepared", ratio(medians[0][1], medians[2][1])),
        ("point query, cache off ÷ dedicated unnamed", ratio(medians[1][1], medians[3][1])),
    ];
    let worst = like.iter().map(|(_, r)| *r).fold(f64::INFINITY, f64::min);
    let vs_pgbench = ratio(medians[0][1], pgbench_prepared_point);
    let _ = writeln!(
        doc,
        "\nPooled ÷ dedicated, like for like: {}. The statement cache on the point query: **{:.2}×** the throughput without it. pgconn pooled (cache on) ÷ `pgbench -M prepared -j 2` on the point query: **{vs_pgbench:.2}**. Bare r2d2 without its checkout test ÷ dedicated unnamed: {:.2} on `SELECT 1`.\n",
        like.iter().map(|(name, r)| format!("{name} **{r:.2}**")).collect::<Vec<_>>().join("; "),
        ratio(medians[0][1], medians[1][1]),
        ratio(medians[4][0], medians[3][0]),
    );
    Ok(LikeForLike { doc, worst_vs_dedicated: worst, vs_pgbench_prepared: vs_pgbench })
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "**not met**" }
}

fn humantime_now() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

#[allow(clippy::cast_precision_loss)]
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let version = |program: &Path| {
        Command::new(program)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "- CPU: {cpus} × {model}\n- memory: {:.0} GiB\n- Linux {}\n- {}\n- {}",
        mem_kb as f64 / 1_048_576.0,
        kernel.trim(),
        version(&pgconn_testkit::find_bindir().map(|d| d.join("postgres")).unwrap_or_default()),
        version(&pgconn_testkit::find_pgbouncer().unwrap_or_default()),
    )
}

/// Two panels, throughput and p99 against concurrency (log scale), a line per strategy: plain SVG.
#[allow(clippy::cast_precision_loss)]
fn plot(levels: &[u32], names: &[&str], grid: &[Vec<Cell>]) -> String {
    let colors = ["#1f77b4", "#2ca02c", "#ff7f0e", "#d62728"];
    let (w, h, pad) = (420.0_f64, 300.0_f64, 50.0_f64);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (levels.len() - 1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        2.0 * w,
        h + 60.0
    );
    for (panel, (title, value)) in
        [("requests/s", 0_usize), ("p99 latency (ms, log)", 1)].into_iter().enumerate()
    {
        let ox = panel as f64 * w;
        let values: Vec<f64> = grid
            .iter()
            .flat_map(|row| row.iter().map(|c| if value == 0 { c.rps } else { c.p99.max(0.01) }))
            .collect();
        let max = values.iter().copied().fold(1.0_f64, f64::max);
        let min = if value == 1 { values.iter().copied().fold(max, f64::min).max(0.01) } else { 0.0 };
        let y = |v: f64| {
            let t = if value == 1 {
                (v.max(min).ln() - min.ln()) / (max.ln() - min.ln()).max(1e-9)
            } else {
                v / max
            };
            h - pad + 10.0 - (h - 2.0 * pad) * t
        };
        let _ = writeln!(svg, "<text x=\"{}\" y=\"20\" font-size=\"13\">{title}</text>", ox + pad);
        let _ = writeln!(
            svg,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>",
            ox + pad,
            h - pad + 10.0,
            ox + w - pad,
            h - pad + 10.0
        );
        for (i, level) in levels.iter().enumerate() {
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{level}</text>",
                ox + x(i),
                h - pad + 25.0
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">concurrent clients</text>",
            ox + w / 2.0,
            h - pad + 40.0
        );
        let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\">{:.0}</text>", ox + 5.0, y(max) + 4.0, max);
        for (s, row) in grid.iter().enumerate() {
            let points: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    format!("{:.1},{:.1}", ox + x(i), y(if value == 0 { c.rps } else { c.p99.max(0.01) }))
                })
                .collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
                colors[s % colors.len()],
                points.join(" ")
            );
        }
    }
    for (s, name) in names.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"4\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            pad + s as f64 * 190.0,
            h + 35.0,
            colors[s % colors.len()],
            pad + 16.0 + s as f64 * 190.0,
            h + 40.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
