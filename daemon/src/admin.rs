//! The admin HTTP endpoint: `/metrics` (Prometheus text) and `/health`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::report::render_prometheus;

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, node: Arc<dyn Node>, shutdown: CancellationToken) {
    let app = Router::new().route("/metrics", get(metrics)).route("/health", get(health)).with_state(node);
    let result = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

async fn metrics(State(node): State<Arc<dyn Node>>) -> impl IntoResponse {
    let body = render_prometheus(node.metrics().await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn health(State(node): State<Arc<dyn Node>>) -> impl IntoResponse {
    match node.health() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}
