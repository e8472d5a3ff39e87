//! Recovery on any gateway (issue 25; `docs/recovery.md`, "On another gateway").
//!
//! A client's state stays at its *home*, the gateway its client id names. A client that comes
//! back on another gateway with a resume token is *relayed*: the gateway it reached (the edge)
//! keeps its socket and opens the client at the home over a gateway-to-gateway link
//! ([`mesh`]); the home resumes it there exactly as if it had come back to the home itself (its
//! id, uid, groups, session, the messages it missed; the workers' `on_resume`), with a
//! [`home::RelayTransport`] in place of a socket. Every send to the client still goes to the
//! home, so ordering and exactly-once are the home's as for any client, and nothing in the
//! workers, the client library or the routing index changes. The edge only moves frames.
//!
//! The edge checks the token's signature with the cluster secret before it dials anything, so
//! a forged token cannot make it connect anywhere; without a secret, tokens of other gateways
//! cannot be checked and are refused (`unknown`, saying so).

pub(crate) mod edge;
pub(crate) mod home;
pub(crate) mod mesh;

use gw_proto::ClientId;

use crate::gateway::Gateway;
use crate::recovery::frames::{self, Ask};
use crate::upgrade::HandshakeRequest;

/// Messages buffered per relayed client on each side of a gateway-to-gateway link.
pub(crate) const RELAY_QUEUE: usize = 256;

/// Frames from the home buffered for one relayed socket at the gateway it reached: room for a
/// whole replay (up to the recovery cap) and a full send queue behind it, so a resume's burst
/// does not look like a client that cannot keep up (which ends its relay). Bounded memory all
/// the same: a channel's blocks are allocated as they fill.
pub(crate) fn edge_queue(gw: &Gateway) -> usize {
    let replay = gw.state.recovery.as_ref().map_or(0, |hub| hub.caps.messages);
    RELAY_QUEUE.max(replay + gw.config.send_queue)
}

/// The home of a client whose request resumes with a token naming another gateway, if this
/// gateway relays (recovery on): a token naming another gateway, or an earlier run of this
/// one's address (the relay's path resumes it here once its hand-over is installed if it was
/// adopted here, else finds the gateway that adopted it, or says `unknown`).
pub(crate) fn home_of(gw: &Gateway, request: &HandshakeRequest) -> Option<ClientId> {
    gw.state.recovery.as_ref()?;
    let Ask::Resume { token, .. } = frames::ask(&request.query) else { return None };
    let client = gw_proto::ResumeToken::names(&token).ok()?;
    // Another gateway's client; or one of an earlier run of this gateway's address (restarted
    // with the address it had), which another gateway may have adopted when that run stopped.
    // One adopted here goes through the relay's path too, which waits for its hand-over to be
    // installed before it resumes (it may come back the moment it is closed with 1012).
    let earlier_run = client.instance != gw.instance;
    (client.gateway != gw.address || earlier_run).then_some(client)
}
