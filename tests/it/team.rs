//! A project run by a team: several checkouts and `quiver serve` processes sharing one
//! PostgreSQL registry, one Redis Cluster (TLS) and one offline root (issue 14, parts
//! 2–4), and the shared registry's refusals.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{fails, ok, use_registry};
use crate::postgres_database::PostgresDatabase;
use crate::redis_cluster::{Certificates, RedisCluster};
use crate::support;

/// `quiver init` of the example in `parent/name`.
fn init(parent: &Path, name: &str) -> PathBuf {
    let repo = parent.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["init", repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    repo
}

fn edit_config(repo: &Path, from: &str, to: &str) {
    let path = repo.join("quiver.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_postgres_registry_refuses_another_project_and_a_newer_schema() {
    let db = PostgresDatabase::create();
    let dir = tempfile::tempdir().unwrap();
    let rides = init(dir.path(), "rides");
    use_registry(&rides, &db.url());
    ok(&rides, &["apply"]);

    // Another project pointed at the same database is refused, naming both.
    let other = init(dir.path(), "other");
    edit_config(&other, "project = \"rides\"", "project = \"other\"");
    use_registry(&other, &db.url());
    let err = fails(&other, &["ls"]);
    assert!(
        err.contains("holds the registry of project `rides`, not of `other`"),
        "{err}"
    );

    // A database migrated by a newer Quiver is refused, not misread.
    db.client()
        .batch_execute("UPDATE quiver.quiver_schema SET version = 99")
        .unwrap();
    let err = fails(&rides, &["ls"]);
    assert!(
        err.contains("schema version 99, this Quiver reads up to 3: upgrade Quiver"),
        "{err}"
    );
}

/// A session that holds the registry's tables (an operator's open transaction, a stuck
/// writer) makes `apply` and `ls` fail after the lock timeout instead of hanging.
#[test]
fn a_held_registry_lock_times_out_instead_of_hanging() {
    let db = PostgresDatabase::create();
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path(), "demo");
    use_registry(
        &repo,
        &format!("{}?options=-c%20lock_timeout%3D1s", db.url()),
    );
    ok(&repo, &["apply"]);
    let mut holder = db.client();
    let mut transaction = holder.transaction().unwrap();
    transaction
        .batch_execute("LOCK TABLE quiver.objects IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    for args in [&["apply"][..], &["ls"][..]] {
        let started = Instant::now();
        let err = fails(&repo, args);
        assert!(err.contains("lock timeout"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{args:?} waited"
        );
    }
    transaction.rollback().unwrap();
    ok(&repo, &["ls"]);
}

#[test]
fn an_unreachable_or_malformed_registry_url_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path(), "demo");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    use_registry(
        &repo,
        &format!("postgres://quiver:s3cret@127.0.0.1:{port}/rides"),
    );
    let started = Instant::now();
    let err = fails(&repo, &["ls"]);
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    assert!(
        err.contains(&format!(
            "registry postgres://quiver:***@127.0.0.1:{port}/rides"
        )),
        "{err}"
    );
    assert!(
        !err.contains("s3cret"),
        "passwords are never printed: {err}"
    );

    // A database that does not exist: the server's own words.
    let db = PostgresDatabase::create();
    let missing = init(dir.path(), "missing");
    use_registry(&missing, &format!("{}_missing", db.url()));
    let err = fails(&missing, &["ls"]);
    assert!(
        err.contains(&format!("database \"{}_missing\" does not exist", db.name)),
        "{err}"
    );

    let other = init(dir.path(), "other");
    use_registry(&other, "mysql://quiver:s3cret@127.0.0.1/rides");
    let err = fails(&other, &["ls"]);
    assert!(
        err.contains("`registry.url` must start with postgres:// or postgresql://"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// A running `quiver serve`, stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    bind: String,
}

impl Server {
    fn start(repo: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bind = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_quiver"))
            .arg("--repo")
            .arg(repo)
            .args(["serve", "--bind", &bind])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child, bind };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if server
                .try_call("GET", "/health", "")
                .is_some_and(|(s, _)| s == 200)
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("quiver serve on {} did not become healthy", server.bind);
    }

    fn try_call(&self, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
        let mut stream = std::net::TcpStream::connect(&self.bind).ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let status = text.get(9..12)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.try_call(method, path, body)
            .unwrap_or_else(|| panic!("{method} {path} on {} got no answer", self.bind))
    }

    fn conv_rate(&self, driver: i64) -> Value {
        let lookup = json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [driver]}});
        let (status, response) = self.call("POST", "/get-online-features", &lookup.to_string());
        assert_eq!(status, 200, "{response}");
        response["results"][1]["values"][0].clone()
    }
}

/// Every server answers `lookup` with 200 throughout 2.5 s.
fn keep_answering(servers: &[&Server], lookup: &Value, what: &str) {
    let until = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < until {
        for server in servers {
            let (status, response) =
                server.call("POST", "/get-online-features", &lookup.to_string());
            assert_eq!(status, 200, "{what}: {response}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Issue 14, part 4: two servers (two checkouts) sharing the PostgreSQL registry, a
/// Redis Cluster over TLS with client certificates, and one offline root in S3 — the
/// README's "Running Quiver for a team" configuration.
#[test]
fn two_servers_share_the_registry_the_online_store_and_the_offline_root() {
    let db = PostgresDatabase::create();
    let certificates = Certificates::make();
    let cluster = RedisCluster::start_tls(3, 0, &certificates);
    let dir = tempfile::tempdir().unwrap();
    let s3 = crate::s3_server::shared();
    let offline = format!("s3://{}/offline", s3.bucket("team"));
    let first = init(dir.path(), "first");
    // The README's team configuration, with this test's servers and certificates.
    std::fs::write(
        first.join("quiver.toml"),
        crate::readme::team_config(&db.url(), &cluster.seeds(), &offline, s3),
    )
    .unwrap();
    std::fs::create_dir_all(first.join("certs")).unwrap();
    for (from, to) in [
        ("ca.crt", "redis-ca.pem"),
        ("client.crt", "quiver.pem"),
        ("client.key", "quiver.key"),
    ] {
        std::fs::copy(certificates.file(from), first.join("certs").join(to)).unwrap();
    }
    let second = dir.path().join("second");
    support::copy_dir(&first, &second);
    ok(&first, &["apply"]);
    ok(&first, &["materialize", "driver_hourly_stats"]);

    let a = Server::start(&first);
    let b = Server::start(&second);
    let before = a.conv_rate(1001);
    assert!(before.is_number(), "{before}");
    assert_eq!(
        b.conv_rate(1001),
        before,
        "both read the same Redis Cluster"
    );

    // An `apply` through the second checkout is served by both within a second.
    let services = second.join("features/services.sql");
    let mut text = std::fs::read_to_string(&services).unwrap();
    text.push_str("\nCREATE FEATURE SERVICE conv_only (driver_hourly_stats.conv_rate);\n");
    std::fs::write(&services, text).unwrap();
    let applied = Instant::now();
    ok(&second, &["apply"]);
    let lookup = json!({"feature_service": "conv_only", "entities": {"driver_id": [1001]}});
    for server in [&a, &b] {
        loop {
            let (status, response) =
                server.call("POST", "/get-online-features", &lookup.to_string());
            if status == 200 {
                assert_eq!(response["results"][1]["values"][0], before);
                break;
            }
            assert_eq!(status, 404, "{response}");
            assert!(
                applied.elapsed() < Duration::from_millis(1_500),
                "the applied service is not served by {} within a second",
                server.bind
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // PostgreSQL restarting (every session of the database ended) does not fail a
    // lookup: each server's next registry read finds its idle connection dead and
    // reconnects.
    db.client()
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    keep_answering(&[&a, &b], &lookup, "sessions ended");

    // PostgreSQL down (no connection accepted) does not take serving down either: the
    // servers keep the definitions they have and pick up changes once it is back.
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            db.name
        ))
        .unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ))
        .unwrap();
    keep_answering(&[&a, &b], &lookup, "registry down");
    assert!(fails(&first, &["apply"]).contains("registry postgres://"));
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .unwrap();

    // A push through one server is read through the other.
    let now = chrono::Utc::now().to_rfc3339();
    let push = json!({"feature_view": "driver_hourly_stats", "to": "online_and_offline", "df": {
        "driver_id": [1001], "event_timestamp": [now], "created": [now],
        "conv_rate": [0.125], "acc_rate": [0.5], "avg_daily_trips": [7], "quality": [0.0625]}});
    let (status, response) = a.call("POST", "/push", &push.to_string());
    assert_eq!(status, 200, "{response}");
    assert_eq!(b.conv_rate(1001), json!(0.125));

    materializations_on_both_at_once(&a, &b, &first);
    // The pushed row survived the rematerialization from the sources.
    assert_eq!(a.conv_rate(1001), json!(0.125));
}

/// `/materialize` of one view on both servers at once: one runs, the other gets 409 —
/// never both at the same time. Each attempt fires both requests together; a run that
/// ends before the other request arrives lets both succeed one after the other, so the
/// attempt repeats until the overlap is seen.
fn materializations_on_both_at_once(a: &Server, b: &Server, repo: &Path) {
    let runs = |repo: &Path| -> usize {
        serde_json::from_str::<Value>(&ok(repo, &["runs", "--json", "--kind", "materialize"]))
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let runs_before = runs(repo);
    let body = r#"{"feature_views": ["driver_hourly_stats"]}"#;
    let mut successes = 0;
    let mut saw_conflict = false;
    for _ in 0..10 {
        let barrier = std::sync::Barrier::new(2);
        let (x, y) = std::thread::scope(|scope| {
            let x = scope.spawn(|| {
                barrier.wait();
                a.call("POST", "/materialize", body)
            });
            let y = scope.spawn(|| {
                barrier.wait();
                b.call("POST", "/materialize", body)
            });
            (x.join().unwrap(), y.join().unwrap())
        });
        for (status, response) in [&x, &y] {
            match status {
                200 => successes += 1,
                409 => {
                    assert!(
                        response["error"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("already running"),
                        "{response}"
                    );
                    saw_conflict = true;
                }
                _ => panic!("materialize answered {status}: {response}"),
            }
        }
        assert!(
            x.0 == 200 || y.0 == 200,
            "one of two always runs: {x:?} {y:?}"
        );
        if saw_conflict {
            break;
        }
    }
    assert!(saw_conflict, "two overlapping materializations both ran");
    assert_eq!(
        runs(repo) - runs_before,
        successes,
        "one recorded run per 200, none for a 409"
    );
    // The claim ends with the run.
    let (status, response) = b.call("POST", "/materialize", body);
    assert_eq!(status, 200, "{response}");
}

/// Two servers on one checkout (the SQLite registry): the claim is a locked file.
#[test]
fn two_servers_on_one_checkout_run_one_materialization_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path(), "demo");
    ok(&repo, &["apply"]);
    ok(&repo, &["materialize", "driver_hourly_stats"]);
    let a = Server::start(&repo);
    let b = Server::start(&repo);
    materializations_on_both_at_once(&a, &b, &repo);
}

/// A materialization claim is a PostgreSQL session lock: another process sees it held,
/// other views stay free, and it is released when its holder's session ends — as when a
/// server is killed — so a crash never blocks a view for good.
#[test]
fn a_run_claim_is_released_when_its_holders_session_ends() {
    use quiver_core::registry::{Registry, RegistryLocation};
    let db = PostgresDatabase::create();
    let location = RegistryLocation::Postgres { url: db.url() };
    let holder = Registry::open(&location, "rides").unwrap();
    let other = Registry::open(&location, "rides").unwrap();
    let claim = holder
        .try_claim_run("materialize:driver_hourly_stats")
        .unwrap();
    assert!(claim.is_some(), "a free claim is taken");
    let taken = other
        .try_claim_run("materialize:driver_hourly_stats")
        .unwrap();
    assert!(taken.is_none(), "a held claim is refused");
    let free = other.try_claim_run("materialize:customer_profile").unwrap();
    assert!(free.is_some(), "another view's claim is free");
    drop(free);
    db.client()
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    // The server ends the session at once; its locks go as the backend exits.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = other
            .try_claim_run("materialize:driver_hourly_stats")
            .unwrap();
        if after.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead holder's claim was not released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(claim);
}
