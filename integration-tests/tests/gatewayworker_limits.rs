//! The GatewayWorker-protocol listeners admit PHP peers like our own internal listeners do:
//! unauthenticated connections are capped (they share the gateway's reserve of descriptors with
//! our internal listener, so they cannot take it from workers or leave WebSocket clients without
//! descriptors), a peer must authenticate within the handshake timeout in a small first packet
//! (it cannot make the gateway buffer `max_packet`), a register connection must say who it is
//! (pings do not count), and failures from one address are logged within its budget, then
//! summed up once per window.

use std::net::SocketAddr;
use std::time::Duration;

use gw_config::RegisterConfig;
use gw_gatewayworker_protocol::packet::FLAG_BODY_IS_SCALAR;
use gw_gatewayworker_protocol::{Cmd, Packet};
use gw_integration_tests::logs::CapturedLogs;
use gw_integration_tests::php::PhpRegister;
use gw_integration_tests::sockets::{closed_within, connect_from};
use gw_integration_tests::{GatewayHandle, NamedEcho, RegisterHandle, WorkerHandle, eventually, wait_for_workers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const KEY: &str = "php-key";
const SECRET: &str = "s";
const T: Duration = Duration::from_secs(10);

fn packet(cmd: Cmd, body: &[u8]) -> Vec<u8> {
    let mut p = Packet::new(cmd);
    p.header.flag = FLAG_BODY_IS_SCALAR;
    p.body = bytes::Bytes::copy_from_slice(body);
    let mut out = Vec::new();
    p.encode(&mut out).unwrap();
    out
}

/// A PHP GatewayClient's `isOnline` of a client that is not there: `i:0;`.
async fn is_online_answered(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else { return false };
    let hello = packet(Cmd::GatewayClientConnect, format!(r#"{{"secret_key":"{KEY}"}}"#).as_bytes());
    if s.write_all(&[hello, packet(Cmd::IsOnline, b"")].concat()).await.is_err() {
        return false;
    }
    let mut reply = [0u8; 8];
    matches!(tokio::time::timeout(T, s.read_exact(&mut reply)).await, Ok(Ok(_))) && &reply == b"\0\0\0\x04i:0;"
}

async fn php_gateway(register: &RegisterHandle, php_register: &PhpRegister, fd_reserve: usize) -> GatewayHandle {
    GatewayHandle::start_with(&[register.addr], SECRET, |c| {
        c.fd_reserve = fd_reserve;
        c.link.handshake_timeout = Duration::from_secs(60);
        c.gatewayworker = Some(gw_config::GatewayGatewayWorker {
            listen: "127.0.0.1:0".into(),
            registers: vec![php_register.addr.to_string()],
            secret_key: KEY.into(),
            ..Default::default()
        });
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_php_connections_are_capped_and_cannot_buffer_a_max_packet() {
    let register = RegisterHandle::start(SECRET).await;
    let php_register = PhpRegister::start(KEY).await;
    // fd_reserve 32: 16 connections unauthenticated at most (both internal listeners), 4 per address.
    let gw = php_gateway(&register, &php_register, 32).await;
    let php = gw.gw.gatewayworker_addr().unwrap();

    // A first packet announcing max_packet (10 MiB) is refused from its header, at once.
    let mut big = packet(Cmd::GatewayClientConnect, b"");
    big[..4].copy_from_slice(&(10u32 << 20).to_be_bytes());
    let mut s = TcpStream::connect(php).await.unwrap();
    s.write_all(&big).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(2)).await, "a 10 MiB hello is refused from its header");

    // A host on 127.0.0.2 opens 20 silent connections: 4 wait for their deadline, 16 are closed.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(connect_from("127.0.0.2", php).await);
    }
    let g = gw.gw.clone();
    eventually(T, "16 silent PHP connections refused at once", || {
        let n = g.state.metrics.get("rejected_links_busy").unwrap();
        async move { n == 16 }
    })
    .await;
    let mut closed = 0;
    for s in &mut silent {
        if closed_within(s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 16);
    // Meanwhile a PHP GatewayClient, a Rust worker and a WebSocket client from elsewhere are served.
    assert!(is_online_answered(php).await, "a PHP GatewayClient query is answered");
    let _worker = WorkerHandle::start("w", &[register.addr], SECRET, NamedEcho("w".into()));
    wait_for_workers(&gw, 1).await;
    let mut client = gw.client().await;
    client.send("hi").await;
    assert_eq!(client.recv().await, "w:hi");
    drop(silent);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_failures_from_one_address_are_logged_within_its_budget_then_once_per_window() {
    let logs = CapturedLogs::install("info");
    let register = RegisterHandle::start(SECRET).await;
    let php_register = PhpRegister::start(KEY).await;
    let gw = php_gateway(&register, &php_register, 256).await;
    let php = gw.gw.gatewayworker_addr().unwrap();
    let wrong = packet(Cmd::GatewayClientConnect, br#"{"secret_key":"wrong"}"#);
    for _ in 0..100 {
        let mut s = TcpStream::connect(php).await.unwrap();
        s.write_all(&wrong).await.unwrap();
        assert!(closed_within(&mut s, T).await);
    }
    let counts = || (gw.metric("handshake_failures"), gw.metric("handshakes_rate_limited"));
    eventually(T, "every attempt counted", || {
        let (failed, lean) = counts();
        async move { failed + lean == 100 }
    })
    .await;
    let (failed, _) = counts();
    let burst = u64::from(gw_link::LimiterConfig::default().max_failures);
    assert!((burst..=burst + 3).contains(&failed), "{failed} failures before the limiter");
    let text = logs.text();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count() as u64;
    assert_eq!(count("refused GatewayWorker peer: handshake failed"), failed, "{text}");
    assert_eq!(count("too many failed or unfinished handshakes from this address"), 1, "{text}");
    // The right key still gets in from that address.
    assert!(is_online_answered(php).await);
    gw.stop().await;
}

#[tokio::test]
async fn pings_do_not_keep_an_unauthenticated_connection_on_the_php_register() {
    let php = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = php.local_addr().unwrap();
    let native = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = RegisterConfig {
        gatewayworker: Some(gw_config::RegisterGatewayWorker { listen: addr.to_string(), ..Default::default() }),
        ..RegisterConfig::default()
    };
    config.link.handshake_timeout = Duration::from_millis(500);
    let stop = CancellationToken::new();
    let listeners = gw_register::Listeners { native, gatewayworker: Some(php) };
    let registries = gw_register::Registries::default();
    tokio::spawn(gw_register::run_with(config, listeners, stop.clone(), registries.clone()));
    let _stop = stop.drop_guard();

    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let pinging = tokio::spawn(async move {
        while w.write_all(b"{\"event\":\"ping\"}\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(T, r.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "closed after the handshake timeout despite its pings: {closed:?}");
    pinging.abort();
    assert_eq!(registries.gatewayworker.stats.handshake_failures.load(std::sync::atomic::Ordering::Relaxed), 1);

    // A worker that says who it is gets the list and stays.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"{\"event\":\"worker_connect\",\"secret_key\":\"\"}\n").await.unwrap();
    let n = tokio::time::timeout(T, s.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"{\"event\":\"broadcast_addresses\""), "{:?}", String::from_utf8_lossy(&buf[..n]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.write_all(b"{\"event\":\"ping\"}\n").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await.is_err(),
        "an authenticated peer stays, past the handshake timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_key_large_first_packets_share_a_budget() {
    let register = RegisterHandle::start(SECRET).await;
    let php_register = PhpRegister::start("").await;
    let gw = GatewayHandle::start_with(&[register.addr], SECRET, |c| {
        c.gatewayworker = Some(gw_config::GatewayGatewayWorker {
            listen: "127.0.0.1:0".into(),
            registers: vec![php_register.addr.to_string()],
            ..Default::default()
        });
    })
    .await;
    let php = gw.gw.gatewayworker_addr().unwrap();
    // Without a key a first packet may be a command up to max_packet (10 MiB); announced and not
    // sent, three such fit in the 32 MiB allowed before authentication, the fourth is refused.
    let mut header = packet(Cmd::SendToAll, b"");
    header[..4].copy_from_slice(&(10u32 << 20).to_be_bytes());
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(php).await.unwrap();
        s.write_all(&header[..28]).await.unwrap();
        held.push(s);
    }
    let g = gw.gw.clone();
    let mut fourth = TcpStream::connect(php).await.unwrap();
    fourth.write_all(&header[..28]).await.unwrap();
    // At once, not at the 5 s handshake deadline.
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await, "the fourth large first packet is refused");
    eventually(T, "the refusal counted", || {
        let n = g.state.metrics.get("handshake_failures").unwrap();
        async move { n == 1 }
    })
    .await;
    for s in &mut held {
        assert!(!closed_within(s, Duration::from_millis(100)).await, "the first three are still arriving");
    }
    // Small commands are not held up: isOnline without a key.
    let mut s = TcpStream::connect(php).await.unwrap();
    s.write_all(&packet(Cmd::IsOnline, b"")).await.unwrap();
    let mut reply = [0u8; 8];
    tokio::time::timeout(T, s.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(&reply, b"\0\0\0\x04i:0;");
    drop(held);
    gw.stop().await;
}
