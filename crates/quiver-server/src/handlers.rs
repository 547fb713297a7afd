//! The request handlers. Bodies are parsed here (so malformed JSON is a 400 that says
//! what is wrong), the work is done by the `quiver` facade.

use std::future::Future;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use quiver::model::ObjectKind;
use quiver::{MaterializeOptions, OnlineRequest};
use serde::Deserialize;
use serde_json::Value;

use crate::{ApiError, AppState};

type ApiResult<T> = Result<T, ApiError>;

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
    body: Bytes,
) -> ApiResult<Response> {
    let request: OnlineRequest = parse(&body)?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRequest {
    #[serde(default)]
    push_source_name: Option<String>,
    #[serde(default)]
    feature_view: Option<String>,
    #[serde(with = "columns")]
    df: Vec<(String, Vec<Value>)>,
    #[serde(default = "default_to")]
    to: String,
}

fn default_to() -> String {
    "online".to_string()
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
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let request: PushRequest = parse(&body)?;
    let view = request
        .feature_view
        .or(request.push_source_name)
        .ok_or_else(|| {
            ApiError::BadBody(
                "name the target with \"feature_view\" (or \"push_source_name\")".into(),
            )
        })?;
    match request.to.as_str() {
        "online" => {}
        "offline" | "online_and_offline" => {
            return Err(ApiError::Unsupported(format!(
                "push to \"{}\" is not supported yet: offline tables are written by materialize; use \"to\": \"online\"",
                request.to
            )));
        }
        other => {
            return Err(ApiError::BadBody(format!(
                "\"to\" must be \"online\", \"offline\" or \"online_and_offline\", not {other:?}"
            )));
        }
    }
    let stats = bounded(&state, state.store.push_online(&view, &request.df)).await?;
    Ok(Json(
        serde_json::json!({ "feature_view": view, "rows": stats.rows, "written": stats.written }),
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaterializeRequest {
    #[serde(default)]
    start_ts: Option<DateTime<Utc>>,
    #[serde(default)]
    end_ts: Option<DateTime<Utc>>,
    #[serde(default)]
    feature_views: Vec<String>,
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

pub async fn materialize(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let request: MaterializeRequest = if body.is_empty() {
        parse(&Bytes::from_static(b"{}"))?
    } else {
        parse(&body)?
    };
    let views = views_or_all(&state, request.feature_views).await?;
    let _running = Running::claim(&state, views.clone())?;
    let options = MaterializeOptions {
        start: request.start_ts,
        end: request.end_ts,
        views,
    };
    let reports = state.store.materialize(options).await?;
    Ok(Json(reports).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementalRequest {
    #[serde(default)]
    end_ts: Option<DateTime<Utc>>,
    #[serde(default)]
    feature_views: Vec<String>,
}

pub async fn materialize_incremental(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let request: IncrementalRequest = if body.is_empty() {
        parse(&Bytes::from_static(b"{}"))?
    } else {
        parse(&body)?
    };
    let views = views_or_all(&state, request.feature_views).await?;
    let _running = Running::claim(&state, views.clone())?;
    let reports = state
        .store
        .materialize_incremental(request.end_ts, &views)
        .await?;
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
