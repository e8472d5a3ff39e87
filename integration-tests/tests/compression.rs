//! Compressed WebSockets (RFC 7692 permessage-deflate) at the gateway's edge, with a client that
//! compresses as browsers do: the handshake's answer, messages compressed both ways (fragmented,
//! with control frames between the fragments), the threshold, one compression per broadcast,
//! offers declined or limited, and broken compressed input.

use std::time::Duration;

use gw_config::{GatewayConfig, ListenerConfig};
use gw_integration_tests::deflate_ws::{BROWSER_OFFER, DeflateClient, Got, deflate};
use gw_integration_tests::*;
use gw_stock_apps::Echo;

const SECRET: &str = "compression-secret-0123456789";

/// What the gateway answers to any offer it accepts (no context takeover either way).
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A register, a gateway (`tweak`ed) and an echo worker (`Echo`: echo, `j` joins group `g`).
async fn cluster(tweak: impl FnOnce(&mut GatewayConfig)) -> (RegisterHandle, GatewayHandle, WorkerHandle) {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, tweak).await;
    let w = WorkerHandle::start("w", &[reg.addr], SECRET, Echo);
    wait_for_workers(&gw, 1).await;
    (reg, gw, w)
}

/// A JSON message of about 1 KB, as a dashboard pushes.
fn json_1k(n: usize) -> String {
    let rows: Vec<String> = (0..14)
        .map(|i| {
            format!(
                r#"{{"id":{i},"symbol":"SYM{i}","price":{}.{:02},"change":-0.{i}5,"volume":{}}}"#,
                100 + i * n,
                i,
                1000 * i
            )
        })
        .collect();
    format!(r#"{{"type":"prices","seq":{n},"rows":[{}]}}"#, rows.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_offer_is_accepted_and_messages_flow_compressed_both_ways() {
    let (_reg, gw, _w) = cluster(|_| {}).await;
    let mut c = DeflateClient::connect(&gw.ws_url, Some(BROWSER_OFFER)).await;
    assert_eq!(c.extensions.as_deref(), Some(ANSWER));
    let long = json_1k(1);
    assert!((900..1200).contains(&long.len()), "{}", long.len());

    // Compressed in, compressed out, in fewer bytes.
    c.send_compressed(&long).await;
    let got = c.recv_message().await;
    assert_eq!(got.text(), (long.as_str(), true));
    let Got::Message { wire, .. } = got else { unreachable!() };
    assert!(wire * 3 < long.len(), "{wire} bytes on the wire for {}", long.len());

    // Below the threshold (256 bytes by default) the answer goes uncompressed, however it came.
    c.send_compressed("hi there, hi there, hi there").await;
    assert_eq!(c.recv_message().await.text(), ("hi there, hi there, hi there", false));
    // An uncompressed message from the client is fine, and its long echo is compressed.
    c.send_plain(&long).await;
    assert_eq!(c.recv_message().await.text(), (long.as_str(), true));

    // A compressed message in three fragments with a ping between two of them: the pong comes
    // while the message is incomplete, then the whole echo.
    let z = deflate(long.as_bytes());
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, rest) = rest.split_at(rest.len() / 2);
    c.send_frame(0x41, a).await; // text, RSV1, no FIN
    c.send_frame(0x00, b).await; // continuation
    c.send_frame(0x89, b"are you there").await; // ping
    c.send_frame(0x80, rest).await; // final continuation
    assert_eq!(c.recv().await, Got::Pong(b"are you there".to_vec()));
    assert_eq!(c.recv_message().await.text(), (long.as_str(), true));

    assert_eq!(gw.metric("deflate_connections"), 1);
    assert_eq!(gw.metric("deflate_messages_in"), 3);
    assert_eq!(gw.metric("deflate_messages_out"), 3);
    assert_eq!(gw.metric("protocol_violations"), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_group_is_compressed_once_for_all_its_clients() {
    let (reg, gw, _w) = cluster(|_| {}).await;
    let mut browsers = Vec::new();
    for _ in 0..4 {
        browsers.push(DeflateClient::connect(&gw.ws_url, Some(BROWSER_OFFER)).await);
    }
    let mut small_window =
        DeflateClient::connect(&gw.ws_url, Some("permessage-deflate; server_max_window_bits=10")).await;
    assert_eq!(small_window.extensions.as_deref(), Some(format!("{ANSWER}; server_max_window_bits=10").as_str()));
    let mut plain = DeflateClient::connect(&gw.ws_url, None).await;
    assert_eq!(plain.extensions, None);
    for c in browsers.iter_mut().chain([&mut small_window, &mut plain]) {
        c.send_plain("j").await;
        assert_eq!(c.recv_message().await.text().0, "joined");
    }
    let api = gateway_client(&[reg.addr], SECRET, 1).await;
    let before = (gw.metric("deflate_compressions"), gw.metric("deflate_messages_out"));
    for n in 0..3 {
        let msg = json_1k(n);
        api.send_to_group("g", msg.as_str()).await.unwrap();
        let mut wires = Vec::new();
        for c in &mut browsers {
            let got = c.recv_message().await;
            assert_eq!(got.text(), (msg.as_str(), true));
            let Got::Message { wire, .. } = got else { unreachable!() };
            wires.push(wire);
        }
        assert!(wires.iter().all(|w| *w == wires[0]), "the same bytes for every client: {wires:?}");
        assert_eq!(small_window.recv_message().await.text(), (msg.as_str(), true));
        assert_eq!(plain.recv_message().await.text(), (msg.as_str(), false));
    }
    // Three messages, each deflated once for the four default-window clients and once for the
    // client with the smaller window: six compressions for fifteen compressed deliveries.
    assert_eq!(gw.metric("deflate_compressions") - before.0, 6);
    assert_eq!(gw.metric("deflate_messages_out") - before.1, 15);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_can_be_turned_off_and_offers_are_declined_or_limited_as_the_rfc_says() {
    // Off on this listener, on (the default) on the other.
    let (_reg, gw, _w) = cluster(|c| {
        c.listeners = vec![
            ListenerConfig { compression: Some(false), ..ListenerConfig::new("websocket://127.0.0.1:0") },
            ListenerConfig::new("websocket://127.0.0.1:0"),
        ];
    })
    .await;
    let urls: Vec<String> = gw
        .gw
        .listener_urls()
        .into_iter()
        .filter_map(|u| u.strip_prefix("websocket://").map(|a| format!("ws://{a}/")))
        .collect();
    let long = json_1k(7);
    let mut off = DeflateClient::connect(&urls[0], Some(BROWSER_OFFER)).await;
    assert_eq!(off.extensions, None, "not negotiated where it is off");
    off.send_plain(&long).await;
    assert_eq!(off.recv_message().await.text(), (long.as_str(), false));
    // RSV1 without the extension is a protocol error, as without compression support.
    off.send_compressed(&long).await;
    assert!(matches!(off.recv_message().await, Got::Close(Some((1002, _)))));

    // Invalid offers are declined (the connection goes on uncompressed).
    for bad in ["permessage-deflate; mystery", "permessage-deflate; server_max_window_bits=7", "x-webkit-deflate-frame"]
    {
        let c = DeflateClient::connect(&urls[1], Some(bad)).await;
        assert_eq!(c.extensions, None, "{bad}");
    }
    // A client that limits the gateway's window to 256 bytes gets the extension, and messages
    // uncompressed (zlib cannot compress with that window); its own compressed messages are
    // read as usual.
    let mut tiny = DeflateClient::connect(&urls[1], Some("permessage-deflate; server_max_window_bits=8")).await;
    assert_eq!(tiny.extensions.as_deref(), Some(format!("{ANSWER}; server_max_window_bits=8").as_str()));
    tiny.send_compressed(&long).await;
    assert_eq!(tiny.recv_message().await.text(), (long.as_str(), false));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_or_oversized_compressed_messages_close_the_client_with_the_right_code() {
    let (_reg, gw, _w) = cluster(|c| {
        c.max_message_size = 64 * 1024;
        c.send_queue_bytes = 1024 * 1024;
    })
    .await;
    // Not deflate data: 1007.
    let mut c = DeflateClient::connect(&gw.ws_url, Some(BROWSER_OFFER)).await;
    c.send_frame(0xc1, &[0xff, 0xfe, 0xfd, 0xfc]).await;
    match c.recv_message().await {
        Got::Close(Some((1007, reason))) => assert!(reason.contains("invalid compressed data"), "{reason}"),
        other => panic!("expected close 1007, got {other:?}"),
    }
    // 20 KB of compressed zeros that inflate to 16 MB, past the 64 KiB limit: 1009, long before
    // it is all inflated.
    let mut c = DeflateClient::connect(&gw.ws_url, Some(BROWSER_OFFER)).await;
    let bomb = deflate(&vec![0u8; 16 * 1024 * 1024]);
    assert!(bomb.len() < 32 * 1024, "{}", bomb.len());
    c.send_frame(0xc2, &bomb).await;
    match c.recv_message().await {
        Got::Close(Some((1009, reason))) => assert!(reason.contains("too big"), "{reason}"),
        other => panic!("expected close 1009, got {other:?}"),
    }
    // RSV1 on a continuation frame: 1002 (only a message's first frame carries it).
    let mut c = DeflateClient::connect(&gw.ws_url, Some(BROWSER_OFFER)).await;
    c.send_frame(0x01, b"part one").await;
    c.send_frame(0xc0, b"part two").await;
    assert!(matches!(c.recv_message().await, Got::Close(Some((1002, _)))));
    // A client that went on sending is not held: the gateway still serves the others.
    let mut ok = DeflateClient::connect(&gw.ws_url, Some(BROWSER_OFFER)).await;
    ok.send_compressed("still working, still working, still working").await;
    assert_eq!(ok.recv_message().await.text().0, "still working, still working, still working");
    assert_eq!(gw.metric("protocol_violations"), 3);
    ok.expect_silence(Duration::from_millis(50)).await;
    gw.stop().await;
}

/// Whether `python3` can import `websockets`; `Err` says why not.
fn python_websockets() -> Result<(), String> {
    match std::process::Command::new("python3").args(["-c", "import websockets"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("python3 cannot import websockets: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("python3 not found: {e}")),
    }
}

/// Python's `websockets` (which offers compression by default) against the gateway. Skips,
/// saying so, without it, unless `GW_REQUIRE_PYTHON=1` (`scripts/install-python-deps.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_talks_to_the_gateway_compressed() {
    if let Err(why) = python_websockets() {
        assert!(std::env::var_os("GW_REQUIRE_PYTHON").is_none(), "GW_REQUIRE_PYTHON is set but {why}");
        eprintln!("SKIP python_websockets_talks_to_the_gateway_compressed: {why} (run scripts/install-python-deps.sh)");
        return;
    }
    let (_reg, gw, _w) = cluster(|_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/websockets_client.py");
    let out = tokio::process::Command::new("python3").args([script, &gw.ws_url]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "websockets_client.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS"), "{stdout}");
    eprintln!("{}", stdout.trim());
    // What Python sent came compressed (it compresses every message), and what the gateway
    // sent back above the threshold went compressed: the long texts, the binary message and the
    // broadcast.
    assert_eq!(gw.metric("deflate_connections"), 1);
    assert!(gw.metric("deflate_messages_in") >= 4, "{}", gw.metric("deflate_messages_in"));
    assert_eq!(gw.metric("deflate_messages_out"), 4);
    assert_eq!(gw.metric("protocol_violations"), 0);
    gw.stop().await;
}
