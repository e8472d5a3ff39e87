//! Taking a held client back: a new connection presents the client's token and its count of
//! messages received; it gets the client's id, uid, groups and session, and exactly the
//! messages after its count, or the reason why that is impossible.
//!
//! The held entry is taken under the client's lock, and the token's generation must be the
//! current one, which the resume then moves on: of two connections racing with one token,
//! exactly one resumes and the other is told `replayed`. A token for a client whose old socket
//! still looks connected (half-open TCP: the client saw it die, the gateway did not yet) takes
//! the client over all the same: the old socket is closed (code 4001) and nothing of its ending
//! reaches the workers.
//!
//! Locks, in order: the client's recovery state, the old connection's session, the client map.

use std::sync::Arc;

use gw_delivery::ReplayError;
use tokio::time::Instant;

use super::{Cell, Hub, Phase, Reason};
use crate::client_handle::{ClientHandle, KillReason};
use crate::gateway::Gateway;
use crate::outgoing::OutMessage;

/// A client taken back.
pub(crate) struct Resumed {
    /// Its new connection's handle, in the client map already.
    pub handle: Arc<ClientHandle>,
    /// What it missed, in order, to write before anything queued.
    pub replay: Vec<OutMessage>,
    /// Its count, which the numbering continues from.
    pub received: u64,
    /// Data messages taken from it so far (see [`super::ClientRecovery::accepted`]).
    pub accepted: u64,
    /// Its new token.
    pub token: String,
}

/// Why a resume failed.
#[derive(Debug)]
pub(crate) enum Failed {
    /// Not recovered: the reason and a detail for the client.
    Refused(Reason, String),
    /// This gateway froze to hand its clients over: the client's state is (or is about to be)
    /// on its way to the successor, where the client resumes instead.
    HandingOver,
}

impl From<(Reason, String)> for Failed {
    fn from((reason, detail): (Reason, String)) -> Self {
        Failed::Refused(reason, detail)
    }
}

/// Takes the client `token` names back for a new connection, whose handle `make` builds from
/// the client's local id and recovery state.
pub(crate) fn resume(
    gw: &Arc<Gateway>,
    hub: &Hub,
    token: &str,
    received: u64,
    make: impl FnOnce(u64, Cell) -> ClientHandle,
) -> Result<Resumed, Failed> {
    let token = hub.verify(token).or_else(|e| adopted_token(gw, token).ok_or(e)).map_err(|e| match e {
        gw_proto::TokenError::Forged => (Reason::Forged, e.to_string()),
        gw_proto::TokenError::Malformed(_) => (Reason::Malformed, e.to_string()),
    })?;
    // Frozen: the held clients are shipped (or being shipped) to the successor. Checked again
    // under the client's lock, which the shipping takes too: a resume either comes before the
    // freeze (the client is live here, and shipped once its connection is closed and it is
    // held) or is sent elsewhere.
    let frozen = || gw.handover.forwarding().is_some();
    if frozen() {
        return Err(Failed::HandingOver);
    }
    let adopted = token.client.gateway != gw.address || token.client.instance != gw.instance;
    let id = if !adopted {
        token.client.local
    } else if let Some(a) = gw.handover.adoption_of(&token.client.gateway, token.client.instance) {
        // A client of a stopped gateway that handed it over to this one.
        gw_proto::handover::adopted_local(a.id, token.client.local)
            .ok_or_else(|| (Reason::Malformed, "the token's client number is out of range".to_string()))?
    } else {
        return Err(Failed::Refused(
            Reason::Unknown,
            "the token names a client of another gateway, or of an earlier run of this one".into(),
        ));
    };
    let gone = || match hub.why_lost(id) {
        Some(lost) => lost,
        // Adopted, and not (yet) here: its old gateway's hand-over did not bring it.
        None if adopted => (
            Reason::Unknown,
            "the gateway it was handed over to did not receive it (its old gateway's hand-over did not finish)".into(),
        ),
        None => (Reason::Expired, "the client's recovery window ended".into()),
    };
    let Some(old) = gw.state.get(id) else { return Err(gone().into()) };
    let Some(cell) = old.recovery.clone() else {
        return Err((Reason::Unknown, "the client did not ask for recovery".to_string()).into());
    };
    let handle = Arc::new(make(id, cell.clone()));
    let mut rec = cell.lock().expect("recovery lock");
    if frozen() {
        return Err(Failed::HandingOver);
    }
    if rec.phase == Phase::Released {
        return Err(gone().into());
    }
    if let Some(lost) = &rec.lost {
        return Err((**lost).clone().into());
    }
    if u64::from(rec.generation) != token.generation {
        return Err((Reason::Replayed, format!("this token was used already (generation {})", token.generation)).into());
    }
    let replay: Vec<OutMessage> = match rec.buffer.replay_after(received) {
        Ok(missed) => missed.cloned().collect(),
        Err(e) => {
            let reason = if matches!(e, ReplayError::Gap { .. }) { Reason::Gap } else { Reason::Malformed };
            if rec.phase == Phase::Held {
                // The owner came back and its state cannot serve it: let it go now.
                rec.lost = Some(Box::new((reason, e.to_string())));
                hub.set_deadline(id, Instant::now());
            }
            return Err(Failed::Refused(reason, e.to_string()));
        }
    };
    match rec.phase {
        Phase::Held => hub.unhold(&gw.state.metrics, id, &rec),
        // Half-open: the old connection ends without a trace (see the module docs).
        _ => old.kill(KillReason::Superseded),
    }
    rec.phase = Phase::Live;
    rec.generation = rec.generation.wrapping_add(1);
    let (generation, accepted) = (u64::from(rec.generation), rec.accepted);
    // The session moves under the old connection's session lock, held until the new connection
    // is in the map: a write that finds the old one after this sees it is no longer current and
    // goes to the new one (see `Clients::with_session`).
    let old_session = old.session.lock().expect("session lock");
    {
        let mut session = handle.session.lock().expect("session lock");
        session.data = old_session.data.clone();
        session.writes = old_session.writes;
    }
    // Under the client's lock: a message recorded from here on goes to the new connection.
    gw.state.replace(handle.clone());
    // Events a dead worker handed back while the client was away go first on its new
    // connection (a hand-back from now on finds the new handle in the map).
    let waiting = old.redelivery.close();
    if !waiting.is_empty() {
        let _ = handle.redelivery.hand_back(waiting);
    }
    drop(old_session);
    drop(rec);
    Ok(Resumed { handle, replay, received, accepted, token: hub.token(&token.client, generation) })
}

/// A token of a client this gateway adopted, signed with a key its old gateway handed over
/// (a gateway without a cluster secret signs with a random key of its run).
fn adopted_token(gw: &Gateway, token: &str) -> Option<gw_proto::ResumeToken> {
    let client = gw_proto::ResumeToken::names(token).ok()?;
    let a = gw.handover.adoption_of(&client.gateway, client.instance)?;
    a.from.keys.iter().find_map(|key| gw_proto::ResumeToken::verify(token, key).ok())
}
