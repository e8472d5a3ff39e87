//! A stopping gateway hands its held clients over to another gateway (issue 25 §5;
//! `docs/recovery.md`, "Gateway stop and rolling upgrade").
//!
//! With recovery on, `stop` closes the clients that asked for recovery with 1012 (service
//! restart) and holds them, as an abrupt drop would. Then, instead of ending them:
//!
//! 1. **Freeze.** The stopping gateway (S) stops applying commands: from now on it forwards
//!    each command a sender (worker, gateway client) sends it to the successor (N), in the
//!    order received, on one gateway-to-gateway link ([`move_out`]).
//! 2. **Ship.** S sends N its held clients (`TakeOver`: id, uid, groups, session, the messages
//!    each may still need, its token generation) and the ids of the senders linked to it.
//! 3. **Adopt.** N says `Adopted` on every link before installing them ([`adopt`]); each keeps
//!    its old id, under an *adopted local* (`gw_proto::handover`) that senders turn back into
//!    the old id. A sender that hears it switches: it sends `Switched` to S (its last word
//!    there about those clients) and to N, and sends everything about them to N from then on.
//! 4. **Exactly once.** What a sender of S's list sent N directly *before* its switch is not
//!    for the adopted clients (S got its own copy and forwards it); what it sends after is,
//!    but N holds that part back until S says the sender's forwarded stream has ended
//!    (`ForwardedEnd`), so each client gets each message once, in each sender's order.
//! 5. S exits when every sender has switched (or the grace period ends). Clients resume on N
//!    with their old tokens (N checks them with the cluster secret), or on a third gateway,
//!    which relays them to N.
//!
//! PHP workers (the `[gatewayworker]` listener) cannot switch: a gateway with one keeps
//! today's behaviour (its held clients end when it stops, with their `on_close`).

pub(crate) mod adopt;
pub(crate) mod move_out;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use gw_proto::handover::split_adopted;
use gw_proto::{Command, FromGateway, Role};
use tokio::sync::mpsc;

pub(crate) use move_out::MoveOut;

/// One hand-over received here: a stopping gateway's held clients (its own, and those it had
/// adopted itself), and where its senders are in their switch.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The stopping gateway's advertised address and instance.
    pub gateway: String,
    pub instance: u64,
    /// The senders linked to it when it froze: until each switches, what it sends here
    /// directly is not for these clients.
    senders: HashSet<u64>,
    /// Where each of those senders is in its switch.
    phases: Mutex<HashMap<u64, Phase>>,
    /// The stopping gateway's adoptions, by its number for them: forwarded commands name their
    /// clients by its adopted locals.
    theirs: HashMap<u32, (String, u64)>,
    /// The adoptions made here for this hand-over (one per gateway instance among its clients).
    ids: Vec<u32>,
    /// Keys its clients' tokens may be signed with.
    pub keys: Vec<Vec<u8>>,
    /// How far its installation is.
    pub progress: tokio::sync::watch::Sender<Progress>,
}

/// How far a hand-over's installation is: bumped on every part installed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Every part is installed.
    pub complete: bool,
    /// When the latest part came (or the announce).
    pub last: tokio::time::Instant,
}

impl Progress {
    pub fn new() -> tokio::sync::watch::Sender<Progress> {
        tokio::sync::watch::channel(Progress { complete: false, last: tokio::time::Instant::now() }).0
    }
}

/// One adoption: the clients of one gateway instance, taken over here in a hand-over.
#[derive(Debug)]
pub(crate) struct Adoption {
    /// Its number here, in its clients' adopted locals.
    pub id: u32,
    /// The gateway and instance whose ids its clients keep.
    pub gateway: String,
    pub instance: u64,
    /// The hand-over it came in.
    pub from: Arc<Incoming>,
}

/// Where one sender of the stopped gateway is in its switch, as the adopter sees it.
#[derive(Debug)]
enum Phase {
    /// Neither its `Switched` nor the end of its forwarded stream has come.
    Before,
    /// It switched: what it sends now is for the adopted clients too, once its forwarded
    /// stream has ended; kept until then.
    Holding(Vec<Command>),
    /// Its forwarded stream ended before its own `Switched` came.
    Ended,
    /// Switched and ended: everything it sends is for every client here.
    After,
}

/// Which of this gateway's clients a command applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every client.
    #[default]
    All,
    /// Every client except those of these adoptions.
    Except(Vec<u32>),
    /// Only the clients of these adoptions.
    Only(Vec<u32>),
}

impl Scope {
    /// Whether the command reaches client `local`.
    pub fn admits(&self, local: u64) -> bool {
        match self {
            Scope::All => true,
            Scope::Except(ids) => split_adopted(local).is_none_or(|(a, _)| !ids.contains(&a)),
            Scope::Only(ids) => split_adopted(local).is_some_and(|(a, _)| ids.contains(&a)),
        }
    }
}

/// One internal link, as hand-overs need it: where to write to it, and who is at the other end.
#[derive(Debug)]
struct LinkEntry {
    tx: mpsc::Sender<FromGateway>,
    role: Role,
    sender: Option<u64>,
}

/// The gateway's hand-over state: adoptions it made, the hand-over it is making when stopping.
#[derive(Debug)]
pub(crate) struct Handover {
    next_link: AtomicU64,
    links: Mutex<HashMap<u64, LinkEntry>>,
    adoptions: RwLock<Vec<Arc<Adoption>>>,
    /// The hand-overs received here.
    incoming: RwLock<Vec<Arc<Incoming>>>,
    /// Some hand-over was received: until then a command's scope is all, without a lock.
    any_incoming: AtomicBool,
    next_adoption: AtomicU32,
    /// Held for reading while a command is applied, for writing while this gateway freezes.
    gate: RwLock<()>,
    /// Set when this gateway froze to hand its clients over: commands go there.
    out: OnceLock<Arc<MoveOut>>,
    /// This gateway is stopping and will hand its clients over: they are closed with 1012 and
    /// held.
    handing_over: AtomicBool,
    /// The senders a hand-over from here waits for (linked here when it was announced).
    senders: Mutex<HashSet<u64>>,
    /// Senders that switched away from this gateway before it froze.
    early_switched: Mutex<HashSet<u64>>,
    /// Bumped on every adoption made here or heard of.
    adopted: tokio::sync::watch::Sender<u64>,
    /// Adoptions other gateways made: (gateway, instance) → the adopter's address.
    aliases: Mutex<HashMap<(String, u64), String>>,
}

impl Default for Handover {
    fn default() -> Self {
        Self {
            next_link: AtomicU64::new(0),
            links: Mutex::default(),
            adoptions: RwLock::default(),
            incoming: RwLock::default(),
            any_incoming: AtomicBool::new(false),
            next_adoption: AtomicU32::new(0),
            gate: RwLock::default(),
            out: OnceLock::new(),
            handing_over: AtomicBool::new(false),
            senders: Mutex::default(),
            early_switched: Mutex::default(),
            adopted: tokio::sync::watch::channel(0).0,
            aliases: Mutex::default(),
        }
    }
}

impl Handover {
    /// A new internal link (after its welcome went out): numbered, and told every adoption
    /// made so far, so nothing it reads names an adopted local it cannot place.
    pub fn link_up(&self, tx: &mpsc::Sender<FromGateway>, role: Role) -> u64 {
        let n = self.next_link.fetch_add(1, Ordering::Relaxed);
        let adoptions = self.adoptions.read().expect("adoptions lock");
        for a in adoptions.iter() {
            let _ = tx.try_send(adopted_message(a));
        }
        self.links.lock().expect("handover links lock").insert(n, LinkEntry { tx: tx.clone(), role, sender: None });
        n
    }

    pub fn link_down(&self, n: u64) {
        self.links.lock().expect("handover links lock").remove(&n);
    }

    /// The sender at the other end of link `n` said who it is.
    pub fn set_sender(&self, n: u64, id: u64) {
        if let Some(e) = self.links.lock().expect("handover links lock").get_mut(&n) {
            e.sender = Some(id);
        }
    }

    /// The senders linked here now (workers and gateway clients that said who they are),
    /// remembered as the ones whose switch the hand-over waits for.
    fn senders(&self) -> Vec<u64> {
        let links = self.links.lock().expect("handover links lock");
        let now: Vec<u64> = links.values().filter(|e| e.role != Role::Gateway).filter_map(|e| e.sender).collect();
        self.senders.lock().expect("senders lock").extend(now.iter().copied());
        now
    }

    /// The old id parts of adopted local `local`, if it is one of an adoption made here.
    pub fn origin(&self, local: u64) -> Option<(String, u64, u64)> {
        let (a, old) = split_adopted(local)?;
        let adoptions = self.adoptions.read().expect("adoptions lock");
        adoptions.iter().find(|x| x.id == a).map(|x| (x.gateway.clone(), x.instance, old))
    }

    /// The adoption of the clients of instance `instance` at `gateway`, if made here.
    pub fn adoption_of(&self, gateway: &str, instance: u64) -> Option<Arc<Adoption>> {
        let adoptions = self.adoptions.read().expect("adoptions lock");
        adoptions.iter().find(|a| a.instance == instance && a.gateway == gateway).cloned()
    }

    /// The hand-over from the stopping gateway instance `instance`, if received here.
    fn incoming(&self, instance: u64) -> Option<Arc<Incoming>> {
        self.incoming.read().expect("incoming lock").iter().find(|h| h.instance == instance).cloned()
    }

    /// The hand-over that brought the clients of gateway instance `instance` here (it came from
    /// that instance, or from one that had adopted them).
    fn incoming_with(&self, instance: u64) -> Option<Arc<Incoming>> {
        if let Some(h) = self.incoming(instance) {
            return Some(h);
        }
        let adoptions = self.adoptions.read().expect("adoptions lock");
        adoptions.iter().find(|a| a.instance == instance).map(|a| a.from.clone())
    }

    /// Which clients a command from `sender` (on a worker's or gateway client's link) applies
    /// to: all of them, except the clients of hand-overs this sender has not switched to yet.
    /// A command sent after the switch, before the sender's forwarded stream ended, is kept to
    /// be applied to those clients then.
    pub fn scope(&self, sender: Option<u64>, cmd: &Command) -> Scope {
        if !self.any_incoming.load(Ordering::Acquire) {
            return Scope::All;
        }
        let incoming = self.incoming.read().expect("incoming lock");
        if incoming.is_empty() {
            return Scope::All;
        }
        let Some(sender) = sender else { return Scope::All };
        let mut except = Vec::new();
        for h in incoming.iter().filter(|h| h.senders.contains(&sender)) {
            let mut phases = h.phases.lock().expect("phases lock");
            match phases.entry(sender).or_insert(Phase::Before) {
                Phase::Before | Phase::Ended => except.extend(&h.ids),
                Phase::Holding(kept) => {
                    kept.push(cmd.clone());
                    except.extend(&h.ids);
                }
                Phase::After => {}
            }
        }
        if except.is_empty() { Scope::All } else { Scope::Except(except) }
    }

    /// Another gateway adopted the clients of instance `instance` at `gateway`.
    pub fn alias(&self, gateway: String, instance: u64, adopter: String) {
        self.aliases.lock().expect("aliases lock").insert((gateway, instance), adopter);
        self.adopted.send_modify(|n| *n += 1);
    }

    /// The gateway that adopted the clients of instance `instance` at `gateway`, if another.
    pub fn alias_of(&self, gateway: &str, instance: u64) -> Option<String> {
        self.aliases.lock().expect("aliases lock").get(&(gateway.to_string(), instance)).cloned()
    }

    /// A gateway left the registers' lists: what it adopted is gone with it.
    pub fn forget_aliases_of(&self, listed: &std::collections::BTreeSet<String>) {
        self.aliases.lock().expect("aliases lock").retain(|_, adopter| listed.contains(adopter));
    }

    /// What tells another gateway where this one's adopted clients are.
    pub fn adoption_messages(&self, me: &str) -> Vec<gw_proto::ToGateway> {
        let adoptions = self.adoptions.read().expect("adoptions lock");
        adoptions
            .iter()
            .map(|a| gw_proto::ToGateway::Adoption {
                adopter: me.to_string(),
                gateway: a.gateway.clone(),
                instance: a.instance,
            })
            .collect()
    }

    /// Every token key handed to this gateway with adopted clients.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let incoming = self.incoming.read().expect("incoming lock");
        incoming.iter().flat_map(|h| h.keys.iter().cloned()).collect()
    }

    /// Every adoption made here: number, gateway, instance.
    pub fn adoption_list(&self) -> Vec<(u32, String, u64)> {
        let adoptions = self.adoptions.read().expect("adoptions lock");
        adoptions.iter().map(|a| (a.id, a.gateway.clone(), a.instance)).collect()
    }

    /// The gateway is stopping and will hand its clients over (or will not, after all).
    pub fn begin(&self, yes: bool) {
        self.handing_over.store(yes, Ordering::SeqCst);
    }

    /// Whether the gateway is stopping to hand its clients over.
    pub fn is_handing_over(&self) -> bool {
        self.handing_over.load(Ordering::SeqCst)
    }

    /// Where commands go once this gateway froze.
    pub fn forwarding(&self) -> Option<&Arc<MoveOut>> {
        self.out.get()
    }

    /// Runs `apply` unless this gateway froze meanwhile; the command is returned then, to be
    /// forwarded. Applying and freezing exclude each other, so every command is either in the
    /// snapshot shipped or forwarded after it.
    pub fn apply_unless_frozen<T>(&self, cmd: T, apply: impl FnOnce(T)) -> Option<(Arc<MoveOut>, T)> {
        let _applying = self.gate.read().expect("handover gate");
        match self.out.get() {
            Some(out) => Some((out.clone(), cmd)),
            None => {
                apply(cmd);
                None
            }
        }
    }
}

fn adopted_message(a: &Adoption) -> FromGateway {
    FromGateway::Adopted { adoption: a.id, gateway: a.gateway.clone(), instance: a.instance }
}

impl Incoming {
    /// Sender `sender` switched (its `Switched` came here).
    fn switched(&self, sender: u64) {
        if !self.senders.contains(&sender) {
            return;
        }
        let mut phases = self.phases.lock().expect("phases lock");
        let phase = phases.entry(sender).or_insert(Phase::Before);
        *phase = match std::mem::replace(phase, Phase::After) {
            Phase::Before => Phase::Holding(Vec::new()),
            Phase::Ended | Phase::After => Phase::After,
            holding @ Phase::Holding(_) => holding,
        };
    }

    /// Sender `sender`'s forwarded stream ended: what it sent since its switch is applied to
    /// these clients now (under the lock, so nothing it sends next overtakes it).
    fn forwarded_end(&self, sender: u64, apply: impl Fn(Command)) {
        let mut phases = self.phases.lock().expect("phases lock");
        let phase = phases.entry(sender).or_insert(Phase::Before);
        *phase = match std::mem::replace(phase, Phase::After) {
            Phase::Before => Phase::Ended,
            Phase::Holding(kept) => {
                for cmd in kept {
                    apply(cmd);
                }
                Phase::After
            }
            Phase::Ended | Phase::After => Phase::After,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gw_proto::handover::adopted_local;

    fn incoming(senders: &[u64]) -> Arc<Incoming> {
        Arc::new(Incoming {
            gateway: "s:1".into(),
            instance: 9,
            senders: senders.iter().copied().collect(),
            phases: Mutex::new(HashMap::new()),
            theirs: HashMap::new(),
            ids: vec![3],
            keys: Vec::new(),
            progress: Progress::new(),
        })
    }

    fn cmd(n: u64) -> Command {
        Command::SendToClients { clients: vec![n], msg: gw_proto::Payload::text(n.to_string()) }
    }

    #[test]
    fn scopes_admit_the_clients_they_name() {
        let own = 17;
        let adopted = adopted_local(3, 17).unwrap();
        let other = adopted_local(4, 17).unwrap();
        assert!(Scope::All.admits(own) && Scope::All.admits(adopted));
        let except = Scope::Except(vec![3]);
        assert!(except.admits(own) && !except.admits(adopted) && except.admits(other));
        let only = Scope::Only(vec![3]);
        assert!(!only.admits(own) && only.admits(adopted) && !only.admits(other));
    }

    #[test]
    fn a_sender_s_commands_reach_adopted_clients_only_after_its_switch_and_the_end_of_its_forwarded_stream() {
        let h = Handover::default();
        let a = incoming(&[1]);
        h.incoming.write().unwrap().push(a.clone());
        h.any_incoming.store(true, Ordering::Release);
        // Sender 2 was never linked to the stopped gateway: everything it sends is for all.
        assert_eq!(h.scope(Some(2), &cmd(0)), Scope::All);
        // Sender 1, before its switch: not for the adopted clients (their copy is forwarded).
        assert_eq!(h.scope(Some(1), &cmd(1)), Scope::Except(vec![3]));
        a.switched(1);
        // After its switch: applied to the others now, kept for the adopted ones.
        assert_eq!(h.scope(Some(1), &cmd(2)), Scope::Except(vec![3]));
        assert_eq!(h.scope(Some(1), &cmd(3)), Scope::Except(vec![3]));
        let applied = Mutex::new(Vec::new());
        a.forwarded_end(1, |c| applied.lock().unwrap().push(c));
        assert_eq!(*applied.lock().unwrap(), [cmd(2), cmd(3)], "the kept ones, in order, at the end");
        assert_eq!(h.scope(Some(1), &cmd(4)), Scope::All);
    }

    #[test]
    fn a_forwarded_stream_ending_before_the_switch_waits_for_it() {
        let h = Handover::default();
        let a = incoming(&[1]);
        h.incoming.write().unwrap().push(a.clone());
        h.any_incoming.store(true, Ordering::Release);
        a.forwarded_end(1, |_| panic!("nothing kept"));
        // Still before its own switch: what it sends now was sent before it (S has a copy).
        assert_eq!(h.scope(Some(1), &cmd(1)), Scope::Except(vec![3]));
        a.switched(1);
        assert_eq!(h.scope(Some(1), &cmd(2)), Scope::All);
    }
}
