//! Shared by the chat demo's tests: the demo on port 0, a WebSocket chat client, a tiny HTTP
//! client, and polling instead of sleeping.
#![allow(dead_code)] // each test file uses a different part of this module

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gw_chat_demo::{DemoAddrs, DemoListeners};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for one expected message or condition.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client must stay silent when nothing may reach it (used sparingly: most negative
/// checks send a later message that must arrive first instead).
pub const QUIET: Duration = Duration::from_millis(300);

pub use gw_integration_tests::eventually;

/// The whole demo (register, gateway, chat worker, web backend) on `127.0.0.1:0`.
pub struct Demo {
    pub addrs: DemoAddrs,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Demo {
    pub async fn start() -> Self {
        let listeners = DemoListeners::bind("127.0.0.1", 0, 0, 0, 0).await.expect("bind the demo's listeners");
        let shutdown = CancellationToken::new();
        let (addrs, task) = gw_chat_demo::start(listeners, shutdown.clone()).await.expect("start the demo");
        let demo = Self { addrs, shutdown, task };
        // The web backend learns the gateway from the register on its own schedule: wait until it
        // can reach it, so the first API call of a test does not race that.
        let web = demo.addrs.web;
        eventually(TIMEOUT, "the web backend reaches the gateway", || async move {
            matches!(http(web, "GET", "/api/online", None).await, Ok((200, _)))
        })
        .await;
        demo
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addrs.websocket)
    }

    pub fn page_url(&self) -> String {
        format!("http://{}/", self.addrs.web)
    }

    /// A connected chat client that has received its `welcome`.
    pub async fn client(&self) -> Chatter {
        Chatter::connect(&self.ws_url()).await
    }

    /// A client logged in to `room` as `name`.
    pub async fn login(&self, name: &str, room: &str) -> Chatter {
        let mut c = self.client().await;
        c.login(name, room).await;
        c
    }

    /// `POST` to the web backend; returns the status and the JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string()).await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, body) = http(self.addrs.web, "POST", path, Some(body)).await.expect("HTTP request");
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {body:?}"));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http(self.addrs.web, "GET", path, None).await.expect("HTTP request")
    }

    /// Graceful stop of everything. Drop the clients first: the gateway would wait up to 2 s for
    /// the close handshake of clients nobody reads from.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the demo did not stop within 30 s")
            .expect("demo task");
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body. JSON body when
/// `body` is given.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP answer"))??;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) =
        raw.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other(format!("bad answer {raw:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A chat client over a real WebSocket.
pub struct Chatter {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// From the `welcome` message.
    pub id: String,
    /// `{"type":"ping"}` heartbeats received (and skipped) so far; each was answered with a pong.
    pub pings: usize,
}

impl Chatter {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let mut c = Self { ws, id: String::new(), pings: 0 };
        let welcome = c.recv_type("welcome").await;
        c.id = welcome["client_id"].as_str().expect("welcome has a client_id").to_string();
        c
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send(&mut self, msg: Value) {
        self.send_text(&msg.to_string()).await;
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws.send(Message::binary(data.to_vec())).await.expect("send");
    }

    /// The next JSON message within `timeout`, skipping heartbeat pings (answered with a pong);
    /// `None` on timeout. Panics if the connection closes.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            let text = match msg {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Binary(b))) => panic!("client {}: unexpected binary message {b:?}", self.id),
                Some(Ok(Message::Close(f))) => panic!("client {}: closed by the server: {f:?}", self.id),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("client {}: {e}", self.id),
                None => panic!("client {}: connection ended", self.id),
            };
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
            if v["type"] == "ping" {
                self.pings += 1;
                self.send(json!({"type": "pong"})).await;
                continue;
            }
            return Some(v);
        }
    }

    /// The next JSON message (heartbeats skipped).
    pub async fn recv(&mut self) -> Value {
        match self.next_within(TIMEOUT).await {
            Some(v) => v,
            None => panic!("client {}: no message within {TIMEOUT:?}", self.id),
        }
    }

    /// The next message, which must be of type `ty`.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "client {}: expected a {ty} message, got {v}", self.id);
        v
    }

    /// The next message, which must be an `error`; returns its text.
    pub async fn recv_error(&mut self) -> String {
        let v = self.recv_type("error").await;
        v["message"].as_str().expect("error has a message").to_string()
    }

    /// Nothing but heartbeats arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Some(v) = self.next_within(quiet).await {
            panic!("client {}: expected no message, got {v}", self.id);
        }
    }

    /// Logs in and takes the answers meant for this client: its own `login` broadcast (returned)
    /// and then the room's `history` (returned too).
    pub async fn login(&mut self, name: &str, room: &str) -> (Value, Value) {
        self.send(json!({"type": "login", "name": name, "room": room})).await;
        let login = self.recv_type("login").await;
        assert_eq!(login["client_id"], self.id.as_str(), "own login broadcast first: {login}");
        let history = self.recv_type("history").await;
        (login, history)
    }

    /// The next message must be a `say` from client `from` with `content`.
    pub async fn expect_say(&mut self, from: String, content: &str) -> Value {
        let m = self.recv_type("say").await;
        assert_eq!(m["content"], content, "client {} got {m}", self.id);
        assert_eq!(m["from_id"], from.as_str(), "client {} got {m}", self.id);
        m
    }

    pub async fn say(&mut self, content: &str) {
        self.send(json!({"type": "say", "to": "all", "content": content})).await;
    }

    pub async fn say_to(&mut self, to: &str, content: &str) {
        self.send(json!({"type": "say", "to": to, "content": content})).await;
    }

    /// Closes the connection and waits for the server's side of the close.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(TIMEOUT, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}

/// The member map of a `login` broadcast as sorted `(client_id, name)` pairs.
pub fn members(login: &Value) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = login["members"]
        .as_object()
        .unwrap_or_else(|| panic!("login without members: {login}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    m.sort();
    m
}

/// Sorted `(client_id, name)` pairs, to compare with [`members`].
pub fn pairs(list: &[(&Chatter, &str)]) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = list.iter().map(|(c, n)| (c.id.clone(), (*n).to_string())).collect();
    m.sort();
    m
}

/// A register, a gateway and a chat worker with a custom heartbeat (the demo itself always uses
/// the default interval).
pub struct Cluster {
    pub ws_url: String,
    stops: Vec<CancellationToken>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    pub async fn start(heartbeat: Duration) -> Self {
        use gw_chat_demo::Chat;
        use gw_config::{GatewayConfig, RegisterConfig, WorkerConfig};
        use tokio::net::TcpListener;

        let register = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let register_addr = register.local_addr().unwrap().to_string();
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!("ws://{}/", public.local_addr().unwrap());
        let internal = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (register_stop, gateway_stop, worker_stop) =
            (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
        let register_task = tokio::spawn({
            let stop = register_stop.clone();
            async move {
                let _ = gw_register::run(RegisterConfig::default(), register, stop).await;
            }
        });
        let gateway_config = GatewayConfig {
            registers: vec![register_addr.clone()],
            ping_interval: heartbeat,
            ping_data: gw_chat_demo::app::PING_DATA.into(),
            ping_not_response_limit: 0,
            ..GatewayConfig::default()
        };
        let listeners = gw_gateway::Listeners::new(vec![public], internal);
        let gateway = gw_gateway::build(gateway_config, &listeners).expect("build the gateway");
        let gateway_task = tokio::spawn({
            let (gateway, stop) = (gateway.clone(), gateway_stop.clone());
            async move {
                let _ = gw_gateway::serve(gateway, listeners, stop).await;
            }
        });
        let worker_config = WorkerConfig { registers: vec![register_addr], ..WorkerConfig::default() };
        let chat = Chat::default();
        let worker_task = tokio::spawn({
            let stop = worker_stop.clone();
            async move {
                gw_business_worker::Worker::new(worker_config, chat).run(stop).await;
            }
        });
        eventually(TIMEOUT, "the worker links to the gateway", || {
            let gateway = gateway.clone();
            async move { gateway.worker_count() > 0 }
        })
        .await;
        Self {
            ws_url,
            stops: vec![gateway_stop, worker_stop, register_stop],
            tasks: vec![gateway_task, worker_task, register_task],
        }
    }

    /// Stops the gateway, then the worker, then the register.
    pub async fn stop(self) {
        for (stop, task) in self.stops.into_iter().zip(self.tasks) {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("component stops").expect("task");
        }
    }
}
