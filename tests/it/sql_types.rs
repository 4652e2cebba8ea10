//! Every parameter type of the query API (`SqlType`), sent to the server and read back: its PostgreSQL
//! type is the one `SqlType` names, and the value survives the round trip, as itself, as NULL (`None`),
//! in an array (`Vec<T>`, `&[T]`), and as a prepared statement once the statement cache prepared it.

use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use pgconn_pool::{PREPARE_THRESHOLD, PooledConn, SqlType};
use pgconn_tests::settings;
use postgres::types::FromSql;

/// `SELECT $1, pg_typeof($1)::text` with `value`, more times than the statement cache waits before it
/// prepares: unnamed first, then prepared, each answer checked.
#[track_caller]
#[allow(clippy::needless_pass_by_value)] // each value is built for this call
fn round_trip<T>(conn: &mut PooledConn, value: T, pg_type: &str)
where
    T: SqlType + for<'a> FromSql<'a> + PartialEq + Debug,
{
    for _ in 0..=PREPARE_THRESHOLD {
        let row = conn.query_one("SELECT $1, pg_typeof($1)::text", &[&value]).unwrap();
        assert_eq!(row.get::<_, String>(1), pg_type, "{value:?}");
        assert_eq!(row.get::<_, T>(0), value, "{pg_type}");
    }
}

#[test]
fn every_parameter_type_round_trips_with_its_postgresql_type() {
    let pool = pgconn_pool::Pool::new(&settings(&[("DB_POOL_MAX_SIZE", "1")])).unwrap();
    let mut conn = pool.get().unwrap();
    round_trip(&mut conn, true, "boolean");
    round_trip(&mut conn, 7_i16, "smallint");
    round_trip(&mut conn, -7_i32, "integer");
    round_trip(&mut conn, 1_i64 << 40, "bigint");
    round_trip(&mut conn, 2.5_f64, "double precision");
    round_trip(&mut conn, "text".to_owned(), "text");
    round_trip(&mut conn, vec![0_u8, 255], "bytea");
    let now = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    round_trip(&mut conn, now, "timestamp with time zone");

    round_trip(&mut conn, Some(3_i32), "integer");
    round_trip(&mut conn, None::<i32>, "integer");
    round_trip(&mut conn, None::<String>, "text");

    round_trip(&mut conn, vec![1_i32, 2, 3], "integer[]");
    round_trip(&mut conn, vec!["a".to_owned(), "b c".to_owned()], "text[]");
    round_trip(&mut conn, vec![vec![1_u8], vec![]], "bytea[]");
    round_trip(&mut conn, Vec::<i64>::new(), "bigint[]");
    let slice: &[f64] = &[0.5, 1.5];
    let row = conn.query_one("SELECT $1, pg_typeof($1)::text", &[&slice]).unwrap();
    assert_eq!(
        (row.get::<_, Vec<f64>>(0), row.get::<_, String>(1)),
        (slice.to_vec(), "double precision[]".into())
    );

    // Behind features.
    let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    round_trip(&mut conn, id, "uuid");
    round_trip(&mut conn, vec![id, uuid::Uuid::nil()], "uuid[]");
    let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
    round_trip(&mut conn, date, "date");
    let stamp = date.and_hms_micro_opt(3, 4, 5, 678_901).unwrap();
    round_trip(&mut conn, stamp, "timestamp without time zone");
    round_trip(&mut conn, stamp.and_utc(), "timestamp with time zone");
    round_trip(&mut conn, stamp.time(), "time without time zone");
    let offset = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    round_trip(&mut conn, offset, "timestamp with time zone");
    round_trip(&mut conn, offset.date(), "date");
    round_trip(
        &mut conn,
        time::PrimitiveDateTime::new(offset.date(), offset.time()),
        "timestamp without time zone",
    );
    round_trip(&mut conn, offset.time(), "time without time zone");
    let document = serde_json::json!({"a": [1, 2, {"b": null}], "c": "d"});
    round_trip(&mut conn, document.clone(), "jsonb");
    round_trip(&mut conn, Some(document), "jsonb");
}
