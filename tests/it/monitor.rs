//! The in-process view: a report built from a live pool, as a server's `/health` and `/metrics` serve it.

use std::time::SystemTime;

use pgconn_monitor::{Context, PoolSnapshot, Report, ServerProbe, Status, render};
use pgconn_pool::Pool;
use pgconn_tests::settings;

#[test]
fn a_report_from_a_live_pool() {
    let settings = settings(&[("DB_POOL_MAX_SIZE", "4")]);
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
