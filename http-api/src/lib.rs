//! `gw-http-api`: the HTTP push API. A stateless daemon that joins the cluster like a gateway
//! client and serves every call of the Gateway API over HTTP with JSON, so a backend in any
//! language can push to users, groups and clients and ask the cluster questions.
//!
//! Each route runs one [`GatewayClient`] call and answers like [`gw_gateway_client::Answer`]:
//! `{"value": …, "missing": [gateways that did not answer]}`. Copies share nothing, so any number
//! can run behind a load balancer.

pub mod auth;
mod bare_errors;
pub mod error;
mod node;
pub mod openapi;
mod pusher;
pub mod routes;
mod serve;
mod stats;

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
    /// The open-files limit leaves no descriptor for client connections.
    #[error(
        "the open-files limit (RLIMIT_NOFILE) is {limit}: after the {open} descriptors open at start and the {reserve} \
         kept for links to the cluster, none are left for HTTP connections; raise the limit (`ulimit -n`, \
         LimitNOFILE=, docker `--ulimit nofile=`)"
    )]
    NoDescriptors {
        /// The soft limit in force.
        limit: u64,
        /// Descriptors open at start.
        open: usize,
        /// Descriptors kept for links to registers and gateways, the admin endpoint and the control socket.
        reserve: usize,
    },
}

/// Descriptors kept out of `max_connections` for links to registers and gateways, the admin
/// endpoint and the control socket.
const FD_RESERVE: usize = 64;

/// The running API: the cluster client and what every request needs.
pub struct Api {
    /// The cluster client every call goes through.
    pub gateway: GatewayClient,
    /// Request counters and latencies.
    pub stats: Stats,
    keys: auth::Keys,
    max_body: usize,
    max_batch: usize,
    max_response: usize,
    openapi: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
    grace: Duration,
    limits: Limits,
    throttles: serve::Throttles,
    /// The Pusher apps whose HTTP API this daemon serves (`[pusher]`), if any.
    pusher: Option<gw_config::PusherConfig>,
}

/// How much the server lets clients hold, and for how long.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    max_connections_per_ip: usize,
    header_timeout: Duration,
    body_timeout: Duration,
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
        // Connections are capped below the open-files limit too: out of descriptors, the API
        // would answer no one (and lose its links to the cluster).
        let max_connections = match gw_link::fds::FdBudget::compute(config.max_connections, FD_RESERVE) {
            Ok(fds) => {
                if fds.client_capacity < config.max_connections {
                    tracing::warn!(
                        max_connections = config.max_connections,
                        open_files_limit = fds.limit,
                        capacity = fds.client_capacity,
                        "the open-files limit caps HTTP connections below max_connections; raise it (ulimit -n) for more"
                    );
                }
                fds.client_capacity
            }
            Err(gw_link::fds::FdBudgetError::NoneLeft { limit, open_at_start, reserve }) => {
                return Err(HttpApiError::NoDescriptors { limit, open: open_at_start, reserve });
            }
            Err(e) => return Err(HttpApiError::Io(std::io::Error::other(e))),
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
            max_response: config.max_response,
            openapi: openapi::document().to_string(),
            tls,
            grace: config.grace_period,
            limits: Limits {
                max_connections,
                max_connections_per_ip: config.max_connections_per_ip,
                header_timeout: config.header_timeout,
                body_timeout: config.body_timeout,
            },
            throttles: serve::Throttles::default(),
            pusher: config.pusher.clone(),
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
/// requests in flight finish within the grace period. Connections are capped and time-limited
/// (`max_connections`, `header_timeout`, `body_timeout`); see `serve.rs`.
pub async fn serve(api: Arc<Api>, listener: TcpListener, shutdown: CancellationToken) -> Result<(), HttpApiError> {
    let local = listener.local_addr()?;
    let max_connections = api.limits.max_connections;
    match api.tls {
        Some(_) => tracing::info!(listen = %local, max_connections, "serving the HTTP API over TLS"),
        None => tracing::info!(listen = %local, max_connections, "serving the HTTP API"),
    }
    serve::serve(&api, listener, routes::router(api.clone()), &shutdown).await;
    api.gateway.shutdown().await;
    Ok(())
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
