//! Client events as a PHP BusinessWorker receives them: the 28-byte header with the client's and
//! gateway's addresses and the PHP connection id, the session serialized as `$_SESSION`, and for
//! `onWebSocketConnect` the `['get' => …, 'server' => …, 'cookie' => …]` array PHP's gateway
//! builds from the handshake request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use gw_gatewayworker_protocol::packet::FLAG_BODY_IS_SCALAR;
use gw_gatewayworker_protocol::php::{self, Value};
use gw_gatewayworker_protocol::{Cmd, Header, Packet};
use gw_proto::{ClientInfo, Event, EventKind, urlencoded};

use super::PhpSide;

/// Turns one worker link's events into packets; remembers each client's info, which our events
/// carry only on a client's first event per link.
pub(super) struct EventEncoder {
    side: Arc<PhpSide>,
    known: HashMap<u64, Known>,
}

/// A client's info and the addresses every packet about it carries, read from the info once
/// (not parsed again for each of its messages), and its session as last sent.
struct Known {
    info: ClientInfo,
    client_ip: u32,
    client_port: u16,
    gateway_port: u16,
    /// The session of the client's last event that had one: the JSON the event carried and its
    /// PHP serialization. PHP's gateway sends the session with every event, so a session that
    /// has not changed since is sent again without being converted again.
    session: Option<(Bytes, Bytes)>,
}

impl Known {
    fn new(info: ClientInfo) -> Self {
        let client = info.client_addr.parse::<SocketAddr>().ok();
        let gateway_port = info.gateway_addr.parse::<SocketAddr>().ok().map_or(0, |a| a.port());
        Self {
            client_ip: client.map_or(0, |a| ipv4_number(a.ip())),
            client_port: client.map_or(0, |a| a.port()),
            gateway_port,
            info,
            session: None,
        }
    }

    /// `json` (a session an event carries) as PHP's serialization: the last one's again if the
    /// session is unchanged, else converted and remembered.
    fn session(&mut self, json: &Bytes) -> Bytes {
        if let Some((last, php)) = &self.session
            && last == json
        {
            return php.clone();
        }
        let php = session_bytes(json);
        self.session = Some((json.clone(), php.clone()));
        php
    }
}

impl EventEncoder {
    pub fn new(side: Arc<PhpSide>) -> Self {
        Self { side, known: HashMap::new() }
    }

    /// Appends the packet for `event` to `out`.
    pub fn encode(&mut self, event: &Event, out: &mut Vec<u8>) {
        if let Some(info) = &event.info {
            self.known.insert(event.client, Known::new(info.clone()));
        }
        // A resumed client keeps its client id, so Events.php's state for it stays right: PHP
        // workers get nothing on a resume, and its onClose once, when the held state ends.
        if matches!(event.kind, EventKind::Resume { .. }) {
            return;
        }
        let mut known = self.known.get_mut(&event.client);
        let ext_data = match (&event.session, known.as_deref_mut()) {
            (None, _) => Bytes::new(),
            (Some(json), Some(k)) => k.session(json),
            (Some(json), None) => session_bytes(json),
        };
        let known = known.as_deref();
        let (client_ip, client_port, gateway_port) =
            known.map_or((0, 0, 0), |k| (k.client_ip, k.client_port, k.gateway_port));
        let (cmd, body, flag) = match &event.kind {
            EventKind::Connect => (Cmd::OnConnect, Bytes::new(), FLAG_BODY_IS_SCALAR),
            EventKind::Message(p) => (Cmd::OnMessage, p.data.clone(), FLAG_BODY_IS_SCALAR),
            EventKind::Close | EventKind::Resume { .. } => (Cmd::OnClose, Bytes::new(), FLAG_BODY_IS_SCALAR),
            EventKind::WebSocketConnect { path, query, headers } => {
                let body = websocket_body(path, query, headers, known.map(|k| &k.info));
                (Cmd::OnWebSocketConnect, Bytes::from(body), 0)
            }
        };
        if matches!(event.kind, EventKind::Close) {
            self.known.remove(&event.client);
        }
        let packet = Packet {
            header: Header {
                cmd: cmd as u8,
                local_ip: u32::from(*self.side.advertise.ip()),
                local_port: self.side.advertise.port(),
                client_ip,
                client_port,
                connection_id: self.side.connection_id(event.client),
                flag,
                gateway_port,
            },
            ext_data,
            body,
        };
        // Bodies are bounded by the client message limit, far below 4 GiB.
        let _ = packet.encode(out);
    }
}

/// A JSON session as `Context::sessionEncode` writes it; an unreadable one as no session.
pub(super) fn session_bytes(json: &[u8]) -> Bytes {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(json) {
        Ok(map) => Bytes::from(php::session_from_json(&map)),
        Err(_) => Bytes::new(),
    }
}

/// `ip2long` of an address; IPv6 clients (which PHP's header cannot hold) are 0.0.0.0.
fn ipv4_number(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(0, u32::from),
    }
}

fn websocket_body(path: &str, query: &str, headers: &[(String, String)], info: Option<&ClientInfo>) -> Vec<u8> {
    let client = info.and_then(|i| i.client_addr.parse::<SocketAddr>().ok());
    let gateway = info.and_then(|i| i.gateway_addr.parse::<SocketAddr>().ok());
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let host = header("host").unwrap_or_default();
    let server_name =
        host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let uri = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
    let mut server: Vec<(String, Value)> = vec![
        ("QUERY_STRING".into(), Value::from(query)),
        ("REQUEST_METHOD".into(), Value::from("GET")),
        ("REQUEST_URI".into(), Value::from(uri)),
        ("SERVER_PROTOCOL".into(), Value::from("HTTP/1.1")),
        ("SERVER_NAME".into(), Value::from(server_name)),
        ("CONTENT_TYPE".into(), header("content-type").map_or(Value::Null, Value::from)),
        ("REMOTE_ADDR".into(), client.map_or(Value::Null, |a| Value::from(a.ip().to_string()))),
        ("REMOTE_PORT".into(), client.map_or(Value::Null, |a| Value::Int(a.port().into()))),
        ("SERVER_PORT".into(), gateway.map_or(Value::Null, |a| Value::Int(a.port().into()))),
    ];
    for (k, v) in headers {
        server.push((format!("HTTP_{}", k.to_ascii_uppercase().replace('-', "_")), Value::from(v.as_str())));
    }
    let get = pairs(urlencoded::query_pairs(query).into_iter());
    let cookie = pairs(
        headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("cookie")).flat_map(|(_, v)| v.split(';')).filter_map(
            |c| c.trim().split_once('=').map(|(k, v)| (k.trim().to_string(), urlencoded::decode(v.trim()))),
        ),
    );
    Value::map([
        ("get", get),
        ("server", Value::map(server.iter().map(|(k, v)| (k.as_str(), v.clone())))),
        ("cookie", cookie),
    ])
    .serialize()
}

/// Pairs as a PHP array; a later duplicate key wins, as in `parse_str`.
fn pairs(items: impl Iterator<Item = (String, String)>) -> Value {
    let mut out: Vec<(String, Value)> = Vec::new();
    for (k, v) in items {
        match out.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = Value::from(v),
            None => out.push((k, Value::from(v))),
        }
    }
    Value::map(out.iter().map(|(k, v)| (k.as_str(), v.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        Known::new(ClientInfo {
            client_addr: "192.0.2.1:50000".into(),
            gateway_addr: "192.0.2.2:7272".into(),
            listener: "websocket://0.0.0.0:7272".into(),
            protocol: gw_proto::Protocol::WebSocket,
        })
    }

    fn php_session(php: &[u8]) -> serde_json::Value {
        php::to_json(&php::unserialize(php, php::Limits::default()).unwrap()).unwrap()
    }

    #[test]
    fn an_unchanged_session_is_not_converted_again_and_a_changed_one_is() {
        let mut k = known();
        let first = k.session(&Bytes::from_static(br#"{"name":"ann","room":1}"#));
        assert_eq!(php_session(&first), serde_json::json!({"name": "ann", "room": 1}));
        // The same session in the next event (another `Bytes` with the same content, as a
        // session written back unchanged would be): the remembered serialization itself.
        let again = k.session(&Bytes::from(br#"{"name":"ann","room":1}"#.to_vec()));
        assert_eq!(again.as_ptr(), first.as_ptr(), "converted again");
        let changed = k.session(&Bytes::from_static(br#"{"name":"ann","room":2}"#));
        assert_eq!(php_session(&changed), serde_json::json!({"name": "ann", "room": 2}), "a stale session was sent");
        let back = k.session(&Bytes::from_static(br#"{"name":"ann","room":1}"#));
        assert_eq!(php_session(&back), serde_json::json!({"name": "ann", "room": 1}));
    }

    #[test]
    fn websocket_body_has_get_server_and_cookie() {
        let headers =
            vec![("Host".to_string(), "example.com:7272".to_string()), ("Cookie".into(), "sid=abc; t=x%20y".into())];
        let body = websocket_body("/chat", "room=1&name=A+B", &headers, None);
        let v = php::to_json(&php::unserialize(&body, php::Limits::default()).unwrap()).unwrap();
        assert_eq!(v["get"], serde_json::json!({"room": "1", "name": "A B"}));
        assert_eq!(v["cookie"], serde_json::json!({"sid": "abc", "t": "x y"}));
        assert_eq!(v["server"]["SERVER_NAME"], "example.com");
        assert_eq!(v["server"]["REQUEST_URI"], "/chat?room=1&name=A+B");
        assert_eq!(v["server"]["HTTP_COOKIE"], "sid=abc; t=x%20y");
    }
}
