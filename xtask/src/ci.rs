//! `cargo xtask ci`: what CI runs, in order, stopping at the first failure.

use std::process::Command;

use anyhow::Result;

use crate::{process, test_task};

/// One check: a cargo command, and what to do when it fails.
struct Step {
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    hint: &'static str,
}

const STEPS: &[Step] = &[
    Step {
        args: &["fmt", "--all", "--", "--check"],
        env: &[],
        hint: "run `cargo fmt --all` and commit the result",
    },
    // `-D warnings` after `--` rather than in RUSTFLAGS: changing RUSTFLAGS would rebuild every dependency.
    Step {
        args: &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        env: &[],
        hint: "fix the warnings above",
    },
    Step { args: &["test", "--workspace"], env: &[], hint: "see the failing tests above" },
    Step {
        args: &["doc", "--workspace", "--no-deps"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
        hint: "fix the documentation warnings above",
    },
];

/// Runs fmt, clippy, the test task and doc; returns 0, or the exit code of the first step that failed.
pub(crate) fn run() -> Result<u8> {
    for (number, step) in STEPS.iter().enumerate() {
        let number = number + 1;
        let command = format!("cargo {}", step.args.join(" "));
        eprintln!("xtask: ci [{number}/{}] {command}", STEPS.len());
        let code = if step.args[0] == "test" {
            // The test task, so the tests get their PostgreSQL.
            test_task::run(&step.args[1..].iter().map(|&arg| arg.to_owned()).collect::<Vec<_>>())?
        } else {
            let mut cmd = Command::new(crate::cargo());
            cmd.args(step.args).envs(step.env.iter().copied()).current_dir(crate::workspace_root());
            process::exit_code(process::run(&mut cmd, &command)?)
        };
        if code != 0 {
            eprintln!(
                "xtask: ci failed at [{number}/{}] `{command}` (exit {code}): {}",
                STEPS.len(),
                step.hint
            );
            return Ok(code);
        }
    }
    eprintln!("xtask: ci passed");
    Ok(0)
}
