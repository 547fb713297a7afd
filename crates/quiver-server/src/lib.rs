//! Quiver's HTTP feature server: what production traffic hits.
//!
//! [`router`] builds the axum `Router` (tests call it without a socket); [`serve`] binds
//! it and shuts down gracefully. The lookup API speaks Feast's feature-server JSON, so
//! existing clients work unchanged. Every handler goes through the `quiver` facade; the
//! one error→HTTP mapping is in [`error`].
//!
//! | endpoint | |
//! |---|---|
//! | `POST /get-online-features` | Feast's lookup request and response |
//! | `POST /push` | rows into a view or a source (every view reading it): online (newer-wins), offline, or both |
//! | `POST /materialize`, `POST /materialize-incremental` | run materialization (409 while one runs for a view) |
//! | `GET /health` | 200 when the online store answers, 503 with the reason otherwise |
//! | `GET /metrics` | Prometheus text |
//! | `GET /openapi.json` | the OpenAPI document (also in `schemas/openapi.json`) |
//! | `GET /api/v1/feature-views[/{name}]`, `/api/v1/feature-services`, `/api/v1/entities` | read-only registry |

pub mod error;
mod handlers;
mod metrics;
pub mod openapi;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use quiver::FeatureStore;

pub use error::ApiError;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Shared, so cloning the state per request (axum does) copies no configuration.
    store: Arc<FeatureStore>,
    limits: Limits,
    api_key: Option<Arc<str>>,
    metrics: Arc<metrics::Metrics>,
    /// Views with a materialization in progress.
    running: Arc<Mutex<HashSet<String>>>,
}

/// Request bounds, from `[server]` in `quiver.toml`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_entities: usize,
    pub request_timeout: Duration,
}

impl AppState {
    /// State for a store, with the limits and API key of its config.
    pub fn new(store: FeatureStore) -> Self {
        let server = &store.config().server;
        let limits = Limits {
            max_body_bytes: usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX),
            max_entities: usize::try_from(server.max_entities).unwrap_or(usize::MAX),
            request_timeout: Duration::from_millis(server.request_timeout_ms),
        };
        let api_key = server.api_key.as_deref().map(Arc::from);
        AppState {
            store: Arc::new(store),
            limits,
            api_key,
            metrics: Arc::new(metrics::Metrics::default()),
            running: Arc::new(Mutex::new(HashSet::new())),
        }
    }
}

/// The server's routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/get-online-features", post(handlers::get_online_features))
        .route("/push", post(handlers::push))
        .route("/materialize", post(handlers::materialize))
        .route(
            "/materialize-incremental",
            post(handlers::materialize_incremental),
        )
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .route("/api/v1/feature-views", get(handlers::feature_views))
        .route("/api/v1/feature-views/{name}", get(handlers::feature_view))
        .route("/api/v1/feature-services", get(handlers::feature_services))
        .route("/api/v1/entities", get(handlers::entities))
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves the router on `bind` until `shutdown` completes, then finishes in-flight
/// requests before returning.
pub async fn serve(
    store: FeatureStore,
    bind: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    tracing::info!(address = %listener.local_addr()?, "quiver serve listening");
    axum::serve(listener, router(AppState::new(store)))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
