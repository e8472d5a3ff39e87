//! `closeClient` from PHP as GatewayWorker's gateway does it: without a message PHP sends
//! `serialize(null)` (`N;`, with the scalar flag clear) and the client gets no message, only the
//! close; with `''` it gets an empty message first. A fake PHP BusinessWorker speaks the packets
//! exactly as `GatewayProtocol::encode` writes them.

use std::time::Duration;

use bytes::BytesMut;
use gw_gatewayworker_protocol::packet::FLAG_BODY_IS_SCALAR;
use gw_gatewayworker_protocol::{Cmd, Packet, PacketDecoder};
use gw_integration_tests::RegisterHandle;
use gw_integration_tests::php::{PhpGateway, PhpRegister};
use gw_integration_tests::ws::Received;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "php-key";
const T: Duration = Duration::from_secs(10);

fn packet(cmd: Cmd, connection_id: u32, flag: u8, body: &[u8]) -> Vec<u8> {
    let mut p = Packet::new(cmd);
    p.header.connection_id = connection_id;
    p.header.flag = flag;
    p.body = bytes::Bytes::copy_from_slice(body);
    let mut out = Vec::new();
    p.encode(&mut out).unwrap();
    out
}

/// A PHP BusinessWorker's link: the hello, then events in and commands out.
struct FakePhpWorker {
    stream: TcpStream,
    buf: BytesMut,
}

impl FakePhpWorker {
    async fn connect(gw: &PhpGateway) -> Self {
        let mut stream = TcpStream::connect(gw.php_addr).await.unwrap();
        let hello = format!(r#"{{"worker_key":"w:0","secret_key":"{KEY}"}}"#);
        stream.write_all(&packet(Cmd::WorkerConnect, 0, FLAG_BODY_IS_SCALAR, hello.as_bytes())).await.unwrap();
        Self { stream, buf: BytesMut::new() }
    }

    /// The connection id of the next client that connects.
    async fn next_connect(&mut self) -> u32 {
        let decoder = PacketDecoder::new(1 << 20);
        loop {
            while let Some(p) = decoder.decode(&mut self.buf).unwrap() {
                if p.cmd() == Some(Cmd::OnConnect) {
                    return p.header.connection_id;
                }
            }
            let n = tokio::time::timeout(T, self.stream.read_buf(&mut self.buf)).await.unwrap().unwrap();
            assert!(n > 0, "the gateway closed the worker link");
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }
}

#[tokio::test]
async fn close_client_sends_no_message_for_null_and_an_empty_one_for_an_empty_string() {
    let register = RegisterHandle::start("s").await;
    let php_register = PhpRegister::start(KEY).await;
    let gw = PhpGateway::start(&[register.addr], "s", php_register.addr, KEY).await;
    let mut worker = FakePhpWorker::connect(&gw).await;
    let g = gw.gateway.gw.clone();
    gw_integration_tests::eventually(T, "the PHP worker linked", || {
        let n = g.worker_count();
        async move { n == 1 }
    })
    .await;

    // closeClient($id): PHP's encode sees a non-scalar body (null) and sends serialize(null).
    let mut a = gw.gateway.client().await;
    let id = worker.next_connect().await;
    worker.send(&packet(Cmd::Kick, id, 0, b"N;")).await;
    assert!(matches!(a.next(T).await, Some(Received::Closed(Some((1000, _))))), "no N; text before the close");

    // closeClient($id, ''): an empty message, then the close.
    let mut b = gw.gateway.client().await;
    let id = worker.next_connect().await;
    worker.send(&packet(Cmd::Kick, id, FLAG_BODY_IS_SCALAR, b"")).await;
    assert_eq!(b.next(T).await, Some(Received::Text(String::new())));
    assert!(matches!(b.next(T).await, Some(Received::Closed(Some((1000, _))))));

    // A message that is a serialized string (non-scalar flag) is that string; anything else that
    // is not a string is refused and counted, and the client stays.
    let mut c = gw.gateway.client().await;
    let id = worker.next_connect().await;
    worker.send(&packet(Cmd::SendToOne, id, 0, b"s:2:\"hi\";")).await;
    assert_eq!(c.recv().await, "hi");
    let rejected = gw.gateway.metric("rejected_commands");
    worker.send(&packet(Cmd::SendToOne, id, 0, b"a:1:{i:0;i:1;}")).await;
    let g = gw.gateway.gw.clone();
    gw_integration_tests::eventually(T, "an array message refused", || {
        let n = g.state.metrics.get("rejected_commands").unwrap();
        async move { n == rejected + 1 }
    })
    .await;
    c.expect_silence(Duration::from_millis(200)).await;
    gw.stop().await;
}
