//! `deploy/`: the Docker Compose and Kubernetes examples use only variables pgconn knows, give pgconn a
//! valid configuration, and the checked-in `pgbouncer.ini` is what `pgconn pgbouncer-ini` renders. (No
//! Docker or Kubernetes runs here; this is what can be checked without them.) And the user guide, which
//! points at them, has a row for every variable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pgconn_config::{DEFAULT_AUTH_FILE, VARIABLES};

use crate::pgconn;

/// Variables the deploy files may use besides pgconn's own ([`VARIABLES`]).
const ALLOWED: &[&str] = &[
    // The example server's listening address (crates/pgconn-example, the binary thread_per_request).
    "PGCONN_LISTEN",
    // The official postgres image's: the role, its password and the database it creates.
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    // apt-get's, in the Dockerfile.
    "DEBIAN_FRONTEND",
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { found.extend(files(&path)) } else { found.push(path) }
    }
    found.sort();
    found
}

/// The words in `UPPER_SNAKE_CASE` (a capital letter first, at least one `_`): in these files, environment
/// variables, wherever they appear (keys, `KEY=value`, commands, comments).
fn variable_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| {
            word.starts_with(|c: char| c.is_ascii_uppercase())
                && word.contains('_')
                && word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_variable_in_deploy_is_one_pgconn_or_its_images_know() {
    let mut seen = BTreeSet::new();
    // Not pgbouncer.ini: pgconn's own rendering, checked byte for byte below, and PgBouncer reads no
    // environment.
    for path in files(&deploy_dir()).into_iter().filter(|path| path.extension().is_none_or(|e| e != "ini")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for name in variable_names(&text) {
            assert!(
                VARIABLES.contains(&name.as_str()) || ALLOWED.contains(&name.as_str()),
                "deploy/{} uses {name}, which is neither a pgconn variable (docs/configuration.md) nor on \
                 the allow-list of this test",
                path.strip_prefix(deploy_dir()).unwrap_or(&path).display()
            );
            seen.insert(name);
        }
    }
    // The test reads what it means to: the files name the variables they set.
    for name in ["DATABASE_URL", "USE_PGBOUNCER", "PGBOUNCER_HOST", "PGCONN_LISTEN", "POSTGRES_PASSWORD"] {
        assert!(seen.contains(name), "no deploy file names {name}: {seen:?}");
    }
}

/// `KEY=value` lines of an env file, without comments and blank lines.
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not KEY=value: {line}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// The `KEY: "value"` entries of the map under `section:` (`data:`, `stringData:`) in a Kubernetes
/// manifest written as deploy/kubernetes writes them: one entry a line, values in double quotes.
fn manifest_map(text: &str, section: &str) -> Vec<(String, String)> {
    let lines = text.lines().skip_while(|line| line.trim_end() != format!("{section}:")).skip(1);
    let mut entries = Vec::new();
    for line in lines.take_while(|line| line.starts_with("  ")) {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(": ").unwrap_or_else(|| panic!("not `KEY: \"value\"`: {line}"));
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
        entries.push((key.to_owned(), value.unwrap_or_else(|| panic!("unquoted value: {line}")).to_owned()));
    }
    assert!(!entries.is_empty(), "no `{section}:` entries");
    entries
}

/// `pgconn config --json` with exactly `env`: it must accept it; returns the JSON.
#[track_caller]
fn check_valid(env: &[(String, String)], what: &str) -> serde_json::Value {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = pgconn(&["config", "--json"], &env);
    assert_eq!(run.code, 0, "{what} is not a valid pgconn configuration: {}", run.stderr);
    assert!(!run.stderr.contains("warn"), "{what}: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn the_compose_environment_routes_the_pool_through_the_pgbouncer_service() {
    let config = check_valid(&env_file(&read("compose.env")), "deploy/compose.env");
    assert_eq!(config["strategy"], "pgbouncer");
    assert_eq!(config["target"]["host"], "pgbouncer");
    assert_eq!(config["database"]["host"], "postgres");
}

#[test]
fn the_kubernetes_environment_routes_the_pool_through_the_sidecar() {
    let mut env = manifest_map(&read("kubernetes/configmap.yaml"), "data");
    env.extend(manifest_map(&read("kubernetes/secret.yaml"), "stringData"));
    let config = check_valid(&env, "deploy/kubernetes's ConfigMap and Secret");
    assert_eq!(config["strategy"], "pgbouncer");
    assert_eq!(config["target"]["host"], "127.0.0.1");
    let secret = manifest_map(&read("kubernetes/secret.yaml"), "stringData");
    assert_eq!(secret.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["DATABASE_URL"], "the Secret");
    let configmap = manifest_map(&read("kubernetes/configmap.yaml"), "data");
    assert!(
        configmap.iter().all(|(k, _)| k != "DATABASE_URL" && k != "DB_PASSWORD"),
        "no password in the ConfigMap"
    );
}

#[test]
fn the_checked_in_pgbouncer_ini_is_what_pgconn_renders_for_compose() {
    let env = env_file(&read("compose.env"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = pgconn(&["pgbouncer-ini"], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout == read("pgbouncer/pgbouncer.ini"),
        "deploy/pgbouncer/pgbouncer.ini differs from what `pgconn pgbouncer-ini` renders for \
         deploy/compose.env; render it again:\n  cargo build -p pgconn-cli && env -i $(grep -v '^#' \
         deploy/compose.env | xargs) target/debug/pgconn pgbouncer-ini > deploy/pgbouncer/pgbouncer.ini\n\
         rendered:\n{}",
        run.stdout
    );
    // Compose and Kubernetes render it at start with the userlist where this ini expects it.
    let render =
        format!("pgconn pgbouncer-ini --auth-file {DEFAULT_AUTH_FILE} > /etc/pgbouncer/pgbouncer.ini");
    for file in ["docker-compose.yml", "kubernetes/deployment.yaml"] {
        assert!(read(file).contains(&render), "{file} does not run `{render}`");
    }
}

#[test]
fn the_user_guide_documents_every_variable() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/connection-pooling.md"),
    )
    .unwrap();
    for name in VARIABLES {
        assert!(
            guide.contains(&format!("\n| `{name}` |")),
            "docs/connection-pooling.md has no table row for {name}"
        );
    }
}
