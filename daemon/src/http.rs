//! The daemon's HTTP endpoint (axum): `/metrics` (Prometheus text, or OpenMetrics when asked for; 503 until the
//! stores were first read), `/healthz` (the process is alive), `/readyz` (config loaded, stores reachable).

use crate::health::Health;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the handlers read.
pub struct Endpoint {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
}

/// The router, separate from the listener so it can be tested.
pub fn router(endpoint: Arc<Endpoint>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(endpoint)
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(endpoint))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    if !endpoint.health.recovered() {
        // A scrape now would show no last-success time, as if no backup existed: refuse instead.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics not ready: still reading the newest snapshots from the stores\n",
        )
            .into_response();
    }
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            endpoint.metrics.render_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            endpoint.metrics.render(),
        )
            .into_response()
    }
}

async fn readyz(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let (ready, text) = endpoint.health.readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, text).into_response()
}
