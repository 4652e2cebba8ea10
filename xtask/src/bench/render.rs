//! What `docs/benchmarks.md` shows besides the tables: the machine, the time, the plot.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::measure::Cell;

pub(super) fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "**not met**" }
}

pub(super) fn humantime_now() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

#[allow(clippy::cast_precision_loss)]
pub(super) fn machine() -> String {
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
pub(super) fn plot(levels: &[u32], names: &[&str], grid: &[Vec<Cell>]) -> String {
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
