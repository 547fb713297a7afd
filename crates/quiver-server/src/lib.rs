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

mod connections;
pub mod error;
mod executor;
mod handlers;
mod metrics;
pub mod openapi;
pub mod wire;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use quiver::FeatureStore;
use tokio::net::TcpListener;

pub use connections::ConnectionLimits;
pub use error::ApiError;
pub use executor::BatchExecutor;

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
    /// Where materializations and offline pushes run, away from the lookup threads.
    batch: Arc<BatchExecutor>,
}

/// Request bounds, from `[server]` in `quiver.toml`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_entities: usize,
    pub request_timeout: Duration,
    pub body_read_timeout: Duration,
}

/// The longest request target (path and query) accepted; longer ones get a JSON 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

impl AppState {
    /// State for a store, with the limits and API key of its config.
    pub fn new(store: FeatureStore) -> std::io::Result<Self> {
        let server = &store.config().server;
        let limits = Limits {
            max_body_bytes: usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX),
            max_entities: usize::try_from(server.max_entities).unwrap_or(usize::MAX),
            request_timeout: Duration::from_millis(server.request_timeout_ms),
            body_read_timeout: Duration::from_millis(server.body_read_timeout_ms),
        };
        let api_key = server.api_key.as_deref().map(Arc::from);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(AppState {
            store: Arc::new(store),
            limits,
            api_key,
            metrics: Arc::new(metrics::Metrics::default()),
            running: Arc::new(Mutex::new(HashSet::new())),
            batch: Arc::new(BatchExecutor::new(threads)?),
        })
    }

    /// How many materializations and offline pushes run in the background (they finish
    /// even when their requests are gone).
    pub fn background_work(&self) -> usize {
        self.batch.running()
    }
}

/// The server's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/get-online-features", post(handlers::get_online_features))
        .route("/push", post(handlers::push))
        .route(
            "/write-to-online-store",
            post(handlers::write_to_online_store),
        )
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
        // Feast endpoints for vector search, documents and chat: a clear 501.
        .route("/search", post(handlers::not_implemented))
        .route(
            "/retrieve-online-documents",
            post(handlers::not_implemented),
        )
        .route(
            "/chat",
            get(handlers::not_implemented).post(handlers::not_implemented),
        )
        .route("/v1/vector_stores", get(handlers::not_implemented))
        .route("/v1/vector_stores/{id}", get(handlers::not_implemented))
        .route(
            "/v1/vector_stores/{id}/search",
            post(handlers::not_implemented),
        )
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(axum::middleware::from_fn(handlers::limit_uri))
        .with_state(state)
}

/// The connection limits of a config's `[server]` table.
pub fn connection_limits(store: &FeatureStore) -> ConnectionLimits {
    let server = &store.config().server;
    ConnectionLimits {
        max_connections: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(server.idle_timeout_ms),
        shutdown_grace: Duration::from_millis(server.shutdown_grace_ms),
    }
}

/// Serves the store on a bound `listener` until `shutdown` completes, then lets requests
/// in flight finish (within `server.shutdown_grace_ms`) before returning.
pub async fn serve(
    store: FeatureStore,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "quiver serve listening");
    let limits = connection_limits(&store);
    let state = AppState::new(store)?;
    let batch = Arc::clone(&state.batch);
    connections::serve_connections(listener, router(state), limits, shutdown).await?;
    // Materializations and pushes that outlived their requests get the grace period too.
    if !batch.drain(limits.shutdown_grace).await {
        tracing::warn!("shutdown grace period over: batch work still running is abandoned");
    }
    Ok(())
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
}
