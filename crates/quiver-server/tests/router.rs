//! The router without a socket (`oneshot`), one real-socket test, and a fuzz test.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a test failure

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use quiver::{FeatureStore, MaterializeOptions};
use quiver_server::{AppState, router};
use serde_json::{Value, json};
use tower::ServiceExt;

#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;

/// An example repository, applied and materialized (embedded online store).
async fn example(extra_config: &str) -> (tempfile::TempDir, FeatureStore) {
    example_with(|config| config.replace("[server]\n", &format!("[server]\n{extra_config}\n")))
        .await
}

/// An example repository whose `quiver.toml` went through `edit`, applied and
/// materialized.
async fn example_with(edit: impl Fn(String) -> String) -> (tempfile::TempDir, FeatureStore) {
    let dir = tempfile::tempdir().unwrap();
    quiver::example::init_repository(dir.path(), chrono::Utc::now()).unwrap();
    let path = dir.path().join("quiver.toml");
    std::fs::write(&path, edit(std::fs::read_to_string(&path).unwrap())).unwrap();
    let store = FeatureStore::open(dir.path()).unwrap();
    store.apply().await.unwrap();
    store
        .materialize(MaterializeOptions::default())
        .await
        .unwrap();
    (dir, store)
}

/// `conv_rate` of driver 1001.
const LOOKUP_1001: &str =
    r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}"#;

async fn call(
    store: &FeatureStore,
    method: &str,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    send(
        &router(AppState::new(store.clone()).unwrap()),
        method,
        uri,
        body,
        headers,
    )
    .await
}

/// One request through `app`; the body as JSON (or as a JSON string when it is not JSON).
async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).to_string()));
    (status, value)
}

#[tokio::test]
async fn get_online_features_speaks_feasts_format() {
    let (_dir, store) = example("").await;
    // A raw body: entity columns keep the request's order (json! would sort them).
    let body = r#"{
        "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:quality", "customer_profile:current_balance"],
        "entities": {"driver_id": [1001, "1002", 99999], "customer_id": [10001, 10002, 10003]}
    }"#;
    let (status, response) = call(&store, "POST", "/get-online-features", body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(
        response["metadata"]["feature_names"],
        json!([
            "driver_id",
            "customer_id",
            "conv_rate",
            "quality",
            "current_balance"
        ])
    );
    let results = response["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    // Entity columns first, converted to their key types (as Feast answers: Feast's CLI
    // sends keys as strings), PRESENT at the epoch.
    assert_eq!(results[0]["values"], json!([1001, 1002, 99999]));
    assert_eq!(
        results[0]["statuses"],
        json!(["PRESENT", "PRESENT", "PRESENT"])
    );
    assert_eq!(results[0]["event_timestamps"][0], "1970-01-01T00:00:00Z");
    // Features: one entry per entity row; the unknown driver is NOT_FOUND with null.
    assert_eq!(
        results[2]["statuses"],
        json!(["PRESENT", "PRESENT", "NOT_FOUND"])
    );
    assert!(results[2]["values"][0].is_f64());
    assert_eq!(results[2]["values"][2], Value::Null);
    assert!(
        results[2]["event_timestamps"][0]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let body = r#"{"feature_service": "driver_ranking", "entities": {"driver_id": [1001], "customer_id": [10001]}, "full_feature_names": true}"#;
    let (status, response) = call(&store, "POST", "/get-online-features", body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(
        response["metadata"]["feature_names"][2],
        "driver_hourly_stats__conv_rate"
    );
}

#[tokio::test]
async fn bad_requests_are_4xx_that_name_the_problem() {
    let (_dir, store) = example("max_entities = 3").await;
    let cases = [
        ("", StatusCode::BAD_REQUEST, "the body is empty"),
        ("{not json", StatusCode::BAD_REQUEST, "invalid request body"),
        (
            r#"{"features": ["driver_hourly_stat:conv_rate"], "entities": {"driver_id": [1]}}"#,
            StatusCode::NOT_FOUND,
            "unknown feature view `driver_hourly_stat`; did you mean `driver_hourly_stats`?",
        ),
        (
            r#"{"features": ["driver_hourly_stats:conv_rte"], "entities": {"driver_id": [1]}}"#,
            StatusCode::NOT_FOUND,
            "has no feature `conv_rte`; did you mean `conv_rate`?",
        ),
        (
            r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"customer_id": [1]}}"#,
            StatusCode::BAD_REQUEST,
            "missing entity column `driver_id`",
        ),
        (
            r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1, 2], "customer_id": [1]}}"#,
            StatusCode::BAD_REQUEST,
            "entity columns differ in length: `driver_id` has 2 values, `customer_id` has 1",
        ),
        (
            r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [true]}}"#,
            StatusCode::BAD_REQUEST,
            "entity column `driver_id` row 0: true is not an integer",
        ),
        (
            r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {}}"#,
            StatusCode::BAD_REQUEST,
            "\"entities\" holds no columns",
        ),
        (
            r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": []}}"#,
            StatusCode::BAD_REQUEST,
            "\"entities\" holds no rows",
        ),
        (
            r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1], "driver_id": [2]}}"#,
            StatusCode::BAD_REQUEST,
            "column `driver_id` appears twice",
        ),
        (
            r#"{"features": ["driver_hourly_stats:conv_rate"], "feature_service": "driver_ranking", "entities": {"driver_id": [1]}}"#,
            StatusCode::BAD_REQUEST,
            "give either `features` or `feature_service`, not both",
        ),
        (
            r#"[{"features": ["driver_hourly_stats:conv_rate"]}]"#,
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        ),
        (
            r#"{"features": [], "entities": {"driver_id": [1]}}"#,
            StatusCode::BAD_REQUEST,
            "no features requested",
        ),
        (
            r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1, 2, 3, 4]}}"#,
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceed the limit of 3",
        ),
        (
            r#"{"features": ["conv_rate"], "entities": {"driver_id": [1]}}"#,
            StatusCode::BAD_REQUEST,
            "bad feature reference `conv_rate`",
        ),
    ];
    for (body, status, message) in cases {
        let (got, response) = call(&store, "POST", "/get-online-features", body, &[]).await;
        assert_eq!(got, status, "{body}: {response}");
        assert!(
            response["error"].as_str().unwrap().contains(message),
            "{body}: {response}"
        );
        assert!(response["kind"].is_string());
    }
    let (status, response) = call(&store, "GET", "/nowhere", "", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{response}");
    // Fields Quiver does not know are ignored, as Feast's server ignores them.
    let body = r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1]}, "extra": 1, "include_feature_view_version_metadata": false}"#;
    let (status, response) = call(&store, "POST", "/get-online-features", body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    // HTTP-level errors are JSON too.
    let (status, response) = call(&store, "GET", "/push", "", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{response}");
    assert_eq!(response["kind"], "invalid_argument");
    let long = format!("/api/v1/feature-views/{}", "x".repeat(10_000));
    let (status, response) = call(&store, "GET", &long, "", &[]).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG, "{response}");
    assert_eq!(response["kind"], "resource_exhausted");
    let (status, response) = call(&store, "GET", "/api/v1/feature-views/%FF%FE", "", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    let (status, response) = call(&store, "POST", "/search", "{}", &[]).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{response}");
    assert_eq!(response["kind"], "unimplemented");
}

#[tokio::test]
async fn push_writes_newer_wins_and_rejects_bad_rows_whole() {
    let (_dir, store) = example("api_key = \"s3cret\"").await;
    let now = chrono::Utc::now().to_rfc3339();
    let push = json!({"feature_view": "driver_hourly_stats", "to": "online", "df": {
        "driver_id": [5001, 5002], "event_timestamp": [now, now], "created": [now, now],
        "conv_rate": [0.25, null], "acc_rate": [0.5, 0.5], "avg_daily_trips": [10, 11], "quality": [0.125, null]}});
    let key = [("x-api-key", "s3cret")];
    let (status, _) = call(&store, "POST", "/push", &push.to_string(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &store,
        "POST",
        "/push",
        &push.to_string(),
        &[("x-api-key", "nope")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, response) = call(&store, "POST", "/push", &push.to_string(), &key).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["views"][0]["online"]["written"], 2);

    let lookup = json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [5001, 5002]}});
    let (_, response) = call(
        &store,
        "POST",
        "/get-online-features",
        &lookup.to_string(),
        &[],
    )
    .await;
    assert_eq!(response["results"][1]["values"], json!([0.25, null]));
    assert_eq!(
        response["results"][1]["statuses"],
        json!(["PRESENT", "NULL_VALUE"])
    );

    // One bad value rejects the whole request: nothing is written.
    let mut bad = push.clone();
    bad["df"]["driver_id"] = json!([5003, 5004]);
    bad["df"]["avg_daily_trips"] = json!([1, "many"]);
    let (status, response) = call(
        &store,
        "POST",
        "/push",
        &bad.to_string(),
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        response["error"]
            .as_str()
            .unwrap()
            .contains("df column `avg_daily_trips` row 1: \"many\" is not an integer"),
        "{response}"
    );
    let lookup =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [5003]}});
    let (_, response) = call(
        &store,
        "POST",
        "/get-online-features",
        &lookup.to_string(),
        &[],
    )
    .await;
    assert_eq!(response["results"][1]["statuses"], json!(["NOT_FOUND"]));

    // Materialization needs the key too.
    let (status, _) = call(&store, "POST", "/materialize-incremental", "{}", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, response) = call(
        &store,
        "POST",
        "/materialize",
        r#"{"feature_views": ["driver_hourly_stats"]}"#,
        &key,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response[0]["offline"]["view"], "driver_hourly_stats");
}

/// `conv_rate` of driver 1001 in a training set at `at`.
async fn exported_conv_rate(
    store: &FeatureStore,
    driver: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> Option<f64> {
    use arrow::array::{Array, AsArray, Int64Array, RecordBatch, TimestampMicrosecondArray};
    use arrow::datatypes::Float64Type;
    let spine = RecordBatch::try_from_iter(vec![
        (
            "driver_id",
            std::sync::Arc::new(Int64Array::from(vec![driver])) as _,
        ),
        (
            "event_timestamp",
            std::sync::Arc::new(
                TimestampMicrosecondArray::from(vec![at.timestamp_micros()]).with_timezone("UTC"),
            ) as _,
        ),
    ])
    .unwrap();
    let export = store
        .export()
        .with_spine(spine)
        .with_features(["driver_hourly_stats:conv_rate"])
        .execute()
        .await
        .unwrap();
    let column = export.batch.column_by_name("conv_rate").unwrap();
    let values = column.as_primitive::<Float64Type>();
    values.is_valid(0).then(|| values.value(0))
}

#[tokio::test]
async fn push_to_offline_is_exported_and_survives_rematerialization() {
    let (_dir, store) = example("").await;
    // Inside the materialized history, at a time no generated row has.
    let at =
        chrono::Utc::now() - chrono::Duration::hours(2) + chrono::Duration::milliseconds(17_123);
    let before = exported_conv_rate(&store, 1001, at).await;
    let online_before = call(&store, "POST", "/get-online-features", LOOKUP_1001, &[])
        .await
        .1["results"][1]["values"][0]
        .clone();
    let push = json!({"feature_view": "driver_hourly_stats", "to": "offline", "df": {
        "driver_id": [1001], "event_timestamp": [at.to_rfc3339()], "created": [at.to_rfc3339()],
        "conv_rate": [0.123], "acc_rate": [0.5], "avg_daily_trips": [7], "quality": [0.0615]}});
    let (status, response) = call(&store, "POST", "/push", &push.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["views"][0]["offline"]["rows"], 1, "{response}");
    assert!(response["views"][0].get("online").is_none(), "{response}");
    assert_ne!(before, Some(0.123));
    assert_eq!(exported_conv_rate(&store, 1001, at).await, Some(0.123));
    // Just before the pushed row, the training set is as it was.
    assert_eq!(
        exported_conv_rate(&store, 1001, at - chrono::Duration::microseconds(1)).await,
        before
    );
    // "offline" leaves the online store alone.
    let (_, response) = call(&store, "POST", "/get-online-features", LOOKUP_1001, &[]).await;
    assert_eq!(response["results"][1]["values"][0], online_before);

    // Materializing the same history again from the sources keeps the pushed row.
    let (status, response) = call(&store, "POST", "/materialize", "{}", &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(exported_conv_rate(&store, 1001, at).await, Some(0.123));
    // A later push of the same (key, event time, created) replaces it.
    let mut again = push.clone();
    again["df"]["conv_rate"] = json!([0.456]);
    let (status, response) = call(&store, "POST", "/push", &again.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(exported_conv_rate(&store, 1001, at).await, Some(0.456));
    call(&store, "POST", "/materialize", "{}", &[]).await;
    assert_eq!(exported_conv_rate(&store, 1001, at).await, Some(0.456));
}

#[tokio::test]
async fn push_to_a_source_runs_each_reading_views_query() {
    let (_dir, store) = example("").await;
    let now = chrono::Utc::now();
    // Source rows (the view derives `quality` and drops rows without `conv_rate`), with
    // times as pandas writes them.
    let text = now.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string();
    let push = json!({"push_source_name": "driver_stats", "to": "online_and_offline", "df": {
        "driver_id": [1002, 1003], "event_timestamp": [text, text], "created": [text, text],
        "conv_rate": [0.5, null], "acc_rate": [0.5, 0.9], "avg_daily_trips": [3, 4]}});
    let (status, response) = call(&store, "POST", "/push", &push.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["views"][0]["view"], "driver_hourly_stats");
    assert_eq!(response["views"][0]["rows"], 1, "{response}");
    assert_eq!(response["views"][0]["online"]["written"], 1, "{response}");
    assert_eq!(response["views"][0]["offline"]["rows"], 1, "{response}");
    let (_, response) = call(
        &store,
        "POST",
        "/get-online-features",
        r#"{"features": ["driver_hourly_stats:quality", "driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1002]}}"#,
        &[],
    )
    .await;
    assert_eq!(
        response["results"][1]["values"],
        json!([0.25]),
        "{response}"
    );
    assert_eq!(response["results"][2]["values"], json!([0.5]), "{response}");
    // Rows the view's query filters out all: the view is reported with 0 rows.
    let mut filtered = push.clone();
    filtered["df"] = json!({"driver_id": [1004], "event_timestamp": [text], "created": [text],
        "conv_rate": [null], "acc_rate": [0.5], "avg_daily_trips": [1]});
    let (status, response) = call(&store, "POST", "/push", &filtered.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(
        response["views"],
        json!([{"view": "driver_hourly_stats", "rows": 0}]),
        "{response}"
    );
    // Offline too, once the history up to the push is materialized.
    store
        .materialize(MaterializeOptions {
            end: Some(now + chrono::Duration::seconds(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(exported_conv_rate(&store, 1002, now).await, Some(0.5));

    // Bad input names the problem; nothing is written.
    let cases = [
        (
            json!({"push_source_name": "driver_stat", "df": {"driver_id": [1]}}),
            StatusCode::NOT_FOUND,
            "unknown push target `driver_stat`: name a feature view or a source; did you mean `driver_stats`?",
        ),
        (
            json!({"push_source_name": "driver_stats", "df": {"driver_id": [1], "event_timestamp": ["2026-01-01T00:00:00Z"]}}),
            StatusCode::BAD_REQUEST,
            "missing column `created` of source `driver_stats`",
        ),
        (
            json!({"push_source_name": "driver_stats", "df": {"driver_id": [1], "conv_rat": [1.0]}}),
            StatusCode::BAD_REQUEST,
            "source `driver_stats` has no column `conv_rat`; did you mean `conv_rate`?",
        ),
        (
            json!({"push_source_name": "driver_stats", "df": {"driver_id": [1], "event_timestamp": ["yesterday"], "created": [null], "conv_rate": [1.0], "acc_rate": [1.0], "avg_daily_trips": [1]}}),
            StatusCode::BAD_REQUEST,
            "df column `event_timestamp` row 0: \"yesterday\" is not a time",
        ),
        (
            json!({"feature_view": "driver_hourly_stats", "to": "everywhere", "df": {"driver_id": [1]}}),
            StatusCode::BAD_REQUEST,
            "\"to\": `everywhere` is not one of online, offline, online_and_offline",
        ),
        (
            json!({"feature_view": "driver_hourly_stats", "push_source_name": "driver_stats", "df": {"driver_id": [1]}}),
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            json!({"feature_view": "driver_hourly_stats", "df": {"driver_id": [1], "event_timestamp": []}}),
            StatusCode::BAD_REQUEST,
            "df columns differ in length: `driver_id` has 1 values, `event_timestamp` has 0",
        ),
        (
            json!({"feature_view": "driver_hourly_stats", "df": {"driver_id": [null], "event_timestamp": ["2026-01-01T00:00:00Z"], "conv_rate": [1.0], "acc_rate": [1.0], "avg_daily_trips": [1], "quality": [1.0]}}),
            StatusCode::BAD_REQUEST,
            "row 0, column `driver_id`: a key is null",
        ),
    ];
    for (body, status, message) in cases {
        let (got, response) = call(&store, "POST", "/push", &body.to_string(), &[]).await;
        assert_eq!(got, status, "{body}: {response}");
        assert!(
            response["error"].as_str().unwrap().contains(message),
            "{body}: {response}"
        );
    }
}

#[tokio::test]
async fn health_metrics_openapi_and_registry() {
    let (_dir, store) = example("").await;
    let (status, response) = call(&store, "GET", "/health", "", &[]).await;
    assert_eq!(
        (status, response),
        (StatusCode::OK, json!({"status": "ok"}))
    );

    call(&store, "POST", "/get-online-features", LOOKUP_1001, &[]).await;
    let state = AppState::new(store.clone()).unwrap();
    let app = router(state);
    for _ in 0..2 {
        let request = Request::post("/get-online-features")
            .body(Body::from(LOOKUP_1001))
            .unwrap();
        app.clone().oneshot(request).await.unwrap();
    }
    let response = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            "quiver_http_requests_total{endpoint=\"/get-online-features\",status=\"200\"} 2"
        ),
        "{text}"
    );
    assert!(text.contains("quiver_lookup_entities_count 2"), "{text}");
    assert!(
        text.contains("quiver_feature_freshness_seconds{view=\"driver_hourly_stats\"}"),
        "{text}"
    );

    let (status, document) = call(&store, "GET", "/openapi.json", "", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
    let current = serde_json::to_string_pretty(&document).unwrap() + "\n";
    if std::env::var_os("QUIVER_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    assert!(
        std::fs::read_to_string(&path).unwrap_or_default() == current,
        "schemas/openapi.json is out of date; run `QUIVER_UPDATE_SCHEMAS=1 cargo test -p quiver-server` and commit it"
    );

    let (_, views) = call(&store, "GET", "/api/v1/feature-views", "", &[]).await;
    assert_eq!(views.as_array().unwrap().len(), 4);
    let (_, view) = call(
        &store,
        "GET",
        "/api/v1/feature-views/driver_hourly_stats",
        "",
        &[],
    )
    .await;
    assert_eq!(view["version"], 1);
    let (status, _) = call(&store, "GET", "/api/v1/feature-views/nope", "", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, services) = call(&store, "GET", "/api/v1/feature-services", "", &[]).await;
    assert_eq!(services[0]["name"], "driver_ranking");
    let (_, entities) = call(&store, "GET", "/api/v1/entities", "", &[]).await;
    assert_eq!(entities.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn health_is_503_when_redis_is_down() {
    let dir = tempfile::tempdir().unwrap();
    quiver::example::init_repository(dir.path(), chrono::Utc::now()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("quiver.toml");
    let config = std::fs::read_to_string(&path).unwrap().replace(
        "type = \"embedded\"",
        &format!(
            "type = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\nconnect_timeout_ms = 200"
        ),
    );
    std::fs::write(path, config).unwrap();
    let store = FeatureStore::open(dir.path()).unwrap();
    let (status, response) = call(&store, "GET", "/health", "", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{response}");
    assert_eq!(response["kind"], "unavailable", "{response}");
    assert!(
        response["error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{response}"
    );
}

#[tokio::test]
async fn real_socket_round_trip_and_graceful_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, store) = example("").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(quiver_server::serve(store, listener, async {
        let _ = stopped.await;
    }));
    let mut stream = None;
    for _ in 0..50 {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut stream = stream.expect("the server listens");
    let body = LOOKUP_1001;
    let request = format!(
        "POST /get-online-features HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.contains("\"feature_names\":[\"driver_id\",\"conv_rate\"]"),
        "{response}"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever arrives, the answer is never a 5xx (and never a panic).
    #[test]
    fn malformed_bodies_never_5xx(body in prop_oneof![
        ".{0,200}",
        Just(r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1]}}"#.to_string()),
        prop::collection::vec(prop_oneof![Just("{"), Just("}"), Just("["), Just("]"), Just("\"entities\""), Just(":"), Just(","),
            Just("\"features\""), Just("\"driver_hourly_stats:conv_rate\""), Just("1e999"), Just("null"), Just("\"driver_id\""),
            Just("-1"), Just("\"x\""), Just("true"), Just("[[[]]]")], 0..30).prop_map(|parts| parts.concat()),
    ], endpoint in prop_oneof![Just("/get-online-features"), Just("/push"), Just("/materialize")]) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = shared_store().await;
            let (status, response) = call(&store, "POST", endpoint, &body, &[]).await;
            prop_assert!(status.as_u16() < 500, "{} {}: {}", endpoint, status, response);
            Ok(())
        })?;
    }
}

/// One applied example for the fuzz cases (materialized once).
async fn shared_store() -> FeatureStore {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        quiver::example::init_repository(dir.path(), chrono::Utc::now()).unwrap();
        let path = dir.path().join("quiver.toml");
        let config = std::fs::read_to_string(&path)
            .unwrap()
            .replace("[server]\n", "[server]\napi_key = \"k\"\n");
        std::fs::write(path, config).unwrap();
        dir
    });
    let store = FeatureStore::open(dir.path()).unwrap();
    store.apply().await.unwrap();
    store
}

/// A copy of the Feast-template fixture (`tests/feast/feature_repo`) in a temp folder.
fn feast_repo() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/feast/feature_repo"),
        dir.path(),
    );
    dir
}

fn store_at(dir: &Path, now: &str) -> FeatureStore {
    FeatureStore::open(dir)
        .unwrap()
        .with_clock(std::sync::Arc::new(quiver::clock::FixedClock(
            now.parse().unwrap(),
        )))
}

/// Feast's documented feature-server examples (docs/reference/feature-servers/
/// python-feature-server.md), sent byte for byte to Quiver serving Feast's template
/// repository. The documented lookup response shows an old row-per-entity layout; the
/// values, statuses and times asserted here are the documented ones, in the layout
/// today's Feast server returns: one result per feature name, entity column first.
#[tokio::test]
async fn replays_feasts_documented_examples() {
    let dir = feast_repo();
    let store = store_at(dir.path(), "2022-01-01T12:00:00Z");
    store.apply().await.unwrap();
    // `feast materialize-incremental $(date +%Y-%m-%d)`
    let (status, response) = call(
        &store,
        "POST",
        "/materialize-incremental",
        r#"{"end_ts": "2022-01-01T12:00:00", "feature_views": ["driver_hourly_stats"]}"#,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{response}");

    let lookup = r#"{
    "features": [
      "driver_hourly_stats:conv_rate",
      "driver_hourly_stats:acc_rate",
      "driver_hourly_stats:avg_daily_trips"
    ],
    "entities": {
      "driver_id": [1001, 1002, 1003]
    }
  }"#;
    let at = "2021-12-31T23:00:00Z";
    let expected = json!({
        "metadata": {"feature_names": ["driver_id", "conv_rate", "acc_rate", "avg_daily_trips"]},
        "results": [
            {"values": [1001, 1002, 1003], "statuses": ["PRESENT", "PRESENT", "PRESENT"],
             "event_timestamps": ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"]},
            {"values": [0.7037263512611389, 0.038169607520103455, 0.9665873050689697],
             "statuses": ["PRESENT", "PRESENT", "PRESENT"], "event_timestamps": [at, at, at]},
            {"values": [0.8724706768989563, 0.48534533381462097, 0.7793770432472229],
             "statuses": ["PRESENT", "PRESENT", "PRESENT"], "event_timestamps": [at, at, at]},
            {"values": [308, 332, 779],
             "statuses": ["PRESENT", "PRESENT", "PRESENT"], "event_timestamps": [at, at, at]},
        ]
    });
    let (status, response) = call(&store, "POST", "/get-online-features", lookup, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response, expected);

    // "It's also possible to specify a feature service name instead of the list of features"
    let by_service = r#"{
    "feature_service": "driver_activity",
    "entities": {
      "driver_id": [1001, 1002, 1003]
    }
  }"#;
    let (status, response) = call(&store, "POST", "/get-online-features", by_service, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response, expected);

    // Pushing to the online and offline stores, months later.
    let store = store_at(dir.path(), "2022-05-13T12:00:00Z");
    let push = r#"{
    "push_source_name": "driver_stats_push_source",
    "df": {
            "driver_id": [1001],
            "event_timestamp": ["2022-05-13 10:59:42+00:00"],
            "created": ["2022-05-13 10:59:42"],
            "conv_rate": [1.0],
            "acc_rate": [1.0],
            "avg_daily_trips": [1000]
    },
    "to": "online_and_offline"
  }"#;
    let (status, response) = call(&store, "POST", "/push", push, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["views"][0]["online"]["written"], 1, "{response}");
    assert_eq!(response["views"][0]["offline"]["rows"], 1, "{response}");
    // The older example: no "to" (online), times without a zone.
    let push_online = r#"{
    "push_source_name": "driver_stats_push_source",
    "df": {
            "driver_id": [1002],
            "event_timestamp": ["2022-05-13 10:59:42"],
            "created": ["2022-05-13 10:59:42"],
            "conv_rate": [1.0],
            "acc_rate": [1.0],
            "avg_daily_trips": [1000]
    }
  }"#;
    let (status, response) = call(&store, "POST", "/push", push_online, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert!(response["views"][0].get("offline").is_none(), "{response}");
    let (_, response) = call(&store, "POST", "/get-online-features", lookup, &[]).await;
    let pushed = "2022-05-13T10:59:42Z";
    assert_eq!(response["results"][1]["values"], json!([1.0, 1.0, null]));
    // Driver 1003's value fell out of its 1-day max age months ago: the store dropped it
    // (one TTL after that), so it is NOT_FOUND rather than OUTSIDE_MAX_AGE.
    assert_eq!(
        response["results"][1]["statuses"],
        json!(["PRESENT", "PRESENT", "NOT_FOUND"])
    );
    assert_eq!(
        response["results"][3]["event_timestamps"],
        json!([pushed, pushed, "1970-01-01T00:00:00Z"])
    );
    assert_eq!(response["results"][3]["values"], json!([1000, 1000, null]));

    // Materializing features, with the documented bodies.
    let (status, response) = call(
        &store,
        "POST",
        "/materialize",
        r#"{
    "start_ts": "2021-01-01T00:00:00",
    "end_ts": "2021-01-02T00:00:00",
    "feature_views": ["driver_hourly_stats"]
}"#,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(
        response[0]["offline"]["interval"],
        json!({"start": 1_609_459_200_000_000_i64, "end": 1_609_545_600_000_000_i64})
    );
    let (status, response) = call(
        &store,
        "POST",
        "/materialize",
        r#"{
    "feature_views": ["driver_hourly_stats"],
    "disable_event_timestamp": true
}"#,
        &[],
    )
    .await;
    // Feast's "materialize with no event timestamps": all history up to now; the rows
    // keep their own event times.
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response[0]["offline"]["interval"]["start"], Value::Null);
}

/// Request headers of a case.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// Replaces every `…seconds` field (run times) so snapshots are stable.
fn redact_seconds(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key.ends_with("seconds") {
                    *v = json!("[seconds]");
                } else {
                    redact_seconds(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_seconds),
        _ => {}
    }
}

/// Every endpoint and every error, as JSON snapshots (`snapshots/router__*.snap`):
/// the example repository generated at a fixed instant and served with a fixed clock,
/// so the answers are exact.
#[tokio::test]
async fn every_endpoint_and_error_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let now = "2026-01-15T12:00:00Z";
    quiver::example::init_repository(dir.path(), now.parse().unwrap()).unwrap();
    let path = dir.path().join("quiver.toml");
    let config = std::fs::read_to_string(&path).unwrap().replace(
        "[server]\n",
        "[server]\napi_key = \"s3cret\"\nmax_entities = 3\nmax_body_bytes = 4096\n",
    );
    std::fs::write(path, config).unwrap();
    let store = store_at(dir.path(), now);
    store.apply().await.unwrap();
    let key = [("x-api-key", "s3cret")];
    let pushed_at = "2026-01-15T11:30:00Z";
    let source_pushed_at = "2026-01-15T11:50:00Z";
    let app = router(AppState::new(store.clone()).unwrap());
    let big = format!(
        r#"{{"features": ["driver_hourly_stats:conv_rate"], "entities": {{"driver_id": [{}]}}}}"#,
        vec!["1001"; 1000].join(",")
    );
    let cases: Vec<(&str, &str, &str, String, Headers)> = vec![
        ("materialize", "POST", "/materialize", r#"{"end_ts": "2026-01-15T12:00:00Z"}"#.into(), &key),
        ("materialize_incremental", "POST", "/materialize-incremental", r#"{"end_ts": "2026-01-15T12:00:00Z"}"#.into(), &key),
        ("materialize_no_api_key", "POST", "/materialize", "{}".into(), &[]),
        ("materialize_wrong_api_key", "POST", "/materialize", "{}".into(), &[("x-api-key", "nope")]),
        ("materialize_bad_time", "POST", "/materialize", r#"{"end_ts": "noon"}"#.into(), &key),
        ("materialize_unknown_view", "POST", "/materialize", r#"{"feature_views": ["driver_stats"]}"#.into(), &key),
        ("lookup_features", "POST", "/get-online-features",
            r#"{"features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips", "customer_profile:current_balance"], "entities": {"driver_id": [1001, "1002", 99999], "customer_id": [10001, 10002, 10003]}}"#.into(), &[]),
        ("lookup_service_full_names", "POST", "/get-online-features",
            r#"{"feature_service": "driver_ranking", "entities": {"driver_id": [1001], "customer_id": [10001]}, "full_feature_names": true}"#.into(), &[]),
        ("lookup_empty_body", "POST", "/get-online-features", String::new(), &[]),
        ("lookup_malformed_json", "POST", "/get-online-features", "{not json".into(), &[]),
        ("lookup_unknown_view", "POST", "/get-online-features", r#"{"features": ["driver_hourly_stat:conv_rate"], "entities": {"driver_id": [1]}}"#.into(), &[]),
        ("lookup_unknown_feature", "POST", "/get-online-features", r#"{"features": ["driver_hourly_stats:conv_rte"], "entities": {"driver_id": [1]}}"#.into(), &[]),
        ("lookup_unknown_service", "POST", "/get-online-features", r#"{"feature_service": "driver_rankin", "entities": {"driver_id": [1]}}"#.into(), &[]),
        ("lookup_bad_reference", "POST", "/get-online-features", r#"{"features": ["conv_rate"], "entities": {"driver_id": [1]}}"#.into(), &[]),
        ("lookup_missing_entity_column", "POST", "/get-online-features", r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"customer_id": [1]}}"#.into(), &[]),
        ("lookup_ragged_entities", "POST", "/get-online-features", r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1, 2], "customer_id": [1]}}"#.into(), &[]),
        ("lookup_wrong_type", "POST", "/get-online-features", r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [true]}}"#.into(), &[]),
        ("lookup_no_entities", "POST", "/get-online-features", r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {}}"#.into(), &[]),
        ("lookup_no_features", "POST", "/get-online-features", r#"{"features": [], "entities": {"driver_id": [1]}}"#.into(), &[]),
        ("lookup_unknown_field", "POST", "/get-online-features", r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1]}, "extra": 1}"#.into(), &[]),
        ("lookup_too_many_entities", "POST", "/get-online-features", r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1, 2, 3, 4]}}"#.into(), &[]),
        ("lookup_body_too_large", "POST", "/get-online-features", big, &[]),
        ("push_view_online", "POST", "/push",
            json!({"feature_view": "driver_hourly_stats", "to": "online", "df": {"driver_id": [1001], "event_timestamp": [pushed_at], "created": [pushed_at], "conv_rate": [0.5], "acc_rate": [0.5], "avg_daily_trips": [5], "quality": [0.25]}}).to_string(), &key),
        ("push_source_online_and_offline", "POST", "/push",
            json!({"push_source_name": "driver_stats", "to": "online_and_offline", "df": {"driver_id": [1002, 1003], "event_timestamp": [source_pushed_at, source_pushed_at], "created": [source_pushed_at, null], "conv_rate": [0.5, null], "acc_rate": [0.5, 0.5], "avg_daily_trips": [5, 6]}}).to_string(), &key),
        ("lookup_after_push", "POST", "/get-online-features", r#"{"features": ["driver_hourly_stats:*"], "entities": {"driver_id": [1001, 1002]}}"#.into(), &[]),
        ("push_no_api_key", "POST", "/push", "{}".into(), &[]),
        ("push_no_target", "POST", "/push", r#"{"df": {"driver_id": [1]}}"#.into(), &key),
        ("push_unknown_target", "POST", "/push", r#"{"push_source_name": "driver_stat", "df": {"driver_id": [1]}}"#.into(), &key),
        ("push_bad_value", "POST", "/push",
            json!({"feature_view": "driver_hourly_stats", "df": {"driver_id": [1001, 1002], "event_timestamp": [pushed_at, pushed_at], "conv_rate": [0.5, "high"], "acc_rate": [0.5, 0.5], "avg_daily_trips": [5, 5], "quality": [0.25, 0.25]}}).to_string(), &key),
        ("push_missing_column", "POST", "/push", json!({"feature_view": "driver_hourly_stats", "df": {"driver_id": [1001], "event_timestamp": [pushed_at]}}).to_string(), &key),
        ("push_unknown_column", "POST", "/push", json!({"feature_view": "driver_hourly_stats", "df": {"driver_id": [1001], "conv_rat": [1.0]}}).to_string(), &key),
        ("push_bad_to", "POST", "/push", json!({"feature_view": "driver_hourly_stats", "to": "disk", "df": {"driver_id": [1001]}}).to_string(), &key),
        ("health", "GET", "/health", String::new(), &[]),
        ("feature_views", "GET", "/api/v1/feature-views", String::new(), &[]),
        ("feature_view", "GET", "/api/v1/feature-views/customer_profile", String::new(), &[]),
        ("feature_view_unknown", "GET", "/api/v1/feature-views/customer", String::new(), &[]),
        ("feature_services", "GET", "/api/v1/feature-services", String::new(), &[]),
        ("entities", "GET", "/api/v1/entities", String::new(), &[]),
        ("unknown_endpoint", "GET", "/get-features", String::new(), &[]),
    ];
    for (name, method, uri, body, headers) in cases {
        let (status, mut response) = send(&app, method, uri, &body, headers).await;
        redact_seconds(&mut response);
        insta::assert_json_snapshot!(name, json!({"status": status.as_u16(), "body": response}));
    }

    // /metrics: the series it exports, with their labels (values vary with timing).
    let (_, text) = send(&app, "GET", "/metrics", "", &[]).await;
    let series: std::collections::BTreeSet<String> = text
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(' ').next())
        .filter(|series| !series.contains("le=\""))
        .map(str::to_string)
        .collect();
    insta::assert_json_snapshot!("metrics_series", series);
}

/// A second materialization of a view while one runs is refused with 409; once the
/// first finishes the view can be materialized again.
#[tokio::test]
async fn concurrent_materialization_of_a_view_is_409() {
    let (dir, store) = example("").await;
    let app = router(AppState::new(store.clone()).unwrap());
    let request = || {
        Request::post("/materialize")
            .body(Body::from(r#"{"feature_views": ["driver_hourly_stats"]}"#))
            .unwrap()
    };
    // Hold the offline table's lock, as a `quiver materialize` in another process would:
    // the first request waits for it while it holds the view.
    let lock_path = dir.path().join("data/offline/driver_hourly_stats/v1/_lock");
    let lock = std::fs::File::options()
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.lock().unwrap();
    let first = tokio::spawn(app.clone().oneshot(request()));
    // On this single-threaded runtime the spawned request runs while the test sleeps: it
    // checks the request (reading the registry on a blocking thread), claims the view and
    // then waits for the lock.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let conflict = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.clone().oneshot(request()),
    )
    .await
    .expect("the second request is answered at once, not queued behind the first")
    .unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let body = conflict.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["kind"], "conflict", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("driver_hourly_stats"),
        "{body}"
    );
    lock.unlock().unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let again = app.oneshot(request()).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

/// One `curl` line: method, path, headers, body.
struct Curl {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// The `curl` lines of the README's "HTTP feature server" section.
fn readme_curls() -> Vec<Curl> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    // Every `curl` line of every sh block (other commands in a block are skipped).
    let block: String = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .flat_map(|b| b.split("\n"))
        .scan(false, |in_curl, line| {
            if line.starts_with("curl ") {
                *in_curl = true;
            } else if !line.starts_with(' ') {
                *in_curl = false;
            }
            Some((*in_curl).then(|| format!("{line}\n")))
        })
        .flatten()
        .collect();
    assert!(
        block.matches("curl -s ").count() >= 10,
        "the README shows the endpoints with curl"
    );
    let mut out = Vec::new();
    for command in block.split("curl -s ").skip(1) {
        let command = command.trim().trim_end_matches(';');
        let (target, mut rest) = command.split_once(' ').unwrap_or((command, ""));
        let path = target
            .strip_prefix("localhost:6566")
            .expect("curls go to localhost:6566")
            .to_string();
        let mut headers = Vec::new();
        let mut body = String::new();
        while let Some(flag) = rest.trim_start().get(..2) {
            let quoted = rest.trim_start()[2..].trim_start();
            let quoted = quoted.strip_prefix('\'').expect("flag values are quoted");
            let end = quoted.find('\'').unwrap();
            let value = quoted[..end].to_string();
            match flag {
                "-H" => {
                    let (k, v) = value.split_once(": ").unwrap();
                    headers.push((k.to_string(), v.to_string()));
                }
                "-d" => body = value,
                other => panic!("unexpected curl flag {other}"),
            }
            rest = &quoted[end + 1..];
        }
        let method = if body.is_empty() { "GET" } else { "POST" };
        out.push(Curl {
            method: method.to_string(),
            path,
            headers,
            body,
        });
    }
    out
}

#[tokio::test]
async fn readme_curl_examples_work() {
    let (_dir, store) = example("").await;
    let curls = readme_curls();
    assert!(curls.len() >= 13, "{}", curls.len());
    let app = router(AppState::new(store).unwrap());
    for Curl {
        method,
        path,
        headers,
        body,
    } in curls
    {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| k != "x-api-key") // the example repository has no key
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, response) = send(&app, &method, &path, &body, &headers).await;
        assert!(
            status.is_success(),
            "{method} {path} {body}: {status} {response}"
        );
    }
}

/// End to end against a private `redis-server`: materialize into it, look up and push
/// over HTTP; Redis killed → 503 naming it; Redis back → the same server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_on_redis_with_an_outage() {
    let mut redis = redis_server::RedisServer::start();
    let url = redis.url();
    let (_dir, store) = example_with(|config| {
        config.replace(
            "type = \"embedded\"",
            &format!(
                "type = \"redis\"\nurl = \"{url}\"\nconnect_timeout_ms = 300\ncommand_timeout_ms = 500"
            ),
        )
    })
    .await;
    let app = router(AppState::new(store).unwrap());

    let (status, response) = send(&app, "POST", "/get-online-features", LOOKUP_1001, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["results"][1]["statuses"], json!(["PRESENT"]));
    let now = chrono::Utc::now().to_rfc3339();
    let push = json!({"feature_view": "driver_hourly_stats", "df": {
        "driver_id": [1001], "event_timestamp": [now], "created": [now],
        "conv_rate": [0.875], "acc_rate": [0.5], "avg_daily_trips": [10], "quality": [0.4375]}});
    let (status, response) = send(&app, "POST", "/push", &push.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let (_, response) = send(&app, "POST", "/get-online-features", LOOKUP_1001, &[]).await;
    assert_eq!(response["results"][1]["values"], json!([0.875]));

    redis.kill();
    let (status, response) = send(&app, "POST", "/get-online-features", LOOKUP_1001, &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{response}");
    assert_eq!(response["kind"], "unavailable", "{response}");
    let (status, _) = send(&app, "GET", "/health", "", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Redis keeps nothing on disk here: back up, it is empty, so the value is NOT_FOUND
    // until it is written again; what matters is that the same server answers 200.
    redis.restart();
    let mut recovered = None;
    for _ in 0..50 {
        let (status, response) = send(&app, "POST", "/get-online-features", LOOKUP_1001, &[]).await;
        if status == StatusCode::OK {
            recovered = Some(response);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let response = recovered.expect("the server answers again once Redis is back");
    assert_eq!(
        response["results"][1]["statuses"].as_array().unwrap().len(),
        1
    );
    let (status, _) = send(&app, "GET", "/health", "", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

/// Reads from a socket until it closes (or `limit` passes); returns what was read and
/// whether it closed.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).to_string(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).to_string(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_cannot_starve_the_server() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let (_dir, store) = example(
        "header_read_timeout_ms = 400\nidle_timeout_ms = 600\nbody_read_timeout_ms = 400\nmax_connections = 3\nshutdown_grace_ms = 800",
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(quiver_server::serve(store, listener, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Three clients take every slot: two never finish their headers, one sends nothing.
    let mut slow = Vec::new();
    for partial in ["GET /health HTTP/1.1\r\nHost: x\r\n", "GET /he", ""] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(partial.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    // A fourth client still gets an answer once the header timeout frees the slots.
    let started = Instant::now();
    let mut probe = TcpStream::connect(addr).await.unwrap();
    probe
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut probe, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    for mut stream in slow {
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(2)).await;
        assert!(
            closed,
            "a client that never finishes its headers is disconnected"
        );
    }

    // A kept-alive connection that goes idle is closed after the idle timeout.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle kept-alive connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(500));

    // A body that stalls gets a JSON 408 after the body timeout.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /get-online-features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"features\"")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut stalled, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("\"kind\":\"deadline_exceeded\""),
        "{answer}"
    );

    // Shutdown finishes within the grace period even with a client stalled mid-request.
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    stuck
        .write_all(b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("shutdown finishes within the grace period")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn write_endpoints_refuse_what_would_be_misread() {
    let (_dir, store) = example("api_key = \"s3cret\"").await;
    // `bearer` in any case, as RFC 7235 says schemes are case-insensitive.
    let lower = [("authorization", "bearer s3cret")];
    let cases = [
        // A JSON array is not read as a positional struct.
        (
            "/materialize",
            "[null, null]",
            "the body must be a JSON object",
        ),
        (
            "/push",
            "[\"driver_stats\"]",
            "the body must be a JSON object",
        ),
        // A repeated column would otherwise silently keep the last.
        (
            "/push",
            r#"{"feature_view": "driver_hourly_stats", "df": {"driver_id": [1], "conv_rate": [1.0], "conv_rate": [2.0]}}"#,
            "column `conv_rate` appears twice",
        ),
        (
            "/push",
            r#"{"feature_view": "driver_hourly_stats", "df": {"driver_id": [1], "driver_id": [2]}}"#,
            "column `driver_id` appears twice",
        ),
    ];
    for (uri, body, message) in cases {
        let (status, response) = call(&store, "POST", uri, body, &lower).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}: {response}");
        assert!(
            response["error"].as_str().unwrap().contains(message),
            "{uri} {body}: {response}"
        );
    }
    // A view named twice is materialized once.
    let (status, response) = call(
        &store,
        "POST",
        "/materialize",
        r#"{"feature_views": ["customer_profile", "customer_profile"], "full_feature_names": false, "version": null}"#,
        &lower,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response.as_array().unwrap().len(), 1, "{response}");
    // Feast's `version` must name the applied version.
    let (status, response) = call(
        &store,
        "POST",
        "/materialize",
        r#"{"feature_views": ["customer_profile"], "version": "v3"}"#,
        &lower,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    assert!(
        response["error"].as_str().unwrap().contains("is at v1"),
        "{response}"
    );
}

#[tokio::test]
async fn feasts_write_to_online_store_and_async_materialize() {
    let (_dir, store) = example("").await;
    let now = chrono::Utc::now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    // As Feast's client sends it: naive UTC times, `created` may be null.
    let body = json!({"feature_view_name": "driver_hourly_stats", "df": {
        "driver_id": [7001, 7002], "conv_rate": [0.25, null], "acc_rate": [0.5, 0.125],
        "avg_daily_trips": [42, 43], "quality": [0.125, null],
        "event_timestamp": [now, now], "created": [now, null]}, "allow_registry_cache": false});
    let (status, response) = call(
        &store,
        "POST",
        "/write-to-online-store",
        &body.to_string(),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response, Value::Null);
    let lookup = r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": ["7001", 7002]}, "include_feature_view_version_metadata": true}"#;
    let (_, response) = call(&store, "POST", "/get-online-features", lookup, &[]).await;
    assert_eq!(response["results"][0]["values"], json!([7001, 7002]));
    assert_eq!(response["results"][1]["values"], json!([0.25, null]));
    assert_eq!(
        response["results"][1]["statuses"],
        json!(["PRESENT", "NULL_VALUE"])
    );
    assert_eq!(
        response["metadata"]["feature_view_metadata"],
        json!([{"name": "driver_hourly_stats", "version": 1}])
    );
    // A source is not a feature view.
    let body = json!({"feature_view_name": "driver_stats", "df": {"driver_id": [1]}});
    let (status, _) = call(
        &store,
        "POST",
        "/write-to-online-store",
        &body.to_string(),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // `?async=true`: 202 at once, the run finishes in the background and is recorded.
    let before = store.runs(Some("materialize"), 100).await.unwrap().len();
    let (status, response) = call(
        &store,
        "POST",
        "/materialize-incremental?async=true",
        r#"{"end_ts": null, "feature_views": null, "full_feature_names": false}"#,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{response}");
    assert_eq!(response["status"], "accepted");
    let mut recorded = false;
    for _ in 0..100 {
        if store.runs(Some("materialize"), 100).await.unwrap().len() > before {
            recorded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(recorded, "the background run is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_materialization_whose_client_disconnects_still_finishes_and_is_recorded() {
    let (_dir, store) = example("").await;
    let before = store.runs(Some("materialize"), 100).await.unwrap().len();
    let state = AppState::new(store.clone()).unwrap();
    let app = router(state.clone());
    let request = Request::post("/materialize")
        .body(Body::from(r#"{"feature_views": ["driver_hourly_stats"]}"#))
        .unwrap();
    // The client gives up once the run has started, before it ends: the request future
    // is dropped (and with it the server's state; the run keeps the batch runtime).
    let mut response = Box::pin(app.oneshot(request));
    let gave_up = loop {
        tokio::select! {
            _ = &mut response => break false,
            () = tokio::time::sleep(std::time::Duration::from_millis(1)) => {
                if state.background_work() > 0 {
                    break true;
                }
            }
        }
    };
    assert!(
        gave_up,
        "the request was dropped while its run was in progress"
    );
    drop(response);
    drop(state);
    let mut recorded = false;
    for _ in 0..100 {
        if store.runs(Some("materialize"), 100).await.unwrap().len() > before {
            recorded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(recorded, "the materialization ran to completion");
}

/// Windowed aggregations over HTTP, on both stores, at a fixed clock: the lookup serves
/// what the export gives at the same time; a push of events to the source moves the
/// aggregates at once (exactly by the pushed events); a customer without events gets
/// `COUNT` 0 PRESENT and NULL for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_view_served_and_pushed_over_http() {
    let redis = redis_server::RedisServer::start();
    for online in ["", &format!("type = \"redis\"\nurl = \"{}\"", redis.url())] {
        windowed_over_http(online).await;
    }
}

async fn windowed_over_http(online: &str) {
    let now: chrono::DateTime<chrono::Utc> = "2026-03-10T12:34:56.789Z".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    quiver::example::init_repository(dir.path(), now).unwrap();
    if !online.is_empty() {
        let path = dir.path().join("quiver.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, config.replace("type = \"embedded\"", online)).unwrap();
    }
    let store = store_at(dir.path(), &now.to_rfc3339());
    store.apply().await.unwrap();
    store
        .materialize(MaterializeOptions::default())
        .await
        .unwrap();
    let app = router(AppState::new(store.clone()).unwrap());
    let features = [
        "trips_1h",
        "trips_1d",
        "trips_7d",
        "fare_sum_1h",
        "fare_sum_7d",
        "fare_avg_1d",
        "longest_km_7d",
        "fare_std_7d",
    ];
    let lookup = json!({
        "features": features.iter().map(|f| format!("customer_trips:{f}")).collect::<Vec<_>>(),
        "entities": {"customer_id": [10001, 10002, 77777]}
    })
    .to_string();

    // The export at the clock's time, for the same customers.
    let spine = format!(
        "SELECT * FROM (VALUES (10001, TIMESTAMP '{t}'), (10002, TIMESTAMP '{t}'), (77777, TIMESTAMP '{t}')) AS s(customer_id, event_timestamp)",
        t = now.format("%Y-%m-%d %H:%M:%S%.6f")
    );
    let export = store
        .export()
        .with_spine_sql(spine)
        .with_features(features.iter().map(|f| format!("customer_trips:{f}")))
        .execute()
        .await
        .unwrap();
    let exported = |feature: &str| -> Vec<Value> {
        let column = export.batch.column_by_name(feature).unwrap();
        (0..3)
            .map(|row| quiver_server::wire::json_value(column, row))
            .collect()
    };

    let (status, response) = send(&app, "POST", "/get-online-features", &lookup, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let served = |response: &Value, feature: &str| -> Value {
        let index = features.iter().position(|f| *f == feature).unwrap() + 1;
        response["results"][index].clone()
    };
    for feature in features {
        let result = served(&response, feature);
        let values = result["values"].as_array().unwrap();
        for (row, expected) in exported(feature).iter().enumerate() {
            let same = match (values[row].as_f64(), expected.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                _ => values[row] == *expected,
            };
            assert!(
                same,
                "{online:?} {feature} row {row}: served {}, exported {expected}",
                values[row]
            );
        }
    }
    // Customer 10001 has trips in the last week; 77777 has none.
    assert!(served(&response, "trips_7d")["values"][0].as_i64().unwrap() > 0);
    assert_eq!(served(&response, "trips_7d")["values"][2], json!(0));
    assert_eq!(served(&response, "trips_7d")["statuses"][2], "PRESENT");
    assert_eq!(served(&response, "fare_sum_7d")["values"][2], Value::Null);
    assert_eq!(
        served(&response, "fare_sum_7d")["statuses"][2],
        "NULL_VALUE"
    );

    // Two trips of 10001 and one of 77777, ten seconds ago, pushed to the source.
    let at = (now - chrono::Duration::seconds(10)).to_rfc3339();
    let push = json!({"push_source_name": "trips", "to": "online", "df": {
        "customer_id": [10001, 10001, 77777],
        "event_timestamp": [at, at, at],
        "created": [at, at, at],
        "fare": [10.5, 20.25, 7.0],
        "distance_km": [1.0, 2.0, 3.0],
        "driver_id": [1001, 1002, 1003]}});
    let (status, pushed) = send(&app, "POST", "/push", &push.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{pushed}");
    let (status, after) = send(&app, "POST", "/get-online-features", &lookup, &[]).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    for window in ["1h", "1d", "7d"] {
        let feature = format!("trips_{window}");
        let before = served(&response, &feature)["values"].clone();
        let now_served = served(&after, &feature)["values"].clone();
        assert_eq!(
            now_served[0].as_i64().unwrap(),
            before[0].as_i64().unwrap() + 2,
            "{online:?} {feature}"
        );
        assert_eq!(
            now_served[1], before[1],
            "{online:?} {feature}: 10002 untouched"
        );
        assert_eq!(now_served[2], json!(1), "{online:?} {feature}");
    }
    let sum_before = served(&response, "fare_sum_7d")["values"][0]
        .as_f64()
        .unwrap();
    let sum_after = served(&after, "fare_sum_7d")["values"][0].as_f64().unwrap();
    assert!(
        (sum_after - sum_before - 30.75).abs() < 1e-9,
        "{sum_before} -> {sum_after}"
    );
    assert_eq!(served(&after, "fare_sum_1h")["values"][2], json!(7.0));
    assert_eq!(served(&after, "longest_km_7d")["values"][2], json!(3.0));
    // One event: the sample standard deviation is NULL.
    assert_eq!(served(&after, "fare_std_7d")["values"][2], Value::Null);

    // A push addressed to the windowed view itself is refused (its rows are aggregates).
    let wrong = json!({"feature_view": "customer_trips", "df": {
        "customer_id": [10001], "event_timestamp": [at], "trips": [1]}});
    let (status, refused) = send(&app, "POST", "/push", &wrong.to_string(), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("trips"),
        "names the source to push to instead: {refused}"
    );
}

/// An on-demand view over HTTP: request fields travel in `entities` beside the keys and
/// come back like entity columns; the served values are the export's for the same keys,
/// time and request values; a missing request field is a 400 naming it.
#[tokio::test]
async fn on_demand_view_over_http() {
    let now: chrono::DateTime<chrono::Utc> = "2026-03-10T12:34:56.789Z".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    quiver::example::init_repository(dir.path(), now).unwrap();
    let store = store_at(dir.path(), &now.to_rfc3339());
    store.apply().await.unwrap();
    store
        .materialize(MaterializeOptions::default())
        .await
        .unwrap();
    let app = router(AppState::new(store.clone()).unwrap());
    let body = r#"{"feature_service": "ride_pricing", "entities": {
        "driver_id": [1001, 1002, 9999], "customer_id": [10001, 10002, 77777],
        "fare_estimate": [42.5, 10, null], "distance_km": [12, 0, 3.5]}}"#;
    let (status, response) = send(&app, "POST", "/get-online-features", body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let names = response["metadata"]["feature_names"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        names[..4],
        [
            json!("driver_id"),
            json!("customer_id"),
            json!("fare_estimate"),
            json!("distance_km")
        ],
        "request fields come back like entity columns: {names:?}"
    );
    assert_eq!(response["results"][2]["values"], json!([42.5, 10.0, null]));

    let spine = format!(
        "SELECT * FROM (VALUES (1001, 10001, TIMESTAMP '{t}', 42.5, 12.0), (1002, 10002, TIMESTAMP '{t}', 10.0, 0.0), (9999, 77777, TIMESTAMP '{t}', CAST(NULL AS DOUBLE), 3.5)) AS s(driver_id, customer_id, event_timestamp, fare_estimate, distance_km)",
        t = now.format("%Y-%m-%d %H:%M:%S%.6f")
    );
    let export = store
        .export()
        .with_spine_sql(spine)
        .with_service("ride_pricing")
        .execute()
        .await
        .unwrap();
    let mut checked = 0;
    for (index, name) in names.iter().enumerate().skip(4) {
        let name = name.as_str().unwrap();
        let column = export.batch.column_by_name(name).unwrap();
        let served = &response["results"][index];
        for row in 0..3 {
            let exported = quiver_server::wire::json_value(column, row);
            let value = &served["values"][row];
            let same = match (value.as_f64(), exported.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
                _ => *value == exported,
            };
            assert!(
                same,
                "{name} row {row}: served {value}, exported {exported}"
            );
            // Computed values (and windowed ones) are PRESENT unless NULL; a row view's
            // unknown driver is NOT_FOUND.
            if name != "conv_rate" {
                let status = if value.is_null() {
                    "NULL_VALUE"
                } else {
                    "PRESENT"
                };
                assert_eq!(served["statuses"][row], status, "{name} row {row}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 7 * 3);
    // fare_per_km: 42.5 / 12; a zero distance is NULL (NULLIF), not an error.
    let per_km = names.iter().position(|n| n == "fare_per_km").unwrap();
    assert_eq!(response["results"][per_km]["values"][1], Value::Null);
    assert_eq!(response["results"][per_km]["statuses"][1], "NULL_VALUE");

    // Feast's CLI sends every value as a string; a column the lookup does not read is
    // not echoed (Feast ignores it too).
    let strings = r#"{"features": ["trip_quote:fare_per_km"], "entities": {"driver_id": ["1001"], "customer_id": ["10001"], "fare_estimate": ["42.5"], "distance_km": ["12"], "foo": [1]}}"#;
    let (status, response) = send(&app, "POST", "/get-online-features", strings, &[]).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(
        response["metadata"]["feature_names"],
        json!([
            "driver_id",
            "customer_id",
            "fare_estimate",
            "distance_km",
            "fare_per_km"
        ])
    );
    assert_eq!(response["results"][4]["values"], json!([42.5 / 12.0]));

    let missing = r#"{"features": ["trip_quote:fare_per_km"], "entities": {"driver_id": [1001], "customer_id": [10001], "fare_estimate": [1.0]}}"#;
    let (status, response) = send(&app, "POST", "/get-online-features", missing, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    assert_eq!(response["kind"], "invalid_argument");
    let message = response["error"].as_str().unwrap();
    assert!(
        message.contains("[\"distance_km\"] not found in the entity rows")
            && message.contains("`trip_quote`"),
        "{message}"
    );
    // Not a feature view to push into, write to or materialize.
    for (uri, body) in [
        (
            "/push",
            r#"{"feature_view": "trip_quote", "df": {"driver_id": [1]}}"#,
        ),
        (
            "/write-to-online-store",
            r#"{"feature_view_name": "trip_quote", "df": {"driver_id": [1]}}"#,
        ),
        (
            "/materialize",
            r#"{"feature_views": ["trip_quote"], "disable_event_timestamp": true}"#,
        ),
    ] {
        let (status, response) = send(&app, "POST", uri, body, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {response}");
        assert!(
            response["error"]
                .as_str()
                .unwrap()
                .contains("on-demand feature view `trip_quote` has no rows"),
            "{uri}: {response}"
        );
    }
}
