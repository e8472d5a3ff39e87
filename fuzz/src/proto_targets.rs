//! What the proto fuzz targets run, and what they check.
//!
//! This file is shared word for word with the stable replay test `proto/tests/fuzz_corpus.rs`
//! (which includes it with `#[path]`), so every corpus and crash file is replayed through exactly
//! the code the fuzzer ran. It depends only on `gw-proto`, `bytes` and `serde`.
//!
//! Each function takes the raw fuzz input, panics when an invariant breaks, and returns the most
//! heap (in bytes) the code under test may hold at once for that input. The fuzz targets measure
//! the real peak with a counting allocator and fail when it is larger (the stable test cannot
//! install an allocator, the workspace forbids `unsafe`, and ignores the number).

use std::fmt::Debug;

use bytes::BytesMut;
use gw_proto::codec;
use gw_proto::frame::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError, HARD_MAX_FRAME, HEADER_LEN};
use gw_proto::handshake::{Acceptor, ClientHello, Connector, HandshakeError, HandshakeResult, Role, ServerHello};
use gw_proto::{FromGateway, FromRegister, ToGateway, ToRegister};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Heap the test scaffolding itself may use (buffers, the decoded copy, formatting of errors).
const SLACK: usize = 64 * 1024;
/// Heap per input byte a decoded message may take: the largest element of any message vector
/// (a `ConnectionInfo`, ~100 bytes) when every element costs one input byte, and its nesting.
const PER_BYTE: usize = 512;

/// The shared secret of every handshake the fuzzer plays.
pub const SECRET: &[u8] = b"fuzz-secret-0c1d";
/// The acceptor's fixed nonce (the fuzzer has no randomness; seeds are made for this one).
pub const SERVER_NONCE: [u8; 32] = [1; 32];
/// The connector's fixed nonce.
pub const CLIENT_NONCE: [u8; 32] = [2; 32];

/// Names of the targets in this file, which are also the corpus directories they own.
pub const TARGETS: [&str; 3] = ["frames", "messages", "handshake"];

/// Runs the target `name` on `data`; `None` if the name is not one of [`TARGETS`].
pub fn run(name: &str, data: &[u8]) -> Option<usize> {
    Some(match name {
        "frames" => frames(data),
        "messages" => messages(data),
        "handshake" => handshake(data),
        _ => return None,
    })
}

/// A frame payload as the encoder writes it (no length prefix).
pub fn payload<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_frame(msg, &mut out, HARD_MAX_FRAME).expect("encodable");
    out.split_off(HEADER_LEN)
}

/// `frames`: the first byte picks a frame limit and a read size; the rest is a byte stream fed to
/// a [`FrameDecoder`] in reads of that size, as `FrameReader` does. Every frame is decoded as each
/// of the four link enums.
pub fn frames(data: &[u8]) -> usize {
    let Some((&ctl, stream)) = data.split_first() else { return SLACK };
    let max = match ctl & 3 {
        0 => 16,
        1 => 256,
        2 => 4096,
        _ => DEFAULT_MAX_FRAME,
    };
    let read = usize::from(ctl >> 2) + 1;
    let dec = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    'stream: for piece in stream.chunks(read) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= max, "frame of {} bytes, limit {max}", frame.len());
                    assert_eq!(buf.len(), before - HEADER_LEN - frame.len(), "decoder lost or kept bytes");
                    link_payload(&frame);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete frame consumed bytes");
                    if before >= HEADER_LEN {
                        let announced = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                        assert!((1..=max).contains(&announced) && announced + HEADER_LEN > before);
                    }
                    break;
                }
                Err(e) => {
                    // The stream is dead here, as in `FrameReader`; the error must describe the header.
                    let announced = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    match e {
                        FrameError::TooLarge { len, max: m } => assert!(len == announced && len > max && m == max),
                        FrameError::Empty => assert_eq!(announced, 0),
                        other => panic!("unexpected frame error {other:?}"),
                    }
                    break 'stream;
                }
            }
            // The decoder reserves room for an announced frame only up to the limit.
            assert!(
                buf.capacity() <= 2 * (HEADER_LEN + max) + 2 * read + 64,
                "buffer capacity {} for a limit of {max}",
                buf.capacity()
            );
        }
    }
    2 * (HEADER_LEN + max) + PER_BYTE * data.len() + SLACK
}

/// One frame payload decoded as every link enum.
fn link_payload(payload: &[u8]) {
    round_trip::<ToGateway>(payload);
    round_trip::<FromGateway>(payload);
    round_trip::<ToRegister>(payload);
    round_trip::<FromRegister>(payload);
}

/// `messages`: the first byte picks a message type, the rest is one frame payload.
pub fn messages(data: &[u8]) -> usize {
    let Some((&which, payload)) = data.split_first() else { return SLACK };
    match which % 7 {
        0 => round_trip::<ToGateway>(payload),
        1 => round_trip::<FromGateway>(payload),
        2 => round_trip::<ToRegister>(payload),
        3 => round_trip::<FromRegister>(payload),
        4 => round_trip::<ServerHello>(payload),
        5 => round_trip::<ClientHello>(payload),
        _ => round_trip::<HandshakeResult>(payload),
    }
    PER_BYTE * data.len() + SLACK
}

/// Decodes `payload` as `T`; what decodes must re-encode to at most as many bytes and decode back
/// to the same value.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(payload: &[u8]) {
    let Ok(msg) = codec::decode::<T>(payload) else { return };
    let again = self::payload(&msg);
    assert!(again.len() <= payload.len(), "re-encoding grew from {} to {} bytes", payload.len(), again.len());
    let back: T = codec::decode(&again).expect("a re-encoded message decodes");
    assert_eq!(back, msg, "round trip changed the message");
}

/// `handshake`: the first byte picks the step, the rest is the peer's frame payload for it.
/// 0: an acceptor reads a `ClientHello`; 1: a connector reads a `ServerHello`; 2: a connector that
/// answered a genuine hello reads the verdict.
pub fn handshake(data: &[u8]) -> usize {
    let Some((&step, frame)) = data.split_first() else { return SLACK };
    let acceptor = Acceptor::new(SECRET, Role::Gateway, "gw", SERVER_NONCE);
    match step % 3 {
        0 => {
            let allowed = [Role::Worker, Role::Client];
            match acceptor.verify(frame, &allowed) {
                Ok((peer, verdict)) => {
                    // Only a hello carrying the proof for our nonce gets here: a connector with the
                    // secret, that role, node and nonce must compute the same proof and accept the verdict.
                    let hello: ClientHello = codec::decode(frame).expect("accepted hello decodes");
                    assert!(allowed.contains(&peer.role));
                    assert_eq!((peer.role, &peer.node), (hello.role, &hello.node));
                    let mut con = Connector::new(SECRET, hello.role, hello.node.clone(), hello.nonce);
                    let (_, answer) = con.respond(&payload(&acceptor.hello())).expect("genuine server hello");
                    assert_eq!(answer.proof, hello.proof, "accepted a proof the connector would not make");
                    con.finish(&payload(&verdict)).expect("the connector accepts the verdict");
                }
                Err(e) => check_refusal(&e),
            }
        }
        1 => {
            let mut con = Connector::new(SECRET, Role::Worker, "w", CLIENT_NONCE);
            match con.respond(frame) {
                Ok((peer, answer)) => {
                    let hello: ServerHello = codec::decode(frame).expect("answered hello decodes");
                    assert_eq!((peer.role, &peer.node), (hello.role, &hello.node));
                    assert_eq!((answer.role, answer.nonce), (Role::Worker, CLIENT_NONCE));
                    // A real acceptor with that nonce accepts the answer, and the connector its verdict.
                    let acc = Acceptor::new(SECRET, hello.role, hello.node, hello.nonce);
                    let (_, verdict) = acc.verify(&payload(&answer), &[Role::Worker]).expect("our answer verifies");
                    con.finish(&payload(&verdict)).expect("a genuine verdict is accepted");
                }
                Err(e) => check_refusal(&e),
            }
        }
        _ => {
            let mut con = Connector::new(SECRET, Role::Worker, "w", CLIENT_NONCE);
            assert!(con.finish(frame).is_err(), "a verdict before any hello was accepted");
            let (_, answer) = con.respond(&payload(&acceptor.hello())).expect("genuine server hello");
            if con.finish(frame).is_ok() {
                // Only the acceptor's genuine verdict may pass.
                let (_, verdict) = acceptor.verify(&payload(&answer), &[Role::Worker]).expect("our answer verifies");
                assert_eq!(codec::decode::<HandshakeResult>(frame).expect("accepted verdict decodes"), verdict);
            }
        }
    }
    PER_BYTE * data.len() + SLACK
}

/// A refusal never tells the peer anything about the secret.
fn check_refusal(e: &HandshakeError) {
    let reason = e.reason_for_peer();
    let secret = std::str::from_utf8(SECRET).expect("ascii secret");
    assert!(!reason.contains(secret) && !e.to_string().contains(secret), "secret in a refusal: {reason}");
    if matches!(e, HandshakeError::BadProof) {
        assert_eq!(reason, "authentication failed");
    }
}

/// Seed inputs per target: genuine encodings of every message shape, so the fuzzer starts from
/// valid structure. Written to `corpus/<target>/seed-*` by the `seeds` example.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use gw_proto::*;
    let mut out = Vec::new();
    let gw = GatewayInfo { address: "[::1]:2900".into(), name: "gw-1".into() };
    let payload_msg = Payload::text("hi");
    let info = ClientInfo {
        client_addr: "127.0.0.1:5000".into(),
        gateway_addr: "0.0.0.0:7272".into(),
        listener: "websocket://0.0.0.0:7272".into(),
        protocol: Protocol::WebSocket,
    };
    let to_gateway = vec![
        ToGateway::Command(Command::SendToClients { clients: vec![1, 2], msg: payload_msg.clone() }),
        ToGateway::Command(Command::SendToGroups {
            groups: vec!["g".into()],
            msg: Payload::binary(vec![0u8, 255]),
            exclude: vec![3],
        }),
        ToGateway::Command(Command::CloseClient {
            client: 1,
            last: Some(payload_msg.clone()),
            close: Some(CloseReason { code: 4000, reason: "bye".into() }),
        }),
        ToGateway::Command(Command::WriteBackSession {
            client: 1,
            seq: 3,
            changed: bytes::Bytes::from_static(b"{\"c\":1}"),
            removed: vec!["d".into()],
        }),
        ToGateway::Request { id: 7, query: Query::Sessions { clients: Some(vec![1]), group: Some("g".into()) } },
        ToGateway::Request { id: 8, query: Query::ClientsByUids { uids: vec!["u".into(), "v".into()] } },
        ToGateway::Ack { seq: 1 << 40 },
        ToGateway::Drain,
        ToGateway::Ping,
    ];
    let from_gateway = vec![
        FromGateway::Welcome { instance: 42, address: "gw:2900".into() },
        FromGateway::Event(Event {
            seq: 1,
            client: 2,
            kind: EventKind::WebSocketConnect {
                path: "/chat".into(),
                query: "a=1".into(),
                headers: vec![("cookie".into(), "x=y".into())],
            },
            info: Some(info),
            session: Some(bytes::Bytes::from_static(b"{\"k\":1}")),
            session_writes: 2,
            redelivered: true,
        }),
        FromGateway::Reply { id: 3, reply: Reply::NamedStrings(vec![("g".into(), vec!["u".into()])]) },
        FromGateway::Reply {
            id: 4,
            reply: Reply::Connections(vec![ConnectionInfo {
                client: 1,
                client_addr: "127.0.0.1:1".into(),
                uid: Some("u".into()),
                groups: vec!["g".into()],
                bytes_in: 1,
                bytes_out: 2,
                queue_len: 0,
            }]),
        },
        FromGateway::Reply {
            id: 5,
            reply: Reply::Sessions(vec![(1, Some(bytes::Bytes::from_static(b"{}"))), (2, None)]),
        },
        FromGateway::Pong,
    ];
    let to_register = vec![ToRegister::Announce { gateway: gw.clone() }, ToRegister::Subscribe, ToRegister::Ping];
    let from_register = vec![FromRegister::Gateways { list: vec![gw.clone(), gw] }, FromRegister::Pong];

    // messages: selector byte + payload; frames: control byte + a stream of several frames.
    let mut stream = Vec::new();
    let mut add = |sel: u8, p: Vec<u8>, out: &mut Vec<(&'static str, String, Vec<u8>)>| {
        let n = out.len();
        stream.extend_from_slice(&(p.len() as u32).to_be_bytes());
        stream.extend_from_slice(&p);
        out.push(("messages", format!("seed-{n:03}"), [&[sel][..], &p].concat()));
    };
    for m in &to_gateway {
        add(0, payload(m), &mut out);
    }
    for m in &from_gateway {
        add(1, payload(m), &mut out);
    }
    for m in &to_register {
        add(2, payload(m), &mut out);
    }
    for m in &from_register {
        add(3, payload(m), &mut out);
    }
    for (i, ctl) in [3u8, 2, 0b1111_1111, 0b0000_0111].into_iter().enumerate() {
        out.push(("frames", format!("seed-{i:03}"), [&[ctl][..], &stream].concat()));
    }
    out.push(("frames", "seed-oversize".into(), vec![2, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    out.push(("frames", "seed-empty-frame".into(), vec![3, 0, 0, 0, 0]));

    // handshake: a genuine transcript for the fixed nonces, a refused role, a rejection.
    let acceptor = Acceptor::new(SECRET, Role::Gateway, "gw", SERVER_NONCE);
    let server_hello = payload(&acceptor.hello());
    let mut worker = Connector::new(SECRET, Role::Worker, "w", CLIENT_NONCE);
    let (_, hello) = worker.respond(&server_hello).expect("genuine");
    let (_, verdict) = acceptor.verify(&payload(&hello), &[Role::Worker]).expect("genuine");
    let mut register = Connector::new(SECRET, Role::Register, "r", CLIENT_NONCE);
    let (_, register_hello) = register.respond(&server_hello).expect("genuine");
    let rejected = HandshakeResult::Rejected { reason: "authentication failed".into() };
    for (name, step, frame) in [
        ("client-hello", 0u8, payload(&hello)),
        ("client-hello-register", 0, payload(&register_hello)),
        ("server-hello", 1, server_hello),
        ("verdict", 2, payload(&verdict)),
        ("verdict-rejected", 2, payload(&rejected)),
    ] {
        out.push(("handshake", format!("seed-{name}"), [&[step][..], &frame].concat()));
    }
    out
}
