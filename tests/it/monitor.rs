//! The in-process view: a report built from a live pool, as a server's `/health` and `/metrics` serve it.

use std::time::SystemTime;

use pgconn_config::Settings;
use pgconn_monitor::{Context, PoolSnapshot, Report, ServerProbe, Status, render};
use pgconn_pool::Pool;
use pgconn_tests::{Cluster, ClusterOptions, private_cluster, settings};

#[test]
fn a_report_from_a_live_pool() {
    // No idle connections kept: r2d2 would otherwise open them in the background, and the pool could
    // change between the two looks below by itself.
    let settings = settings(&[("DB_POOL_MAX_SIZE", "4"), ("DB_POOL_MIN_IDLE", "0")]);
    let pool = Pool::new(&settings).unwrap();
    for _ in 0..10 {
        pool.get().unwrap().query("SELECT 1", &[]).unwrap();
    }
    let held = pool.get().unwrap();
    let before = (pool.state(), pool.metrics());
    let snapshot = PoolSnapshot::of(&pool);
    assert_eq!((pool.state(), pool.metrics()), before, "watching the pool must not change it");
    let report = Report::new(&Context::new(&settings), None, Some(&snapshot), SystemTime::now());
    assert_eq!(report.status, Status::Healthy, "{:?}", report.alerts);
    let json: serde_json::Value = serde_json::from_str(&render::json(&report, false)).unwrap();
    assert_eq!(json["pool"]["max_size"], 4);
    assert_eq!(json["pool"]["in_use"], 1);
    assert_eq!(json["pool"]["checkouts"], 11);
    assert_eq!(json["pool"]["queries"], 10);
    let metrics = render::prometheus(&report);
    assert!(metrics.contains("pgconn_pool_checkouts_total 11\n"), "{metrics}");
    assert!(metrics.contains("pgconn_pool_checkout_wait_seconds_count 11\n"), "{metrics}");
    drop(held);

    // Both views in one report: the server's and the pool's.
    let server = ServerProbe::new(&settings).probe();
    let report = Report::new(
        &Context::new(&settings),
        Some(&server),
        Some(&PoolSnapshot::of(&pool)),
        SystemTime::now(),
    );
    assert!(report.server_connections.unwrap() >= 1 && report.pool.is_some());
}

/// `n` idle connections to `cluster`'s database as `user` (`password`), named `application`.
fn sessions(
    cluster: &Cluster,
    user: &str,
    password: &str,
    application: &str,
    n: usize,
) -> Vec<postgres::Client> {
    (0..n)
        .map(|_| {
            let mut config = postgres::Config::new();
            config
                .host("127.0.0.1")
                .port(cluster.info().port)
                .user(user)
                .password(password)
                .dbname(pgconn_tests::testkit::DATABASE)
                .application_name(application);
            config.connect(postgres::NoTls).unwrap()
        })
        .collect()
}

/// The monitor's report of `cluster`, run as the application's own role.
fn report_as_app(cluster: &Cluster) -> Report {
    let settings = Settings::from_vars([("DATABASE_URL", cluster.info().database_url())]).unwrap();
    let server = ServerProbe::new(&settings).probe();
    Report::new(&Context::new(&settings), Some(&server), None, SystemTime::now())
}

#[test]
fn every_connection_is_counted_whatever_role_the_monitor_runs_as() {
    // 20 slots, 3 reserved for superusers: 17 usable.
    let cluster = private_cluster(&ClusterOptions::default().setting("max_connections", "20"));
    let mut admin = postgres::Client::connect(&cluster.info().admin_url(), postgres::NoTls).unwrap();
    admin.batch_execute("CREATE ROLE batch LOGIN PASSWORD 'batch-pw'").unwrap();
    let superusers = sessions(&cluster, "postgres", "", "admin-console", 2);
    let others = sessions(&cluster, "batch", "batch-pw", "batch-job", 5);

    // As the application's role, without pg_monitor: the other roles' sessions are counted (from
    // pg_stat_database) though their detail is hidden.
    let report = report_as_app(&cluster);
    let total = report.server_connections.unwrap();
    // admin + 2 superusers + 5 others + the monitor itself; autovacuum workers may add a few.
    assert!((9..=12).contains(&total), "server_connections {total}: {:?}", report.by_application);
    assert_eq!(report.max_connections, Some(20));
    assert_eq!(report.usable_connections, Some(17));
    let hidden = report.connections_hidden.unwrap();
    assert!(hidden >= 8, "hidden {hidden} of {total}");
    let batch =
        report.by_application.iter().find(|g| g.application_name == "batch-job").expect("batch-job listed");
    assert_eq!((batch.user.as_str(), batch.count), ("batch", 5));
    assert_eq!(batch.states.get("unknown"), Some(&5), "{batch:?}");
    let json: serde_json::Value = serde_json::from_str(&render::json(&report, false)).unwrap();
    assert!(json["connections_hidden"].as_u64().unwrap() >= 8);
    assert_eq!(json["by_application"][0]["count"], 5, "largest first: {}", json["by_application"]);
    let text = render::text(&report, false);
    assert!(text.contains("GRANT pg_monitor"), "{text}");
    let metrics = render::prometheus(&report);
    assert!(
        metrics.contains(
            "pgconn_server_connections{application_name=\"batch-job\",user=\"batch\",state=\"unknown\"} 5"
        ),
        "{metrics}"
    );
    // Above 80% of 17 usable is 14: admin, 2 superusers, 10 batch sessions and the monitor.
    let mut more = sessions(&cluster, "batch", "batch-pw", "batch-job", 5);
    let report = report_as_app(&cluster);
    assert!(report.server_connections.unwrap() >= 14);
    assert!(report.status >= Status::Warning, "{:?}", report.alerts);
    assert!(report.alerts.iter().any(|a| a.metric == "utilization"), "{:?}", report.alerts);
    more.extend(sessions(&cluster, "batch", "batch-pw", "batch-job", 3));
    let report = report_as_app(&cluster);
    assert_eq!(report.status, Status::Critical, "{:?}", report.alerts);

    // With pg_monitor, every session is seen in detail and counted exactly.
    admin.batch_execute("GRANT pg_monitor TO pgconn_app").unwrap();
    let report = report_as_app(&cluster);
    assert_eq!(report.connections_hidden, Some(0));
    let batch = report.by_application.iter().find(|g| g.application_name == "batch-job").unwrap();
    assert_eq!(batch.count, 13);
    assert_eq!(batch.states.get("idle"), Some(&13), "{batch:?}");
    let superuser = report.by_application.iter().find(|g| g.application_name == "admin-console").unwrap();
    assert_eq!(superuser.count, 2);
    drop((superusers, others, more));
}
