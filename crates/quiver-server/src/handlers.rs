//! The request handlers. Bodies are read here (bounded in size and time) and parsed by
//! [`crate::wire`] (so malformed JSON is a 400 that says what is wrong); the work is done
//! by the `quiver` facade — batch work (materialization, pushes) on the
//! [`BatchExecutor`](crate::BatchExecutor), where it runs to completion even when the
//! client goes away.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use quiver::model::ObjectKind;
use quiver::{MaterializeOptions, PushTargetKind, PushTo};
use serde_json::Value;

use crate::wire::{self, WireError};
use crate::{ApiError, AppState, MAX_URI_BYTES};

type ApiResult<T> = Result<T, ApiError>;

/// The body, at most `server.max_body_bytes`, read within `server.body_read_timeout_ms`.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<Bytes> {
    let max = state.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::BodyTooLarge { max });
    }
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(state.limits.body_read_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::BodyTimeout {
            ms: state.limits.body_read_timeout.as_millis(),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::BodyTooLarge { max })
        }
        Ok(Err(e)) => Err(ApiError::Wire(WireError::BadJson(format!(
            "the body could not be read: {e}"
        )))),
    }
}

/// Reads and parses a JSON-object body; an empty body is `{}` when `empty_ok`.
async fn parse<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    empty_ok: bool,
) -> ApiResult<T> {
    let bytes = read_body(state, headers, body).await?;
    if empty_ok && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(wire::parse_body(b"{}")?);
    }
    Ok(wire::parse_body(&bytes)?)
}

/// Runs `work` under the request timeout.
async fn bounded<T, E: Into<ApiError>>(
    state: &AppState,
    work: impl Future<Output = Result<T, E>>,
) -> ApiResult<T> {
    match tokio::time::timeout(state.limits.request_timeout, work).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(ApiError::Timeout {
            ms: state.limits.request_timeout.as_millis(),
        }),
    }
}

/// Runs `work` on the batch executor: it finishes even if this request is dropped (the
/// client disconnected) or times out.
async fn in_background<T: Send + 'static>(
    state: &AppState,
    timeout: Option<std::time::Duration>,
    work: impl Future<Output = Result<T, quiver::Error>> + Send + 'static,
) -> ApiResult<T> {
    let task = state.batch.spawn(work);
    let joined = match timeout {
        None => task.await,
        Some(limit) => match tokio::time::timeout(limit, task).await {
            Ok(joined) => joined,
            Err(_) => {
                return Err(ApiError::TimeoutInBackground {
                    ms: limit.as_millis(),
                });
            }
        },
    };
    joined
        .map_err(|e| ApiError::Quiver(quiver::Error::Task(e.to_string())))?
        .map_err(ApiError::from)
}

fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = &state.api_key else {
        return Ok(());
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or(bearer);
    match given {
        None => Err(ApiError::MissingApiKey),
        Some(key) if constant_time_eq(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::WrongApiKey),
    }
}

/// Compares in time that depends only on the longer input's length, so the comparison
/// tells an attacker nothing about the key (its length included).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

pub async fn get_online_features(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let request: wire::LookupRequest = parse(&state, &headers, body, false).await?;
    let count = request.entities.rows("entities")?;
    if count > state.limits.max_entities {
        return Err(ApiError::TooManyEntities {
            count,
            max: state.limits.max_entities,
        });
    }
    let started = Instant::now();
    let store = &state.store;
    let (entities, found) = bounded(&state, async {
        let plan = store
            .lookup_plan(
                &request.features,
                request.feature_service.as_deref(),
                request.full_feature_names,
            )
            .await?;
        let entities = request.entities.to_batch("entities", plan.inputs())?;
        let found = store.get_online_features(&plan, &entities).await?;
        Ok::<_, ApiError>((entities, found))
    })
    .await?;
    state.metrics.lookup(count, started.elapsed().as_secs_f64());
    Ok(Json(wire::lookup_response(&request, &entities, found)).into_response())
}

/// `"to"` of a push.
fn push_to(to: Option<&str>) -> ApiResult<PushTo> {
    match to.unwrap_or("online") {
        "online" => Ok(PushTo::Online),
        "offline" => Ok(PushTo::Offline),
        "online_and_offline" | "both" => Ok(PushTo::OnlineAndOffline),
        other => Err(ApiError::BadBody(format!(
            "\"to\": `{other}` is not one of online, offline, online_and_offline"
        ))),
    }
}

/// The rows of `df` as the push target's schema types them; `rename` maps wire column
/// names to the target's.
async fn push_rows(
    state: &AppState,
    target: &str,
    df: &wire::Columns,
    rename: &HashMap<&str, String>,
) -> ApiResult<(quiver::PushSchema, arrow::array::RecordBatch)> {
    df.rows("df")?;
    let schema = state.store.push_schema(target).await?;
    let mut columns = Vec::with_capacity(df.0.len());
    for (name, values) in &df.0 {
        let name = rename
            .get(name.as_str())
            .cloned()
            .unwrap_or_else(|| name.clone());
        if schema.column(&name).is_none() {
            return Err(schema.unknown_column(&name).into());
        }
        columns.push((name, values.clone()));
    }
    let types: Vec<(String, arrow::datatypes::DataType)> = schema
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.data_type.clone()))
        .collect();
    let batch = wire::Columns(columns).to_batch("df", &types)?;
    Ok((schema, batch))
}

pub async fn push(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let request: wire::PushRequest = parse(&state, &headers, body, false).await?;
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
    let to = push_to(request.to.as_deref())?;
    let (_, rows) = push_rows(&state, &target, &request.df, &HashMap::new()).await?;
    let store = Arc::clone(&state.store);
    let push_target = target.clone();
    let views = in_background(&state, Some(state.limits.request_timeout), async move {
        store.push(&push_target, rows, to).await
    })
    .await?;
    Ok(Json(serde_json::json!({ "target": target, "to": to, "views": views })).into_response())
}

/// Feast's `/write-to-online-store`: rows of one view into the online store. Feast's
/// client names the time columns `event_timestamp` and `created`.
pub async fn write_to_online_store(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let request: wire::WriteRequest = parse(&state, &headers, body, false).await?;
    let view = request.feature_view_name;
    let schema = state.store.push_schema(&view).await?;
    if schema.kind != PushTargetKind::FeatureView {
        return Err(ApiError::BadBody(format!(
            "\"feature_view_name\": `{view}` is a source, not a feature view"
        )));
    }
    let mut rename = HashMap::new();
    let names = state.store.view_time_columns(&view).await?;
    rename.insert("event_timestamp", names.0);
    if let Some(created) = names.1 {
        rename.insert("created", created);
    }
    let (_, rows) = push_rows(&state, &view, &request.df, &rename).await?;
    let store = Arc::clone(&state.store);
    in_background(&state, Some(state.limits.request_timeout), async move {
        store.push(&view, rows, PushTo::Online).await
    })
    .await?;
    // Feast's server answers `null`.
    Ok(Json(Value::Null).into_response())
}

/// Feast's `?async=true`: answer 202 at once, the run goes on in the background.
#[derive(Debug, Default, serde::Deserialize)]
pub struct MaterializeQuery {
    #[serde(default, rename = "async")]
    run_async: Option<String>,
}

impl MaterializeQuery {
    fn run_async(&self) -> bool {
        self.run_async
            .as_deref()
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
    }
}

/// Marks views as running for the life of the guard, in this server and, through the
/// registry, in every server sharing it; refuses views already running in either.
struct Running {
    running: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    views: Vec<String>,
    _shared: Vec<quiver::RunClaim>,
}

impl Running {
    async fn claim(state: &AppState, views: Vec<String>) -> ApiResult<Self> {
        let mut running = {
            let mut running = state.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(view) = views.iter().find(|v| running.contains(*v)) {
                return Err(ApiError::AlreadyRunning { view: view.clone() });
            }
            running.extend(views.iter().cloned());
            Running {
                running: Arc::clone(&state.running),
                views: views.clone(),
                _shared: Vec::new(),
            }
        };
        // On an error the guard drops and unmarks the views.
        match state.store.claim_materializations(views).await? {
            Ok(claims) => running._shared = claims,
            Err(view) => return Err(ApiError::AlreadyRunning { view }),
        }
        Ok(running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for view in &self.views {
            running.remove(view);
        }
    }
}

/// Feast's `version` field: `latest`, or a number (`2`, `v2`, `version2`, any case)
/// that must name the applied version of every view.
async fn check_version(state: &AppState, version: Option<&str>, views: &[String]) -> ApiResult<()> {
    let Some(text) = version else { return Ok(()) };
    let lower = text.trim().to_ascii_lowercase();
    if lower == "latest" {
        return Ok(()); // the applied version is the only one that can be materialized
    }
    let digits = lower
        .strip_prefix("version")
        .or_else(|| lower.strip_prefix('v'))
        .unwrap_or(&lower);
    let number = digits.parse::<u32>().map_err(|_| {
        ApiError::BadBody(format!(
            "\"version\": `{text}` is not a version: use \"latest\", \"v2\" or \"version2\""
        ))
    })?;
    for view in views {
        let applied = state.store.applied_version(view).await?;
        if applied != number {
            return Err(ApiError::BadBody(format!(
                "\"version\": feature view `{view}` is at v{applied}; only the applied version can be materialized"
            )));
        }
    }
    Ok(())
}

/// Runs a materialization in the background; waits for it unless `run_async`.
async fn run_materialization<F>(
    state: &AppState,
    views: Vec<String>,
    run_async: bool,
    work: F,
) -> ApiResult<Response>
where
    F: Future<Output = Result<Vec<quiver::MaterializeReport>, quiver::Error>> + Send + 'static,
{
    let claim = Running::claim(state, views.clone()).await?;
    let task = async move {
        let _claim = claim;
        let result = work.await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "materialization failed");
        }
        result
    };
    if run_async {
        drop(state.batch.spawn(task));
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": "accepted", "feature_views": views })),
        )
            .into_response());
    }
    let reports = in_background(state, None, task).await?;
    Ok(Json(reports).into_response())
}

pub async fn materialize(
    State(state): State<AppState>,
    Query(query): Query<MaterializeQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let request: wire::MaterializeRequest = parse(&state, &headers, body, true).await?;
    let (start, end) = if request.disable_event_timestamp {
        // Feast's "all history up to now": rows keep their own event times here.
        (None, None)
    } else {
        (
            wire::time("start_ts", request.start_ts.as_deref())?,
            wire::time("end_ts", request.end_ts.as_deref())?,
        )
    };
    let mut options = MaterializeOptions {
        start,
        end,
        views: request.feature_views,
    };
    // Checked before answering, so `?async=true` refuses what the run would refuse.
    let views = state.store.check_materialize(&options).await?;
    check_version(&state, request.version.as_deref(), &views).await?;
    options.views = views.clone();
    let store = Arc::clone(&state.store);
    run_materialization(&state, views, query.run_async(), async move {
        store.materialize(options).await
    })
    .await
}

pub async fn materialize_incremental(
    State(state): State<AppState>,
    Query(query): Query<MaterializeQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let request: wire::IncrementalRequest = parse(&state, &headers, body, true).await?;
    let end = wire::time("end_ts", request.end_ts.as_deref())?;
    let views = state
        .store
        .check_materialize(&MaterializeOptions {
            start: None,
            end,
            views: request.feature_views,
        })
        .await?;
    check_version(&state, request.version.as_deref(), &views).await?;
    let store = Arc::clone(&state.store);
    let names = views.clone();
    run_materialization(&state, views, query.run_async(), async move {
        store.materialize_incremental(end, &names).await
    })
    .await
}

pub async fn health(State(state): State<AppState>) -> Response {
    match bounded::<_, quiver::Error>(&state, state.store.health()).await {
        Ok(()) => Json(serde_json::json!({ "status": "ok" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            // `kind` as in every other error body.
            Json(serde_json::json!({
                "status": "unavailable",
                "error": e.to_string(),
                "kind": "unavailable",
            })),
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
    let views = state.store.view_statuses().await?;
    Ok(Json(views).into_response())
}

pub async fn feature_view(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(name) = name.map_err(|e| ApiError::BadBody(format!("bad path: {}", e.body_text())))?;
    state
        .store
        .view_statuses()
        .await?
        .into_iter()
        .find(|v| v.record.name == name)
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::NotFound(format!("unknown feature view `{name}`")))
}

pub async fn feature_services(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(objects(&state, ObjectKind::FeatureService).await?).into_response())
}

pub async fn entities(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(objects(&state, ObjectKind::Entity).await?).into_response())
}

/// Feast endpoints Quiver does not have (vector search, documents, chat).
pub async fn not_implemented(request: Request) -> ApiError {
    ApiError::NotImplemented(format!(
        "{} is a Feast endpoint for vector search, documents or chat, which Quiver does not have; see the README's list of Feast endpoints",
        request.uri().path()
    ))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see GET /openapi.json".into())
}

pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} does not take {}; see GET /openapi.json",
        request.uri().path(),
        request.method()
    ))
}

/// Middleware: a request target longer than [`MAX_URI_BYTES`] is a JSON 414.
pub async fn limit_uri(request: Request, next: Next) -> Response {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if length > MAX_URI_BYTES {
        return ApiError::UriTooLong {
            length,
            max: MAX_URI_BYTES,
        }
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn key_comparison_needs_equal_length_and_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
