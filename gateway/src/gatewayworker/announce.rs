//! Announces the GatewayWorker listener to GatewayWorker-protocol registers with `gateway_connect`,
//! as `Gateway::registerAddress` does, and re-announces after every reconnect.

use std::sync::Arc;
use std::time::Duration;

use gw_gatewayworker_protocol::register;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::PhpSide;

/// `Gateway::PERSISTENCE_CONNECTION_PING_INTERVAL`.
const PING: Duration = Duration::from_secs(25);

pub(super) async fn keep_announcing(register: String, side: Arc<PhpSide>, shutdown: CancellationToken) {
    let mut backoff = gw_link::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = announce_once(&register, &side) => r,
        };
        match result {
            Ok(()) => backoff.reset(),
            Err(e) => tracing::debug!(register = %register, error = %e, "GatewayWorker register unreachable; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One connection: announce, then ping and discard whatever the register says until it closes.
async fn announce_once(register: &str, side: &PhpSide) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(register).await?;
    stream.write_all(&register::gateway_connect(&side.advertise.to_string(), &side.config.secret_key)).await?;
    tracing::info!(register = %register, address = %side.advertise, "announced to GatewayWorker register");
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING, PING);
    let mut sink = [0u8; 1024];
    loop {
        tokio::select! {
            _ = ping.tick() => stream.write_all(b"{\"event\":\"ping\"}\n").await?,
            n = stream.read(&mut sink) => if n? == 0 { return Ok(()) },
        }
    }
}
