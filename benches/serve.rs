//! Load harness for `quiver serve`: the example's large dataset materialized into a
//! private `redis-server`, the HTTP server on loopback, and a closed-loop load generator
//! (keep-alive HTTP/1.1 connections, each sending the next request when the previous
//! answer arrived). In the same run, `redis-benchmark` GET at the same concurrency is the
//! reference.
//!
//! ```sh
//! cargo bench -p quiver-cli --bench serve -- --scale large --seconds 10
//! ```
//!
//! Run `--bench offline` first at the same scale (it generates the data). Scenarios:
//! 1 entity x 2 views x 7 features (every feature of both views, listed as a Feast client
//! lists them) at 16 and 64 connections, and 100 entities per request at 16 connections.
//! Prints req/s, p50, p99, and the ratio to `redis-benchmark` GET at the same concurrency.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark harness

/// The allocator of the `quiver` binary, so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::{FeatureStore, MaterializeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Every feature of the example's two views.
const FEATURES: &str = r#"["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", "driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:quality", "customer_profile:current_balance", "customer_profile:avg_passenger_count", "customer_profile:lifetime_trip_count"]"#;

/// The body of a lookup of `entities` random drivers and customers.
fn body(seed: &mut u64, entities: usize, drivers: u64, customers: u64) -> String {
    let mut d = Vec::new();
    let mut c = Vec::new();
    for _ in 0..entities {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        d.push((1001 + (*seed >> 33) % drivers).to_string());
        c.push((10_001 + (*seed >> 17) % customers).to_string());
    }
    format!(
        r#"{{"features": {FEATURES}, "entities": {{"driver_id": [{}], "customer_id": [{}]}}}}"#,
        d.join(","),
        c.join(",")
    )
}

/// Reads one HTTP/1.1 response (headers + Content-Length body); returns the status.
/// `chunk` is the connection's read buffer (reused: zeroing 64 KiB per read costs more
/// than the server's answer).
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
    chunk: &mut [u8],
) -> u16 {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let total = end + 4 + length;
            while buffer.len() < total {
                let n = stream.read(chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-response");
                buffer.extend_from_slice(&chunk[..n]);
            }
            let status = head[9..12].parse().unwrap();
            buffer.drain(..total);
            return status;
        }
        let n = stream.read(chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

async fn load(
    addr: std::net::SocketAddr,
    connections: usize,
    entities: usize,
    seconds: u64,
    drivers: u64,
    customers: u64,
) -> (f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut seed = c as u64 + 1;
            let mut buffer = Vec::new();
            let mut chunk = vec![0u8; 65536];
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let body = body(&mut seed, entities, drivers, customers);
                let request = format!(
                    "POST /get-online-features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let started = Instant::now();
                stream.write_all(request.as_bytes()).await.unwrap();
                let status = read_response(&mut stream, &mut buffer, &mut chunk).await;
                assert_eq!(status, 200);
                latencies.push(started.elapsed().as_secs_f64() * 1e3);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(f64::total_cmp);
    let n = all.len();
    (
        n as f64 / seconds as f64,
        all[n / 2],
        all[(n * 99 / 100).min(n - 1)],
    )
}

fn main() {
    let scale = arg("--scale", "large");
    let seconds: u64 = arg("--seconds", "10").parse().unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/bench-data")
        .join(&scale);
    assert!(
        dir.join("data/spine.parquet").exists(),
        "run `cargo bench -p quiver-cli --bench offline -- --scale {scale}` first"
    );
    let server = redis_server::RedisServer::start();
    let config_path = dir.join("quiver.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        original.replace(
            "type = \"embedded\"",
            &format!("type = \"redis\"\nurl = \"{}\"", server.url()),
        ),
    )
    .unwrap();
    let data = quiver::example::ExampleData::scale(&scale, chrono::Utc::now()).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let store = FeatureStore::open(&dir).unwrap();
        store.apply().await.unwrap();
        let reports = store
            .materialize(MaterializeOptions {
                views: vec!["driver_hourly_stats".into(), "customer_profile".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let keys: u64 = reports.iter().filter_map(|r| r.online.as_ref()).map(|o| o.written).sum();
        println!("redis holds {keys} keys of the {scale} dataset");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(store);
        let serving = (*store).clone();
        tokio::spawn(quiver_server::serve(serving, listener, std::future::pending()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut results = Vec::new();
        // `--only CONNECTIONS,ENTITIES` runs one scenario (for profiling).
        let scenarios = match arg("--only", "").split_once(',') {
            Some((c, e)) => vec![(c.parse().unwrap(), e.parse().unwrap())],
            None => vec![(16, 1), (64, 1), (16, 100)],
        };
        for (connections, entities) in scenarios {
            let (rps, p50, p99) = load(addr, connections, entities, seconds, data.drivers, data.customers).await;
            println!(
                "quiver serve: {entities} entity rows x 2 views x 7 features, {connections} connections: {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms"
            );
            results.push((connections, entities, rps));
        }
        results
    });
    std::fs::write(&config_path, original).unwrap();
    let mut reference = Vec::new();
    for connections in [16, 64] {
        let output = std::process::Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-c",
                &connections.to_string(),
            ])
            .args(["-n", "200000", "-t", "get", "-q"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let summary = text
            .rsplit('\r')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        println!("redis-benchmark GET, {connections} connections: {summary}");
        let rps: f64 = summary
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(f64::NAN);
        reference.push((connections, rps));
    }
    for (connections, entities, rps) in results {
        let redis = reference
            .iter()
            .find(|(c, _)| *c == connections)
            .map_or(f64::NAN, |(_, r)| *r);
        println!(
            "ratio, {entities} entity rows, {connections} connections: quiver {rps:.0} req/s / redis-benchmark GET {redis:.0} req/s = {:.1} %",
            100.0 * rps / redis
        );
    }
}
