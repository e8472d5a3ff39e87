//! `[pusher]` with its `[[pusher.apps]]`: the Pusher Channels apps a gateway serves on its
//! `pusher = true` listeners and the HTTP API daemon serves Pusher's HTTP API for (the same
//! table in both files; see `docs/pusher.md` §9). Absent, neither speaks Pusher.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validate::{Problem, Validate, is_loopback};

/// Shortest app secret accepted where the network reaches the daemon (loopback: any).
pub const MIN_PUSHER_SECRET: usize = 16;

/// `[pusher]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PusherConfig {
    /// Sent in `pusher:connection_established`: seconds of silence after which a client pings.
    #[serde(with = "humantime_serde")]
    pub activity_timeout: Duration,
    /// Refuse a connection without `protocol` in its query with 4008 instead of assuming 7.
    pub require_protocol: bool,
    /// How long `channel_vacated` and `member_removed` webhooks wait, cancelled by a
    /// re-occupation or a re-join within it (Pusher's linger, for page reloads); 0 sends at once.
    #[serde(with = "humantime_serde")]
    pub webhook_delay: Duration,
    /// How long a webhook body is retried (exponential backoff) before its events are dropped.
    #[serde(with = "humantime_serde")]
    pub webhook_retry_for: Duration,
    /// How long one webhook request may take before it counts as failed (and is retried).
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Most events in one webhook body.
    pub webhook_batch_size: usize,
    /// How long the first event of a body waits for others before the body is sent.
    #[serde(with = "humantime_serde")]
    pub webhook_batch_wait: Duration,
    /// Most webhook events waiting per URL (and between connections and the dispatcher); past
    /// it they are dropped and counted (`gw_pusher_webhooks_dropped_total{reason="queue_full"}`).
    pub webhook_queue: usize,
    /// How long a presence subscription waits for its channel's home gateway (the member list,
    /// docs/pusher.md §5) before it is refused with `pusher:error`.
    #[serde(with = "humantime_serde")]
    pub presence_timeout: Duration,
    /// The apps (`[[pusher.apps]]`).
    pub apps: Vec<PusherApp>,
}

impl Default for PusherConfig {
    fn default() -> Self {
        Self {
            activity_timeout: Duration::from_secs(120),
            require_protocol: false,
            webhook_delay: Duration::from_secs(3),
            webhook_retry_for: Duration::from_secs(300),
            webhook_timeout: Duration::from_secs(10),
            webhook_batch_size: 100,
            webhook_batch_wait: Duration::from_millis(50),
            webhook_queue: 10_000,
            presence_timeout: Duration::from_secs(5),
            apps: Vec::new(),
        }
    }
}

/// The webhook events an app may ask for (`[[pusher.apps.webhooks]] events`), all of them the
/// default.
pub const WEBHOOK_EVENTS: [&str; 5] =
    ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event"];

/// One webhook of an app (`[[pusher.apps.webhooks]]`): where its events are POSTed, signed with
/// the app's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherWebhook {
    /// `http://host:port/path` or `https://host:port/path` (the receiver's certificate is
    /// checked against the system's trust store, or against `ca_file`).
    pub url: String,
    /// The events sent there (names of [`WEBHOOK_EVENTS`]); absent: all of them.
    #[serde(default = "all_webhook_events")]
    pub events: Vec<String>,
    /// For an https URL: a PEM file of the certificates to trust for this receiver (a private CA,
    /// or the receiver's own self-signed certificate) instead of the system's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

fn all_webhook_events() -> Vec<String> {
    WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect()
}

impl PusherWebhook {
    /// A webhook of every event to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), events: all_webhook_events(), ca_file: None }
    }

    /// Whether events named `name` go to this webhook.
    pub fn wants(&self, name: &str) -> bool {
        self.events.iter().any(|e| e == name)
    }
}

/// Why `url` is not a webhook URL this gateway can POST to, if it is not.
fn webhook_url_problem(url: &str) -> Option<String> {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return Some(format!("{url:?} is not an http:// or https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((host, _)) if !authority.ends_with(']') => host,
        _ => authority,
    };
    if host.is_empty() {
        return Some(format!("{url:?} has no host"));
    }
    if authority.contains('@') {
        return Some(format!("{url:?}: credentials in the URL are not supported"));
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Some(format!("{url:?} has an invalid port {port:?}"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("{url:?} contains whitespace or control characters"));
    }
    None
}

/// One app (`[[pusher.apps]]`): what its clients connect with (`key`) and what its server signs
/// with (`secret`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherApp {
    /// The app id (`/apps/{id}` in the HTTP API); at most 64 of `[A-Za-z0-9_-]`.
    pub id: String,
    /// The public key clients connect with (`/app/{key}`).
    pub key: String,
    /// The secret; `GW_PUSHER_SECRET_{ID}` (the id upper-cased, other characters as `_`)
    /// overrides it.
    pub secret: String,
    /// A disabled app's connections are refused with 4003, its HTTP calls with 403.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Connections of this app one gateway holds at most (4004 past it); 0: only the gateway's
    /// own caps.
    #[serde(default)]
    pub max_connections: usize,
    /// Whether clients may send `client-*` events.
    #[serde(default = "yes")]
    pub client_events: bool,
    /// Client events per second per connection (the burst is the same); 4301 past it.
    #[serde(default = "ten")]
    pub client_event_rate: u32,
    /// Accepted `Origin` values of the WebSocket request; empty accepts any (4009 otherwise).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Users in one presence channel at most.
    #[serde(default = "hundred")]
    pub max_presence_members: usize,
    /// Require `pusher:signin` within `signin_timeout`; a connection that does not sign in is
    /// closed with 4009.
    #[serde(default)]
    pub user_authentication: bool,
    /// With `user_authentication`: how long a connection has to sign in.
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub signin_timeout: Duration,
    /// Route this app's connections to business workers too, as clients: `on_connect`,
    /// `on_websocket_connect`, `on_message` for client events the gateway delivered and events
    /// of the app's own (neither `pusher:` nor `client-`), `on_close`; a worker's
    /// `send_to_client` writes a frame to the connection. Read by gateways.
    #[serde(default)]
    pub workers: bool,
    /// Where this app's webhooks go (`[[pusher.apps.webhooks]]`); read by gateways only.
    #[serde(default)]
    pub webhooks: Vec<PusherWebhook>,
}

fn yes() -> bool {
    true
}
fn ten() -> u32 {
    10
}
fn hundred() -> usize {
    100
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

impl std::fmt::Debug for PusherApp {
    // The secret never reaches a log, not even through a `{:?}` of the whole config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PusherApp")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("enabled", &self.enabled)
            .field("max_connections", &self.max_connections)
            .field("client_events", &self.client_events)
            .field("client_event_rate", &self.client_event_rate)
            .field("allowed_origins", &self.allowed_origins)
            .field("webhooks", &self.webhooks)
            .finish_non_exhaustive()
    }
}

impl PusherApp {
    /// An enabled app with every option at its default.
    pub fn new(id: impl Into<String>, key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            enabled: true,
            max_connections: 0,
            client_events: true,
            client_event_rate: 10,
            allowed_origins: Vec::new(),
            max_presence_members: 100,
            user_authentication: false,
            signin_timeout: thirty_seconds(),
            workers: false,
            webhooks: Vec::new(),
        }
    }

    /// Whether some webhook of this app wants events named `name`.
    pub fn wants_webhook(&self, name: &str) -> bool {
        self.webhooks.iter().any(|w| w.wants(name))
    }

    /// The environment variable that overrides this app's secret.
    pub fn secret_env_var(&self) -> String {
        let id: String =
            self.id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        format!("GW_PUSHER_SECRET_{id}")
    }
}

impl PusherConfig {
    /// The app with this id.
    pub fn app_by_id(&self, id: &str) -> Option<&PusherApp> {
        self.apps.iter().find(|a| a.id == id)
    }

    /// The app with this key.
    pub fn app_by_key(&self, key: &str) -> Option<&PusherApp> {
        self.apps.iter().find(|a| a.key == key)
    }

    /// Applies `GW_PUSHER_SECRET_{ID}` to each app.
    pub(crate) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        for app in &mut self.apps {
            if let Some(secret) = env(&app.secret_env_var()).filter(|s| !s.is_empty()) {
                app.secret = secret;
            }
        }
    }

    /// The problems of this section; `exposed` is a non-loopback address the daemon serves
    /// Pusher on, if any (short secrets are refused there).
    pub fn validate_exposed(&self, exposed: Option<SocketAddr>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut add = |key: String, reason: String| problems.push(Problem { key, reason });
        if self.activity_timeout < Duration::from_secs(1) || self.activity_timeout > Duration::from_secs(3600) {
            add("pusher.activity_timeout".into(), format!("{:?} is outside [1s, 1h]", self.activity_timeout));
        }
        if self.webhook_delay > Duration::from_secs(60) {
            add("pusher.webhook_delay".into(), format!("{:?} is outside [0s, 60s]", self.webhook_delay));
        }
        if self.webhook_retry_for > Duration::from_secs(24 * 3600) {
            add("pusher.webhook_retry_for".into(), format!("{:?} is outside [0s, 24h]", self.webhook_retry_for));
        }
        if self.webhook_timeout.is_zero() || self.webhook_timeout > Duration::from_secs(300) {
            add("pusher.webhook_timeout".into(), format!("{:?} is outside (0s, 5m]", self.webhook_timeout));
        }
        if self.webhook_batch_size == 0 || self.webhook_batch_size > 1000 {
            add("pusher.webhook_batch_size".into(), format!("{} is outside 1..=1000", self.webhook_batch_size));
        }
        if self.webhook_batch_wait > Duration::from_secs(10) {
            add("pusher.webhook_batch_wait".into(), format!("{:?} is outside [0s, 10s]", self.webhook_batch_wait));
        }
        if self.webhook_queue == 0 || self.webhook_queue > 1_000_000 {
            add("pusher.webhook_queue".into(), format!("{} is outside 1..=1000000", self.webhook_queue));
        }
        if self.presence_timeout.is_zero() || self.presence_timeout > Duration::from_secs(60) {
            add("pusher.presence_timeout".into(), format!("{:?} is outside (0s, 60s]", self.presence_timeout));
        }
        if self.apps.is_empty() {
            add("pusher.apps".into(), "at least one [[pusher.apps]] is required in a [pusher] section".into());
        }
        let (mut ids, mut keys) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        for (i, app) in self.apps.iter().enumerate() {
            let key = |k: &str| format!("pusher.apps[{i}].{k}");
            let id_ok = |s: &str| {
                !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
            };
            if !id_ok(&app.id) {
                add(key("id"), format!("{:?} is not 1 to 64 of A-Z, a-z, 0-9, _ and -", app.id));
            } else if !ids.insert(app.id.as_str()) {
                add(key("id"), format!("{:?} is the id of another app", app.id));
            }
            if !id_ok(&app.key) {
                add(key("key"), format!("{:?} is not 1 to 64 of A-Z, a-z, 0-9, _ and -", app.key));
            } else if !keys.insert(app.key.as_str()) {
                add(key("key"), format!("{:?} is the key of another app", app.key));
            }
            // The secret itself is never echoed back, only its length.
            let len = app.secret.chars().count();
            if len == 0 {
                add(key("secret"), format!("is empty; set it or {}", app.secret_env_var()));
            } else if len < MIN_PUSHER_SECRET
                && let Some(addr) = exposed
            {
                add(
                    key("secret"),
                    format!(
                        "is {len} characters; use at least {MIN_PUSHER_SECRET} because Pusher is served on the non-loopback address {addr}"
                    ),
                );
            }
            if app.client_event_rate == 0 || app.client_event_rate > 10_000 {
                add(key("client_event_rate"), format!("{} is outside 1..=10000 per second", app.client_event_rate));
            }
            if app.max_presence_members == 0 || app.max_presence_members > 10_000 {
                add(key("max_presence_members"), format!("{} is outside 1..=10000", app.max_presence_members));
            }
            if app.user_authentication
                && (app.signin_timeout.is_zero() || app.signin_timeout > Duration::from_secs(3600))
            {
                add(key("signin_timeout"), format!("{:?} is outside (0s, 1h]", app.signin_timeout));
            }
            for (w, hook) in app.webhooks.iter().enumerate() {
                let key = |k: &str| format!("pusher.apps[{i}].webhooks[{w}].{k}");
                if let Some(reason) = webhook_url_problem(&hook.url) {
                    add(key("url"), reason);
                }
                for name in &hook.events {
                    if !WEBHOOK_EVENTS.contains(&name.as_str()) {
                        add(key("events"), format!("{name:?} is not one of {}", WEBHOOK_EVENTS.join(", ")));
                    }
                }
                if hook.events.is_empty() {
                    add(key("events"), "is empty; remove the webhook or name its events".into());
                }
                if hook.ca_file.is_some() && !hook.url.starts_with("https://") {
                    add(key("ca_file"), "is only used for an https:// URL; remove it or use https".into());
                }
            }
        }
        problems
    }
}

impl Validate for PusherConfig {
    fn validate(&self) -> Vec<Problem> {
        self.validate_exposed(None)
    }
}

/// The first address of `addrs` that is not loopback.
pub(crate) fn first_exposed(addrs: impl IntoIterator<Item = SocketAddr>) -> Option<SocketAddr> {
    addrs.into_iter().find(|a| !is_loopback(a.ip()))
}

/// The problems of a gateway's Pusher settings: `pusher = true` listeners need apps, apps need a
/// listener, and short secrets are refused when a Pusher listener is not on loopback.
pub(crate) fn gateway_problems(config: &crate::GatewayConfig) -> Vec<Problem> {
    let pusher_listeners: Vec<SocketAddr> = config
        .listeners
        .iter()
        .filter(|l| l.pusher)
        .filter_map(|l| crate::parse_listener_url(&l.url).ok().map(|u| u.addr))
        .collect();
    let any_pusher = config.listeners.iter().any(|l| l.pusher);
    match &config.pusher {
        Some(p) => p.validate_exposed(first_exposed(pusher_listeners)),
        None if any_pusher => vec![Problem {
            key: "pusher".into(),
            reason: "a listener has `pusher = true` but there is no [pusher] section with [[pusher.apps]]".into(),
        }],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{GatewayConfig, HttpApiConfig, Validate, load, parse};

    const GATEWAY: &str = r#"
        [[listeners]]
        url = "ws://0.0.0.0:6001"
        pusher = true
        [pusher]
        activity_timeout = "30s"
        [[pusher.apps]]
        id = "1001"
        key = "app-key"
        secret = "short"
        client_event_rate = 5
        [[pusher.apps]]
        id = "1001"
        key = "app-key"
        secret = "long-enough-secret-1"
        workers = true
    "#;

    fn keys(problems: &[crate::Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn apps_are_checked_for_duplicates_and_short_secrets() {
        let config: GatewayConfig = parse(GATEWAY, Path::new("g.toml")).unwrap();
        let pusher = config.pusher.as_ref().unwrap();
        assert_eq!(pusher.activity_timeout, std::time::Duration::from_secs(30));
        assert_eq!(pusher.apps[0].client_event_rate, 5);
        assert!(pusher.apps[0].enabled && pusher.apps[0].client_events, "defaults");
        let problems = crate::pusher::gateway_problems(&config);
        assert_eq!(
            keys(&problems),
            vec!["pusher.apps[0].secret", "pusher.apps[1].id", "pusher.apps[1].key"],
            "{problems:?}"
        );
        assert!(problems[0].reason.contains("0.0.0.0:6001"), "{}", problems[0].reason);
        assert!(pusher.apps[1].workers && !pusher.apps[0].workers, "workers = true is read, false by default");
        let shown = format!("{problems:?} {config:?}");
        assert!(!shown.contains("short\"") && !shown.contains("long-enough-secret-1"), "a secret leaked: {shown}");
    }

    #[test]
    fn short_secrets_are_fine_on_loopback_and_the_environment_sets_secrets() {
        let text = GATEWAY.replace("0.0.0.0", "127.0.0.1").replace("workers = true", "").replace(
            "id = \"1001\"\n        key = \"app-key\"\n        secret = \"long",
            "id = \"my-app\"\n        key = \"other\"\n        secret = \"long",
        );
        let dir = std::env::temp_dir().join(format!("gw-pusher-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, &text).unwrap();
        let env = |k: &str| (k == "GW_PUSHER_SECRET_MY_APP").then(|| "from-the-environment".to_string());
        let config: GatewayConfig = load(Some(&path), env).unwrap();
        let apps = &config.pusher.unwrap().apps;
        assert_eq!(apps[0].secret, "short", "loopback: any length");
        assert_eq!(apps[1].secret, "from-the-environment");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_pusher_listener_needs_apps_and_a_websocket_url() {
        let text = "[[listeners]]\nurl = \"text://127.0.0.1:6001\"\npusher = true\n";
        let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
        assert_eq!(keys(&config.validate()), vec!["listeners[0].pusher", "pusher"]);
        let typo = parse::<GatewayConfig>(
            "[pusher]\n[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nclient_event = true\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(typo.to_string().contains("client_event"), "{typo}");
    }

    #[test]
    fn the_http_api_refuses_short_secrets_on_a_public_address() {
        let text = "listen = \"0.0.0.0:8090\"\n[[keys]]\nname = \"a\"\nkey = \"0123456789abcdef\"\n[pusher]\n[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        let config: HttpApiConfig = parse(text, Path::new("h.toml")).unwrap();
        assert_eq!(keys(&config.validate()), vec!["pusher.apps[0].secret"]);
        let empty: HttpApiConfig = parse("[pusher]\n", Path::new("h.toml")).unwrap();
        assert_eq!(keys(&empty.validate()), vec!["pusher.apps"]);
    }

    #[test]
    fn webhooks_are_parsed_with_their_defaults_and_bad_ones_are_named() {
        let text = r#"
            [pusher]
            webhook_delay = "1s"
            webhook_retry_for = "2m"
            webhook_batch_size = 0
            [[pusher.apps]]
            id = "1"
            key = "k"
            secret = "s"
            [[pusher.apps.webhooks]]
            url = "http://127.0.0.1:9000/hooks"
            [[pusher.apps.webhooks]]
            url = "ftp://backend.example/hooks"
            events = ["client_event", "channel_created"]
            [[pusher.apps.webhooks]]
            url = "http://:80/x"
            events = []
            [[pusher.apps.webhooks]]
            url = "http://h:99999/x"
            ca_file = "/etc/ca.pem"
            [[pusher.apps.webhooks]]
            url = "https://backend.example/hooks"
            ca_file = "/etc/ca.pem"
        "#;
        let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
        let pusher = config.pusher.as_ref().unwrap();
        assert_eq!(pusher.webhook_delay, std::time::Duration::from_secs(1));
        assert_eq!(pusher.webhook_retry_for, std::time::Duration::from_secs(120));
        assert_eq!(pusher.webhook_batch_wait, std::time::Duration::from_millis(50), "default");
        assert_eq!(pusher.presence_timeout, std::time::Duration::from_secs(5), "default");
        let zero = super::PusherConfig { presence_timeout: std::time::Duration::ZERO, ..pusher.clone() };
        assert!(zero.validate().iter().any(|p| p.key == "pusher.presence_timeout"), "a zero presence_timeout");
        let hooks = &pusher.apps[0].webhooks;
        assert_eq!(hooks[0].events, super::WEBHOOK_EVENTS, "every event by default");
        assert!(pusher.apps[0].wants_webhook("member_added"));
        let problems = pusher.validate();
        assert_eq!(
            keys(&problems),
            vec![
                "pusher.webhook_batch_size",
                "pusher.apps[0].webhooks[1].url",
                "pusher.apps[0].webhooks[1].events",
                "pusher.apps[0].webhooks[2].url",
                "pusher.apps[0].webhooks[2].events",
                "pusher.apps[0].webhooks[3].url",
                "pusher.apps[0].webhooks[3].ca_file",
            ],
            "{problems:?}"
        );
        assert_eq!(hooks[4].ca_file.as_deref(), Some("/etc/ca.pem"), "https with its own trust: accepted");
        assert!(problems[1].reason.contains("not an http:// or https:// URL"), "{}", problems[1].reason);
        assert!(problems[2].reason.contains("\"channel_created\" is not one of"), "{}", problems[2].reason);
        assert!(problems[3].reason.contains("no host"), "{}", problems[3].reason);
        assert!(problems[5].reason.contains("invalid port"), "{}", problems[5].reason);
        let typo = parse::<GatewayConfig>(
            "[pusher]\n[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[pusher.apps.webhooks]]\nurl = \"http://h/\"\nevent = []\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(typo.to_string().contains("event"), "{typo}");
    }

    /// The toml blocks of the README's section `heading`, in order.
    fn readme_toml_blocks(heading: &str) -> Vec<String> {
        let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
        let start = readme.find(heading).unwrap_or_else(|| panic!("README has no {heading:?}"));
        let section = &readme[start + heading.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        section.split("```toml\n").skip(1).map(|b| b[..b.find("```").unwrap()].to_string()).collect()
    }

    #[test]
    fn the_readme_pusher_snippets_are_valid_configs() {
        let blocks = readme_toml_blocks("## Pusher / Laravel Echo");
        assert_eq!(blocks.len(), 2, "the gateway and the http-api snippets");
        let gateway: GatewayConfig = parse(&blocks[0], Path::new("README gateway")).unwrap();
        assert_eq!(gateway.validate(), vec![], "the README's gateway.toml");
        assert!(gateway.listeners[0].pusher);
        let api: HttpApiConfig = parse(&blocks[1], Path::new("README http-api")).unwrap();
        assert_eq!(api.validate(), vec![], "the README's http-api.toml");
        let mut apps = gateway.pusher.unwrap().apps;
        assert!(!apps[0].webhooks.is_empty(), "the gateway's snippet shows webhooks");
        // Webhooks are the gateways' business; the rest of the table is the same on both sides.
        apps[0].webhooks.clear();
        assert_eq!(apps, api.pusher.unwrap().apps, "the same apps on both sides");
    }
}
