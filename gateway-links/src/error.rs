//! Why a message or a query did not get through to a gateway.

/// Why a message or a query to one gateway did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The link to this gateway is down (or went down before the reply came); its address.
    #[error("gateway {0} is not connected")]
    Down(String),
    /// The gateway did not answer within the deadline; its address.
    #[error("gateway {0} did not answer in time")]
    Timeout(String),
}
