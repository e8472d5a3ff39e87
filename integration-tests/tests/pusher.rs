//! The Pusher protocol on a gateway listener, driven by a raw Pusher client over a real
//! WebSocket (tokio-tungstenite speaking `ClientFrame`s): refusals on connect, subscriptions of
//! every kind, bad signatures, client events, presence member events, silence.

use std::time::Duration;

use gw_integration_tests::pusher::{
    APP_ID, PusherClient, app_url, data_of, expect_refused, pusher_gateway, wait_for_peers,
};
use gw_integration_tests::{GatewayHandle, RegisterHandle, eventually};
use serde_json::json;

const SECRET: &str = "pusher-cluster-secret";
/// Long enough for a frame that should not come to show up on loopback.
const QUIET: Duration = Duration::from_millis(300);

async fn gateway() -> (RegisterHandle, GatewayHandle) {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await;
    (reg, gw)
}

#[tokio::test]
async fn refused_connections_get_the_code_in_an_error_and_the_close() {
    let (_reg, gw) = gateway().await;
    let base = gw.ws_url.clone();
    expect_refused(&format!("{base}app/no-such-key?protocol=7"), 4001).await;
    expect_refused(&format!("{base}not/pusher"), 4005).await;
    expect_refused(&format!("{base}app/app-key?protocol=8"), 4007).await;
    expect_refused(&format!("{base}app/app-key?protocol=seven"), 4006).await;
    assert_eq!(gw.metric("connections"), 0, "no refused connection was registered");
    // The right URL is served, with the socket id made of the client id's two numbers.
    let c = PusherClient::connect(&app_url(&gw)).await;
    let (instance, local) = c.socket_id.split_once('.').unwrap();
    assert!(instance.parse::<u64>().is_ok() && local.parse::<u64>().is_ok(), "{}", c.socket_id);
    assert_eq!(gw.metric("connections"), 1);
}

#[tokio::test]
async fn origins_and_the_app_connection_cap_are_enforced() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = pusher_gateway(
        &[reg.addr],
        SECRET,
        |app| {
            app.max_connections = 1;
            app.allowed_origins = vec!["https://ok.example".into()];
        },
        |_| {},
    )
    .await;
    // tungstenite sends no Origin: refused with 4009.
    expect_refused(&app_url(&gw), 4009).await;
    let request = |origin: &str| {
        let mut r =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(app_url(&gw)).unwrap();
        r.headers_mut().insert("Origin", origin.parse().unwrap());
        r
    };
    let mut first = gw_integration_tests::ws::WsClient::connect_request(request("https://ok.example")).await;
    assert_eq!(first.recv_json().await["event"], "pusher:connection_established");
    let mut second = gw_integration_tests::ws::WsClient::connect_request(request("https://ok.example")).await;
    let error = second.recv_json().await;
    assert_eq!(error["data"]["code"], 4004, "{error}");
}

#[tokio::test]
async fn public_private_and_encrypted_subscriptions_and_a_bad_signature_keeps_the_connection() {
    let (reg, gw) = gateway().await;
    let cluster = gw_integration_tests::gateway_client(&[reg.addr], SECRET, 1).await;
    let members = |group: String| {
        let cluster = &cluster;
        async move { cluster.client_count_by_group(&group).await.unwrap().complete().unwrap() }
    };
    let mut c = PusherClient::connect(&app_url(&gw)).await;
    c.subscribe("news", None, None).await;
    let ok = c.expect("pusher_internal:subscription_succeeded").await;
    assert_eq!(ok["channel"], "news");
    c.subscribe_signed("private-orders", None).await;
    assert_eq!(c.expect("pusher_internal:subscription_succeeded").await["channel"], "private-orders");
    c.subscribe_signed("private-encrypted-secrets", None).await;
    assert_eq!(c.expect("pusher_internal:subscription_succeeded").await["channel"], "private-encrypted-secrets");
    // The channels are the groups `pusher:{app}:{channel}` on the gateway.
    let group = format!("pusher:{APP_ID}:private-orders");
    assert_eq!(members(group.clone()).await, 1);

    // A signature made for another socket: an error without a code, and the connection stays.
    let auth = gw_pusher_protocol::auth::channel_auth(
        gw_integration_tests::pusher::APP_KEY,
        gw_integration_tests::pusher::APP_SECRET,
        "1.2",
        "private-other",
        None,
    );
    c.subscribe("private-other", Some(auth), None).await;
    let error = c.expect("pusher:error").await;
    assert_eq!(error["data"]["code"], serde_json::Value::Null, "{error}");
    assert!(error["data"]["message"].as_str().unwrap().contains("Invalid signature"), "{error}");
    c.subscribe("private-nosig", None, None).await;
    assert_eq!(c.expect("pusher:error").await["data"]["code"], serde_json::Value::Null);
    c.expect_alive().await;
    // Garbage is answered the same way.
    c.ws.send("{not json").await;
    assert_eq!(c.expect("pusher:error").await["data"]["code"], serde_json::Value::Null);
    c.expect_alive().await;
    assert_eq!(members(format!("pusher:{APP_ID}:private-other")).await, 0);

    // Unsubscribing leaves the group.
    c.send(&gw_pusher_protocol::ClientFrame::Unsubscribe {
        channel: gw_pusher_protocol::ChannelName::parse("private-orders", &Default::default()).unwrap(),
    })
    .await;
    c.expect_alive().await;
    assert_eq!(members(group).await, 0);
}

#[tokio::test]
async fn client_events_reach_the_others_never_the_sender_and_are_rate_limited() {
    let (_reg, gw) = gateway().await;
    let mut a = PusherClient::connect(&app_url(&gw)).await;
    let mut b = PusherClient::connect(&app_url(&gw)).await;
    for c in [&mut a, &mut b] {
        c.subscribe_signed("private-chat", None).await;
        c.expect("pusher_internal:subscription_succeeded").await;
    }
    a.client_event("private-chat", "client-typing", r#"{"who":"a"}"#).await;
    let got = b.expect("client-typing").await;
    assert_eq!(got, json!({"event": "client-typing", "channel": "private-chat", "data": {"who": "a"}}));
    a.expect_silence(QUIET).await;

    // The default limit is 10 a second with a burst of 10: the 10 left of the first second
    // pass, and some later one gets 4301 while the connection stays.
    let mut limited = false;
    for i in 0..30 {
        a.client_event("private-chat", "client-n", &i.to_string()).await;
    }
    a.expect_alive_or_limited(&mut limited).await;
    assert!(limited, "30 events at once: some over the limit");
    a.expect_alive().await;
    let mut delivered = 0;
    while let Some(gw_integration_tests::ws::Received::Text(_)) = b.ws.next(QUIET).await {
        delivered += 1;
    }
    assert!((9..30).contains(&delivered), "{delivered} of 30 delivered");
}

trait Limited {
    async fn expect_alive_or_limited(&mut self, limited: &mut bool);
}

impl Limited for PusherClient {
    /// Reads the answers to a burst: 4301 errors (counted in `limited`) until the pong of a
    /// ping sent after the burst.
    async fn expect_alive_or_limited(&mut self, limited: &mut bool) {
        self.send(&gw_pusher_protocol::ClientFrame::Ping).await;
        loop {
            let frame = self.recv().await;
            match frame["event"].as_str() {
                Some("pusher:pong") => return,
                Some("pusher:error") => {
                    assert_eq!(frame["data"]["code"], 4301, "{frame}");
                    *limited = true;
                }
                _ => panic!("unexpected {frame}"),
            }
        }
    }
}

#[tokio::test]
async fn presence_members_are_listed_and_a_user_with_two_connections_is_added_and_removed_once() {
    let (_reg, gw) = gateway().await;
    let url = app_url(&gw);
    let ann = r#"{"user_id":"ann","user_info":{"name":"Ann"}}"#;
    let bob = r#"{"user_id":"bob","user_info":{"name":"Bob"}}"#;
    let mut a = PusherClient::connect(&url).await;
    a.subscribe_signed("presence-room", Some(ann)).await;
    let list = data_of(&a.expect("pusher_internal:subscription_succeeded").await);
    assert_eq!(list["presence"]["ids"], json!(["ann"]));
    assert_eq!(list["presence"]["count"], 1);

    let mut b1 = PusherClient::connect(&url).await;
    b1.subscribe_signed("presence-room", Some(bob)).await;
    let list = data_of(&b1.expect("pusher_internal:subscription_succeeded").await);
    assert_eq!(list["presence"]["ids"], json!(["ann", "bob"]));
    assert_eq!(list["presence"]["hash"]["bob"], json!({"name": "Bob"}));
    let added = a.expect("pusher_internal:member_added").await;
    assert_eq!(data_of(&added), json!({"user_id": "bob", "user_info": {"name": "Bob"}}));

    // Bob's second connection: listed, but no member_added for anyone.
    let mut b2 = PusherClient::connect(&url).await;
    b2.subscribe_signed("presence-room", Some(bob)).await;
    assert_eq!(data_of(&b2.expect("pusher_internal:subscription_succeeded").await)["presence"]["count"], 2);
    a.expect_silence(QUIET).await;

    // Client events on presence carry the sender's user id.
    b2.client_event("presence-room", "client-hi", "{}").await;
    assert_eq!(a.expect("client-hi").await["user_id"], "bob");
    assert_eq!(b1.expect("client-hi").await["user_id"], "bob");

    // The first of Bob's connections goes: Bob is still there.
    b1.ws.close().await;
    a.expect_silence(QUIET).await;
    // The last one goes: member_removed, once.
    b2.ws.close().await;
    let removed = a.expect("pusher_internal:member_removed").await;
    assert_eq!(data_of(&removed), json!({"user_id": "bob"}));
    a.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_full_presence_channel_refuses_new_users_with_an_error_without_code() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = pusher_gateway(&[reg.addr], SECRET, |app| app.max_presence_members = 1, |_| {}).await;
    let mut a = PusherClient::connect(&app_url(&gw)).await;
    a.subscribe_signed("presence-small", Some(r#"{"user_id":1}"#)).await;
    a.expect("pusher_internal:subscription_succeeded").await;
    let mut b = PusherClient::connect(&app_url(&gw)).await;
    b.subscribe_signed("presence-small", Some(r#"{"user_id":2}"#)).await;
    assert_eq!(b.expect("pusher:error").await["data"]["code"], serde_json::Value::Null);
    b.expect_alive().await;
    a.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_silent_client_is_closed_with_4201() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = pusher_gateway(
        &[reg.addr],
        SECRET,
        |_| {},
        |c| {
            c.ping_interval = Duration::from_millis(200);
            c.ping_not_response_limit = 2;
            // A Pusher server's own ping, which a silent client does not answer.
            c.ping_data = r#"{"event":"pusher:ping","data":{}}"#.into();
        },
    )
    .await;
    let mut c = PusherClient::connect(&app_url(&gw)).await;
    let close = loop {
        match c.ws.next(Duration::from_secs(10)).await {
            Some(gw_integration_tests::ws::Received::Text(t)) => assert!(t.contains("pusher:ping"), "{t}"),
            Some(gw_integration_tests::ws::Received::Closed(close)) => break close,
            other => panic!("expected pings then a close, got {other:?}"),
        }
    };
    assert_eq!(close.map(|c| c.0), Some(4201));
    eventually(Duration::from_secs(5), "the silent client is gone", || async { gw.metric("connections") == 0 }).await;
}

#[tokio::test]
async fn with_user_authentication_a_connection_must_sign_in_in_time() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = pusher_gateway(
        &[reg.addr],
        SECRET,
        |app| {
            app.user_authentication = true;
            app.signin_timeout = Duration::from_millis(300);
        },
        |_| {},
    )
    .await;
    let mut silent = PusherClient::connect(&app_url(&gw)).await;
    let mut signed = PusherClient::connect(&app_url(&gw)).await;
    let user_data = r#"{"id":"ann"}"#;
    let auth = gw_pusher_protocol::auth::user_auth(
        gw_integration_tests::pusher::APP_KEY,
        gw_integration_tests::pusher::APP_SECRET,
        &signed.socket_id,
        user_data,
    );
    signed.send(&gw_pusher_protocol::ClientFrame::Signin { auth, user_data: user_data.into() }).await;
    signed.expect("pusher:signin_success").await;

    let error = silent.expect("pusher:error").await;
    assert_eq!(error["data"]["code"], 4009, "{error}");
    assert_eq!(silent.expect_close().await.map(|c| c.0), Some(4009));
    // The signed-in one (connected just after the silent one) outlives its own timeout too.
    signed.expect_silence(Duration::from_millis(300)).await;
    signed.expect_alive().await;

    // A wrong sign-in signature is 4009 at once.
    let mut wrong = PusherClient::connect(&app_url(&gw)).await;
    wrong
        .send(&gw_pusher_protocol::ClientFrame::Signin { auth: "app-key:00".into(), user_data: user_data.into() })
        .await;
    assert_eq!(wrong.expect("pusher:error").await["data"]["code"], 4009);
    assert_eq!(wrong.expect_close().await.map(|c| c.0), Some(4009));
}

#[tokio::test]
async fn a_graceful_stop_asks_clients_to_reconnect_at_once_with_4200() {
    let (_reg, gw) = gateway().await;
    let mut c = PusherClient::connect(&app_url(&gw)).await;
    let stopping = tokio::spawn(gw.stop());
    assert_eq!(c.expect_close().await.map(|c| c.0), Some(4200));
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_long_bad_path_is_refused_cleanly() {
    let (_reg, gw) = gateway().await;
    // The detail (with the path) is in the error frame; the close reason stays within 123 bytes.
    expect_refused(&format!("{}{}", gw.ws_url, "x".repeat(300)), 4005).await;
    expect_refused(&format!("{}app/{}?protocol=7", gw.ws_url, "k".repeat(300)), 4005).await;
}

#[tokio::test]
async fn client_events_reach_subscribers_on_every_gateway_once_and_in_order() {
    let reg = RegisterHandle::start(SECRET).await;
    let one = pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await;
    let two = pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await;
    // Each gateway learns the other from the register.
    wait_for_peers(&[&one, &two]).await;
    let mut sender = PusherClient::connect(&app_url(&one)).await;
    let mut near = PusherClient::connect(&app_url(&one)).await;
    let mut far = PusherClient::connect(&app_url(&two)).await;
    for c in [&mut sender, &mut near, &mut far] {
        c.subscribe_signed("private-chat", None).await;
        c.expect("pusher_internal:subscription_succeeded").await;
    }
    for i in 0..5 {
        sender.client_event("private-chat", "client-n", &i.to_string()).await;
    }
    for c in [&mut near, &mut far] {
        for i in 0..5 {
            let got = c.expect("client-n").await;
            assert_eq!(got["data"], json!(i), "in order, once");
        }
        c.expect_silence(QUIET).await;
    }
    sender.expect_silence(QUIET).await;
    assert_eq!(one.metric("mesh_dropped"), 0);
}

/// `n` Pusher gateways on one register, each knowing every other (so each finds the same home
/// for a channel).
async fn cluster(n: usize) -> (RegisterHandle, Vec<GatewayHandle>) {
    let reg = RegisterHandle::start(SECRET).await;
    let mut gws = Vec::new();
    for _ in 0..n {
        gws.push(pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await);
    }
    wait_for_peers(&gws.iter().collect::<Vec<_>>()).await;
    (reg, gws)
}

fn ids(list: &serde_json::Value) -> serde_json::Value {
    list["presence"]["ids"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_channel_over_three_gateways_has_one_member_list_and_one_added_and_removed_per_user() {
    let (_reg, gws) = cluster(3).await;
    let member = |u: &str| format!(r#"{{"user_id":"{u}","user_info":{{"name":"{u}"}}}}"#);
    let (ann, bob, cid) = (member("ann"), member("bob"), member("cid"));
    // Several channels, so that homes are on different gateways: each is checked alike.
    for channel in ["presence-room", "presence-hall", "presence-lab"] {
        let mut a = PusherClient::connect(&app_url(&gws[0])).await;
        a.subscribe_signed(channel, Some(&ann)).await;
        assert_eq!(ids(&data_of(&a.expect("pusher_internal:subscription_succeeded").await)), json!(["ann"]));

        let mut b1 = PusherClient::connect(&app_url(&gws[1])).await;
        b1.subscribe_signed(channel, Some(&bob)).await;
        let list = data_of(&b1.expect("pusher_internal:subscription_succeeded").await);
        assert_eq!(ids(&list), json!(["ann", "bob"]), "{channel}: one list, whatever the gateway");
        assert_eq!(list["presence"]["hash"]["ann"], json!({"name": "ann"}));
        assert_eq!(data_of(&a.expect("pusher_internal:member_added").await)["user_id"], "bob");

        // Bob's second connection, on a third gateway: listed, no member_added for anyone.
        let mut b2 = PusherClient::connect(&app_url(&gws[2])).await;
        b2.subscribe_signed(channel, Some(&bob)).await;
        assert_eq!(ids(&data_of(&b2.expect("pusher_internal:subscription_succeeded").await)), json!(["ann", "bob"]));

        let mut c = PusherClient::connect(&app_url(&gws[2])).await;
        c.subscribe_signed(channel, Some(&cid)).await;
        assert_eq!(
            ids(&data_of(&c.expect("pusher_internal:subscription_succeeded").await)),
            json!(["ann", "bob", "cid"])
        );
        for other in [&mut a, &mut b1, &mut b2] {
            let added = other.expect("pusher_internal:member_added").await;
            assert_eq!(data_of(&added), json!({"user_id": "cid", "user_info": {"name": "cid"}}), "{channel}");
        }

        // Bob leaves one gateway: still there on the other, nobody hears of it.
        b1.ws.close().await;
        a.expect_silence(QUIET).await;
        c.expect_silence(QUIET).await;
        // Bob's last connection anywhere goes: member_removed once, on every gateway.
        b2.ws.close().await;
        for other in [&mut a, &mut c] {
            assert_eq!(data_of(&other.expect("pusher_internal:member_removed").await), json!({"user_id": "bob"}));
            other.expect_silence(QUIET).await;
        }
        // Ann leaves: cid, on another gateway, hears it once.
        a.ws.close().await;
        assert_eq!(data_of(&c.expect("pusher_internal:member_removed").await), json!({"user_id": "ann"}));
        c.expect_silence(QUIET).await;
    }
    for g in &gws {
        assert_eq!(g.metric("mesh_dropped"), 0);
    }
}

/// Subscribes `c` to every channel as `member`; the member lists' ids, sorted.
async fn subscribe_all(c: &mut PusherClient, channels: &[String], member: &str) -> Vec<serde_json::Value> {
    let mut lists = Vec::new();
    for ch in channels {
        c.subscribe_signed(ch, Some(member)).await;
        let list = ids(&data_of(&c.expect("pusher_internal:subscription_succeeded").await));
        // Joining order, but after a move the new home learns the members in the order the
        // gateways re-send them: compare as sets.
        let mut list: Vec<String> = list.as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
        list.sort();
        lists.push(json!(list));
    }
    lists
}

/// The next frames of `c`: `event` for `user`, once per channel of `channels`.
async fn expect_each(c: &mut PusherClient, event: &str, user: &str, channels: &[String]) {
    let mut got = Vec::new();
    for _ in channels {
        let frame = c.expect(event).await;
        assert_eq!(data_of(&frame)["user_id"], user, "{frame}");
        got.push(frame["channel"].as_str().unwrap().to_string());
    }
    got.sort();
    let mut want = channels.to_vec();
    want.sort();
    assert_eq!(got, want, "once per channel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_joining_and_leaving_move_homes_silently_and_the_member_lists_stay_whole() {
    let (reg, mut gws) = cluster(2).await;
    // Enough channels that the third gateway becomes the home of some (rendezvous hashing).
    let channels: Vec<String> = (0..16).map(|i| format!("presence-{i}")).collect();
    let member = |u: &str| format!(r#"{{"user_id":"{u}"}}"#);
    let mut ann = PusherClient::connect(&app_url(&gws[0])).await;
    subscribe_all(&mut ann, &channels, &member("ann")).await;
    let mut bob = PusherClient::connect(&app_url(&gws[1])).await;
    assert!(subscribe_all(&mut bob, &channels, &member("bob")).await.iter().all(|l| *l == json!(["ann", "bob"])));
    expect_each(&mut ann, "pusher_internal:member_added", "bob", &channels).await;

    // A third gateway: the channels homed there now are re-sent to it; nobody hears of the move.
    gws.push(pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await);
    eventually(Duration::from_secs(10), "each gateway knows the two others", || async {
        gws.iter().all(|g| g.metric("peer_gateways") == 2)
    })
    .await;
    ann.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;
    let mut cid = PusherClient::connect(&app_url(&gws[2])).await;
    let lists = subscribe_all(&mut cid, &channels, &member("cid")).await;
    assert!(lists.iter().all(|l| *l == json!(["ann", "bob", "cid"])), "{lists:?}");
    expect_each(&mut ann, "pusher_internal:member_added", "cid", &channels).await;
    expect_each(&mut bob, "pusher_internal:member_added", "cid", &channels).await;
    cid.ws.close().await;
    expect_each(&mut ann, "pusher_internal:member_removed", "cid", &channels).await;
    expect_each(&mut bob, "pusher_internal:member_removed", "cid", &channels).await;

    // It stops: its channels come home again, silently, and still hold ann and bob.
    gws.pop().unwrap().stop().await;
    eventually(Duration::from_secs(10), "each gateway knows it is gone", || async {
        gws.iter().all(|g| g.metric("peer_gateways") == 1)
    })
    .await;
    ann.expect_silence(QUIET).await;
    let mut dan = PusherClient::connect(&app_url(&gws[1])).await;
    let lists = subscribe_all(&mut dan, &channels, &member("dan")).await;
    assert!(lists.iter().all(|l| *l == json!(["ann", "bob", "dan"])), "{lists:?}");
    expect_each(&mut ann, "pusher_internal:member_added", "dan", &channels).await;
    expect_each(&mut bob, "pusher_internal:member_added", "dan", &channels).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_subscription_whose_home_does_not_answer_is_refused_after_the_timeout() {
    let reg = RegisterHandle::start(SECRET).await;
    let quick = |c: &mut gw_config::GatewayConfig| c.pusher.as_mut().unwrap().presence_timeout = Duration::from_secs(1);
    let gw = pusher_gateway(&[reg.addr], SECRET, |_| {}, quick).await;
    // A gateway without Pusher in the cluster (every gateway must serve the same apps): the
    // channels homed there never answer.
    let _plain = GatewayHandle::start_with(&[reg.addr], SECRET, |_| {}).await;
    eventually(Duration::from_secs(10), "the Pusher gateway knows the other", || async {
        gw.metric("peer_gateways") == 1
    })
    .await;
    let mut c = PusherClient::connect(&app_url(&gw)).await;
    // Enough channels that both gateways are homes of some (rendezvous hashing).
    let channels: Vec<String> = (0..16).map(|i| format!("presence-{i}")).collect();
    for ch in &channels {
        c.subscribe_signed(ch, Some(r#"{"user_id":"ann"}"#)).await;
    }
    let (mut listed, mut refused) = (0, 0);
    for _ in &channels {
        let frame = c.recv().await;
        match frame["event"].as_str() {
            Some("pusher_internal:subscription_succeeded") => listed += 1,
            Some("pusher:error") => {
                assert_eq!(frame["data"]["code"], serde_json::Value::Null, "{frame}");
                assert!(frame["data"]["message"].as_str().unwrap().contains("did not answer in time"), "{frame}");
                refused += 1;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert!(listed > 0 && refused > 0, "{listed} listed, {refused} refused");
    c.expect_alive().await;
    use gw_daemon::Node;
    let families = gw_gateway::GatewayNode::new(gw.gw.clone()).metrics().await;
    let timeouts = families
        .iter()
        .find(|f| f.name == "gw_pusher_frames_refused_total")
        .and_then(|f| f.samples.iter().find(|s| s.labels == "reason=\"presence_timeout\""))
        .map(|s| s.value);
    assert_eq!(timeouts, Some(refused as f64), "each refusal counted");
}
