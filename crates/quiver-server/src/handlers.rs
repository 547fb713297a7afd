//! The request handlers. Bodies are parsed here (so malformed JSON is a 400 that says
//! what is wrong), the work is done by the `quiver` facade.

use std::future::Future;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use quiver::model::ObjectKind;
use quiver::{MaterializeOptions, OnlineRequest, PushTo};
use serde::Deserialize;
use serde_json::Value;

use crate::{ApiError, AppState};

type ApiResult<T> = Result<T, ApiError>;

/// The body, or the reason it could not be read (too large, broken connection) as a
/// JSON error like every other.
fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge {
                max: state.limits.max_body_bytes,
            }
        } else {
            ApiError::BadBody(rejection.body_text())
        }
    })
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::BadBody(
            "the body is empty; send a JSON object".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadBody(e.to_string()))
}

/// Runs `work` under the request timeout.
async fn bounded<T>(
    state: &AppState,
    work: impl Future<Output = Result<T, quiver::Error>>,
) -> ApiResult<T> {
    match tokio::time::timeout(state.limits.request_timeout, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ApiError::Timeout {
            ms: state.limits.request_timeout.as_millis(),
        }),
    }
}

fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = &state.api_key else {
        return Ok(());
    };
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    match given {
        None => Err(ApiError::MissingApiKey),
        Some(key) if constant_time_eq(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::WrongApiKey),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn get_online_features(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let request: OnlineRequest = parse(&read_body(&state, body)?)?;
    let count = request.entities.first().map_or(0, |(_, v)| v.len());
    if count > state.limits.max_entities {
        return Err(ApiError::TooManyEntities {
            count,
            max: state.limits.max_entities,
        });
    }
    let started = Instant::now();
    let response = bounded(&state, state.store.get_online_features(&request)).await?;
    state.metrics.lookup(count, started.elapsed().as_secs_f64());
    Ok(Json(response).into_response())
}

/// Feast's push request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRequest {
    #[serde(default)]
    push_source_name: Option<String>,
    #[serde(default)]
    feature_view: Option<String>,
    #[serde(with = "columns")]
    df: Vec<(String, Vec<Value>)>,
    #[serde(default)]
    to: PushTo,
    /// Accepted for Feast clients; Quiver's registry cache is always current.
    #[serde(default)]
    #[allow(dead_code)]
    allow_registry_cache: Option<bool>,
    /// Accepted for Feast clients; Quiver has no on-demand transformations.
    #[serde(default)]
    #[allow(dead_code)]
    transform_on_write: Option<bool>,
}

/// `{"col": [..], …}` in request order.
mod columns {
    use serde::Deserializer;
    use serde_json::Value;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, Vec<Value>)>, D::Error> {
        let request: quiver::OnlineRequest = serde_json::from_value(serde_json::json!({
            "entities": <serde_json::Map<String, Value> as serde::Deserialize>::deserialize(deserializer)?
        }))
        .map_err(serde::de::Error::custom)?;
        Ok(request.entities)
    }
}

pub async fn push(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let request: PushRequest = parse(&read_body(&state, body)?)?;
    let target = match (request.feature_view, request.push_source_name) {
        (Some(view), None) => view,
        (None, Some(source)) => source,
        (Some(_), Some(_)) => {
            return Err(ApiError::BadBody(
                "give either \"feature_view\" or \"push_source_name\", not both".into(),
            ));
        }
        (None, None) => {
            return Err(ApiError::BadBody(
                "name the target with \"push_source_name\" (a source) or \"feature_view\"".into(),
            ));
        }
    };
    let views = bounded(&state, state.store.push(&target, &request.df, request.to)).await?;
    Ok(
        Json(serde_json::json!({ "target": target, "to": request.to, "views": views }))
            .into_response(),
    )
}

/// A time in a request body: RFC 3339, or without a zone (UTC), or a date.
fn time(field: &str, text: Option<String>) -> ApiResult<Option<DateTime<Utc>>> {
    text.map(|t| {
        quiver::parse_time(&t).ok_or_else(|| {
            ApiError::BadBody(format!(
                "\"{field}\": `{t}` is not a time; use RFC 3339 such as \"2026-01-15T12:00:00Z\""
            ))
        })
    })
    .transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaterializeRequest {
    #[serde(default)]
    start_ts: Option<String>,
    #[serde(default)]
    end_ts: Option<String>,
    #[serde(default)]
    feature_views: Vec<String>,
    /// Feast's "materialize rows stamped with now"; Quiver views always have an event
    /// time, so only `false` is accepted.
    #[serde(default)]
    disable_event_timestamp: bool,
}

/// Marks views as running for the life of the guard; refuses views already running.
struct Running<'a> {
    state: &'a AppState,
    views: Vec<String>,
}

impl<'a> Running<'a> {
    fn claim(state: &'a AppState, views: Vec<String>) -> ApiResult<Self> {
        let mut running = state.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(view) = views.iter().find(|v| running.contains(*v)) {
            return Err(ApiError::AlreadyRunning { view: view.clone() });
        }
        running.extend(views.iter().cloned());
        Ok(Running { state, views })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.state.running.lock().unwrap_or_else(|p| p.into_inner());
        for view in &self.views {
            running.remove(view);
        }
    }
}

async fn views_or_all(state: &AppState, views: Vec<String>) -> ApiResult<Vec<String>> {
    if !views.is_empty() {
        return Ok(views);
    }
    let records = state.store.list().await?;
    Ok(records
        .into_iter()
        .filter(|r| r.kind == ObjectKind::FeatureView)
        .map(|r| r.name)
        .collect())
}

/// The API key checked, then the body of a write endpoint whose fields are all optional
/// (an empty body is `{}`).
fn authorized_request<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    authorize(state, headers)?;
    let body = read_body(state, body)?;
    if body.is_empty() {
        parse(&Bytes::from_static(b"{}"))
    } else {
        parse(&body)
    }
}

pub async fn materialize(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let request: MaterializeRequest = authorized_request(&state, &headers, body)?;
    if request.disable_event_timestamp {
        return Err(ApiError::Unsupported(
            "\"disable_event_timestamp\": every Quiver source has an event time; leave out start_ts to materialize all history up to end_ts (default now)".into(),
        ));
    }
    let start = time("start_ts", request.start_ts)?;
    let end = time("end_ts", request.end_ts)?;
    let views = views_or_all(&state, request.feature_views).await?;
    let _running = Running::claim(&state, views.clone())?;
    let options = MaterializeOptions { start, end, views };
    let reports = state.store.materialize(options).await?;
    Ok(Json(reports).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementalRequest {
    #[serde(default)]
    end_ts: Option<String>,
    #[serde(default)]
    feature_views: Vec<String>,
}

pub async fn materialize_incremental(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let request: IncrementalRequest = authorized_request(&state, &headers, body)?;
    let end = time("end_ts", request.end_ts)?;
    let views = views_or_all(&state, request.feature_views).await?;
    let _running = Running::claim(&state, views.clone())?;
    let reports = state.store.materialize_incremental(end, &views).await?;
    Ok(Json(reports).into_response())
}

pub async fn health(State(state): State<AppState>) -> Response {
    match bounded(&state, state.store.health()).await {
        Ok(()) => Json(serde_json::json!({ "status": "ok" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "error": e.to_string() })),
        )
            .into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let freshness = state.store.freshness().await.unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&freshness),
    )
        .into_response()
}

pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

async fn objects(state: &AppState, kind: ObjectKind) -> ApiResult<Vec<quiver::ObjectRecord>> {
    Ok(state
        .store
        .list()
        .await?
        .into_iter()
        .filter(|r| r.kind == kind)
        .collect())
}

pub async fn feature_views(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(objects(&state, ObjectKind::FeatureView).await?).into_response())
}

pub async fn feature_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    objects(&state, ObjectKind::FeatureView)
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| Json(r).into_response())
        .ok_or_else(|| ApiError::NotFound(format!("unknown feature view `{name}`")))
}

pub async fn feature_services(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(objects(&state, ObjectKind::FeatureService).await?).into_response())
}

pub async fn entities(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(objects(&state, ObjectKind::Entity).await?).into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see GET /openapi.json".into())
}
