//! Quiver's three main jobs timed as a user runs them, next to the peer doing the same
//! work in the same run, printing the ratios issue 13 set as targets:
//!
//! ```sh
//! cargo bench -p quiver-cli --bench user -- --scale large --python /path/to/venv/bin/python
//! cargo bench -p quiver-cli --bench user -- --scale small --seconds 3    # the regression guard, ~1 min
//! ```
//!
//! 1. `quiver materialize driver_hourly_stats customer_profile` (offline tables and the
//!    embedded online store): wall time, CPU (100 % = one core) and peak RSS of the
//!    process.
//! 2. `quiver export --spine … --features driver_hourly_stats:*,customer_profile:* --out
//!    x.parquet`, the release binary as a whole process, best of `--runs`, beside
//!    `benches/duckdb_asof.py` (DuckDB's ASOF JOIN with the same semantics on the same
//!    files, written to Parquet too), which also compares every value of both outputs.
//! 3. `quiver serve` on a private `redis-server` holding both views: `wrk` (2 threads)
//!    with a Lua script asking for random entities (1 driver + 1 customer, 7 features of
//!    2 views; then 100 + 100) beside `wrk` on `GET /health` of the same server, at 16
//!    and 64 connections; the ratio of requests per second is the share of the HTTP
//!    floor that lookups reach.
//!
//! 4. With `--redis-cluster`: the same lookups at 16 connections with the views in a
//!    private 3-primary Redis Cluster, beside the single Redis measured again right
//!    before, in the same run.
//! 5. With `--sdk-python PATH` (a Python with a release build of the `quiver` wheel): the
//!    Python package's `get_historical_features(...).to_df()` of the same spine and
//!    features, best of `--runs` (`benches/python_sdk.py`, which also compares every value
//!    with the CLI's export), beside the CLI's best; with `--feast-venv DIR` too (a venv
//!    with `feast==0.67.0`, created when missing), Feast's `get_historical_features` on the same source
//!    files with its default `file` offline store.
//! 6. With `--s3`: the offline root moved to a bucket of a private `moto_server` (S3 on
//!    loopback): materialize and export again, best of `--runs`, beside the local export.
//!    moto is a Python server, so the time is for the record; what it shows is that an
//!    export reads the tables by range from several files at once.
//! 7. With `--baseline PATH` (another build of `quiver`, e.g. the previous commit's):
//!    materialize and export with both binaries alternately, best of `--runs` each, so a
//!    change that made either slower shows as a ratio measured side by side.
//!
//! Options: `--scale small|medium|large` (default `large`), `--runs N` exports (default
//! 3), `--seconds N` per `wrk` run (default 10), `--python PATH` (a Python with `duckdb`;
//! default `python3`), `--no-duckdb`, `--no-redis`, `--redis-cluster`, `--baseline PATH`,
//! `--sdk-python PATH`, `--feast-venv DIR`, `--s3`.
//! Needs `redis-server` (and `redis-cli` for the cluster), `wrk` and GNU time
//! (`/usr/bin/time`).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark harness

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/process.rs"]
mod process;
#[path = "../tests/support/redis_cluster.rs"]
mod redis_cluster;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;
#[path = "../tests/support/s3_server.rs"]
mod s3_server;

use process::{
    Load, Server, args, best_and_median, generate, json, quiver, quiver_binary, use_redis,
    use_redis_cluster, wrk,
};

const FEATURES: &str = "driver_hourly_stats:*,customer_profile:*";

/// `quiver --json materialize` of both row views.
const MATERIALIZE: [&str; 4] = [
    "--json",
    "materialize",
    "driver_hourly_stats",
    "customer_profile",
];

/// The 7 features of both row views, as a Feast client lists them.
const LOOKUP_FEATURES: [&str; 7] = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_hourly_stats:quality",
    "customer_profile:current_balance",
    "customer_profile:avg_passenger_count",
    "customer_profile:lifetime_trip_count",
];

/// Requests a wrk thread draws before the load starts (and then sends in turn).
const DRAWN_REQUESTS: usize = 20_000;

/// A wrk script asking for `entities` random drivers and customers per request; each
/// wrk thread draws its own sequence of `DRAWN_REQUESTS` requests in `init`, before the
/// load starts, and sends them in turn: `wrk` shares the two cores with the server and
/// Redis, so its per-request Lua work (drawing, building the body and the request) would
/// otherwise be measured as the server's. With `health`, the script draws the same
/// requests and then sends `GET /health` instead.
fn lookup_script(
    dir: &Path,
    entities: usize,
    drivers: u64,
    customers: u64,
    health: bool,
) -> PathBuf {
    let name = if health { "health" } else { "lookup" };
    let path = dir.join(format!("{name}-{entities}.lua"));
    let send = if health {
        r#"local _ = requests[n]
  return health"#
    } else {
        "return requests[n]"
    };
    let features = LOOKUP_FEATURES
        .iter()
        .map(|f| format!("\"{f}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let script = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
requests = {{}}
function init(args)
  math.randomseed(7919 * seed)
  for r = 1, {drawn} do
    local drivers, customers = {{}}, {{}}
    for i = 1, {entities} do
      drivers[i] = math.random(1001, {last_driver})
      customers[i] = math.random(10001, {last_customer})
    end
    local body = '{{"features": [{features}], "entities": {{"driver_id": ['
      .. table.concat(drivers, ",") .. '], "customer_id": [' .. table.concat(customers, ",") .. ']}}}}'
    requests[r] = wrk.format("POST", "/get-online-features", nil, body)
  end
  health = wrk.format("GET", "/health", {{}}, nil)
end
local n = 0
request = function()
  n = n % {drawn} + 1
  {send}
end
"#,
        drawn = DRAWN_REQUESTS,
        last_driver = 1000 + drivers,
        last_customer = 10_000 + customers,
    );
    std::fs::write(&path, script).unwrap();
    path
}

fn print_load(what: &str, connections: usize, load: &Load) {
    println!(
        "  {what}, {connections} connections: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms {}",
        load.requests_per_second,
        load.p50_us / 1e3,
        load.p99_us / 1e3,
        load.errors
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn main() {
    let args = args();
    let root = process::bench_data();
    let dir = root.join(format!("user-{}", args.scale));
    let scratch = root.join(format!("user-{}-out", args.scale));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    process::print_machine();
    let data = generate(&dir, &args.scale);
    let mut summary = Vec::new();

    quiver(&dir, &["apply"]);
    let run = quiver(&dir, &MATERIALIZE);
    let rows: u64 = json(&run.stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offline"]["table_rows"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "materialize driver_hourly_stats customer_profile (offline + embedded online): {:.2} s wall, {:.0} % CPU, peak RSS {:.0} MiB; {rows} offline rows",
        run.seconds, run.cpu_percent, run.peak_mib
    );
    summary.push(format!(
        "materialize: {:.2} s at {:.0} % CPU, peak {:.0} MiB (large: <= 10 s, >= 180 %, <= 2048 MiB)",
        run.seconds, run.cpu_percent, run.peak_mib
    ));

    let quiver_out = scratch.join("quiver_export.parquet");
    let mut times = Vec::new();
    let mut peak: f64 = 0.0;
    for _ in 0..args.runs {
        let run = quiver(&dir, &export_args(&quiver_out));
        times.push(run.seconds);
        peak = peak.max(run.peak_mib);
    }
    let (best, median) = best_and_median(times);
    println!(
        "export (quiver, whole process, {} spine rows x 7 features, to Parquet): best {best:.2} s, median {median:.2} s over {} runs, peak RSS {peak:.0} MiB",
        data.spine_rows, args.runs
    );

    if args.duckdb {
        let duck_out = scratch.join("duckdb_export.parquet");
        let output = Command::new(&args.python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/duckdb_asof.py"))
            .arg(&dir)
            .arg(args.runs.to_string())
            .arg("--out")
            .arg(&duck_out)
            .arg("--compare")
            .arg(&quiver_out)
            .arg("--json")
            .output()
            .expect("a python3 with duckdb (--python PATH)");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "duckdb_asof.py failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let duck = json(text.trim());
        let duck_best = duck["best"].as_f64().unwrap();
        println!(
            "export ({}, to Parquet, deduplicating in the query: {}): best {duck_best:.2} s, median {:.2} s, peak RSS {:.0} MiB; fingerprint {}",
            duck["engine"].as_str().unwrap(),
            duck["deduplicated_in_query"],
            duck["median"].as_f64().unwrap(),
            duck["peak_rss_mib"].as_f64().unwrap(),
            duck["fingerprint"]
        );
        let mismatches = duck["mismatches"].as_u64().unwrap();
        assert_eq!(
            mismatches, 0,
            "Quiver's export and DuckDB's differ in {mismatches} values"
        );
        let ratio = duck_best / best;
        println!(
            "  ratio duckdb / quiver (best): {ratio:.2}x; {} rows x 7 features compared, 0 differ",
            duck["rows"]
        );
        summary.push(format!(
            "export: {best:.2} s vs DuckDB {duck_best:.2} s = {ratio:.2}x (large: >= 4x, {})",
            verdict(ratio >= 4.0)
        ));
    }

    if let Some(sdk_python) = &args.sdk_python {
        python_sdk(&dir, &quiver_out, best, sdk_python, &args, &mut summary);
    }

    if args.s3 {
        offline_root_in_s3(&dir, &scratch, best, args.runs, &mut summary);
    }

    if let Some(baseline) = &args.baseline {
        compare_with_baseline(&dir, &scratch, baseline, args.runs, &mut summary);
    }

    if !args.redis {
        print_summary(&summary);
        return;
    }
    let redis = redis_server::RedisServer::start();
    let config = use_redis(&dir, &redis.url());
    let run = quiver(&dir, &MATERIALIZE);
    println!(
        "materialize both views into a private Redis (for the lookups): {:.2} s wall, {:.0} % CPU",
        run.seconds, run.cpu_percent
    );
    let server = Server::start(&dir);
    let one = lookup_script(&scratch, 1, data.drivers, data.customers, false);
    let scripted_health = lookup_script(&scratch, 1, data.drivers, data.customers, true);
    let hundred = lookup_script(&scratch, 100, data.drivers, data.customers, false);
    check_lookup(&server, data.drivers, data.customers);
    // Warm up: connections, Redis, the catalog.
    wrk(&server.url(""), Some(&one), 2, 16, 2);
    wrk(&server.url("/health"), None, 2, 16, 2);
    println!("lookups over HTTP (wrk -t2, random entities) beside GET /health of the same server:");
    for connections in [16, 64] {
        let health = wrk(&server.url("/health"), None, 2, connections, args.seconds);
        print_load("GET /health", connections, &health);
        let lookup = wrk(&server.url(""), Some(&one), 2, connections, args.seconds);
        print_load(
            "lookup 1 driver + 1 customer x 7 features",
            connections,
            &lookup,
        );
        let scripted = wrk(
            &server.url(""),
            Some(&scripted_health),
            2,
            connections,
            args.seconds,
        );
        print_load(
            "GET /health from the lookup script (same Lua work per request)",
            connections,
            &scripted,
        );
        let ratio = lookup.requests_per_second / health.requests_per_second;
        let scripted_ratio = lookup.requests_per_second / scripted.requests_per_second;
        println!(
            "  lookups / health, {connections} connections: {ratio:.2}x ({scripted_ratio:.2}x of /health sent by the same script)"
        );
        if connections == 16 {
            summary.push(format!(
                "lookups: {:.0} vs {:.0} req/s of GET /health = {ratio:.2}x ({scripted_ratio:.2}x of /health from the same Lua script), p99 {:.2} ms at 16 connections (>= 0.75x: {}, p99 <= 5 ms: {})",
                lookup.requests_per_second,
                health.requests_per_second,
                lookup.p99_us / 1e3,
                verdict(ratio >= 0.75),
                verdict(lookup.p99_us <= 5_000.0)
            ));
        }
    }
    let lookup = wrk(&server.url(""), Some(&hundred), 2, 16, args.seconds);
    print_load(
        "lookup 100 drivers + 100 customers x 7 features",
        16,
        &lookup,
    );
    drop(server);
    process::restore_config(&dir, &config);

    if args.redis_cluster {
        // Single Redis again, right before the cluster, so the two are side by side.
        use_redis(&dir, &redis.url());
        let single = Server::start(&dir);
        wrk(&single.url(""), Some(&one), 2, 16, 2);
        let single_load = wrk(&single.url(""), Some(&one), 2, 16, args.seconds);
        drop(single);
        process::restore_config(&dir, &config);
        let cluster = redis_cluster::RedisCluster::start(3, 0);
        use_redis_cluster(&dir, &cluster.seeds());
        let run = quiver(&dir, &MATERIALIZE);
        println!(
            "materialize both views into a private 3-primary Redis Cluster: {:.2} s wall, {:.0} % CPU",
            run.seconds, run.cpu_percent
        );
        let server = Server::start(&dir);
        check_lookup(&server, data.drivers, data.customers);
        wrk(&server.url(""), Some(&one), 2, 16, 2);
        let cluster_load = wrk(&server.url(""), Some(&one), 2, 16, args.seconds);
        let cluster_hundred = wrk(&server.url(""), Some(&hundred), 2, 16, args.seconds);
        drop(server);
        process::restore_config(&dir, &config);
        print_load("lookup, single Redis", 16, &single_load);
        print_load("lookup, 3-primary Redis Cluster", 16, &cluster_load);
        print_load(
            "lookup 100 drivers + 100 customers, Redis Cluster",
            16,
            &cluster_hundred,
        );
        let ratio = cluster_load.requests_per_second / single_load.requests_per_second;
        println!("  cluster / single Redis, 16 connections: {ratio:.2}x");
        summary.push(format!(
            "cluster lookups: {:.0} vs {:.0} req/s on a single Redis = {ratio:.2}x, p99 {:.2} ms vs {:.2} ms at 16 connections",
            cluster_load.requests_per_second,
            single_load.requests_per_second,
            cluster_load.p99_us / 1e3,
            single_load.p99_us / 1e3,
        ));
    }
    print_summary(&summary);
}

/// `quiver export` of both row views' features for the spine, to `out`.
fn export_args(out: &Path) -> [&str; 7] {
    [
        "export",
        "--spine",
        "data/spine.parquet",
        "--features",
        FEATURES,
        "--out",
        out.to_str().unwrap(),
    ]
}

/// Materialize and export with the baseline binary and this one alternately, best of
/// `runs` each, on the same data.
/// Materializes and exports with the offline root in a private `moto_server`, beside the
/// local export's best (`local_best`); the repository's config is restored afterwards.
fn offline_root_in_s3(
    dir: &Path,
    scratch: &Path,
    local_best: f64,
    runs: usize,
    summary: &mut Vec<String>,
) {
    let s3 = s3_server::S3Server::start();
    let bucket = s3.bucket("bench");
    let config = std::fs::read_to_string(dir.join("quiver.toml")).unwrap();
    let moved = config.replace(
        "path = \"data/offline\"",
        &format!("path = \"s3://{bucket}/offline\""),
    );
    assert_ne!(
        moved, config,
        "the harness's repository keeps its tables in data/offline"
    );
    std::fs::write(
        dir.join("quiver.toml"),
        format!("{moved}\n{}", s3.storage_toml()),
    )
    .unwrap();
    let run = quiver(dir, &MATERIALIZE);
    println!(
        "materialize into S3 (moto on loopback): {:.2} s wall, {:.0} % CPU, peak RSS {:.0} MiB",
        run.seconds, run.cpu_percent, run.peak_mib
    );
    let out = scratch.join("s3_export.parquet");
    let times = (0..runs)
        .map(|_| quiver(dir, &export_args(&out)).seconds)
        .collect();
    let (best, median) = best_and_median(times);
    process::restore_config(dir, &config);
    let same = std::fs::read(&out).unwrap()
        == std::fs::read(scratch.join("quiver_export.parquet")).unwrap();
    println!(
        "export from S3 (moto): best {best:.2} s, median {median:.2} s vs local {local_best:.2} s ({:.2}x); same file as the local export: {same}",
        best / local_best
    );
    summary.push(format!(
        "S3 (moto on loopback): materialize {:.2} s, export {best:.2} s vs local {local_best:.2} s (for the record)",
        run.seconds
    ));
}

fn compare_with_baseline(
    dir: &Path,
    scratch: &Path,
    baseline: &str,
    runs: usize,
    summary: &mut Vec<String>,
) {
    let out = scratch.join("baseline_export.parquet");
    let export = export_args(&out);
    let binaries = [("baseline", baseline), ("this build", process::QUIVER)];
    let mut materialize = [Vec::new(), Vec::new()];
    let mut exports = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, (_, binary)) in binaries.iter().enumerate() {
            materialize[i].push(quiver_binary(binary, dir, &MATERIALIZE).seconds);
            exports[i].push(quiver_binary(binary, dir, &export).seconds);
        }
    }
    let best = |times: &Vec<f64>| best_and_median(times.clone());
    let (m0, m0_median) = best(&materialize[0]);
    let (m1, m1_median) = best(&materialize[1]);
    let (e0, e0_median) = best(&exports[0]);
    let (e1, e1_median) = best(&exports[1]);
    println!("baseline {baseline} and this build, alternately, {runs} runs each:");
    println!(
        "  materialize: baseline best {m0:.2} s (median {m0_median:.2}), this build best {m1:.2} s (median {m1_median:.2}): {:.2}x",
        m1 / m0
    );
    println!(
        "  export: baseline best {e0:.2} s (median {e0_median:.2}), this build best {e1:.2} s (median {e1_median:.2}): {:.2}x",
        e1 / e0
    );
    summary.push(format!(
        "this build / baseline (best of {runs}, alternately): materialize {:.2}x ({m1:.2} vs {m0:.2} s), export {:.2}x ({e1:.2} vs {e0:.2} s)",
        m1 / m0,
        e1 / e0
    ));
}

/// One lookup of 10 drivers and 10 customers through `curl` before the load: each
/// feature has PRESENT values (a few entities may have none within the TTL), so that
/// `wrk` measures answers, not misses or errors.
fn check_lookup(server: &Server, drivers: u64, customers: u64) {
    let ids = |first: u64, count: u64| {
        (0..10)
            .map(|i| (first + i * count / 10).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = format!(
        r#"{{"features": [{}], "entities": {{"driver_id": [{}], "customer_id": [{}]}}}}"#,
        LOOKUP_FEATURES
            .iter()
            .map(|f| format!("\"{f}\""))
            .collect::<Vec<_>>()
            .join(", "),
        ids(1001, drivers),
        ids(10_001, customers)
    );
    let output = Command::new("curl")
        .args(["-sf", "-H", "Content-Type: application/json", "-d", &body])
        .arg(server.url("/get-online-features"))
        .output()
        .expect("curl must be installed");
    let answer = json(&String::from_utf8_lossy(&output.stdout));
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 2 + LOOKUP_FEATURES.len(), "{answer}");
    for result in results {
        let statuses = result["statuses"].as_array().unwrap();
        assert!(
            statuses.iter().any(|s| s == "PRESENT"),
            "a lookup before the load has no PRESENT value for a feature: {answer}"
        );
    }
}

fn print_summary(summary: &[String]) {
    println!("summary:");
    for line in summary {
        println!("  {line}");
    }
}

/// The Python package's export of the spine beside the CLI's best (`cli_best`), and
/// Feast's when `--feast-venv` is given (`benches/python_sdk.py`).
fn python_sdk(
    dir: &Path,
    cli_out: &Path,
    cli_best: f64,
    sdk_python: &str,
    args: &process::Args,
    summary: &mut Vec<String>,
) {
    let mut command = Command::new(sdk_python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/python_sdk.py"))
        .arg(dir)
        .arg(args.runs.to_string())
        .args(["--features", FEATURES])
        .arg("--compare")
        .arg(cli_out)
        .arg("--json");
    if let Some(feast) = &args.feast_venv {
        command.args(["--feast-venv", feast]);
    }
    let output = command
        .output()
        .expect("a python with the quiver wheel (--sdk-python PATH)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python_sdk.py failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sdk = json(text.trim());
    let sdk_best = sdk["sdk_best"].as_f64().unwrap();
    let differ = sdk["differ"].as_u64().unwrap();
    assert_eq!(
        differ, 0,
        "the SDK's export and the CLI's differ in {differ} values"
    );
    let ratio = sdk_best / cli_best;
    println!(
        "export (Python package, get_historical_features(...).to_df(), in process): best {sdk_best:.2} s over {} runs; {} rows, 0 values differ from the CLI's; sdk / cli = {ratio:.2}x",
        args.runs, sdk["rows"]
    );
    summary.push(format!(
        "python sdk: {sdk_best:.2} s vs CLI {cli_best:.2} s = {ratio:.2}x (<= 1.3x, {})",
        verdict(ratio <= 1.3)
    ));
    if let Some(feast) = sdk["feast_seconds"].as_f64() {
        let ratio = feast / sdk_best;
        println!(
            "export (Feast 0.67 get_historical_features(...).to_df(), file offline store, 6 features): {feast:.2} s, {} rows; feast / sdk = {ratio:.2}x",
            sdk["feast_rows"]
        );
        summary.push(format!(
            "python sdk vs Feast: {sdk_best:.2} s vs {feast:.2} s = {ratio:.2}x (>= 5x, {})",
            verdict(ratio >= 5.0)
        ));
    }
}
