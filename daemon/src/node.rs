//! What a running daemon exposes to `status`, `connections` and `/metrics`.

use std::future::Future;
use std::pin::Pin;

use crate::report::{ConnectionRow, MetricFamily, ProcessStatus};

/// A boxed future, so [`Node`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Implemented by each daemon library for its running state.
pub trait Node: Send + Sync + 'static {
    /// Rows for `status`: this process, and for a master its children too. `requests_per_sec` of
    /// the row with this process's pid is filled in by the daemon runner.
    fn status(&self) -> BoxFuture<'_, Vec<ProcessStatus>>;
    /// Metric families for `/metrics`.
    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>>;
    /// Client connections (gateways only).
    fn connections(&self) -> BoxFuture<'_, Option<Vec<ConnectionRow>>> {
        Box::pin(async { None })
    }
    /// Monotonic count of requests handled, sampled for `requests_per_sec`.
    fn requests_total(&self) -> u64;
    /// Whether `/health` should answer 200.
    fn healthy(&self) -> bool {
        true
    }
    /// What `/health` answers: `Ok` for 200, or why not (one line, the body of the 503).
    fn health(&self) -> Result<(), String> {
        if self.healthy() { Ok(()) } else { Err("unhealthy".into()) }
    }
}
