//! The configuration types and their defaults.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default register address: GatewayWorker's register port.
pub const DEFAULT_REGISTER: &str = "127.0.0.1:1236";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// Logging, shared by every daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `gw_gateway=debug,info`, …
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Plain }
    }
}

/// Settings of internal links (register, gateway and worker links), shared by every daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Largest internal frame in bytes.
    pub max_frame: usize,
    /// Time allowed for an internal handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Outbound frames queued per link before senders wait.
    pub queue: usize,
    /// Every link sends a ping this often.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A link silent for this long is considered dead and dropped (not left to TCP timeouts).
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            max_frame: 8 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            queue: 4096,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
        }
    }
}

/// `register.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterConfig {
    /// Node name used in logs and handshakes.
    pub name: String,
    /// Address the register listens on for gateways, workers and clients.
    pub listen: String,
    /// Shared cluster secret. Required when `listen` is not a loopback address.
    pub secret: String,
    pub link: LinkConfig,
    pub log: LogConfig,
}

impl Default for RegisterConfig {
    fn default() -> Self {
        Self {
            name: "register".into(),
            listen: DEFAULT_REGISTER.into(),
            secret: String::new(),
            link: LinkConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub name: String,
    /// Public WebSocket listener for clients.
    pub listen: String,
    /// Internal listener for business workers and gateway clients.
    pub internal_listen: String,
    /// Address workers use to reach `internal_listen` (GatewayWorker's `lanIp`); a hostname or IPv6
    /// is fine. Defaults to `internal_listen`, which must then not be a wildcard address.
    pub advertise: Option<String>,
    /// Every register to announce to.
    pub registers: Vec<String>,
    /// Shared cluster secret. Required when `internal_listen` is not a loopback address.
    pub secret: String,
    /// Largest client message in bytes.
    pub max_message_size: usize,
    /// Messages queued toward one client before it counts as a slow consumer and is disconnected.
    pub send_queue: usize,
    /// Time a client has to complete the WebSocket handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// On stop: time to close clients and deliver their close events before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// While no business worker is connected, a client's events wait this long for one before the
    /// client is closed with code 1013 (GatewayWorker closes every client at once instead).
    #[serde(with = "humantime_serde")]
    pub worker_wait: Duration,
    pub link: LinkConfig,
    pub log: LogConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            name: "gateway".into(),
            listen: "127.0.0.1:7272".into(),
            internal_listen: "127.0.0.1:2900".into(),
            advertise: None,
            registers: vec![DEFAULT_REGISTER.into()],
            secret: String::new(),
            max_message_size: 1024 * 1024,
            send_queue: 1024,
            handshake_timeout: Duration::from_secs(10),
            grace_period: Duration::from_secs(10),
            worker_wait: Duration::from_secs(30),
            link: LinkConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// The address announced to registers.
    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.internal_listen)
    }
}

/// `business-worker.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    pub name: String,
    /// Which built-in application the stock `business-worker` binary runs: `chat` or `echo`
    /// (the benchmark contract). Binaries with their own `Events` ignore it.
    pub app: String,
    /// Every register to learn gateways from.
    pub registers: Vec<String>,
    /// Shared cluster secret.
    pub secret: String,
    /// Events of one client queued in the worker before its gateway link is paused.
    pub client_queue: usize,
    /// On stop: time to finish events already received before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    pub link: LinkConfig,
    pub log: LogConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: "worker".into(),
            app: "chat".into(),
            registers: vec![DEFAULT_REGISTER.into()],
            secret: String::new(),
            client_queue: 256,
            grace_period: Duration::from_secs(10),
            link: LinkConfig::default(),
            log: LogConfig::default(),
        }
    }
}
