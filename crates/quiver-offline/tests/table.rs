//! Offline tables under concurrent readers and writers: a reader's snapshot stays
//! readable while writers commit, globs over a table see only committed data files, the
//! push log is compacted, and vacuum removes what no snapshot needs.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a test failure

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use quiver_core::model::{Column, FeatureView, KeyType, Source, SourceFormat, ViewSchema};
use quiver_offline::normalize::ViewColumns;
use quiver_offline::table::{Interval, OfflineTable};
use quiver_offline::{Location, OfflineEngine, PushLog, ViewTable, WriteOptions};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// 2026-01-10T00:00:00Z
const T0: i64 = 1_768_003_200_000_000;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// One row per hour over three days, keys 0..4.
fn write_source(path: &Path) {
    let n = 72;
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("ts", ts_type(), false),
        Field::new("value", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from((0..n).map(|i| i % 4).collect::<Vec<_>>())),
        Arc::new(
            TimestampMicrosecondArray::from((0..n).map(|i| T0 + i * HOUR).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
    ];
    quiver_offline::export::write_parquet(path, &RecordBatch::try_new(schema, columns).unwrap())
        .unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    engine: OfflineEngine,
    view: FeatureView,
    columns: ViewColumns,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        write_source(&dir.path().join("src.parquet"));
        let engine = OfflineEngine::new(dir.path());
        engine
            .register_source(&Source {
                name: "src".into(),
                path: "src.parquet".into(),
                format: SourceFormat::Parquet,
                timestamp: "ts".into(),
                created: None,
                options: BTreeMap::new(),
                comment: None,
            })
            .await
            .unwrap();
        let view = FeatureView {
            name: "v".into(),
            entities: vec!["e".into()],
            ttl: None,
            tags: BTreeMap::new(),
            owner: None,
            comment: None,
            online: true,
            query: "SELECT * FROM src".into(),
            normalized_query: "SELECT * FROM src".into(),
            sources: vec!["src".into()],
            windows: vec![],
            hop: None,
            on_demand: false,
        };
        let column = |name: &str, t: &str| Column {
            name: name.into(),
            data_type: t.into(),
            nullable: true,
        };
        let schema = ViewSchema {
            keys: vec![column("k", "Int64")],
            timestamp: Some(column("ts", "Timestamp")),
            created: None,
            features: vec![column("value", "Int64")],
            window: None,
            on_demand: None,
        };
        let columns = ViewColumns::new(&schema, &[KeyType::Int64]);
        Fixture {
            dir,
            engine,
            view,
            columns,
        }
    }

    fn offline(&self) -> Location {
        Location::Local(self.dir.path().join("offline"))
    }

    fn offline_table(&self) -> OfflineTable {
        OfflineTable::new(&self.offline(), "v", 1)
    }

    fn table(&self) -> ViewTable<'_> {
        ViewTable {
            view: &self.view,
            version: 1,
            query: &self.view.query,
            columns: &self.columns,
            window: None,
        }
    }

    async fn materialize(&self, now: i64) {
        self.engine
            .materialize(
                &self.offline(),
                &self.table(),
                Interval {
                    start: None,
                    end: T0 + 3 * DAY,
                },
                options(now),
                false,
            )
            .await
            .unwrap();
    }

    async fn push(&self, key: i64, ts: i64, value: i64, now: i64) {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("ts", ts_type(), true),
                Field::new("value", DataType::Int64, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![key])),
                Arc::new(TimestampMicrosecondArray::from(vec![ts]).with_timezone("UTC")),
                Arc::new(Int64Array::from(vec![value])),
            ],
        )
        .unwrap();
        self.engine
            .push(
                &self.offline(),
                &self.table(),
                batch,
                PushLog::View,
                options(now),
            )
            .await
            .unwrap();
    }
}

fn options(now: i64) -> WriteOptions {
    WriteOptions {
        now,
        retention: HOUR,
        max_event_time: now + DAY,
    }
}

/// Every file under `dir` whose name ends in `.parquet`, as a `**/*.parquet` glob sees.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn rows_in(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|f| {
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(f).unwrap())
                .map(|r| {
                    use parquet::file::reader::FileReader;
                    r.metadata().file_metadata().num_rows() as usize
                })
                .unwrap()
        })
        .sum()
}

#[tokio::test]
async fn a_snapshot_stays_readable_while_writers_commit_until_the_retention_passes() {
    let f = Fixture::new().await;
    let now = T0 + 10 * DAY;
    f.materialize(now).await;
    let before = f.offline_table().snapshot().await.unwrap();
    let old_files = before.files();
    assert_eq!(before.rows(), 72);

    // A re-materialization and a push replace every file the old snapshot names.
    f.materialize(now + 1).await;
    f.push(1, T0 + 90 * 60_000_000, 1000, now + 2).await;
    for file in &old_files {
        assert!(
            !std::path::Path::new(file.display()).exists(),
            "replaced files leave the table's layout"
        );
        file.open()
            .expect("the old snapshot can still read its files");
    }

    // A glob over the table sees exactly the committed files: no superseded files, no
    // push log, so DuckDB's read_parquet('<table>/**/*.parquet') counts the table's rows.
    let table = f.offline_table().local_path().unwrap().to_path_buf();
    let globbed = parquet_files(&table);
    let committed: Vec<PathBuf> = f
        .offline_table()
        .snapshot()
        .await
        .unwrap()
        .files()
        .iter()
        .map(|d| PathBuf::from(d.display()))
        .collect();
    let mut sorted = committed.clone();
    sorted.sort();
    assert_eq!(globbed, sorted);
    assert_eq!(rows_in(&globbed), 73);

    // Within the retention period a writer's vacuum keeps them; after it, they go.
    let stats = f.offline_table().vacuum(HOUR, now + 3).await.unwrap();
    assert_eq!(stats.superseded_removed, 0);
    assert!(stats.superseded_kept > 0);
    let stats = f
        .offline_table()
        .vacuum(HOUR, now + 2 * HOUR)
        .await
        .unwrap();
    assert!(stats.superseded_removed > 0);
    assert_eq!(stats.superseded_kept, 0);
    let err = old_files[0].open().unwrap_err().to_string();
    assert!(err.contains("retention period"), "{err}");
}

#[tokio::test]
async fn the_push_log_is_compacted_and_keeps_every_row_in_order() {
    let f = Fixture::new().await;
    let now = T0 + 10 * DAY;
    f.materialize(now).await;
    // Twenty pushes to one (key, time): the last one wins.
    for i in 0..20 {
        f.push(1, T0 + HOUR + 1, 500 + i, now + i).await;
    }
    let log: Vec<PathBuf> =
        std::fs::read_dir(f.offline_table().local_path().unwrap().join("_pushed"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    assert!(log.len() <= quiver_offline::PUSH_LOG_MAX_FILES, "{log:?}");
    // Re-materializing from the sources keeps the pushed row (its last value).
    f.materialize(now + 100).await;
    let files = f.offline_table().snapshot().await.unwrap().files();
    let mut values = Vec::new();
    for file in &files {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            file.open().unwrap(),
            1024,
        )
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ts = batch.column_by_name("ts").unwrap();
            let value = batch.column_by_name("value").unwrap();
            use arrow::array::AsArray;
            let ts = ts.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let value = value.as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..batch.num_rows() {
                if ts.value(i) == T0 + HOUR + 1 {
                    values.push(value.value(i));
                }
            }
        }
    }
    assert_eq!(values, vec![519]);
}

#[tokio::test]
async fn future_event_times_are_skipped_and_counted() {
    let f = Fixture::new().await;
    // "Now" is in the middle of the data: rows after now + 1 day are skipped.
    let now = T0 + DAY / 2;
    let stats = f
        .engine
        .materialize(
            &f.offline(),
            &f.table(),
            Interval {
                start: None,
                end: T0 + 100 * DAY,
            },
            options(now),
            false,
        )
        .await
        .unwrap()
        .stats;
    // Rows at T0 .. T0 + 36h are kept (hours 0..=36), the other 35 skipped.
    assert_eq!(stats.rows_skipped_future, 35);
    assert_eq!(stats.rows_in_interval, 37);
    // Coverage (and so the watermark) stops at now.
    let snapshot = f.offline_table().snapshot().await.unwrap();
    assert_eq!(snapshot.watermark(), Some(now));
    assert!(!snapshot.covers(None, now + 1));
}
