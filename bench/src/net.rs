//! Client connections and message payloads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub type Ws = WebSocketStream<TcpStream>;

/// Where connection number `g` goes and where it comes from.
#[derive(Debug, Clone)]
pub struct Targets {
    urls: Vec<(String, SocketAddr)>,
    sources: Vec<IpAddr>,
    /// Offer permessage-deflate in the handshake (see `Common::deflate`).
    pub deflate: bool,
}

impl Targets {
    /// `urls` are `ws://host:port/path` with a numeric IPv4/IPv6 host; sources are
    /// `127.0.<net>.<first>` .. `127.0.<net>.<first + count - 1>` (none when `count` is 0: the
    /// kernel picks the source).
    pub fn new(urls: &[String], net: u8, first: u8, count: u8) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "no --url given");
        let urls = urls
            .iter()
            .map(|u| {
                let rest = u.strip_prefix("ws://").with_context(|| format!("{u}: only ws:// URLs are supported"))?;
                let host = rest.split('/').next().unwrap_or_default();
                let addr: SocketAddr = host.parse().with_context(|| format!("{u}: the host must be ip:port"))?;
                Ok((u.clone(), addr))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(first as u16 + count as u16 <= 256, "too many source addresses");
        let sources = (0..count).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, net, first + i))).collect();
        Ok(Self { urls, sources, deflate: false })
    }

    pub fn gateways(&self) -> usize {
        self.urls.len()
    }

    /// Where client number `g` goes (address and path) and the source address it binds (`None`:
    /// the kernel picks), for clients that do their own handshake ([`crate::lean_ws`]).
    pub fn endpoint(&self, g: usize) -> (SocketAddr, String, Option<IpAddr>) {
        let (url, addr) = &self.urls[g % self.urls.len()];
        let rest = url.strip_prefix("ws://").unwrap_or(url);
        let path = rest.find('/').map_or_else(|| "/".to_string(), |i| rest[i..].to_string());
        let source = (!self.sources.is_empty() && addr.is_ipv4()).then(|| self.sources[g % self.sources.len()]);
        (*addr, path, source)
    }

    /// Connects client number `g`: TCP from its source address, then the WebSocket handshake.
    pub async fn connect(&self, g: usize, read_buffer: usize) -> anyhow::Result<Ws> {
        let url = &self.urls[g % self.urls.len()].0;
        let stream = self.tcp(g).await?;
        let config = WebSocketConfig::default().read_buffer_size(read_buffer);
        let mut request = url.as_str().into_client_request()?;
        if self.deflate {
            // Negotiated, never used by this client: the scenarios that offer it (idle) only
            // exchange messages below the gateway's compression threshold.
            request.headers_mut().insert(
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits".parse().expect("a header value"),
            );
        }
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .with_context(|| format!("websocket handshake with {url}"))?;
        Ok(ws)
    }

    /// The TCP connection of client number `g`, from its source address.
    pub async fn tcp(&self, g: usize) -> anyhow::Result<TcpStream> {
        let addr = &self.urls[g % self.urls.len()].1;
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if !self.sources.is_empty() && addr.is_ipv4() {
            let src = self.sources[g % self.sources.len()];
            socket.bind(SocketAddr::new(src, 0)).with_context(|| format!("bind {src}"))?;
        }
        let stream = socket.connect(*addr).await.with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        // The benchmark tears connections down by the thousand: reset them instead of leaving
        // TIME_WAIT sockets that would hold source ports for a minute.
        stream.set_zero_linger()?;
        Ok(stream)
    }
}

/// Microseconds since a process-wide origin: every timestamp in a payload is read back by the
/// process that wrote it.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Self(Instant::now())
    }

    pub fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }

    pub fn us_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.0).as_micros() as u64
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `v` as 16 lowercase hex digits.
pub fn put_hex(buf: &mut [u8], v: u64) {
    for (i, b) in buf[..16].iter_mut().enumerate() {
        *b = HEX[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
}

/// Reads 16 hex digits.
pub fn get_hex(buf: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in buf.get(..16)? {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// A text message of exactly `size` bytes: `head`, then each value as 16 hex digits, then `.`.
pub fn payload(head: &[u8], values: &[u64], size: usize) -> Message {
    let need = head.len() + 16 * values.len();
    let mut buf = vec![b'.'; size.max(need)];
    buf[..head.len()].copy_from_slice(head);
    for (i, v) in values.iter().enumerate() {
        put_hex(&mut buf[head.len() + 16 * i..], *v);
    }
    Message::Text(Utf8Bytes::try_from(Bytes::from(buf)).expect("ASCII"))
}

/// Reads the `n`th 16-digit value after a head of `head_len` bytes.
pub fn field(data: &[u8], head_len: usize, n: usize) -> Option<u64> {
    get_hex(data.get(head_len + 16 * n..)?)
}

/// Sends `text` and waits for a text reply for which `want` holds (other messages are skipped).
pub async fn round_trip(ws: &mut Ws, text: &str, timeout: Duration, want: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    ws.send(Message::text(text)).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("no answer to {text:?} within {timeout:?}"),
            Ok(None) => bail!("connection closed while waiting for an answer"),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(Message::Text(t)))) if want(t.as_str()) => return Ok(()),
            Ok(Some(Ok(Message::Close(c)))) => bail!("closed by the server: {c:?}"),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Connects every client in `ids`, at most `limit` handshakes at a time (0: all at once).
/// Returns the connections and the errors of those that failed.
pub async fn connect_all(
    targets: &Targets,
    ids: &[usize],
    limit: usize,
    read_buffer: usize,
) -> (Vec<(usize, Ws)>, Vec<anyhow::Error>) {
    let limit = if limit == 0 { ids.len().max(1) } else { limit };
    let results: Vec<(usize, anyhow::Result<Ws>)> = futures_util::stream::iter(ids.iter().copied())
        .map(|g| async move { (g, targets.connect(g, read_buffer).await) })
        .buffer_unordered(limit)
        .collect()
        .await;
    let mut ok = Vec::with_capacity(results.len());
    let mut failed = Vec::new();
    for (g, r) in results {
        match r {
            Ok(ws) => ok.push((g, ws)),
            Err(e) => failed.push(e),
        }
    }
    (ok, failed)
}

/// Prints the first few errors and how many there were.
pub fn report_errors(what: &str, errors: &[anyhow::Error]) {
    for e in errors.iter().take(3) {
        eprintln!("{what}: {e:#}");
    }
    if errors.len() > 3 {
        eprintln!("{what}: … {} errors in all", errors.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let m = payload(b"b:", &[7, u64::MAX, 0x1234], 64);
        let Message::Text(t) = m else { panic!() };
        assert_eq!(t.len(), 64);
        let d = t.as_bytes();
        assert_eq!(&d[..2], b"b:");
        assert_eq!(field(d, 2, 0), Some(7));
        assert_eq!(field(d, 2, 1), Some(u64::MAX));
        assert_eq!(field(d, 2, 2), Some(0x1234));
        assert_eq!(field(d, 2, 3), None);
    }
}
