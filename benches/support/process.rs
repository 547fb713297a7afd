//! What the benchmark harnesses share to measure Quiver as a user runs it: the release
//! `quiver` binary as a whole process (under GNU time for peak RSS and CPU), the example
//! data generated afresh, `quiver serve` on a free port and `wrk` against it.

#![allow(dead_code)] // each harness that includes this file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quiver::example::{ExampleData, FILES};

/// The options every user-facing harness takes: `--scale small|medium|large` (default
/// `large`), `--runs N` (default 3), `--seconds N` per `wrk` run (default 10), `--python
/// PATH` (a Python with `duckdb`; default `python3`), `--no-duckdb`, `--no-redis`;
/// `--baseline PATH` (another `quiver` binary, run alternately with this one to show
/// whether a change made anything slower) and `--redis-cluster` (lookups on a private
/// 3-primary cluster too) where a harness supports them.
pub struct Args {
    pub scale: String,
    pub runs: usize,
    pub seconds: u64,
    pub python: String,
    pub duckdb: bool,
    pub redis: bool,
    pub baseline: Option<String>,
    pub redis_cluster: bool,
    /// A Python with the `quiver` wheel installed: the SDK's export beside the CLI's.
    pub sdk_python: Option<String>,
    /// A venv with `feast==0.67.0` (created when missing): Feast's export beside the SDK's.
    pub feast_venv: Option<String>,
    /// Materialize and export with the offline root in a private `moto_server` too.
    pub s3: bool,
}

/// The harness's options from the process arguments; an unknown one panics naming it.
pub fn args() -> Args {
    let mut args = Args {
        scale: "large".into(),
        runs: 3,
        seconds: 10,
        python: "python3".into(),
        duckdb: true,
        redis: true,
        baseline: None,
        redis_cluster: false,
        sdk_python: None,
        feast_venv: None,
        s3: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => args.scale = it.next().unwrap(),
            "--runs" => args.runs = it.next().unwrap().parse().unwrap(),
            "--seconds" => args.seconds = it.next().unwrap().parse().unwrap(),
            "--python" => args.python = it.next().unwrap(),
            "--no-duckdb" => args.duckdb = false,
            "--no-redis" => args.redis = false,
            "--baseline" => args.baseline = Some(it.next().unwrap()),
            "--redis-cluster" => args.redis_cluster = true,
            "--sdk-python" => args.sdk_python = Some(it.next().unwrap()),
            "--feast-venv" => args.feast_venv = Some(it.next().unwrap()),
            "--s3" => args.s3 = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The release binary that `cargo bench` built beside the harness.
pub const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");

/// Where the harnesses keep their data: `target/bench-data` of the workspace.
pub fn bench_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data")
}

/// One finished command: wall seconds, peak RSS (MiB) and CPU (%, 100 = one core; both
/// NaN without GNU time), stdout.
pub struct Run {
    pub seconds: f64,
    pub peak_mib: f64,
    pub cpu_percent: f64,
    pub stdout: String,
}

/// Runs `quiver ARGS` in `repo` under GNU time; panics with its stderr when it fails.
pub fn quiver(repo: &Path, args: &[&str]) -> Run {
    quiver_binary(QUIVER, repo, args)
}

/// [`quiver`] with another build of the binary (`--baseline`).
pub fn quiver_binary(binary: &str, repo: &Path, args: &[&str]) -> Run {
    let report = repo.join(".time");
    let _ = std::fs::remove_file(&report);
    let timed = Path::new("/usr/bin/time").exists();
    let mut command = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f").arg("%M %P").arg("-o").arg(&report).arg(binary);
        c
    } else {
        Command::new(binary)
    };
    command.arg("--repo").arg(repo).args(args).current_dir(repo);
    let started = Instant::now();
    let output = command.output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "quiver {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // GNU time's last line: "<max RSS KiB> <CPU>%".
    let last = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| t.trim().lines().last().map(str::to_string))
        .unwrap_or_default();
    let mut fields = last.split_whitespace();
    let peak_mib = fields
        .next()
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0);
    let cpu_percent = fields
        .next()
        .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    Run {
        seconds,
        peak_mib,
        cpu_percent,
        stdout: String::from_utf8_lossy(&output.stdout).to_string(),
    }
}

/// Writes the example repository and its data at `scale`, ending a minute ago, into a
/// fresh `dir`.
pub fn generate(dir: &Path, scale: &str) -> ExampleData {
    // Whole seconds: the spine's and the data's times stay readable in reports.
    let now = chrono::Utc::now();
    let end = chrono::DateTime::from_timestamp(now.timestamp() - 60, 0).unwrap();
    let data = ExampleData::scale(scale, end).expect("scale is small, medium or large");
    let _ = std::fs::remove_dir_all(dir);
    let started = Instant::now();
    for (name, text) in FILES {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    data.write(&dir.join("data")).unwrap();
    println!(
        "generated {scale} data ending {end} in {:.1} s: {} drivers x {} events, {} customers x {} events and x {} trips, over {} days; {} spine rows",
        started.elapsed().as_secs_f64(),
        data.drivers,
        data.events_per_driver,
        data.customers,
        data.events_per_customer,
        data.trips_per_customer,
        data.days,
        data.spine_rows
    );
    data
}

/// Points the repository's online store at a Redis (`url`); returns the configuration
/// as it was, for [`restore_config`].
pub fn use_redis(repo: &Path, url: &str) -> String {
    use_online(repo, &format!("type = \"redis\"\nurl = \"{url}\""))
}

/// Points the repository's online store at a Redis Cluster; returns the previous config.
pub fn use_redis_cluster(repo: &Path, seeds: &[String]) -> String {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
    use_online(
        repo,
        &format!("type = \"redis-cluster\"\nurls = [{}]", seeds.join(", ")),
    )
}

fn use_online(repo: &Path, online: &str) -> String {
    let path = repo.join("quiver.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains("type = \"embedded\""), "{config}");
    std::fs::write(&path, config.replace("type = \"embedded\"", online)).unwrap();
    config
}

pub fn restore_config(repo: &Path, config: &str) {
    std::fs::write(repo.join("quiver.toml"), config).unwrap();
}

pub fn best_and_median(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[0], times[times.len() / 2])
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `quiver serve` on a free port, stopped (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(repo: &Path) -> Server {
        Server::start_binary(QUIVER, repo)
    }

    /// [`Server::start`] with another build of the binary (`--baseline`).
    pub fn start_binary(binary: &str, repo: &Path) -> Server {
        let port = free_port();
        let child = Command::new(binary)
            .arg("--repo")
            .arg(repo)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "quiver serve did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `wrk --latency` measured.
#[derive(Debug)]
pub struct Load {
    pub requests_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// wrk's lines about non-2xx answers and socket errors (empty when none).
    pub errors: String,
}

fn micros(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        (text, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * factor)
}

/// Runs `wrk -t THREADS -c CONNECTIONS` for `seconds` against `url`, with a Lua script
/// when one is given.
pub fn wrk(
    url: &str,
    script: Option<&Path>,
    threads: usize,
    connections: usize,
    seconds: u64,
) -> Load {
    let mut command = Command::new("wrk");
    command
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency"]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(url)
        .output()
        .expect("wrk must be installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .collect::<Vec<_>>()
        .join("; ");
    Load {
        requests_per_second: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
        p50_us: field("50%").map_or(f64::NAN, |v| micros(&v)),
        p99_us: field("99%").map_or(f64::NAN, |v| micros(&v)),
        errors,
    }
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn cpu_model() -> String {
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

/// `machine: 2 cores, <CPU model>; binary <path>`, the first line of every report.
pub fn print_machine() {
    println!(
        "machine: {} cores, {}; binary {QUIVER}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
}
