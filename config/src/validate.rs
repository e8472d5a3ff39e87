//! Validation: every problem at once, each with the key it concerns and why.

use std::net::{IpAddr, SocketAddr};

use crate::types::*;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `link.max_frame`.
    pub key: String,
    /// What is wrong with its value.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Configuration types check themselves.
pub trait Validate {
    /// Every problem found; empty when the configuration is usable.
    fn validate(&self) -> Vec<Problem>;
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem { key: key.into(), reason: reason.into() });
    }

    /// `[recovery]`: checked whether enabled or not, so a typo shows before it is turned on.
    fn recovery(&mut self, r: &RecoveryConfig) {
        if r.window.is_zero() {
            self.add("recovery.window", "must be greater than zero (turn recovery off with enabled = false)");
        } else if r.window > std::time::Duration::from_secs(24 * 3600) {
            self.add("recovery.window", "is over 24h: a dropped client's state would be held that long");
        }
        if r.max_messages == 0 {
            self.add("recovery.max_messages", "must be at least 1");
        }
        if r.max_bytes == 0 {
            self.add("recovery.max_bytes", "must be at least 1");
        }
        if r.max_held_bytes < r.max_bytes {
            self.add(
                "recovery.max_held_bytes",
                format!(
                    "{} is less than recovery.max_bytes {}: not even one held client would fit",
                    r.max_held_bytes, r.max_bytes
                ),
            );
        }
    }

    /// A bind address: an IP literal and a port.
    fn bind_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.add(key, format!("{value:?} is not an IP:port address to listen on (IPv6 as [::1]:7272)"));
                None
            }
        }
    }

    /// The gateway's `listen`: an `IP:port` for WebSocket, or a listener URL without TLS the way
    /// PHP's `new Gateway("Websocket://0.0.0.0:7272")` takes it (TLS needs `[[listeners]]`
    /// for its certificate).
    fn public_listen(&mut self, value: &str) {
        if !value.contains("://") {
            self.bind_addr("listen", value);
            return;
        }
        match parse_listener_url(value) {
            Ok(u) if u.tls => self.add(
                "listen",
                format!("{value:?} is a TLS listener: declare it in [[listeners]] with its tls_cert and tls_key"),
            ),
            Ok(_) => {}
            Err(e) => self.add("listen", e),
        }
    }

    /// A peer address: a host name or IP, and a port.
    fn peer_addr(&mut self, key: &str, value: &str) {
        if let Err(reason) = check_host_port(value) {
            self.add(key, format!("{value:?} is not a host:port address: {reason}"));
        }
    }

    fn secret_if_exposed(&mut self, listens: &[(&str, Option<SocketAddr>)], secret: &str) {
        if !secret.is_empty() {
            return;
        }
        if let Some((key, addr)) = listens.iter().find_map(|(k, a)| a.filter(|a| !is_loopback(a.ip())).map(|a| (k, a)))
        {
            self.add(
                "secret",
                format!(
                    "required because `{key}` listens on the non-loopback address {addr}; set `secret` or the GW_SECRET environment variable"
                ),
            );
        }
    }

    fn name(&mut self, value: &str) {
        if value.trim().is_empty() {
            self.add("name", "must not be empty");
        } else if value.len() > 128 {
            self.add("name", "must be at most 128 bytes");
        }
    }

    fn registers(&mut self, list: &[String]) {
        if list.is_empty() {
            self.add("registers", "at least one register address is required");
        }
        for (i, r) in list.iter().enumerate() {
            self.peer_addr(&format!("registers[{i}]"), r);
        }
    }

    fn link(&mut self, link: &LinkConfig) {
        if link.max_frame < 1024 || link.max_frame > 64 * 1024 * 1024 {
            self.add("link.max_frame", format!("{} is outside 1024..=67108864 bytes", link.max_frame));
        }
        if link.handshake_timeout.is_zero() {
            self.add("link.handshake_timeout", "must be greater than zero");
        }
        if link.reconnect_min.is_zero() {
            self.add("link.reconnect_min", "must be greater than zero");
        }
        if link.reconnect_max < link.reconnect_min {
            self.add("link.reconnect_max", "must not be less than link.reconnect_min");
        }
        if link.failed_handshakes == 0 {
            self.add("link.failed_handshakes", "must be at least 1");
        }
        if link.failed_handshake_window.is_zero() {
            self.add("link.failed_handshake_window", "must be greater than zero");
        }
        if link.heartbeat_interval.is_zero() {
            self.add("link.heartbeat_interval", "must be greater than zero");
        }
        if link.heartbeat_timeout <= link.heartbeat_interval {
            self.add("link.heartbeat_timeout", "must be greater than link.heartbeat_interval");
        }
        if link.queue == 0 {
            self.add("link.queue", "must be at least 1");
        }
        if link.write_delay > MAX_WRITE_DELAY {
            self.add(
                "link.write_delay",
                format!(
                    "{:?} is more than {MAX_WRITE_DELAY:?}: every internal message would wait that long",
                    link.write_delay
                ),
            );
        }
    }

    fn process(&mut self, process: &ProcessConfig) {
        if process.run_dir.trim().is_empty() {
            self.add("process.run_dir", "must not be empty");
        }
        if !process.admin.is_empty() {
            self.bind_addr("process.admin", &process.admin);
        }
        if process.threads > MAX_THREADS {
            self.add(
                "process.threads",
                format!("{} is more than {MAX_THREADS}; 0 runs one per CPU core", process.threads),
            );
        }
        if process.malloc_arenas > MAX_THREADS {
            self.add(
                "process.malloc_arenas",
                format!("{} is more than {MAX_THREADS}; 0 leaves glibc's default", process.malloc_arenas),
            );
        }
    }

    fn http_app(&mut self, h: &HttpAppConfig) {
        match h.url.strip_prefix("http://") {
            Some(rest) => {
                let authority = rest.split('/').next().unwrap_or_default();
                if let Err(reason) = check_host_port(authority) {
                    self.add("http_app.url", format!("{:?}: {reason}", h.url));
                }
            }
            None => self.add(
                "http_app.url",
                format!("{:?} is not an http:// URL (for HTTPS, put a TLS-terminating proxy on the same host)", h.url),
            ),
        }
        if h.timeout.is_zero() {
            self.add("http_app.timeout", "must be greater than zero");
        }
        if h.concurrency == 0 {
            self.add("http_app.concurrency", "must be at least 1");
        }
        if h.retry_min.is_zero() || h.retry_max < h.retry_min {
            self.add("http_app.retry_min", "must be above zero and at most http_app.retry_max");
        }
        if h.max_answer < 1024 {
            self.add("http_app.max_answer", "must be at least 1024 bytes");
        }
        for name in h.headers.keys() {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                self.add(format!("http_app.headers.{name}"), "is not a valid header name");
            }
        }
    }

    fn log(&mut self, log: &LogConfig) {
        if let Err(reason) = check_log_level(&log.level) {
            self.add("log.level", reason);
        }
    }
}

/// What a client event needs besides its message and the client's session: the WebSocket
/// handshake's path, query and headers (the gateway reads at most 8 KiB of request head), the
/// client's addresses and the encoding, with room to spare.
pub const EVENT_FRAME_OVERHEAD: usize = 64 * 1024;

/// The longest `link.write_delay`.
const MAX_WRITE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// The most runtime threads `process.threads` may ask for.
const MAX_THREADS: usize = 1024;

/// The level names a log filter takes.
pub const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter: a level (`info`), or comma-separated directives each ending in a level
/// (`info,gw_gateway=debug`). tracing would take any word as a target name and enable that
/// target alone, so `verbose` or `loud` would silently log nothing at all, errors included.
pub fn check_log_level(filter: &str) -> Result<(), String> {
    let is_level = |s: &str| LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s.trim()));
    if filter.trim().is_empty() {
        return Err(format!("must not be empty: use one of {} (e.g. \"info\")", LOG_LEVELS.join(", ")));
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let ok = match directive.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(directive),
        };
        if !ok {
            let within = if directive == filter.trim() { String::new() } else { format!(" (in {filter:?})") };
            return Err(format!(
                "{directive:?}{within} is not a log level; use one of {} or directives like \"info,gw_gateway=debug\"",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Checks `host:port` where host is a DNS name, an IPv4 literal or a bracketed IPv6 literal.
pub(crate) fn check_host_port(value: &str) -> Result<(), &'static str> {
    if value.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = value.rsplit_once(':').ok_or("missing :port")?;
    port.parse::<u16>().map_err(|_| "port is not a number from 0 to 65535")?;
    if host.starts_with('[') {
        return Err("invalid IPv6 literal");
    }
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid_name { Ok(()) } else { Err("invalid host name") }
}

impl Validate for RegisterConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        p.name(&self.name);
        let listen = p.bind_addr("listen", &self.listen);
        p.secret_if_exposed(&[("listen", listen)], &self.secret);
        p.link(&self.link);
        p.log(&self.log);
        p.process(&self.process);
        p.0.extend(self.gatewayworker.iter().flat_map(Validate::validate));
        p.0
    }
}

/// The parts of a listener URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerUrl {
    /// `websocket`, `text`, `frame` or `tcp`.
    pub protocol: &'static str,
    /// Whether it serves TLS (`wss://`, `tls+...`).
    pub tls: bool,
    /// The address to bind.
    pub addr: SocketAddr,
}

/// Parses `websocket://host:port`, `wss://…`, `text[+tls]://…`, `frame[+tls]://…`, `tcp[+tls]://…`.
/// The scheme is read in any case, as Workerman does (`Websocket://0.0.0.0:7272`).
pub fn parse_listener_url(url: &str) -> Result<ListenerUrl, String> {
    let (scheme, addr) =
        url.split_once("://").ok_or_else(|| format!("{url:?} has no scheme (e.g. websocket://0.0.0.0:7272)"))?;
    let (protocol, tls) = match scheme.to_ascii_lowercase().as_str() {
        "websocket" | "ws" => ("websocket", false),
        "wss" | "websocket+tls" => ("websocket", true),
        "text" => ("text", false),
        "text+tls" => ("text", true),
        "frame" => ("frame", false),
        "frame+tls" => ("frame", true),
        "tcp" => ("tcp", false),
        "tcp+tls" => ("tcp", true),
        _ => {
            return Err(format!(
                "unknown scheme {scheme:?}: use websocket, wss, text, frame or tcp (with +tls for TLS)"
            ));
        }
    };
    let addr =
        addr.trim_end_matches('/').parse::<SocketAddr>().map_err(|_| format!("{addr:?} is not an IP:port address"))?;
    Ok(ListenerUrl { protocol, tls, addr })
}

impl Validate for GatewayConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        p.name(&self.name);
        p.public_listen(&self.listen);
        for (i, l) in self.listeners.iter().enumerate() {
            let key = format!("listeners[{i}]");
            match parse_listener_url(&l.url) {
                Ok(u) => {
                    if u.tls && (l.tls_cert.is_none() || l.tls_key.is_none()) {
                        p.add(format!("{key}.tls_cert"), "a TLS listener needs tls_cert and tls_key (PEM files)");
                    }
                    if !u.tls && (l.tls_cert.is_some() || l.tls_key.is_some()) {
                        p.add(
                            format!("{key}.url"),
                            "tls_cert/tls_key given but the URL is not a TLS one (use wss:// or +tls)",
                        );
                    }
                    if u.protocol != "websocket" && (!l.origins.is_empty() || !l.paths.is_empty()) {
                        p.add(format!("{key}.origins"), "origins and paths apply to WebSocket listeners only");
                    }
                    if l.pusher && u.protocol != "websocket" {
                        p.add(format!("{key}.pusher"), "the Pusher protocol runs on WebSocket listeners only");
                    }
                    if u.protocol != "websocket" && l.compression == Some(true) {
                        p.add(
                            format!("{key}.compression"),
                            "permessage-deflate applies to WebSocket listeners only (remove the key)",
                        );
                    }
                }
                Err(e) => p.add(format!("{key}.url"), e),
            }
            if let Some(m) = l.max_message_size
                && !(16..=64 * 1024 * 1024).contains(&m)
            {
                p.add(format!("{key}.max_message_size"), format!("{m} is outside 16..=67108864 bytes"));
            }
        }
        if !(1..=9).contains(&self.compression.level) {
            p.add("compression.level", format!("{} is outside 1..=9 (zlib levels)", self.compression.level));
        }
        p.recovery(&self.recovery);
        if self.max_connections == 0 {
            p.add("max_connections", "must be at least 1");
        }
        if self.max_connections_per_ip == 0 {
            p.add("max_connections_per_ip", "must be at least 1");
        }
        if self.fd_reserve < 8 {
            p.add(
                "fd_reserve",
                format!("{} is below 8: internal links would have no descriptors left", self.fd_reserve),
            );
        }
        let largest = self.listeners.iter().filter_map(|l| l.max_message_size).fold(self.max_message_size, usize::max);
        if self.send_queue_bytes < largest {
            p.add(
                "send_queue_bytes",
                format!(
                    "{} is less than the largest message size {largest}: one such message would make its client a slow consumer",
                    self.send_queue_bytes
                ),
            );
        }
        if self.max_session_bytes < 2 {
            p.add("max_session_bytes", "must be at least 2 bytes (an empty session is `{}`)");
        }
        if self.max_groups_per_client == 0 {
            p.add("max_groups_per_client", "must be at least 1");
        }
        // Every client event carries the client's session, a message at most `largest` long (or
        // the WebSocket handshake's fields), so the largest event must fit in one internal frame:
        // one that does not could never be sent to a worker.
        let event = largest.saturating_add(self.max_session_bytes).saturating_add(EVENT_FRAME_OVERHEAD);
        if event > self.link.max_frame {
            p.add(
                "link.max_frame",
                format!(
                    "{} bytes cannot carry the largest client event: a message of {largest} bytes (max_message_size) with a session of {} bytes (max_session_bytes) and {EVENT_FRAME_OVERHEAD} bytes for the rest needs {event}; raise link.max_frame (on every node) or lower those",
                    self.link.max_frame, self.max_session_bytes
                ),
            );
        }
        if !(1000..=4999).contains(&self.slow_consumer_close_code) {
            p.add("slow_consumer_close_code", "must be a WebSocket close code (1008 or 1013 are usual)");
        }
        let internal = p.bind_addr("internal_listen", &self.internal_listen);
        match &self.advertise {
            Some(a) => p.peer_addr("advertise", a),
            None => {
                if internal.is_some_and(|a| a.ip().is_unspecified()) {
                    p.add(
                        "advertise",
                        format!(
                            "required because internal_listen {} binds every interface: set the address workers can reach (GatewayWorker's lanIp), e.g. \"gateway-1:{}\"",
                            self.internal_listen,
                            internal.map(|a| a.port()).unwrap_or(2900)
                        ),
                    );
                }
            }
        }
        p.registers(&self.registers);
        p.secret_if_exposed(&[("internal_listen", internal)], &self.secret);
        if self.max_message_size < 16 || self.max_message_size > 64 * 1024 * 1024 {
            p.add("max_message_size", format!("{} is outside 16..=67108864 bytes", self.max_message_size));
        }
        if self.send_queue == 0 {
            p.add("send_queue", "must be at least 1");
        }
        if self.handshake_timeout.is_zero() {
            p.add("handshake_timeout", "must be greater than zero");
        }
        p.link(&self.link);
        p.log(&self.log);
        p.process(&self.process);
        p.0.extend(self.gatewayworker.iter().flat_map(Validate::validate));
        p.0.extend(crate::pusher::gateway_problems(self));
        p.0
    }
}

impl Validate for WorkerConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        p.name(&self.name);
        p.registers(&self.registers);
        if !["chat", "echo", "http"].contains(&self.app.as_str()) {
            p.add("app", format!("{:?} is not a built-in application (chat, echo, http)", self.app));
        }
        if self.app == "http" {
            p.http_app(&self.http_app);
        }
        if self.client_queue == 0 {
            p.add("client_queue", "must be at least 1");
        }
        if self.count == 0 || self.count > 256 {
            p.add("count", format!("{} is outside 1..=256 processes", self.count));
        }
        if self.restart_limit == 0 {
            p.add("restart_limit", "must be at least 1");
        }
        p.link(&self.link);
        p.log(&self.log);
        p.process(&self.process);
        p.0
    }
}

impl Validate for HttpApiConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        p.name(&self.name);
        let listen = p.bind_addr("listen", &self.listen);
        p.registers(&self.registers);
        if self.keys.is_empty()
            && let Some(addr) = listen.filter(|a| !is_loopback(a.ip()))
        {
            p.add(
                "keys",
                format!(
                    "at least one API key is required because `listen` is the non-loopback address {addr}; add [[keys]] or set GW_API_KEY"
                ),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            if k.name.trim().is_empty() {
                p.add(format!("keys[{i}].name"), "must not be empty");
            } else if !names.insert(k.name.as_str()) {
                p.add(format!("keys[{i}].name"), format!("{:?} is used by another key", k.name));
            }
            // The key itself is never echoed back, only its length.
            if k.key.chars().count() < 16 {
                p.add(format!("keys[{i}].key"), format!("is {} characters; use at least 16", k.key.chars().count()));
            }
            if k.key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                p.add(format!("keys[{i}].key"), "must not contain spaces or control characters");
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            p.add("tls_cert", "HTTPS needs both tls_cert and tls_key (PEM files)");
        }
        if !(64..=64 * 1024 * 1024).contains(&self.max_body) {
            p.add("max_body", format!("{} is outside 64..=67108864 bytes", self.max_body));
        }
        if self.max_batch == 0 || self.max_batch > 100_000 {
            p.add("max_batch", format!("{} is outside 1..=100000 calls", self.max_batch));
        }
        if self.max_response < 64 * 1024 {
            p.add("max_response", format!("{} is below 65536 bytes", self.max_response));
        }
        if self.query_timeout.is_zero() {
            p.add("query_timeout", "must be greater than zero");
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            p.add("max_connections", format!("{} is outside 1..=1000000 connections", self.max_connections));
        }
        if self.max_connections_per_ip == 0 {
            p.add("max_connections_per_ip", "must be at least 1");
        }
        for (key, timeout) in [("header_timeout", self.header_timeout), ("body_timeout", self.body_timeout)] {
            if timeout.is_zero() || timeout > std::time::Duration::from_secs(3600) {
                p.add(key, format!("{timeout:?} is outside (0s, 1h]"));
            }
        }
        p.link(&self.link);
        p.log(&self.log);
        p.process(&self.process);
        p.0.extend(self.pusher.iter().flat_map(|x| x.validate_exposed(crate::pusher::first_exposed(listen))));
        p.0
    }
}
