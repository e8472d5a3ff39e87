//! One Pusher connection's rules, sans-IO: [`Session::handle`] takes a decoded client frame and
//! the current time and says what to do ([`Action`]s: frames for this client, groups to join or
//! leave, presence joins and leaves, client events to publish, a close). The connection task
//! (`conn.rs`) decodes, calls it and carries the actions out, so every rule is a unit test with
//! time as an input (docs/pusher.md §2).

use std::sync::Arc;
use std::time::Instant;

use gw_config::PusherApp;
use gw_pusher_protocol::auth::{verify_channel_auth, verify_user_auth};
use gw_pusher_protocol::client_frame::{ClientEvent, Subscribe};
use gw_pusher_protocol::presence::{Member, parse_channel_data, parse_user_data};
use gw_pusher_protocol::rate::TokenBucket;
use gw_pusher_protocol::server_frame::EventData;
use gw_pusher_protocol::webhook::WebhookEvent;
use gw_pusher_protocol::{ChannelKind, ClientFrame, ErrorCode, FrameError, Limits, ServerFrame, SocketId};

use crate::few::Few;

/// What the connection task does for a frame, in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Write this frame to the client.
    Send(String),
    /// Join the channel's group (public, private and encrypted channels).
    Join(Channel),
    /// Leave the channel's group.
    Leave(Channel),
    /// Join a presence channel: the group and the gateway's member list; the task answers with
    /// the member list (or refuses when the channel is full, then calls [`Session::refused`]).
    PresenceJoin {
        /// The channel.
        channel: String,
        /// Who joins.
        member: MemberData,
    },
    /// Leave a presence channel's member list (the group is left with [`Action::Leave`]).
    PresenceLeave {
        /// The channel.
        channel: Channel,
        /// Who leaves.
        user_id: String,
    },
    /// Deliver a client event to the channel's other subscribers (never to this connection).
    Publish {
        /// The channel.
        channel: String,
        /// The encoded frame.
        frame: String,
    },
    /// Hand this event to the app's webhooks (a client event, when the app has a
    /// `client_event` webhook).
    Webhook(WebhookEvent),
    /// The connection signed in as this user.
    SignedIn(String),
    /// Close the connection with this code (after what was sent before).
    Close(ErrorCode, String),
    /// Something refused or ignored, counted by this reason.
    Count(Refusal),
    /// A `workers = true` app: hand the frame, as the client sent it, to the connection's
    /// business worker (`on_message`): a client event the gateway delivered, or an event of the
    /// app's own (neither `pusher:` nor `client-`), which the gateway does not refuse then.
    ToWorker,
}

/// A presence member, comparable in tests.
#[derive(Debug)]
pub(crate) struct MemberData(pub Member);

impl PartialEq for MemberData {
    fn eq(&self, other: &Self) -> bool {
        self.0.user_id == other.0.user_id
            && self.0.user_info.as_ref().map(|r| r.get()) == other.0.user_info.as_ref().map(|r| r.get())
    }
}
impl Eq for MemberData {}

/// Why a frame was refused or ignored (the label of its counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Refusal {
    /// The frame did not decode.
    BadFrame,
    /// A `pusher:` event we do not act on.
    Ignored,
    /// A subscription's signature, key or `channel_data` was wrong or missing.
    BadAuth,
    /// Over `max_subscriptions`.
    TooManySubscriptions,
    /// A `#server-to-user-` channel of another user (or not signed in).
    NotSignedIn,
    /// A client event the app does not allow, or on a channel not subscribed.
    ClientEventRefused,
    /// A client event over the rate limit (4301).
    RateLimited,
    /// A sign-in with a wrong signature or bad `user_data` (4009).
    BadSignin,
    /// A presence channel at `max_presence_members`.
    PresenceFull,
    /// A presence subscription whose channel's home did not answer within the presence timeout.
    PresenceTimeout,
}

impl Refusal {
    /// Every reason, for the counters.
    pub const ALL: [Refusal; 10] = [
        Self::BadFrame,
        Self::Ignored,
        Self::BadAuth,
        Self::TooManySubscriptions,
        Self::NotSignedIn,
        Self::ClientEventRefused,
        Self::RateLimited,
        Self::BadSignin,
        Self::PresenceFull,
        Self::PresenceTimeout,
    ];

    /// The counter's label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::Ignored => "ignored",
            Self::BadAuth => "bad_auth",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::NotSignedIn => "not_signed_in",
            Self::ClientEventRefused => "client_event_refused",
            Self::RateLimited => "rate_limited",
            Self::BadSignin => "bad_signin",
            Self::PresenceFull => "presence_full",
            Self::PresenceTimeout => "presence_timeout",
        }
    }
}

/// A channel's name as a subscription holds it: its group's name `pusher:{app}:{channel}`
/// (see [`channel_group`](super::channel_group)), shared with the routing index and every other
/// subscription to the channel on this gateway (see [`Session::handle`]'s `intern`), so a
/// subscription holds no copy of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Channel {
    group: Arc<str>,
    /// Where the channel's name starts in `group`.
    at: u32,
}

impl Channel {
    /// Channel `name` of app `app_id`, its group's name from `intern`.
    pub fn new(app_id: &str, name: &str, intern: &dyn Fn(&str) -> Arc<str>) -> Self {
        let group = intern(&super::channel_group(app_id, name));
        let at = u32::try_from(group.len() - name.len()).expect("a channel name's length fits");
        Self { group, at }
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.group[self.at as usize..]
    }

    /// Its group's name.
    pub fn group(&self) -> &Arc<str> {
        &self.group
    }
}

/// A subscribed channel: 40 bytes, the first one inline in the session.
#[derive(Debug)]
struct Sub {
    channel: Channel,
    /// Presence channels: the user this connection is a member as.
    user_id: Option<Box<str>>,
}

/// One Pusher connection's state.
#[derive(Debug)]
pub(crate) struct Session {
    socket_id: SocketId,
    /// Most connections hold one subscription: no allocation for it.
    subs: Few<Sub>,
    /// The signed-in user.
    user: Option<Box<str>>,
    /// Created at the first client event.
    bucket: Option<Box<TokenBucket>>,
}

fn error(code: Option<ErrorCode>, message: &str) -> Action {
    Action::Send(ServerFrame::Error { code, message }.encode())
}

impl Session {
    /// The session of the connection with this socket id.
    pub fn new(socket_id: SocketId) -> Self {
        Self { socket_id, subs: Few::None, user: None, bucket: None }
    }

    /// The first frame: `pusher:connection_established`.
    pub fn established(&self, activity_timeout_secs: u32) -> String {
        ServerFrame::ConnectionEstablished { socket_id: self.socket_id, activity_timeout: activity_timeout_secs }
            .encode()
    }

    /// What to do for one frame from the client (or the reason it did not decode). `intern`
    /// gives the shared copy of a group's name (the routing index's, when the group is there).
    pub fn handle(
        &mut self,
        frame: Result<ClientFrame, FrameError>,
        app: &PusherApp,
        limits: &Limits,
        now: Instant,
        intern: &dyn Fn(&str) -> Arc<str>,
    ) -> Vec<Action> {
        match frame {
            Ok(ClientFrame::Ping) => vec![Action::Send(ServerFrame::Pong.encode())],
            Ok(ClientFrame::Pong) => Vec::new(),
            Ok(ClientFrame::Ignored { .. }) => vec![Action::Count(Refusal::Ignored)],
            Ok(ClientFrame::Subscribe(s)) => self.subscribe(s, app, limits, intern),
            Ok(ClientFrame::Unsubscribe { channel }) => self.unsubscribe(channel.as_str()),
            Ok(ClientFrame::Signin { auth, user_data }) => self.signin(&auth, &user_data, app, limits),
            Ok(ClientFrame::ClientEvent(ev)) => {
                let mut actions = self.client_event(ev, app, now);
                if app.workers && matches!(actions.first(), Some(Action::Publish { .. })) {
                    actions.push(Action::ToWorker);
                }
                actions
            }
            Err(FrameError::NotClientEvent(_)) if app.workers => vec![Action::ToWorker],
            Err(e) => vec![error(None, &e.to_string()), Action::Count(Refusal::BadFrame)],
        }
    }

    fn subscribed(&self, channel: &str) -> Option<&Sub> {
        self.subs.iter().find(|s| s.channel.name() == channel)
    }

    fn add(&mut self, sub: Sub) {
        self.subs.push(sub);
    }

    fn subscribe(
        &mut self,
        s: Subscribe,
        app: &PusherApp,
        limits: &Limits,
        intern: &dyn Fn(&str) -> Arc<str>,
    ) -> Vec<Action> {
        let channel = s.channel.as_str();
        let kind = s.channel.kind();
        let existing = self.subscribed(channel).map(|sub| (sub.channel.clone(), sub.user_id.clone()));
        if existing.is_none() && self.subs.len() >= limits.max_subscriptions {
            let message = format!(
                "Subscription to {channel:?} refused: this connection has {} subscriptions, the most allowed",
                limits.max_subscriptions
            );
            return vec![error(None, &message), Action::Count(Refusal::TooManySubscriptions)];
        }
        if kind == ChannelKind::ServerToUser {
            let owner = s.channel.server_to_user();
            if owner.is_none() || owner != self.user.as_deref() {
                let message =
                    format!("Subscription to {channel:?} refused: the connection is not signed in as its user");
                return vec![error(None, &message), Action::Count(Refusal::NotSignedIn)];
            }
        }
        if matches!(kind, ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence) {
            let socket_id = self.socket_id.to_string();
            let checked = verify_channel_auth(
                &app.key,
                &app.secret,
                &socket_id,
                channel,
                s.channel_data.as_deref(),
                s.auth.as_deref(),
            );
            if let Err(e) = checked {
                return vec![error(None, &e.to_string()), Action::Count(Refusal::BadAuth)];
            }
        }
        if kind != ChannelKind::Presence {
            let joined = match existing {
                Some((joined, _)) => joined,
                None => {
                    let joined = Channel::new(&app.id, channel, intern);
                    self.add(Sub { channel: joined.clone(), user_id: None });
                    joined
                }
            };
            return vec![Action::Join(joined), Action::Send(ServerFrame::SubscriptionSucceeded { channel }.encode())];
        }
        let Some(data) = s.channel_data.as_deref() else {
            let message = format!("Subscription to {channel:?} refused: presence channels need channel_data");
            return vec![error(None, &message), Action::Count(Refusal::BadAuth)];
        };
        let member = match parse_channel_data(data, limits) {
            Ok(m) => m,
            Err(e) => return vec![error(None, &e.to_string()), Action::Count(Refusal::BadAuth)],
        };
        match existing {
            Some((_, Some(user))) if *user != *member.user_id => {
                let message =
                    format!("Subscription to {channel:?} refused: already subscribed as another user ({user:?})");
                return vec![error(None, &message), Action::Count(Refusal::BadAuth)];
            }
            Some(_) => {}
            None => {
                let joined = Channel::new(&app.id, channel, intern);
                self.add(Sub { channel: joined, user_id: Some(member.user_id.as_str().into()) });
            }
        }
        vec![Action::PresenceJoin { channel: channel.to_string(), member: MemberData(member) }]
    }

    /// The task could not add the connection to a presence channel (full): forget it.
    pub fn refused(&mut self, channel: &str) {
        self.subs.retain(|s| s.channel.name() != channel);
    }

    fn unsubscribe(&mut self, channel: &str) -> Vec<Action> {
        let Some(at) = self.subs.iter().position(|s| s.channel.name() == channel) else { return Vec::new() };
        let sub = self.subs.swap_remove(at);
        // The member leaves before the channel does: `member_removed` comes before
        // `channel_vacated`.
        let mut actions = Vec::with_capacity(2);
        if let Some(user_id) = sub.user_id {
            actions.push(Action::PresenceLeave { channel: sub.channel.clone(), user_id: user_id.into() });
        }
        actions.push(Action::Leave(sub.channel));
        actions
    }

    fn signin(&mut self, auth: &str, user_data: &str, app: &PusherApp, limits: &Limits) -> Vec<Action> {
        let refuse = |message: String| {
            vec![
                error(Some(ErrorCode::Unauthorized), &message),
                Action::Count(Refusal::BadSignin),
                Action::Close(ErrorCode::Unauthorized, "Invalid signature".into()),
            ]
        };
        if let Err(e) = verify_user_auth(&app.key, &app.secret, &self.socket_id.to_string(), user_data, auth) {
            return refuse(e.to_string());
        }
        let user = match parse_user_data(user_data, limits) {
            Ok(u) => u,
            Err(e) => return refuse(e.to_string()),
        };
        let mut actions =
            vec![Action::SignedIn(user.id.clone()), Action::Send(ServerFrame::SigninSuccess { user_data }.encode())];
        if user.watchlist_truncated {
            actions
                .push(error(Some(ErrorCode::WatchlistLimitExceeded), ErrorCode::WatchlistLimitExceeded.description()));
        }
        self.user = Some(user.id.into());
        actions
    }

    fn client_event(&mut self, ev: ClientEvent, app: &PusherApp, now: Instant) -> Vec<Action> {
        let channel = ev.channel.as_str();
        if !app.client_events {
            let message = format!("Client event rejected - client events are not enabled for this app: {:?}", ev.event);
            return vec![error(None, &message), Action::Count(Refusal::ClientEventRefused)];
        }
        let Some(sub) = self.subscribed(channel) else {
            let message = format!("Client event rejected - not subscribed to channel {channel:?}");
            return vec![error(None, &message), Action::Count(Refusal::ClientEventRefused)];
        };
        let user_id = sub.user_id.as_deref().map(str::to_string);
        let rate = app.client_event_rate;
        let bucket = self.bucket.get_or_insert_with(|| Box::new(TokenBucket::new(rate, rate, now)));
        if !bucket.try_take(now) {
            return vec![
                error(Some(ErrorCode::ClientEventRateLimit), ErrorCode::ClientEventRateLimit.description()),
                Action::Count(Refusal::RateLimited),
            ];
        }
        let frame = ServerFrame::Event {
            channel,
            event: &ev.event,
            data: ev.data.as_deref().map(EventData::Json),
            user_id: user_id.as_deref(),
        }
        .encode();
        let mut actions = vec![Action::Publish { channel: channel.to_string(), frame }];
        if app.wants_webhook("client_event") {
            // Pusher's `data` is a string: a client's string as it is, anything else as its JSON.
            let data = match ev.data.as_deref() {
                Some(raw) => serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string()),
                None => String::new(),
            };
            actions.push(Action::Webhook(WebhookEvent::ClientEvent {
                channel: channel.to_string(),
                event: ev.event,
                data,
                socket_id: self.socket_id.to_string(),
                user_id,
            }));
        }
        actions
    }

    /// What to do when the connection ends: leave every channel, presence members first (the
    /// groups go with the connection anyway; the leaves keep the occupancy counts).
    pub fn closing(&mut self) -> Vec<Action> {
        let mut actions = Vec::with_capacity(self.subs.len());
        for s in self.subs.take() {
            if let Some(user_id) = s.user_id {
                actions.push(Action::PresenceLeave { channel: s.channel.clone(), user_id: user_id.into() });
            }
            actions.push(Action::Leave(s.channel));
        }
        actions
    }

    /// The signed-in user, if any.
    #[cfg(test)]
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the connection signed in.
    pub fn signed_in(&self) -> bool {
        self.user.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gw_pusher_protocol::auth::{channel_auth, user_auth};

    use super::*;

    const SOCKET: SocketId = SocketId::new(1234, 5);

    fn app() -> PusherApp {
        PusherApp::new("1", "key", "secret")
    }

    fn run(s: &mut Session, text: &str, now: Instant) -> Vec<Action> {
        let limits = Limits::default();
        s.handle(ClientFrame::decode(text, &limits), &app(), &limits, now, &fresh)
    }

    /// A group's name, not shared.
    fn fresh(group: &str) -> Arc<str> {
        Arc::from(group)
    }

    /// The test app's channel `name`.
    fn ch(name: &str) -> Channel {
        Channel::new("1", name, &fresh)
    }

    fn subscribe(channel: &str, auth: Option<&str>, data: Option<&str>) -> String {
        serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": data}})
            .to_string()
    }

    fn sent(actions: &[Action]) -> Vec<serde_json::Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(t) => Some(serde_json::from_str(t).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn connection_established_carries_the_socket_id_and_activity_timeout() {
        let frame: serde_json::Value = serde_json::from_str(&Session::new(SOCKET).established(120)).unwrap();
        assert_eq!(frame["event"], "pusher:connection_established");
        let data: serde_json::Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, serde_json::json!({"socket_id": "1234.5", "activity_timeout": 120}));
    }

    #[test]
    fn ping_is_answered_with_pong_and_unknown_pusher_events_are_counted() {
        let mut s = Session::new(SOCKET);
        let now = Instant::now();
        assert_eq!(sent(&run(&mut s, r#"{"event":"pusher:ping","data":{}}"#, now))[0]["event"], "pusher:pong");
        assert!(run(&mut s, r#"{"event":"pusher:pong","data":{}}"#, now).is_empty());
        assert_eq!(run(&mut s, r#"{"event":"pusher:whatever","data":{}}"#, now), vec![Action::Count(Refusal::Ignored)]);
    }

    #[test]
    fn garbage_gets_an_error_without_code_and_the_connection_stays() {
        let mut s = Session::new(SOCKET);
        let actions = run(&mut s, "not json", Instant::now());
        let frames = sent(&actions);
        assert_eq!(frames[0]["event"], "pusher:error");
        assert_eq!(frames[0]["data"]["code"], serde_json::Value::Null);
        assert!(actions.contains(&Action::Count(Refusal::BadFrame)));
        assert!(!actions.iter().any(|a| matches!(a, Action::Close(..))));
    }

    #[test]
    fn public_subscribe_joins_and_succeeds_and_twice_is_answered_again() {
        let mut s = Session::new(SOCKET);
        for _ in 0..2 {
            let actions = run(&mut s, &subscribe("news", None, None), Instant::now());
            assert_eq!(actions[0], Action::Join(ch("news")));
            let frames = sent(&actions);
            assert_eq!(frames[0]["event"], "pusher_internal:subscription_succeeded");
            assert_eq!(frames[0]["channel"], "news");
        }
        assert_eq!(s.subs.len(), 1);
        // pusher-js sends `"auth": ""` for a public channel: ignored.
        let actions =
            run(&mut s, r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"other"}}"#, Instant::now());
        assert_eq!(actions[0], Action::Join(ch("other")));
        s.refused("other");
        assert_eq!(
            run(&mut s, r#"{"event":"pusher:unsubscribe","data":{"channel":"news"}}"#, Instant::now()),
            vec![Action::Leave(ch("news"))]
        );
        assert!(run(&mut s, r#"{"event":"pusher:unsubscribe","data":{"channel":"news"}}"#, Instant::now()).is_empty());
    }

    #[test]
    fn a_subscription_shares_its_channel_s_name_and_is_held_inline() {
        let shared: Arc<str> = Arc::from("pusher:1:news");
        let intern = |group: &str| if group == &*shared { shared.clone() } else { Arc::from(group) };
        let limits = Limits::default();
        let (mut a, mut b) = (Session::new(SOCKET), Session::new(SocketId::new(1234, 6)));
        for s in [&mut a, &mut b] {
            let frame = ClientFrame::decode(&subscribe("news", None, None), &limits);
            let actions = s.handle(frame, &app(), &limits, Instant::now(), &intern);
            assert_eq!(actions[0], Action::Join(ch("news")));
            assert!(Arc::ptr_eq(s.subs.as_slice()[0].channel.group(), &shared), "no copy of the name");
            assert_eq!(s.subs.as_slice()[0].channel.name(), "news");
            assert!(matches!(s.subs, Few::One(_)), "held inline");
        }
        assert_eq!(Arc::strong_count(&shared), 3);
    }

    #[test]
    fn private_subscribe_checks_the_signature_and_a_bad_one_is_an_error_without_code() {
        let mut s = Session::new(SOCKET);
        let good = channel_auth("key", "secret", "1234.5", "private-a", None);
        let actions = run(&mut s, &subscribe("private-a", Some(&good), None), Instant::now());
        assert_eq!(actions[0], Action::Join(ch("private-a")));
        let other_socket = channel_auth("key", "secret", "1234.6", "private-b", None);
        for bad in [None, Some("key:00"), Some(other_socket.as_str()), Some("nokey")] {
            let actions = run(&mut s, &subscribe("private-b", bad, None), Instant::now());
            let frames = sent(&actions);
            assert_eq!(frames[0]["event"], "pusher:error", "{bad:?}");
            assert_eq!(frames[0]["data"]["code"], serde_json::Value::Null);
            assert!(actions.contains(&Action::Count(Refusal::BadAuth)));
            assert!(!actions.iter().any(|a| matches!(a, Action::Join(_) | Action::Close(..))));
        }
        let wrong_secret = channel_auth("key", "another", "1234.5", "private-encrypted-x", None);
        let actions = run(&mut s, &subscribe("private-encrypted-x", Some(&wrong_secret), None), Instant::now());
        assert!(actions.contains(&Action::Count(Refusal::BadAuth)));
    }

    #[test]
    fn presence_subscribe_needs_signed_channel_data_and_asks_the_task_to_join() {
        let mut s = Session::new(SOCKET);
        let data = r#"{"user_id":"u1","user_info":{"name":"Ann"}}"#;
        let auth = channel_auth("key", "secret", "1234.5", "presence-room", Some(data));
        let actions = run(&mut s, &subscribe("presence-room", Some(&auth), Some(data)), Instant::now());
        let [Action::PresenceJoin { channel, member }] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!((channel.as_str(), member.0.user_id.as_str()), ("presence-room", "u1"));
        // Without channel_data the signature cannot match what the SDKs sign.
        let no_data = channel_auth("key", "secret", "1234.5", "presence-other", None);
        let actions = run(&mut s, &subscribe("presence-other", Some(&no_data), None), Instant::now());
        assert!(actions.contains(&Action::Count(Refusal::BadAuth)), "{actions:?}");
        // Not JSON, but signed.
        let auth = channel_auth("key", "secret", "1234.5", "presence-x", Some("nope"));
        let actions = run(&mut s, &subscribe("presence-x", Some(&auth), Some("nope")), Instant::now());
        assert!(actions.contains(&Action::Count(Refusal::BadAuth)), "{actions:?}");
        // A full channel: the task refuses, the session forgets it; leaving then does nothing.
        s.refused("presence-room");
        assert!(s.closing().is_empty());
    }

    #[test]
    fn leaving_and_closing_leave_presence_channels_once() {
        let mut s = Session::new(SOCKET);
        let data = r#"{"user_id":7}"#;
        for channel in ["presence-a", "presence-b"] {
            let auth = channel_auth("key", "secret", "1234.5", channel, Some(data));
            run(&mut s, &subscribe(channel, Some(&auth), Some(data)), Instant::now());
        }
        let actions = run(&mut s, r#"{"event":"pusher:unsubscribe","data":{"channel":"presence-a"}}"#, Instant::now());
        assert_eq!(
            actions,
            vec![
                Action::PresenceLeave { channel: ch("presence-a"), user_id: "7".into() },
                Action::Leave(ch("presence-a")),
            ]
        );
        assert_eq!(
            s.closing(),
            vec![
                Action::PresenceLeave { channel: ch("presence-b"), user_id: "7".into() },
                Action::Leave(ch("presence-b"))
            ]
        );
        assert!(s.closing().is_empty());
    }

    #[test]
    fn subscriptions_are_capped() {
        let mut s = Session::new(SOCKET);
        let max = Limits::default().max_subscriptions;
        for i in 0..max {
            assert_eq!(
                run(&mut s, &subscribe(&format!("c{i}"), None, None), Instant::now())[0],
                Action::Join(ch(&format!("c{i}")))
            );
        }
        let actions = run(&mut s, &subscribe("one-more", None, None), Instant::now());
        assert!(actions.contains(&Action::Count(Refusal::TooManySubscriptions)));
        // Subscribing again to one already held is still fine.
        assert_eq!(run(&mut s, &subscribe("c0", None, None), Instant::now())[0], Action::Join(ch("c0")));
    }

    #[test]
    fn signin_binds_the_user_and_a_bad_signature_closes_with_4009() {
        let mut s = Session::new(SOCKET);
        let user_data = r#"{"id":"ann","user_info":{"name":"Ann"}}"#;
        let auth = user_auth("key", "secret", "1234.5", user_data);
        let text =
            serde_json::json!({"event":"pusher:signin","data":{"auth": auth, "user_data": user_data}}).to_string();
        let actions = run(&mut s, &text, Instant::now());
        assert_eq!(actions[0], Action::SignedIn("ann".into()));
        assert_eq!(sent(&actions)[0]["event"], "pusher:signin_success");
        assert_eq!(s.user(), Some("ann"));
        // Now its own server-to-user channel is allowed, another user's is not.
        assert_eq!(
            run(&mut s, &subscribe("#server-to-user-ann", None, None), Instant::now())[0],
            Action::Join(ch("#server-to-user-ann"))
        );
        let actions = run(&mut s, &subscribe("#server-to-user-bob", None, None), Instant::now());
        assert!(actions.contains(&Action::Count(Refusal::NotSignedIn)));

        let mut s = Session::new(SOCKET);
        let text =
            serde_json::json!({"event":"pusher:signin","data":{"auth": "key:bad", "user_data": user_data}}).to_string();
        let actions = run(&mut s, &text, Instant::now());
        assert_eq!(sent(&actions)[0]["data"]["code"], 4009);
        assert!(matches!(actions.last(), Some(Action::Close(ErrorCode::Unauthorized, _))));
        assert_eq!(s.user(), None);
    }

    fn client_event(channel: &str) -> String {
        serde_json::json!({"event":"client-typing","channel": channel,"data":{"who":"me"}}).to_string()
    }

    #[test]
    fn client_events_need_a_subscription_and_are_rate_limited_with_4301() {
        let mut s = Session::new(SOCKET);
        let start = Instant::now();
        let actions = run(&mut s, &client_event("private-a"), start);
        assert!(actions.contains(&Action::Count(Refusal::ClientEventRefused)), "not subscribed");
        let auth = channel_auth("key", "secret", "1234.5", "private-a", None);
        run(&mut s, &subscribe("private-a", Some(&auth), None), start);
        for _ in 0..10 {
            let actions = run(&mut s, &client_event("private-a"), start);
            let [Action::Publish { channel, frame }] = actions.as_slice() else { panic!("{actions:?}") };
            assert_eq!(channel, "private-a");
            let frame: serde_json::Value = serde_json::from_str(frame).unwrap();
            assert_eq!(frame, serde_json::json!({"event":"client-typing","channel":"private-a","data":{"who":"me"}}));
        }
        let actions = run(&mut s, &client_event("private-a"), start);
        assert_eq!(sent(&actions)[0]["data"]["code"], 4301);
        assert!(actions.contains(&Action::Count(Refusal::RateLimited)));
        assert!(!actions.iter().any(|a| matches!(a, Action::Close(..) | Action::Publish { .. })));
        // A tenth of a second later one more token is there.
        let later = start + Duration::from_millis(100);
        assert!(matches!(run(&mut s, &client_event("private-a"), later).as_slice(), [Action::Publish { .. }]));
    }

    #[test]
    fn client_events_on_presence_carry_the_user_id_and_apps_may_forbid_them() {
        let mut s = Session::new(SOCKET);
        let data = r#"{"user_id":"u9"}"#;
        let auth = channel_auth("key", "secret", "1234.5", "presence-p", Some(data));
        run(&mut s, &subscribe("presence-p", Some(&auth), Some(data)), Instant::now());
        let actions = run(&mut s, &client_event("presence-p"), Instant::now());
        let [Action::Publish { frame, .. }] = actions.as_slice() else { panic!("{actions:?}") };
        assert!(frame.contains(r#""user_id":"u9""#), "{frame}");
        let mut no_events = app();
        no_events.client_events = false;
        let limits = Limits::default();
        let actions = s.handle(
            ClientFrame::decode(&client_event("presence-p"), &limits),
            &no_events,
            &limits,
            Instant::now(),
            &fresh,
        );
        assert!(actions.contains(&Action::Count(Refusal::ClientEventRefused)));
        // On a public channel the decoder refuses it already.
        run(&mut s, &subscribe("pub", None, None), Instant::now());
        assert!(run(&mut s, &client_event("pub"), Instant::now()).contains(&Action::Count(Refusal::BadFrame)));
    }

    #[test]
    fn a_workers_app_hands_delivered_client_events_and_its_own_events_to_its_worker() {
        let mut workers = app();
        workers.workers = true;
        let limits = Limits::default();
        let mut s = Session::new(SOCKET);
        let run_app = |s: &mut Session, text: &str, app: &PusherApp| {
            s.handle(ClientFrame::decode(text, &limits), app, &limits, Instant::now(), &fresh)
        };
        let own = r#"{"event":"order-placed","data":{"id":7}}"#;
        assert_eq!(run_app(&mut s, own, &workers), vec![Action::ToWorker], "no error: the worker's");
        assert!(run_app(&mut s, own, &app()).contains(&Action::Count(Refusal::BadFrame)), "refused without workers");
        // A client event on a channel not subscribed is refused, and the worker does not see it.
        assert!(!run_app(&mut s, &client_event("private-a"), &workers).contains(&Action::ToWorker));
        let auth = channel_auth("key", "secret", "1234.5", "private-a", None);
        run_app(&mut s, &subscribe("private-a", Some(&auth), None), &workers);
        let actions = run_app(&mut s, &client_event("private-a"), &workers);
        assert!(matches!(actions.as_slice(), [Action::Publish { .. }, Action::ToWorker]), "{actions:?}");
        // Its own frames (ping, subscribe) stay the gateway's.
        assert!(!run_app(&mut s, r#"{"event":"pusher:ping","data":{}}"#, &workers).contains(&Action::ToWorker));
        assert!(!run_app(&mut s, &client_event("private-a"), &app()).contains(&Action::ToWorker));
    }

    #[test]
    fn client_events_go_to_a_client_event_webhook_with_data_as_a_string() {
        let mut hooked = app();
        hooked.webhooks = vec![gw_config::PusherWebhook::new("http://127.0.0.1:1/")];
        let limits = Limits::default();
        let mut s = Session::new(SOCKET);
        let data = r#"{"user_id":"u9"}"#;
        let auth = channel_auth("key", "secret", "1234.5", "presence-p", Some(data));
        run(&mut s, &subscribe("presence-p", Some(&auth), Some(data)), Instant::now());
        let text = serde_json::json!({"event":"client-a","channel":"presence-p","data":{"x":[1, 2]}}).to_string();
        let actions = s.handle(ClientFrame::decode(&text, &limits), &hooked, &limits, Instant::now(), &fresh);
        assert_eq!(
            actions.last(),
            Some(&Action::Webhook(WebhookEvent::ClientEvent {
                channel: "presence-p".into(),
                event: "client-a".into(),
                data: r#"{"x":[1,2]}"#.into(),
                socket_id: "1234.5".into(),
                user_id: Some("u9".into()),
            }))
        );
        let text = serde_json::json!({"event":"client-b","channel":"presence-p","data":"plain \"text\""}).to_string();
        let actions = s.handle(ClientFrame::decode(&text, &limits), &hooked, &limits, Instant::now(), &fresh);
        let Some(Action::Webhook(WebhookEvent::ClientEvent { data, .. })) = actions.last() else {
            panic!("{actions:?}")
        };
        assert_eq!(data, "plain \"text\"", "a string is sent as the string, not its JSON");
        hooked.webhooks[0].events = vec!["channel_occupied".into()];
        let actions = s.handle(ClientFrame::decode(&text, &limits), &hooked, &limits, Instant::now(), &fresh);
        assert!(!actions.iter().any(|a| matches!(a, Action::Webhook(_))), "not asked for");
    }
}
