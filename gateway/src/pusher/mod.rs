//! The Pusher Channels protocol (version 7) on `pusher = true` listeners (docs/pusher.md): what
//! Laravel Echo, pusher-js, pysher and every Pusher client library speak.
//!
//! - [`session`]: one connection's rules, sans-IO (time as an input);
//! - [`presence`]: this gateway's presence members;
//! - [`occupancy`]: this gateway's subscribers per channel;
//! - [`decide`]: who turns this gateway's transitions into occupancy and member webhooks;
//! - [`webhook`]: the webhook dispatcher's rules, sans-IO, and [`webhook_driver`] its IO;
//! - [`conn`]: the connection task that carries the session's actions out.
//!
//! A channel `C` of app `A` is the group `pusher:{A}:{C}`, so the routing index, the HTTP API
//! and workers see channels as groups. A signed-in user `U` is the uid `pusher:{A}:{U}`. Pusher
//! clients are not routed to business workers: this gateway answers them itself.
//!
//! Not in this slice (see docs/pusher.md "Status"): client events and presence across gateways
//! (they need the gateway-to-gateway links), so occupancy and member webhooks are per gateway;
//! `workers = true`.

pub(crate) mod conn;
pub(crate) mod decide;
pub(crate) mod occupancy;
pub(crate) mod presence;
pub(crate) mod session;
pub(crate) mod webhook;
pub(crate) mod webhook_driver;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gw_config::{PusherApp, PusherConfig};
use gw_pusher_protocol::connect::{ConnectError, ConnectRequest};
use gw_pusher_protocol::{ErrorCode, Limits};

use self::decide::{Decider, LocalDecider, Transition, WebhookSink};
use self::occupancy::LocalChannels;
use self::presence::LocalPresence;
use self::session::Refusal;
use self::webhook::{Counters, Dispatcher, DropReason, Endpoint, Settings};
use self::webhook_driver::{Driver, Target};
use crate::GatewayError;

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
    /// Who decides the occupancy and member webhooks (this gateway alone, for now).
    decider: Box<dyn Decider>,
    /// Where webhook events go.
    pub webhooks: WebhookSink,
    webhook_counters: Arc<Counters>,
    /// The webhook task's state until the gateway starts it.
    driver: Mutex<Option<Driver>>,
}

/// An admitted connection's place in its app's count; given back on drop.
#[derive(Debug)]
pub(crate) struct AppSlot<'a> {
    pusher: &'a Pusher,
    pub index: usize,
}

impl Drop for AppSlot<'_> {
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

    /// Connection `client` subscribed to `channel` of app `app` (any kind).
    pub fn occupy(&self, app: usize, channel: &str, client: u64) {
        if !self.counts_occupancy(app) {
            return;
        }
        let mut channels = self.channels.lock().expect("channels lock");
        if channels.subscribe(app, channel, client) {
            self.decider.transition(app, Transition::Occupied { channel }, &self.webhooks);
        }
    }

    /// Connection `client` left `channel` of app `app`.
    pub fn vacate(&self, app: usize, channel: &str, client: u64) {
        if !self.counts_occupancy(app) {
            return;
        }
        let mut channels = self.channels.lock().expect("channels lock");
        if channels.unsubscribe(app, channel, client) {
            self.decider.transition(app, Transition::Vacant { channel }, &self.webhooks);
        }
    }

    /// A user's first connection here joined a presence channel; call under the presence lock.
    pub fn member_joined(&self, app: usize, channel: &str, user_id: &str) {
        self.decider.transition(app, Transition::Joined { channel, user_id }, &self.webhooks);
    }

    /// A user's last connection here left a presence channel; call under the presence lock.
    pub fn member_left(&self, app: usize, channel: &str, user_id: &str) {
        self.decider.transition(app, Transition::Left { channel, user_id }, &self.webhooks);
    }

    /// The app at `index`.
    pub fn app(&self, index: usize) -> &PusherApp {
        &self.config.apps[index]
    }

    /// The checks of docs/pusher.md §2, in order: path and protocol, key, enabled, origin, the
    /// app's connection cap on this gateway.
    pub fn admit(&self, path: &str, query: &str, origin: Option<&str>) -> Result<AppSlot<'_>, ConnectError> {
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
        let slot = AppSlot { pusher: self, index };
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
        ]
    }
}

/// An app id as a Prometheus label value (ids are `[A-Za-z0-9_-]`, so this is for safety).
fn escape_label(id: &str) -> String {
    id.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Starts the webhook task of a gateway with Pusher apps that have webhooks; it stops `grace`
/// after `stop` at the latest.
pub(crate) fn spawn_webhooks(
    gw: &crate::Gateway,
    stop: tokio_util::sync::CancellationToken,
    grace: std::time::Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let pusher = gw.listeners.iter().find_map(|l| l.pusher.as_ref())?;
    webhook_driver::spawn(pusher.take_webhook_driver(), stop, grace)
}

/// The Pusher counters of a gateway with `pusher = true` listeners (none without).
pub(crate) fn metric_families(gw: &crate::Gateway) -> Vec<gw_daemon::MetricFamily> {
    gw.listeners.iter().find_map(|l| l.pusher.as_ref()).map(|p| p.families()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pusher() -> Pusher {
        let mut capped = PusherApp::new("2", "capped", "secret");
        capped.max_connections = 1;
        capped.allowed_origins = vec!["https://ok.example".into()];
        let mut off = PusherApp::new("3", "off", "secret");
        off.enabled = false;
        Pusher::new(PusherConfig {
            apps: vec![PusherApp::new("1", "key", "secret"), capped, off],
            ..Default::default()
        })
        .unwrap()
    }

    fn code(r: Result<AppSlot<'_>, ConnectError>) -> u16 {
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
    fn occupancy_and_member_transitions_reach_the_webhook_input_of_apps_that_want_them() {
        use gw_pusher_protocol::webhook::WebhookEvent;
        let mut hooked = PusherApp::new("1", "key", "secret");
        hooked.webhooks = vec![gw_config::PusherWebhook::new("http://127.0.0.1:1/hooks")];
        let plain = PusherApp::new("2", "key2", "secret");
        let p = Pusher::new(PusherConfig { apps: vec![hooked, plain], ..Default::default() }).unwrap();
        let mut driver = p.take_webhook_driver().expect("an app has webhooks");
        assert!(p.take_webhook_driver().is_none(), "started once");
        p.occupy(0, "a", 1);
        p.occupy(0, "a", 2);
        p.vacate(0, "a", 1);
        p.vacate(0, "a", 2);
        p.occupy(1, "b", 3);
        p.member_joined(0, "presence-x", "u");
        p.member_left(1, "presence-x", "u");
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
        assert_eq!(p.channels.lock().unwrap().count(1, "b"), 0, "an app without webhooks is not counted");
        let mut bad = PusherApp::new("1", "key", "secret");
        bad.webhooks = vec![gw_config::PusherWebhook::new("https://example.com/")];
        let err = Pusher::new(PusherConfig { apps: vec![bad], ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("only http://"), "{err}");
    }
}
