//! The adopter's side: a stopping gateway's held clients installed here under their old ids,
//! the commands it forwards, and the senders' switches.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_delivery::ReplayBuffer;
use gw_proto::handover::{HeldClient, TakeOver, adopted_local, split_adopted};
use gw_proto::{ClientId, Command, Payload, ToGateway};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{Adoption, Incoming, Scope, adopted_message};
use crate::client_handle::ClientHandle;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::outgoing::OutMessage;
use crate::recovery::{ClientRecovery, Phase};
use crate::send_queue::SendQueue;

/// How long a resume of an adopted client waits for the hand-over to make progress.
const INSTALL_WAIT: Duration = Duration::from_secs(5);

/// A part of a stopping gateway's hand-over. The first (the announce) makes the hand-over and
/// an adoption for every gateway instance among its clients, and tells every link of them
/// before any of their clients is installed.
pub(crate) async fn take_over(gw: &Arc<Gateway>, t: TakeOver) {
    if gw.clients_down.is_cancelled() || gw.handover.is_handing_over() {
        tracing::warn!(from = %t.gateway, "a stopping gateway offered its clients, but this one is stopping too: refused");
        return;
    }
    let Some(hub) = gw.state.recovery.clone() else {
        tracing::warn!(from = %t.gateway, "a stopping gateway offered its clients, but recovery is off here: refused");
        return;
    };
    if gw.handover.incoming(t.instance).is_none() {
        announce(gw, &t).await;
    }
    let mut installed = 0u64;
    for c in t.clients {
        match install(gw, &hub, c) {
            Ok(()) => installed += 1,
            Err(why) => {
                Metrics::inc(&gw.state.metrics.handover_refused_clients);
                tracing::warn!(from = %t.gateway, "a handed-over client was not installed: {why}");
            }
        }
    }
    gw.state.metrics.handover_adopted_clients.fetch_add(installed, Ordering::Relaxed);
    if let Some(h) = gw.handover.incoming(t.instance) {
        h.progress.send_modify(|p| {
            p.complete |= t.last;
            p.last = tokio::time::Instant::now();
        });
        if t.last {
            tracing::info!(from = %t.gateway, "hand-over installed");
        }
    }
}

/// Makes the hand-over and its adoptions, and tells every link.
async fn announce(gw: &Arc<Gateway>, t: &TakeOver) {
    let mut origins = vec![(t.gateway.clone(), t.instance)];
    origins.extend(t.adoptions.iter().map(|(_, g, i)| (g.clone(), *i)));
    let ids: Vec<u32> = origins.iter().map(|_| gw.handover.next_adoption.fetch_add(1, Ordering::Relaxed)).collect();
    let h = Arc::new(Incoming {
        gateway: t.gateway.clone(),
        instance: t.instance,
        senders: t.senders.iter().copied().collect(),
        phases: Mutex::new(HashMap::new()),
        theirs: t.adoptions.iter().map(|(n, g, i)| (*n, (g.clone(), *i))).collect(),
        ids: ids.clone(),
        keys: t.keys.clone(),
        progress: super::Progress::new(),
    });
    let adoptions: Vec<Arc<Adoption>> = origins
        .into_iter()
        .zip(ids)
        .map(|((gateway, instance), id)| Arc::new(Adoption { id, gateway, instance, from: h.clone() }))
        .collect();
    // Every link hears of them before anything names their clients (see `Handover::link_up`
    // for the links that come up meanwhile).
    let txs: Vec<_> = {
        let mut all = gw.handover.adoptions.write().expect("adoptions lock");
        all.extend(adoptions.iter().cloned());
        gw.handover.incoming.write().expect("incoming lock").push(h);
        gw.handover.any_incoming.store(true, Ordering::Release);
        let links = gw.handover.links.lock().expect("handover links lock");
        links.values().map(|e| e.tx.clone()).collect()
    };
    for tx in txs {
        for a in &adoptions {
            let _ = tx.send(adopted_message(a)).await;
        }
    }
    gw.handover.adopted.send_modify(|n| *n += 1);
    // The other gateways relay clients that come back to them here.
    for peer in gw.mesh.peer_addresses() {
        for a in &adoptions {
            let msg =
                ToGateway::Adoption { adopter: gw.address.clone(), gateway: a.gateway.clone(), instance: a.instance };
            gw.mesh.to_peer(&gw.state.metrics, &peer, msg);
        }
    }
    Metrics::inc(&gw.state.metrics.handover_adoptions);
    tracing::info!(from = %t.gateway, instances = adoptions.len(), "a stopping gateway hands its clients over to this one");
}

/// Installs one held client under its adopted local, held for a full window from now.
fn install(gw: &Arc<Gateway>, hub: &crate::recovery::Hub, c: HeldClient) -> Result<(), String> {
    let a = gw.handover.adoption_of(&c.gateway, c.instance).ok_or("its gateway instance was not announced")?;
    let local = adopted_local(a.id, c.local).ok_or_else(|| format!("client number {} is too large", c.local))?;
    if gw.state.contains(local) {
        return Err(format!("client {} was installed already", c.local));
    }
    let kept = c.kept.into_iter().map(out_message).collect::<Option<Vec<_>>>().ok_or("a kept text is not UTF-8")?;
    let buffer = ReplayBuffer::from_parts(c.written, c.acked, kept)
        .ok_or_else(|| format!("its counts do not fit (written {}, acked {})", c.written, c.acked))?;
    let cell = Arc::new(Mutex::new(ClientRecovery {
        buffer,
        generation: u32::try_from(c.generation).map_err(|_| "its token generation is out of range")?,
        phase: Phase::Live,
        accepted: c.accepted,
        lost: None,
    }));
    let queue = SendQueue::new(1);
    queue.close();
    let handle = ClientHandle::new(local, queue, c.info, gw.clock_ms()).with_recovery(Some(cell.clone()));
    {
        let mut slot = handle.session.lock().expect("session lock");
        slot.data = c.session;
        slot.writes = c.session_writes;
    }
    let mut rec = cell.lock().expect("recovery lock");
    gw.state.insert(Arc::new(handle));
    // Held, not connected.
    gw.state.detach();
    {
        let mut ix = gw.state.index_mut();
        if let Some(uid) = c.uid {
            ix.bind_uid(local, uid);
        }
        for g in c.groups {
            ix.join(local, g);
        }
    }
    hub.hold(&gw.state.metrics, local, &mut rec);
    Ok(())
}

/// A kept message as it was written to the client.
fn out_message(p: Payload) -> Option<OutMessage> {
    if p.binary {
        return Some(OutMessage::new(Message::Binary(p.data)));
    }
    Utf8Bytes::try_from(p.data).ok().map(|t| OutMessage::new(Message::Text(t)))
}

/// A command the stopping gateway of instance `instance` forwarded: for the clients it handed
/// over only, with their numbers there turned into their adopted locals here.
pub(crate) fn forwarded(gw: &Gateway, instance: u64, cmd: Command) {
    let Some(h) = gw.handover.incoming(instance) else {
        Metrics::inc(&gw.state.metrics.handover_unplaced_commands);
        return;
    };
    let own = gw.handover.adoption_of(&h.gateway, h.instance).map(|a| a.id);
    let mut map = |local: u64| match split_adopted(local) {
        // One it had adopted: the same client under its adoption here.
        Some((theirs, old)) => {
            let (g, i) = h.theirs.get(&theirs)?;
            adopted_local(gw.handover.adoption_of(g, *i)?.id, old)
        }
        None => adopted_local(own?, local),
    };
    if let Some(cmd) = cmd.map_clients(&mut map) {
        gw.state.execute_scoped(cmd, &Scope::Only(h.ids.clone()));
    }
}

/// Sender `sender`'s forwarded stream from instance `instance` ended.
pub(crate) fn forwarded_end(gw: &Gateway, instance: u64, sender: u64) {
    if let Some(h) = gw.handover.incoming(instance) {
        let scope = Scope::Only(h.ids.clone());
        h.forwarded_end(sender, |cmd| gw.state.execute_scoped(cmd, &scope));
    }
}

/// The stopping gateway of instance `instance` sent all of its hand-over, and all of it is
/// applied.
pub(crate) fn finished(gw: &Gateway, instance: u64) {
    let Some(h) = gw.handover.incoming(instance) else {
        tracing::warn!(instance, "the end of a hand-over this gateway never received");
        return;
    };
    if !h.progress.borrow().complete {
        tracing::warn!(from = %h.gateway, "a hand-over ended without its last part");
    }
    Metrics::inc(&gw.state.metrics.handover_finished);
    tracing::info!(from = %h.gateway, "hand-over finished");
}

/// Sender `sender` switched away from the holder of gateway instance `instance`'s clients:
/// this gateway, handing them over; or here, if they were handed to this gateway.
pub(crate) fn switched(gw: &Gateway, instance: u64, sender: u64) {
    if gw.handover.is_handing_over() {
        gw.handover.switched_here(sender);
    } else if let Some(h) = gw.handover.incoming_with(instance) {
        h.switched(sender);
    }
}

/// The client a resume token names, if this gateway adopted it: its local number here. Waits
/// until it is installed or the hand-over is, so a client that comes back quickly is not told
/// it was lost; at most [`INSTALL_WAIT`] after the hand-over's latest progress (a hand-over
/// cut short, its old gateway killed, is waited for once, not by every attempt of its clients).
pub(crate) async fn adopted_client(gw: &Gateway, client: &ClientId) -> Option<u64> {
    let a = gw.handover.adoption_of(&client.gateway, client.instance)?;
    let local = adopted_local(a.id, client.local)?;
    let mut progress = a.from.progress.subscribe();
    loop {
        let p = *progress.borrow_and_update();
        let until = p.last + INSTALL_WAIT;
        if p.complete || gw.state.contains(local) || tokio::time::Instant::now() >= until {
            break;
        }
        if !matches!(tokio::time::timeout_at(until, progress.changed()).await, Ok(Ok(()))) {
            break;
        }
    }
    Some(local)
}

/// Where the clients of a stopped gateway went, as far as this gateway knows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Adopter {
    /// Here.
    Here,
    /// At the gateway at this address.
    There(String),
}

/// Waits at most `wait` for an adoption of `client`'s gateway instance, here or elsewhere: its
/// gateway said it is stopping (or cannot be reached), and may be handing its clients over.
/// An adopter elsewhere equal to `not` (the gateway just tried) does not count.
pub(crate) async fn await_adoption(
    gw: &Gateway,
    client: &ClientId,
    wait: Duration,
    not: Option<&str>,
) -> Option<Adopter> {
    let find = || {
        if gw.handover.adoption_of(&client.gateway, client.instance).is_some() {
            Some(Adopter::Here)
        } else {
            gw.handover
                .alias_of(&client.gateway, client.instance)
                .filter(|a| Some(a.as_str()) != not)
                .map(Adopter::There)
        }
    };
    let mut adopted = gw.handover.adopted.subscribe();
    let _ = tokio::time::timeout(wait, adopted.wait_for(|_| find().is_some())).await;
    find()
}
