//! A stopping gateway hands its held clients to another gateway (issue 25 §5,
//! `docs/recovery.md`, "Gateway stop and rolling upgrade").
//!
//! The gateway that takes them over (the *adopter*) keeps each under its old client id: its
//! local number there is an *adopted local*, which carries the adoption's number (one per
//! stopped gateway instance the adopter took clients from) and the client's number at its old
//! gateway, so a worker or gateway client that knows the adoption (`FromGateway::Adopted`,
//! sent on every link before any adopted local) turns it back into the old id, and the old id
//! into the adopted local.

use serde::{Deserialize, Serialize};

use crate::{ClientInfo, Payload};

/// Set in every adopted local; never in a gateway's own client numbers.
pub const ADOPTED: u64 = 1 << 63;
/// Bits of an adopted local that hold the client's number at its old gateway.
const LOCAL_BITS: u32 = 40;
/// Most adoptions one gateway instance can make.
pub const MAX_ADOPTIONS: u32 = 1 << 22;

/// The adopted local of the client numbered `old_local` at the gateway of adoption `adoption`;
/// `None` when the old number does not fit (2^40 clients per gateway run).
pub fn adopted_local(adoption: u32, old_local: u64) -> Option<u64> {
    (old_local < (1 << LOCAL_BITS) && adoption < MAX_ADOPTIONS)
        .then(|| ADOPTED | (u64::from(adoption) << LOCAL_BITS) | old_local)
}

/// The adoption and old number of an adopted local; `None` for a gateway's own client.
pub fn split_adopted(local: u64) -> Option<(u32, u64)> {
    (local & ADOPTED != 0).then_some((((local & !ADOPTED) >> LOCAL_BITS) as u32, local & ((1 << LOCAL_BITS) - 1)))
}

/// One held client as its old gateway ships it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldClient {
    /// Its id: the gateway and instance that gave it (the stopping one, or one whose clients
    /// the stopping one had adopted) and its number there.
    pub gateway: String,
    /// See `gateway`.
    pub instance: u64,
    /// See `gateway`.
    pub local: u64,
    /// Where it connected from, the last time.
    pub info: ClientInfo,
    /// Its session (a JSON object), if any, and the last worker write-back applied to it.
    pub session: Option<bytes::Bytes>,
    /// See `Event::session_writes`.
    pub session_writes: u64,
    /// Its uid, if bound.
    pub uid: Option<String>,
    /// Its groups.
    pub groups: Vec<String>,
    /// The generation its current token names.
    pub generation: u64,
    /// Messages ever numbered for it, and the highest count it acknowledged.
    pub written: u64,
    /// See `written`.
    pub acked: u64,
    /// Data messages taken from it across its connections.
    pub accepted: u64,
    /// The messages it may still need, numbered `written - kept.len() + 1 ..= written`, as
    /// written to it (already escaped for recovery).
    pub kept: Vec<Payload>,
}

/// A stopping gateway's held clients, to the gateway that takes them over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeOver {
    /// The stopping gateway's advertised address and instance: its clients' ids name them.
    pub gateway: String,
    /// See `gateway`.
    pub instance: u64,
    /// The senders (workers, gateway clients) linked to it when it stopped applying commands:
    /// until each has switched, what it sends the adopter directly is not for these clients
    /// (their copy comes forwarded by the stopping gateway).
    pub senders: Vec<u64>,
    /// The stopping gateway's own adoptions (its number for each, and the gateway and instance
    /// whose clients it holds): their clients come too, and forwarded commands name them by
    /// their adopted locals there.
    pub adoptions: Vec<(u32, String, u64)>,
    /// The keys that may have signed its clients' resume tokens: its own, and those handed to
    /// it with clients it adopted. All the cluster secret when there is one; a gateway without
    /// a secret signs with a random key of its run, which the adopter needs to check them.
    pub keys: Vec<Vec<u8>>,
    /// A part of the clients (a large hand-over comes in several parts).
    pub clients: Vec<HeldClient>,
    /// The last part.
    pub last: bool,
}

/// What a command's client numbers become, for [`crate::Command::map_clients`].
pub type MapClient<'a> = &'a mut dyn FnMut(u64) -> Option<u64>;

impl crate::Command {
    /// The same command with every client number mapped by `f`; `None` if a client it is about
    /// alone has no mapping (numbers in lists without one are dropped).
    pub fn map_clients(self, f: MapClient<'_>) -> Option<crate::Command> {
        use crate::Command as C;
        let list = |v: Vec<u64>, f: MapClient<'_>| v.into_iter().filter_map(f).collect::<Vec<u64>>();
        Some(match self {
            C::SendToClients { clients, msg } => C::SendToClients { clients: list(clients, f), msg },
            C::SendToAll { msg, exclude } => C::SendToAll { msg, exclude: list(exclude, f) },
            C::SendToGroups { groups, msg, exclude } => C::SendToGroups { groups, msg, exclude: list(exclude, f) },
            C::BindUid { client, uid } => C::BindUid { client: f(client)?, uid },
            C::UnbindUid { client, uid } => C::UnbindUid { client: f(client)?, uid },
            C::JoinGroup { client, group } => C::JoinGroup { client: f(client)?, group },
            C::LeaveGroup { client, group } => C::LeaveGroup { client: f(client)?, group },
            C::CloseClient { client, last, close } => C::CloseClient { client: f(client)?, last, close },
            C::DestroyClient { client } => C::DestroyClient { client: f(client)? },
            C::SetSession { client, session } => C::SetSession { client: f(client)?, session },
            C::UpdateSession { client, patch } => C::UpdateSession { client: f(client)?, patch },
            C::WriteBackSession { client, seq, changed, removed } => {
                C::WriteBackSession { client: f(client)?, seq, changed, removed }
            }
            cmd @ (C::SendToUids { .. } | C::Ungroup { .. } | C::CloseUid { .. }) => cmd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopted_locals_round_trip_and_never_collide_with_own_numbers() {
        for (adoption, old) in [(0, 0), (0, 1), (7, 12345), (MAX_ADOPTIONS - 1, (1 << 40) - 1)] {
            let l = adopted_local(adoption, old).unwrap();
            assert!(l & ADOPTED != 0);
            assert_eq!(split_adopted(l), Some((adoption, old)));
        }
        assert_eq!(split_adopted(12345), None, "a gateway's own numbers are not adopted");
        assert_eq!(adopted_local(0, 1 << 40), None);
        assert_eq!(adopted_local(MAX_ADOPTIONS, 1), None);
    }

    #[test]
    fn map_clients_maps_every_number_and_drops_a_command_about_an_unmapped_one() {
        use crate::Command as C;
        let mut f = |c: u64| (c < 10).then_some(c + 100);
        let cmd = C::SendToClients { clients: vec![1, 20, 3], msg: Payload::text("x") };
        assert_eq!(
            cmd.map_clients(&mut f),
            Some(C::SendToClients { clients: vec![101, 103], msg: Payload::text("x") })
        );
        assert_eq!(C::BindUid { client: 20, uid: "u".into() }.map_clients(&mut f), None);
        assert_eq!(
            C::JoinGroup { client: 2, group: "g".into() }.map_clients(&mut f),
            Some(C::JoinGroup { client: 102, group: "g".into() })
        );
    }
}
