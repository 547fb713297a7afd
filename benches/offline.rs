//! End-to-end benchmark of the offline engine: materialize the example's two views and
//! export a training set, at a chosen scale, beside the naive DataFusion plan (join +
//! `ROW_NUMBER()` window) on the same tables in the same process.
//!
//! ```sh
//! cargo bench -p quiver-cli --bench offline -- --scale large
//! ```
//!
//! Options: `--scale small|medium|large` (default `large`), `--dir DIR` (default
//! `target/bench-data/<scale>`; data is generated once and reused), `--runs N` exports
//! (default 3, the best and median are reported), `--no-naive`. Peak memory is the
//! process's peak RSS (VmHWM), reset before each phase. Numbers go to stdout.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark harness

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
}

fn args() -> Args {
    let mut scale = "large".to_string();
    let mut dir = None;
    let mut runs = 3;
    let mut naive = true;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => scale = it.next().unwrap(),
            "--dir" => dir = Some(PathBuf::from(it.next().unwrap())),
            "--runs" => runs = it.next().unwrap().parse().unwrap(),
            "--no-naive" => naive = false,
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
    if !args.dir.join("data/spine.parquet").exists() {
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
        cpu_model()
    );

    let store = FeatureStore::open(&args.dir).unwrap();
    store.apply().await.unwrap();

    reset_peak();
    let started = Instant::now();
    let reports = store
        .materialize(MaterializeOptions::default())
        .await
        .unwrap();
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
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}
