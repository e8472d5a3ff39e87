//! Keeps this gateway announced on every register: connect, announce, answer heartbeats, and on
//! any failure reconnect with backoff, forever (the loop is `gw_link::keep_register_link`).

use std::sync::Arc;

use gw_link::{RegisterEvent, RegisterLink};
use gw_proto::{GatewayInfo, ToRegister};
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
    let info = GatewayInfo { address: gw.address.clone(), name: gw.config.name.clone() };
    let target = RegisterLink {
        address: &register,
        handshake: &gw.register_handshake,
        link: &gw.config.link,
        hello: ToRegister::Announce { gateway: info },
    };
    // The lists tell the gateway its peers (Pusher client events go to all of them).
    gw_link::keep_register_link(target, &stop, &stop, |event| match event {
        RegisterEvent::Up => tracing::info!(address = %gw.address, "announced to register"),
        RegisterEvent::Gateways(list) => gw.mesh.peers_from(&gw, &register, list),
        _ => {}
    })
    .await;
}
