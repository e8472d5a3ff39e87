//! Shared by the HTTP API's tests: a cluster with an HTTP API in front, and a plain HTTP/1.1
//! client over a real socket (raw, so hostile requests can be sent exactly as written).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_config::{ApiAccess, ApiKeyConfig, HttpApiConfig};
use gw_integration_tests::{GatewayHandle, RegisterHandle, WorkerHandle, fast_link, wait_for_workers};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "http-api-test-secret";
pub const KEY_ALL: &str = "key-all-0123456789abcdef";
pub const KEY_READ: &str = "key-read-0123456789abcdef";
pub const KEY_SEND: &str = "key-send-0123456789abcdef";

/// Tells each client its id on connect, echoes messages.
#[derive(Clone)]
pub struct Hello;

impl Events for Hello {
    async fn on_connect(&self, ctx: &mut Context) -> HandlerResult {
        let id = ctx.client_id.to_string();
        ctx.send(id).await?;
        Ok(())
    }
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        ctx.send(msg).await?;
        Ok(())
    }
}

/// An HTTP API running in this process.
pub struct ApiHandle {
    pub addr: SocketAddr,
    pub api: std::sync::Arc<gw_http_api::Api>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ApiHandle {
    pub async fn start(registers: &[SocketAddr], tweak: impl FnOnce(&mut HttpApiConfig)) -> Self {
        let mut config = HttpApiConfig {
            registers: registers.iter().map(|a| a.to_string()).collect(),
            secret: SECRET.into(),
            link: fast_link(),
            grace_period: Duration::from_secs(3),
            keys: vec![
                ApiKeyConfig { name: "all".into(), key: KEY_ALL.into(), access: ApiAccess::All },
                ApiKeyConfig { name: "read".into(), key: KEY_READ.into(), access: ApiAccess::Read },
                ApiKeyConfig { name: "send".into(), key: KEY_SEND.into(), access: ApiAccess::Send },
            ],
            ..HttpApiConfig::default()
        };
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = gw_http_api::Api::start(&config).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (api, stop) = (api.clone(), stop.clone());
            async move { gw_http_api::serve(api, listener, stop).await.unwrap() }
        });
        Self { addr, api, stop, task }
    }

    /// Waits until the API has linked `n` gateways.
    pub async fn linked(self, n: usize) -> Self {
        assert!(
            self.api.gateway.wait_for_gateways(n, Duration::from_secs(10)).await,
            "the API did not link {n} gateways"
        );
        self
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// Register, `gateways` gateways and one worker running [`Hello`].
pub struct Cluster {
    pub register: RegisterHandle,
    pub gateways: Vec<GatewayHandle>,
    pub worker: WorkerHandle,
}

impl Cluster {
    pub async fn start(gateways: usize) -> Self {
        let register = RegisterHandle::start(SECRET).await;
        let mut gws = Vec::new();
        for _ in 0..gateways {
            gws.push(GatewayHandle::start(&[register.addr], SECRET).await);
        }
        let worker = WorkerHandle::start("worker", &[register.addr], SECRET, Hello);
        for g in &gws {
            wait_for_workers(g, 1).await;
        }
        Self { register, gateways: gws, worker }
    }
}

/// A response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body` as written, with
/// `Connection: close`, and reads the whole response.
pub async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Response {
    raw_on(TcpStream::connect(addr).await.unwrap(), head, body).await
}

/// [`raw`] over a connection already made (TLS, for example).
pub async fn raw_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    head: &str,
    body: &[u8],
) -> Response {
    let req = format!("{head}\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413) and close before reading everything.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await.expect("response in time").ok();
    parse(&buf)
}

/// Reads one response (head and `Content-Length` body) without waiting for the connection to
/// close; `None` if it closes first.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let r = parse(&buf);
            let len: usize = r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            if buf.len() >= split + 4 + len {
                return Some(r);
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn parse(buf: &[u8]) -> Response {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// `POST path` with a JSON body and an optional API key.
pub async fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &str) -> Response {
    let auth = key.map(|k| format!("\r\nAuthorization: Bearer {k}")).unwrap_or_default();
    raw(addr, &format!("POST {path} HTTP/1.1\r\nContent-Type: application/json{auth}"), body.as_bytes()).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    raw(addr, &format!("GET {path} HTTP/1.1"), b"").await
}
