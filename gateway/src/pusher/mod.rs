//! The Pusher Channels protocol (version 7) on `pusher = true` listeners (docs/pusher.md): what
//! Laravel Echo, pusher-js, pysher and every Pusher client library speak.
//!
//! - [`session`]: one connection's rules, sans-IO (time as an input);
//! - [`presence`]: this gateway's presence members;
//! - [`conn`]: the connection task that carries the session's actions out.
//!
//! A channel `C` of app `A` is the group `pusher:{A}:{C}`, so the routing index, the HTTP API
//! and workers see channels as groups. A signed-in user `U` is the uid `pusher:{A}:{U}`. Pusher
//! clients are not routed to business workers: this gateway answers them itself.
//!
//! Not in this slice (see docs/pusher.md "Status"): client events and presence across gateways
//! (they need the gateway-to-gateway links), webhooks, `workers = true`.

pub(crate) mod conn;
pub(crate) mod presence;
pub(crate) mod session;
pub(crate) mod webhook;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use gw_config::{PusherApp, PusherConfig};
use gw_pusher_protocol::connect::{ConnectError, ConnectRequest};
use gw_pusher_protocol::{ErrorCode, Limits};

use self::presence::LocalPresence;
use self::session::Refusal;

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
    pub fn new(config: PusherConfig) -> Self {
        let connections = config.apps.iter().map(|_| AtomicUsize::new(0)).collect();
        Self {
            config,
            limits: Limits::default(),
            connections,
            presence: Mutex::default(),
            refusals: Default::default(),
            connects_refused: AtomicU64::new(0),
        }
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
        vec![
            refused,
            gw_daemon::MetricFamily::counter(
                "gw_pusher_connections_refused_total",
                "Pusher connections refused at connect (unknown app, path, protocol, origin, app cap).",
                self.connects_refused.load(Ordering::Relaxed),
            ),
        ]
    }
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
}
