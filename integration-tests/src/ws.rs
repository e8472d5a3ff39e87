//! A real WebSocket test client (tokio-tungstenite).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one expected message.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// One client connection.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server did when we waited for a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// The connection closed, with the close code and reason if a close frame came.
    Closed(Option<(u16, String)>),
}

impl WsClient {
    /// Connects, panicking if it cannot.
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Self { ws }
    }

    /// Sends a text message.
    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws.send(Message::binary(data.to_vec())).await.unwrap();
    }

    /// The next text or binary message or the close, skipping pings and pongs.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            return Some(match msg {
                Some(Ok(Message::Text(t))) => Received::Text(t.to_string()),
                Some(Ok(Message::Binary(b))) => Received::Binary(b.to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    Received::Closed(frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string())))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Received::Closed(None),
            });
        }
    }

    /// The next text message; panics on anything else.
    pub async fn recv(&mut self) -> String {
        match self.next(RECV_TIMEOUT).await {
            Some(Received::Text(t)) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message, a client id in its text form (an application told the client its id).
    pub async fn recv_id(&mut self) -> gw_proto::ClientId {
        let t = self.recv().await;
        t.parse().unwrap_or_else(|e| panic!("not a client id ({e}): {t}"))
    }

    /// The next message parsed as JSON.
    pub async fn recv_json(&mut self) -> serde_json::Value {
        let t = self.recv().await;
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
    }

    /// Asserts nothing arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Some(m) = self.next(quiet).await {
            panic!("expected no message, got {m:?}");
        }
    }

    /// Waits for the server to close the connection; returns its close code and reason.
    pub async fn expect_close(&mut self) -> Option<(u16, String)> {
        loop {
            match self.next(RECV_TIMEOUT).await {
                Some(Received::Closed(c)) => return c,
                Some(_) => {}
                None => panic!("the server did not close the connection"),
            }
        }
    }

    /// Closes the connection and waits for the server's side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Some(Ok(_)) = self.ws.next().await {}
    }
}

impl WsClient {
    /// Connects with a hand-built handshake request (extra headers such as `Cookie`).
    pub async fn connect_request(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> Self {
        let uri = request.uri().to_string();
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap_or_else(|e| panic!("connect {uri}: {e}"));
        Self { ws }
    }

    /// Drops the connection abruptly: SO_LINGER 0 then close, so the kernel sends a reset and no
    /// close frame goes out (a phone that lost its network, as the gateway sees it).
    pub fn reset(self) {
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            // Deprecated because a non-zero linger blocks the thread on drop; zero does not.
            #[allow(deprecated)]
            s.set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(self);
    }

    /// Sends a raw frame (a control frame of the recovery protocol, for instance).
    pub async fn send_message(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    /// This end's socket address, as the gateway sees the client.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(s) => s.local_addr().unwrap(),
            _ => panic!("test clients are plain TCP"),
        }
    }
}
