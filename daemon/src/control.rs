//! The control socket: a Unix socket where `status`, `connections` and `metrics` ask the running
//! process directly (JSON, one request and one answer per connection).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::report::{ConnectionRow, MetricFamily, ProcessStatus};
use crate::runner::Rates;

/// A request on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    /// The `status` rows of the process (and of a master's workers).
    Status,
    /// The gateway's client connections.
    Connections,
    /// The process's metrics, for the admin endpoint.
    Metrics,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// Answer to `Status`.
    Status(Vec<ProcessStatus>),
    /// Answer to `Connections`; `None` from nodes without clients.
    Connections(Option<Vec<ConnectionRow>>),
    /// Answer to `Metrics`.
    Metrics(Vec<MetricFamily>),
}

/// Binds the control socket, replacing a stale socket file but refusing one a live process
/// answers on.
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another process answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

/// Removes a control socket this process bound when dropped, however start-up or the run ends.
#[derive(Debug)]
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves requests until `shutdown`, on the accept loop every listener runs (`gw_link::accept`).
///
/// `admin` is the address of this process's `/metrics` endpoint, reported by `status`.
pub async fn serve(
    listener: UnixListener,
    node: Arc<dyn Node>,
    rates: Arc<Rates>,
    admin: Option<String>,
    shutdown: CancellationToken,
) {
    gw_link::listener::accept_loop(listener, "control", shutdown, None, |stream, _| {
        let (node, rates, admin) = (node.clone(), rates.clone(), admin.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, node, rates, admin).await {
                tracing::debug!(error = %e, "control request failed");
            }
        });
    })
    .await;
}

async fn answer(
    stream: UnixStream,
    node: Arc<dyn Node>,
    rates: Arc<Rates>,
    admin: Option<String>,
) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), BufReader::new(r).read_line(&mut line)).await??;
    let request: Request = serde_json::from_str(line.trim())?;
    let response = match request {
        Request::Status => {
            let mut rows = node.status().await;
            let me = std::process::id();
            for row in rows.iter_mut().filter(|r| r.pid == me) {
                row.requests_per_sec = rates.per_second();
                row.admin = admin.clone();
            }
            Response::Status(rows)
        }
        Request::Connections => Response::Connections(node.connections().await),
        Request::Metrics => Response::Metrics(node.metrics().await),
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await?;
    Ok(())
}

/// Asks the process behind `path`.
pub async fn ask(path: &Path, request: Request, timeout: Duration) -> anyhow::Result<Response> {
    let fut = async {
        let stream = UnixStream::connect(path).await?;
        let (r, mut w) = stream.into_split();
        let mut req = serde_json::to_vec(&request)?;
        req.push(b'\n');
        w.write_all(&req).await?;
        let mut line = String::new();
        BufReader::new(r).read_line(&mut line).await?;
        anyhow::Ok(serde_json::from_str::<Response>(line.trim())?)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow::anyhow!("no answer on {} within {timeout:?}", path.display()))?
}
