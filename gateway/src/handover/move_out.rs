//! The stopping gateway's side: pick a successor, ship the held clients there, forward what
//! senders still send here, and wait for every sender to switch.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_proto::handover::{HeldClient, TakeOver};
use gw_proto::{Command, Payload, ToGateway};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client_handle::ClientHandle;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::recovery::{Hub, Phase};
use crate::relay::mesh::HomeLink;

/// How long the successor may take to accept the hand-over.
const ACCEPT_WAIT: Duration = Duration::from_secs(5);

/// How often the shipping looks again for clients whose connections are still closing.
const LIVE_POLL: Duration = Duration::from_millis(10);

/// A hand-over under way: where forwarded commands go, and which senders have switched.
#[derive(Debug)]
pub(crate) struct MoveOut {
    instance: u64,
    /// To the forwarder, which sends after the clients (or applies here, if the hand-over
    /// failed). Taken when the gateway's links are down: the forwarder then finishes.
    tx: Mutex<Option<mpsc::UnboundedSender<ToGateway>>>,
    /// The senders linked here at the freeze, and those of them that switched.
    senders: HashSet<u64>,
    switched: Mutex<HashSet<u64>>,
    all_switched: Notify,
}

impl MoveOut {
    /// Forwards a command sender `sender` sent here after the freeze.
    pub fn forward(&self, sender: Option<u64>, cmd: Command) {
        let msg = ToGateway::Forwarded { sender: sender.unwrap_or(0), instance: self.instance, cmd };
        if let Some(tx) = self.tx.lock().expect("forward lock").as_ref() {
            let _ = tx.send(msg);
        }
    }

    /// Sender `sender` switched, or its link here ended: its forwarded stream ends.
    pub fn switched(&self, sender: u64) {
        let mut switched = self.switched.lock().expect("switched lock");
        if !switched.insert(sender) {
            return;
        }
        if let Some(tx) = self.tx.lock().expect("forward lock").as_ref() {
            let _ = tx.send(ToGateway::ForwardedEnd { sender, instance: self.instance });
        }
        if self.senders.is_subset(&switched) {
            self.all_switched.notify_one();
        }
    }

    async fn wait_all_switched(&self) {
        loop {
            let notified = self.all_switched.notified();
            if self.senders.is_subset(&self.switched.lock().expect("switched lock")) {
                return;
            }
            notified.await;
        }
    }

    /// The gateway's links are down: nothing more is forwarded.
    pub fn close(&self) {
        self.tx.lock().expect("forward lock").take();
    }
}

impl super::Handover {
    /// Sender `sender` switched away from this gateway (the adopter told it).
    pub(crate) fn switched_here(&self, sender: u64) {
        let _applying = self.gate.read().expect("handover gate");
        match self.out.get() {
            Some(out) => out.switched(sender),
            None => {
                self.early_switched.lock().expect("early switched lock").insert(sender);
            }
        }
    }

    /// Sender `sender`'s link here ended: while handing over, as if it switched (before the
    /// freeze too, so the stop does not wait for it until the grace period ends).
    pub(crate) fn sender_gone(&self, sender: Option<u64>) {
        if let Some(sender) = sender
            && self.is_handing_over()
        {
            self.switched_here(sender);
        }
    }
}

/// The successor of the gateway at `me` among `peers`: the same one for every gateway that
/// asks (rendezvous hashing), so a rolling restart spreads its clients.
fn successor<'a>(me: &str, peers: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
    peers.into_iter().max_by_key(|p| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (me, p.as_str()).hash(&mut h);
        h.finish()
    })
}

/// The first step of a hand-over, before the clients are closed: picks the successor and
/// announces the hand-over there; the successor makes the adoption and tells every sender,
/// which switches (until the freeze, what they sent here before switching is applied here and
/// shipped). Clients closed after this find their adoption wherever they come back. `None`
/// when no hand-over can happen (no other gateway, or none accepted).
pub(crate) async fn announce(gw: &Arc<Gateway>) -> Option<Arc<HomeLink>> {
    let peers = gw.mesh.peer_addresses();
    let to = successor(&gw.address, &peers)?.clone();
    let link = match gw.mesh.link(gw, &to).await {
        Ok(link) => link,
        Err(e) => {
            tracing::warn!(successor = %to, error = %e, "the successor cannot be reached: held clients end here");
            return None;
        }
    };
    let announce = TakeOver {
        gateway: gw.address.clone(),
        instance: gw.instance,
        senders: gw.handover.senders(),
        adoptions: gw.handover.adoption_list(),
        keys: gw.state.recovery.iter().map(|hub| hub.key().to_vec()).chain(gw.handover.keys()).collect(),
        clients: Vec::new(),
        last: false,
    };
    if !link.send(ToGateway::TakeOver(Box::new(announce))).await
        || tokio::time::timeout(ACCEPT_WAIT, link.adopted(&gw.address, gw.instance)).await.is_err()
    {
        tracing::warn!(successor = %to, "the successor did not take the clients over (is recovery on there?): they end here");
        return None;
    }
    tracing::info!(successor = %to, "handing the clients over");
    Some(link)
}

/// Hands this stopping gateway's held clients to the successor `link` announced: freezes,
/// ships them, and waits for every sender to switch (or `deadline`). Returns the task that
/// forwards what senders still send here, to await before the gateway-to-gateway links close.
pub(crate) async fn ship(
    gw: &Arc<Gateway>,
    hub: &Arc<Hub>,
    link: Arc<HomeLink>,
    deadline: Instant,
) -> tokio::task::JoinHandle<()> {
    let senders = gw.handover.senders.lock().expect("senders lock").clone();
    // 2. Freeze: from here every command is forwarded, in order, after the clients.
    let (tx, rx) = mpsc::unbounded_channel();
    let out = Arc::new(MoveOut {
        instance: gw.instance,
        tx: Mutex::new(Some(tx)),
        senders,
        switched: Mutex::new(HashSet::new()),
        all_switched: Notify::new(),
    });
    {
        let _frozen = gw.handover.gate.write().expect("handover gate");
        let _ = gw.handover.out.set(out.clone());
    }
    // 3. Ship: the held clients leave this gateway without an `on_close`; those whose
    // connections are still closing follow as they are held (no resume makes a client live
    // here any more: see `recovery::resume`), until none is live or the grace period ends.
    let part_bytes = (gw.config.link.max_frame / 2).max(4096);
    let (mut count, mut shipped) = (0, true);
    loop {
        // Looked at before the round is taken: a client held while the round is shipped (its
        // connection closing meanwhile) was live then, so another round follows for it.
        let live = any_live(gw);
        let clients = take_held(gw, hub);
        count += clients.len();
        let mut part = Vec::new();
        let mut bytes = 0;
        for c in clients {
            bytes += weight(&c);
            part.push(c);
            if bytes >= part_bytes {
                shipped &= send_part(gw, &link, std::mem::take(&mut part), false).await;
                bytes = 0;
            }
        }
        if !part.is_empty() {
            shipped &= send_part(gw, &link, part, false).await;
        }
        if !live {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!("grace period over with clients still closing: they end here");
            break;
        }
        tokio::time::sleep(LIVE_POLL).await;
    }
    shipped &= send_part(gw, &link, Vec::new(), true).await;
    gw.state.metrics.handover_shipped_clients.fetch_add(count as u64, Ordering::Relaxed);
    tracing::info!(clients = count, shipped, "held clients handed over");
    // Senders that switched before the freeze: their streams end right after the clients.
    let early: Vec<u64> = gw.handover.early_switched.lock().expect("early switched lock").drain().collect();
    for sender in early {
        out.switched(sender);
    }
    let forwarder = tokio::spawn(forward(link, rx));
    // 4. Every sender switches (or the grace period ends).
    if tokio::time::timeout_at(deadline, out.wait_all_switched()).await.is_err() {
        tracing::warn!("grace period over before every sender switched to the successor");
    }
    forwarder
}

/// Sends what was forwarded, in order, until the gateway's links are down and all is sent.
async fn forward(link: Arc<HomeLink>, mut rx: mpsc::UnboundedReceiver<ToGateway>) {
    while let Some(msg) = rx.recv().await {
        if !link.send(msg).await {
            tracing::warn!("the link to the successor closed: forwarded commands lost");
            return;
        }
    }
}

async fn send_part(gw: &Gateway, link: &HomeLink, clients: Vec<HeldClient>, last: bool) -> bool {
    let part = TakeOver {
        gateway: gw.address.clone(),
        instance: gw.instance,
        senders: Vec::new(),
        adoptions: Vec::new(),
        keys: Vec::new(),
        clients,
        last,
    };
    link.send(ToGateway::TakeOver(Box::new(part))).await
}

/// About what a client adds to a hand-over frame.
fn weight(c: &HeldClient) -> usize {
    200 + c.session.as_ref().map_or(0, |s| s.len())
        + c.groups.iter().map(|g| g.len() + 8).sum::<usize>()
        + c.kept.iter().map(|p| p.data.len() + 16).sum::<usize>()
}

/// Whether a client with recovery is still connected here (its connection closing).
fn any_live(gw: &Gateway) -> bool {
    gw.state.handles().iter().any(|h| {
        h.recovery.as_ref().is_some_and(|cell| cell.lock().expect("recovery lock").phase == Phase::Live)
            && gw.state.is_current(h)
    })
}

/// Takes every held client out of this gateway (its state lives on at the successor): no
/// `on_close`, no release. A client whose state is lost already stays, to be released here.
fn take_held(gw: &Arc<Gateway>, hub: &Hub) -> Vec<HeldClient> {
    let mut out = Vec::new();
    for handle in gw.state.handles() {
        let Some(cell) = &handle.recovery else { continue };
        let mut rec = cell.lock().expect("recovery lock");
        if rec.phase != Phase::Held || rec.lost.is_some() {
            continue;
        }
        let (uid, groups) = {
            let ix = gw.state.index();
            (ix.uid_of(handle.id).map(str::to_string), ix.groups_of(handle.id).map(str::to_string).collect())
        };
        let (session, session_writes) = handle.session_snapshot();
        let id = gw.client_id(handle.id);
        out.push(HeldClient {
            gateway: id.gateway,
            instance: id.instance,
            local: id.local,
            info: (*handle.info).clone(),
            session,
            session_writes,
            uid,
            groups,
            generation: rec.generation.into(),
            written: rec.buffer.written(),
            acked: rec.buffer.acked(),
            accepted: rec.accepted,
            kept: rec.buffer.kept().map(|m| payload(m.message())).collect(),
        });
        hub.unhold(&gw.state.metrics, handle.id, &rec);
        rec.phase = Phase::Released;
        rec.buffer = Default::default();
        drop(rec);
        remove(gw, &handle);
    }
    out
}

fn remove(gw: &Arc<Gateway>, handle: &Arc<ClientHandle>) {
    gw.state.remove_moved(handle);
    // What a dead worker handed back while it was held is delivered from here (the gateway
    // waits for it before it exits).
    let waiting = handle.redelivery.close();
    if !waiting.is_empty() {
        crate::redeliver::spawn_orphans(gw, handle.info.clone(), waiting);
    }
    Metrics::inc(&gw.state.metrics.handover_moved_out);
}

fn payload(m: &Message) -> Payload {
    match m {
        Message::Binary(b) => Payload::binary(b.clone()),
        Message::Text(t) => Payload { data: t.as_bytes().to_vec().into(), binary: false },
        _ => Payload::binary(bytes::Bytes::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gateway_picks_the_same_successor_and_a_leaver_s_clients_spread() {
        let peers: Vec<String> = (1..=4).map(|i| format!("gw-{i}:2900")).collect();
        let a = successor("gw-0:2900", &peers).cloned();
        assert_eq!(a, successor("gw-0:2900", peers.iter().rev()).cloned(), "order does not matter");
        let picks: HashSet<_> = (0..40).map(|i| successor(&format!("gw-x{i}:1"), &peers).cloned()).collect();
        assert!(picks.len() > 1, "different gateways pick different successors: {picks:?}");
        assert_eq!(successor("gw-0:2900", &Vec::<String>::new()), None);
    }
}
