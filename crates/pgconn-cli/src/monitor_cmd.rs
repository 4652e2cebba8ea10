//! `pgconn monitor` and `pgconn check`: the server's connection health, once, watched, or as a probe.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use pgconn_monitor::{Context, PgBouncerProbe, Report, ServerProbe, ServerView, Status, Window, render};

use crate::EXIT_INVALID;

/// Output formats of `pgconn monitor`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Prometheus,
}

/// `pgconn monitor` options.
#[derive(clap::Args)]
pub(crate) struct MonitorArgs {
    /// Report again every interval until Ctrl-C (or until --count reports).
    #[arg(long)]
    watch: bool,
    /// Seconds between reports with --watch.
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// Print JSON (the same as --format json).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Output format.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Seconds after which an idle connection is reported.
    #[arg(long, default_value_t = 300)]
    idle_threshold: u64,
    /// Stop after this many reports (implies --watch).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// With --watch, judge error rates and query times over this many seconds (the first report: since
    /// the server's statistics were reset).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    window: u64,
}

pub(crate) fn monitor(args: &MonitorArgs) -> anyhow::Result<ExitCode> {
    if !(args.interval.is_finite() && args.interval > 0.0 && args.interval <= 86_400.0) {
        eprintln!("--interval must be a number of seconds above 0 and at most 86400, got {}", args.interval);
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let Some(settings) = crate::settings_from_env() else { return Ok(ExitCode::from(EXIT_INVALID)) };
    let format = if args.json { Format::Json } else { args.format.unwrap_or(Format::Text) };
    let mut context = Context::new(&settings);
    context.thresholds.idle_threshold = Duration::from_secs(args.idle_threshold);
    let watch = args.watch || args.count.is_some();
    let interval = Duration::from_secs_f64(args.interval);
    let terminal = std::io::stdout().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none();
    let mut probe = ServerProbe::new(&settings);
    let mut pgbouncer = PgBouncerProbe::new(&settings);
    let mut stdout = std::io::stdout().lock();
    let mut reported = 0_u64;
    let mut window = Window::new(Duration::from_secs(args.window));
    let last_reached = loop {
        let started = Instant::now();
        let server = probe.probe();
        let reached = !matches!(server, ServerView::Unreachable { .. });
        let rates = window.observe(Instant::now(), None, Some(&server));
        let mut report = Report::windowed(&context, Some(&server), None, Some(&rates), SystemTime::now());
        if let Some(pgbouncer) = &mut pgbouncer {
            report = report.with_pgbouncer(&pgbouncer.probe(), &context.thresholds);
        }
        let text = match format {
            Format::Text => render::text(&report, color),
            Format::Json => render::json(&report, !watch) + "\n",
            Format::Prometheus => render::prometheus(&report),
        };
        if watch && format == Format::Text && terminal {
            write!(stdout, "\x1b[2J\x1b[H").map_err(crate::stdout_error)?;
        } else if reported > 0 && format != Format::Json {
            writeln!(stdout).map_err(crate::stdout_error)?;
        }
        stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(crate::stdout_error)?;
        reported += 1;
        if !watch || args.count.is_some_and(|count| reported >= count) {
            break reached;
        }
        thread::sleep(interval.saturating_sub(started.elapsed()));
    };
    Ok(if last_reached { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `pgconn check`: one probe, one line, the Nagios exit code (0 HEALTHY, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
pub(crate) fn check() -> ExitCode {
    let Some(settings) = crate::settings_from_env() else {
        let _ = crate::out("UNKNOWN: invalid configuration");
        return ExitCode::from(Status::Unknown.exit_code());
    };
    let server = ServerProbe::new(&settings).probe();
    let context = Context::new(&settings);
    let mut report = Report::new(&context, Some(&server), None, SystemTime::now());
    if let Some(mut pgbouncer) = PgBouncerProbe::new(&settings) {
        report = report.with_pgbouncer(&pgbouncer.probe(), &context.thresholds);
    }
    let _ = crate::out(summary(&report));
    ExitCode::from(report.status.exit_code())
}

/// `STATUS: used/usable usable connections (u%, max_connections m) on db; first alert (+n more)`.
fn summary(report: &Report) -> String {
    let usage = match (
        report.server_connections,
        report.usable_connections,
        report.max_connections,
        report.utilization_percent,
    ) {
        (Some(used), Some(usable), Some(max), Some(u)) => {
            format!("{used}/{usable} usable connections ({u:.1}%, max_connections {max})")
        }
        _ => "connections unknown".to_owned(),
    };
    let alerts = match report.alerts.as_slice() {
        [] => "no alerts".to_owned(),
        [only] => only.message.clone(),
        [first, rest @ ..] => format!("{} (+{} more alerts)", first.message, rest.len()),
    };
    format!("{}: {usage} on {}; {alerts}", report.status, report.database)
}
