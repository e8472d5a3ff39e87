//! The gateway's public listeners: what each one speaks (WebSocket or a TCP framing, with or
//! without TLS), its limits, and how a refused client is told.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use gw_config::{GatewayConfig, ListenerConfig, parse_listener_url};
use gw_proto::Protocol;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::GatewayError;
use crate::framing::{Framing, StreamProtocol};
use crate::upgrade::Policy;

/// A client socket counted against the caps on clients (`gw_link::ConnLimits`).
pub(crate) use gw_link::ConnSlot;

/// A local address and its text, shared by the clients that reached it.
type LocalAddr = (SocketAddr, Arc<str>);

/// One configured public listener.
#[derive(Clone)]
pub(crate) struct ListenerSpec {
    /// As configured, e.g. `websocket://0.0.0.0:7272` (with the real port once bound); shared
    /// by every client's info.
    pub url: Arc<str>,
    /// The local address its latest client reached, shared by the clients that reach the same
    /// one (every client, unless the listener is on a wildcard address of a multi-homed host).
    local: Arc<Mutex<Option<LocalAddr>>>,
    pub protocol: Protocol,
    pub tls: Option<TlsAcceptor>,
    pub max_message: usize,
    pub policy: Policy,
    /// Its WebSocket settings, tuned for the gateway (`client::tuned`), shared by every
    /// connection's transport.
    pub ws_config: Arc<WebSocketConfig>,
    /// A `pusher = true` listener: the Pusher apps (one state shared by every such listener).
    pub pusher: Option<Arc<crate::pusher::Pusher>>,
}

impl std::fmt::Debug for ListenerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSpec").field("url", &self.url).field("tls", &self.tls.is_some()).finish()
    }
}

impl ListenerSpec {
    /// `addr` (a client's local address) as the string its info shares with the clients before
    /// it that reached the same address.
    pub fn local_addr(&self, addr: SocketAddr) -> Arc<str> {
        let mut last = self.local.lock().expect("listener address lock");
        match &*last {
            Some((a, s)) if *a == addr => s.clone(),
            _ => {
                let s: Arc<str> = addr.to_string().into();
                *last = Some((addr, s.clone()));
                s
            }
        }
    }

    /// The framing of a TCP listener.
    pub fn framing(&self) -> Option<Framing> {
        let p = match self.protocol {
            Protocol::WebSocket => return None,
            Protocol::Text => StreamProtocol::Text,
            Protocol::Frame => StreamProtocol::Frame,
            Protocol::Tcp => StreamProtocol::Raw,
        };
        Some(Framing::new(p, self.max_message))
    }
}

/// Builds the listener specs (loading TLS certificates, so a bad path fails at startup, named).
pub(crate) fn specs(config: &GatewayConfig, bound: &[SocketAddr]) -> Result<Vec<ListenerSpec>, GatewayError> {
    let listeners = config.effective_listeners();
    if listeners.len() != bound.len() {
        return Err(GatewayError::ListenerCount { configured: listeners.len(), bound: bound.len() });
    }
    let pusher = config.pusher.clone().map(crate::pusher::Pusher::new).transpose()?.map(Arc::new);
    listeners
        .iter()
        .zip(bound)
        .map(|(l, addr)| {
            spec(config, l, *addr).map(|s| ListenerSpec { pusher: pusher.clone().filter(|_| l.pusher), ..s })
        })
        .collect()
}

fn spec(config: &GatewayConfig, l: &ListenerConfig, addr: SocketAddr) -> Result<ListenerSpec, GatewayError> {
    let url = parse_listener_url(&l.url).map_err(|reason| GatewayError::ListenerUrl { url: l.url.clone(), reason })?;
    let protocol = match url.protocol {
        "websocket" => Protocol::WebSocket,
        "text" => Protocol::Text,
        "frame" => Protocol::Frame,
        _ => Protocol::Tcp,
    };
    let tls = if url.tls {
        let (Some(cert), Some(key)) = (&l.tls_cert, &l.tls_key) else {
            return Err(GatewayError::TlsFilesMissing { url: l.url.clone() });
        };
        Some(tls_acceptor(cert, key)?)
    } else {
        None
    };
    let max_message = l.max_message_size.unwrap_or(config.max_message_size);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message.saturating_mul(2).max(64 * 1024))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let scheme = l.url.split_once("://").map(|(s, _)| s).unwrap_or("websocket");
    let compress = protocol == Protocol::WebSocket && l.compression.unwrap_or(config.compression.enabled);
    let deflate = compress.then(|| crate::deflate::Settings {
        threshold: config.compression.threshold,
        // Validated to 1..=9.
        level: config.compression.level.clamp(1, 9) as u8,
    });
    Ok(ListenerSpec {
        url: format!("{scheme}://{addr}").into(),
        local: Arc::default(),
        protocol,
        tls,
        max_message,
        policy: Policy { origins: l.origins.clone(), paths: l.paths.clone(), deflate },
        ws_config: Arc::new(crate::client::tuned(ws_config)),
        pusher: None,
    })
}

/// Loads a PEM certificate chain and key into a TLS acceptor; errors name the file.
pub(crate) fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, GatewayError> {
    gw_link::tls_acceptor(cert, key).map_err(GatewayError::Tls)
}

/// Best effort, never blocking: tells a plain HTTP (WebSocket) client why it is refused.
pub(crate) fn refuse(spec: &ListenerSpec, stream: &tokio::net::TcpStream) {
    if spec.protocol == Protocol::WebSocket && spec.tls.is_none() {
        let _ = stream.try_write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}
