//! Regression tests for what broke under concurrent and hostile use (issue 9) and for
//! definition changes under serving (issue 10), through the facade on the example
//! repository. Each test is named after the failure it guards against.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use chrono::{Duration, Timelike, Utc};
use quiver::{FeatureStatus, FeatureStore, MaterializeOptions, PushTo};

/// The example repository, applied and materialized.
async fn example() -> (tempfile::TempDir, Arc<FeatureStore>) {
    example_with(|_| {}).await
}

/// The example repository with its `quiver.toml` changed by `configure`, applied and
/// materialized.
async fn example_with(
    configure: impl FnOnce(&std::path::Path),
) -> (tempfile::TempDir, Arc<FeatureStore>) {
    let dir = tempfile::tempdir().unwrap();
    quiver::example::init_repository(dir.path(), Utc::now()).unwrap();
    configure(&dir.path().join("quiver.toml"));
    let store = FeatureStore::open(dir.path()).unwrap();
    store.apply().await.unwrap();
    store
        .materialize(MaterializeOptions::default())
        .await
        .unwrap();
    (dir, Arc::new(store))
}

fn drivers(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "driver_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(ids.to_vec()))],
    )
    .unwrap()
}

/// One row of `driver_stats` (the source) or of `driver_hourly_stats` (with `quality`).
fn driver_row(driver: i64, at: chrono::DateTime<Utc>, conv_rate: f64, view: bool) -> RecordBatch {
    let ts = arrow::array::TimestampMicrosecondArray::from(vec![at.timestamp_micros()])
        .with_timezone("UTC");
    let ts_type = ts.data_type().clone();
    let mut fields = vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type.clone(), false),
        Field::new("created", ts_type, true),
        Field::new("conv_rate", DataType::Float64, true),
        Field::new("acc_rate", DataType::Float64, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
    ];
    let mut columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(Int64Array::from(vec![driver])),
        Arc::new(ts.clone()),
        Arc::new(ts),
        Arc::new(arrow::array::Float64Array::from(vec![conv_rate])),
        Arc::new(arrow::array::Float64Array::from(vec![0.5])),
        Arc::new(Int64Array::from(vec![7])),
    ];
    if view {
        fields.push(Field::new("quality", DataType::Float64, true));
        columns.push(Arc::new(arrow::array::Float64Array::from(vec![
            conv_rate * 0.5,
        ])));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Materializes `driver_hourly_stats` (all history up to now).
async fn materialize_drivers(store: &FeatureStore) {
    store
        .materialize(MaterializeOptions {
            views: vec!["driver_hourly_stats".into()],
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Applies a new version of `driver_hourly_stats` (its query with `from` replaced by `to`)
/// and materializes it.
async fn new_driver_version(dir: &tempfile::TempDir, store: &FeatureStore, from: &str, to: &str) {
    let views = dir.path().join("features/views.sql");
    let text = std::fs::read_to_string(&views).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(&views, text.replace(from, to)).unwrap();
    store.apply().await.unwrap();
    materialize_drivers(store).await;
}

/// The statuses of `driver_hourly_stats:conv_rate` for drivers 1001..=1100, and the
/// version the lookup read.
async fn conv_rate_statuses(store: &FeatureStore) -> (Vec<FeatureStatus>, u32) {
    let plan = store
        .lookup_plan(&["driver_hourly_stats:conv_rate".to_string()], None, false)
        .await
        .unwrap();
    let ids: Vec<i64> = (1001..=1100).collect();
    let found = store
        .get_online_features(&plan, &drivers(&ids))
        .await
        .unwrap();
    (found.columns[0].statuses.clone(), found.views[0].1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_never_fail_while_pushes_and_materializations_commit() {
    let (dir, store) = example().await;
    exports_while_writers_commit(&dir, store).await;
}

/// The same with the offline tables in S3 (a private `moto_server`), where commits are
/// conditional puts and superseded files stay in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_never_fail_while_pushes_and_materializations_commit_on_s3() {
    let s3 = crate::s3_server::shared();
    let bucket = s3.bucket("reliability");
    let (dir, store) = example_with(|config| {
        let text = std::fs::read_to_string(config).unwrap().replace(
            "path = \"data/offline\"",
            &format!("path = \"s3://{bucket}/offline\""),
        );
        std::fs::write(config, format!("{text}\n{}", s3.storage_toml())).unwrap();
    })
    .await;
    exports_while_writers_commit(&dir, store).await;
    assert!(!dir.path().join("data/offline").exists());
}

/// Three readers export (each many passes over the files) while a writer pushes rows to
/// the offline store and re-materializes: every export succeeds with every spine row.
async fn exports_while_writers_commit(dir: &tempfile::TempDir, store: Arc<FeatureStore>) {
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..24 {
                let at = Utc::now() - Duration::minutes(30) + Duration::seconds(i);
                store
                    .push(
                        "driver_hourly_stats",
                        driver_row(1001 + i % 5, at, 0.25, true),
                        PushTo::Offline,
                    )
                    .await
                    .unwrap();
                if i % 6 == 0 {
                    materialize_drivers(&store).await;
                }
            }
        })
    };
    let mut readers = Vec::new();
    for _ in 0..3 {
        let store = Arc::clone(&store);
        let spine = dir.path().join("data/spine.parquet");
        readers.push(tokio::spawn(async move {
            let mut rows = Vec::new();
            for _ in 0..6 {
                let export = store
                    .export()
                    .with_spine_file(&spine)
                    .with_service("driver_ranking")
                    // Many passes over the files: each opens them again, long after the
                    // snapshot was taken.
                    .with_memory_budget(16 * 1024)
                    .execute()
                    .await
                    .expect("an export never fails while writers commit");
                rows.push(export.batch.num_rows());
            }
            rows
        }));
    }
    writer.await.unwrap();
    for reader in readers {
        assert!(reader.await.unwrap().iter().all(|n| *n == 1000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_of_a_new_version_never_makes_lookups_not_found() {
    let (dir, store) = example().await;
    let (before, version) = conv_rate_statuses(&store).await;
    assert_eq!(version, 1);
    let present: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] == FeatureStatus::Present)
        .collect();
    assert!(present.len() > 50);

    // A new version of the view: its query changes and it gains a feature.
    let views = dir.path().join("features/views.sql");
    let text = std::fs::read_to_string(&views).unwrap();
    std::fs::write(
        &views,
        text.replace(
            "conv_rate * acc_rate AS quality",
            "conv_rate * acc_rate AS quality, conv_rate + acc_rate AS total_rate",
        ),
    )
    .unwrap();
    store.apply().await.unwrap();
    let statuses = store.view_statuses().await.unwrap();
    let view = statuses
        .iter()
        .find(|s| s.record.name == "driver_hourly_stats")
        .unwrap();
    assert_eq!((view.record.version, view.serving_version), (2, 1));

    // Lookups keep answering from v1 while v2 is materialized.
    let lookups = {
        let store = Arc::clone(&store);
        let present = present.clone();
        tokio::spawn(async move {
            let mut versions = Vec::new();
            for _ in 0..40 {
                let (statuses, version) = conv_rate_statuses(&store).await;
                for &i in &present {
                    assert_eq!(statuses[i], FeatureStatus::Present, "row {i} at v{version}");
                }
                versions.push(version);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            versions
        })
    };
    // The feature only v2 has is not served before v2 is materialized.
    let plan = store
        .lookup_plan(&["driver_hourly_stats:total_rate".to_string()], None, false)
        .await
        .unwrap();
    let found = store
        .get_online_features(&plan, &drivers(&[1001]))
        .await
        .unwrap();
    assert_eq!(found.columns[0].statuses, vec![FeatureStatus::NotFound]);
    materialize_drivers(&store).await;
    lookups.await.unwrap();
    // Served from v2 now (the catalog is rechecked within a second).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (after, version) = conv_rate_statuses(&store).await;
    assert_eq!(version, 2);
    for &i in &present {
        assert_eq!(after[i], FeatureStatus::Present);
    }

    // Drop refuses an unknown version and the serving one; forced, it resets the
    // watermark so lookups fall back to v1 and an incremental run refills v2.
    let err = store
        .drop_online_version("driver_hourly_stats", 7, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no version 7"), "{err}");
    let err = store
        .drop_online_version("driver_hourly_stats", 2, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is the version lookups read"), "{err}");
    assert!(
        store
            .drop_online_version("driver_hourly_stats", 2, true)
            .await
            .unwrap()
            > 0
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(conv_rate_statuses(&store).await.1, 1);
    store
        .materialize_incremental(None, &["driver_hourly_stats".to_string()])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (refilled, version) = conv_rate_statuses(&store).await;
    assert_eq!(version, 2);
    for &i in &present {
        assert_eq!(refilled[i], FeatureStatus::Present);
    }
}

#[tokio::test]
async fn a_row_pushed_into_a_source_reaches_view_versions_applied_later() {
    let (dir, store) = example().await;
    let at = Utc::now() - Duration::minutes(10);
    store
        .push(
            "driver_stats",
            driver_row(1001, at, 0.123, false),
            PushTo::Offline,
        )
        .await
        .unwrap();
    new_driver_version(
        &dir,
        &store,
        "WHERE conv_rate IS NOT NULL",
        "WHERE conv_rate >= 0",
    )
    .await;
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new(
                "event_timestamp",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1001])),
            Arc::new(
                arrow::array::TimestampMicrosecondArray::from(vec![at.timestamp_micros()])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let export = store
        .export()
        .with_spine(spine)
        .with_features(["driver_hourly_stats:conv_rate"])
        .execute()
        .await
        .unwrap();
    let conv_rate = export.batch.column_by_name("conv_rate").unwrap();
    assert_eq!(conv_rate.as_primitive::<Float64Type>().value(0), 0.123);
    assert_eq!(export.summary.views, vec!["driver_hourly_stats:2"]);
}

#[tokio::test]
async fn pushes_into_a_source_an_aggregating_view_reads_are_refused() {
    let (dir, store) = example().await;
    std::fs::write(
        dir.path().join("features/counts.sql"),
        "CREATE FEATURE VIEW driver_trip_counts ENTITY driver AS
         SELECT driver_id, max(event_timestamp) AS event_timestamp, max(created) AS created,
                count(*) AS events
         FROM driver_stats GROUP BY driver_id;",
    )
    .unwrap();
    store.apply().await.unwrap();
    let err = store
        .push(
            "driver_stats",
            driver_row(1001, Utc::now(), 0.5, false),
            PushTo::Online,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), quiver::ErrorKind::InvalidArgument);
    assert!(
        err.to_string()
            .contains("feature view `driver_trip_counts` aggregates"),
        "{err}"
    );
    // Pushing rows into the row view itself still works.
    store
        .push(
            "driver_hourly_stats",
            driver_row(1001, Utc::now(), 0.5, true),
            PushTo::Online,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn event_times_in_the_future_cannot_pin_an_entity() {
    let (_dir, store) = example().await;
    let far = chrono::DateTime::parse_from_rfc3339("9999-12-31T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let err = store
        .push(
            "driver_hourly_stats",
            driver_row(1001, far, 0.5, true),
            PushTo::OnlineAndOffline,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ingest.max_future_skew"), "{err}");
    // Materializing up to 2099 moves the watermark to now, not to 2099.
    let end = chrono::DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    store
        .materialize(MaterializeOptions {
            end: Some(end),
            ..Default::default()
        })
        .await
        .unwrap();
    for (view, freshness) in store.freshness().await.unwrap() {
        let seconds = freshness.unwrap();
        assert!(
            (0.0..60.0).contains(&seconds),
            "{view}: the watermark is {seconds} s from now"
        );
    }
}

/// `driver_hourly_stats:quality` for drivers 1001..=1100, looked up through `service`
/// (or by the feature when `None`), and the version read.
async fn quality(store: &FeatureStore, service: Option<&str>) -> (Vec<Option<f64>>, u32) {
    let features = match service {
        Some(_) => Vec::new(),
        None => vec!["driver_hourly_stats:quality".to_string()],
    };
    let plan = store.lookup_plan(&features, service, false).await.unwrap();
    let ids: Vec<i64> = (1001..=1100).collect();
    let found = store
        .get_online_features(&plan, &drivers(&ids))
        .await
        .unwrap();
    let column = found.columns.iter().find(|c| c.name == "quality").unwrap();
    let values = column.values.as_primitive::<Float64Type>();
    let version = found
        .views
        .iter()
        .find(|(view, _)| view == "driver_hourly_stats")
        .unwrap()
        .1;
    (
        (0..values.len())
            .map(|i| values.is_valid(i).then(|| values.value(i)))
            .collect(),
        version,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_pinned_to_a_version_keeps_reading_it_online_and_offline() {
    let (dir, store) = example().await;
    let services = dir.path().join("features/services.sql");
    let mut text = std::fs::read_to_string(&services).unwrap();
    text.push_str("\nCREATE FEATURE SERVICE pinned (driver_hourly_stats@v1.quality);\n");
    std::fs::write(&services, text).unwrap();
    store.apply().await.unwrap();
    let (v1_online, version) = quality(&store, Some("pinned")).await;
    assert_eq!(version, 1);
    assert!(v1_online.iter().filter(|v| v.is_some()).count() > 50);
    let spine = || {
        let at = (Utc::now() - Duration::minutes(1)).timestamp_micros();
        let ts = arrow::array::TimestampMicrosecondArray::from(vec![at; 100]).with_timezone("UTC");
        let ids: Vec<i64> = (1001..=1100).collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("driver_id", DataType::Int64, false),
                Field::new("event_timestamp", ts.data_type().clone(), false),
            ])),
            vec![Arc::new(Int64Array::from(ids)), Arc::new(ts)],
        )
        .unwrap()
    };
    let export_quality = |export: quiver::Export| {
        let values = export
            .batch
            .column_by_name("quality")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        (0..values.len())
            .map(|i| values.is_valid(i).then(|| values.value(i)))
            .collect::<Vec<_>>()
    };
    let v1_offline = export_quality(
        store
            .export()
            .with_spine(spine())
            .with_service("pinned")
            .execute()
            .await
            .unwrap(),
    );

    // Version 2 computes `quality` differently, and is materialized: it serves.
    new_driver_version(
        &dir,
        &store,
        "conv_rate * acc_rate AS quality",
        "conv_rate + acc_rate AS quality",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (v2_online, version) = quality(&store, None).await;
    assert_eq!(version, 2);
    assert_ne!(v2_online, v1_online);

    // The pinned service still reads version 1, online and in exports.
    assert_eq!(quality(&store, Some("pinned")).await, (v1_online, 1));
    let pinned = store
        .export()
        .with_spine(spine())
        .with_service("pinned")
        .execute()
        .await
        .unwrap();
    assert!(
        pinned
            .summary
            .views
            .contains(&"driver_hourly_stats:1".to_string()),
        "{:?}",
        pinned.summary.views
    );
    assert_eq!(export_quality(pinned), v1_offline);
    let latest = store
        .export()
        .with_spine(spine())
        .with_features(["driver_hourly_stats:quality"])
        .execute()
        .await
        .unwrap();
    assert_ne!(export_quality(latest), v1_offline);
}

#[tokio::test]
async fn csv_and_json_spines_keep_their_timestamps_as_utc_timestamps() {
    let (dir, store) = example().await;
    let at = (Utc::now() - Duration::hours(2))
        .with_nanosecond(0)
        .unwrap();
    let text = at.to_rfc3339();
    let spines = [
        (
            "spine.csv",
            format!("driver_id,event_timestamp\n1001,{text}\n1002,{text}\n"),
        ),
        (
            "spine.json",
            format!(
                "{{\"driver_id\": 1001, \"event_timestamp\": \"{text}\"}}\n{{\"driver_id\": 1002, \"event_timestamp\": \"{text}\"}}\n"
            ),
        ),
    ];
    let mut answers = Vec::new();
    for (name, body) in spines {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let export = store
            .export()
            .with_spine_file(&path)
            .with_features(["driver_hourly_stats:conv_rate"])
            .execute()
            .await
            .unwrap();
        let ts = export.batch.column_by_name("event_timestamp").unwrap();
        assert_eq!(
            ts.data_type(),
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            "{name}"
        );
        let ts = ts.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(
            ts.values().to_vec(),
            vec![at.timestamp_micros(); 2],
            "{name}"
        );
        answers.push(Arc::clone(
            export.batch.column_by_name("conv_rate").unwrap(),
        ));
    }
    assert_eq!(answers[0].as_ref(), answers[1].as_ref());
}
