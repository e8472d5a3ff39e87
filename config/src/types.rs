//! The configuration types and their defaults.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default register address: GatewayWorker's register port.
pub const DEFAULT_REGISTER: &str = "127.0.0.1:1236";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Logging, shared by every daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or tracing directives each
    /// ending in one: `info,gw_gateway=debug`. Checked by validation.
    pub level: String,
    /// Plain or JSON lines.
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
    /// Longest wait between reconnection attempts (the wait doubles from `reconnect_min`).
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
    /// Failed (or unfinished) handshakes one address may have on an internal listener before
    /// its connections are served lean (2 s to answer the challenge, failures not logged one by
    /// one; a peer that proves the secret still gets in); it earns them back over
    /// `failed_handshake_window`.
    pub failed_handshakes: u32,
    /// The window `failed_handshakes` counts over.
    #[serde(with = "humantime_serde")]
    pub failed_handshake_window: Duration,
    /// Workers and gateway clients: route uid and group calls only to the gateways that hold
    /// those uids and groups, as the gateways report them (the routing index). Off sends every
    /// uid and group call to every gateway, as GatewayWorker does. Ignored by registers and
    /// gateways.
    pub routing_index: bool,
    /// How long a link's writer holds a message before writing it, gathering what else comes
    /// for the same link meanwhile into the same write (0, the default, writes at once). A few
    /// milliseconds let a sender spreading its calls over many gateways hand each gateway
    /// several per wake-up instead of one, at that much latency.
    #[serde(with = "humantime_serde")]
    pub write_delay: Duration,
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
            failed_handshakes: 32,
            failed_handshake_window: Duration::from_secs(10),
            routing_index: true,
            write_delay: Duration::ZERO,
        }
    }
}

/// Where a daemon keeps its pid file, log file (in daemon mode) and control socket, and where it
/// serves `/metrics` and `/health`. Paths default to `<run_dir>/<name>.{pid,log,sock}`, so two
/// daemons of one kind on one host need different names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Folder of the default pid file, log file and control socket.
    pub run_dir: String,
    /// Pid file; `<run_dir>/<name>.pid` when not set.
    pub pid_file: Option<String>,
    /// Log file in daemon mode; `<run_dir>/<name>.log` when not set.
    pub log_file: Option<String>,
    /// Control socket; `<run_dir>/<name>.sock` when not set.
    pub control_socket: Option<String>,
    /// HTTP address for `/metrics` (Prometheus text) and `/health`; `127.0.0.1:0` picks a free
    /// port (reported by `status`); empty disables it.
    pub admin: String,
    /// Threads of this process's async runtime: 0 (the default) runs one per CPU core; 1 runs
    /// everything on one thread, which suits many daemons sharing few cores (dozens of gateways
    /// on one host): no hand-offs between threads, fewer wake-ups per message.
    pub threads: usize,
    /// glibc malloc arenas (Linux builds on glibc): 1 (the default) keeps every thread's
    /// allocations in one arena, about 100 B less resident memory per idle client on a gateway;
    /// 0 leaves glibc's default (8 per core), for a many-core host whose threads allocate
    /// heavily at once. `MALLOC_ARENA_MAX` in the environment wins.
    pub malloc_arenas: usize,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            run_dir: "/tmp/gatewayrs".into(),
            pid_file: None,
            log_file: None,
            control_socket: None,
            admin: "127.0.0.1:0".into(),
            threads: 0,
            malloc_arenas: 1,
        }
    }
}

impl ProcessConfig {
    fn path(&self, explicit: &Option<String>, name: &str, ext: &str) -> std::path::PathBuf {
        match explicit {
            Some(p) => p.into(),
            None => std::path::Path::new(&self.run_dir).join(format!("{name}.{ext}")),
        }
    }

    /// The pid file of node `name`.
    pub fn pid_file(&self, name: &str) -> std::path::PathBuf {
        self.path(&self.pid_file, name, "pid")
    }

    /// The log file used in daemon mode.
    pub fn log_file(&self, name: &str) -> std::path::PathBuf {
        self.path(&self.log_file, name, "log")
    }

    /// The control socket `status`, `connections`, `stop` and `reload` talk to.
    pub fn control_socket(&self, name: &str) -> std::path::PathBuf {
        self.path(&self.control_socket, name, "sock")
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
    /// Internal link timings and limits (`[link]`).
    pub link: LinkConfig,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// Where this daemon keeps its pid file, log file and control socket, and its admin endpoint (`[process]`).
    pub process: ProcessConfig,
    /// PHP GatewayWorker's register protocol on a second listener (see `config/src/gatewayworker.rs`).
    pub gatewayworker: Option<crate::RegisterGatewayWorker>,
}

impl Default for RegisterConfig {
    fn default() -> Self {
        Self {
            name: "register".into(),
            listen: DEFAULT_REGISTER.into(),
            secret: String::new(),
            link: LinkConfig::default(),
            log: LogConfig::default(),
            process: ProcessConfig::default(),
            gatewayworker: None,
        }
    }
}

/// What to do with a client whose send queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Close it (close code `slow_consumer_close_code`); the message is counted as dropped.
    #[default]
    Disconnect,
    /// Keep it connected and drop the message (counted).
    Drop,
}

/// One public listener of a gateway (`[[listeners]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `websocket://host:port`, `text://…` (newline-delimited), `frame://…` (4-byte big-endian
    /// length prefix) or `tcp://…` (raw chunks); with TLS: `wss://…`, `text+tls://…`,
    /// `frame+tls://…`, `tcp+tls://…`.
    pub url: String,
    /// Largest message from a client on this listener; defaults to the gateway's
    /// `max_message_size`.
    #[serde(default)]
    pub max_message_size: Option<usize>,
    /// PEM certificate chain and private key, required for TLS listeners.
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// PEM private key for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<String>,
    /// WebSocket only: accepted `Origin` header values; empty accepts any.
    #[serde(default)]
    pub origins: Vec<String>,
    /// WebSocket only: accepted request paths; empty accepts any.
    #[serde(default)]
    pub paths: Vec<String>,
    /// WebSocket only: whether this listener offers permessage-deflate; defaults to
    /// `[compression] enabled`.
    #[serde(default)]
    pub compression: Option<bool>,
    /// WebSocket only: speak the Pusher Channels protocol (`/app/{key}`, the apps of `[pusher]`).
    #[serde(default)]
    pub pusher: bool,
}

impl ListenerConfig {
    /// A listener on `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_message_size: None,
            tls_cert: None,
            tls_key: None,
            origins: Vec::new(),
            paths: Vec::new(),
            compression: None,
            pusher: false,
        }
    }
}

/// Compressed WebSockets: RFC 7692 permessage-deflate on the gateway's WebSocket listeners
/// (`[compression]`). The gateway always asks for no context takeover in both directions, so a
/// connection keeps no compression state between messages: an idle client costs what it costs
/// without compression, and a message to many clients is compressed once for all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Whether WebSocket listeners accept a client's permessage-deflate offer (a listener's own
    /// `compression` overrides it). Clients that do not offer it are served uncompressed.
    pub enabled: bool,
    /// Messages to clients shorter than this many bytes are sent uncompressed (deflate gains
    /// little on them and costs a few microseconds each).
    pub threshold: usize,
    /// zlib compression level, 1 (fastest) to 9 (smallest).
    pub level: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self { enabled: true, threshold: 256, level: 6 }
    }
}

/// Connection state recovery (`[recovery]`, docs/recovery.md): a WebSocket client that asked
/// for it (`gw_recover=1`) and goes away without a clean close is *held* for `window`: it keeps
/// its client id, uid, groups and session, and what is sent to it is kept, within the caps, for
/// it to resume with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Whether clients may ask for recovery here. Off, `gw_recover` is ignored and a resume is
    /// answered `not_recovered` with reason `disabled`.
    pub enabled: bool,
    /// How long a dropped client is held before its `on_close` runs.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Messages kept per client, unacknowledged or written while it is away; past it the client
    /// cannot be recovered (reason `gap`).
    pub max_messages: usize,
    /// Bytes of messages kept per client, likewise.
    pub max_bytes: usize,
    /// Bytes of messages kept for every held client of this gateway together; past it held
    /// clients are released (their `on_close` runs) until it fits.
    pub max_held_bytes: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            window: Duration::from_secs(120),
            max_messages: 1000,
            max_bytes: 1024 * 1024,
            max_held_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Node name (logs, the files in `[process]`).
    pub name: String,
    /// Public listener for clients: `IP:port` for WebSocket, or a listener URL as PHP's
    /// `new Gateway("Websocket://0.0.0.0:7272")` takes it (`websocket://`, `text://`, `frame://`,
    /// `tcp://`, any case). Ignored when `listeners` is not empty.
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
    /// Public listeners. When empty, one WebSocket listener on `listen`.
    pub listeners: Vec<ListenerConfig>,
    /// GatewayWorker's `pingInterval`: every interval the gateway sends `ping_data` to each
    /// client (a WebSocket ping frame when `ping_data` is empty); `0s` turns heartbeats off, and
    /// with them `ping_not_response_limit`, as in GatewayWorker.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// GatewayWorker's `pingNotResponseLimit`: a client that sent nothing for this many intervals
    /// is closed (and its `on_close` delivered); 0 never closes for silence. Unlike
    /// GatewayWorker's 0, the default is 2.
    pub ping_not_response_limit: u32,
    /// GatewayWorker's `pingData`.
    pub ping_data: String,
    /// Whether a WebSocket pong frame counts as client activity.
    pub pong_is_activity: bool,
    /// A client that has sent no message this long after connecting is closed; `0s` is off.
    #[serde(with = "humantime_serde")]
    pub first_message_timeout: Duration,
    /// Open client connections at most (accepted sockets, handshakes included).
    pub max_connections: usize,
    /// Open client connections from one IP address at most.
    pub max_connections_per_ip: usize,
    /// File descriptors kept for internal links (workers, gateway clients, registers) and admin
    /// and control connections. Clients are capped at the open-files limit (`RLIMIT_NOFILE`,
    /// raised to its hard limit at start) minus this reserve and what is open at start, so a
    /// gateway full of clients still accepts its workers. Internal handshakes in progress are
    /// capped at half of it (an eighth per address).
    pub fd_reserve: usize,
    /// Bytes queued toward one client at most (with `send_queue` messages).
    pub send_queue_bytes: usize,
    /// Largest session of one client in bytes (as JSON). A `set_session`, `update_session` or
    /// handler write-back that would make it larger is refused and the session kept; every
    /// event carries the session, so this and the largest message must fit in `link.max_frame`
    /// (checked at start).
    pub max_session_bytes: usize,
    /// Groups one client may be a member of at most; joining one more is refused.
    pub max_groups_per_client: usize,
    /// What to do with a client whose send queue is full.
    pub slow_consumer: SlowConsumerPolicy,
    /// Close code for a disconnected slow consumer: 1008 (policy) or 1013 (try again later).
    pub slow_consumer_close_code: u16,
    /// permessage-deflate on the WebSocket listeners (`[compression]`).
    pub compression: CompressionConfig,
    /// Connection state recovery for clients that drop without closing (`[recovery]`, see
    /// `docs/recovery.md`).
    pub recovery: RecoveryConfig,
    /// Internal link timings and limits (`[link]`).
    pub link: LinkConfig,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// Where this daemon keeps its pid file, log file and control socket, and its admin endpoint (`[process]`).
    pub process: ProcessConfig,
    /// PHP GatewayWorker's protocol on a second internal listener (see `config/src/gatewayworker.rs`).
    pub gatewayworker: Option<crate::GatewayGatewayWorker>,
    /// Pusher Channels apps for `pusher = true` listeners (see `config/src/pusher.rs`).
    pub pusher: Option<crate::PusherConfig>,
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
            listeners: Vec::new(),
            ping_interval: Duration::from_secs(25),
            ping_not_response_limit: 2,
            ping_data: String::new(),
            pong_is_activity: true,
            first_message_timeout: Duration::ZERO,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            fd_reserve: 256,
            send_queue_bytes: 4 * 1024 * 1024,
            max_session_bytes: 1024 * 1024,
            max_groups_per_client: 1000,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            slow_consumer_close_code: 1008,
            compression: CompressionConfig::default(),
            recovery: RecoveryConfig::default(),
            link: LinkConfig::default(),
            log: LogConfig::default(),
            process: ProcessConfig::default(),
            gatewayworker: None,
            pusher: None,
        }
    }
}

impl GatewayConfig {
    /// The public listeners: `listeners`, or one listener on `listen` (WebSocket unless `listen`
    /// is a URL naming another protocol).
    /// Schemes come lowercase, however they were written (`Websocket://` as in PHP).
    pub fn effective_listeners(&self) -> Vec<ListenerConfig> {
        let mut listeners = if self.listeners.is_empty() {
            let url =
                if self.listen.contains("://") { self.listen.clone() } else { format!("websocket://{}", self.listen) };
            vec![ListenerConfig::new(url)]
        } else {
            self.listeners.clone()
        };
        for l in &mut listeners {
            if let Some((scheme, rest)) = l.url.split_once("://") {
                l.url = format!("{}://{rest}", scheme.to_ascii_lowercase());
            }
        }
        listeners
    }

    /// The address announced to registers.
    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.internal_listen)
    }
}

/// `business-worker.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Node name (logs, the files in `[process]`).
    pub name: String,
    /// Which built-in application the stock `business-worker` binary runs: `chat`, `echo` (the
    /// benchmark contract) or `http` (business logic served by an HTTP endpoint, configured in
    /// `[http_app]`). Binaries with their own `Events` ignore it.
    pub app: String,
    /// Every register to learn gateways from.
    pub registers: Vec<String>,
    /// Shared cluster secret.
    pub secret: String,
    /// Events of one client queued in the worker before its gateway link is paused.
    pub client_queue: usize,
    /// Deadline of each Gateway API query a handler makes, per gateway.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// On stop: time to finish events already received before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Worker processes run by the master (`business-worker start`); a crashed one is restarted.
    pub count: usize,
    /// The master gives up (exits non-zero) when processes crash more than `restart_limit` times
    /// within `restart_window`.
    pub restart_limit: usize,
    /// The window `restart_limit` counts over.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// The `http` application's endpoint (used when `app = "http"`).
    pub http_app: HttpAppConfig,
    /// Internal link timings and limits (`[link]`).
    pub link: LinkConfig,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// Where this daemon keeps its pid file, log file and control socket, and its admin endpoint (`[process]`).
    pub process: ProcessConfig,
    /// The `[app_config]` section: the settings of the application binary, kept as raw TOML here
    /// and checked by that binary's own typed config (`gw_business_worker::App`), which rejects
    /// unknown keys like the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_config: Option<toml::Table>,
}

/// `[http_app]` of `business-worker.toml`: where the `http` application posts client events.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpAppConfig {
    /// The endpoint every event is POSTed to: `http://host:port/path`.
    pub url: String,
    /// How long one event may take in all, retries included; then it is given up (logged and
    /// counted as a handler error) and acknowledged, so a dead endpoint never stalls the worker.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests to the endpoint in flight at once, per worker process.
    pub concurrency: usize,
    /// First wait before a retry; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest wait before a retry.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Sent as `Authorization: Bearer <api_key>` when not empty.
    pub api_key: String,
    /// Extra request headers.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Largest answer accepted from the endpoint, in bytes.
    pub max_answer: usize,
}

impl std::fmt::Debug for HttpAppConfig {
    // The API key and header values (which may hold credentials) never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAppConfig")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for HttpAppConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8000/events".into(),
            timeout: Duration::from_secs(10),
            concurrency: 64,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
            api_key: String::new(),
            headers: Default::default(),
            max_answer: 4 * 1024 * 1024,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: "worker".into(),
            app: "chat".into(),
            registers: vec![DEFAULT_REGISTER.into()],
            secret: String::new(),
            client_queue: 256,
            query_timeout: Duration::from_secs(5),
            grace_period: Duration::from_secs(10),
            count: 2,
            restart_limit: 5,
            restart_window: Duration::from_secs(60),
            http_app: HttpAppConfig::default(),
            link: LinkConfig::default(),
            log: LogConfig::default(),
            process: ProcessConfig::default(),
            app_config: None,
        }
    }
}

/// What an API key of the HTTP push API may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiAccess {
    /// Every call.
    #[default]
    All,
    /// Queries only (`is_online`, counts, lists, sessions): nothing that changes the cluster.
    Read,
    /// The `send_to_*` calls only: push messages, change nothing else, read nothing.
    Send,
}

/// One API key of the HTTP push API (`[[keys]]`), sent as `Authorization: Bearer <key>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Shown in logs and metrics instead of the key.
    pub name: String,
    /// The secret itself: at least 16 characters.
    pub key: String,
    /// What the key may call.
    #[serde(default)]
    pub access: ApiAccess,
}

impl std::fmt::Debug for ApiKeyConfig {
    // Keys never reach a log, not even through a `{:?}` of the whole config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig").field("name", &self.name).field("access", &self.access).finish_non_exhaustive()
    }
}

/// `http-api.toml`: the HTTP push API daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpApiConfig {
    /// Node name (logs, the files in `[process]`).
    pub name: String,
    /// HTTP (or HTTPS, with `tls_cert` and `tls_key`) address of the API.
    pub listen: String,
    /// Every register to learn gateways from.
    pub registers: Vec<String>,
    /// Shared cluster secret.
    pub secret: String,
    /// API keys. Empty means no authentication, allowed only while `listen` is a loopback address.
    pub keys: Vec<ApiKeyConfig>,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP.
    pub tls_cert: Option<String>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<String>,
    /// Largest request body in bytes (413 above it).
    pub max_body: usize,
    /// Most calls in one `/v1/batch` request.
    pub max_batch: usize,
    /// Largest answer to one `/v1/batch` request in bytes: a call whose result would take the
    /// answer past it gets an error (`answer_too_large`) in its place, and the calls after it
    /// still run.
    pub max_response: usize,
    /// Deadline of each query to each gateway.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// On stop: time to finish requests in flight.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Open connections at most; more are answered 503 and closed at once.
    pub max_connections: usize,
    /// Of those, from one IP address (raise it behind a load balancer, which is one address).
    pub max_connections_per_ip: usize,
    /// Time a connection has to send a whole request head (and a kept-alive connection may stay
    /// idle before its next one); then it is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a request has to send its whole body once its head is in; then it is answered 408.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Internal link timings and limits (`[link]`).
    pub link: LinkConfig,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// Where this daemon keeps its pid file, log file and control socket, and its admin endpoint (`[process]`).
    pub process: ProcessConfig,
    /// Pusher's HTTP API for these apps (see `config/src/pusher.rs`).
    pub pusher: Option<crate::PusherConfig>,
}

impl Default for HttpApiConfig {
    fn default() -> Self {
        Self {
            name: "http-api".into(),
            listen: "127.0.0.1:8090".into(),
            registers: vec![DEFAULT_REGISTER.into()],
            secret: String::new(),
            keys: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_body: 1024 * 1024,
            max_batch: 1000,
            max_response: 32 * 1024 * 1024,
            query_timeout: Duration::from_secs(5),
            grace_period: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            link: LinkConfig::default(),
            log: LogConfig::default(),
            process: ProcessConfig::default(),
            pusher: None,
        }
    }
}
