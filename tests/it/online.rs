//! The online store through the facade: parity with export (property test, embedded
//! Redis and Redis Cluster), and the fault behaviour of `materialize` when Redis goes away.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use quiver::clock::FixedClock;
use quiver::{FeatureStatus, FeatureStore, MaterializeOptions, OnlineFeatures};

use crate::redis_server::RedisServer;

const SECOND: i64 = 1_000_000;
const BASE: i64 = 1_767_225_600 * SECOND; // 2026-01-01T00:00:00Z

#[derive(Debug, Clone)]
struct Row {
    key: i64,
    second: i64,
    created: i64,
    value: Option<f64>,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn write_rows(path: &Path, rows: &[Row]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("created", ts_type(), false),
        Field::new("rate", DataType::Float64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.key).collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(
                rows.iter()
                    .map(|r| BASE + r.second * SECOND)
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(
                rows.iter()
                    .map(|r| BASE + r.created * SECOND)
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.value).collect::<Vec<_>>(),
        )),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A repository with one view over `rows`, online in the given store.
fn repo(rows: &[Row], ttl: Option<u32>, online: &str, project: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("features")).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("quiver.toml"),
        format!("project = \"{project}\"\n{online}"),
    )
    .unwrap();
    let ttl = ttl.map_or(String::new(), |s| format!("TTL '{s} seconds'"));
    std::fs::write(
        dir.path().join("features/defs.sql"),
        format!(
            "CREATE ENTITY driver (driver_id BIGINT);\n\
             CREATE SOURCE stats FROM 'data/stats.parquet' TIMESTAMP event_timestamp CREATED created;\n\
             CREATE FEATURE VIEW v ENTITY driver {ttl} AS SELECT * FROM stats;\n"
        ),
    )
    .unwrap();
    write_rows(&dir.path().join("data/stats.parquet"), rows);
    dir
}

/// After materializing up to `t`, the online value of every key equals what export
/// returns for (key, t).
async fn check_parity(
    rows: Vec<Row>,
    ttl: Option<u32>,
    t_second: i64,
    online: &str,
    project: &str,
) -> Result<(), TestCaseError> {
    let dir = repo(&rows, ttl, online, project);
    let t = BASE + t_second * SECOND + SECOND / 2; // never equal to an event time
    let at = DateTime::<Utc>::from_timestamp_micros(t).unwrap();
    let store = FeatureStore::open(dir.path())
        .unwrap()
        .with_clock(Arc::new(FixedClock(at)));
    store.apply().await.unwrap();
    store
        .materialize(MaterializeOptions::default())
        .await
        .unwrap();

    let keys: Vec<i64> = (0..5).collect();
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(keys.clone())),
            Arc::new(TimestampMicrosecondArray::from(vec![t; keys.len()]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    let export = store
        .export()
        .with_spine(spine)
        .with_features(["v:rate"])
        .execute()
        .await
        .unwrap();
    let exported = export.batch.column_by_name("rate").unwrap();
    let response = lookup_rate(&store, &keys).await.unwrap();
    let online = &response.columns[0];
    for (row, key) in keys.iter().enumerate() {
        let offline_value = if exported.data_type() == &DataType::Null || exported.is_null(row) {
            None
        } else {
            Some(exported.as_primitive::<Float64Type>().value(row))
        };
        let online_value = match online.statuses[row] {
            FeatureStatus::Present => Some(online.values.as_primitive::<Float64Type>().value(row)),
            _ => None,
        };
        prop_assert_eq!(
            offline_value,
            online_value,
            "key {} at t={}: status {:?}",
            key,
            t_second,
            online.statuses[row]
        );
    }
    Ok(())
}

/// `v:rate` of the drivers `keys`, looked up through the facade.
async fn lookup_rate(store: &FeatureStore, keys: &[i64]) -> quiver::Result<OnlineFeatures> {
    let plan = store
        .lookup_plan(&["v:rate".to_string()], None, false)
        .await?;
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "driver_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(keys.to_vec()))],
    )
    .expect("one Int64 column makes a batch");
    store.get_online_features(&plan, &entities).await
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    let row = (
        0i64..5,
        0i64..40,
        0i64..3,
        prop::option::weighted(0.85, 0u8..100),
    )
        .prop_map(|(key, second, created, value)| Row {
            key,
            second,
            created,
            value: value.map(f64::from),
        });
    prop::collection::vec(row, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn online_equals_export_embedded(rows in rows(), ttl in prop::option::of(1u32..15), t in 0i64..45) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check_parity(rows, ttl, t, "", "parity"))?;
    }
}

fn redis() -> &'static RedisServer {
    static SERVER: std::sync::OnceLock<RedisServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn online_equals_export_redis(rows in rows(), ttl in prop::option::of(1u32..15), t in 0i64..45, case in any::<u64>()) {
        let online = format!("[online]\ntype = \"redis\"\nurl = \"{}\"\n", redis().url());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        // A project per case keeps cases apart in the shared server.
        runtime.block_on(check_parity(rows, ttl, t, &online, &format!("p{case}")))?;
    }
}

/// The same property on a private 3-primary Redis Cluster (started here and stopped at
/// the end, so the cases run with a test runner rather than `proptest!`).
#[test]
fn online_equals_export_redis_cluster() {
    let cluster = crate::redis_cluster::RedisCluster::start(3, 0);
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
    let online = format!(
        "[online]\ntype = \"redis-cluster\"\nurls = [{}]\n",
        seeds.join(", ")
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(16));
    let cases = (rows(), prop::option::of(1u32..15), 0i64..45, any::<u64>());
    runner
        .run(&cases, |(rows, ttl, t, case)| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(check_parity(rows, ttl, t, &online, &format!("c{case}")))
        })
        .unwrap();
}

fn quiver(repo: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quiver"))
        .current_dir(repo)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn redis_down_during_materialize_keeps_the_watermark_and_rerun_completes() {
    let mut server = RedisServer::start();
    let rows: Vec<Row> = (0..5)
        .map(|k| Row {
            key: k,
            second: k,
            created: 0,
            value: Some(k as f64),
        })
        .collect();
    let online = format!(
        "[online]\ntype = \"redis\"\nurl = \"{}\"\nconnect_timeout_ms = 300\ncommand_timeout_ms = 1000\n",
        server.url()
    );
    let dir = repo(&rows, None, &online, "fault");
    let repo = dir.path();
    assert!(quiver(repo, &["apply"]).status.success());

    server.kill();
    let started = std::time::Instant::now();
    let out = quiver(repo, &["materialize"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("redis at redis://127.0.0.1:{}/0", server.port)),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "a down Redis must not hang materialize"
    );

    // The watermark did not move: an incremental run starts from the beginning again.
    server.restart();
    let out = quiver(repo, &["materialize-incremental", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        reports[0]["offline"]["interval"]["start"],
        serde_json::Value::Null,
        "{reports}"
    );
    assert_eq!(reports[0]["online"]["written"], 5);

    let out = quiver(
        repo,
        &[
            "get",
            "--json",
            "--features",
            "v:rate",
            "--entity",
            "driver_id=3",
        ],
    );
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["results"][1]["values"][0], 3.0);
    assert_eq!(response["results"][1]["statuses"][0], "PRESENT");

    // Now the watermark moved: the next incremental run has nothing to do before it.
    let out = quiver(repo, &["materialize-incremental", "--json"]);
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(
        reports[0]["offline"]["interval"]["start"],
        serde_json::Value::Null,
        "{reports}"
    );

    // Redis restarted between lookups: the same store object answers again by itself.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = FeatureStore::open(repo).unwrap();
        store
            .materialize(MaterializeOptions::default())
            .await
            .unwrap();
        assert_eq!(
            lookup_rate(&store, &[1]).await.unwrap().columns[0].statuses[0],
            FeatureStatus::Present
        );
        server.restart();
        let mut answered = None;
        for _ in 0..30 {
            if let Ok(response) = lookup_rate(&store, &[1]).await {
                answered = Some(response);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // The restarted server is empty, so the key is NOT_FOUND — but the lookup works.
        let response = answered.expect("lookups succeed again after Redis restarts");
        assert_eq!(response.columns[0].statuses[0], FeatureStatus::NotFound);
        let _ = BTreeMap::<(), ()>::new();
    });
}
