//! Properties of aggregation views on random data, windows and hops:
//!
//! - export equals a brute-force reference that filters each spine row's events with the
//!   rule `floor_hop(T − w) <= event_time < T` and aggregates them directly;
//! - the online lookup at a fixed clock equals the export at that time, on the embedded
//!   store and on Redis, also after events are pushed (online and offline);
//! - writers pushing into the same entities at once count every event exactly once.
//!
//! About half the cases of the embedded ones use a view of numeric aggregates only (no
//! `FIRST_VALUE`/`LAST_VALUE`), which exports evaluate through column loops instead of
//! the generic states.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use proptest::prelude::*;
use quiver::{FeatureStore, PushTo};

use crate::redis_server::RedisServer;

const MINUTE: i64 = 60_000_000;
const BASE: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

#[derive(Debug, Clone)]
struct Event {
    key: i64,
    /// Minutes after BASE (events on a grid make ties and boundaries likely).
    minute: i64,
    created: i64,
    amount: Option<i64>,
    price: Option<f64>,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn batch(events: &[Event]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("created", ts_type(), false),
        Field::new("amount", DataType::Int64, true),
        Field::new("price", DataType::Float64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(
            events.iter().map(|e| e.key).collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(
                events
                    .iter()
                    .map(|e| BASE + e.minute * MINUTE)
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(
                events
                    .iter()
                    .map(|e| BASE + e.created * MINUTE)
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from(
            events.iter().map(|e| e.amount).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            events.iter().map(|e| e.price).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn write_events(path: &Path, events: &[Event]) {
    let batch = batch(events);
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Every aggregate; without `FIRST_VALUE`/`LAST_VALUE` (`numbers_only`), exports take
/// the column loops for numeric aggregates instead of the generic states.
const NUMBER_OUTPUTS: &str = "COUNT(*) AS n, COUNT(amount) AS n_amount, SUM(amount) AS s, AVG(price) AS avg_price, \
     MIN(amount) AS lo, MAX(price) AS hi, STDDEV(price) AS sd, SUM(amount) * 10 / COUNT(*) AS ratio";
const OUTPUTS: &str = "COUNT(*) AS n, COUNT(amount) AS n_amount, SUM(amount) AS s, AVG(price) AS avg_price, \
     MIN(amount) AS lo, MAX(price) AS hi, STDDEV(price) AS sd, \
     FIRST_VALUE(amount ORDER BY event_timestamp) AS first, \
     LAST_VALUE(price ORDER BY event_timestamp) AS last, SUM(amount) * 10 / COUNT(*) AS ratio";

fn repo(
    events: &[Event],
    windows: &[i64],
    hop: Option<i64>,
    online: &str,
    project: &str,
    numbers_only: bool,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("features")).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("quiver.toml"),
        format!("project = \"{project}\"\n{online}"),
    )
    .unwrap();
    let windows: Vec<String> = windows.iter().map(|m| format!("'{m} minutes'")).collect();
    let hop = hop.map_or(String::new(), |h| format!("HOP '{h} minutes'"));
    std::fs::write(
        dir.path().join("features/defs.sql"),
        format!(
            "CREATE ENTITY user (user_id BIGINT);\n\
             CREATE SOURCE events FROM 'data/events.parquet' TIMESTAMP event_timestamp CREATED created;\n\
             CREATE FEATURE VIEW v ENTITY user WINDOWS ({}) {hop} AS SELECT user_id, {} FROM events GROUP BY user_id;\n",
            windows.join(", "),
            if numbers_only { NUMBER_OUTPUTS } else { OUTPUTS },
        ),
    )
    .unwrap();
    write_events(&dir.path().join("data/events.parquet"), events);
    dir
}

/// One value of the reference.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Float(f64),
}

/// The aggregates of the events of `key` in `[start, t)`, straight from the rules.
fn reference(events: &[Event], key: i64, start: i64, t: i64) -> Vec<Value> {
    let mut chosen: Vec<(usize, &Event)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            let ts = BASE + e.minute * MINUTE;
            e.key == key && ts >= start && ts < t
        })
        .collect();
    // Event order: time, created, source order.
    chosen.sort_by_key(|(i, e)| (e.minute, e.created, *i));
    let amounts: Vec<i64> = chosen.iter().filter_map(|(_, e)| e.amount).collect();
    let prices: Vec<f64> = chosen.iter().filter_map(|(_, e)| e.price).collect();
    let n = chosen.len() as i64;
    let sum = (!amounts.is_empty()).then(|| amounts.iter().sum::<i64>());
    let avg_price = (!prices.is_empty()).then(|| prices.iter().sum::<f64>() / prices.len() as f64);
    let sd = (prices.len() >= 2).then(|| {
        let mean = prices.iter().sum::<f64>() / prices.len() as f64;
        let ss: f64 = prices.iter().map(|p| (p - mean) * (p - mean)).sum();
        (ss / (prices.len() - 1) as f64).sqrt()
    });
    let opt_i = |v: Option<i64>| v.map_or(Value::Null, Value::Int);
    let opt_f = |v: Option<f64>| v.map_or(Value::Null, Value::Float);
    vec![
        Value::Int(n),
        Value::Int(amounts.len() as i64),
        opt_i(sum),
        opt_f(avg_price),
        opt_i(amounts.iter().min().copied()),
        opt_f(prices.iter().copied().reduce(f64::max)),
        opt_f(sd),
        chosen.first().map_or(Value::Null, |(_, e)| opt_i(e.amount)),
        chosen.last().map_or(Value::Null, |(_, e)| opt_f(e.price)),
        match (sum, n) {
            (Some(s), n) if n > 0 => Value::Int(s * 10 / n),
            _ => Value::Null,
        },
    ]
}

fn value(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Int64 => Value::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(row)),
        other => panic!("unexpected type {other}"),
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

const NAMES: [&str; 10] = [
    "n",
    "n_amount",
    "s",
    "avg_price",
    "lo",
    "hi",
    "sd",
    "first",
    "last",
    "ratio",
];

fn spine(rows: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("event_timestamp", ts_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

async fn export(store: &FeatureStore, rows: &[(i64, i64)]) -> RecordBatch {
    export_within(store, rows, None).await
}

/// The export, with a memory budget when one is given (a small one: many passes).
async fn export_within(
    store: &FeatureStore,
    rows: &[(i64, i64)],
    memory_budget: Option<usize>,
) -> RecordBatch {
    let mut export = store
        .export()
        .with_spine(spine(rows))
        .with_features(["v:*"])
        .with_materialize(true);
    if let Some(bytes) = memory_budget {
        export = export.with_memory_budget(bytes);
    }
    export.execute().await.unwrap().batch
}

async fn check_export(
    events: Vec<Event>,
    windows: Vec<i64>,
    hop: Option<i64>,
    spine_rows: Vec<(i64, i64)>,
    numbers_only: bool,
) -> Result<(), TestCaseError> {
    let dir = repo(&events, &windows, hop, "", "windows", numbers_only);
    let store = FeatureStore::open(dir.path()).unwrap();
    store.apply().await.unwrap();
    let rows: Vec<(i64, i64)> = spine_rows
        .iter()
        .map(|(k, m)| (*k, BASE + m * MINUTE))
        .collect();
    let exported = export(&store, &rows).await;
    // Read in passes of a few keys each, the same training set.
    let in_passes = export_within(&store, &rows, Some(256)).await;
    prop_assert_eq!(&in_passes, &exported, "the export in many passes differs");
    for w in &windows {
        let hop_minutes =
            hop.unwrap_or_else(|| (quiver::window::default_hop(*w as u64 * 60) / 60) as i64);
        let (len, h) = (w * MINUTE, hop_minutes * MINUTE);
        let label = quiver::window::label(*w as u64 * 60);
        for (row, (key, t)) in rows.iter().enumerate() {
            let start = (t - len).div_euclid(h) * h;
            let expected = reference(&events, *key, start, *t);
            for (name, want) in NAMES.iter().zip(&expected) {
                if numbers_only && matches!(*name, "first" | "last") {
                    continue;
                }
                let column = exported.column_by_name(&format!("{name}_{label}")).unwrap();
                let got = value(column, row);
                prop_assert!(
                    close(&got, want),
                    "{name}_{label} at key {key}, t {t}: export {got:?}, reference {want:?}"
                );
            }
        }
    }
    Ok(())
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    let event = (
        0i64..4,
        0i64..(3 * 24 * 4),
        0i64..3,
        prop::option::weighted(0.85, -50i64..50),
        prop::option::weighted(0.85, 0.0f64..100.0),
    )
        .prop_map(|(key, quarter, created, amount, price)| Event {
            key,
            // On a 15-minute grid, with some ties and boundary hits.
            minute: quarter * 15,
            created,
            amount,
            price,
        });
    prop::collection::vec(event, 0..60)
}

/// Many events per tile (a few keys, six hours, any minute): exports read the tile
/// files then, and of the events only those in the tile each window ends in.
fn dense_events() -> impl Strategy<Value = Vec<Event>> {
    let event = (
        0i64..2,
        0i64..(6 * 60),
        0i64..3,
        prop::option::weighted(0.85, -50i64..50),
        prop::option::weighted(0.85, 0.0f64..100.0),
    )
        .prop_map(|(key, minute, created, amount, price)| Event {
            key,
            minute,
            created,
            amount,
            price,
        });
    prop::collection::vec(event, 200..400)
}

fn windows() -> impl Strategy<Value = (Vec<i64>, Option<i64>)> {
    let choices = prop::sample::subsequence(vec![30i64, 60, 180, 720, 1440, 2880], 1..4);
    (
        choices,
        prop::option::of(prop::sample::select(vec![5i64, 15, 30])),
    )
        .prop_map(|(windows, hop)| (windows, hop))
}

fn spine_rows() -> impl Strategy<Value = Vec<(i64, i64)>> {
    prop::collection::vec((0i64..5, 0i64..(3 * 24 * 60 + 120)), 1..25)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn export_equals_brute_force(events in events(), (windows, hop) in windows(), rows in spine_rows(), numbers_only in any::<bool>()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check_export(events, windows, hop, rows, numbers_only))?;
    }

    #[test]
    fn export_equals_brute_force_with_dense_tiles(
        events in dense_events(),
        windows in prop::sample::subsequence(vec![60i64, 180, 720], 1..4),
        hop in prop::sample::select(vec![15i64, 30]),
        rows in prop::collection::vec((0i64..3, 0i64..(8 * 60)), 1..25),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check_export(events, windows, Some(hop), rows, false))?;
    }
}

/// Materialize at a fixed clock, look every key up: the export at that time; then push
/// events (online and offline) and check again.
#[allow(clippy::too_many_arguments)]
async fn check_online(
    events: Vec<Event>,
    pushed: Vec<Event>,
    windows: Vec<i64>,
    hop: Option<i64>,
    minute: i64,
    online: &str,
    project: &str,
    numbers_only: bool,
) -> Result<(), TestCaseError> {
    let dir = repo(&events, &windows, hop, online, project, numbers_only);
    let at = BASE + minute * MINUTE + 7; // never exactly on the grid
    let store = crate::support::materialized_at(dir.path(), at).await;
    compare_online(&store, at, "after materializing").await?;
    // Pushed events up to the clock (later ones would be beyond the lookup time).
    let pushed: Vec<Event> = pushed
        .into_iter()
        .filter(|e| BASE + e.minute * MINUTE <= at)
        .collect();
    if !pushed.is_empty() {
        store
            .push("events", batch(&pushed), PushTo::OnlineAndOffline)
            .await
            .unwrap();
        compare_online(&store, at, "after a push").await?;
    }
    Ok(())
}

async fn compare_online(store: &FeatureStore, at: i64, when: &str) -> Result<(), TestCaseError> {
    let keys: Vec<i64> = (0..5).collect();
    let exported = export(store, &keys.iter().map(|k| (*k, at)).collect::<Vec<_>>()).await;
    let plan = store
        .lookup_plan(&["v:*".to_string()], None, false)
        .await
        .unwrap();
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(keys.clone()))],
    )
    .unwrap();
    let found = store.get_online_features(&plan, &entities).await.unwrap();
    for column in &found.columns {
        let offline = exported.column_by_name(&column.name).unwrap();
        for (row, key) in keys.iter().enumerate() {
            let (online, export) = (value(&column.values, row), value(offline, row));
            prop_assert!(
                close(&online, &export),
                "{} for key {key} {when}: online {online:?}, export {export:?}",
                column.name,
            );
        }
    }
    Ok(())
}

fn redis() -> &'static RedisServer {
    static SERVER: std::sync::OnceLock<RedisServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn online_equals_export_embedded(events in events(), pushed in events(), (windows, hop) in windows(), minute in 0i64..(3 * 24 * 60), numbers_only in any::<bool>()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check_online(events, pushed, windows, hop, minute, "", "wparity", numbers_only))?;
    }

    #[test]
    fn online_equals_export_redis(events in events(), pushed in events(), (windows, hop) in windows(), minute in 0i64..(3 * 24 * 60), case in any::<u64>()) {
        let online = format!("[online]\ntype = \"redis\"\nurl = \"{}\"\n", redis().url());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check_online(events, pushed, windows, hop, minute, &online, &format!("w{case}"), false))?;
    }
}

/// Writers pushing into the same entities at once, each push spanning many entities (so
/// it runs in several compare-and-set steps at a time): every event counts exactly once —
/// none lost to a concurrent writer, none added twice by a retry.
async fn concurrent_pushes_count_every_event(online: &str, project: &str) {
    const WRITERS: i64 = 4;
    const PUSHES: i64 = 12;
    const KEYS: i64 = 450;
    let dir = repo(&[], &[1440], None, online, project, true);
    let store = crate::support::materialized_at(dir.path(), BASE + 2 * 24 * 60 * MINUTE).await;
    let mut expected = vec![0i64; KEYS as usize];
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let mut pushes = Vec::new();
        for push in 0..PUSHES {
            // 300 events over 300 of the keys, overlapping the other writers' keys.
            let events: Vec<Event> = (0..300)
                .map(|i| {
                    let key = (writer * 37 + push * 53 + i) % KEYS;
                    Event {
                        key,
                        minute: 24 * 60 + (writer * 97 + push * 31 + i) % (20 * 60),
                        created: 0,
                        amount: Some(1),
                        price: Some(2.5),
                    }
                })
                .collect();
            for e in &events {
                expected[e.key as usize] += 1;
            }
            pushes.push(events);
        }
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for events in pushes {
                store
                    .push("events", batch(&events), PushTo::Online)
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let plan = store
        .lookup_plan(&["v:n_1d".to_string()], None, false)
        .await
        .unwrap();
    let keys: Vec<i64> = (0..KEYS).collect();
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(keys))],
    )
    .unwrap();
    let found = store.get_online_features(&plan, &entities).await.unwrap();
    let counts = found.columns[0].values.as_primitive::<Int64Type>();
    for (key, want) in expected.iter().enumerate() {
        assert_eq!(counts.value(key), *want, "events counted for key {key}");
    }
}

#[test]
fn concurrent_pushes_count_every_event_embedded() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(concurrent_pushes_count_every_event("", "wconc"));
}

#[test]
fn concurrent_pushes_count_every_event_redis() {
    let online = format!("[online]\ntype = \"redis\"\nurl = \"{}\"\n", redis().url());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(concurrent_pushes_count_every_event(&online, "wconcr"));
}
