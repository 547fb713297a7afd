//! The `quiver` binary on temporary repositories: what a user types, what they see.

use std::path::Path;
use std::process::{Command, Output};

use crate::postgres_database::PostgresDatabase;
use crate::support;

/// Runs `quiver --repo DIR ARGS…` in DIR (when it exists), as a user in the repository would.
pub(crate) fn quiver(repo: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
    if repo.is_dir() {
        command.current_dir(repo);
    }
    command
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the quiver binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Runs a command that must succeed and returns its stdout.
pub(crate) fn ok(repo: &Path, args: &[&str]) -> String {
    let output = quiver(repo, args);
    assert!(
        output.status.success(),
        "quiver {args:?} failed:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stderr(&output).is_empty(),
        "unexpected stderr: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// Runs a command that must fail with exit code 1 and returns its stderr.
pub(crate) fn fails(repo: &Path, args: &[&str]) -> String {
    let output = quiver(repo, args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "quiver {args:?}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    let err = stderr(&output);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

pub(crate) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Replaces times and temporary paths so snapshots are stable.
macro_rules! snapshot {
    ($name:expr, $value:expr, $repo:expr) => {{
        let repo = std::path::absolute($repo).unwrap().display().to_string();
        let text = $value.replace(&repo, "[REPO]");
        insta::with_settings!({filters => vec![
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]"),
            (r"hash [0-9a-f]{12}", "hash [HASH]"),
        ]}, {
            insta::assert_snapshot!($name, text);
        });
    }};
}

pub(crate) fn init_example() -> tempfile::TempDir {
    init_example_on(None)
}

/// `quiver init` of the example, its registry in PostgreSQL at `registry` when given.
fn init_example_on(registry: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("demo");
    let out = quiver(dir.path(), &["init", repo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    if let Some(url) = registry {
        use_registry(&repo, url);
    }
    dir
}

/// Points a repository's registry at the PostgreSQL database `url`.
pub(crate) fn use_registry(repo: &Path, url: &str) {
    let config = repo.join("quiver.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[registry]\nurl = \"{url}\"\n"));
    std::fs::write(&config, text).unwrap();
}

#[test]
fn new_user_flow_init_plan_apply_describe() {
    let dir = init_example();
    let repo = dir.path().join("demo");
    snapshot!("plan_new_repository", ok(&repo, &["plan"]), &repo);
    snapshot!("apply_new_repository", ok(&repo, &["apply"]), &repo);
    snapshot!("apply_again_changes_nothing", ok(&repo, &["apply"]), &repo);
    snapshot!(
        "describe_view",
        ok(&repo, &["describe", "driver_hourly_stats"]),
        &repo
    );
    snapshot!(
        "describe_source",
        ok(&repo, &["describe", "driver_stats"]),
        &repo
    );
    snapshot!("describe_entity", ok(&repo, &["describe", "driver"]), &repo);
    snapshot!(
        "describe_service",
        ok(&repo, &["describe", "driver_ranking"]),
        &repo
    );
    snapshot!("ls", ok(&repo, &["ls"]), &repo);

    let listed = json(&ok(&repo, &["ls", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 12);
    let described = json(&ok(&repo, &["describe", "driver_hourly_stats", "--json"]));
    assert_eq!(described["version"], 1);
    assert_eq!(
        described["definition"]["schema"]["features"][3]["name"],
        "quality"
    );
}

#[test]
fn new_version_metadata_only_removal_and_restore() {
    versions_and_history(None);
}

#[test]
fn new_version_metadata_only_removal_and_restore_on_postgres() {
    let db = PostgresDatabase::create();
    versions_and_history(Some(&db.url()));
}

/// The registry's versioning, on SQLite (`None`) or PostgreSQL: the same snapshots.
fn versions_and_history(registry: Option<&str>) {
    let dir = init_example_on(registry);
    let repo = dir.path().join("demo");
    ok(&repo, &["apply"]);
    let views = repo.join("features/views.sql");
    let original = std::fs::read_to_string(&views).unwrap();

    // A comment, tag or owner change keeps the version.
    std::fs::write(
        &views,
        original.replace("TAGS (team = 'rides'", "TAGS (team = 'marketplace'"),
    )
    .unwrap();
    snapshot!("plan_metadata_only", ok(&repo, &["plan"]), &repo);
    let plan = json(&ok(&repo, &["plan", "--json"]));
    assert_eq!(plan["changes"][0]["action"], "metadata");
    assert_eq!(plan["changes"][0]["version"], 1);
    ok(&repo, &["apply"]);

    // Reformatting the query is not a new version either.
    std::fs::write(
        &views,
        std::fs::read_to_string(&views).unwrap().replace(
            "conv_rate * acc_rate AS quality",
            "conv_rate*acc_rate   AS   quality",
        ),
    )
    .unwrap();
    let plan = json(&ok(&repo, &["plan", "--json"]));
    assert_eq!(plan["changes"][0]["action"], "metadata", "{plan}");
    ok(&repo, &["apply"]);

    // A change of the query (and so the schema) is a new version.
    std::fs::write(
        &views,
        std::fs::read_to_string(&views).unwrap().replace(
            "conv_rate*acc_rate   AS   quality",
            "conv_rate + acc_rate AS quality, 1 AS one",
        ),
    )
    .unwrap();
    snapshot!("plan_new_version", ok(&repo, &["plan"]), &repo);
    ok(&repo, &["apply"]);
    // So is a TTL change.
    std::fs::write(
        &views,
        std::fs::read_to_string(&views)
            .unwrap()
            .replace("TTL '1 day'", "TTL '2 days'"),
    )
    .unwrap();
    let plan = json(&ok(&repo, &["apply", "--json"]));
    assert_eq!(plan["changes"][0]["action"], "new_version");
    assert_eq!(plan["changes"][0]["from_version"], 2);
    assert_eq!(plan["changes"][0]["version"], 3);
    assert_eq!(
        json(&ok(&repo, &["describe", "driver_hourly_stats", "--json"]))["version"],
        3
    );

    // Removing a file removes its objects; history keeps them.
    let services = repo.join("features/services.sql");
    let service_text = std::fs::read_to_string(&services).unwrap();
    std::fs::remove_file(&services).unwrap();
    snapshot!("apply_removal", ok(&repo, &["apply"]), &repo);
    assert!(!ok(&repo, &["ls"]).contains("driver_ranking"));
    let removed = json(&ok(&repo, &["describe", "driver_ranking", "--json"]));
    assert_eq!(removed["deleted"], true);

    // Putting it back restores the same version.
    std::fs::write(&services, service_text).unwrap();
    let plan = json(&ok(&repo, &["apply", "--json"]));
    assert_eq!(plan["changes"][0]["action"], "restored");
    assert_eq!(plan["changes"][0]["version"], 1);

    snapshot!(
        "history_view",
        ok(&repo, &["history", "driver_hourly_stats"]),
        &repo
    );
    snapshot!(
        "history_service",
        ok(&repo, &["history", "driver_ranking"]),
        &repo
    );
    let history = json(&ok(&repo, &["history", "driver_hourly_stats", "--json"]));
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "added",
            "metadata",
            "metadata",
            "new_version",
            "new_version"
        ]
    );
    // Every version stays readable from history.
    assert_eq!(history[0]["definition"]["tags"]["team"], "rides");
    assert_eq!(history[4]["definition"]["ttl"], 172_800);
}

#[test]
fn concurrent_applies_do_not_corrupt_the_registry() {
    concurrent_applies(None);
}

/// On PostgreSQL the four `apply`s run from four checkouts, as on four machines.
#[test]
fn concurrent_applies_from_several_checkouts_share_a_postgres_registry() {
    let db = PostgresDatabase::create();
    concurrent_applies(Some(&db.url()));
}

fn concurrent_applies(registry: Option<&str>) {
    let dir = init_example_on(registry);
    let repo = dir.path().join("demo");
    let checkouts: Vec<std::path::PathBuf> = (0..4)
        .map(|i| {
            if registry.is_none() {
                return repo.clone();
            }
            let checkout = dir.path().join(format!("checkout-{i}"));
            support::copy_dir(&repo, &checkout);
            checkout
        })
        .collect();
    let spawn = |checkout: &Path| {
        Command::new(env!("CARGO_BIN_EXE_quiver"))
            .arg("--repo")
            .arg(checkout)
            .args(["apply", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = checkouts.iter().map(|c| spawn(c)).collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut added = 0;
    for output in &outputs {
        assert!(output.status.success(), "{}", stderr(output));
        let plan = json(&stdout(output));
        let changes = plan["changes"].as_array().unwrap().len();
        assert!(
            changes == 0 || changes == 12,
            "each apply sees all or nothing: {plan}"
        );
        added += changes;
    }
    assert_eq!(added, 12, "exactly one apply wins");
    for name in [
        "driver",
        "driver_stats",
        "driver_hourly_stats",
        "driver_ranking",
    ] {
        let history = json(&ok(&repo, &["history", name, "--json"]));
        assert_eq!(history.as_array().unwrap().len(), 1, "{name}: {history}");
    }
    assert!(ok(&repo, &["plan"]).starts_with("No changes"));
}

#[test]
fn errors_name_file_line_and_column_and_exit_1() {
    let repo = support::repo(&[(
        "features/defs.sql",
        "CREATE ENTITY driver (driver_id BIGINT);\nCREATE SOURCE s FROM 'data/driver_stats.parquet' TIMESTAMP event_timestamp;\nCREATE FEATURE VIEW v ENTITY drivr AS SELECT driver_id, event_timestamp, acc_rate FROM s;\n",
    )]);
    let err = fails(repo.path(), &["plan"]);
    snapshot!("plan_error", err, repo.path());
    // Nothing was recorded.
    let err = fails(repo.path(), &["apply"]);
    assert!(err.contains("features/defs.sql:3:30"), "{err}");
    assert!(ok(repo.path(), &["ls"]).contains("empty"));

    // --json errors are JSON with the diagnostics.
    let output = quiver(repo.path(), &["plan", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let body = json(&stderr(&output));
    assert_eq!(body["kind"], "invalid_argument");
    assert_eq!(body["diagnostics"][0]["at"]["line"], 3);
    assert_eq!(body["diagnostics"][0]["at"]["column"], 30);
}

#[test]
fn unknown_names_and_missing_repositories_are_clear_errors() {
    let dir = init_example();
    let repo = dir.path().join("demo");
    ok(&repo, &["apply"]);
    let err = fails(&repo, &["describe", "driver_hourly_stat"]);
    assert_eq!(
        err.trim(),
        "error: no object named `driver_hourly_stat` in the registry; did you mean `driver_hourly_stats`?"
    );
    let err = fails(&repo, &["history", "nothing_like_it"]);
    assert_eq!(
        err.trim(),
        "error: no object named `nothing_like_it` in the registry"
    );

    let err = fails(dir.path(), &["plan"]);
    assert!(
        err.contains("no quiver.toml here; run `quiver init DIR`"),
        "{err}"
    );

    let err = fails(dir.path(), &["init", repo.to_str().unwrap()]);
    assert!(err.contains("already holds a feature repository"), "{err}");

    std::fs::write(
        repo.join("quiver.toml"),
        "project = \"rides\"\n[online]\ntype = \"redis\"\n",
    )
    .unwrap();
    let err = fails(&repo, &["plan"]);
    assert!(err.contains("`online.url` is required"), "{err}");
    std::fs::write(
        repo.join("quiver.toml"),
        "project = \"rides\"\nprojekt = 1\n",
    )
    .unwrap();
    let err = fails(&repo, &["plan"]);
    assert!(err.contains("unknown field `projekt`"), "{err}");
}

#[test]
fn environment_overrides_config() {
    let dir = init_example();
    let repo = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["plan"])
        .env("QUIVER_REPO", &repo)
        .env("QUIVER_DEFINITIONS", "features/entities.sql")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("2 added"),
        "only the entities file is read: {text}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["plan"])
        .env("QUIVER_REPO", &repo)
        .env("QUIVER_ONLINE__HOST", "x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output)
            .contains("QUIVER_ONLINE__HOST overrides `online.host`, which is not a config key")
    );
}

#[test]
fn quickstart_runs_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("qs");
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["quickstart", repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("12 added"), "{text}");
    assert!(text.contains("Wrote 1000 rows x 13 columns"), "{text}");
    assert!(repo.join("data/training_set.parquet").is_file());
}

#[test]
fn materialize_and_export_end_to_end() {
    materialize_and_export(None);
}

#[test]
fn materialize_and_export_end_to_end_on_postgres() {
    let db = PostgresDatabase::create();
    materialize_and_export(Some(&db.url()));
}

/// Runs, watermarks and lineage, on SQLite (`None`) or PostgreSQL.
fn materialize_and_export(registry: Option<&str>) {
    let dir = init_example_on(registry);
    let repo = dir.path().join("demo");
    ok(&repo, &["apply"]);

    // Export before materializing says exactly what to run.
    let export = [
        "export",
        "--spine",
        "data/spine.parquet",
        "--service",
        "driver_ranking",
        "--out",
        "train.parquet",
    ];
    let err = fails(&repo, &export);
    assert!(
        err.contains("does not cover the spine's time range; run `quiver materialize --start"),
        "{err}"
    );

    let first = json(&ok(&repo, &["materialize", "--json"]));
    let driver_rows = first[2]["offline"]["table_rows"].as_u64().unwrap();
    assert_eq!(first[2]["offline"]["view"], "driver_hourly_stats");
    assert_eq!(first[2]["online"]["store"], "embedded");
    assert_eq!(
        first[2]["online"]["written"], 100,
        "one key per driver: {first}"
    );
    // The aggregation view: one online state per customer with trips.
    assert_eq!(first[1]["offline"]["view"], "customer_trips");
    assert_eq!(first[1]["online"]["written"], 50, "{first}");
    assert!(driver_rows > 2_000, "{first}");
    // Re-running replaces the interval instead of duplicating rows.
    let again = json(&ok(
        &repo,
        &["materialize", "--json", "driver_hourly_stats"],
    ));
    assert_eq!(
        again[0]["offline"]["table_rows"].as_u64().unwrap(),
        driver_rows
    );
    assert!(
        repo.join("data/offline/driver_hourly_stats/v1/_manifest.json")
            .is_file()
    );

    let out = ok(&repo, &[&export[..], &["--show", "3"]].concat());
    assert!(out.contains("Wrote 1000 rows x 13 columns"), "{out}");
    assert!(
        out.contains("| driver_id | customer_id | event_timestamp"),
        "{out}"
    );
    assert!(repo.join("train.parquet").is_file());

    let features = "driver_hourly_stats:conv_rate,customer_profile:current_balance";
    let spine = ["--spine", "data/spine.parquet"];
    let summary = json(&ok(
        &repo,
        &[
            &[
                "export",
                "--json",
                "--features",
                features,
                "--full-feature-names",
                "--out",
                "t2.parquet",
            ][..],
            &spine,
        ]
        .concat(),
    ));
    assert_eq!(summary["rows"], 1000);
    assert_eq!(summary["features"][0], "driver_hourly_stats:conv_rate");
    assert_eq!(summary["views"][0], "driver_hourly_stats:1");

    // The export is recorded with its lineage.
    let runs = json(&ok(&repo, &["runs", "--json", "--kind", "export"]));
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert!(
        runs[0]["details"]["output"]
            .as_str()
            .unwrap()
            .ends_with("t2.parquet")
    );
    assert_eq!(
        runs[0]["details"]["spine_sha256"].as_str().unwrap().len(),
        64
    );

    // Bad requests are clear errors.
    let bad = |args: &[&str]| {
        fails(
            &repo,
            &[&["export", "--out", "x.parquet"][..], args].concat(),
        )
    };
    let err = bad(&[&spine[..], &["--features", "driver_hourly_stats.conv_rate"]].concat());
    assert!(
        err.contains("bad feature reference `driver_hourly_stats.conv_rate`: write view:feature"),
        "{err}"
    );
    let err = bad(&[&spine[..], &["--features", "driver_hourly_stats:conv_rte"]].concat());
    assert!(
        err.contains("has no feature `conv_rte`; did you mean `conv_rate`?"),
        "{err}"
    );
    let err = bad(&[
        "--spine",
        "data/nope.parquet",
        "--service",
        "driver_ranking",
    ]);
    assert!(err.contains("nope.parquet does not exist"), "{err}");
    let err = bad(&[
        "--spine-sql",
        "SELECT driver_id, event_timestamp FROM driver_stats",
        "--service",
        "driver_ranking",
    ]);
    assert!(
        err.contains("no key column `customer_id` (feature view `customer_profile` needs it)"),
        "{err}"
    );
    let err = bad(&[&spine[..], &["--service", "driver_rankin"]].concat());
    assert!(
        err.contains("unknown feature service `driver_rankin`; did you mean `driver_ranking`?"),
        "{err}"
    );
    let err = fails(
        &repo,
        &[
            "materialize",
            "--start",
            "2026-02-01",
            "--end",
            "2026-01-01",
        ],
    );
    assert!(err.contains("the interval is empty"), "{err}");
    let output = quiver(&repo, &["materialize", "--start", "yesterday"]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(stderr(&output).contains("is not a time"));
}

/// `quiver serve` as a user runs it: it answers lookups on the bound address, and SIGTERM
/// stops it cleanly (exit 0) after in-flight requests.
#[test]
fn serve_answers_and_stops_on_sigterm() {
    use std::io::{Read, Write};
    let dir = init_example();
    let repo = dir.path().join("demo");
    ok(&repo, &["apply"]);
    ok(&repo, &["materialize"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .arg("--repo")
        .arg(&repo)
        .args(["serve", "--bind", &bind])
        .env_remove("RUST_LOG")
        .spawn()
        .expect("quiver serve starts");
    let body =
        r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}"#;
    let request = format!(
        "POST /get-online-features HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(mut stream) = std::net::TcpStream::connect(&bind) {
            stream.write_all(request.as_bytes()).unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            answer = Some(text);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answer = answer.expect("quiver serve listens on --bind");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains(r#""statuses":["PRESENT"]"#), "{answer}");
    // `quiver get --json` prints the server's bytes for the same request.
    let served = answer.split("\r\n\r\n").nth(1).unwrap().trim();
    let printed = ok(
        &repo,
        &[
            "get",
            "--json",
            "--features",
            "driver_hourly_stats:conv_rate",
            "--entity",
            "driver_id=1001",
        ],
    );
    assert_eq!(printed.trim(), served);
    // The table: one row per (entity, feature); an entity column the lookup does not
    // read (`customer_id` here) is left out of the answer and of the ENTITY column.
    let table = ok(
        &repo,
        &[
            "get",
            "--features",
            "driver_hourly_stats:conv_rate",
            "--entity",
            "driver_id=1001,customer_id=10001",
        ],
    );
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(rows[0][..3], ["ENTITY", "FEATURE", "VALUE"], "{table}");
    assert_eq!(rows[1][..2], ["driver_id=1001", "conv_rate"], "{table}");
    assert_eq!(rows[1][3], "PRESENT", "{table}");

    // A second server on the same port fails before it says it listens.
    let busy = quiver(&repo, &["serve", "--bind", &bind]);
    assert_eq!(busy.status.code(), Some(1));
    let err = stderr(&busy);
    assert!(err.contains(&format!("cannot listen on {bind}")), "{err}");
    assert!(!err.contains("listening"), "{err}");
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.wait().unwrap();
    assert!(
        status.success(),
        "quiver serve exited with {status} on SIGTERM"
    );
}

/// Exports that would write where they must not, or read what they must not, are refused;
/// a closed pipe is not an error.
#[test]
fn exports_refuse_hostile_outputs_and_spine_queries() {
    let dir = init_example();
    let repo = dir.path().join("demo");
    ok(&repo, &["apply"]);
    ok(&repo, &["materialize"]);
    let service = ["--service", "driver_ranking"];

    // A spine query is a query: `COPY … TO` writes nothing.
    let target = dir.path().join("copied.csv");
    let copy = format!(
        "COPY (SELECT driver_id FROM driver_stats) TO '{}'",
        target.display()
    );
    let err = fails(
        &repo,
        &[
            &["export", "--spine-sql", &copy, "--out", "x.parquet"][..],
            &service,
        ]
        .concat(),
    );
    assert!(err.contains("the spine query"), "{err}");
    assert!(!target.exists(), "the spine query wrote a file");

    // The output must not be the spine, and must be a format Quiver writes.
    let err = fails(
        &repo,
        &[
            &[
                "export",
                "--spine",
                "data/spine.parquet",
                "--out",
                "data/spine.parquet",
            ][..],
            &service,
        ]
        .concat(),
    );
    assert!(err.contains("is the spine itself"), "{err}");
    let err = fails(
        &repo,
        &[
            &["export", "--spine", "data/spine.parquet", "--out", "t.json"][..],
            &service,
        ]
        .concat(),
    );
    assert!(err.contains("name the output .parquet or .csv"), "{err}");
    ok(
        &repo,
        &[
            &["export", "--spine", "data/spine.parquet", "--out", "t.csv"][..],
            &service,
        ]
        .concat(),
    );
    let csv = std::fs::read_to_string(repo.join("t.csv")).unwrap();
    assert!(
        csv.starts_with(
            "driver_id,customer_id,event_timestamp,trip_completed,fare_estimate,distance_km,conv_rate"
        ),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1001);

    // `--show N | head -1`: the closed pipe ends the command quietly, exit 0.
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .current_dir(&repo)
        .arg("--repo")
        .arg(&repo)
        .args([
            "export",
            "--spine",
            "data/spine.parquet",
            "--out",
            "t2.parquet",
            "--show",
            "1000",
        ])
        .args(service)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        first.starts_with("Wrote 1000 rows"),
        "{first}: {}",
        stderr(&output)
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));

    // Usage errors exit 2, errors 1; QUIVER_JSON takes 1 as true.
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .arg("--repo")
        .arg(&repo)
        .args(["runs", "--kind", "foo"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .arg("--repo")
        .arg(&repo)
        .args(["runs", "--kind", "export", "--limit", "1"])
        .env("QUIVER_JSON", "1")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(json(&stdout(&output))[0]["kind"], "export");

    // Vacuum removes the files re-materialization superseded.
    ok(&repo, &["materialize", "driver_hourly_stats"]);
    let vacuumed = json(&ok(&repo, &["vacuum", "--json", "--retention", "0s"]));
    let removed: u64 = vacuumed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["superseded_removed"].as_u64().unwrap())
        .sum();
    assert!(removed > 0, "{vacuumed}");
}

/// `quiver serve` starts while Redis is down, answers 503, and recovers when Redis
/// comes back — it does not exit.
#[test]
fn serve_starts_while_redis_is_down_and_recovers() {
    use std::io::{Read, Write};
    let mut redis = crate::redis_server::RedisServer::start();
    redis.kill();
    let dir = init_example();
    let repo = dir.path().join("demo");
    let config = repo.join("quiver.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "type = \"embedded\"",
            &format!(
                "type = \"redis\"\nurl = \"{}\"\nconnect_timeout_ms = 300",
                redis.url()
            ),
        ),
    )
    .unwrap();
    ok(&repo, &["apply"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .arg("--repo")
        .arg(&repo)
        .args(["serve", "--bind", &bind])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let health = || -> Option<String> {
        let mut stream = std::net::TcpStream::connect(&bind).ok()?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let mut answer = None;
    for _ in 0..100 {
        if let Some(text) = health() {
            answer = Some(text);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answer = answer.expect("quiver serve listens although Redis is down");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"status\":\"unavailable\""), "{answer}");
    redis.restart();
    let mut recovered = false;
    for _ in 0..50 {
        if health().is_some_and(|t| t.starts_with("HTTP/1.1 200")) {
            recovered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(recovered, "quiver serve answers once Redis is back");
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(dir.path(), &["completions", shell]);
        assert!(out.contains("materialize-incremental"), "{shell}: {out}");
    }
}

/// Reads every batch of a Parquet file.
pub(crate) fn read_parquet(path: &Path) -> Vec<arrow::array::RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `(key, event time µs, f64 column)` of every row of the example's `trips.parquet`.
fn trips(repo: &Path, column: &str) -> Vec<(i64, i64, f64)> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    let mut rows = Vec::new();
    for batch in read_parquet(&repo.join("data/trips.parquet")) {
        let keys = batch["customer_id"].as_primitive::<Int64Type>();
        let times = batch["event_timestamp"].as_primitive::<TimestampMicrosecondType>();
        let values = batch[column].as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            rows.push((keys.value(row), times.value(row), values.value(row)));
        }
    }
    rows
}

/// The rule of the README, evaluated directly: events of `key` with
/// `floor_hop(t − window) <= event time < t`.
fn in_window(events: &[(i64, i64, f64)], key: i64, t: i64, window: i64, hop: i64) -> Vec<f64> {
    let start = (t - window).div_euclid(hop) * hop;
    events
        .iter()
        .filter(|(k, time, _)| *k == key && start <= *time && *time < t)
        .map(|(_, _, value)| *value)
        .collect()
}

/// Windowed features through the binary: `export` equals the rule evaluated directly on
/// the source file for every spine row, and `get` serves the same rule at lookup time.
#[test]
fn windowed_features_export_and_get_end_to_end() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    const MINUTE: i64 = 60_000_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    let dir = init_example();
    let repo = dir.path().join("demo");
    ok(&repo, &["apply"]);
    ok(&repo, &["materialize", "customer_trips"]);
    let features =
        "customer_trips:trips_1h,customer_trips:fare_sum_7d,customer_trips:longest_km_1d";
    let out = ok(
        &repo,
        &[
            "export",
            "--spine",
            "data/spine.parquet",
            "--features",
            features,
            "--out",
            "windows.parquet",
        ],
    );
    assert!(out.contains("Wrote 1000 rows x 9 columns"), "{out}");

    let fares = trips(&repo, "fare");
    let distances = trips(&repo, "distance_km");
    let mut checked = 0;
    let mut nonzero = 0;
    for batch in read_parquet(&repo.join("windows.parquet")) {
        let keys = batch["customer_id"].as_primitive::<Int64Type>();
        let times = batch["event_timestamp"].as_primitive::<TimestampMicrosecondType>();
        let trips_1h = batch["trips_1h"].as_primitive::<Int64Type>();
        let fare_sum_7d = batch["fare_sum_7d"].as_primitive::<Float64Type>();
        let longest_km_1d = batch["longest_km_1d"].as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            let (key, t) = (keys.value(row), times.value(row));
            // Default hops: 5 minutes under 12 hours, 1 hour under 12 days.
            let last_hour = in_window(&fares, key, t, HOUR, 5 * MINUTE);
            assert_eq!(trips_1h.value(row), last_hour.len() as i64, "row {row}");
            let week = in_window(&fares, key, t, 7 * DAY, HOUR);
            if week.is_empty() {
                assert!(fare_sum_7d.is_null(row), "row {row}");
            } else {
                let sum: f64 = week.iter().sum();
                let got = fare_sum_7d.value(row);
                assert!(
                    (got - sum).abs() <= 1e-9 * sum.abs(),
                    "row {row}: {got} vs {sum}"
                );
                nonzero += 1;
            }
            let day = in_window(&distances, key, t, DAY, HOUR);
            let longest = day.iter().copied().reduce(f64::max);
            let served = (!longest_km_1d.is_null(row)).then(|| longest_km_1d.value(row));
            assert_eq!(served, longest, "row {row}");
            checked += 1;
        }
    }
    assert_eq!(checked, 1000);
    assert!(
        nonzero > 500,
        "the spine falls where the trips are: {nonzero}"
    );

    // `get` at the real clock: the rule at the lookup time (read around the call, so an
    // hour boundary passing in between cannot make the test flaky).
    let now = || chrono::Utc::now().timestamp_micros();
    let week = |t| in_window(&fares, 10001, t, 7 * DAY, HOUR).len() as i64;
    let before = week(now());
    let got = json(&ok(
        &repo,
        &[
            "get",
            "--json",
            "--features",
            "customer_trips:trips_7d",
            "--entity",
            "customer_id=10001",
        ],
    ));
    let after = week(now());
    let served = got["results"][1]["values"][0].as_i64().unwrap();
    assert!(served > 0 && (served == before || served == after), "{got}");
}
