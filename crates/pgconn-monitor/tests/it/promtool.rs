//! The alert rules shipped in `deploy/prometheus/` and the metrics pgconn exposes, checked by Prometheus's
//! own tool: `promtool check rules`, the rules' unit tests (`promtool test rules`), and `promtool check
//! metrics` on a rendered report. `.ci/run` installs promtool (Debian's `prometheus` package).
#![allow(clippy::print_stderr)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pgconn_monitor::render;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

/// `promtool` with `args` in `dir`, stdin `input`: `(success, stdout and stderr)`. Fails the test with how
/// to install promtool when it is missing; `PGCONN_SKIP_PROMTOOL=1` skips these checks, saying so.
fn promtool(dir: &Path, args: &[&str], input: Option<&str>) -> Option<(bool, String)> {
    if std::env::var_os("PGCONN_SKIP_PROMTOOL").is_some() {
        eprintln!("PGCONN_SKIP_PROMTOOL is set: NOT checking with promtool {args:?}");
        return None;
    }
    let mut child = match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run promtool ({e}): the alert rules are tested with it; install it (apt-get install \
             prometheus) and run `cargo xtask test`, or set PGCONN_SKIP_PROMTOOL=1 to skip these checks"
        ),
    };
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some((output.status.success(), text))
}

#[test]
fn the_alert_rules_are_valid_and_their_unit_tests_pass() {
    let dir = deploy_dir();
    if let Some((ok, text)) = promtool(&dir, &["check", "rules", "pgconn-rules.yml"], None) {
        assert!(ok, "promtool check rules:\n{text}");
    }
    if let Some((ok, text)) = promtool(&dir, &["test", "rules", "pgconn-rules.test.yml"], None) {
        assert!(ok, "promtool test rules:\n{text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

#[test]
fn the_exposed_metrics_follow_prometheus_conventions() {
    let report = crate::render::pool_report();
    let text = render::prometheus(&report);
    if let Some((ok, output)) = promtool(&deploy_dir(), &["check", "metrics"], Some(&text)) {
        assert!(ok, "promtool check metrics:\n{output}\n{text}");
    }
}
