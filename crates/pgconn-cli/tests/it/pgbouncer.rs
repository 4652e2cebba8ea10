//! `pgconn pgbouncer-ini`: the ini on stdout, the userlist private on disk, no password printed.

use std::os::unix::fs::PermissionsExt as _;

use crate::pgconn;

#[test]
fn renders_the_ini_and_writes_a_private_userlist() {
    let dir = std::env::temp_dir().join(format!("pgconn-cli-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let auth = dir.join("userlist.txt");
    std::fs::write(&auth, "old contents, world-readable").unwrap();
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).unwrap();
    let env = [
        ("DATABASE_URL", "postgresql://app:Sup3rS3cret@db:5432/app"),
        ("PGBOUNCER_HOST", "127.0.0.1"),
        ("PGBOUNCER_PORT", "6543"),
        ("DB_STATEMENT_TIMEOUT", "1500"),
    ];
    let run = pgconn(&["pgbouncer-ini", "--auth-file", auth.to_str().unwrap()], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("\napp = host=db port=5432 dbname=app connect_query='SET statement_timeout = 1500'\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("\nlisten_addr = 127.0.0.1\nlisten_port = 6543\n"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("\nauth_file = {}\n", auth.display())), "{}", run.stdout);
    assert!(!run.stdout.contains("Sup3rS3cret") && !run.stderr.contains("Sup3rS3cret"));
    let mode = std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&auth).unwrap(), "\"app\" \"Sup3rS3cret\"\n");
    std::fs::remove_dir_all(&dir).unwrap();

    let run = pgconn(&["pgbouncer-ini"], &[("DB_NAME", "app"), ("DB_PORT", "none")]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
}
