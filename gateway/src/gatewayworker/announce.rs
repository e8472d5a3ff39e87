//! Announces the GatewayWorker listener to GatewayWorker-protocol registers with `gateway_connect`,
//! as `Gateway::registerAddress` does, and re-announces after every reconnect. The link is
//! `gw_link`'s engine with the register protocol's wire, redialed by the same loop (and the same
//! `[link]` backoff) as our own links.

use std::sync::Arc;
use std::time::Duration;

use gw_gatewayworker_protocol::register::ToRegister;
use gw_link::gatewayworker::{Lines, PhpAnnounceSide};
use gw_link::{Attempt, Ended, FrameReader, Handler, LinkEngine, LinkError, LinkOptions};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::PhpSide;

/// `Gateway::PERSISTENCE_CONNECTION_PING_INTERVAL`.
const PING: Duration = Duration::from_secs(25);

/// Keeps this gateway announced on one register until `stop`. Runs in the caller's span.
pub(super) async fn keep_announcing(register: String, side: Arc<PhpSide>, stop: CancellationToken) {
    let link = &side.gw.config.link;
    gw_link::keep_dialing(
        "GatewayWorker register",
        link,
        &stop,
        || async {
            let mut connected = false;
            let result = announce_once(&register, &side, &stop, &mut connected).await;
            Attempt { connected, result }
        },
        || true,
    )
    .await;
}

/// What the register says is of no use to a gateway.
struct Ignore;

impl Handler<PhpAnnounceSide> for Ignore {
    async fn on_message(&mut self, (): ()) -> Result<(), LinkError> {
        Ok(())
    }
}

/// One connection: announce, then ping every 25 s until it ends.
async fn announce_once(
    register: &str,
    side: &PhpSide,
    stop: &CancellationToken,
    connected: &mut bool,
) -> Result<(), LinkError> {
    let stream = tokio::time::timeout(side.gw.config.link.handshake_timeout, TcpStream::connect(register))
        .await
        .map_err(|_| LinkError::HandshakeTimeout)??;
    stream.set_nodelay(true).ok();
    *connected = true;
    let (r, w) = stream.into_split();
    let options = LinkOptions {
        heartbeat_interval: PING,
        // A PHP register answers no ping.
        heartbeat_timeout: Duration::MAX,
        ..LinkOptions::from(&side.gw.config.link)
    };
    let engine = LinkEngine::<PhpAnnounceSide>::new(options, 4);
    let hello =
        ToRegister::GatewayConnect { address: side.advertise.to_string(), secret_key: side.config.secret_key.clone() };
    // The announcement goes first, ahead of any ping.
    let _ = engine.sender().try_send(hello);
    tracing::info!(address = %side.advertise, "announced to GatewayWorker register");
    let reader = FrameReader::with_framing(r, Lines::default(), bytes::BytesMut::new());
    match engine.run(reader, w, &mut Ignore, stop).await? {
        // A register never closes a healthy link: its leaving is a failure to retry.
        Ended::Finished => Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        _ => Ok(()),
    }
}
