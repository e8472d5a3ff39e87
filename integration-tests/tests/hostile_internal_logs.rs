//! What hostile internal peers leave in the log: a wrong secret is logged per failed handshake
//! with the peer's address and neither the presented nor the configured secret; once an address
//! is over its failed-handshake budget, that is logged once per window, not once per connection.
//! (Its own test binary: it installs the global log subscriber.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use gw_integration_tests::logs::CapturedLogs;
use gw_integration_tests::*;
use gw_proto::handshake::Connector;
use gw_proto::{FrameDecoder, Role, codec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "the-configured-secret-b7d2e";
const WRONG: &str = "the-presented-wrong-secret-41c9";

/// One wrong-secret attempt from 127.0.0.1. Returns false if the server closed the connection
/// before saying hello (it never may: every connection is challenged).
async fn guess(to: SocketAddr) -> bool {
    let mut s = TcpStream::connect(to).await.unwrap();
    let mut buf = BytesMut::new();
    let dec = FrameDecoder::new(4096);
    let hello = loop {
        if let Some(f) = dec.decode(&mut buf).unwrap() {
            break f;
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    };
    let mut con = Connector::new(WRONG.as_bytes(), Role::Worker, "guesser", gw_link::random_nonce());
    let (_, answer) = con.respond(&hello).unwrap();
    let mut out = Vec::new();
    codec::encode_frame(&answer, &mut out, 4096).unwrap();
    let _ = s.write_all(&out).await;
    // Read the verdict and the close.
    let mut sink = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    closed.await.expect("the server closed a refused peer");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_never_reach_the_log_and_refusals_are_logged_once_per_window() {
    let logs = CapturedLogs::install("debug");

    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    eventually(Duration::from_secs(10), "gateway announced", || {
        let n = reg.registry.gateways().len();
        async move { n == 1 }
    })
    .await;
    assert_eq!(IpAddr::V4(Ipv4Addr::LOCALHOST), gw.internal.ip());

    let mut answered = [0u32; 2];
    for (i, to) in [gw.internal, reg.addr].into_iter().enumerate() {
        for _ in 0..60 {
            if guess(to).await {
                answered[i] += 1;
            }
        }
    }
    assert_eq!(answered, [60, 60], "every connection gets the challenge");
    // Each attempt is counted just after its connection closes.
    let counts = || {
        (
            gw.metric("handshake_failures"),
            gw.metric("handshakes_rate_limited"),
            reg.registry.stats.handshake_failures.load(Ordering::Relaxed),
            reg.registry.stats.rate_limited.load(Ordering::Relaxed),
        )
    };
    eventually(Duration::from_secs(10), "every attempt counted", || {
        let (a, b, c, d) = counts();
        async move { a + b == 60 && c + d == 60 }
    })
    .await;
    let (gw_failed, _, reg_failed, _) = counts();
    let burst = u64::from(gw_link::LimiterConfig::default().max_failures);
    assert!((burst..=burst + 3).contains(&gw_failed), "gateway: {gw_failed} failed handshakes before the limiter");
    assert!((burst..=burst + 3).contains(&reg_failed), "register: {reg_failed} failed handshakes before the limiter");

    let text = logs.text();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count() as u64;
    // One line per failed handshake, with the peer address and the reason.
    assert_eq!(count("refused internal peer: handshake failed"), gw_failed, "{text}");
    assert_eq!(count("refused peer: handshake failed"), reg_failed, "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains("handshake failed"))
            .all(|l| l.contains("127.0.0.1") && l.contains("authentication failed")),
        "{text}"
    );
    // Over budget: one line per listener for the whole run of lean attempts.
    assert_eq!(count("too many failed or unfinished handshakes from this address"), 2, "{text}");
    // No secret, presented or configured, anywhere.
    assert!(!text.contains(SECRET), "the configured secret leaked into the log");
    assert!(!text.contains(WRONG), "the presented secret leaked into the log");
}
