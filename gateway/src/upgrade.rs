//! The WebSocket opening handshake, done here rather than inside tungstenite so that every bad
//! request gets a clear HTTP status (a plain GET gets 426 with an explanation, a bad key 400, a
//! foreign origin 403, an unknown path 404) and the request head is bounded in size and time.
//! It also negotiates permessage-deflate (see [`crate::deflate`]).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::deflate::{self, Deflate};
use crate::stream::ClientStream;

/// Largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// What the handshake request carried, for `on_websocket_connect`.
#[derive(Debug, Default)]
pub(crate) struct HandshakeRequest {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
}

/// Allow-lists of a listener, and its compression.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    pub origins: Vec<String>,
    pub paths: Vec<String>,
    /// permessage-deflate for clients that offer it; `None`: never negotiated.
    pub deflate: Option<deflate::Settings>,
}

/// Why an upgrade failed (the peer was already answered where HTTP allowed it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("closed before the request was complete")]
    Eof,
    #[error("refused with HTTP {0}: {1}")]
    Refused(u16, &'static str),
}

fn header<'a>(req: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

async fn refuse(stream: &mut ClientStream, (status, reason, extra): Refusal) -> UpgradeError {
    let text = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let body = format!("{reason}\n");
    let resp = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
    UpgradeError::Refused(status, reason)
}

/// A client stream that completed the upgrade.
#[derive(Debug)]
pub(crate) struct Upgraded {
    pub stream: ClientStream,
    /// Bytes the client sent right after its request: the start of its first frame (usually
    /// none, and then no allocation).
    pub leftover: Vec<u8>,
    pub request: HandshakeRequest,
    /// permessage-deflate, when the client offered it and the listener accepted.
    pub deflate: Option<Deflate>,
}

/// Reads and checks the request, answers 101 or an error status, and returns the upgraded stream.
///
/// Only the reading and the writing await: the request is read into one growing buffer (no
/// chunk on the side) and checked by a plain function, so the handshake's future (allocated per
/// connecting client) carries neither a read chunk nor the parser's header table (3 KiB
/// together), which every client in its handshake would otherwise hold at once.
pub(crate) async fn accept(mut stream: ClientStream, policy: &Policy) -> Result<Upgraded, UpgradeError> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let head_len = loop {
        // Checked after every read, on what was read: the head may end in the last chunk, but
        // not past the limit.
        match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) if i + 4 <= MAX_HEAD => break i + 4,
            Some(_) => return Err(refuse(&mut stream, TOO_LARGE).await),
            None if buf.len() >= MAX_HEAD => return Err(refuse(&mut stream, TOO_LARGE).await),
            None => {}
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(UpgradeError::Eof);
        }
    };
    let (request, deflate, response) = match check(&buf[..head_len], policy) {
        Ok(checked) => checked,
        Err(refusal) => return Err(refuse(&mut stream, refusal).await),
    };
    stream.write_all(response.as_bytes()).await?;
    drop(response);
    let leftover = buf.split_off(head_len);
    Ok(Upgraded { stream, leftover, request, deflate })
}

/// How much more of the request head a read may take at once.
const READ_CHUNK: usize = 1024;

/// An HTTP refusal: status, the reason (the body), and extra header lines.
type Refusal = (u16, &'static str, &'static str);

const TOO_LARGE: Refusal = (431, "request head too large", "");

/// Checks a complete request head against `policy`: the request for the workers, the deflate
/// agreed, and the 101 response to write; or the refusal to answer with.
fn check(head: &[u8], policy: &Policy) -> Result<(HandshakeRequest, Option<Deflate>, String), Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err((400, "malformed HTTP request", "")),
    }
    if req.method != Some("GET") {
        return Err((405, "a WebSocket handshake is a GET request", "Allow: GET\r\n"));
    }
    if !has_token(header(&req, "upgrade"), "websocket") || !has_token(header(&req, "connection"), "upgrade") {
        return Err((
            426,
            "this is a WebSocket endpoint: connect with a WebSocket client",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        ));
    }
    if header(&req, "sec-websocket-version").map(str::trim) != Some("13") {
        return Err((426, "unsupported WebSocket version (13 is supported)", "Sec-WebSocket-Version: 13\r\n"));
    }
    let Some(key) = header(&req, "sec-websocket-key").map(str::trim).filter(|k| k.len() == 24) else {
        return Err((400, "missing or malformed Sec-WebSocket-Key", ""));
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !policy.paths.is_empty() && !policy.paths.iter().any(|p| p == path) {
        return Err((404, "no WebSocket endpoint at this path", ""));
    }
    if !policy.origins.is_empty() {
        let origin = header(&req, "origin").unwrap_or("");
        if !policy.origins.iter().any(|o| o == origin) {
            return Err((403, "origin not allowed", ""));
        }
    }
    let request = HandshakeRequest {
        path: path.to_string(),
        query: query.to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect(),
    };
    let deflate = policy.deflate.and_then(|settings| {
        let offers = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .filter_map(|h| std::str::from_utf8(h.value).ok());
        deflate::negotiate::negotiate(offers).map(|agreed| Deflate { settings, agreed })
    });
    let extensions = match &deflate {
        Some(d) => format!("Sec-WebSocket-Extensions: {}\r\n", d.agreed.response()),
        None => String::new(),
    };
    let accept = derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
    );
    Ok((request, deflate, response))
}
