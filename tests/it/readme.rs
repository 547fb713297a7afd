//! The README's examples stay true: every ```sql block parses and every ```toml block
//! is a valid `quiver.toml`.

use crate::s3_server::S3Server;
use std::path::Path;

fn blocks(language: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let fence = format!("```{language}\n");
    let mut out = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").unwrap();
        out.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    out
}

#[test]
fn readme_sql_examples_parse() {
    let blocks = blocks("sql");
    assert!(blocks.len() >= 4, "the README documents every statement");
    for block in blocks {
        let (_, diagnostics) = quiver_core::parser::parse_str("README.md", &block, Path::new("."));
        assert!(
            diagnostics.is_empty(),
            "README example does not parse:\n{block}\n{diagnostics}"
        );
    }
}

#[test]
fn readme_config_examples_are_valid() {
    let blocks = blocks("toml");
    assert_eq!(
        blocks.len(),
        2,
        "the configuration and the team's configuration"
    );
    for block in &blocks {
        let config =
            quiver_core::config::Config::parse_with_env(Path::new("README.md"), block, []).unwrap();
        assert_eq!(config.project, "rides");
    }
}

/// The configuration of "Running Quiver for a team", the test's own servers put in for
/// its placeholders (`team::two_servers_…` runs it).
pub fn team_config(registry: &str, redis_seeds: &[String], offline: &str, s3: &S3Server) -> String {
    let mut config = blocks("toml").pop().unwrap();
    let seeds: Vec<String> = redis_seeds.iter().map(|s| format!("{s:?}")).collect();
    for (placeholder, value) in [
        (
            "postgres://quiver@db.internal:5432/rides",
            registry.to_string(),
        ),
        (
            "[\"rediss://redis-1.internal:6379\", \"rediss://redis-2.internal:6379\"]",
            format!("[{}]", seeds.join(", ")),
        ),
        ("s3://rides-features/offline", offline.to_string()),
        ("https://minio.internal:9000", s3.endpoint()),
        (
            "aws_region = \"eu-west-1\"",
            // The test server's region, plain HTTP and its credentials (a real
            // deployment takes credentials from the environment).
            "aws_region = \"us-east-1\"\naws_allow_http = true\naws_access_key_id = \"quiver-test\"\naws_secret_access_key = \"quiver-test-secret\"".to_string(),
        ),
    ] {
        assert!(config.contains(placeholder), "{config}");
        config = config.replace(placeholder, &value);
    }
    config
}

/// The README's aggregation view is a working definition: applied beside the example's
/// views (renamed, as the example has its own `customer_trips`) and exported.
#[test]
fn readme_aggregation_view_applies_and_exports() {
    let block = blocks("sql")
        .into_iter()
        .find(|b| b.contains("WINDOWS ("))
        .expect("the README shows an aggregation view");
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    quiver::example::init_repository(dir.path(), now).unwrap();
    let renamed = block.replace(
        "CREATE FEATURE VIEW customer_trips\n",
        "CREATE FEATURE VIEW readme_trips\n",
    );
    assert_ne!(renamed, block);
    std::fs::write(dir.path().join("features/readme.sql"), renamed).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let export = runtime.block_on(async {
        let store = quiver::FeatureStore::open(dir.path()).unwrap();
        store.apply().await.unwrap();
        store
            .export()
            .with_spine_file("data/spine.parquet")
            .with_features(["readme_trips:*"])
            .with_materialize(true)
            .execute()
            .await
            .unwrap()
    });
    let names: Vec<&str> = export
        .batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    for feature in [
        "trips_1h",
        "fare_std_1d",
        "last_fare_7d",
        "fare_per_trip_7d",
    ] {
        assert!(names.contains(&feature), "{names:?}");
    }
    assert_eq!(export.batch.num_rows(), 1000);
}

/// The README's request source and on-demand view are the example repository's, word
/// for word (so the example the quickstart runs is the one the README explains).
#[test]
fn readme_on_demand_view_is_the_examples() {
    let block = blocks("sql")
        .into_iter()
        .find(|b| b.contains("ON DEMAND"))
        .expect("the README shows an on-demand view");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rides/features");
    let files = ["sources.sql", "views.sql"]
        .map(|f| std::fs::read_to_string(example.join(f)).unwrap())
        .join("\n");
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    for statement in block.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        assert!(
            squash(&files).contains(&squash(statement)),
            "not in examples/rides: {statement}"
        );
    }
}
