//! A client of the recovery protocol (`docs/recovery.md`) for the tests, written from the
//! document as any client would be: it connects with `gw_recover=1` or `gw_resume`, reads the
//! control frames, counts data messages, strips the escape, and resumes.

use std::time::Duration;

use serde_json::Value;

use crate::ws::{RECV_TIMEOUT, Received, WsClient};

/// What the gateway said about recovery when a connection opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A fresh connection with recovery.
    Fresh,
    /// Resumed: `replayed` messages follow.
    Resumed {
        /// Messages replayed.
        replayed: u64,
    },
    /// Not recovered, with the reason and detail; a fresh connection follows.
    NotRecovered {
        /// The reason's name.
        reason: String,
        /// The gateway's explanation.
        detail: String,
    },
}

/// One recovering client across its connections.
pub struct RecoveringClient {
    /// The current connection.
    pub ws: WsClient,
    /// The client id the gateway gave it.
    pub client_id: String,
    /// Its token for the next resume.
    pub token: String,
    /// Data messages received, across its connections.
    pub received: u64,
    /// How the current connection opened.
    pub outcome: Outcome,
    /// After a resume: the data messages the gateway had taken from this client (its
    /// `accepted`).
    pub accepted: Option<u64>,
    /// Data messages sent with [`Self::send_counted`] across its connections, all kept (a test's
    /// outbox).
    pub sent: Vec<String>,
    /// Messages sent again after the last resume.
    pub resent: u64,
}

impl RecoveringClient {
    /// Connects to `ws_url` (ending in `/`) asking for recovery.
    pub async fn connect(ws_url: &str) -> Self {
        let ws = WsClient::connect(&format!("{ws_url}?gw_recover=1")).await;
        Self::opened(ws, 0).await
    }

    /// A new connection that resumes with `token` after `received` messages.
    pub async fn resume_with(ws_url: &str, token: &str, received: u64) -> Self {
        let ws = WsClient::connect(&format!("{ws_url}?gw_recover=1&gw_resume={token}&gw_received={received}")).await;
        Self::opened(ws, received).await
    }

    /// Resumes this client on a new connection (the old one is dropped without a close frame),
    /// and, resumed, sends again what the gateway did not take of what it sent.
    pub async fn reconnect(self, ws_url: &str) -> Self {
        let (token, received, sent) = (self.token.clone(), self.received, self.sent);
        self.ws.reset();
        let mut next = Self::resume_with(ws_url, &token, received).await;
        if matches!(next.outcome, Outcome::Resumed { .. }) {
            next.sent = sent;
            next.resend_unaccepted().await;
        }
        next
    }

    /// Sends `text` (a data message), kept for [`Self::resend_unaccepted`].
    pub async fn send_counted(&mut self, text: &str) {
        self.sent.push(text.to_string());
        self.ws.send(text).await;
    }

    /// After a resume, sends again the messages the gateway says it never took, in order.
    pub async fn resend_unaccepted(&mut self) {
        let accepted = self.accepted.expect("a resumed connection says what the gateway accepted") as usize;
        assert!(accepted <= self.sent.len(), "the gateway accepted {accepted} of {} sent", self.sent.len());
        for text in &self.sent[accepted..] {
            self.ws.send(text).await;
            self.resent += 1;
        }
    }

    /// Reads the opening control frames: `resumed` or `not_recovered` (if any), then `recovery`.
    async fn opened(mut ws: WsClient, received: u64) -> Self {
        let mut outcome = Outcome::Fresh;
        let mut accepted = None;
        loop {
            let frame = control(&ws.recv().await);
            match frame["type"].as_str() {
                Some("resumed") => {
                    outcome = Outcome::Resumed { replayed: frame["replayed"].as_u64().unwrap() };
                    accepted = Some(frame["accepted"].as_u64().expect("`accepted` in the resumed frame"));
                }
                Some("not_recovered") => {
                    outcome = Outcome::NotRecovered {
                        reason: frame["reason"].as_str().unwrap().into(),
                        detail: frame["detail"].as_str().unwrap().into(),
                    }
                }
                Some("recovery") => {
                    let received = match outcome {
                        Outcome::Resumed { .. } => received,
                        _ => 0,
                    };
                    assert_eq!(frame["received"].as_u64(), Some(received), "{frame}");
                    return Self {
                        ws,
                        client_id: frame["client_id"].as_str().unwrap().into(),
                        token: frame["token"].as_str().unwrap().into(),
                        received,
                        outcome,
                        accepted,
                        sent: Vec::new(),
                        resent: 0,
                    };
                }
                _ => panic!("unexpected control frame {frame}"),
            }
        }
    }

    /// The next data message (text, unescaped), counted; control frames in between are applied.
    pub async fn recv(&mut self) -> String {
        match self.next(RECV_TIMEOUT).await {
            Some(t) => t,
            None => panic!("no data message within {RECV_TIMEOUT:?}"),
        }
    }

    /// The next data message within `timeout`, or `None`.
    pub async fn next(&mut self, timeout: Duration) -> Option<String> {
        match self.next_or_closed(timeout).await {
            Ok(m) => m,
            Err(c) => panic!("connection closed: {c:?}"),
        }
    }

    /// The next data message within `timeout` (`Ok(None)` if none came), or how the connection
    /// closed.
    pub async fn next_or_closed(&mut self, timeout: Duration) -> Result<Option<String>, Option<(u16, String)>> {
        loop {
            let Some(received) = self.ws.next(timeout).await else { return Ok(None) };
            match received {
                Received::Text(t) => {
                    if let Some(escaped) = t.strip_prefix("\0\0") {
                        self.received += 1;
                        return Ok(Some(format!("\0{escaped}")));
                    }
                    if t.starts_with('\0') {
                        let frame = control(&t);
                        if frame["type"] == "recovery" {
                            self.token = frame["token"].as_str().unwrap().into();
                        }
                        continue;
                    }
                    self.received += 1;
                    return Ok(Some(t));
                }
                Received::Binary(b) => {
                    self.received += 1;
                    return Ok(Some(format!("<binary {} bytes>", b.len())));
                }
                Received::Closed(c) => return Err(c),
            }
        }
    }

    /// Asserts no data message arrives within half a second (nothing duplicated at the end).
    pub async fn expect_no_more(&mut self) {
        if let Some(extra) = self.next(Duration::from_millis(500)).await {
            panic!("unexpected message {extra:?} after {} received", self.received);
        }
    }

    /// Tells the gateway how many messages arrived, so it can trim its buffer.
    pub async fn ack(&mut self) {
        let ack = format!("\0{{\"type\":\"ack\",\"received\":{}}}", self.received);
        self.ws.send(&ack).await;
    }
}

/// A control frame's JSON.
fn control(text: &str) -> Value {
    let json = text.strip_prefix('\0').unwrap_or_else(|| panic!("not a control frame: {text:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("control frame is not JSON ({e}): {json:?}"))
}

/// A helper client in another language (`tests/recovery_client.py`, `tests/recovery_client.js`)
/// driven over its standard input and output, one line each way.
pub struct ScriptedClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl ScriptedClient {
    /// Starts `program` with `args`.
    pub fn spawn(program: &str, args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Self { child, stdin, lines }
    }

    /// The next line it prints (within 20 s).
    pub async fn said(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("the helper answers within 20 s")
            .expect("its output is readable")
            .expect("it is still running")
    }

    /// Sends it one line.
    pub async fn tell(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(format!("{line}\n").as_bytes()).await.expect("the helper reads its input");
    }

    /// Tells it `QUIT` and expects it to exit successfully.
    pub async fn quit(mut self) {
        self.tell("QUIT").await;
        assert!(self.child.wait().await.expect("it exits").success());
    }
}

/// The numbered messages `n<from>` … `n<to>`, space-separated (as the helpers print them).
pub fn numbers(from: u64, to: u64) -> String {
    (from..=to).map(|n| format!("n{n}")).collect::<Vec<_>>().join(" ")
}

/// A worker application that records what it saw, as `(event, client id)`: `connect`,
/// `message:<text>`, `resume:<replayed>`, `close`; it answers a message `echo:<x>` with
/// `echoed:<x>`.
#[derive(Clone, Default)]
pub struct EventLog(pub std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl EventLog {
    /// Logs `what` for the context's client.
    pub fn push(&self, what: &str, ctx: &gw_business_worker::Context) {
        self.0.lock().unwrap().push((what.into(), ctx.client_id.to_string()));
    }

    /// The events of one client, in order.
    pub fn of(&self, client: &str) -> Vec<String> {
        self.0.lock().unwrap().iter().filter(|(_, c)| c == client).map(|(e, _)| e.clone()).collect()
    }
}

impl gw_business_worker::Events for EventLog {
    async fn on_connect(&self, ctx: &mut gw_business_worker::Context) -> gw_business_worker::HandlerResult {
        self.push("connect", ctx);
        Ok(())
    }

    async fn on_message(
        &self,
        ctx: &mut gw_business_worker::Context,
        msg: gw_business_worker::Message,
    ) -> gw_business_worker::HandlerResult {
        let text = msg.as_text().unwrap_or("<binary>").to_string();
        self.push(&format!("message:{text}"), ctx);
        if let Some(rest) = text.strip_prefix("echo:") {
            ctx.send(format!("echoed:{rest}")).await?;
        }
        Ok(())
    }

    async fn on_resume(
        &self,
        ctx: &mut gw_business_worker::Context,
        replayed: u64,
    ) -> gw_business_worker::HandlerResult {
        self.push(&format!("resume:{replayed}"), ctx);
        Ok(())
    }

    async fn on_close(&self, ctx: &mut gw_business_worker::Context) -> gw_business_worker::HandlerResult {
        self.push("close", ctx);
        Ok(())
    }
}

/// Whether `node` has a WebSocket (`--experimental-websocket` on Node 20; built in from 22).
pub fn node_websocket() -> Result<(), String> {
    match std::process::Command::new("node")
        .args(["--experimental-websocket", "-e", "if (typeof WebSocket !== 'function') process.exit(1)"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("node has no WebSocket: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("node not found: {e}")),
    }
}

/// Whether `python3` has websocket-client (what the Python helper runs on).
pub fn python_websocket_client() -> Result<(), String> {
    match std::process::Command::new("python3").args(["-c", "import websocket"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("python3 cannot import websocket: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("python3 not found: {e}")),
    }
}
