//! The webhook dispatcher's rules, sans-IO (docs/pusher.md §7): events in, request bodies out,
//! time as an argument. The driver (`webhook_driver.rs`) owns the HTTP client and the timer.
//!
//! - **Linger**: `channel_vacated` and `member_removed` wait `webhook_delay`; a
//!   `channel_occupied` (or `member_added` of the same user) within it cancels both, so a page
//!   reload sends nothing (Pusher's behaviour).
//! - **Batching**: each URL of an app has a bounded queue; a body carries up to
//!   `webhook_batch_size` events and leaves when it is full or its first event waited
//!   `webhook_batch_wait`. One request per URL at a time, so a URL sees its events in order.
//! - **Retry**: a failed request (error, timeout, non-2xx) is retried with the same events after
//!   an exponential backoff, until `webhook_retry_for` after its first attempt; then its events
//!   are dropped.
//! - **Counted**: events sent, requests retried, and events dropped by app, event and reason.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gw_config::{PusherConfig, WEBHOOK_EVENTS};
use gw_pusher_protocol::webhook::WebhookEvent;

/// The first retry's wait; each next one doubles, up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The dispatcher's limits (from `[pusher]`).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub delay: Duration,
    pub retry_for: Duration,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub queue: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl From<&PusherConfig> for Settings {
    fn from(c: &PusherConfig) -> Self {
        Self {
            delay: c.webhook_delay,
            retry_for: c.webhook_retry_for,
            batch_size: c.webhook_batch_size.max(1),
            batch_wait: c.webhook_batch_wait,
            queue: c.webhook_queue.max(1),
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
        }
    }
}

/// Why events were dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// A queue was full.
    QueueFull,
    /// Every attempt failed for `webhook_retry_for`.
    RetryExpired,
    /// The gateway stopped with the events unsent.
    Shutdown,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 3] = [Self::QueueFull, Self::RetryExpired, Self::Shutdown];

    /// The metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::RetryExpired => "retry_expired",
            Self::Shutdown => "shutdown",
        }
    }
}

const EVENTS: usize = WEBHOOK_EVENTS.len();
const REASONS: usize = DropReason::ALL.len();

fn event_index(event: &WebhookEvent) -> Option<usize> {
    WEBHOOK_EVENTS.iter().position(|n| *n == event.name())
}

/// The webhook counters of every app (indexed like `[[pusher.apps]]`), shared with `/metrics`.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Events delivered (2xx), by app and event.
    pub sent: Vec<[AtomicU64; EVENTS]>,
    /// Requests retried, by app.
    pub retried: Vec<AtomicU64>,
    /// Events dropped, by app, event and reason.
    pub dropped: Vec<[[AtomicU64; REASONS]; EVENTS]>,
}

impl Counters {
    pub fn new(apps: usize) -> Self {
        Self {
            sent: (0..apps).map(|_| Default::default()).collect(),
            retried: (0..apps).map(|_| AtomicU64::new(0)).collect(),
            dropped: (0..apps).map(|_| Default::default()).collect(),
        }
    }

    pub fn drop_event(&self, app: usize, event: &WebhookEvent, reason: DropReason) {
        let r = DropReason::ALL.iter().position(|x| *x == reason).unwrap_or(0);
        if let (Some(per_app), Some(e)) = (self.dropped.get(app), event_index(event)) {
            per_app[e][r].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sent(&self, app: usize, events: &[WebhookEvent]) {
        if let Some(per_app) = self.sent.get(app) {
            for e in events.iter().filter_map(event_index) {
                per_app[e].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events dropped for this app, event name and reason (tests).
    #[cfg(test)]
    pub fn dropped(&self, app: usize, event: &str, reason: DropReason) -> u64 {
        let e = WEBHOOK_EVENTS.iter().position(|n| *n == event).expect("an event name");
        let r = DropReason::ALL.iter().position(|x| *x == reason).expect("a reason");
        self.dropped[app][e][r].load(Ordering::Relaxed)
    }

    /// Events delivered for this app and event name (tests).
    #[cfg(test)]
    pub fn sent_of(&self, app: usize, event: &str) -> u64 {
        let e = WEBHOOK_EVENTS.iter().position(|n| *n == event).expect("an event name");
        self.sent[app][e].load(Ordering::Relaxed)
    }
}

/// One URL of one app.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The app (index in `[[pusher.apps]]`).
    pub app: usize,
    /// The event names it wants.
    pub events: Vec<String>,
}

/// A request to make: POST these events to endpoint `endpoint`, then call
/// [`Dispatcher::handle_result`] with the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    pub endpoint: usize,
    pub events: Vec<WebhookEvent>,
    /// A retry of the endpoint's previous body.
    pub retry: bool,
}

/// What [`Dispatcher::handle_result`] made of a request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Delivered (or nothing was out).
    Delivered,
    /// Failed; tried again after this wait.
    Retry { after: Duration },
    /// Failed for `webhook_retry_for`: these many events were dropped.
    GaveUp { events: usize },
}

#[derive(Debug)]
enum Flight {
    Idle,
    /// A request is out.
    Sending {
        batch: Vec<WebhookEvent>,
        first: Instant,
        backoff: Duration,
    },
    /// The last attempt failed; the next one is at `at`.
    Waiting {
        batch: Vec<WebhookEvent>,
        first: Instant,
        backoff: Duration,
        at: Instant,
    },
}

#[derive(Debug)]
struct EndpointState {
    endpoint: Endpoint,
    /// Events and when they were queued, oldest first.
    queue: VecDeque<(Instant, WebhookEvent)>,
    flight: Flight,
}

/// What a lingering event is waiting for: the channel (vacated) or the user in it (removed).
type LingerKey = (usize, String, Option<String>);

/// The dispatcher of one gateway: every URL of every app.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    settings: Settings,
    endpoints: Vec<EndpointState>,
    /// Lingering events by what cancels them, with the sequence number of their timer entry.
    lingering: HashMap<LingerKey, (u64, WebhookEvent)>,
    /// Timer entries in due order (the delay is constant): due, key, sequence number. An entry
    /// whose event was cancelled (or replaced) is skipped.
    timers: VecDeque<(Instant, LingerKey, u64)>,
    seq: u64,
    counters: std::sync::Arc<Counters>,
}

fn linger_key(app: usize, event: &WebhookEvent) -> Option<LingerKey> {
    match event {
        WebhookEvent::ChannelVacated { channel } | WebhookEvent::ChannelOccupied { channel } => {
            Some((app, channel.clone(), None))
        }
        WebhookEvent::MemberRemoved { channel, user_id } | WebhookEvent::MemberAdded { channel, user_id } => {
            Some((app, channel.clone(), Some(user_id.clone())))
        }
        _ => None,
    }
}

impl Dispatcher {
    pub fn new(settings: Settings, endpoints: Vec<Endpoint>, counters: std::sync::Arc<Counters>) -> Self {
        let endpoints = endpoints
            .into_iter()
            .map(|endpoint| EndpointState { endpoint, queue: VecDeque::new(), flight: Flight::Idle })
            .collect();
        Self { settings, endpoints, lingering: HashMap::new(), timers: VecDeque::new(), seq: 0, counters }
    }

    /// An event of app `app` happened at `now`.
    pub fn event(&mut self, now: Instant, app: usize, event: WebhookEvent) {
        let lingers = matches!(event, WebhookEvent::ChannelVacated { .. } | WebhookEvent::MemberRemoved { .. });
        let cancels = matches!(event, WebhookEvent::ChannelOccupied { .. } | WebhookEvent::MemberAdded { .. });
        if let Some(key) = linger_key(app, &event) {
            if cancels && self.lingering.remove(&key).is_some() {
                // Back within the delay: neither the vacated (removed) nor this event is sent.
                return;
            }
            if lingers && !self.settings.delay.is_zero() {
                self.seq += 1;
                self.timers.push_back((now + self.settings.delay, key.clone(), self.seq));
                self.lingering.insert(key, (self.seq, event));
                return;
            }
        }
        self.enqueue(now, app, event);
    }

    fn enqueue(&mut self, now: Instant, app: usize, event: WebhookEvent) {
        let cap = self.settings.queue;
        for ep in self.endpoints.iter_mut().filter(|ep| ep.endpoint.app == app) {
            if !ep.endpoint.events.iter().any(|e| e == event.name()) {
                continue;
            }
            if ep.queue.len() >= cap {
                self.counters.drop_event(app, &event, DropReason::QueueFull);
            } else {
                ep.queue.push_back((now, event.clone()));
            }
        }
    }

    /// Releases the lingering events due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((due, _, _)) = self.timers.front() {
            if *due > now {
                break;
            }
            let (due, key, seq) = self.timers.pop_front().expect("front exists");
            if self.lingering.get(&key).is_some_and(|(s, _)| *s == seq) {
                let (_, event) = self.lingering.remove(&key).expect("present");
                // Queued as of when it became due, so a late timer does not add a batch wait.
                self.enqueue(due, key.0, event);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) or [`poll_transmit`](Self::poll_transmit)
    /// next has something to do, if ever (without new events or results).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let linger = self
            .timers
            .iter()
            .find(|(_, key, seq)| self.lingering.get(key).is_some_and(|(s, _)| s == seq))
            .map(|(due, _, _)| *due);
        let sends = self.endpoints.iter().filter_map(|ep| match &ep.flight {
            Flight::Idle => ep.queue.front().map(|(at, _)| {
                if ep.queue.len() >= self.settings.batch_size { *at } else { *at + self.settings.batch_wait }
            }),
            Flight::Sending { .. } => None,
            Flight::Waiting { at, .. } => Some(*at),
        });
        linger.into_iter().chain(sends).min()
    }

    /// The next request to make at `now`, if any; call it until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let (size, wait) = (self.settings.batch_size, self.settings.batch_wait);
        for (index, ep) in self.endpoints.iter_mut().enumerate() {
            match std::mem::replace(&mut ep.flight, Flight::Idle) {
                Flight::Waiting { batch, first, backoff, at } if at <= now => {
                    self.counters.retried.get(ep.endpoint.app).map(|c| c.fetch_add(1, Ordering::Relaxed));
                    let events = batch.clone();
                    ep.flight = Flight::Sending { batch, first, backoff };
                    return Some(Transmit { endpoint: index, events, retry: true });
                }
                Flight::Idle => {
                    let ready = ep.queue.front().is_some_and(|(at, _)| ep.queue.len() >= size || *at + wait <= now);
                    if ready {
                        let n = ep.queue.len().min(size);
                        let batch: Vec<WebhookEvent> = ep.queue.drain(..n).map(|(_, e)| e).collect();
                        let events = batch.clone();
                        ep.flight = Flight::Sending { batch, first: now, backoff: self.settings.backoff_min };
                        return Some(Transmit { endpoint: index, events, retry: false });
                    }
                }
                other => ep.flight = other,
            }
        }
        None
    }

    /// The outcome of the request to `endpoint`: `true` for a 2xx answer.
    pub fn handle_result(&mut self, now: Instant, endpoint: usize, delivered: bool) -> Outcome {
        let Some(ep) = self.endpoints.get_mut(endpoint) else { return Outcome::Delivered };
        let Flight::Sending { batch, first, backoff } = std::mem::replace(&mut ep.flight, Flight::Idle) else {
            return Outcome::Delivered;
        };
        let app = ep.endpoint.app;
        if delivered {
            self.counters.sent(app, &batch);
            Outcome::Delivered
        } else if now + backoff > first + self.settings.retry_for {
            for event in &batch {
                self.counters.drop_event(app, event, DropReason::RetryExpired);
            }
            Outcome::GaveUp { events: batch.len() }
        } else {
            let next = (backoff * 2).min(self.settings.backoff_max);
            ep.flight = Flight::Waiting { batch, first, backoff: next, at: now + backoff };
            Outcome::Retry { after: backoff }
        }
    }

    /// Stopping: releases every lingering event now (nobody is coming back to this gateway).
    pub fn release_lingering(&mut self, now: Instant) {
        self.timers.clear();
        let mut held: Vec<_> = self.lingering.drain().map(|(key, (seq, event))| (seq, key.0, event)).collect();
        held.sort_by_key(|(seq, _, _)| *seq);
        for (_, app, event) in held {
            self.enqueue(now, app, event);
        }
    }

    /// Whether nothing is queued, lingering or out.
    pub fn is_idle(&self) -> bool {
        self.lingering.is_empty()
            && self.endpoints.iter().all(|ep| ep.queue.is_empty() && matches!(ep.flight, Flight::Idle))
    }

    /// Stopped for good: everything still held is dropped and counted.
    pub fn abandon(&mut self) {
        let counters = self.counters.clone();
        for (key, (_, event)) in self.lingering.drain() {
            counters.drop_event(key.0, &event, DropReason::Shutdown);
        }
        self.timers.clear();
        for ep in &mut self.endpoints {
            let app = ep.endpoint.app;
            for (_, event) in ep.queue.drain(..) {
                counters.drop_event(app, &event, DropReason::Shutdown);
            }
            if let Flight::Sending { batch, .. } | Flight::Waiting { batch, .. } =
                std::mem::replace(&mut ep.flight, Flight::Idle)
            {
                for event in &batch {
                    counters.drop_event(app, event, DropReason::Shutdown);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn settings() -> Settings {
        Settings {
            delay: Duration::from_secs(3),
            retry_for: Duration::from_secs(300),
            batch_size: 100,
            batch_wait: Duration::from_millis(50),
            queue: 1000,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
        }
    }

    fn all(app: usize) -> Endpoint {
        Endpoint { app, events: WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect() }
    }

    fn dispatcher(settings: Settings, endpoints: Vec<Endpoint>) -> (Dispatcher, Arc<Counters>) {
        let counters = Arc::new(Counters::new(2));
        (Dispatcher::new(settings, endpoints, counters.clone()), counters)
    }

    fn occupied(c: &str) -> WebhookEvent {
        WebhookEvent::ChannelOccupied { channel: c.into() }
    }
    fn vacated(c: &str) -> WebhookEvent {
        WebhookEvent::ChannelVacated { channel: c.into() }
    }
    fn added(c: &str, u: &str) -> WebhookEvent {
        WebhookEvent::MemberAdded { channel: c.into(), user_id: u.into() }
    }
    fn removed(c: &str, u: &str) -> WebhookEvent {
        WebhookEvent::MemberRemoved { channel: c.into(), user_id: u.into() }
    }
    fn client(n: usize) -> WebhookEvent {
        WebhookEvent::ClientEvent {
            channel: "private-a".into(),
            event: "client-x".into(),
            data: n.to_string(),
            socket_id: "1.1".into(),
            user_id: None,
        }
    }

    /// Everything sendable at `now`, every request answered `ok`.
    fn drain(d: &mut Dispatcher, now: Instant, ok: bool) -> Vec<Transmit> {
        let mut out = Vec::new();
        d.handle_timeout(now);
        while let Some(t) = d.poll_transmit(now) {
            d.handle_result(now, t.endpoint, ok);
            out.push(t);
        }
        out
    }

    #[test]
    fn a_body_leaves_after_the_batch_wait_or_when_full() {
        let (mut d, counters) = dispatcher(settings(), vec![all(0)]);
        let t0 = Instant::now();
        d.event(t0, 0, occupied("a"));
        d.event(t0 + Duration::from_millis(10), 0, occupied("b"));
        assert_eq!(d.poll_transmit(t0 + Duration::from_millis(49)), None, "waits for more");
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_millis(50)));
        let t = d.poll_transmit(t0 + Duration::from_millis(50)).unwrap();
        assert_eq!(t, Transmit { endpoint: 0, events: vec![occupied("a"), occupied("b")], retry: false });
        d.event(t0 + Duration::from_millis(51), 0, occupied("c"));
        assert_eq!(d.poll_transmit(t0 + Duration::from_secs(1)), None, "one request at a time per URL");
        assert_eq!(d.poll_timeout(), None, "nothing to wake for while a request is out");
        d.handle_result(t0 + Duration::from_millis(60), 0, true);
        assert_eq!(counters.sent_of(0, "channel_occupied"), 2);
        for i in 0..250 {
            d.event(t0 + Duration::from_millis(70), 0, client(i));
        }
        let sent = drain(&mut d, t0 + Duration::from_millis(70), true);
        assert_eq!(sent.iter().map(|t| t.events.len()).collect::<Vec<_>>(), [100, 100], "full bodies go at once");
        assert_eq!(sent[0].events[0], occupied("c"), "in order");
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_millis(120)), "the rest waits its batch wait");
        assert_eq!(drain(&mut d, t0 + Duration::from_millis(120), true)[0].events.len(), 51);
        assert!(d.is_idle());
    }

    #[test]
    fn failures_are_retried_with_backoff_then_given_up_and_counted() {
        let mut s = settings();
        s.retry_for = Duration::from_secs(10);
        s.batch_wait = Duration::ZERO;
        let (mut d, counters) = dispatcher(s, vec![all(1)]);
        let t0 = Instant::now();
        d.event(t0, 1, client(1));
        let first = d.poll_transmit(t0).unwrap();
        d.handle_result(t0, 0, false);
        assert_eq!(d.poll_timeout(), Some(t0 + BACKOFF_MIN));
        assert_eq!(d.poll_transmit(t0 + Duration::from_millis(249)), None);
        let again = d.poll_transmit(t0 + BACKOFF_MIN).unwrap();
        assert_eq!((again.events, again.retry), (first.events.clone(), true), "the same events");
        d.handle_result(t0 + BACKOFF_MIN, 0, false);
        assert_eq!(d.poll_timeout(), Some(t0 + BACKOFF_MIN * 3), "the wait doubled");
        // Keep failing: waits 250ms, 500ms, 1s, 2s, 4s, then 8s would pass the 10 s window.
        let mut now = t0 + BACKOFF_MIN;
        let mut attempts = 2;
        while let Some(at) = d.poll_timeout() {
            now = at;
            d.poll_transmit(now).unwrap();
            d.handle_result(now, 0, false);
            attempts += 1;
        }
        assert_eq!(attempts, 6);
        assert!(now - t0 <= Duration::from_secs(10));
        assert_eq!(counters.dropped(1, "client_event", DropReason::RetryExpired), 1);
        assert_eq!(counters.retried[1].load(Ordering::Relaxed), 5);
        assert!(d.is_idle());
        // The next event starts afresh, and a success after failures counts as sent.
        d.event(now, 1, client(2));
        d.poll_transmit(now).unwrap();
        d.handle_result(now, 0, false);
        d.poll_transmit(now + BACKOFF_MIN).unwrap();
        d.handle_result(now + BACKOFF_MIN, 0, true);
        assert_eq!(counters.sent_of(1, "client_event"), 1);
    }

    #[test]
    fn vacated_and_removed_linger_and_a_return_within_the_delay_cancels_both() {
        let (mut d, _) = dispatcher(settings(), vec![all(0)]);
        let t0 = Instant::now();
        d.event(t0, 0, occupied("presence-a"));
        d.event(t0, 0, added("presence-a", "ann"));
        assert_eq!(drain(&mut d, t0 + Duration::from_millis(50), true)[0].events.len(), 2);
        // A reload: removed and vacated, then back 1 s later.
        d.event(t0 + Duration::from_secs(1), 0, removed("presence-a", "ann"));
        d.event(t0 + Duration::from_secs(1), 0, vacated("presence-a"));
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(4)));
        assert!(drain(&mut d, t0 + Duration::from_secs(2), true).is_empty());
        d.event(t0 + Duration::from_secs(2), 0, occupied("presence-a"));
        d.event(t0 + Duration::from_secs(2), 0, added("presence-a", "ann"));
        assert_eq!(d.poll_timeout(), None, "nothing left to send or wake for");
        assert!(drain(&mut d, t0 + Duration::from_secs(10), true).is_empty());
        // Gone for good: sent after the delay, not before.
        d.event(t0 + Duration::from_secs(20), 0, removed("presence-a", "ann"));
        d.event(t0 + Duration::from_secs(20), 0, vacated("presence-a"));
        assert!(drain(&mut d, t0 + Duration::from_millis(22_999), true).is_empty());
        let sent = drain(&mut d, t0 + Duration::from_secs(23) + Duration::from_millis(50), true);
        assert_eq!(sent[0].events, [removed("presence-a", "ann"), vacated("presence-a")]);
        // Another user's or another app's return cancels nothing.
        d.event(t0 + Duration::from_secs(30), 0, removed("presence-a", "bob"));
        d.event(t0 + Duration::from_secs(30), 0, added("presence-a", "cid"));
        d.event(t0 + Duration::from_secs(30), 1, added("presence-a", "bob"));
        let sent = drain(&mut d, t0 + Duration::from_secs(34), true);
        assert_eq!(sent[0].events, [added("presence-a", "cid"), removed("presence-a", "bob")]);
    }

    #[test]
    fn filters_route_events_and_full_queues_drop_and_count() {
        let mut s = settings();
        s.queue = 2;
        s.delay = Duration::ZERO;
        let clients_only = Endpoint { app: 0, events: vec!["client_event".into()] };
        let (mut d, counters) = dispatcher(s, vec![all(0), clients_only, all(1)]);
        let t0 = Instant::now();
        d.event(t0, 0, client(1));
        d.event(t0, 0, vacated("a"));
        d.event(t0, 0, client(2));
        let sent = drain(&mut d, t0 + Duration::from_secs(1), true);
        assert_eq!(sent.len(), 2);
        assert_eq!((sent[0].endpoint, sent[0].events.clone()), (0, vec![client(1), vacated("a")]));
        assert_eq!((sent[1].endpoint, sent[1].events.clone()), (1, vec![client(1), client(2)]));
        assert_eq!(counters.dropped(0, "client_event", DropReason::QueueFull), 1, "the third on endpoint 0");
        assert_eq!(counters.sent_of(1, "client_event"), 0, "app 1 saw nothing");
    }

    #[test]
    fn stopping_releases_lingering_events_and_abandoning_counts_what_is_left() {
        let (mut d, counters) = dispatcher(settings(), vec![all(0)]);
        let t0 = Instant::now();
        d.event(t0, 0, vacated("a"));
        d.event(t0, 0, removed("presence-b", "u"));
        d.release_lingering(t0);
        assert!(!d.is_idle());
        let t = d.poll_transmit(t0 + Duration::from_millis(50)).unwrap();
        assert_eq!(t.events, [vacated("a"), removed("presence-b", "u")], "in the order they happened");
        d.event(t0, 0, client(1));
        d.abandon();
        assert!(d.is_idle());
        assert_eq!(counters.dropped(0, "channel_vacated", DropReason::Shutdown), 1);
        assert_eq!(counters.dropped(0, "client_event", DropReason::Shutdown), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Occupy(u8),
        Vacate(u8),
        Client,
        Advance(u16),
        Answer(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(Op::Occupy),
            (0u8..3).prop_map(Op::Vacate),
            Just(Op::Client),
            (0u16..5000).prop_map(Op::Advance),
            any::<bool>().prop_map(Op::Answer),
        ]
    }

    proptest! {
        /// Whatever happens: every event is delivered once, dropped once (counted) or still held;
        /// a URL never has two requests out; a body is never empty nor over the batch size; and
        /// with every answer a success, the occupancy events delivered for a channel alternate
        /// and end in its true state once everything is out.
        #[test]
        fn events_are_delivered_or_counted_never_lost(ops in proptest::collection::vec(op(), 1..200)) {
            let mut s = settings();
            s.batch_size = 3;
            s.queue = 5;
            s.retry_for = Duration::from_secs(2);
            let (mut d, counters) = dispatcher(s.clone(), vec![all(0)]);
            let t0 = Instant::now();
            let mut now = t0;
            let mut out: Option<Transmit> = None;
            let mut delivered: Vec<WebhookEvent> = Vec::new();
            let mut occupied_now = [false; 3];
            let mut clients = 0usize;
            for op in ops {
                match op {
                    Op::Occupy(c) if !occupied_now[c as usize] => {
                        occupied_now[c as usize] = true;
                        d.event(now, 0, occupied(&c.to_string()));
                    }
                    Op::Vacate(c) if occupied_now[c as usize] => {
                        occupied_now[c as usize] = false;
                        d.event(now, 0, vacated(&c.to_string()));
                    }
                    Op::Occupy(_) | Op::Vacate(_) => {}
                    Op::Client => {
                        clients += 1;
                        d.event(now, 0, client(clients));
                    }
                    Op::Advance(ms) => {
                        now += Duration::from_millis(ms.into());
                        d.handle_timeout(now);
                    }
                    Op::Answer(ok) => {
                        if let Some(t) = out.take() {
                            d.handle_result(now, t.endpoint, ok);
                            if ok {
                                delivered.extend(t.events);
                            }
                        }
                    }
                }
                if out.is_none() {
                    out = d.poll_transmit(now);
                    if let Some(t) = &out {
                        prop_assert!(!t.events.is_empty() && t.events.len() <= 3);
                    }
                } else {
                    prop_assert_eq!(d.poll_transmit(now), None, "one request at a time");
                }
            }
            // Settle: answer everything with success.
            d.release_lingering(now);
            loop {
                if let Some(t) = out.take() {
                    d.handle_result(now, t.endpoint, true);
                    delivered.extend(t.events);
                }
                now += Duration::from_secs(1);
                d.handle_timeout(now);
                out = d.poll_transmit(now);
                if out.is_none() && d.is_idle() {
                    break;
                }
            }
            let dropped: u64 = WEBHOOK_EVENTS
                .iter()
                .flat_map(|e| DropReason::ALL.iter().map(move |r| (e, r)))
                .map(|(e, r)| counters.dropped(0, e, *r))
                .sum();
            let sent: u64 = WEBHOOK_EVENTS.iter().map(|e| counters.sent_of(0, e)).sum();
            prop_assert_eq!(sent as usize, delivered.len());
            let delivered_clients = delivered.iter().filter(|e| e.name() == "client_event").count() as u64;
            prop_assert_eq!(
                delivered_clients
                    + DropReason::ALL.iter().map(|r| counters.dropped(0, "client_event", *r)).sum::<u64>(),
                clients as u64,
                "every client event delivered or counted as dropped"
            );
            if dropped == 0 {
                for c in 0..3u8 {
                    let name = c.to_string();
                    let states: Vec<bool> = delivered
                        .iter()
                        .filter_map(|e| match e {
                            WebhookEvent::ChannelOccupied { channel } if *channel == name => Some(true),
                            WebhookEvent::ChannelVacated { channel } if *channel == name => Some(false),
                            _ => None,
                        })
                        .collect();
                    prop_assert!(states.windows(2).all(|w| w[0] != w[1]), "alternating: {:?}", states);
                    prop_assert!(states.first().is_none_or(|s| *s), "starts occupied: {:?}", states);
                    prop_assert_eq!(states.last().copied().unwrap_or(false), occupied_now[c as usize]);
                }
            }
        }
    }
}
