//! `docs/benchmarks.md` and `docs/benchmarks.svg` from a run's [`Results`]: pure functions, no measuring.

use std::fmt::Write as _;

use super::results::{
    Cell, Concurrency, EightThreads, Machine, Measured, PgbenchCell, PgbenchModes, PreparedPgBouncer,
    Results, Scale, SingleThread, Target, Throughput, Work,
};

/// The whole document.
pub(super) fn render(r: &Results) -> String {
    let mut out = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench{}` on {} in {:.0} s. Every figure below comes from that one run; rerun the command to check them on your machine. Absolute times on a shared machine drift: compare side by side, within one run.\n\n## Machine\n\n{}\n\nEverything on 127.0.0.1: PostgreSQL with `max_connections = 100`, `fsync=off` (a throwaway cluster), SCRAM-SHA-256 authentication; PgBouncer 1.18 in transaction mode; the client on the same two cores. Release build of `pgconn`.\n\n",
        if r.quick { " --quick" } else { "" },
        r.written,
        r.elapsed_s,
        machine(&r.machine),
    );
    single_thread(&mut out, &r.single);
    checkout(&mut out, r.checkout.ns());
    connection_cost(&mut out, r);
    concurrency(&mut out, &r.concurrency);
    eight_threads(&mut out, &r.eight_threads);
    prepared_pgbouncer(&mut out, &r.prepared_pgbouncer);
    work(&mut out, &r.work);
    targets(&mut out, &r.targets());
    scale(&mut out, &r.scale);
    claims(&mut out, r);
    commands(&mut out, &r.commands);
    out
}

/// "met", "**not met**", or "not run".
pub(super) fn met(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not run",
    }
}

/// The machine as a Markdown list.
#[allow(clippy::cast_precision_loss)]
pub(super) fn machine(m: &Machine) -> String {
    format!(
        "- CPU: {} × {}\n- memory: {:.0} GiB\n- Linux {}\n- {}\n- {}",
        m.cpus,
        m.model,
        m.mem_kb as f64 / 1_048_576.0,
        m.kernel,
        m.postgres,
        m.pgbouncer,
    )
}

fn single_thread(doc: &mut String, s: &SingleThread) {
    let _ = writeln!(
        doc,
        "## Single-thread latency per request\n\n`SELECT 1`, one request thread, {} rounds alternating the contenders (each round: {} requests; {} for connect per request); medians over the rounds.\n\n| contender | p50 ms | p99 ms | mean ms | mean ÷ dedicated |\n|---|---|---|---|---|",
        s.rounds, s.requests, s.per_request_requests
    );
    for row in s.rows() {
        let _ = writeln!(
            doc,
            "| {} | {:.3} | {:.3} | {:.4} | {:.2}{} |",
            row.name,
            row.p50,
            row.p99,
            row.mean,
            row.mean / s.dedicated.mean,
            if row.errors > 0 { format!(" ({} errors)", row.errors) } else { String::new() }
        );
    }
    let _ = writeln!(
        doc,
        "\nConnect per request ÷ pooled: **{:.0}×**. Pooled ÷ dedicated: **{:.3}** (target ≤ 1.05: {}). Pooled ÷ bare r2d2: **{:.2}** (target below 1: {}).\n",
        s.per_request_vs_pooled(),
        s.pooled_vs_dedicated(),
        met(Target::pooled_vs_dedicated(s).met),
        s.pooled_vs_r2d2(),
        met(Target::pooled_vs_r2d2(s).met),
    );
}

fn checkout(doc: &mut String, ns: f64) {
    let _ = writeln!(
        doc,
        "## Checkout overhead\n\n`pgconn load --clients 1 --requests 1000000 --checkout-only`: check out and return, no query: **{ns:.0} ns** per checkout and return, the load loop's own timing and bookkeeping included.\n"
    );
}

fn connection_cost(doc: &mut String, r: &Results) {
    let (c, dedicated) = (&r.cost.pooled, &r.cost.dedicated);
    let _ = writeln!(
        doc,
        "## What a connection costs the client

The process of `pgconn load` at the end of a run, its pool's connections still open: with 1 connection ({} file descriptors, {} kB resident, {} threads) and with {} ({} fds, {} kB, {} threads). Per connection: **{:.1} file descriptors**, **{:.0} kB** resident, {:.1} threads. A pooled connection is pgconn's own `Client` (`tokio-postgres` driven on the calling thread, no runtime): its one descriptor is its socket. A `postgres::Client` also holds the tokio runtime the `postgres` crate starts per connection, two `eventpoll` descriptors and an `eventfd` (listed in `/proc/PID/fd`), as the table below shows.
",
        c.one.fds,
        c.one.rss_kb,
        c.one.threads,
        c.many_size,
        c.many.fds,
        c.many.rss_kb,
        c.many.threads,
        c.per_connection(|p| p.fds),
        c.per_connection(|p| p.rss_kb),
        c.per_connection(|p| p.threads),
    );
    if dedicated.is_empty() {
        return;
    }
    let _ = writeln!(
        doc,
        "The connection alone: `pgconn load --dedicated --prepared` with 1 request thread and with {} (each thread's connection open until the process is sampled), a `postgres::Client` per thread and pgconn's own `Client` per thread (`--no-runtime`).\n\n| connection | file descriptors per connection | kB resident per connection |\n|---|---|---|",
        dedicated.first().map_or(0, |(_, d)| d.many_size)
    );
    for (name, d) in dedicated {
        let _ = writeln!(
            doc,
            "| {name} | {:.1} | {:.0} |",
            d.per_connection(|p| p.fds),
            d.per_connection(|p| p.rss_kb)
        );
    }
    doc.push('\n');
}

fn concurrency(doc: &mut String, c: &Concurrency) {
    let _ = writeln!(
        doc,
        "## Throughput and p99 by concurrency\n\n`SELECT 1` for {} s per cell after a warm-up; requests/s, p99 ms in parentheses; errors by kind where any. pgbench: `-M simple`, 2 jobs, the same query from a script; tps (mean latency ms).\n",
        c.seconds
    );
    let _ = writeln!(
        doc,
        "| contender | {} |\n|---|{}",
        c.levels.iter().map(|l| format!("{l} clients")).collect::<Vec<_>>().join(" | "),
        "---|".repeat(c.levels.len())
    );
    for row in c.load_rows() {
        let cells: Vec<String> = row
            .cells
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
        let _ = writeln!(doc, "| {} | {} |", row.name, cells.join(" | "));
    }
    for row in c.pgbench_rows() {
        let cells: Vec<String> = row.cells.iter().map(pgbench_cell).collect();
        let _ = writeln!(doc, "| {} | {} |", row.name, cells.join(" | "));
    }
    let vs_pgbench = |ratios: Vec<(u32, Option<f64>)>| -> String {
        ratios
            .into_iter()
            .map(|(level, ratio)| match ratio {
                Some(ratio) => format!("{level}: {ratio:.2}"),
                None => format!("{level}: pgbench failed"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        doc,
        "\npgconn pooled (statement cache on, so `SELECT 1` runs prepared) ÷ dedicated (unnamed each time) at 8 clients: {:.2}; like for like, see \"Eight threads, like for like\" below.\n\nRatio to pgbench at the same client count: pgconn pooled ÷ pgbench direct: {}; pgconn via PgBouncer ÷ pgbench via PgBouncer: {}; connect per request ÷ pgbench -C: {}.\n",
        c.pooled_vs_dedicated(8).unwrap_or(f64::NAN),
        vs_pgbench(c.vs_pgbench(&c.pooled, &c.pgbench_direct)),
        vs_pgbench(c.vs_pgbench(&c.pgbouncer, &c.pgbench_pgbouncer)),
        vs_pgbench(c.vs_pgbench(&c.per_request, &c.pgbench_per_connection)),
    );
    let _ = writeln!(doc, "![throughput and p99 by concurrency](benchmarks.svg)\n");
}

/// `tps (latency)`, or why pgbench failed.
fn pgbench_cell(cell: &PgbenchCell) -> String {
    match &cell.failed {
        None => format!("{:.0} ({:.2})", cell.tps, cell.latency_ms),
        Some(failed) => format!("failed: {failed}"),
    }
}

/// A median rate with its rounds' lowest and highest, in thousands: `130386 (121.2k–134.3k)`; the median
/// alone for a single round.
fn rate(median: f64, (low, high): (f64, f64)) -> String {
    if low >= high {
        format!("{median:.0}")
    } else {
        format!("{median:.0} ({:.1}k–{:.1}k)", low / 1000.0, high / 1000.0)
    }
}

/// The rows of a table of requests/s on `SELECT 1` and the point query: each `pgconn load` contender's
/// medians with their rounds' spread, then each pgbench run's, `via` after its command.
fn throughput_rows(doc: &mut String, rows: &[&Throughput], pgbench: &[PgbenchModes], via: &str) {
    for row in rows {
        let (select1, point) = (rate(row.select1, row.ranges[0]), rate(row.point, row.ranges[1]));
        let _ = writeln!(doc, "| {} | {select1} | {point} |", row.name);
    }
    let tps = |cell: &PgbenchCell| match &cell.failed {
        None => format!("{:.0}", cell.tps),
        Some(failed) => format!("failed: {failed}"),
    };
    for row in pgbench {
        let (select1, point) = (tps(&row.select1), tps(&row.point));
        let _ =
            writeln!(doc, "| `pgbench -M {} -c 8 -j {}`{via} | {select1} | {point} |", row.mode, row.jobs);
    }
}

fn eight_threads(doc: &mut String, e: &EightThreads) {
    let _ = writeln!(
        doc,
        "## Eight threads, like for like\n\n8 request threads (or pgbench clients), {} rounds alternating the pgconn contenders, {} s each after {} s of warm-up (steady state: how the scheduler spreads the request threads over this machine's CPUs moves a round's rate by a fifth or more, and a pooled client starts unevenly spread more often; `pool.md`, \"Rounds that settle low\"); medians, with the lowest and highest round in parentheses. The point query is `{}` on `pgbench -i -s 5`. The statement cache prepares a statement on its fifth use on a connection; the dedicated baselines run the same query the same way: prepared once, or unnamed (parse, bind, execute) every time.\n\n| contender | `SELECT 1` req/s | point query req/s |\n|---|---|---|",
        e.rounds, e.seconds, e.warmup, e.point
    );
    throughput_rows(doc, &e.rows(), &e.pgbench, "");
    let _ = writeln!(
        doc,
        "\nPooled ÷ dedicated, like for like: {}. The statement cache on the point query: **{:.2}×** the throughput without it. pgconn pooled (cache on) ÷ `pgbench -M prepared -j 2` on the point query: **{:.3}**. Bare r2d2 without its checkout test ÷ dedicated unnamed: {:.2} on `SELECT 1`.\n",
        e.like_for_like().iter().map(|(name, r)| format!("{name} **{r:.2}**")).collect::<Vec<_>>().join("; "),
        e.cache_gain(),
        e.vs_pgbench_prepared(),
        e.r2d2_vs_unnamed(),
    );
    let [select1, point] = e.no_runtime_gain();
    let _ = writeln!(
        doc,
        "The connection type: dedicated prepared on pgconn's own `Client` (`--no-runtime`, no tokio runtime) ÷ on `postgres::Client`: **{select1:.2}** on `SELECT 1`, **{point:.2}** on the point query (`pool.md`, \"What a connection costs\"). ",
    );
    let [select1, point] = e.pool_layer();
    let _ = writeln!(
        doc,
        "The pool's layer alone, pooled (cache on) ÷ dedicated prepared on the same `Client`: **{select1:.2}** on `SELECT 1`, **{point:.2}** on the point query.\n",
    );
}

fn prepared_pgbouncer(doc: &mut String, p: &PreparedPgBouncer) {
    let _ = writeln!(
        doc,
        "## Through PgBouncer with prepared statements\n\nPgBouncer 1.18 (the one of every other section: the statement cache is off through it) against {} built from Debian 13's source (`cargo xtask test` builds the same one), rendered by `pgconn pgbouncer-ini` with `PGBOUNCER_PREPARED_STATEMENTS=true`, so with `max_prepared_statements`; both in transaction mode with `default_pool_size = 40`. 8 request threads (pool of 8) or pgbench clients, {} rounds alternating the pgconn contenders, {} s each after {} s of warm-up; medians, with the lowest and highest round in parentheses; the same two queries as above.\n",
        p.version, p.rounds, p.seconds, p.warmup
    );
    let rows = match &p.measured {
        Ok(rows) => rows,
        Err(why) => {
            let _ = writeln!(doc, "Not run: {why}.\n");
            return;
        }
    };
    let _ = writeln!(doc, "| contender | `SELECT 1` req/s | point query req/s |\n|---|---|---|");
    throughput_rows(doc, &rows.rows(), &rows.pgbench, &format!(" via {}", p.version));
    let _ = writeln!(
        doc,
        "\nThe statement cache through {} on the point query: **{:.2}×** the throughput without it. pgconn (cache on) ÷ `pgbench -M prepared` through the same PgBouncer on the point query: **{:.2}**.\n",
        p.version,
        rows.cache_gain(),
        rows.vs_pgbench_prepared(),
    );
}

fn targets(doc: &mut String, targets: &[Target]) {
    doc.push_str("## Targets\n\n| target | measured | |\n|---|---|---|\n");
    for target in targets {
        let measured = match target.measured {
            Measured::Ratio { value, decimals } => format!("{value:.decimals$}×"),
            Measured::Errors(errors) => format!("{errors} errors"),
            Measured::NotRun => "not run (--quick)".to_owned(),
        };
        let _ = writeln!(doc, "| {} | {measured} | {} |", target.what, met(target.met));
    }
    doc.push('\n');
}

fn scale(doc: &mut String, s: &Scale) {
    doc.push_str("## Scale on `max_connections = 100`\n\nPgBouncer with `default_pool_size = 40`, each client a pooled connection of its own to PgBouncer; connect-per-request clients whose requests hold the connection 50 ms.\n\n| run | requests | errors | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n");
    let rows = s.pgbouncer.iter().map(|row| (format!("PgBouncer, {} clients, `SELECT 1`", row.clients), row));
    let sweep = s
        .per_request
        .iter()
        .map(|row| (format!("connect per request, {} clients, `SELECT pg_sleep(0.05)`", row.clients), row));
    for (run, row) in rows.chain(sweep) {
        let cell = &row.cell;
        let _ = writeln!(
            doc,
            "| {run} | {} | {} | {:.0} | {:.2} | {:.2} |",
            cell.requests,
            if cell.errors == 0 { "0".into() } else { format!("{} ({})", cell.errors, cell.kinds) },
            cell.rps,
            cell.p50,
            cell.p99
        );
    }
    let _ = writeln!(
        doc,
        "\nConnect per request first failed at **{}** concurrent clients.\n",
        s.first_failure()
            .map_or_else(|| "none of the tested counts (up to 200)".to_owned(), |c| c.to_string())
    );
}

/// 64-byte lines in KiB.
#[allow(clippy::cast_precision_loss)] // a few thousand lines
fn kib(lines: u64) -> f64 {
    lines as f64 * 64.0 / 1024.0
}

fn work(doc: &mut String, w: &Work) {
    let _ = writeln!(
        doc,
        "## Client work per request, counted\n\n`SELECT 1`, {} request threads: the instructions the client ran in user space inside the load's request loop (callgrind's `--toggle-collect`, so that connections opened on the pool's own threads, SCRAM's 4096 rounds of SHA-256 each, are not counted) and the misses of the first-level instruction cache they caused (`--cache-sim=yes`, simulating this machine's L1i: a miss costs a fetch from the next level; the count moves with where the linker placed each function, so compare it within one build), the code every request runs (the distinct 64-byte lines holding instructions run at least once per two requests in that loop, `--dump-instr=yes`, one run of the shorter length: what has to fit in the instruction cache, whatever the layout), and the system calls of all the process's threads (`strace -f -c`); instructions, misses and system calls are each the difference between a run of {} and one of {} requests divided by the {} requests between them, so that starting up cancels out. Counts barely move between runs where throughput on a shared machine does; the kernel's time in each system call is not in the instructions.\n",
        w.clients,
        w.requests.0,
        w.requests.1,
        w.requests.1 - w.requests.0
    );
    let rows = match &w.rows {
        Ok(rows) => rows,
        Err(why) => {
            let _ = writeln!(doc, "{why}.\n");
            return;
        }
    };
    doc.push_str(
        "| contender | instructions per request | L1 instruction-cache misses per request | code run every request | system calls per request |\n|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            doc,
            "| {} | {:.0} | {:.1} | {} lines, {:.1} KiB | {:.2} |",
            row.name,
            row.instructions,
            row.i1_misses,
            row.hot_lines,
            kib(row.hot_lines),
            row.syscalls
        );
    }
    let ratios: Vec<String> = w
        .like_for_like()
        .iter()
        .map(|(name, instructions, syscalls)| {
            format!("{name}: instructions **{instructions:.2}**, system calls **{syscalls:.2}**")
        })
        .collect();
    let _ = writeln!(doc, "\nPooled ÷ dedicated, like for like: {}.\n", ratios.join("; "));
    if let Some((instructions, syscalls)) = w.no_runtime_vs_postgres() {
        let _ = writeln!(
            doc,
            "Dedicated prepared on pgconn's own `Client` ÷ on `postgres::Client`: instructions **{instructions:.2}**, system calls **{syscalls:.2}**.\n"
        );
    }
}

fn claims(doc: &mut String, r: &Results) {
    let c = &r.concurrency;
    let at_500 = c.cell(&c.pooled, 500).cloned().unwrap_or_default();
    let _ = writeln!(
        doc,
        "## The guide's claims, against this machine\n\n| claim | measured here |\n|---|---|\n| pooling turns 50–100 ms of connection overhead per request into 1–5 ms | connect + `SELECT 1` + close: {:.2} ms; pooled: {:.3} ms. Loopback and no TLS make connecting far cheaper than across a network (where 50–100 ms includes round trips and TLS); SCRAM-SHA-256's 4096 iterations are most of what is left here |\n| direct pooling holds about 100 concurrent users | pooled (10 connections) at 500 clients: {:.0} req/s, p99 {:.1} ms, {} errors |\n| connect per request falls over at a few hundred users | here from {} clients whose requests hold the connection 50 ms |\n| PgBouncer holds 5000+ | see the scale table (clients through PgBouncer on 40 server connections) |\n",
        r.single.per_request.mean,
        r.single.pooled.mean,
        at_500.rps,
        at_500.p99,
        at_500.errors,
        r.scale.first_failure().map_or_else(|| "more than 200".to_owned(), |c| c.to_string())
    );
}

fn commands(doc: &mut String, commands: &[String]) {
    let _ = writeln!(
        doc,
        "## Commands\n\nThe environment of each also holds `DATABASE_URL` of the throwaway cluster (and `PGBOUNCER_URL` with `USE_PGBOUNCER=true`); pgbench gets `PGPASSWORD`.\n\n```\n{}\n```",
        commands.join("\n")
    );
}

/// Two panels, throughput and p99 against concurrency (log scale), a line per strategy: plain SVG.
#[allow(clippy::cast_precision_loss)]
pub(super) fn plot(concurrency: &Concurrency) -> String {
    let levels = &concurrency.levels;
    let rows = concurrency.load_rows();
    let grid: Vec<&[Cell]> = rows.iter().map(|row| row.cells.as_slice()).collect();
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
    for (s, name) in rows.iter().map(|row| &row.name).enumerate() {
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

#[cfg(test)]
mod tests {
    use super::super::results::sample;
    use super::*;

    /// The line of `doc` that starts with `start` (a table row by its first column).
    fn row<'a>(doc: &'a str, start: &str) -> &'a str {
        doc.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no line {start:?} in\n{doc}"))
    }

    #[test]
    fn every_section_has_its_heading_and_table_header_in_order() {
        let doc = render(&sample());
        let expected = [
            "# Benchmarks",
            "## Machine",
            "## Single-thread latency per request",
            "| contender | p50 ms | p99 ms | mean ms | mean ÷ dedicated |",
            "|---|---|---|---|---|",
            "## Checkout overhead",
            "## What a connection costs the client",
            "| connection | file descriptors per connection | kB resident per connection |",
            "|---|---|---|",
            "## Throughput and p99 by concurrency",
            "| contender | 1 clients | 8 clients | 50 clients | 500 clients |",
            "|---|---|---|---|---|",
            "![throughput and p99 by concurrency](benchmarks.svg)",
            "## Eight threads, like for like",
            "| contender | `SELECT 1` req/s | point query req/s |",
            "|---|---|---|",
            "## Through PgBouncer with prepared statements",
            "| contender | `SELECT 1` req/s | point query req/s |",
            "|---|---|---|",
            "## Client work per request, counted",
            "| contender | instructions per request | L1 instruction-cache misses per request | code run every request | system calls per request |",
            "|---|---|---|---|---|",
            "## Targets",
            "| target | measured | |",
            "|---|---|---|",
            "## Scale on `max_connections = 100`",
            "| run | requests | errors | requests/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
            "## The guide's claims, against this machine",
            "| claim | measured here |",
            "|---|---|",
            "## Commands",
        ];
        let lines: Vec<&str> = doc.lines().collect();
        // Headings, the plot, and each table's header: the line above a `|---` line, and that line.
        let structure: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                let header = lines.get(i + 1).is_some_and(|next| next.starts_with("|---"));
                l.starts_with('#') || l.starts_with("|---") || l.starts_with("![") || header
            })
            .map(|(_, l)| *l)
            .collect();
        assert_eq!(structure, expected);
        assert!(doc.ends_with("```\n"), "the commands close the document");
    }

    #[test]
    fn the_counted_work_shows_each_row_and_the_ratios_or_why_it_did_not_run() {
        let mut results = sample();
        let doc = render(&results);
        assert!(
            doc.contains(
                "| pgconn pooled, statement cache on | 15691 | 215.3 | 886 lines, 55.4 KiB | 4.00 |"
            ),
            "{doc}"
        );
        assert!(
            doc.contains("cache on ÷ dedicated prepared: instructions **1.22**, system calls **1.00**"),
            "{doc}"
        );
        assert!(
            doc.contains("on pgconn's own `Client` ÷ on `postgres::Client`: instructions **0.69**, system calls **0.75**"),
            "{doc}"
        );
        results.work.rows = Err("not run: valgrind not installed (`apt-get install valgrind strace`)".into());
        let doc = render(&results);
        assert!(
            doc.contains("\nnot run: valgrind not installed (`apt-get install valgrind strace`).\n"),
            "{doc}"
        );
        assert!(!doc.contains("| instructions per request |"), "no table without figures");
    }

    #[test]
    fn the_driver_without_its_runtime_is_shown_beside_postgres_client() {
        let doc = render(&sample());
        assert_eq!(
            row(&doc, "| `postgres::Client` (`--dedicated`) |"),
            "| `postgres::Client` (`--dedicated`) | 4.0 | 81 |"
        );
        assert_eq!(
            row(&doc, "| pgconn's `Client` (`--dedicated --no-runtime`) |"),
            "| pgconn's `Client` (`--dedicated --no-runtime`) | 1.0 | 59 |"
        );
        assert!(
            doc.contains("(`--no-runtime`, no tokio runtime) ÷ on `postgres::Client`: **1.10** on `SELECT 1`, **1.07** on the point query"),
            "{doc}"
        );
    }

    #[test]
    fn figures_are_formatted_as_before() {
        let mut results = sample();
        results.single.pgbouncer.errors = 3;
        let doc = render(&results);
        assert!(doc.contains("Written by `cargo xtask bench` on 2026-12-05 02:51 UTC in 567 s."));
        assert!(doc.contains("- CPU: 2 × Intel(R) Xeon(R) Processor\n- memory: 24 GiB\n- Linux 6.18.44"));
        assert_eq!(row(&doc, "| pgconn pooled |"), "| pgconn pooled | 0.079 | 0.124 | 0.0715 | 0.86 |");
        assert_eq!(
            row(&doc, "| pgconn through PgBouncer |"),
            "| pgconn through PgBouncer | 0.096 | 0.161 | 0.0981 | 1.18 (3 errors) |"
        );
        assert!(doc.contains(
            "Connect per request ÷ pooled: **55×**. Pooled ÷ dedicated: **0.862** (target ≤ 1.05: met). Pooled ÷ bare r2d2: **0.44** (target below 1: met)."
        ));
        assert!(doc.contains("no query: **521 ns** per checkout"));
        assert!(doc.contains("Per connection: **4.0 file descriptors**, **91 kB** resident, 0.0 threads."));
        assert_eq!(
            row(&doc, "| dedicated |"),
            "| dedicated | 12044 (0.12) | 97027 (0.19) | 68725 (3.50) | 56858 (6.97); too_many_clients 415 |"
        );
        assert!(row(&doc, "| pgbench direct |").ends_with("| failed: pgbench: error: connection to server at \"127.0.0.1\", port 37313 failed: FATAL:  remaining connection slots are reserved for non-replication superuser connections (exit status: 1) |"));
        assert!(doc.contains("at 8 clients: 1.21;"));
        assert!(
            doc.contains("pgconn pooled ÷ pgbench direct: 1: 0.94, 8: 1.10, 50: 0.70, 500: pgbench failed;")
        );
        assert_eq!(
            row(&doc, "| `pgbench -M prepared -c 8 -j 8`"),
            "| `pgbench -M prepared -c 8 -j 8` | 151997 | 119702 |"
        );
        assert!(doc.contains("`SELECT 1`, cache on ÷ dedicated prepared **0.90**; `SELECT 1`, cache off ÷ dedicated unnamed **0.89**;"));
        assert!(doc.contains("`pgbench -M prepared -j 2` on the point query: **0.814**."));
        // A median with its rounds' lowest and highest.
        assert_eq!(
            row(&doc, "| pgconn pooled, statement cache on"),
            "| pgconn pooled, statement cache on (the default) | 113193 (101.9k–118.9k) | 94960 (85.5k–99.7k) |"
        );
        assert_eq!(
            row(&doc, "| connect per request, 75 clients"),
            "| connect per request, 75 clients, `SELECT pg_sleep(0.05)` | 2091 | 272 (too_many_clients 272) | 405 | 179.20 | 333.82 |"
        );
        assert!(doc.contains("Connect per request first failed at **75** concurrent clients."));
        assert!(doc.contains("pooled (10 connections) at 500 clients: 46032 req/s, p99 186.4 ms, 0 errors"));
        assert!(doc.contains("connect + `SELECT 1` + close: 3.92 ms; pooled: 0.072 ms."));
        assert!(doc.ends_with(
            "```\npgconn load --clients 1 --requests 20000 --dedicated\nDB_CONN_MAX_AGE=0 pgconn load --clients 1 --requests 500\n```\n"
        ));
    }

    #[test]
    fn a_target_below_its_threshold_is_not_met_and_one_above_is_met() {
        let mut results = sample();
        let doc = render(&results);
        assert_eq!(
            row(&doc, "| pooled per-request latency"),
            "| pooled per-request latency ≤ 1.05× the dedicated client | 0.862× | met |"
        );
        // The worst like-for-like ratio is 0.89, below 0.95.
        assert!(row(&doc, "| 8-thread throughput").ends_with("| 0.89× | **not met** |"));
        assert_eq!(
            row(&doc, "| PgBouncer at 5000 clients"),
            "| PgBouncer at 5000 clients with 0 errors | 0 errors | met |"
        );

        results.single.pooled.mean = 0.09; // ÷ 0.08296 dedicated: 1.085, above 1.05
        results.eight_threads.cache_off.select1 = results.eight_threads.dedicated_unnamed.select1;
        results.eight_threads.cache_off.point = results.eight_threads.dedicated_unnamed.point;
        results.eight_threads.cache_on = results.eight_threads.dedicated_prepared.clone();
        results.scale.pgbouncer[1].cell.errors = 2;
        let doc = render(&results);
        assert_eq!(
            row(&doc, "| pooled per-request latency"),
            "| pooled per-request latency ≤ 1.05× the dedicated client | 1.085× | **not met** |"
        );
        assert!(doc.contains("Pooled ÷ dedicated: **1.085** (target ≤ 1.05: **not met**)."));
        assert!(row(&doc, "| 8-thread throughput").ends_with("| 1.00× | met |"));
        assert_eq!(
            row(&doc, "| PgBouncer at 5000 clients"),
            "| PgBouncer at 5000 clients with 0 errors | 2 errors | **not met** |"
        );

        // Just below a threshold is not shown as the threshold: 0.7962 as 0.796, not met.
        let pgbench = &results.eight_threads.pgbench[0].point.tps;
        results.eight_threads.cache_on.point = 0.7962 * pgbench;
        let doc = render(&results);
        assert!(row(&doc, "| pooled with the statement cache").ends_with("| 0.796× | **not met** |"));
    }

    #[test]
    fn a_quick_run_shows_the_5000_clients_target_as_not_run() {
        let mut results = sample();
        results.quick = true;
        results.scale.pgbouncer.truncate(1);
        let doc = render(&results);
        assert!(doc.contains("Written by `cargo xtask bench --quick` on"));
        assert_eq!(
            row(&doc, "| PgBouncer at 5000 clients"),
            "| PgBouncer at 5000 clients with 0 errors | not run (--quick) | not run |"
        );
        assert!(!doc.contains("| PgBouncer, 5000 clients"));
        assert!(doc.contains("| PgBouncer, 1000 clients, `SELECT 1` | 339672 | 0 | 22542 | 41.73 | 87.55 |"));
    }

    #[test]
    fn without_a_failure_the_scale_and_claims_say_so() {
        let mut results = sample();
        for row in &mut results.scale.per_request {
            row.cell.errors = 0;
        }
        let doc = render(&results);
        assert!(
            doc.contains("first failed at **none of the tested counts (up to 200)** concurrent clients.")
        );
        assert!(doc.contains(
            "| connect per request falls over at a few hundred users | here from more than 200 clients"
        ));
    }

    #[test]
    fn the_plot_has_a_line_per_contender_in_each_panel_and_a_legend() {
        let results = sample();
        let svg = plot(&results.concurrency);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2 * 4);
        for name in ["dedicated", "pgconn pooled (10)", "pgconn via PgBouncer", "connect per request"] {
            assert!(svg.contains(&format!(">{name}</text>")), "{name} in the legend");
        }
        // Throughput: the highest requests/s (pooled at 8 clients) labels the axis.
        assert!(svg.contains(">116924</text>"));
    }
}
