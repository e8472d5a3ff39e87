//! The gateway's edge: listeners of every protocol (and TLS), allow-lists, limits, slow
//! consumers, hostile input, and the wait for a worker.

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_config::{ListenerConfig, SlowConsumerPolicy};
use gw_integration_tests::*;
use gw_stock_apps::Echo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "edge-secret-0123456789";

fn listener(url: &str) -> ListenerConfig {
    ListenerConfig::new(url)
}

/// Replies `<protocol>|<listener>|<message>`.
#[derive(Clone)]
struct WhereFrom;

impl Events for WhereFrom {
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let text = String::from_utf8_lossy(&msg.data).to_string();
        let listener = ctx.server.listener.split("://").next().unwrap_or("").to_string();
        ctx.send(format!("{:?}|{listener}|{text}", ctx.server.protocol.unwrap())).await?;
        Ok(())
    }
}

fn addr_of(gw: &GatewayHandle, scheme: &str) -> String {
    gw.gw
        .listener_urls()
        .into_iter()
        .find(|u| u.starts_with(&format!("{scheme}://")))
        .unwrap()
        .split_once("://")
        .unwrap()
        .1
        .to_string()
}

#[tokio::test]
async fn text_frame_and_tcp_listeners_serve_clients_and_workers_see_which_one() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.listeners =
            ["websocket", "text", "frame", "tcp"].iter().map(|s| listener(&format!("{s}://127.0.0.1:0"))).collect();
    })
    .await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, WhereFrom);
    wait_for_workers(&gw, 1).await;

    let mut ws = WsClient::connect(&format!("ws://{}/", addr_of(&gw, "websocket"))).await;
    ws.send("hi").await;
    assert_eq!(ws.recv().await, "WebSocket|websocket|hi");

    let mut text = tokio::net::TcpStream::connect(addr_of(&gw, "text")).await.unwrap();
    text.write_all(b"one\r\ntwo\n").await.unwrap();
    let mut got = String::new();
    while got.matches('\n').count() < 2 {
        let mut buf = [0u8; 256];
        let n = text.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    assert_eq!(got, "Text|text|one\nText|text|two\n");

    let mut frame = tokio::net::TcpStream::connect(addr_of(&gw, "frame")).await.unwrap();
    frame.write_all(&[0, 0, 0, 3, b'a', b'b', b'c']).await.unwrap();
    let len = frame.read_u32().await.unwrap() as usize;
    let mut body = vec![0u8; len];
    frame.read_exact(&mut body).await.unwrap();
    assert_eq!(body, b"Frame|frame|abc");

    let mut raw = tokio::net::TcpStream::connect(addr_of(&gw, "tcp")).await.unwrap();
    raw.write_all(b"xyz").await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = raw.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"Tcp|tcp|xyz");
}

#[tokio::test]
async fn wss_and_text_over_tls_work_and_a_bad_certificate_path_is_named() {
    let dir = process::temp_dir("tls");
    let (cert, key, der) = self_signed(&dir);
    let reg = RegisterHandle::start(SECRET).await;
    let tls = |url: &str| ListenerConfig { tls_cert: Some(cert.clone()), tls_key: Some(key.clone()), ..listener(url) };
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.listeners = vec![tls("wss://127.0.0.1:0"), tls("text+tls://127.0.0.1:0")];
    })
    .await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, WhereFrom);
    wait_for_workers(&gw, 1).await;

    let stream = tls_connect(&addr_of(&gw, "wss"), der.clone()).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/", stream).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text("secure")).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.to_text().unwrap(), "WebSocket|wss|secure");

    let mut text = tls_connect(&addr_of(&gw, "text+tls"), der).await;
    text.write_all(b"line\n").await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = text.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"Text|text+tls|line\n");

    // A wrong path is a startup error that names the path.
    let config = gw_config::GatewayConfig {
        listeners: vec![ListenerConfig {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            tls_key: Some(key.clone()),
            ..listener("wss://127.0.0.1:0")
        }],
        ..Default::default()
    };
    let listeners = gw_gateway::Listeners::bind(&config).await.unwrap();
    let err = gw_gateway::build(config, &listeners).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A blocking raw socket speaking just enough HTTP/WebSocket to misbehave.
struct Raw(StdTcpStream);

impl Raw {
    fn connect(addr: &str) -> Self {
        let s = StdTcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    /// Everything until the server closes.
    fn read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.0.read_to_end(&mut out);
        out
    }

    fn upgrade(addr: &str) -> Self {
        let mut r = Self::connect(addr);
        r.send(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            r.0.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        r
    }

    /// The close code of the first close frame in what the server sent.
    fn close_code(&mut self) -> Option<u16> {
        let data = self.read_all();
        let mut i = 0;
        while i + 2 <= data.len() {
            let opcode = data[i] & 0x0f;
            let len = (data[i + 1] & 0x7f) as usize;
            let (start, len) = match len {
                126 => (i + 4, u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize),
                127 => return None,
                n => (i + 2, n),
            };
            if opcode == 8 && len >= 2 {
                return Some(u16::from_be_bytes([data[start], data[start + 1]]));
            }
            i = start + len;
        }
        None
    }
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_websocket_input_gets_the_right_close_code_or_http_status_and_is_counted() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.max_message_size = 1024;
        c.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, Echo);
    wait_for_workers(&gw, 1).await;
    let addr = addr_of(&gw, "websocket");
    let mut bystander = gw.client().await;

    let a = addr.clone();
    let cases = tokio::task::spawn_blocking(move || {
        // Invalid UTF-8 in a text frame: 1007.
        let mut r = Raw::upgrade(&a);
        r.send(&masked(0x1, &[0xff, 0xfe, 0xfd]));
        assert_eq!(r.close_code(), Some(1007), "invalid UTF-8");
        // A frame over the limit: 1009.
        let mut r = Raw::upgrade(&a);
        let mut big = vec![0x82u8, 0x80 | 126, 0x08, 0x00]; // 2048 bytes, masked
        big.extend_from_slice(&[0, 0, 0, 0]);
        big.extend(std::iter::repeat_n(0u8, 2048));
        r.send(&big);
        assert_eq!(r.close_code(), Some(1009), "oversize");
        // An unmasked client frame: 1002.
        let mut r = Raw::upgrade(&a);
        r.send(&[0x81, 0x02, b'h', b'i']);
        assert_eq!(r.close_code(), Some(1002), "unmasked");
        // Handshake without a key: 400; with a bad version: 426; a plain GET: 426 with advice.
        for (req, status) in [
            (&b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"[..], "400"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", "426"),
            (b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", "426"),
        ] {
            let mut r = Raw::connect(&a);
            r.send(req);
            let resp = String::from_utf8_lossy(&r.read_all()).to_string();
            assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
            if status == "426" && resp.contains("Upgrade Required") {
                assert!(resp.contains("WebSocket"), "{resp}");
            }
        }
        // Slowloris: half a request head, then nothing; dropped after the handshake timeout.
        let mut r = Raw::connect(&a);
        r.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
        let started = std::time::Instant::now();
        assert!(r.read_all().is_empty());
        assert!(started.elapsed() < Duration::from_secs(5), "slow handshake dropped in time");
        // A half-open TCP connection that never says anything: dropped the same way.
        let mut r = Raw::connect(&a);
        assert!(r.read_all().is_empty());
    });
    cases.await.unwrap();
    // A refusal is counted just after its socket closes: on a loaded machine, a moment later.
    let g = gw.gw.clone();
    eventually(Duration::from_secs(5), "violations and handshake failures counted", || {
        let m = &g.state.metrics;
        let counted = m.get("protocol_violations").unwrap() >= 3 && m.get("handshake_failures").unwrap() >= 5;
        async move { counted }
    })
    .await;
    // Everyone else is unaffected and nothing is left open.
    bystander.send("still fine").await;
    assert_eq!(bystander.recv().await, "still fine");
    let g = gw.gw.clone();
    eventually(Duration::from_secs(5), "only the bystander's socket is open", || {
        let open = g.open_sockets();
        async move { open == 1 }
    })
    .await;
}

/// Two limits checked exactly: a request head over 8 KiB is refused with 431 even when it arrives
/// in the read that crosses the limit, and a 64-bit payload length with its top bit set (which
/// RFC 6455 forbids) is a protocol error, not merely a big message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_8_kib_gets_431_and_a_length_with_its_top_bit_set_gets_1002() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, Echo);
    wait_for_workers(&gw, 1).await;
    let addr = addr_of(&gw, "websocket");
    tokio::task::spawn_blocking(move || {
        // 9,000 bytes of headers in one write: the whole head is there after a few reads.
        let padding = "a".repeat(9000);
        let mut r = Raw::connect(&addr);
        r.send(format!("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Padding: {padding}\r\n\r\n").as_bytes());
        let resp = String::from_utf8_lossy(&r.read_all()).to_string();
        assert!(resp.starts_with("HTTP/1.1 431"), "a 9,000-byte head: {}", resp.lines().next().unwrap_or(""));
        // Exactly at the limit is still served.
        let head = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Padding: ";
        let fill = 8 * 1024 - head.len() - "\r\n\r\n".len();
        let mut r = Raw::connect(&addr);
        r.send(format!("{head}{}\r\n\r\n", "b".repeat(fill)).as_bytes());
        let mut status = [0u8; 12];
        r.0.read_exact(&mut status).unwrap();
        assert_eq!(&status, b"HTTP/1.1 101", "a head of exactly 8 KiB");

        // Length 2^63 (127, then 0x80 00 .. 00), masked.
        let mut r = Raw::upgrade(&addr);
        let mut frame = vec![0x82u8, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        frame.extend_from_slice(&[1, 2, 3, 4]);
        r.send(&frame);
        assert_eq!(r.close_code(), Some(1002), "a length with its top bit set");
    })
    .await
    .unwrap();
    assert_eq!(gw.metric("protocol_violations"), 1);
}

#[tokio::test]
async fn origin_and_path_allow_lists_refuse_with_403_and_404() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.listeners = vec![ListenerConfig {
            origins: vec!["https://good.example".into()],
            paths: vec!["/ws".into()],
            ..listener("websocket://127.0.0.1:0")
        }];
    })
    .await;
    let addr = addr_of(&gw, "websocket");
    let req = |path: &str, origin: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        for (path, origin, status) in [
            ("/ws", "https://evil.example", "403"),
            ("/other", "https://good.example", "404"),
            ("/ws", "https://good.example", "101"),
        ] {
            let mut r = Raw::connect(&a);
            r.send(req(path, origin).as_bytes());
            let mut buf = [0u8; 12];
            r.0.read_exact(&mut buf).unwrap();
            assert_eq!(&buf[9..12], status.as_bytes(), "{path} {origin}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn random_bytes_on_text_and_frame_listeners_close_the_offender_only() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.listeners = vec![
            ListenerConfig { max_message_size: Some(256), ..listener("text://127.0.0.1:0") },
            ListenerConfig { max_message_size: Some(256), ..listener("frame://127.0.0.1:0") },
        ];
    })
    .await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, Echo);
    wait_for_workers(&gw, 1).await;
    let mut good = tokio::net::TcpStream::connect(addr_of(&gw, "text")).await.unwrap();
    for scheme in ["text", "frame"] {
        let mut bad = tokio::net::TcpStream::connect(addr_of(&gw, scheme)).await.unwrap();
        // Pseudo-random bytes without newlines, then a length prefix far over the limit.
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1)
            .map(|b| if b == b'\n' { 0 } else { b })
            .collect();
        let _ = bad.write_all(&[0xff, 0xff, 0xff, 0xff]).await;
        let _ = bad.write_all(&junk).await;
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "{scheme}: offender closed");
    }
    assert!(gw.metric("protocol_violations") >= 2);
    good.write_all(b"ok\n").await.unwrap();
    let mut buf = [0u8; 16];
    let n = good.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_limit_are_refused_and_counted() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| c.max_connections_per_ip = 50).await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, Echo);
    wait_for_workers(&gw, 1).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(gw.client().await);
    }
    // 1,000 more from the same address: refused at accept.
    let addr = addr_of(&gw, "websocket");
    let mut refused = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            refused.push(s);
        }
    }
    let g = gw.gw.clone();
    eventually(Duration::from_secs(10), "1,000 refusals counted", || {
        let n = g.state.metrics.get("rejected_ip_limit").unwrap();
        async move { n >= 1000 }
    })
    .await;
    drop(refused);
    clients[0].send("alive").await;
    assert_eq!(clients[0].recv().await, "alive");
    assert_eq!(gw.metric("connections"), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_as_a_slow_consumer_and_counted() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.send_queue_bytes = 256 * 1024;
        c.max_message_size = 64 * 1024;
    })
    .await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, Echo);
    wait_for_workers(&gw, 1).await;
    // The stalled client joins group g, then never reads again.
    let addr = addr_of(&gw, "websocket");
    let stalled = tokio::task::spawn_blocking(move || {
        let mut r = Raw::upgrade(&addr);
        r.send(&masked(0x1, b"j"));
        r
    })
    .await
    .unwrap();
    let mut reader = gw.client().await;
    reader.send("j").await;
    assert_eq!(reader.recv().await, "joined");
    let mut sender = gw.client().await;
    let payload = format!("g:{}", "x".repeat(60 * 1024));
    let g = gw.gw.clone();
    for _ in 0..400 {
        sender.send(&payload).await;
        assert_eq!(reader.recv().await.len(), payload.len(), "the reading member keeps up");
        if g.state.metrics.get("dropped_slow_consumer").unwrap() > 0 {
            break;
        }
    }
    eventually(Duration::from_secs(10), "slow consumer dropped and counted", || {
        let (d, c) =
            (g.state.metrics.get("dropped_slow_consumer").unwrap(), g.state.metrics.get("connections").unwrap());
        async move { d > 0 && c == 2 }
    })
    .await;
    drop(stalled);
    sender.send("after").await;
    assert_eq!(sender.recv().await, "after");
}

#[tokio::test]
async fn slow_consumer_policy_drop_keeps_the_client_and_counts_the_drops() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.send_queue = 4;
        c.slow_consumer = SlowConsumerPolicy::Drop;
    })
    .await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, Echo);
    wait_for_workers(&gw, 1).await;
    let client = gateway_client(&[reg.addr], SECRET, 1).await;
    let mut c = gw.client().await;
    c.send("j").await;
    assert_eq!(c.recv().await, "joined");
    // A burst far over the 4-message queue while the client does not read.
    for i in 0..2000 {
        client.send_to_group("g", format!("m{i}")).await.unwrap();
    }
    let g = gw.gw.clone();
    eventually(Duration::from_secs(10), "drops counted", || {
        let d = g.state.metrics.get("dropped_slow_consumer").unwrap();
        async move { d > 0 }
    })
    .await;
    // Still connected: once it has read what was queued, it gets later messages.
    let mut read = 0;
    while let Some(ws::Received::Text(_)) = c.next(Duration::from_millis(500)).await {
        read += 1;
    }
    assert!(read < 2000, "some messages were dropped, not queued without bound");
    client.send_to_group("g", "last").await.unwrap();
    assert_eq!(c.recv().await, "last");
    assert_eq!(gw.metric("connections"), 1);
}

#[tokio::test]
async fn without_a_worker_events_are_held_then_delivered_or_the_client_is_told_1013() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| c.worker_wait = Duration::from_secs(20)).await;
    let mut c = gw.client().await;
    c.send("held").await;
    let _w = WorkerHandle::start("w", &[reg.addr], SECRET, Echo);
    assert_eq!(c.recv().await, "held", "delivered once a worker arrived");

    let short = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.worker_wait = Duration::from_millis(300);
        c.registers = vec![]; // no register: no worker will ever come
    })
    .await;
    let mut lonely = short.client().await;
    assert_eq!(lonely.expect_close().await.map(|c| c.0), Some(1013));
    assert!(short.metric("dropped_no_worker") >= 1);
}
