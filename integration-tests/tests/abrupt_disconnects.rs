//! Clients that vanish with replies in flight: every message a worker sent them must end as
//! exactly one of written (`messages_out`) or dropped by reason, whichever way they left (reset,
//! plain FIN, close frame), and leaving without a close frame is a disconnect of its own kind,
//! not a protocol violation.

use std::time::Duration;

use gw_integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "abrupt-secret-0123456789";
const CLIENTS: usize = 10;
const MESSAGES: usize = 500;

/// How a client leaves after sending its messages in one write.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// SO_LINGER 0, then close: the kernel sends a reset.
    Reset,
    /// Shut down the write side, read until the gateway closes: a FIN without a close frame.
    Fin,
    /// A WebSocket close frame, then read until the gateway closes.
    CloseFrame,
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [7u8, 1, 8, 3];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

async fn upgraded(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// Sends [`MESSAGES`] text messages in one write, then leaves the way `how` says.
async fn burst_and_leave(addr: String, how: Leave) {
    let mut s = upgraded(&addr).await;
    let mut burst = Vec::new();
    for i in 0..MESSAGES {
        burst.extend(masked(0x1, format!("m{i}").as_bytes()));
    }
    if let Leave::CloseFrame = how {
        burst.extend(masked(0x8, &1000u16.to_be_bytes()));
    }
    s.write_all(&burst).await.unwrap();
    match how {
        Leave::Reset => {
            // Deprecated because a non-zero linger blocks the thread on drop; zero does not.
            #[allow(deprecated)]
            s.set_linger(Some(Duration::ZERO)).unwrap();
            drop(s);
        }
        Leave::Fin | Leave::CloseFrame => {
            if let Leave::Fin = how {
                s.shutdown().await.unwrap();
            }
            // Read until the gateway is done with us; a reset from it ends this too.
            let mut sink = vec![0u8; 64 * 1024];
            let read_all = async {
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(30), read_all).await.expect("the gateway closes");
        }
    }
}

/// Messages a worker sent to clients that are now gone, and where each of them ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Ledger {
    commands: u64,
    written: u64,
    dropped: u64,
}

fn ledger(gw: &GatewayHandle) -> Ledger {
    Ledger {
        commands: gw.metric("commands"),
        written: gw.metric("messages_out"),
        dropped: gw.metric("dropped_slow_consumer") + gw.metric("dropped_client_gone") + gw.metric("dropped_no_worker"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_to_a_vanished_client_is_written_or_counted_as_dropped() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, NamedEcho("w".into()));
    wait_for_workers(&gw, 1).await;
    let addr = gw.ws_url.trim_start_matches("ws://").trim_end_matches('/').to_string();

    for how in [Leave::Reset, Leave::Fin, Leave::CloseFrame] {
        let before = ledger(&gw);
        let violations = gw.metric("protocol_violations");
        let (closed, vanished) = (gw.metric("disconnects_closed"), gw.metric("disconnects_vanished"));
        let clients: Vec<_> = (0..CLIENTS).map(|_| tokio::spawn(burst_and_leave(addr.clone(), how))).collect();
        for c in clients {
            c.await.unwrap();
        }
        // Settled: every client is gone and the worker has acknowledged (so has sent the replies
        // of) every event it was given.
        let g = gw.gw.clone();
        eventually(Duration::from_secs(30), "clients gone and every event acknowledged", || {
            let g = g.clone();
            async move { g.state.client_count() == 0 && g.unacknowledged() == 0 }
        })
        .await;
        // A command still being executed when the last acknowledgement arrived is counted a moment
        // later; wait for the books to balance, then check they stay balanced.
        let balanced =
            |l: Ledger| l.written - before.written + l.dropped - before.dropped == l.commands - before.commands;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut now = ledger(&gw);
        while !balanced(now) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            now = ledger(&gw);
        }
        let sent = now.commands - before.commands;
        let written = now.written - before.written;
        let dropped = now.dropped - before.dropped;
        let gone = gw.metric("dropped_client_gone");
        eprintln!("{how:?}: {sent} replies sent, {written} written, {dropped} dropped ({gone} client_gone in all)");
        assert!(sent > 0, "{how:?}: the worker answered something");
        assert_eq!(written + dropped, sent, "{how:?}: every reply is written or dropped, exactly once");

        // Leaving without a close frame is a disconnect, not a protocol violation.
        assert_eq!(gw.metric("protocol_violations"), violations, "{how:?}: no protocol violation");
        let (closed, vanished) =
            (gw.metric("disconnects_closed") - closed, gw.metric("disconnects_vanished") - vanished);
        match how {
            Leave::Reset | Leave::Fin => assert_eq!((closed, vanished), (0, CLIENTS as u64), "{how:?}"),
            Leave::CloseFrame => assert_eq!((closed, vanished), (CLIENTS as u64, 0), "{how:?}"),
        }
    }
}
