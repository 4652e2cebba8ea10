//! The contenders run and their results read into the types of `results.rs`: `pgconn load --json` through
//! typed records, `pgbench`'s summary; and the machine and the time of the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use pgconn_testkit::{PgBouncerInfo, signal};

use super::results::{Cell, Machine, PgbenchCell};
use crate::process;
use crate::reports::{self, LoadOutput};

/// A contender: its name, extra environment, extra `pgconn load` arguments, and whether it goes through
/// PgBouncer.
pub(super) type Contender<'a> = (&'a str, Vec<(&'a str, String)>, Vec<&'a str>, bool);

pub(super) struct Bench {
    pub(super) pgconn: PathBuf,
    pub(super) database_url: String,
    pub(super) bouncer: PgBouncerInfo,
    pub(super) bindir: PathBuf,
    pub(super) password: String,
    pub(super) port: u16,
    pub(super) script: PathBuf,
    pub(super) commands: Vec<String>,
}

impl Bench {
    /// Runs `pgconn load ARGS --json` with the database's URL and `env`.
    pub(super) fn load(
        &mut self,
        env: &[(&str, String)],
        args: &[&str],
        through_pgbouncer: bool,
    ) -> Result<Cell> {
        let bouncer = through_pgbouncer.then(|| (self.bouncer.clone(), "USE_PGBOUNCER=true".to_owned()));
        self.load_via(bouncer.as_ref().map(|(info, shown)| (info, shown.as_str())), env, args)
    }

    /// [`Bench::load`] through `bouncer` (`None`: straight to PostgreSQL), shown in the command as the
    /// text beside it.
    pub(super) fn load_via(
        &mut self,
        bouncer: Option<(&PgBouncerInfo, &str)>,
        env: &[(&str, String)],
        args: &[&str],
    ) -> Result<Cell> {
        if process::interrupted() {
            return Err(pgconn_testkit::Interrupted.into());
        }
        let mut cmd = Command::new(&self.pgconn);
        cmd.arg("load").args(args).arg("--json").env_clear().env("DATABASE_URL", &self.database_url);
        let mut shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Some((bouncer, label)) = bouncer {
            cmd.env("USE_PGBOUNCER", "true").env("PGBOUNCER_URL", bouncer.database_url());
            shown.insert(0, label.to_owned());
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
        Ok(Cell {
            rps: report.throughput_rps,
            p50: report.latency_ms.p50,
            p99: report.latency_ms.p99,
            mean: report.latency_ms.mean,
            requests: report.requests,
            errors: report.errors,
            kinds: report.kinds_seen(),
            size: u64::from(report.pool.size),
            process: report.process,
        })
    }

    /// Runs `pgbench -n -M simple -f SELECT1 -c C -j J -T S [extra]` against `port`.
    pub(super) fn pgbench(
        &mut self,
        port: u16,
        clients: u32,
        seconds: u32,
        extra: &[&str],
    ) -> Result<PgbenchCell> {
        let script = self.script.clone();
        self.pgbench_with(port, clients, clients.clamp(1, 2), seconds, "simple", &script, extra)
    }

    /// Runs `pgbench -n -M MODE -c C -j J -T S -f SCRIPT [extra]` against `port`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pgbench_with(
        &mut self,
        port: u16,
        clients: u32,
        jobs: u32,
        seconds: u32,
        mode: &str,
        script: &Path,
        extra: &[&str],
    ) -> Result<PgbenchCell> {
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
            None
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stderr
                .lines()
                .find(|l| l.contains("FATAL") || l.contains("error"))
                .or_else(|| stderr.lines().rfind(|l| !l.trim().is_empty()))
                .or_else(|| text.lines().rfind(|l| !l.trim().is_empty()))
                .unwrap_or("no output");
            Some(format!("{} ({})", line.trim(), output.status))
        };
        Ok(PgbenchCell { tps, latency_ms: latency, failed })
    }
}

/// How `Bench::counted` counts a run's work.
#[derive(Clone, Copy)]
pub(super) enum Counter {
    /// User-space instructions and first-level instruction-cache misses (the host's L1i simulated) inside
    /// the load's request loop (`--toggle-collect=`[`REQUEST_LOOP`]): `valgrind --tool=callgrind
    /// --cache-sim=yes`. Counted over the whole process, a connection opened by one run and not the other
    /// (SCRAM's 4096 rounds of SHA-256 on one of the pool's threads) moved the difference between a short
    /// and a long run by thousands of instructions a request. (cachegrind counts about 1,500 more instructions a
    /// request for the pooled client than callgrind does, and the same for a dedicated one; callgrind
    /// agrees with itself with and without the cache simulation.)
    Cache,
    /// System calls of every thread: `strace -f -c`.
    Syscalls,
    /// The code every request runs, as distinct 64-byte lines (the unit of the instruction cache):
    /// callgrind's count of each instruction, inside the load's request loop only
    /// (`--toggle-collect=`[`REQUEST_LOOP`]), of the instructions run at least once per two requests.
    /// Unlike the cache simulation's misses, which move with where the linker put each function (a change
    /// that removed 113 instructions a request raised them from 177 to 216), this is the size of what
    /// has to fit.
    Footprint,
}

/// The function of `pgconn load` that runs the requests: [`Counter::Footprint`] counts inside it.
const REQUEST_LOOP: &str = "pgconn::load_cmd::request_loop*";

/// What a counted run found for the whole process, start-up included: the counter's fields, the others 0.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) instructions: u64,
    pub(super) i1_misses: u64,
    pub(super) syscalls: u64,
    pub(super) hot_lines: u64,
}

impl Bench {
    /// Runs `pgconn load --clients CLIENTS --requests N ARGS --json` under valgrind or strace and returns
    /// what it counted for the whole process (start-up included). Fails when a request failed.
    pub(super) fn counted(
        &mut self,
        counter: Counter,
        env: &[(&str, String)],
        args: &[&str],
        clients: u32,
        requests: u64,
    ) -> Result<Counts> {
        if process::interrupted() {
            return Err(pgconn_testkit::Interrupted.into());
        }
        let out = std::env::temp_dir().join(format!("pgconn-bench-count-{}", std::process::id()));
        let (tool, tool_args): (&str, Vec<String>) = match counter {
            Counter::Cache => (
                "valgrind",
                vec![
                    "--tool=callgrind".into(),
                    "--cache-sim=yes".into(),
                    format!("--toggle-collect={REQUEST_LOOP}"),
                    "--callgrind-out-file=/dev/null".into(),
                ],
            ),
            Counter::Syscalls => {
                ("strace", vec!["-f".into(), "-c".into(), "-o".into(), out.display().to_string()])
            }
            Counter::Footprint => (
                "valgrind",
                vec![
                    "--tool=callgrind".into(),
                    "--dump-instr=yes".into(),
                    "--compress-pos=no".into(),
                    "--compress-strings=no".into(),
                    format!("--toggle-collect={REQUEST_LOOP}"),
                    format!("--callgrind-out-file={}", out.display()),
                ],
            ),
        };
        let (clients, requests) = (clients.to_string(), requests.to_string());
        let mut load = vec!["load", "--clients", &clients, "--requests", &requests];
        load.extend_from_slice(args);
        let mut cmd = Command::new(tool);
        cmd.args(&tool_args)
            .arg(&self.pgconn)
            .args(&load)
            .arg("--json")
            .env_clear()
            .env("DATABASE_URL", &self.database_url)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let command = format!("{} {tool} {} pgconn {}", shown.join(" "), tool_args.join(" "), load.join(" "))
            .replace(&out.display().to_string(), "FILE")
            .trim()
            .to_owned();
        eprintln!("xtask: bench: {command}");
        self.commands.push(command.clone());
        let output = cmd.output().with_context(|| format!("cannot run {tool}"));
        // strace's table or callgrind's profile, read and removed whatever happened.
        let table = match counter {
            Counter::Cache => None,
            Counter::Syscalls | Counter::Footprint => {
                let table =
                    std::fs::read_to_string(&out).with_context(|| format!("cannot read {}", out.display()));
                let _ = std::fs::remove_file(&out);
                Some(table)
            }
        };
        let output = output?;
        let report = match reports::parse::<LoadOutput>(&String::from_utf8_lossy(&output.stdout), &command)? {
            LoadOutput::Report(report) => report,
            LoadOutput::Failed { error } => anyhow::bail!("`{command}`: {} ({})", error.kind, error.message),
        };
        anyhow::ensure!(
            report.errors == 0,
            "`{command}`: {} requests failed ({})",
            report.errors,
            report.kinds_seen()
        );
        let text = match table {
            Some(table) => table?,
            // valgrind's summary on stderr.
            None => String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let counts = match counter {
            Counter::Footprint => Counts {
                hot_lines: hot_lines(&text, requests.parse().unwrap_or(u64::MAX)),
                ..Counts::default()
            },
            _ => parse_count(counter, &text)
                .with_context(|| format!("`{command}` printed no count:\n{text}"))?,
        };
        // Both valgrind counters count inside the request loop only: nothing counted means it was not entered.
        let in_loop = match counter {
            Counter::Cache => Some(counts.instructions),
            Counter::Footprint => Some(counts.hot_lines),
            Counter::Syscalls => None,
        };
        anyhow::ensure!(
            in_loop != Some(0),
            "`{command}` counted nothing inside {REQUEST_LOOP}: was the function renamed or inlined?"
        );
        Ok(counts)
    }
}

/// The counts in valgrind's summary (`I refs:` and `I1 misses:`, with thousands separators) or in
/// strace's table (the `total` line's calls).
fn parse_count(counter: Counter, text: &str) -> Option<Counts> {
    match counter {
        Counter::Cache => {
            // `==PID== I   refs:      552,121,510`
            let field = |name: &str| -> Option<u64> {
                text.lines().find_map(|line| {
                    let rest = line.split_once("== ").map_or(line, |(_, rest)| rest);
                    let (key, value) = rest.split_once(':')?;
                    let key = key.split_whitespace().collect::<Vec<_>>().join(" ");
                    if key != name {
                        return None;
                    }
                    value.split_whitespace().next()?.replace(',', "").parse().ok()
                })
            };
            Some(Counts {
                instructions: field("I refs")?,
                i1_misses: field("I1 misses")?,
                ..Counts::default()
            })
        }
        // Needs the number of requests: `hot_lines`.
        Counter::Footprint => None,
        Counter::Syscalls => {
            let line = text.lines().rfind(|l| l.trim_end().ends_with(" total"))?;
            Some(Counts { syscalls: line.split_whitespace().nth(3)?.parse().ok()?, ..Counts::default() })
        }
    }
}

/// In a callgrind profile written with `--dump-instr=yes --compress-pos=no` (each cost line `ADDRESS LINE
/// COUNT`), the distinct 64-byte lines holding instructions run at least `requests / 2` times. The line
/// after a `calls=` line is the call's inclusive cost, not the call instruction's own count: skipped.
fn hot_lines(profile: &str, requests: u64) -> u64 {
    let mut counts: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut after_call = false;
    for line in profile.lines() {
        if line.starts_with("calls=") {
            after_call = true;
            continue;
        }
        if std::mem::take(&mut after_call) {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(address), Some(_line), Some(count)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (Some(address), Ok(count)) =
            (address.strip_prefix("0x").and_then(|a| u64::from_str_radix(a, 16).ok()), count.parse::<u64>())
        else {
            continue;
        };
        *counts.entry(address).or_default() += count;
    }
    let threshold = requests.div_ceil(2).max(1);
    let lines: std::collections::HashSet<u64> = counts
        .into_iter()
        .filter(|&(_, count)| count >= threshold)
        .map(|(address, _)| address / 64)
        .collect();
    lines.len() as u64
}

pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() { 0.0 } else { values[values.len() / 2] }
}

/// The lowest and the highest of `values` ((0, 0) for none).
pub(super) fn range(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() { (0.0, 0.0) } else { (low, high) }
}

/// The CPU, memory, kernel and server versions of this machine.
pub(super) fn machine() -> Machine {
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
    Machine {
        cpus,
        model: model.to_owned(),
        mem_kb,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        postgres: version(&pgconn_testkit::find_bindir().map(|d| d.join("postgres")).unwrap_or_default()),
        pgbouncer: version(&pgconn_testkit::find_pgbouncer().unwrap_or_default()),
    }
}

/// Now, `YYYY-MM-DD HH:MM UTC` (empty if `date` cannot run).
pub(super) fn now_utc() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{Counter, hot_lines, parse_count};

    #[test]
    fn hot_lines_count_each_cache_line_of_code_run_every_request_once() {
        // 10 requests: 0x1000 and 0x1010 share a line (run 10 and 5 times), 0x1040 is another line run
        // 20 times (two cost lines), 0x2000 ran 4 times (not hot), and the line after `calls=` is the call's
        // inclusive cost (10000), which does not make 0x3000 hot.
        let profile = "events: Ir\nfn=(1) f\n0x1000 12 10\n0x1010 13 5\n0x1040 14 10\n0x2000 15 4\ncalls=10 0x4000 3\n0x3000 16 10000\n0x3000 16 1\nfn=(2) g\n0x1040 14 10\n";
        assert_eq!(hot_lines(profile, 10), 2);
        assert_eq!(hot_lines(profile, 40), 1, "only 0x1040 ran 20 times");
        assert_eq!(hot_lines("events: Ir\n", 10), 0);
    }

    #[test]
    fn counts_are_read_from_valgrind_and_strace() {
        let valgrind = "==17764== \n==17764== I   refs:      552,121,510\n==17764== I1  misses:      4,365,936\n==17764== LLi misses:        7,105\n==17764== I1  miss rate:        0.79%\n";
        let counts = parse_count(Counter::Cache, valgrind).expect("both counts");
        assert_eq!((counts.instructions, counts.i1_misses), (552_121_510, 4_365_936));
        let strace = "% time     seconds  usecs/call     calls    errors syscall\n------ ----------- ----------- --------- --------- ----------------\n 60.00    0.300000           7     40020           epoll_wait\n 40.00    0.200000          10     20115        12 recvfrom\n------ ----------- ----------- --------- --------- ----------------\n100.00    0.500000           8     80747        12 total\n";
        assert_eq!(parse_count(Counter::Syscalls, strace).map(|c| c.syscalls), Some(80747));
        let no_errors = "100.00    0.500000           8     80747           total\n";
        assert_eq!(parse_count(Counter::Syscalls, no_errors).map(|c| c.syscalls), Some(80747));
        assert_eq!(parse_count(Counter::Cache, "==1== I   refs:      5\n"), None, "both or nothing");
    }
}
