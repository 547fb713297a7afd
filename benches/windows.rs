//! Benchmark of windowed aggregations and on-demand views as a user runs them: the
//! release `quiver` binary as a whole process, beside DuckDB computing the same values in
//! the same run.
//!
//! ```sh
//! cargo bench -p quiver-cli --bench windows -- --scale large
//! ```
//!
//! The data is the example's, generated afresh ending now (so online windows hold
//! events): at `large`, 10 M trips of 200 000 customers over 30 days and a 1 M-row spine.
//! The view is the example's `customer_trips`: windows 1 h, 1 d, 7 d × COUNT, SUM, AVG,
//! MAX, STDDEV (15 features).
//!
//! 1. `quiver materialize customer_trips` (offline events and tiles, plus the embedded
//!    online store): wall time and peak RSS.
//! 2. `quiver export` of the 15 features for the spine, `--runs` times, beside
//!    `benches/duckdb_windows.py` (a range join + `GROUP BY`, written to Parquet as the
//!    export is), which also compares every value of both outputs.
//! 3. A private `redis-server`: `quiver materialize` into it (Redis bytes per entity),
//!    then `quiver serve` and `wrk`: lookups of 1 customer × 15 windowed features beside
//!    lookups of the row view `customer_profile` (1 customer × 3 features), one
//!    connection (latency) and 16 (throughput); pushes of 1 000 trips per request to
//!    the `trips` source (events per second into the tiles in Redis).
//! 4. On-demand: the example's `trip_quote` (5 expressions over `customer_trips` and
//!    `driver_hourly_stats` and two request fields): a lookup of its inputs' features
//!    with and without `trip_quote:*`, in-process (the library, on the same Redis; the two
//!    alternate lookup by lookup) and over HTTP (`wrk`, one connection; nine rounds of the
//!    two in turn, the median of the rounds' ratios), p50 and p99 side by side.
//!
//! 5. With `--baseline PATH` (another build of `quiver`, e.g. the previous commit's):
//!    the export with that binary and this one alternately, and pushes into freshly
//!    materialized Redis states with each in turn (one connection), side by side.
//!
//! Options: `--scale small|medium|large` (default `large`), `--runs N` exports (default
//! 3), `--seconds N` per `wrk` run (default 10), `--python PATH` (a Python with `duckdb`;
//! default `python3`), `--no-duckdb`, `--no-redis`, `--baseline PATH`. Needs
//! `redis-server`, `wrk` and `/usr/bin/time` (GNU time, for peak RSS).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark harness

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "support/process.rs"]
mod process;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use process::{Server, args, best_and_median, generate, json, quiver, use_redis};

/// A wrk script posting `body_format` (with `%d` for the customer) for customers in turn.
fn lookup_script(dir: &Path, name: &str, features: &str, customers: u64) -> PathBuf {
    let path = dir.join(format!("{name}.lua"));
    let script = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local id = 10001 + (n * 7919) % {customers}
  return wrk.format(nil, "/get-online-features", nil,
    string.format('{{"features": [{features}], "entities": {{"customer_id": [%d]}}}}', id))
end
"#
    );
    std::fs::write(&path, script).unwrap();
    path
}

/// The features `trip_quote` reads, as a lookup without it would ask for them.
const QUOTE_INPUTS: [&str; 5] = [
    "customer_trips:fare_avg_7d",
    "customer_trips:longest_km_7d",
    "customer_trips:trips_1d",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:conv_rate",
];

/// A wrk script looking up driver, customer (and, `with_quote`, the request fields and
/// `trip_quote:*`) for drivers and customers in turn.
fn quote_script(dir: &Path, with_quote: bool, drivers: u64, customers: u64) -> PathBuf {
    let mut features: Vec<String> = QUOTE_INPUTS.iter().map(|f| format!("\"{f}\"")).collect();
    let mut request = String::new();
    if with_quote {
        features.push("\"trip_quote:*\"".to_string());
        request = r#", "fare_estimate": [42.5], "distance_km": [12.0]"#.to_string();
    }
    let name = if with_quote { "quote" } else { "quote_inputs" };
    let path = dir.join(format!("{name}.lua"));
    let script = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local driver = 1001 + (n * 31) % {drivers}
  local customer = 10001 + (n * 7919) % {customers}
  return wrk.format(nil, "/get-online-features", nil,
    string.format('{{"features": [{features}], "entities": {{"driver_id": [%d], "customer_id": [%d]{request}}}}}', driver, customer))
end
"#,
        features = features.join(", ")
    );
    std::fs::write(&path, script).unwrap();
    path
}

/// p50 and p99 (µs) of `n` in-process lookups of `QUOTE_INPUTS` without and with
/// `trip_quote:*`, the two alternating lookup by lookup so that both meet the same
/// machine load.
async fn quote_in_process(
    store: &quiver::FeatureStore,
    n: usize,
    drivers: u64,
    customers: u64,
) -> [(f64, f64); 2] {
    let mut times = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for i in 0..n as u64 {
        for (with_quote, times) in [false, true].into_iter().zip(times.iter_mut()) {
            let mut features: Vec<String> = QUOTE_INPUTS.iter().map(|f| f.to_string()).collect();
            let mut columns = vec![
                (
                    "driver_id".to_string(),
                    vec![serde_json::Value::from(1001 + (i * 31) % drivers)],
                ),
                (
                    "customer_id".to_string(),
                    vec![serde_json::Value::from(10_001 + (i * 7919) % customers)],
                ),
            ];
            if with_quote {
                features.push("trip_quote:*".to_string());
                columns.push(("fare_estimate".to_string(), vec![42.5.into()]));
                columns.push(("distance_km".to_string(), vec![12.0.into()]));
            }
            let entities = quiver_server::wire::Columns(columns);
            let started = Instant::now();
            let plan = store.lookup_plan(&features, None, false).await.unwrap();
            let batch = entities.to_batch("entities", plan.inputs()).unwrap();
            let found = store.get_online_features(&plan, &batch).await.unwrap();
            times.push(started.elapsed().as_secs_f64() * 1e6);
            assert_eq!(found.columns.len(), if with_quote { 10 } else { 5 });
        }
    }
    times.map(|mut times| {
        times.sort_by(f64::total_cmp);
        (times[n / 2], times[(n * 99 / 100).min(n - 1)])
    })
}

/// A wrk script posting pre-built pushes of `events` trips each (random customers, the
/// last ten minutes), `bodies` different ones in turn.
fn push_script(dir: &Path, customers: u64, events: usize, bodies: usize) -> PathBuf {
    let now = chrono::Utc::now();
    let mut seed = 17u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut files = Vec::new();
    for b in 0..bodies {
        let mut keys = Vec::new();
        let mut times = Vec::new();
        let mut fares = Vec::new();
        let mut distances = Vec::new();
        let mut drivers = Vec::new();
        for _ in 0..events {
            keys.push(10_001 + next() % customers);
            let at = now - chrono::Duration::milliseconds((next() % 600_000) as i64);
            times.push(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            fares.push(5.0 + (next() % 5_000) as f64 / 100.0);
            distances.push((next() % 3_000) as f64 / 100.0);
            drivers.push(1001 + next() % 1000);
        }
        let body = serde_json::json!({
            "push_source_name": "trips", "to": "online",
            "df": {"customer_id": keys, "event_timestamp": times.clone(), "created": times,
                   "fare": fares, "distance_km": distances, "driver_id": drivers}
        });
        let path = dir.join(format!("push-{b}.json"));
        std::fs::write(&path, body.to_string()).unwrap();
        files.push(path);
    }
    let list = files
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let path = dir.join("push.lua");
    let script = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{}}
for i, name in ipairs({{{list}}}) do
  local f = io.open(name, "rb")
  bodies[i] = f:read("*a")
  f:close()
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/push", nil, bodies[(n % #bodies) + 1])
end
"#
    );
    std::fs::write(&path, script).unwrap();
    path
}

fn redis_used_memory(server: &redis_server::RedisServer) -> u64 {
    server
        .command(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The arguments of the export both engines are timed on, writing to `out`.
fn export_args(out: &str) -> [&str; 7] {
    [
        "export",
        "--spine",
        "data/spine.parquet",
        "--features",
        "customer_trips:*",
        "--out",
        out,
    ]
}

/// The export, then pushes, with the baseline binary and this one alternately: exports
/// `runs` times each; pushes (1 connection, `seconds` each) into states materialized
/// afresh before every run (pushed states grow, so runs must start equal), twice each.
fn compare_with_baseline(
    dir: &Path,
    scratch: &Path,
    baseline: &str,
    args: &process::Args,
    redis: &redis_server::RedisServer,
    push: &Path,
    events: usize,
) {
    let binaries = [("baseline", baseline), ("this build", process::QUIVER)];
    let out = scratch.join("baseline_windows.parquet");
    let export = export_args(out.to_str().unwrap());
    let mut exports = [Vec::new(), Vec::new()];
    for _ in 0..args.runs {
        for (i, (_, binary)) in binaries.iter().enumerate() {
            exports[i].push(process::quiver_binary(binary, dir, &export).seconds);
        }
    }
    let mut pushes = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        for (i, (_, binary)) in binaries.iter().enumerate() {
            redis.command(&["FLUSHALL"]);
            process::quiver_binary(binary, dir, &["materialize", "customer_trips"]);
            let server = Server::start_binary(binary, dir);
            let load = process::wrk(&server.url(""), Some(push), 1, 1, args.seconds);
            pushes[i].push(load.requests_per_second * events as f64);
        }
    }
    println!("baseline {baseline} and this build, alternately:");
    let [(b, b_median), (t, t_median)] = exports.map(best_and_median);
    println!(
        "  export: baseline best {b:.2} s (median {b_median:.2}), this build best {t:.2} s (median {t_median:.2}): {:.2}x faster",
        b / t
    );
    println!(
        "  push, 1 connection, into fresh states: baseline {:.0} events/s, this build {:.0} events/s (runs {:?} vs {:?}): {:.2}x",
        pushes[0].iter().copied().fold(0.0, f64::max),
        pushes[1].iter().copied().fold(0.0, f64::max),
        pushes[0].iter().map(|p| p.round()).collect::<Vec<_>>(),
        pushes[1].iter().map(|p| p.round()).collect::<Vec<_>>(),
        pushes[1].iter().copied().fold(0.0, f64::max)
            / pushes[0].iter().copied().fold(0.0, f64::max)
    );
}

fn main() {
    let args = args();
    let root = process::bench_data();
    let dir = root.join(format!("windows-{}", args.scale));
    let scratch = root.join(format!("windows-{}-out", args.scale));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    process::print_machine();
    let data = generate(&dir, &args.scale);

    quiver(&dir, &["apply"]);
    let run = quiver(&dir, &["--json", "materialize", "customer_trips"]);
    let report = &json(&run.stdout)[0];
    println!(
        "materialize customer_trips (offline events + tiles, embedded online): {:.2} s wall, peak RSS {:.0} MiB; offline {:.2} s, {} event rows, {} files; online {} entities in {:.2} s",
        run.seconds,
        run.peak_mib,
        report["offline"]["seconds"].as_f64().unwrap_or(f64::NAN),
        report["offline"]["table_rows"],
        report["offline"]["files_written"],
        report["online"]["written"],
        report["online"]["seconds"].as_f64().unwrap_or(f64::NAN),
    );

    let output = scratch.join("quiver_windows.parquet");
    let out = output.to_str().unwrap();
    let mut times = Vec::new();
    let mut peak: f64 = 0.0;
    for _ in 0..args.runs {
        let run = quiver(&dir, &export_args(out));
        times.push(run.seconds);
        peak = peak.max(run.peak_mib);
    }
    let (best, median) = best_and_median(times);
    println!(
        "export (quiver, 15 windowed features, {} spine rows, to Parquet): best {best:.2} s, median {median:.2} s over {} runs, peak RSS {peak:.0} MiB",
        data.spine_rows, args.runs
    );

    if args.duckdb {
        let output = Command::new(&args.python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/duckdb_windows.py"))
            .arg(dir.join("data"))
            .arg(out)
            .arg(&scratch)
            .arg(args.runs.to_string())
            .output()
            .expect("a python3 with duckdb (--python PATH)");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "duckdb_windows.py failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let duck = json(text.trim());
        let duck_best = duck["best"].as_f64().unwrap();
        println!(
            "export ({}, range join + GROUP BY, to Parquet): best {duck_best:.2} s, median {:.2} s, peak RSS {:.0} MiB",
            duck["engine"].as_str().unwrap(),
            duck["median"].as_f64().unwrap(),
            duck["peak_rss_mib"].as_f64().unwrap()
        );
        println!(
            "ratio duckdb / quiver (best): {:.1}x; compared {} rows x 15 features: mismatches {}; duckdb fingerprint {}",
            duck_best / best,
            duck["compared_rows"],
            duck["mismatches"],
            duck["fingerprint"]
        );
    }

    if !args.redis {
        return;
    }
    let redis = redis_server::RedisServer::start();
    let config = use_redis(&dir, &redis.url());
    let before = redis_used_memory(&redis);
    let run = quiver(&dir, &["--json", "materialize", "customer_trips"]);
    let after = redis_used_memory(&redis);
    let report = &json(&run.stdout)[0];
    let entities = report["online"]["written"].as_u64().unwrap_or(0);
    println!(
        "materialize customer_trips into Redis: {:.2} s wall ({:.2} s online: {entities} entities); Redis memory {:.0} bytes per entity ({} bytes)",
        run.seconds,
        report["online"]["seconds"].as_f64().unwrap_or(f64::NAN),
        after.saturating_sub(before) as f64 / entities.max(1) as f64,
        after.saturating_sub(before)
    );
    let run = quiver(
        &dir,
        &[
            "--json",
            "materialize",
            "customer_profile",
            "driver_hourly_stats",
        ],
    );
    println!(
        "materialize customer_profile and driver_hourly_stats (row views) into Redis: {:.2} s wall",
        run.seconds
    );

    let server = Server::start(&dir);
    let windowed = ["1h", "1d", "7d"]
        .iter()
        .flat_map(|w| {
            ["trips", "fare_sum", "fare_avg", "longest_km", "fare_std"]
                .map(|a| format!("\"customer_trips:{a}_{w}\""))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let row = r#""customer_profile:current_balance", "customer_profile:avg_passenger_count", "customer_profile:lifetime_trip_count""#;
    let scripts = [
        (
            "row view, 1 customer x 3 features",
            lookup_script(&scratch, "row", row, data.customers),
        ),
        (
            "windowed, 1 customer x 3 windows x 5 aggregates",
            lookup_script(&scratch, "windowed", &windowed, data.customers),
        ),
    ];
    // Warm up (connections, Redis, caches).
    for (_, script) in &scripts {
        process::wrk(&server.url(""), Some(script), 1, 4, 2);
    }
    for connections in [1, 16] {
        let mut results = Vec::new();
        for (name, script) in &scripts {
            let load = process::wrk(&server.url(""), Some(script), 1, connections, args.seconds);
            println!(
                "lookup over HTTP ({name}), {connections} connection(s): {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs {}",
                load.requests_per_second, load.p50_us, load.p99_us, load.errors
            );
            results.push(load);
        }
        println!(
            "  windowed / row view, {connections} connection(s): p50 {:.2}x, p99 {:.2}x, throughput {:.2}x",
            results[1].p50_us / results[0].p50_us,
            results[1].p99_us / results[0].p99_us,
            results[1].requests_per_second / results[0].requests_per_second
        );
    }
    let events = 1_000;
    let script = push_script(&scratch, data.customers, events, 20);
    for connections in [1, 2] {
        let load = process::wrk(&server.url(""), Some(&script), 1, connections, args.seconds);
        println!(
            "push to the trips source (online: tiles in Redis), {events} events per request, {connections} connection(s): {:.0} events/s, p50 {:.1} ms per request {}",
            load.requests_per_second * events as f64,
            load.p50_us / 1e3,
            load.errors
        );
    }

    // On-demand: the same lookup with and without `trip_quote:*`, in the same run.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = quiver::FeatureStore::open(&dir).unwrap();
    runtime.block_on(async {
        // Warm up: catalog, program compilation, connections.
        quote_in_process(&store, 200, data.drivers, data.customers).await;
        let [without, with] = quote_in_process(&store, 5_000, data.drivers, data.customers).await;
        println!(
            "lookup in-process (Redis), 1 driver + 1 customer, 5 000 each, alternating: inputs only (5 features) p50 {:.0} µs, p99 {:.0} µs; with trip_quote (5 expressions) p50 {:.0} µs, p99 {:.0} µs; ratio p50 {:.2}x, p99 {:.2}x",
            without.0, without.1, with.0, with.1, with.0 / without.0, with.1 / without.1
        );
    });
    let scripts = [
        (
            "inputs only, 5 features",
            quote_script(&scratch, false, data.drivers, data.customers),
        ),
        (
            "with trip_quote, 5 + 5 features",
            quote_script(&scratch, true, data.drivers, data.customers),
        ),
    ];
    for (_, script) in &scripts {
        process::wrk(&server.url(""), Some(script), 1, 4, 2);
    }
    // Rounds of the two lookups in turn, so that both meet the same machine load; the
    // ratio of each round, and their median.
    // Nine: one 1-connection round's p50 moves by ±15 % with the machine's load (five
    // rounds of the same build gave medians of 1.16× and 1.23×).
    let rounds = 9;
    let seconds = (args.seconds / 2).max(2);
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut results = Vec::new();
        for (name, script) in &scripts {
            let load = process::wrk(&server.url(""), Some(script), 1, 1, seconds);
            println!(
                "lookup over HTTP ({name}), 1 connection, round {round}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs {}",
                load.requests_per_second, load.p50_us, load.p99_us, load.errors
            );
            results.push(load);
        }
        p50s.push(results[1].p50_us / results[0].p50_us);
        p99s.push(results[1].p99_us / results[0].p99_us);
    }
    println!(
        "  on-demand / inputs only over HTTP, median of {rounds} alternating rounds: p50 {:.2}x, p99 {:.2}x (rounds: p50 {:.2?}, p99 {:.2?})",
        best_and_median(p50s.clone()).1,
        best_and_median(p99s.clone()).1,
        p50s,
        p99s
    );
    drop(server);
    if let Some(baseline) = &args.baseline {
        compare_with_baseline(&dir, &scratch, baseline, &args, &redis, &script, events);
    }
    process::restore_config(&dir, &config);
}
