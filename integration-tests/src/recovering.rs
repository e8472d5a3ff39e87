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

    /// Resumes this client on a new connection (the old one is dropped without a close frame).
    pub async fn reconnect(self, ws_url: &str) -> Self {
        let (token, received) = (self.token.clone(), self.received);
        self.ws.reset();
        Self::resume_with(ws_url, &token, received).await
    }

    /// Reads the opening control frames: `resumed` or `not_recovered` (if any), then `recovery`.
    async fn opened(mut ws: WsClient, received: u64) -> Self {
        let mut outcome = Outcome::Fresh;
        loop {
            let frame = control(&ws.recv().await);
            match frame["type"].as_str() {
                Some("resumed") => outcome = Outcome::Resumed { replayed: frame["replayed"].as_u64().unwrap() },
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
        loop {
            match self.ws.next(timeout).await? {
                Received::Text(t) => {
                    if let Some(escaped) = t.strip_prefix("\0\0") {
                        self.received += 1;
                        return Some(format!("\0{escaped}"));
                    }
                    if t.starts_with('\0') {
                        let frame = control(&t);
                        if frame["type"] == "recovery" {
                            self.token = frame["token"].as_str().unwrap().into();
                        }
                        continue;
                    }
                    self.received += 1;
                    return Some(t);
                }
                Received::Binary(b) => {
                    self.received += 1;
                    return Some(format!("<binary {} bytes>", b.len()));
                }
                Received::Closed(c) => panic!("connection closed: {c:?}"),
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
