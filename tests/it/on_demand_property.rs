//! The property of on-demand views: for random events (with NULLs), random request
//! values (with NULLs) and a random time, the online lookup at a fixed clock equals the
//! export of the same keys, time and request values — on the embedded store and on Redis.
//! The view mixes arithmetic, NULL handling, CASE, strings and both kinds of inputs (a
//! row view with a TTL and an aggregation view).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::DateTime;
use proptest::prelude::*;

use crate::redis_server::RedisServer;

const MINUTE: i64 = 60_000_000;
const BASE: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

#[derive(Debug, Clone)]
struct Event {
    key: i64,
    minute: i64,
    amount: Option<i64>,
    price: Option<f64>,
    city: Option<&'static str>,
}

/// One lookup: a key and request values.
#[derive(Debug, Clone)]
struct Request {
    key: i64,
    qty: Option<i64>,
    rate: Option<f64>,
    tag: Option<&'static str>,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn write_events(path: &Path, events: &[Event]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("amount", DataType::Int64, true),
        Field::new("price", DataType::Float64, true),
        Field::new("city", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.key))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                events.iter().map(|e| BASE + e.minute * MINUTE),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter(events.iter().map(|e| e.amount))),
        Arc::new(Float64Array::from_iter(events.iter().map(|e| e.price))),
        Arc::new(StringArray::from_iter(events.iter().map(|e| e.city))),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

const DEFINITIONS: &str = "\
CREATE ENTITY user (user_id BIGINT);
CREATE SOURCE events FROM 'data/events.parquet' TIMESTAMP event_timestamp;
CREATE FEATURE VIEW profile ENTITY user TTL '6 hours'
  AS SELECT user_id, event_timestamp, amount, price, city FROM events;
CREATE FEATURE VIEW spend ENTITY user WINDOWS ('1 hour', '1 day')
  AS SELECT user_id, COUNT(*) AS n, SUM(amount) AS total, AVG(price) AS avg_price FROM events GROUP BY user_id;
CREATE REQUEST SOURCE req (qty BIGINT, rate DOUBLE, tag VARCHAR);
CREATE FEATURE VIEW od ON DEMAND AS
SELECT req.qty * profile.price AS cost,
       req.rate / NULLIF(spend.avg_price_1d, 0) AS rate_vs_avg,
       COALESCE(spend.total_1h, 0) + COALESCE(req.qty, 0) AS total_plus_qty,
       CASE WHEN spend.n_1d > 2 THEN upper(COALESCE(req.tag, profile.city)) ELSE lower(profile.city) END AS label,
       profile.amount IS NULL OR req.qty > profile.amount AS above,
       concat(req.tag, '-', profile.city) AS tag_city
FROM req, profile, spend;
";

fn events() -> impl Strategy<Value = Vec<Event>> {
    let cities = prop_oneof![Just(None), Just(Some("Berlin")), Just(Some("oslo"))];
    prop::collection::vec(
        (
            0i64..4,
            0i64..(2 * 24 * 60),
            prop::option::of(-5i64..50),
            prop::option::of(-2.0f64..20.0),
            cities,
        )
            .prop_map(|(key, minute, amount, price, city)| Event {
                key,
                minute,
                amount,
                price,
                city,
            }),
        1..40,
    )
}

fn requests() -> impl Strategy<Value = Vec<Request>> {
    let tags = prop_oneof![Just(None), Just(Some("vip")), Just(Some("New"))];
    prop::collection::vec(
        (
            0i64..5,
            prop::option::of(-3i64..10),
            prop::option::of(-1.0f64..5.0),
            tags,
        )
            .prop_map(|(key, qty, rate, tag)| Request {
                key,
                qty,
                rate,
                tag,
            }),
        1..8,
    )
}

/// The spine (and the lookup's entity rows): keys, the time, request values.
fn spine(requests: &[Request], at: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("qty", DataType::Int64, true),
        Field::new("rate", DataType::Float64, true),
        Field::new("tag", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(requests.iter().map(|r| r.key))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(requests.iter().map(|_| at))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter(requests.iter().map(|r| r.qty))),
        Arc::new(Float64Array::from_iter(requests.iter().map(|r| r.rate))),
        Arc::new(StringArray::from_iter(requests.iter().map(|r| r.tag))),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

async fn check(
    events: Vec<Event>,
    requests: Vec<Request>,
    minute: i64,
    online: &str,
    project: &str,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("features")).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("quiver.toml"),
        format!("project = \"{project}\"\n{online}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("features/defs.sql"), DEFINITIONS).unwrap();
    write_events(&dir.path().join("data/events.parquet"), &events);
    let at = BASE + minute * MINUTE + 7; // never exactly on the grid
    let clock = DateTime::from_timestamp_micros(at).unwrap();
    let store = crate::support::materialized_at(dir.path(), at).await;
    let spine = spine(&requests, at);
    let export = store
        .export()
        .with_spine(spine.clone())
        .with_features(["od:*"])
        .execute()
        .await
        .unwrap();
    let entities = spine.project(&[0, 2, 3, 4]).unwrap();
    let features = ["od:*".to_string()];
    let line =
        crate::support::online_equals_export(&store, &export.batch, clock, &entities, &features)
            .await
            .unwrap();
    prop_assert!(line.starts_with("online == export"), "{line}");
    Ok(())
}

fn redis() -> &'static RedisServer {
    static SERVER: std::sync::OnceLock<RedisServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn on_demand_online_equals_export_embedded(events in events(), requests in requests(), minute in 0i64..(3 * 24 * 60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check(events, requests, minute, "", "odparity"))?;
    }

    #[test]
    fn on_demand_online_equals_export_redis(events in events(), requests in requests(), minute in 0i64..(3 * 24 * 60), case in any::<u64>()) {
        // A project per case: keys of earlier cases stay in the shared Redis.
        let online = format!("[online]\ntype = \"redis\"\nurl = \"{}\"\n", redis().url());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check(events, requests, minute, &online, &format!("od{case}")))?;
    }
}
