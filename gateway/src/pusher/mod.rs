//! The Pusher Channels protocol (version 7) on `pusher = true` listeners (docs/pusher.md): what
//! Laravel Echo, pusher-js, pysher and every Pusher client library speak.
//!
//! - [`session`]: one connection's rules, sans-IO (time as an input);
//! - [`presence`]: this gateway's presence members;
//! - [`occupancy`]: this gateway's subscribers per channel;
//! - [`home`]: a channel's home gateway, which decides presence and occupancy for the cluster,
//!   and [`cluster`] the IO around it (transitions to the home, its decisions back);
//! - [`decide`]: how the home's decisions become occupancy and member webhooks;
//! - [`webhook`]: the webhook dispatcher's rules, sans-IO, and [`webhook_driver`] its IO;
//! - [`conn`]: the connection task that carries the session's actions out.
//!
//! A channel `C` of app `A` is the group `pusher:{A}:{C}`, so the routing index, the HTTP API
//! and workers see channels as groups. A signed-in user `U` is the uid `pusher:{A}:{U}`. This
//! gateway answers Pusher clients itself; the connections of a `workers = true` app are also
//! business workers' clients (docs/pusher.md §9).
//!
//! Not in this slice (see docs/pusher.md "Status"): replication of a home's state to the
//! channel's second choice.

pub(crate) mod cluster;
pub(crate) mod conn;
pub(crate) mod decide;
pub(crate) mod home;
pub(crate) mod occupancy;
pub(crate) mod presence;
pub(crate) mod session;
pub(crate) mod webhook;
pub(crate) mod webhook_driver;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gw_config::{PusherApp, PusherConfig};
use gw_pusher_protocol::connect::{ConnectError, ConnectRequest};
use gw_pusher_protocol::{ErrorCode, Limits, ServerFrame};

use self::cluster::Cluster;
use self::decide::{Decider, LocalDecider, WebhookSink};
use self::home::Decided;
use self::occupancy::LocalChannels;
use self::presence::LocalPresence;
use self::session::Refusal;
use self::webhook::{Counters, Dispatcher, DropReason, Endpoint, Settings};
use self::webhook_driver::{Driver, Target};
use crate::{Gateway, GatewayError};
use gw_proto::PusherPeer;

/// The group of channel `channel` of app `app_id`.
pub fn channel_group(app_id: &str, channel: &str) -> String {
    format!("pusher:{app_id}:{channel}")
}

/// The uid of user `user_id` of app `app_id` once signed in.
pub fn user_uid(app_id: &str, user_id: &str) -> String {
    format!("pusher:{app_id}:{user_id}")
}

/// The Pusher apps of one gateway and what its Pusher connections share.
#[derive(Debug)]
pub(crate) struct Pusher {
    pub config: PusherConfig,
    pub limits: Limits,
    /// Open connections per app (the index of `config.apps`).
    connections: Vec<AtomicUsize>,
    /// The presence members of every app on this gateway.
    pub presence: Mutex<LocalPresence>,
    /// Refused or ignored frames, by [`Refusal`] (in the order of [`Refusal::ALL`]).
    refusals: [AtomicU64; Refusal::ALL.len()],
    /// Refused connections, by close code (4001 to 4009).
    connects_refused: AtomicU64,
    /// The subscribers of every app's channels on this gateway.
    pub channels: Mutex<LocalChannels>,
    /// Turns what the channels' homes here decide into webhooks.
    decider: Box<dyn Decider>,
    /// Presence and occupancy for the whole cluster: homes, and subscriptions waiting for them.
    pub cluster: Cluster,
    /// Where webhook events go.
    pub webhooks: WebhookSink,
    webhook_counters: Arc<Counters>,
    /// The webhook task's state until the gateway starts it.
    driver: Mutex<Option<Driver>>,
}

/// An admitted connection's place in its app's count; given back on drop. It is also the
/// connection's one reference to the apps' shared state (no copy of the app's config).
#[derive(Debug)]
pub(crate) struct AppSlot {
    pub pusher: Arc<Pusher>,
    pub index: usize,
}

impl AppSlot {
    /// The connection's app.
    pub fn app(&self) -> &PusherApp {
        self.pusher.app(self.index)
    }
}

impl Drop for AppSlot {
    fn drop(&mut self) {
        self.pusher.connections[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pusher {
    /// The apps' shared state; fails on a webhook URL the HTTP client cannot use.
    pub fn new(config: PusherConfig) -> Result<Self, GatewayError> {
        let connections = config.apps.iter().map(|_| AtomicUsize::new(0)).collect();
        let counters = Arc::new(Counters::new(config.apps.len()));
        let (mut endpoints, mut targets) = (Vec::new(), Vec::new());
        for (app, a) in config.apps.iter().enumerate() {
            for hook in &a.webhooks {
                let (uri, client) = webhook_driver::connect_to(&hook.url, hook.ca_file.as_deref())
                    .map_err(|reason| GatewayError::WebhookUrl { app, url: hook.url.clone(), reason })?;
                endpoints.push(Endpoint { app, events: hook.events.clone() });
                targets.push(Target {
                    uri,
                    client,
                    url: hook.url.clone(),
                    app_id: a.id.clone(),
                    key: a.key.clone(),
                    secret: a.secret.clone(),
                });
            }
        }
        let wanted = config.apps.iter().map(|a| gw_config::WEBHOOK_EVENTS.map(|name| a.wants_webhook(name))).collect();
        let (sink, driver) = if endpoints.is_empty() {
            (WebhookSink::new(None, wanted, counters.clone()), None)
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel(config.webhook_queue.max(1));
            let dispatcher = Dispatcher::new(Settings::from(&config), endpoints, counters.clone());
            let driver = Driver { dispatcher, targets, events: rx, timeout: config.webhook_timeout };
            (WebhookSink::new(Some(tx), wanted, counters.clone()), Some(driver))
        };
        Ok(Self {
            config,
            limits: Limits::default(),
            connections,
            presence: Mutex::default(),
            refusals: Default::default(),
            connects_refused: AtomicU64::new(0),
            channels: Mutex::default(),
            decider: Box::new(LocalDecider),
            cluster: Cluster::default(),
            webhooks: sink,
            webhook_counters: counters,
            driver: Mutex::new(driver),
        })
    }

    /// The webhook task's state, once (none when no app has webhooks).
    pub fn take_webhook_driver(&self) -> Option<Driver> {
        self.driver.lock().expect("driver lock").take()
    }

    /// Whether this gateway counts the subscribers of app `app`'s channels: only for occupancy
    /// webhooks (a home deciding for the cluster will need the counts whatever the webhooks).
    fn counts_occupancy(&self, app: usize) -> bool {
        self.webhooks.wants(app, "channel_occupied") || self.webhooks.wants(app, "channel_vacated")
    }

    /// Connection `client` subscribed to `channel` of app `app` (any kind): the channel's first
    /// subscriber here is told to its home, under the lock that orders the channel's changes.
    pub fn occupy(&self, gw: &Gateway, app: usize, channel: &str, client: u64) {
        if !self.counts_occupancy(app) {
            return;
        }
        let mut channels = self.channels.lock().expect("channels lock");
        if channels.subscribe(app, channel, client) {
            let (gateway, app_id) = (gw.address.clone(), self.app(app).id.clone());
            let msg = PusherPeer::Occupied { gateway, app: app_id.clone(), channel: channel.into(), resync: false };
            self.cluster.to_home(gw, self, &app_id, channel, msg);
        }
        drop(channels);
    }

    /// Connection `client` left `channel` of app `app`: the last subscriber here is told to the
    /// channel's home.
    pub fn vacate(&self, gw: &Gateway, app: usize, channel: &str, client: u64) {
        if !self.counts_occupancy(app) {
            return;
        }
        let mut channels = self.channels.lock().expect("channels lock");
        if channels.unsubscribe(app, channel, client) {
            let (gateway, app_id) = (gw.address.clone(), self.app(app).id.clone());
            let msg = PusherPeer::Vacant { gateway, app: app_id.clone(), channel: channel.into() };
            self.cluster.to_home(gw, self, &app_id, channel, msg);
        }
        drop(channels);
    }

    /// Connection `client` is not admitted to presence channel `channel` after all (its home
    /// refused it, or did not answer in time): it leaves what it joined here and gets
    /// `pusher:error` (code null) with `message`, counted as `refusal`.
    fn presence_refused(&self, gw: &Gateway, wait: &Wait, message: &str, refusal: Refusal) {
        let (app, channel, client) = (wait.app, wait.channel.as_str(), wait.client);
        let mut presence = self.presence.lock().expect("presence lock");
        if presence.leave(app, channel, client, &wait.user_id) {
            let app_id = self.app(app).id.clone();
            let msg = PusherPeer::Leave {
                gateway: gw.address.clone(),
                app: app_id.clone(),
                channel: channel.into(),
                user_id: wait.user_id.clone(),
            };
            self.cluster.to_home(gw, self, &app_id, channel, msg);
        }
        drop(presence);
        self.vacate(gw, app, channel, client);
        self.count(refusal);
        tracing::debug!(client, channel = %channel, reason = refusal.label(), "presence subscription refused");
        let frame = ServerFrame::Error { code: None, message }.encode();
        let msg = gw_proto::Payload { data: bytes::Bytes::from(frame), binary: false };
        gw.state.execute(gw_proto::Command::SendToClients { clients: vec![client], msg });
    }

    /// What a home here decided for app `app_id`: the webhooks.
    fn decide(&self, app_id: &str, decided: &Decided) {
        if let Some(index) = self.app_index(app_id) {
            tracing::debug!(app = %app_id, ?decided, "decided for the cluster");
            self.decider.transition(index, decided.transition(), &self.webhooks);
        }
    }

    /// The index of app `id`.
    pub fn app_index(&self, id: &str) -> Option<usize> {
        self.config.apps.iter().position(|a| a.id == id)
    }

    /// The app at `index`.
    pub fn app(&self, index: usize) -> &PusherApp {
        &self.config.apps[index]
    }

    /// The checks of docs/pusher.md §2, in order: path and protocol, key, enabled, origin, the
    /// app's connection cap on this gateway.
    pub fn admit(self: &Arc<Self>, path: &str, query: &str, origin: Option<&str>) -> Result<AppSlot, ConnectError> {
        let refuse = |code: ErrorCode, reason: String| ConnectError { code, reason };
        let request = ConnectRequest::parse(path, query, self.config.require_protocol, &self.limits)?;
        let index = self
            .config
            .apps
            .iter()
            .position(|a| a.key == request.app_key)
            .ok_or_else(|| refuse(ErrorCode::AppNotFound, format!("App key {} does not exist", request.app_key)))?;
        let app = &self.config.apps[index];
        if !app.enabled {
            return Err(refuse(ErrorCode::AppDisabled, ErrorCode::AppDisabled.description().into()));
        }
        if !app.allowed_origins.is_empty() && !origin.is_some_and(|o| app.allowed_origins.iter().any(|a| a == o)) {
            let shown: String = origin.unwrap_or("none").chars().take(100).collect();
            return Err(refuse(ErrorCode::Unauthorized, format!("Origin not allowed: {shown}")));
        }
        let count = &self.connections[index];
        let before = count.fetch_add(1, Ordering::Relaxed);
        let slot = AppSlot { pusher: self.clone(), index };
        if app.max_connections != 0 && before >= app.max_connections {
            return Err(refuse(ErrorCode::OverConnectionQuota, ErrorCode::OverConnectionQuota.description().into()));
        }
        Ok(slot)
    }

    pub fn count(&self, refusal: Refusal) {
        let at = Refusal::ALL.iter().position(|r| *r == refusal).unwrap_or(0);
        self.refusals[at].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_connect_refused(&self) {
        self.connects_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters, for `/metrics`.
    fn families(&self) -> Vec<gw_daemon::MetricFamily> {
        let refused = Refusal::ALL.iter().zip(&self.refusals).fold(
            gw_daemon::MetricFamily::new(
                "gw_pusher_frames_refused_total",
                "counter",
                "Pusher client frames refused or ignored, by reason.",
            ),
            |f, (r, n)| f.sample(&format!("reason=\"{}\"", r.label()), n.load(Ordering::Relaxed) as f64),
        );
        let c = &self.webhook_counters;
        let mut sent = gw_daemon::MetricFamily::new(
            "gw_pusher_webhooks_sent_total",
            "counter",
            "Pusher webhook events delivered (answered 2xx), by app and event.",
        );
        let mut retried = gw_daemon::MetricFamily::new(
            "gw_pusher_webhooks_retried_total",
            "counter",
            "Pusher webhook requests retried after an error, a timeout or a non-2xx answer, by app.",
        );
        let mut dropped = gw_daemon::MetricFamily::new(
            "gw_pusher_webhooks_dropped_total",
            "counter",
            "Pusher webhook events dropped, by app, event and reason (queue_full, retry_expired, shutdown).",
        );
        for (i, app) in self.config.apps.iter().enumerate().filter(|(_, a)| !a.webhooks.is_empty()) {
            let id = escape_label(&app.id);
            retried = retried.sample(&format!("app=\"{id}\""), c.retried[i].load(Ordering::Relaxed) as f64);
            for (e, event) in gw_config::WEBHOOK_EVENTS.iter().enumerate() {
                let labels = format!("app=\"{id}\",event=\"{event}\"");
                sent = sent.sample(&labels, c.sent[i][e].load(Ordering::Relaxed) as f64);
                for (r, reason) in DropReason::ALL.iter().enumerate() {
                    let value = c.dropped[i][e][r].load(Ordering::Relaxed) as f64;
                    dropped = dropped.sample(&format!("{labels},reason=\"{}\"", reason.label()), value);
                }
            }
        }
        vec![
            refused,
            gw_daemon::MetricFamily::counter(
                "gw_pusher_connections_refused_total",
                "Pusher connections refused at connect (unknown app, path, protocol, origin, app cap).",
                self.connects_refused.load(Ordering::Relaxed),
            ),
            sent,
            retried,
            dropped,
            gw_daemon::MetricFamily::counter(
                "gw_pusher_peer_ignored_total",
                "Pusher presence and occupancy messages from other gateways about apps this gateway does not serve.",
                self.cluster.ignored.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// A presence subscription waiting for its member list.
#[derive(Debug)]
pub(crate) struct Wait {
    pub client: u64,
    pub app: usize,
    pub channel: String,
    pub user_id: String,
}

/// Waits for what the channel's home answers wait `seq` other than the list (the list is
/// carried out where it arrives and closes `answer`), or for `presence_timeout`: either way
/// the connection is refused the channel.
pub(crate) async fn watch_wait(
    gw: Arc<Gateway>,
    pusher: Arc<Pusher>,
    wait: Wait,
    seq: u64,
    answer: tokio::sync::oneshot::Receiver<cluster::Answer>,
) {
    let (message, refusal) = tokio::select! {
        answer = answer => match answer {
            Ok(cluster::Answer::Full { max }) => (
                format!("Subscription to {:?} refused: the channel has {max} members, the most allowed", wait.channel),
                Refusal::PresenceFull,
            ),
            Err(_) => return,
        },
        () = tokio::time::sleep(pusher.config.presence_timeout) => {
            if !pusher.cluster.stop_waiting(wait.client, wait.app, &wait.channel, Some(seq)) {
                return;
            }
            let message = format!("Subscription to {:?} failed: the channel's home gateway did not answer in time", wait.channel);
            (message, Refusal::PresenceTimeout)
        }
        () = gw.mesh.down.cancelled() => return,
    };
    pusher.presence_refused(&gw, &wait, &message, refusal);
}

/// An app id as a Prometheus label value (ids are `[A-Za-z0-9_-]`, so this is for safety).
fn escape_label(id: &str) -> String {
    id.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Starts the webhook task of a gateway with Pusher apps that have webhooks; it stops `grace`
/// after `stop` at the latest.
pub(crate) fn spawn_webhooks(
    gw: &Gateway,
    stop: tokio_util::sync::CancellationToken,
    grace: std::time::Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let pusher = gw.listeners.iter().find_map(|l| l.pusher.as_ref())?;
    webhook_driver::spawn(pusher.take_webhook_driver(), stop, grace)
}

/// The Pusher state of a gateway with `pusher = true` listeners.
fn of(gw: &Gateway) -> Option<&Arc<Pusher>> {
    gw.listeners.iter().find_map(|l| l.pusher.as_ref())
}

/// A Pusher message from another gateway (its link has the gateway role).
pub(crate) fn on_peer(gw: &Gateway, msg: PusherPeer) {
    let Some(pusher) = of(gw) else {
        tracing::debug!("a Pusher message from another gateway, and no Pusher listener here: ignored");
        return;
    };
    match msg {
        m @ (PusherPeer::Occupied { .. }
        | PusherPeer::Vacant { .. }
        | PusherPeer::Join { .. }
        | PusherPeer::Leave { .. }) => {
            pusher.cluster.at_home(gw, pusher, m);
        }
        m => pusher.cluster.heard_from_home(gw, pusher, m),
    }
}

/// The presence channels of app `app` homed here (only `channel`, if given), each with its
/// users' ids in joining order, sorted by channel (`Query::PusherMembers`).
pub(crate) fn members(gw: &Gateway, app: &str, channel: Option<&str>) -> Vec<(String, Vec<String>)> {
    of(gw).map(|p| p.cluster.members(app, channel)).unwrap_or_default()
}

/// The registers' gateway list changed (`others`: every gateway but this one).
pub(crate) fn gateways_changed(gw: &Gateway, others: std::collections::BTreeSet<String>) {
    if let Some(pusher) = of(gw) {
        pusher.cluster.gateways_changed(gw, pusher, others);
    }
}

/// The Pusher counters of a gateway with `pusher = true` listeners (none without).
pub(crate) fn metric_families(gw: &Gateway) -> Vec<gw_daemon::MetricFamily> {
    gw.listeners.iter().find_map(|l| l.pusher.as_ref()).map(|p| p.families()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pusher() -> Arc<Pusher> {
        let mut capped = PusherApp::new("2", "capped", "secret");
        capped.max_connections = 1;
        capped.allowed_origins = vec!["https://ok.example".into()];
        let mut off = PusherApp::new("3", "off", "secret");
        off.enabled = false;
        Arc::new(
            Pusher::new(PusherConfig {
                apps: vec![PusherApp::new("1", "key", "secret"), capped, off],
                ..Default::default()
            })
            .unwrap(),
        )
    }

    fn code(r: Result<AppSlot, ConnectError>) -> u16 {
        r.map(|_| 0).unwrap_or_else(|e| e.code.code())
    }

    #[test]
    fn connections_are_checked_in_the_documented_order() {
        let p = pusher();
        assert_eq!(code(p.admit("/app/key", "protocol=7", None)), 0);
        assert_eq!(code(p.admit("/nope", "protocol=7", None)), 4005);
        assert_eq!(code(p.admit("/app/key", "protocol=8", None)), 4007);
        assert_eq!(code(p.admit("/app/key", "protocol=x", None)), 4006);
        assert_eq!(code(p.admit("/app/unknown", "protocol=7", None)), 4001);
        assert_eq!(code(p.admit("/app/off", "protocol=7", None)), 4003);
        assert_eq!(code(p.admit("/app/capped", "protocol=7", Some("https://evil.example"))), 4009);
        assert_eq!(code(p.admit("/app/capped", "protocol=7", None)), 4009);
        let first = p.admit("/app/capped", "protocol=7", Some("https://ok.example")).unwrap();
        assert_eq!(code(p.admit("/app/capped", "protocol=7", Some("https://ok.example"))), 4004);
        drop(first);
        assert_eq!(
            code(p.admit("/app/capped", "protocol=7", Some("https://ok.example"))),
            0,
            "the slot was given back"
        );
    }

    #[test]
    fn refusals_are_counted_by_reason_for_metrics() {
        let p = pusher();
        p.count(Refusal::BadAuth);
        p.count(Refusal::BadAuth);
        p.count(Refusal::RateLimited);
        p.count_connect_refused();
        let families = p.families();
        let refused = &families[0];
        assert_eq!(refused.name, "gw_pusher_frames_refused_total");
        let value = |label: &str| refused.samples.iter().find(|s| s.labels == label).map(|s| s.value);
        assert_eq!(value("reason=\"bad_auth\""), Some(2.0));
        assert_eq!(value("reason=\"rate_limited\""), Some(1.0));
        assert_eq!(value("reason=\"bad_frame\""), Some(0.0));
        assert_eq!(refused.samples.len(), Refusal::ALL.len(), "every reason shown, zero or not");
        assert_eq!(families[1].samples[0].value, 1.0);
    }

    #[test]
    fn what_a_home_decides_reaches_the_webhook_input_of_apps_that_want_it() {
        use gw_pusher_protocol::webhook::WebhookEvent;
        let mut hooked = PusherApp::new("1", "key", "secret");
        hooked.webhooks = vec![gw_config::PusherWebhook::new("http://127.0.0.1:1/hooks")];
        let plain = PusherApp::new("2", "key2", "secret");
        let p = Pusher::new(PusherConfig { apps: vec![hooked, plain], ..Default::default() }).unwrap();
        let mut driver = p.take_webhook_driver().expect("an app has webhooks");
        assert!(p.take_webhook_driver().is_none(), "started once");
        let (a, x, u) = (|| "a".to_string(), || "presence-x".to_string(), || "u".to_string());
        p.decide("1", &Decided::Occupied { channel: a() });
        p.decide("1", &Decided::Vacant { channel: a() });
        p.decide("2", &Decided::Occupied { channel: "b".into() });
        p.decide("1", &Decided::Joined { channel: x(), user_id: u() });
        p.decide("2", &Decided::Left { channel: x(), user_id: u() });
        p.decide("unknown", &Decided::Occupied { channel: a() });
        let mut got = Vec::new();
        while let Ok(e) = driver.events.try_recv() {
            got.push(e);
        }
        assert_eq!(
            got,
            [
                (0, WebhookEvent::ChannelOccupied { channel: "a".into() }),
                (0, WebhookEvent::ChannelVacated { channel: "a".into() }),
                (0, WebhookEvent::MemberAdded { channel: "presence-x".into(), user_id: "u".into() }),
            ]
        );
        let mut bad = PusherApp::new("1", "key", "secret");
        bad.webhooks = vec![gw_config::PusherWebhook::new("ftp://example.com/")];
        let err = Pusher::new(PusherConfig { apps: vec![bad], ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("only http:// and https://"), "{err}");
        // An https receiver without its own trust file needs the system's; one is read here.
        let mut https = PusherApp::new("1", "key", "secret");
        https.webhooks = vec![gw_config::PusherWebhook::new("https://example.com/")];
        if let Err(e) = Pusher::new(PusherConfig { apps: vec![https], ..Default::default() }) {
            assert!(e.to_string().contains("no trust store for https"), "{e}");
        }
    }
}
