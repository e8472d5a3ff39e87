//! Errors that stop the gateway: each names the setting or address at fault, so the one line
//! a failed start prints says what to fix.

use gw_link::fds::FdBudgetError;

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A bound listener failed (its address could not be read, or it could not be moved to the
    /// GatewayWorker listener's thread).
    #[error("listener failed: {0}")]
    Listener(#[source] std::io::Error),
    /// An address could not be listened on.
    #[error("cannot listen on {addr} ({setting}): {source}")]
    Bind {
        /// The address as configured.
        addr: String,
        /// The setting (or listener URL) that names it.
        setting: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A public listener's URL cannot be served.
    #[error("listener {url}: {reason}")]
    ListenerUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The listeners handed to [`build`](crate::build) do not match the configuration.
    #[error("{configured} listeners configured but {bound} sockets bound")]
    ListenerCount {
        /// Listeners the configuration names.
        configured: usize,
        /// Sockets handed over.
        bound: usize,
    },
    /// A TLS listener without its certificate or key.
    #[error("listener {url}: tls_cert and tls_key are required")]
    TlsFilesMissing {
        /// The listener's URL.
        url: String,
    },
    /// A TLS certificate or key could not be loaded (the message names the file).
    #[error(transparent)]
    Tls(#[from] gw_link::TlsError),
    /// The open-files limit leaves no room for clients.
    #[error(transparent)]
    Fds(#[from] FdBudgetError),
    /// `gatewayworker.advertise` is not what PHP client ids can carry.
    #[error("gatewayworker.advertise must be an IPv4 ip:port, not {0}")]
    GatewayWorkerAdvertise(String),
    /// A Pusher webhook URL the HTTP client cannot use.
    #[error("pusher.apps[{app}].webhooks: {url:?} is not a usable http:// URL: {reason}")]
    WebhookUrl {
        /// The app's index in `[[pusher.apps]]`.
        app: usize,
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}
