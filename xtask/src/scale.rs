//! `cargo xtask scale [--quick]`: how many concurrent clients each tier holds on a PostgreSQL with
//! `max_connections = 100`.
//!
//! Starts its own cluster and a PgBouncer in front of it (rendered by `pgconn pgbouncer-ini` with
//! `max_client_conn` above the largest client count), then runs the release `pgconn load`:
//! 150 clients whose requests hold a connection for 200 ms (`SELECT pg_sleep(0.2)`), connect-per-request
//! straight to PostgreSQL (expected: `too_many_clients`) and pooled through PgBouncer (expected: no error,
//! requests queue instead); then 1000 and 5000 clients running `SELECT 1` through PgBouncer, each client a
//! pooled connection of its own to PgBouncer, after a warm-up that lets the pools connect (expected: no
//! error). Prints one line per run and writes every `pgconn load --json` report to
//! `target/scale/`.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use pgconn_testkit::{Cluster, PgBouncer, signal};

use crate::process;

/// A request that holds its connection for 200 ms, as a request of a server that opens a connection per
/// request holds it for the whole request.
const HOLDING: &str = "SELECT pg_sleep(0.2)";
/// The cheapest request, for the largest client counts.
const CHEAP: &str = "SELECT 1";

/// One run: its name, the environment on top of the database's, and `pgconn load`'s arguments.
struct Run {
    name: &'static str,
    through_pgbouncer: bool,
    env: Vec<(&'static str, String)>,
    clients: u32,
    seconds: u32,
    warmup: u32,
    query: &'static str,
}

pub(crate) fn run(quick: bool) -> Result<u8> {
    let (soft, hard) = signal::nofile_limits().context("cannot read the open-files limit")?;
    eprintln!("xtask: open files limit: soft {soft}, hard {hard} (children get the hard limit)");
    let pgconn = crate::build_pgconn_release()?;
    let (cluster, bouncer) = start_servers(&pgconn)?;
    let per_client = |clients: u32| {
        vec![
            ("DB_POOL_MAX_SIZE", clients.to_string()),
            ("DB_POOL_MIN_IDLE", "0".to_owned()),
            ("DB_POOL_TIMEOUT", "120000".to_owned()),
            ("DB_CONNECT_TIMEOUT", "60".to_owned()),
        ]
    };
    let q = |seconds: u32| if quick { seconds / 2 } else { seconds };
    let runs = [
        Run {
            name: "direct, connect per request",
            through_pgbouncer: false,
            env: vec![("DB_CONN_MAX_AGE", "0".to_owned())],
            clients: 150,
            seconds: q(10),
            warmup: 0,
            query: HOLDING,
        },
        Run {
            name: "PgBouncer, pooled",
            through_pgbouncer: true,
            env: per_client(150),
            clients: 150,
            seconds: q(10),
            warmup: 5,
            query: HOLDING,
        },
        Run {
            name: "PgBouncer, pooled",
            through_pgbouncer: true,
            env: per_client(1000),
            clients: 1000,
            seconds: q(15),
            warmup: 10,
            query: CHEAP,
        },
        Run {
            name: "PgBouncer, pooled",
            through_pgbouncer: true,
            env: per_client(5000),
            clients: 5000,
            seconds: q(30),
            warmup: 25,
            query: CHEAP,
        },
    ];
    let out_dir = crate::workspace_root().join("target").join("scale");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    print!(
        "| run | clients | request | requests | ok | errors | errors by kind | throughput (req/s) | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in &runs {
        if process::interrupted() {
            return Err(pgconn_testkit::Interrupted.into());
        }
        let mut cmd = Command::new(&pgconn);
        let (clients, seconds, warmup) =
            (run.clients.to_string(), run.seconds.to_string(), run.warmup.to_string());
        cmd.args(["load", "--json", "--clients", &clients, "--duration", &seconds])
            .args(["--warmup", &warmup, "--query", run.query])
            .env_clear()
            .env("DATABASE_URL", cluster.info().database_url())
            .envs(run.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if run.through_pgbouncer {
            cmd.env("USE_PGBOUNCER", "true").env("PGBOUNCER_URL", bouncer.info().database_url());
        }
        signal::raise_nofile_limit(&mut cmd);
        eprintln!(
            "xtask: scale: {} with {} clients running `{}` for {}s (after {}s of warm-up)",
            run.name, run.clients, run.query, run.seconds, run.warmup
        );
        let output = cmd.output().context("cannot run pgconn load")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let file = out_dir.join(format!(
            "{}-{}.json",
            if run.through_pgbouncer { "pgbouncer" } else { "direct" },
            run.clients
        ));
        std::fs::write(&file, text.as_bytes()).with_context(|| format!("cannot write {}", file.display()))?;
        let line = summary(run, &text).unwrap_or_else(|| {
            format!(
                "| {} | {} | pgconn load printed no report (exit {}) | | | | | | |",
                run.name, run.clients, output.status
            )
        });
        println!("{line}");
    }
    println!("\nreports: {}", out_dir.display());
    drop(bouncer);
    cluster.stop()?;
    Ok(0)
}

/// The servers of `scale` and `bench`: a throwaway cluster with `max_connections = 100` and a PgBouncer in
/// front of it (rendered by `pgconn`) taking 6000 clients onto 40 server connections.
pub(crate) fn start_servers(pgconn: &Path) -> Result<(Cluster, PgBouncer)> {
    let cluster = Cluster::start_temp(&process::cluster_options().setting("max_connections", "100"))?;
    let bouncer = PgBouncer::in_front_of(
        &cluster,
        pgconn,
        &[("PGBOUNCER_MAX_CLIENT_CONN", "6000"), ("PGBOUNCER_DEFAULT_POOL_SIZE", "40")],
        &process::pgbouncer_options(),
    )?;
    Ok((cluster, bouncer))
}

/// One table row from a `pgconn load --json` report.
fn summary(run: &Run, json: &str) -> Option<String> {
    let report: serde_json::Value = serde_json::from_str(json).ok()?;
    let number = |v: &serde_json::Value| v.as_f64();
    let kinds: Vec<String> = report["error_kinds"]
        .as_object()?
        .iter()
        .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    Some(format!(
        "| {} | {} | `{}` | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
        run.name,
        run.clients,
        run.query,
        report["requests"],
        report["ok"],
        report["errors"],
        if kinds.is_empty() { "-".to_owned() } else { kinds.join(", ") },
        number(&report["throughput_rps"])?,
        number(&report["latency_ms"]["p50"])?,
        number(&report["latency_ms"]["p99"])?,
    ))
}
