//! Offline tables and sources on S3 (a private `moto_server`), through the `quiver`
//! binary: the same training set as local folders, writers that race or are killed
//! leave a consistent table, and bad locations are clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cli::{fails, init_example, json, ok, quiver, read_parquet, stderr};
use crate::s3_server::{S3Server, shared};

/// The example repository, and a copy of it (same data) whose offline tables live in
/// `s3://<bucket>/offline`. Returns (temp dir, local repo, S3 repo, bucket).
fn twins(s3: &S3Server, name: &str) -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let dir = init_example();
    let local = dir.path().join("demo");
    let remote = dir.path().join("remote");
    let copied = Command::new("cp")
        .args(["-r", local.to_str().unwrap(), remote.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copied.success());
    let bucket = s3.bucket(name);
    let config = remote.join("quiver.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "path = \"data/offline\"",
        &format!("path = \"s3://{bucket}/offline\""),
    );
    std::fs::write(&config, format!("{text}\n{}", s3.storage_toml())).unwrap();
    (dir, local, remote, bucket)
}

const EXPORT: [&str; 7] = [
    "export",
    "--spine",
    "data/spine.parquet",
    "--features",
    "driver_hourly_stats:*",
    "--out",
    "train.parquet",
];

fn training_set(repo: &Path) -> Vec<arrow::array::RecordBatch> {
    ok(repo, &EXPORT);
    read_parquet(&repo.join("train.parquet"))
}

#[test]
fn tables_and_sources_in_s3_give_the_same_training_set_as_local_folders() {
    let s3 = shared();
    let (_dir, local, remote, bucket) = twins(s3, "e2e");
    // The sources move to the bucket too, one as a folder, one as a file, one as a glob;
    // the local copies are removed, so only S3 can answer.
    let data = |name: &str| std::fs::read(remote.join("data").join(name)).unwrap();
    s3.put(
        &bucket,
        "raw/drivers/part-0.parquet",
        &data("driver_stats.parquet"),
    );
    s3.put(
        &bucket,
        "raw/customer_stats.parquet",
        &data("customer_stats.parquet"),
    );
    s3.put(&bucket, "raw/trips/2026-11.parquet", &data("trips.parquet"));
    for name in [
        "driver_stats.parquet",
        "customer_stats.parquet",
        "trips.parquet",
    ] {
        std::fs::remove_file(remote.join("data").join(name)).unwrap();
    }
    let sources = remote.join("features/sources.sql");
    let sql = std::fs::read_to_string(&sources)
        .unwrap()
        .replace(
            "'data/driver_stats.parquet'",
            &format!("'s3://{bucket}/raw/drivers' FORMAT parquet"),
        )
        .replace(
            "'data/customer_stats.parquet'",
            &format!("'s3://{bucket}/raw/customer_stats.parquet'"),
        )
        .replace(
            "'data/trips.parquet'",
            &format!("'s3://{bucket}/raw/trips/2026-*.parquet'"),
        );
    std::fs::write(&sources, sql).unwrap();

    for repo in [&local, &remote] {
        ok(repo, &["apply"]);
    }
    let materialized = json(&ok(&remote, &["materialize", "--json"]));
    let service = [
        "export",
        "--spine",
        "data/spine.parquet",
        "--service",
        "driver_ranking",
    ];
    let out = ["--out", "service.parquet"];
    ok(&remote, &[&service[..], &out].concat());
    assert_eq!(materialized[2]["offline"]["view"], "driver_hourly_stats");
    assert_eq!(materialized[2]["online"]["written"], 100, "{materialized}");
    ok(&local, &["materialize"]);
    ok(&local, &[&service[..], &out].concat());
    assert_eq!(
        read_parquet(&remote.join("service.parquet")),
        read_parquet(&local.join("service.parquet"))
    );
    assert_eq!(training_set(&remote), training_set(&local));
    assert!(
        !remote.join("data/offline").exists(),
        "nothing is written to the local folder"
    );
    let keys = s3.keys(&bucket, "offline/driver_hourly_stats/v1/");
    assert!(
        keys.contains(&"offline/driver_hourly_stats/v1/_manifest.json".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.contains("/date=") && k.ends_with(".parquet")),
        "{keys:?}"
    );

    // Lookups are served from what was materialized from S3.
    let lookup = |repo: &Path| {
        let features = "driver_hourly_stats:conv_rate";
        json(&ok(
            repo,
            &[
                "get",
                "--json",
                "--features",
                features,
                "--entity",
                "driver_id=1001",
            ],
        ))
    };
    assert_eq!(lookup(&remote), lookup(&local));
}

/// Writers that race for a table, and writers killed (SIGKILL) at any point, never leave
/// a half table: afterwards the table reads as one materialization, and a vacuum leaves
/// exactly the files the manifest names.
#[test]
fn racing_and_killed_writers_leave_a_consistent_table_on_s3() {
    let s3 = shared();
    let (_dir, local, remote, bucket) = twins(s3, "race");
    for repo in [&local, &remote] {
        ok(repo, &["apply"]);
    }
    ok(&local, &["materialize", "driver_hourly_stats"]);
    let materialize = |repo: &Path| {
        Command::new(env!("CARGO_BIN_EXE_quiver"))
            .current_dir(repo)
            .args(["--repo", repo.to_str().unwrap()])
            .args(["materialize", "driver_hourly_stats"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let mut conflicts = 0;
    for _ in 0..3 {
        let racers = [materialize(&remote), materialize(&remote)];
        let mut won = 0;
        for racer in racers {
            let out = racer.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            if out.status.success() {
                won += 1;
            } else {
                assert!(
                    err.contains("another writer committed to it while this one ran"),
                    "a losing writer says why: {err}"
                );
                conflicts += 1;
            }
        }
        assert!(won >= 1, "one of two racing writers always wins");
    }
    eprintln!("{conflicts} of 6 racing writers lost their commit");

    for delay in [50, 200, 500, 900, 1500] {
        let mut victim = materialize(&remote);
        std::thread::sleep(Duration::from_millis(delay));
        victim.kill().unwrap();
        victim.wait().unwrap();
        // Whatever the kill left, the committed table still reads as a whole.
        let got = quiver(&remote, &EXPORT);
        if got.status.success() {
            assert_eq!(
                read_parquet(&remote.join("train.parquet")),
                read_parquet(&{
                    ok(&local, &EXPORT);
                    local.join("train.parquet")
                })
            );
        } else {
            // Before the first commit there is nothing to read yet.
            assert!(
                stderr(&got).contains("quiver materialize"),
                "{}",
                stderr(&got)
            );
        }
    }
    ok(&remote, &["materialize", "driver_hourly_stats"]);
    assert_eq!(training_set(&remote), training_set(&local));

    ok(
        &remote,
        &["vacuum", "--retention", "0s", "driver_hourly_stats"],
    );
    let prefix = "offline/driver_hourly_stats/v1/";
    let manifest: serde_json::Value =
        serde_json::from_slice(&s3.get(&bucket, &format!("{prefix}_manifest.json"))).unwrap();
    let mut named: Vec<String> = manifest["partitions"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|files| files.as_array().unwrap().clone())
        .map(|f| format!("{prefix}{}", f["path"].as_str().unwrap()))
        .collect();
    named.push(format!("{prefix}_manifest.json"));
    named.sort();
    assert_eq!(s3.keys(&bucket, prefix), named, "only named files remain");
    assert_eq!(training_set(&remote), training_set(&local));
}

#[test]
fn bad_object_storage_locations_are_clear_errors() {
    let s3 = shared();
    let (_dir, _local, remote, bucket) = twins(s3, "errors");
    let config = remote.join("quiver.toml");
    let original = std::fs::read_to_string(&config).unwrap();

    // A scheme Quiver does not read.
    std::fs::write(
        &config,
        original.replace(&format!("s3://{bucket}/offline"), "gs://b/offline"),
    )
    .unwrap();
    let err = fails(&remote, &["apply"]);
    assert!(
        err.contains("only local folders and s3://bucket/prefix URLs are supported"),
        "{err}"
    );

    // A bucket that does not exist: the error names it, and no secret is printed.
    std::fs::write(
        &config,
        original.replace(&format!("s3://{bucket}/offline"), "s3://no-such-bucket/x"),
    )
    .unwrap();
    ok(&remote, &["apply"]);
    let err = fails(&remote, &["materialize", "driver_hourly_stats"]);
    assert!(err.contains("s3://no-such-bucket/x"), "{err}");
    assert!(!err.contains("quiver-test-secret"), "{err}");

    // Nothing listens at the endpoint: a prompt error, not a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &config,
        original.replace(&s3.endpoint(), &format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = fails(&remote, &["materialize", "driver_hourly_stats"]);
    assert!(err.contains(&format!("s3://{bucket}/offline")), "{err}");
    assert!(!err.contains("quiver-test-secret"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "gave up after {:?}",
        started.elapsed()
    );

    // A source on a store Quiver does not read is a definition error with its place.
    std::fs::write(&config, &original).unwrap();
    let sources = remote.join("features/sources.sql");
    let sql = std::fs::read_to_string(&sources).unwrap();
    std::fs::write(
        &sources,
        sql.replace("'data/trips.parquet'", "'az://container/trips.parquet'"),
    )
    .unwrap();
    let err = fails(&remote, &["plan"]);
    assert!(
        err.contains("sources.sql:") && err.contains("`az://` locations are not supported"),
        "{err}"
    );
    std::fs::write(
        &sources,
        sql.replace(
            "'data/trips.parquet'",
            &format!("'s3://{bucket}/missing/*.parquet'"),
        ),
    )
    .unwrap();
    let err = fails(&remote, &["plan"]);
    assert!(err.contains("trips"), "{err}");
}
