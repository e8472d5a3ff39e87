//! The link handshake: protocol version, role, node name, then mutual HMAC-SHA256
//! challenge-response over the shared secret. The secret never crosses the wire.
//!
//! ```text
//! acceptor  -> ServerHello { magic, version, role, node, nonce_s }
//! connector -> ClientHello { magic, version, role, node, nonce_c, proof_c }
//! acceptor  -> HandshakeResult::Accepted { proof_s } | Rejected { reason }
//! proof_c = HMAC(secret, "gwrs-client-v1" | nonce_s | nonce_c | role | node)
//! proof_s = HMAC(secret, "gwrs-server-v1" | nonce_c | nonce_s | proof_c)
//! ```
//! Nonces are fresh random values supplied by the caller (this crate has no randomness source), so
//! a recorded transcript cannot be replayed against a new `nonce_s`. Magic and version come first in
//! both hellos and never move, so a peer of another version is told so rather than "malformed".

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::codec::{self, CodecError};

/// Version of this protocol; bumped on incompatible changes.
///
/// - 1: the first release.
/// - 2: `FromGateway::Drained` answers a worker's `Drain`. A version-1 worker cannot decode it
///   (its link would drop mid-drain and the gateway would redeliver what it was still handling),
///   and a version-1 gateway never sends it (a version-2 worker would wait out its grace period),
///   so the two refuse each other at the handshake with a message naming both versions.
/// - 3: the routing index (`ToGateway::WatchIndex`, `FromGateway::Index`): a version-2 gateway
///   cannot decode the watch request and would drop the link of every version-3 sender.
pub const PROTOCOL_VERSION: u16 = 3;
/// First bytes of every hello: tells a stray HTTP client or port scanner from a peer.
pub const MAGIC: [u8; 4] = *b"GWRS";

type HmacSha256 = Hmac<Sha256>;

/// What a node is. A listener accepts only the roles that may talk to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Service discovery: keeps the gateway list.
    Register,
    /// Holds client connections.
    Gateway,
    /// A business worker: receives client events, sends commands.
    Worker,
    /// A gateway client (web backend, HTTP API): sends commands and queries only.
    Client,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Register => "register",
            Role::Gateway => "gateway",
            Role::Worker => "worker",
            Role::Client => "client",
        })
    }
}

/// First frame, sent by the accepting side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The acceptor's role.
    pub role: Role,
    /// The acceptor's node name, for logs.
    pub node: String,
    /// Fresh random challenge the connecting side must answer.
    pub nonce: [u8; 32],
}

/// Second frame, sent by the connecting side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The connecting side's role, checked against what the listener allows.
    pub role: Role,
    /// The connecting side's node name, for logs.
    pub node: String,
    /// Fresh random challenge the acceptor must answer in [`HandshakeResult::Accepted`].
    pub nonce: [u8; 32],
    /// HMAC-SHA256 with the shared secret over both nonces and this side's role and name.
    pub proof: [u8; 32],
}

/// Third frame: the acceptor's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeResult {
    /// The peer is in; the acceptor's answer to the connecting side's nonce.
    Accepted {
        /// HMAC-SHA256 with the shared secret over both nonces and the connecting side's proof.
        proof: [u8; 32],
    },
    /// The peer is refused and the connection closes.
    Rejected {
        /// Why, for the peer's log (never a secret).
        reason: String,
    },
}

/// The stable prefix of both hellos.
#[derive(Deserialize)]
struct HelloPrefix {
    magic: [u8; 4],
    version: u16,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first bytes are not [`MAGIC`]: not a peer of ours.
    #[error("not a gatewayrs peer (bad magic bytes)")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    Version {
        /// Our [`PROTOCOL_VERSION`].
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// The proof does not match the shared secret.
    #[error("authentication failed: the peer's proof does not match our secret")]
    BadProof,
    /// The peer's role may not use this listener.
    #[error("role {role} is not allowed on this link (expected one of {expected})")]
    RoleNotAllowed {
        /// The role the peer claimed.
        role: Role,
        /// The roles this listener accepts.
        expected: String,
    },
    /// The acceptor refused us; its reason.
    #[error("the peer refused us: {0}")]
    Rejected(String),
    /// A handshake frame that does not decode.
    #[error("malformed handshake frame: {0}")]
    Malformed(#[from] CodecError),
}

impl HandshakeError {
    /// The reason sent to a rejected peer. Never contains secrets or proofs.
    pub fn reason_for_peer(&self) -> String {
        match self {
            HandshakeError::BadProof => "authentication failed".to_string(),
            other => other.to_string(),
        }
    }
}

/// Who the peer said it is, after a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The role it proved.
    pub role: Role,
    /// Its node name, for logs.
    pub node: String,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, including empty (loopback-only development mode).
    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any size")
}

fn client_proof(secret: &[u8], nonce_s: &[u8; 32], nonce_c: &[u8; 32], role: Role, node: &str) -> [u8; 32] {
    let mut m = mac(secret);
    m.update(b"gwrs-client-v1");
    m.update(nonce_s);
    m.update(nonce_c);
    m.update(role.to_string().as_bytes());
    m.update(&[0]);
    m.update(node.as_bytes());
    m.finalize().into_bytes().into()
}

fn server_proof(secret: &[u8], nonce_c: &[u8; 32], nonce_s: &[u8; 32], proof_c: &[u8; 32]) -> [u8; 32] {
    let mut m = mac(secret);
    m.update(b"gwrs-server-v1");
    m.update(nonce_c);
    m.update(nonce_s);
    m.update(proof_c);
    m.finalize().into_bytes().into()
}

/// Constant-time comparison, so a timing side channel cannot recover a valid proof.
fn verify_eq(secret_mac_input: impl FnOnce(&mut HmacSha256), secret: &[u8], expected: &[u8; 32]) -> bool {
    let mut m = mac(secret);
    secret_mac_input(&mut m);
    m.verify_slice(expected).is_ok()
}

fn check_prefix(payload: &[u8]) -> Result<(), HandshakeError> {
    let (prefix, _) = codec::decode_prefix::<HelloPrefix>(payload).map_err(|_| HandshakeError::BadMagic)?;
    if prefix.magic != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    if prefix.version != PROTOCOL_VERSION {
        return Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: prefix.version });
    }
    Ok(())
}

/// The accepting side of a handshake.
#[derive(Debug)]
pub struct Acceptor<'a> {
    secret: &'a [u8],
    role: Role,
    node: String,
    nonce: [u8; 32],
}

impl<'a> Acceptor<'a> {
    /// `nonce` must be fresh randomness for every connection.
    pub fn new(secret: &'a [u8], role: Role, node: impl Into<String>, nonce: [u8; 32]) -> Self {
        Self { secret, role, node: node.into(), nonce }
    }

    /// The first frame to send.
    pub fn hello(&self) -> ServerHello {
        ServerHello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            role: self.role,
            node: self.node.clone(),
            nonce: self.nonce,
        }
    }

    /// Checks the connector's hello (a raw frame payload). On success returns who the peer is and
    /// the verdict to send; on failure the caller sends `Rejected` with
    /// [`HandshakeError::reason_for_peer`] and closes.
    pub fn verify(&self, payload: &[u8], allowed: &[Role]) -> Result<(PeerIdentity, HandshakeResult), HandshakeError> {
        check_prefix(payload)?;
        let hello: ClientHello = codec::decode(payload)?;
        let ok = verify_eq(
            |m| {
                m.update(b"gwrs-client-v1");
                m.update(&self.nonce);
                m.update(&hello.nonce);
                m.update(hello.role.to_string().as_bytes());
                m.update(&[0]);
                m.update(hello.node.as_bytes());
            },
            self.secret,
            &hello.proof,
        );
        if !ok {
            return Err(HandshakeError::BadProof);
        }
        if !allowed.contains(&hello.role) {
            return Err(HandshakeError::RoleNotAllowed {
                role: hello.role,
                expected: allowed.iter().map(Role::to_string).collect::<Vec<_>>().join(", "),
            });
        }
        let proof = server_proof(self.secret, &hello.nonce, &self.nonce, &hello.proof);
        Ok((PeerIdentity { role: hello.role, node: hello.node }, HandshakeResult::Accepted { proof }))
    }
}

/// The connecting side of a handshake.
#[derive(Debug)]
pub struct Connector<'a> {
    secret: &'a [u8],
    role: Role,
    node: String,
    nonce: [u8; 32],
    state: Option<([u8; 32], [u8; 32])>,
}

impl<'a> Connector<'a> {
    /// `nonce` must be fresh randomness for every connection.
    pub fn new(secret: &'a [u8], role: Role, node: impl Into<String>, nonce: [u8; 32]) -> Self {
        Self { secret, role, node: node.into(), nonce, state: None }
    }

    /// Reads the acceptor's hello (a raw frame payload) and produces our answer.
    pub fn respond(&mut self, payload: &[u8]) -> Result<(PeerIdentity, ClientHello), HandshakeError> {
        check_prefix(payload)?;
        let hello: ServerHello = codec::decode(payload)?;
        let proof = client_proof(self.secret, &hello.nonce, &self.nonce, self.role, &self.node);
        self.state = Some((hello.nonce, proof));
        Ok((
            PeerIdentity { role: hello.role, node: hello.node },
            ClientHello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                role: self.role,
                node: self.node.clone(),
                nonce: self.nonce,
                proof,
            },
        ))
    }

    /// Checks the verdict (a raw frame payload): the acceptor must prove it knows the secret too.
    pub fn finish(&self, payload: &[u8]) -> Result<(), HandshakeError> {
        let result: HandshakeResult = codec::decode(payload)?;
        let Some((nonce_s, proof_c)) = self.state else {
            return Err(HandshakeError::Rejected("verdict before hello".into()));
        };
        match result {
            HandshakeResult::Rejected { reason } => Err(HandshakeError::Rejected(reason)),
            HandshakeResult::Accepted { proof } => {
                let ok = verify_eq(
                    |m| {
                        m.update(b"gwrs-server-v1");
                        m.update(&self.nonce);
                        m.update(&nonce_s);
                        m.update(&proof_c);
                    },
                    self.secret,
                    &proof,
                );
                if ok { Ok(()) } else { Err(HandshakeError::BadProof) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::HEADER_LEN;

    fn payload<T: Serialize>(msg: &T) -> Vec<u8> {
        let mut out = Vec::new();
        codec::encode_frame(msg, &mut out, 1 << 20).unwrap();
        out.split_off(HEADER_LEN)
    }

    fn run(server_secret: &[u8], client_secret: &[u8]) -> Result<PeerIdentity, HandshakeError> {
        let acc = Acceptor::new(server_secret, Role::Gateway, "gw-1", [1; 32]);
        let mut con = Connector::new(client_secret, Role::Worker, "worker-1", [2; 32]);
        let (server_id, hello) = con.respond(&payload(&acc.hello())).unwrap();
        assert_eq!(server_id.role, Role::Gateway);
        let (peer, verdict) = acc.verify(&payload(&hello), &[Role::Worker, Role::Client])?;
        con.finish(&payload(&verdict))?;
        Ok(peer)
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let peer = run(b"s3cret", b"s3cret").unwrap();
        assert_eq!(peer, PeerIdentity { role: Role::Worker, node: "worker-1".into() });
    }

    #[test]
    fn wrong_secret_is_refused_by_the_acceptor() {
        assert!(matches!(run(b"right", b"wrong"), Err(HandshakeError::BadProof)));
    }

    #[test]
    fn secret_never_appears_in_the_transcript() {
        let secret = b"very-distinctive-secret-value";
        let acc = Acceptor::new(secret, Role::Register, "r", [3; 32]);
        let mut con = Connector::new(secret, Role::Gateway, "g", [4; 32]);
        let a = payload(&acc.hello());
        let (_, hello) = con.respond(&a).unwrap();
        let b = payload(&hello);
        let (_, verdict) = acc.verify(&b, &[Role::Gateway]).unwrap();
        let c = payload(&verdict);
        for frame in [a, b, c] {
            assert!(!frame.windows(secret.len()).any(|w| w == secret));
        }
    }

    #[test]
    fn acceptor_without_the_secret_is_detected_by_the_connector() {
        // An impostor acceptor answers "Accepted" with a proof made from the wrong secret.
        let impostor = Acceptor::new(b"guess", Role::Gateway, "gw", [1; 32]);
        let mut con = Connector::new(b"real", Role::Worker, "w", [2; 32]);
        let (_, _hello) = con.respond(&payload(&impostor.hello())).unwrap();
        let forged = HandshakeResult::Accepted { proof: [0; 32] };
        assert!(matches!(con.finish(&payload(&forged)), Err(HandshakeError::BadProof)));
    }

    #[test]
    fn replayed_client_hello_fails_against_a_new_nonce() {
        let acc1 = Acceptor::new(b"k", Role::Gateway, "gw", [1; 32]);
        let mut con = Connector::new(b"k", Role::Worker, "w", [2; 32]);
        let (_, hello) = con.respond(&payload(&acc1.hello())).unwrap();
        let recorded = payload(&hello);
        assert!(acc1.verify(&recorded, &[Role::Worker]).is_ok());
        let acc2 = Acceptor::new(b"k", Role::Gateway, "gw", [9; 32]);
        assert!(matches!(acc2.verify(&recorded, &[Role::Worker]), Err(HandshakeError::BadProof)));
    }

    #[test]
    fn wrong_version_is_reported_as_such() {
        let acc = Acceptor::new(b"k", Role::Gateway, "gw", [1; 32]);
        let mut hello = ClientHello {
            magic: MAGIC,
            version: PROTOCOL_VERSION + 1,
            role: Role::Worker,
            node: "w".into(),
            nonce: [0; 32],
            proof: [0; 32],
        };
        let err = acc.verify(&payload(&hello), &[Role::Worker]).unwrap_err();
        assert!(matches!(err, HandshakeError::Version { ours: 3, theirs: 4 }), "{err}");
        // A peer of the previous release (no routing index) is refused, naming both versions.
        hello.version = 2;
        let err = acc.verify(&payload(&hello), &[Role::Worker]).unwrap_err();
        assert_eq!(err.to_string(), "protocol version mismatch: we speak 3, the peer speaks 2");
        // A future version whose hello has a different shape after the prefix is still recognised.
        let mut future = payload(&(MAGIC, PROTOCOL_VERSION + 7));
        future.extend_from_slice(b"anything at all");
        let err = acc.verify(&future, &[Role::Worker]).unwrap_err();
        assert!(matches!(err, HandshakeError::Version { theirs, .. } if theirs == PROTOCOL_VERSION + 7), "{err}");
        hello.version = PROTOCOL_VERSION;
        hello.magic = *b"HTTP";
        assert!(matches!(acc.verify(&payload(&hello), &[Role::Worker]), Err(HandshakeError::BadMagic)));
    }

    #[test]
    fn disallowed_role_is_refused() {
        let acc = Acceptor::new(b"k", Role::Register, "r", [1; 32]);
        let mut con = Connector::new(b"k", Role::Register, "other", [2; 32]);
        let (_, hello) = con.respond(&payload(&acc.hello())).unwrap();
        let err = acc.verify(&payload(&hello), &[Role::Gateway, Role::Worker]).unwrap_err();
        assert!(matches!(err, HandshakeError::RoleNotAllowed { role: Role::Register, .. }));
    }

    #[test]
    fn garbage_is_a_clean_error() {
        let acc = Acceptor::new(b"k", Role::Gateway, "gw", [1; 32]);
        let mut con = Connector::new(b"k", Role::Worker, "w", [2; 32]);
        for garbage in [&b""[..], b"\x00", b"GET / HTTP/1.1\r\n\r\n", &[0xff; 300]] {
            assert!(acc.verify(garbage, &[Role::Worker]).is_err());
            assert!(con.respond(garbage).is_err());
            assert!(con.finish(garbage).is_err());
        }
    }

    #[test]
    fn rejection_reason_does_not_leak_proof_material() {
        assert_eq!(HandshakeError::BadProof.reason_for_peer(), "authentication failed");
    }
}
