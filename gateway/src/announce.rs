//! Keeps this gateway announced on every register: connect, announce, answer heartbeats, and on
//! any failure reconnect with backoff, forever.

use std::sync::Arc;
use std::time::Duration;

use gw_link::{Backoff, LinkError};
use gw_proto::{FromRegister, GatewayInfo, ToRegister};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Gateway;

pub(crate) fn spawn_all(gw: &Arc<Gateway>, stop: &CancellationToken, tracker: &tokio_util::task::TaskTracker) {
    for register in gw.config.registers.clone() {
        let span = tracing::info_span!("announce", register = %register);
        tracker.spawn(announce_forever(gw.clone(), register, stop.clone()).instrument(span));
    }
}

async fn announce_forever(gw: Arc<Gateway>, register: String, stop: CancellationToken) {
    let mut backoff = Backoff::new(gw.config.link.reconnect_min, gw.config.link.reconnect_max);
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = announce_once(&gw, &register, &mut backoff) => r,
        };
        if let Err(e) = result {
            failures += 1;
            // Say it loudly once, then quietly while the register stays away.
            if failures == 1 {
                tracing::warn!(error = %e, "register link failed; retrying with backoff");
            } else {
                tracing::debug!(error = %e, failures, "register still unreachable");
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn announce_once(gw: &Gateway, register: &str, backoff: &mut Backoff) -> Result<(), LinkError> {
    let mut link = gw_link::connect(register, &gw.register_handshake).await?;
    let mut out = Vec::new();
    let info = GatewayInfo { address: gw.address.clone(), name: gw.config.name.clone() };
    gw_proto::encode_frame(&ToRegister::Announce { gateway: info }, &mut out, gw.config.link.max_frame)?;
    link.writer.write_all(&out).await?;
    tracing::info!(address = %gw.address, "announced to register");
    backoff.reset();
    let mut ping = tokio::time::interval(gw.config.link.heartbeat_interval);
    let timeout = gw.config.link.heartbeat_timeout;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() > timeout {
                    return Err(LinkError::HeartbeatTimeout(timeout));
                }
                send(&mut link.writer, &ToRegister::Ping, gw.config.link.max_frame).await?;
            }
            msg = link.reader.read::<FromRegister>() => {
                last_heard = tokio::time::Instant::now();
                match msg? {
                    None => return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                    Some(FromRegister::Ping) => send(&mut link.writer, &ToRegister::Pong, gw.config.link.max_frame).await?,
                    Some(_) => {}
                }
            }
        }
    }
}

async fn send(w: &mut tokio::net::tcp::OwnedWriteHalf, msg: &ToRegister, max: usize) -> Result<(), LinkError> {
    let mut out = Vec::with_capacity(16);
    gw_proto::encode_frame(msg, &mut out, max)?;
    tokio::time::timeout(Duration::from_secs(5), w.write_all(&out))
        .await
        .map_err(|_| LinkError::Io(std::io::ErrorKind::TimedOut.into()))??;
    Ok(())
}
