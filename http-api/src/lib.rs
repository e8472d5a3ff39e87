//! `gw-http-api`: the HTTP push API. A stateless daemon that joins the cluster like a gateway
//! client and serves every call of the Gateway API over HTTP with JSON, so a backend in any
//! language can push to users, groups and clients and ask the cluster questions.
//!
//! Each route runs one [`GatewayClient`] call and answers like [`gw_gateway_client::Answer`]:
//! `{"value": …, "missing": [gateways that did not answer]}`. Copies share nothing, so any number
//! can run behind a load balancer.

pub mod auth;
pub mod error;
mod node;
pub mod openapi;
pub mod routes;
mod stats;
mod tls;

/// The calls and their argument types live in `gw-http-calls`, shared with the stock worker's
/// `http` application.
pub use gw_http_calls::{calls, types};

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use gw_config::HttpApiConfig;
use gw_gateway_client::GatewayClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use node::HttpApiNode;
pub use stats::Stats;

/// Why the API could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpApiError {
    /// The TLS certificate or key could not be loaded (the message names the file).
    #[error("{0}")]
    Tls(String),
    /// The HTTP server failed.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// The running API: the cluster client and what every request needs.
pub struct Api {
    /// The cluster client every call goes through.
    pub gateway: GatewayClient,
    /// Request counters and latencies.
    pub stats: Stats,
    keys: auth::Keys,
    max_body: usize,
    max_batch: usize,
    openapi: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
    grace: Duration,
}

impl Api {
    /// Starts the cluster client (without waiting for it: until a gateway is linked, calls answer
    /// 503) and loads the TLS files if any.
    pub fn start(config: &HttpApiConfig) -> Result<Arc<Self>, HttpApiError> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                Some(gw_link::tls_acceptor(cert, key).map_err(|e| HttpApiError::Tls(e.to_string()))?)
            }
            _ => None,
        };
        let gateway = GatewayClient::builder(config.registers.iter().cloned())
            .secret(config.secret.clone())
            .name(config.name.clone())
            .query_timeout(config.query_timeout)
            .link_config(config.link.clone())
            .start();
        Ok(Arc::new(Self {
            gateway,
            stats: Stats::default(),
            keys: auth::Keys::new(&config.keys),
            max_body: config.max_body,
            max_batch: config.max_batch,
            openapi: openapi::document().to_string(),
            tls,
            grace: config.grace_period,
        }))
    }

    /// 503 while no gateway is linked, rather than a command that reaches nobody.
    fn ready(&self) -> Result<(), ApiError> {
        if self.gateway.gateway_count() == 0 {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_gateways",
                "no gateway is connected: the registers are unreachable or list no gateway",
            ));
        }
        Ok(())
    }
}

/// Serves the API on `listener` (HTTPS if the config had TLS files) until `shutdown`, then lets
/// requests in flight finish within the grace period.
pub async fn serve(api: Arc<Api>, listener: TcpListener, shutdown: CancellationToken) -> Result<(), HttpApiError> {
    let app = routes::router(api.clone());
    let local = listener.local_addr()?;
    let stopped = {
        let shutdown = shutdown.clone();
        async move { shutdown.cancelled().await }
    };
    let served = match api.tls.clone() {
        Some(acceptor) => {
            tracing::info!(listen = %local, "serving the HTTP API over TLS");
            let listener = tls::TlsListener::new(listener, acceptor, shutdown.clone())?;
            let server = axum::serve(listener, app).with_graceful_shutdown(stopped);
            drain(server.into_future(), &shutdown, api.grace).await
        }
        None => {
            tracing::info!(listen = %local, "serving the HTTP API");
            let server = axum::serve(listener, app).with_graceful_shutdown(stopped);
            drain(server.into_future(), &shutdown, api.grace).await
        }
    };
    api.gateway.shutdown().await;
    served
}

/// Runs the server; once `shutdown` fires, gives it `grace` to finish requests in flight.
async fn drain(
    server: impl Future<Output = std::io::Result<()>>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Result<(), HttpApiError> {
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return Ok(r?),
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            tracing::warn!(grace = ?grace, "requests still in flight after the grace period; stopping anyway");
            Ok(())
        }
    }
}

/// Starts the API and serves it until `shutdown` (tests and embedding).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// gw_http_api::run(gw_config::HttpApiConfig::default(), listener, shutdown).await?;
/// # Ok(()) }
/// ```
pub async fn run(
    config: HttpApiConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), HttpApiError> {
    let api = Api::start(&config)?;
    serve(api, listener, shutdown).await
}
