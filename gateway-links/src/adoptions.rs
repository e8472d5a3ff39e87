//! Clients a stopping gateway handed over to another one (issue 25 §5; `docs/recovery.md`,
//! "Gateway stop and rolling upgrade"), as this process sees them.
//!
//! The adopter says so on its link (`FromGateway::Adopted`) before anything about those
//! clients. From then on their ids resolve to the adopter, under their adopted locals; the link
//! to the stopping gateway gets `Switched` as the last thing about them and is no longer a
//! target of calls to every gateway; and the adopter gets `Switched` too, marking where what
//! this process sends it starts being for them as well. Marking both under the write side of
//! [`Adoptions::switch`], while every call that resolves ids or picks gateways holds the read
//! side until it has queued its commands, puts each command wholly before or wholly after the
//! switch: the stopping gateway forwards the ones before, the adopter applies the ones after,
//! so each reaches each client exactly once.

use std::collections::HashMap;
use std::sync::RwLock;

use gw_proto::ClientId;
use gw_proto::handover::adopted_local;

/// Every adoption this process knows: the old gateway instance's clients, and where they are.
#[derive(Debug, Default)]
pub(crate) struct Adoptions {
    /// (old gateway, old instance) → (adopter's address, adoption number there).
    by_old: RwLock<HashMap<(String, u64), (String, u32)>>,
    /// Held for writing while a switch is marked; for reading by calls while they pick their
    /// gateways and queue their commands.
    pub(crate) switch: tokio::sync::RwLock<()>,
    /// Gateways that handed their clients over and whose links are not back: not missing.
    handed_over: RwLock<std::collections::HashSet<String>>,
}

impl Adoptions {
    /// Where the client `id` is now if its gateway instance was adopted: the adopter's address
    /// and the client's adopted local there.
    pub(crate) fn resolve(&self, id: &ClientId) -> Option<(String, u64)> {
        let by_old = self.by_old.read().expect("adoptions lock");
        let (adopter, adoption) = by_old.get(&(id.gateway.clone(), id.instance))?;
        Some((adopter.clone(), adopted_local(*adoption, id.local)?))
    }

    /// The adopter holding the clients of instance `instance` at `gateway`, if any.
    pub(crate) fn holder(&self, gateway: &str, instance: u64) -> Option<String> {
        let by_old = self.by_old.read().expect("adoptions lock");
        by_old.get(&(gateway.to_string(), instance)).map(|(a, _)| a.clone())
    }

    pub(crate) fn insert(&self, gateway: String, instance: u64, adopter: String, adoption: u32) {
        self.by_old.write().expect("adoptions lock").insert((gateway, instance), (adopter, adoption));
    }

    /// The link to `adopter` went down: its adoptions are forgotten until it says them again.
    pub(crate) fn forget_adopter(&self, adopter: &str) {
        self.by_old.write().expect("adoptions lock").retain(|_, (a, _)| a != adopter);
    }

    pub(crate) fn mark_handed_over(&self, address: &str) {
        self.handed_over.write().expect("adoptions lock").insert(address.to_string());
    }

    pub(crate) fn unmark_handed_over(&self, address: &str) {
        self.handed_over.write().expect("adoptions lock").remove(address);
    }

    /// Whether the gateway at `address` handed its clients over and is not linked again.
    pub(crate) fn handed_over(&self, address: &str) -> bool {
        self.handed_over.read().expect("adoptions lock").contains(address)
    }

    /// Whether the instance `instance` of `gateway` was adopted.
    pub(crate) fn is_adopted(&self, gateway: &str, instance: u64) -> bool {
        self.by_old.read().expect("adoptions lock").contains_key(&(gateway.to_string(), instance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gw_proto::handover::split_adopted;

    #[test]
    fn an_adopted_client_resolves_to_its_adopter_until_the_adopter_leaves() {
        let a = Adoptions::default();
        let id = ClientId::new("s:1", 7, 42);
        assert_eq!(a.resolve(&id), None);
        a.insert("s:1".into(), 7, "n:1".into(), 3);
        let (adopter, local) = a.resolve(&id).unwrap();
        assert_eq!(adopter, "n:1");
        assert_eq!(split_adopted(local), Some((3, 42)), "the adopted local carries the old number");
        assert_eq!(a.resolve(&ClientId::new("s:1", 8, 42)), None, "another run of that gateway is not adopted");
        assert_eq!(a.holder("s:1", 7).as_deref(), Some("n:1"));
        // Moved on in the next hand-over.
        a.insert("s:1".into(), 7, "m:1".into(), 0);
        assert_eq!(a.resolve(&id).unwrap().0, "m:1");
        a.forget_adopter("n:1");
        assert!(a.is_adopted("s:1", 7), "forgetting another adopter leaves it");
        a.forget_adopter("m:1");
        assert!(!a.is_adopted("s:1", 7));
    }

    #[test]
    fn a_gateway_that_handed_over_is_not_missed_until_a_gateway_links_at_its_address_again() {
        let a = Adoptions::default();
        a.mark_handed_over("s:1");
        assert!(a.handed_over("s:1") && !a.handed_over("n:1"));
        a.unmark_handed_over("s:1");
        assert!(!a.handed_over("s:1"));
    }
}
