//! Bad input on the GatewayWorker-protocol listeners of the gateway and the register: garbage,
//! `pack_len` 0 or huge, a partial packet then silence, unknown commands, commands before
//! authentication and a wrong secret key each get a log line and a closed connection; unserialize
//! bombs and other unusable parameters get a log line and a refused, counted command. Never a
//! panic, a hang or an unbounded allocation; the listeners go on serving well-behaved PHP peers.

use std::time::Duration;

use gw_gatewayworker_protocol::{Cmd, Packet};
use gw_integration_tests::RegisterHandle;
use gw_integration_tests::logs::CapturedLogs;
use gw_integration_tests::php::{PhpGateway, PhpRegister};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn packet(cmd: Cmd, ext: &[u8], body: &[u8]) -> Vec<u8> {
    let mut p = Packet::new(cmd);
    p.header.flag = 1;
    p.ext_data = bytes::Bytes::copy_from_slice(ext);
    p.body = bytes::Bytes::copy_from_slice(body);
    let mut out = Vec::new();
    p.encode(&mut out).unwrap();
    out
}

fn auth(key: &str) -> Vec<u8> {
    packet(Cmd::GatewayClientConnect, b"", format!(r#"{{"secret_key":"{key}"}}"#).as_bytes())
}

/// Sends `bytes` and expects the peer to close the connection (EOF or reset) promptly, having
/// answered nothing.
async fn expect_closed(addr: std::net::SocketAddr, bytes: &[u8], what: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: expected a closed connection, got {n} bytes"),
        Err(_) => panic!("{what}: the connection was left open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_php_peers_are_logged_and_closed_and_good_ones_still_served() {
    let logs = CapturedLogs::install("info");
    let key = "php-key";
    let register = RegisterHandle::start("s").await;
    let php_register = PhpRegister::start(key).await;
    let gw = PhpGateway::start(&[register.addr], "s", php_register.addr, key).await;
    let addr = gw.php_addr;

    let mut huge = packet(Cmd::Ping, b"", b"");
    huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut zero = packet(Cmd::Ping, b"", b"");
    zero[..4].copy_from_slice(&0u32.to_be_bytes());
    let mut ext_past_end = packet(Cmd::Ping, b"", b"");
    ext_past_end[24..28].copy_from_slice(&1000u32.to_be_bytes());
    let unknown = {
        let mut p = packet(Cmd::Ping, b"", b"");
        p[4] = 99;
        [auth(key), p].concat()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec()),
        ("a short packet, then silence", b"GET / HTTP/1.1\r\n".to_vec()),
        ("pack_len 0", zero),
        ("pack_len 4 GiB", huge),
        ("ext_len past the end", ext_past_end),
        ("unknown command", unknown),
        ("command before authentication", packet(Cmd::SendToAll, b"", b"spam")),
        ("wrong secret key", auth("wrong")),
        ("worker with a wrong secret key", packet(Cmd::WorkerConnect, b"", br#"{"worker_key":"w","secret_key":"x"}"#)),
    ];
    for (what, bytes) in &cases {
        expect_closed(addr, bytes, what).await;
    }
    // Commands with parameters we cannot take are refused and counted; the link stays up (a
    // worker link carries every other client's traffic), and the next query is answered.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let refused = [
        auth(key),
        packet(Cmd::SetSession, b"a:999999999:{a:999999999:{", b""),
        packet(Cmd::UpdateSession, "a:1:{i:0;".repeat(100).as_bytes(), b""),
        packet(Cmd::SetSession, b"i:1;", b""),
        packet(Cmd::SendToGroup, b"not json", b"x"),
        packet(Cmd::IsOnline, b"", b""),
    ];
    s.write_all(&refused.concat()).await.unwrap();
    let mut reply = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(&reply, b"\0\0\0\x04i:0;");
    assert_eq!(gw.gateway.metric("rejected_commands"), 4);

    let text = logs.text();
    for reason in [
        "exceeds the limit",
        "shorter than the 28-byte header",
        "ext_len 1000",
        "unknown command 99",
        "no complete packet within",
        "before authentication",
        "secret_key does not match",
        "declared length 999999999",
        "nested deeper than 32",
        "a session must be an array",
        "ext_data is not JSON",
    ] {
        assert!(text.contains(reason), "no log line says {reason:?}:\n{text}");
    }
    // Refused before authenticating: handshake failures, like our own internal listener's;
    // closed after (the unknown command): a link error.
    let closed = gw.gateway.metric("handshake_failures") + gw.gateway.metric("link_errors");
    assert!(closed >= cases.len() as u64, "{closed} of {} counted", cases.len());

    // A well-behaved GatewayClient query is still answered: `isOnline` of a client not here.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[auth(key), packet(Cmd::IsOnline, b"", b"")].concat()).await.unwrap();
    let mut reply = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(&reply, b"\0\0\0\x04i:0;");

    // The register: garbage, an unknown event and a wrong key are closed; a PHP worker is served.
    for (what, line) in [
        ("garbage line", &b"hello\n"[..]),
        ("unknown event", b"{\"event\":\"nope\"}\n"),
        ("wrong key", b"{\"event\":\"worker_connect\",\"secret_key\":\"bad\"}\n"),
        ("line without end", &[b'x'; 70_000][..]),
    ] {
        expect_closed(php_register.addr, line, what).await;
    }
    let mut s = TcpStream::connect(php_register.addr).await.unwrap();
    s.write_all(format!("{{\"event\":\"worker_connect\",\"secret_key\":\"{key}\"}}\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
    let line: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(line, serde_json::json!({"event": "broadcast_addresses", "addresses": [addr.to_string()]}));
    let stats = &php_register.registry.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert!(load(&stats.handshake_failures) + load(&stats.protocol_errors) >= 4);
}
