//! No password in any output, at every log level, whatever the command and whether it succeeds.

use crate::pgconn;

/// A command's environment.
type Env<'a> = &'a [(&'a str, &'a str)];

#[test]
fn no_command_prints_the_password_even_at_trace_level() {
    let url = pgconn_tests::database_url();
    let password = pgconn_tests::settings(&[]).database.password.unwrap().expose().to_owned();
    let encoded = url.split_once("pgconn_app:").unwrap().1.rsplit_once('@').unwrap().0.to_owned();
    // The random tail of the test password, to catch it however it might be quoted or cut.
    let tail = password[password.len() - 12..].to_owned();
    let wrong = url.replacen("%40", "%41", 1);
    let bouncer = pgconn_tests::pgbouncer_url();
    let direct: &[(&str, &str)] = &[("DATABASE_URL", &url), ("RUST_LOG", "trace")];
    let through_pgbouncer: &[(&str, &str)] = &[
        ("DATABASE_URL", &url),
        ("USE_PGBOUNCER", "true"),
        ("PGBOUNCER_URL", &bouncer),
        ("RUST_LOG", "trace"),
    ];
    let wrong_password: &[(&str, &str)] = &[("DATABASE_URL", &wrong), ("RUST_LOG", "trace")];
    let invalid: &[(&str, &str)] =
        &[("DATABASE_URL", &url), ("DB_POOL_MAX_SIZE", "many"), ("RUST_LOG", "trace")];
    let auth_file = std::env::temp_dir().join(format!("pgconn-secrets-it-{}", std::process::id()));
    let auth_file = auth_file.to_str().unwrap();
    let ini_args = ["pgbouncer-ini", "--auth-file", auth_file];
    let runs: Vec<(&[&str], Env<'_>)> = vec![
        (&["config"], direct),
        (&["config", "--json"], through_pgbouncer),
        (&["config"], invalid),
        (&["load", "--requests", "50", "--json"], direct),
        (&["load", "--requests", "50"], through_pgbouncer),
        (&["load", "--requests", "5", "--json"], wrong_password),
        (&["load", "--requests", "5"], wrong_password),
        (&["monitor"], through_pgbouncer),
        (&["monitor", "--json"], through_pgbouncer),
        (&["monitor", "--format", "prometheus"], through_pgbouncer),
        (&["monitor", "--json"], wrong_password),
        (&["check"], through_pgbouncer),
        (&["check"], wrong_password),
        (&ini_args, direct),
        (&["pgbouncer-ini"], invalid),
    ];
    for (args, env) in runs {
        let run = pgconn(args, env);
        for output in [&run.stdout, &run.stderr] {
            for secret in [&password, &encoded, &tail] {
                assert!(
                    !output.contains(secret.as_str()),
                    "`pgconn {}` printed the password:\n{output}",
                    args.join(" ")
                );
            }
        }
    }
    // The one file that holds it is the userlist, and it is private.
    assert!(std::fs::read_to_string(auth_file).unwrap().contains(&password));
    std::fs::remove_file(auth_file).unwrap();
}
