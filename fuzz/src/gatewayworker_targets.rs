//! What the GatewayWorker-protocol fuzz target runs, and what it checks.
//!
//! Shared word for word with the stable replay test `gatewayworker-protocol/tests/fuzz_corpus.rs`
//! (which includes it with `#[path]`). Depends only on `gw-gatewayworker-protocol` and `bytes`.
//! Like the proto targets, it returns the most heap the code under test may hold for the input.

use bytes::BytesMut;
use gw_gatewayworker_protocol::packet::{HEAD_LEN, PacketDecoder};
use gw_gatewayworker_protocol::php::{self, Limits, Value};
use gw_gatewayworker_protocol::{PhpClientId, register};

/// Names of the targets in this file, which are also the corpus directories they own.
pub const TARGETS: [&str; 1] = ["gatewayworker"];

/// Largest packet the fuzzed decoder accepts (the gateway's default is larger; the checks are
/// the same).
const MAX_PACKET: usize = 64 * 1024;
/// Heap the scaffolding may use, and per input byte a decoded PHP value may take (an element is
/// at least 4 input bytes and a `(Key, Value)` pair about 64 bytes).
const SLACK: usize = 64 * 1024;
const PER_BYTE: usize = 256;

/// Runs the target `name` on `data`; `None` if the name is not one of [`TARGETS`].
pub fn run(name: &str, data: &[u8]) -> Option<usize> {
    match name {
        "gatewayworker" => Some(gatewayworker(data)),
        _ => None,
    }
}

/// Feeds `data` to the packet decoder in two pieces, unserializes every body and ext data as the
/// gateway would, and parses the input as a register line and a client id.
pub fn gatewayworker(data: &[u8]) -> usize {
    let decoder = PacketDecoder::new(MAX_PACKET);
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut buf = BytesMut::from(&data[..split]);
    let mut fed_rest = false;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(p)) => {
                assert!(HEAD_LEN + p.ext_data.len() + p.body.len() <= MAX_PACKET);
                let mut again = Vec::new();
                p.encode(&mut again).expect("a decoded packet encodes");
                let back = decoder.decode(&mut BytesMut::from(&again[..])).unwrap().unwrap();
                assert_eq!(back, p, "packet round trip");
                check_value(&p.body);
                check_value(&p.ext_data);
            }
            Ok(None) if !fed_rest => {
                buf.extend_from_slice(&data[split..]);
                fed_rest = true;
            }
            Ok(None) | Err(_) => break,
        }
    }
    check_value(data);
    let _ = register::parse(data);
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(id) = s.parse::<PhpClientId>()
    {
        assert_eq!(id.to_string().parse::<PhpClientId>().unwrap(), id);
    }
    SLACK + PER_BYTE * data.len()
}

/// Unserializes; whatever parses must serialize back to a value that parses equal.
fn check_value(bytes: &[u8]) {
    let limits = Limits::default();
    if let Ok(v) = php::unserialize(bytes, limits) {
        let again = php::unserialize(&v.serialize(), limits).expect("serialized output parses");
        if !has_nan(&v) {
            assert_eq!(again, v, "serialize round trip");
        }
        if let Ok(json) = php::to_json(&v) {
            let _ = php::from_json(&json).serialize();
        }
    }
    let _ = php::session_to_json(bytes, limits);
}

fn has_nan(v: &Value) -> bool {
    match v {
        Value::Float(f) => f.is_nan(),
        Value::Array(items) => items.iter().any(|(_, v)| has_nan(v)),
        _ => false,
    }
}

/// Seed inputs: `(target, file name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use gw_gatewayworker_protocol::{Cmd, Packet};
    let packet = |cmd, ext: &[u8], body: &[u8], flag| {
        let mut p = Packet::new(cmd);
        p.header.flag = flag;
        p.header.connection_id = 7;
        p.ext_data = bytes::Bytes::copy_from_slice(ext);
        p.body = bytes::Bytes::copy_from_slice(body);
        let mut out = Vec::new();
        p.encode(&mut out).unwrap();
        out
    };
    let session = br#"a:2:{s:7:"room_id";s:1:"1";s:11:"client_name";s:3:"Ann";}"#;
    [
        ("gatewayworker", "send_to_one", packet(Cmd::SendToOne, b"", b"hello", 1)),
        (
            "gatewayworker",
            "worker_connect",
            packet(Cmd::WorkerConnect, b"", br#"{"worker_key":"w:0","secret_key":""}"#, 1),
        ),
        ("gatewayworker", "set_session", packet(Cmd::SetSession, session, b"", 1)),
        (
            "gatewayworker",
            "ws_connect",
            packet(Cmd::OnWebSocketConnect, session, br#"a:1:{s:3:"get";a:1:{i:0;d:1.5;}}"#, 0),
        ),
        ("gatewayworker", "select", packet(Cmd::Select, br#"{"fields":["uid"],"where":{"groups":["g"]}}"#, b"", 1)),
        ("gatewayworker", "bomb", b"a:999999999:{a:1:{i:0;a:1:{".to_vec()),
        ("gatewayworker", "register_line", br#"{"event":"worker_connect","secret_key":"k"}"#.to_vec()),
        ("gatewayworker", "client_id", b"7f0000010b5400000001".to_vec()),
    ]
    .into_iter()
    .map(|(t, n, d)| (t, n.to_string(), d))
    .collect()
}
