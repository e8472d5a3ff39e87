//! Errors that stop the gateway.

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A bound listener failed (its address could not be read).
    #[error("listener failed: {0}")]
    Listener(#[source] std::io::Error),
    /// The configuration cannot be served as it stands.
    #[error("{0}")]
    Config(String),
}
