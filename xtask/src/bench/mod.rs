//! `cargo xtask bench [--quick]`: every performance claim measured side by side in one run, written to
//! `docs/benchmarks.md` with the machine, the tables, a plot and the command behind every figure.
//!
//! Starts its own PostgreSQL (`max_connections = 100`) and PgBouncer, then runs the release `pgconn load`
//! (pgconn pooled, connect-per-request, through PgBouncer, and the anchors `--dedicated` and `--r2d2`) and
//! `pgbench` (`-M simple`, and `-C` for connect-per-transaction), all with the same query, `SELECT 1`; then
//! eight threads like for like on `SELECT 1` and a point query (statement cache on and off, dedicated
//! clients prepared and unnamed, pgbench in each protocol mode).
//!
//! `measure.rs` runs the contenders (`pgconn load`, `pgbench`) and reads their results; this file runs the
//! sections and writes each one's table; `render.rs` has the machine description and the plot.

mod measure;
mod render;

use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result};

use measure::{Bench, Cell, Contender, median};
use render::{humantime_now, machine, met, plot};

#[allow(clippy::too_many_lines, clippy::cast_precision_loss)] // one report, top to bottom
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
    let (Some(one), Some(many)) = (small.process, large.process) else {
        anyhow::bail!(
            "pgconn load reported no process sample (no /proc here?): the cost of a connection cannot be measured"
        );
    };
    let added = large.size.saturating_sub(small.size).max(1);
    #[allow(clippy::cast_precision_loss)]
    let per = |a: u64, b: u64| (a as f64 - b as f64) / added as f64;
    let _ = writeln!(
        doc,
        "## What a connection costs the client

The process of `pgconn load` at the end of a run, its pool's connections still open: with 1 connection ({} file descriptors, {} kB resident, {} threads) and with {} ({} fds, {} kB, {} threads). Per connection: **{:.1} file descriptors**, **{:.0} kB** resident, {:.1} threads. Each connection's descriptors, listed in `/proc/PID/fd` of a run with 3 connections: its socket, and for the tokio runtime the `postgres` crate starts per connection two `eventpoll` descriptors and an `eventfd`; the crate's API gives no way to share one runtime between connections (`postgres::Client::new` is private).
",
        one.fds,
        one.rss_kb,
        one.threads,
        large.size,
        many.fds,
        many.rss_kb,
        many.threads,
        per(many.fds, one.fds),
        per(many.rss_kb, one.rss_kb),
        per(many.threads, one.threads),
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
