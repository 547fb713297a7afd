//! End-to-end benchmark of the offline engine: materialize the example's two views and
//! export a training set, at a chosen scale, beside the naive DataFusion plan (join +
//! `ROW_NUMBER()` window) on the same tables in the same process.
//!
//! ```sh
//! cargo bench -p quiver-cli --bench offline -- --scale large
//! ```
//!
//! Then the online side: lookups through the library against the embedded store, and,
//! with a private `redis-server` started on a free loopback port, materialization into
//! Redis beside a raw pipelined `SET` loop, Redis memory per key, and lookups against Redis.
//!
//! Options: `--scale small|medium|large` (default `large`), `--dir DIR` (default
//! `target/bench-data/<scale>`; data is generated once and reused), `--runs N` exports
//! (default 3, the best and median are reported), `--no-naive`, `--no-redis`,
//! `--lookups N` (default 10000). Peak memory is the process's peak RSS (VmHWM), reset
//! before each phase. Numbers go to stdout.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark harness

/// The allocator of the `quiver` binary, so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use chrono::{TimeZone, Utc};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use quiver::example::{ExampleData, FILES};
use quiver::{FeatureStore, MaterializeOptions};

struct Args {
    scale: String,
    dir: PathBuf,
    runs: usize,
    naive: bool,
    redis: bool,
    lookups: usize,
}

fn args() -> Args {
    let mut scale = "large".to_string();
    let mut dir = None;
    let mut runs = 3;
    let mut naive = true;
    let mut redis = true;
    let mut lookups = 10_000;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => scale = it.next().unwrap(),
            "--dir" => dir = Some(PathBuf::from(it.next().unwrap())),
            "--runs" => runs = it.next().unwrap().parse().unwrap(),
            "--no-naive" => naive = false,
            "--no-redis" => redis = false,
            "--lookups" => lookups = it.next().unwrap().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = dir.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/bench-data")
            .join(&scale)
    });
    Args {
        scale,
        dir,
        runs,
        naive,
        redis,
        lookups,
    }
}

/// Resets the peak RSS (Linux), so the next reading covers one phase only.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn prepare(args: &Args) -> ExampleData {
    let end = Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap();
    let data = ExampleData::scale(&args.scale, end).expect("scale is small, medium or large");
    // Data written before the example had trips is written again.
    if !args.dir.join("data/trips.parquet").exists() {
        let started = Instant::now();
        for (name, text) in FILES {
            let path = args.dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        data.write(&args.dir.join("data")).unwrap();
        println!(
            "generated {} scale data in {:.1} s",
            args.scale,
            started.elapsed().as_secs_f64()
        );
    }
    // Every run starts from an empty registry and no offline tables.
    let _ = std::fs::remove_dir_all(args.dir.join(".quiver"));
    let _ = std::fs::remove_dir_all(args.dir.join("data/offline"));
    data
}

/// Non-NULL count and sum of a float column: a cheap fingerprint to compare results.
fn fingerprint(batches: &[RecordBatch], column: &str) -> (usize, f64) {
    let mut count = 0;
    let mut sum = 0.0;
    for batch in batches {
        let array = batch
            .column_by_name(column)
            .unwrap()
            .as_primitive::<Float64Type>();
        count += array.len() - array.null_count();
        sum += arrow::compute::sum(array).unwrap_or(0.0);
    }
    (count, sum)
}

async fn naive(dir: &Path) -> (f64, Vec<RecordBatch>) {
    let ctx = SessionContext::new();
    let offline = dir.join("data/offline");
    for view in ["driver_hourly_stats", "customer_profile"] {
        let path = offline.join(view).join("v1/");
        ctx.register_parquet(view, path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
    }
    ctx.register_parquet(
        "spine",
        dir.join("data/spine.parquet").to_str().unwrap(),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    let sql = "
        WITH s AS (SELECT *, ROW_NUMBER() OVER () AS row_id FROM spine),
        d AS (
            SELECT s.row_id, f.conv_rate, f.acc_rate, f.avg_daily_trips, f.quality,
                   ROW_NUMBER() OVER (PARTITION BY s.row_id ORDER BY f.event_timestamp DESC, f.created DESC) AS rn
            FROM s JOIN driver_hourly_stats f
              ON f.driver_id = s.driver_id
             AND f.event_timestamp <= s.event_timestamp
             AND f.event_timestamp >= s.event_timestamp - INTERVAL '1 day'),
        c AS (
            SELECT s.row_id, f.current_balance, f.avg_passenger_count, f.lifetime_trip_count,
                   ROW_NUMBER() OVER (PARTITION BY s.row_id ORDER BY f.event_timestamp DESC, f.created DESC) AS rn
            FROM s JOIN customer_profile f
              ON f.customer_id = s.customer_id
             AND f.event_timestamp <= s.event_timestamp
             AND f.event_timestamp >= s.event_timestamp - INTERVAL '7 days')
        SELECT s.driver_id, s.customer_id, s.event_timestamp, s.trip_completed,
               d.conv_rate, d.acc_rate, d.avg_daily_trips, d.quality,
               c.current_balance, c.avg_passenger_count, c.lifetime_trip_count
        FROM s
        LEFT JOIN (SELECT * FROM d WHERE rn = 1) d ON d.row_id = s.row_id
        LEFT JOIN (SELECT * FROM c WHERE rn = 1) c ON c.row_id = s.row_id
        ORDER BY s.row_id";
    let started = Instant::now();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    (started.elapsed().as_secs_f64(), batches)
}

#[path = "support/process.rs"]
mod process;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

/// The row views this harness measures (the example's windowed view has its own,
/// `benches/windows.rs`).
fn row_views() -> MaterializeOptions {
    MaterializeOptions {
        views: vec!["driver_hourly_stats".into(), "customer_profile".into()],
        ..Default::default()
    }
}

/// What the lookups ask for: the features `driver_ranking` served before it gained
/// windowed features, so numbers stay comparable across runs.
const LOOKUP_FEATURES: [&str; 5] = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:quality",
    "customer_profile:current_balance",
    "customer_profile:avg_passenger_count",
    "customer_profile:lifetime_trip_count",
];

/// p50 and p99 of `n` lookups of `entities` entity rows each, in µs.
async fn lookup_latency(
    store: &FeatureStore,
    data: &ExampleData,
    n: usize,
    entities: usize,
) -> (f64, f64) {
    let mut times = Vec::with_capacity(n);
    let mut seed = 7u64;
    for _ in 0..n {
        let mut drivers = Vec::with_capacity(entities);
        let mut customers = Vec::with_capacity(entities);
        for _ in 0..entities {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            drivers.push(serde_json::Value::from(1001 + (seed >> 33) % data.drivers));
            customers.push(serde_json::Value::from(
                10_001 + (seed >> 17) % data.customers,
            ));
        }
        let entities = quiver_server::wire::Columns(vec![
            ("driver_id".into(), drivers),
            ("customer_id".into(), customers),
        ]);
        let started = Instant::now();
        let plan = store
            .lookup_plan(&LOOKUP_FEATURES.map(String::from), None, false)
            .await
            .unwrap();
        let batch = entities.to_batch("entities", plan.inputs()).unwrap();
        let response = store.get_online_features(&plan, &batch).await.unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(response.columns.len(), 5);
    }
    times.sort_by(f64::total_cmp);
    (times[n / 2], times[(n * 99 / 100).min(n - 1)])
}

fn redis_info(server: &redis_server::RedisServer, field: &str) -> u64 {
    let info = server.command(&["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A raw pipelined `SET` loop: `keys` keys with `value_bytes`-byte values, 1000 per pipeline.
async fn raw_set_loop(url: &str, keys: usize, value_bytes: usize) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let value = vec![b'x'; value_bytes];
    let started = Instant::now();
    let mut key = 0;
    while key < keys {
        let mut pipe = redis::pipe();
        for _ in 0..1000.min(keys - key) {
            pipe.cmd("SET")
                .arg(format!("raw:{key:08}"))
                .arg(&value)
                .ignore();
            key += 1;
        }
        let () = pipe.query_async(&mut connection).await.unwrap();
    }
    keys as f64 / started.elapsed().as_secs_f64()
}

async fn online_benchmarks(args: &Args, data: &ExampleData, store: &FeatureStore, label: &str) {
    for entities in [1, 100] {
        let n = if entities == 1 {
            args.lookups
        } else {
            (args.lookups / 10).max(100)
        };
        let (p50, p99) = lookup_latency(store, data, n, entities).await;
        println!(
            "lookup ({label}, {entities} entity rows x 2 views x 5 features, {n} lookups): p50 {p50:.0} µs, p99 {p99:.0} µs"
        );
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let data = prepare(&args);
    println!(
        "scale {}: {} drivers x {} events, {} customers x {} events, {} spine rows, {} days",
        args.scale,
        data.drivers,
        data.events_per_driver,
        data.customers,
        data.events_per_customer,
        data.spine_rows,
        data.days
    );
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        process::cpu_model()
    );

    let store = FeatureStore::open(&args.dir).unwrap();
    store.apply().await.unwrap();

    reset_peak();
    let started = Instant::now();
    let reports = store.materialize(row_views()).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let rows: u64 = reports.iter().map(|r| r.offline.rows_in_interval).sum();
    println!(
        "materialize (offline + online): {rows} rows in {seconds:.2} s = {:.0} rows/s (peak RSS {:.0} MiB)",
        rows as f64 / seconds,
        peak_mib()
    );
    for r in &reports {
        let s = &r.offline;
        println!(
            "  {} v{}: {} rows, {} files, {:.2} s offline",
            s.view, s.version, s.table_rows, s.files_written, s.seconds
        );
        if let Some(online) = &r.online {
            println!(
                "    online ({}): {} keys in {:.2} s",
                online.store, online.written, online.seconds
            );
        }
    }

    let mut times = Vec::new();
    let mut peaks = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..args.runs {
        reset_peak();
        let started = Instant::now();
        let export = store
            .export()
            .with_spine_file("data/spine.parquet")
            .with_features(["driver_hourly_stats:*", "customer_profile:*"])
            .execute()
            .await
            .unwrap();
        times.push(started.elapsed().as_secs_f64());
        peaks.push(peak_mib());
        ours = vec![export.batch];
    }
    times.sort_by(f64::total_cmp);
    let best = times[0];
    let median = times[times.len() / 2];
    println!(
        "export (quiver): {} rows x {} columns, best {best:.2} s, median {median:.2} s over {} runs, peak RSS {:.0} MiB",
        ours[0].num_rows(),
        ours[0].num_columns(),
        args.runs,
        peaks.iter().copied().fold(0.0, f64::max)
    );

    if args.naive {
        reset_peak();
        let (seconds, batches) = naive(&args.dir).await;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        println!(
            "export (naive DataFusion join + window): {rows} rows in {seconds:.2} s, peak RSS {:.0} MiB",
            peak_mib()
        );
        println!("ratio naive / quiver (best): {:.1}x", seconds / best);
        for column in ["conv_rate", "current_balance"] {
            let (a, b) = (fingerprint(&ours, column), fingerprint(&batches, column));
            let same = a.0 == b.0 && (a.1 - b.1).abs() <= 1e-6 * a.1.abs().max(1.0);
            println!(
                "  {column}: quiver {} non-null, sum {:.4}; naive {} non-null, sum {:.4} -> {}",
                a.0,
                a.1,
                b.0,
                b.1,
                if same { "same" } else { "DIFFERENT" }
            );
        }
    }

    online_benchmarks(&args, &data, &store, "embedded").await;

    if args.redis {
        let server = redis_server::RedisServer::start();
        // Point the repository's online store at the private server.
        let config_path = args.dir.join("quiver.toml");
        let config = std::fs::read_to_string(&config_path).unwrap();
        let redis_config = config.replace(
            "type = \"embedded\"",
            &format!("type = \"redis\"\nurl = \"{}\"", server.url()),
        );
        std::fs::write(&config_path, redis_config).unwrap();
        let redis_store = FeatureStore::open(&args.dir).unwrap();
        let memory_before = redis_info(&server, "used_memory");
        let reports = redis_store.materialize(row_views()).await.unwrap();
        let memory_after = redis_info(&server, "used_memory");
        let keys: u64 = reports
            .iter()
            .filter_map(|r| r.online.as_ref())
            .map(|o| o.written)
            .sum();
        let seconds: f64 = reports
            .iter()
            .filter_map(|r| r.online.as_ref())
            .map(|o| o.seconds)
            .sum();
        let write_seconds: f64 = reports
            .iter()
            .filter_map(|r| r.online.as_ref())
            .map(|o| o.write_seconds)
            .sum();
        let quiver_rate = keys as f64 / write_seconds;
        println!(
            "materialize online (redis): {keys} keys in {seconds:.2} s (reading the latest rows from the offline tables, then writing); the writes alone {write_seconds:.2} s = {quiver_rate:.0} keys/s"
        );
        for r in &reports {
            if let Some(online) = &r.online {
                println!(
                    "  {}: {} keys in {:.2} s",
                    r.offline.view, online.written, online.seconds
                );
            }
        }
        println!(
            "redis memory: {:.0} bytes per key ({} bytes for {keys} keys)",
            memory_after.saturating_sub(memory_before) as f64 / keys as f64,
            memory_after.saturating_sub(memory_before)
        );
        let raw_rate = raw_set_loop(&server.url(), keys as usize, 48).await;
        println!(
            "raw pipelined SET loop (same Redis, {keys} keys, 48-byte values): {raw_rate:.0} keys/s; quiver writes / raw = {:.0}%",
            100.0 * quiver_rate / raw_rate
        );
        online_benchmarks(&args, &data, &redis_store, "redis").await;
        std::fs::write(&config_path, config).unwrap();
    }
}
