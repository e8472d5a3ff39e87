//! The chat protocol end to end: real WebSocket clients against the whole demo (register, gateway,
//! chat worker, web backend) on `127.0.0.1:0`.
//!
//! Negative checks ("this client gets nothing") mostly use a barrier instead of waiting: once the
//! clients that should get message X have it, the gateway has already queued X for everyone it
//! sends X to, so a later message Y that does reach the checked client must be the next thing it
//! reads.

mod common;

use std::time::Duration;

use common::{Chatter, Demo, QUIET, members, pairs};
use serde_json::{Value, json};

/// The next message must be an announcement with `content`.
async fn expect_announce(c: &mut Chatter, content: &str) {
    let m = c.recv_type("announce").await;
    assert_eq!(m["content"], content, "client {} got {m}", c.id);
}

/// Announces `content` to everyone through the web backend.
async fn announce_all(demo: &Demo, content: &str) {
    let (status, body) = demo.post("/api/announce", &json!({"content": content})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_welcome_member_list_and_history() {
    let demo = Demo::start().await;

    let mut ann = demo.client().await;
    assert!(!ann.id.is_empty(), "welcome carries the client id");
    let (login, history) = ann.login("Ann", "lobby").await;
    assert_eq!(login["name"], "Ann");
    assert_eq!(login["room"], "lobby");
    assert_eq!(login["time"].as_str().map(str::len), Some(19), "time is YYYY-MM-DD HH:MM:SS: {login}");
    assert_eq!(members(&login), pairs(&[(&ann, "Ann")]));
    assert_eq!(history["messages"], json!([]), "a new room has no history");

    // The nickname is trimmed; everyone in the room gets the complete member list.
    let mut bob = demo.client().await;
    assert_ne!(bob.id, ann.id);
    let (login, _) = bob.login("  Bob ", "lobby").await;
    assert_eq!(login["name"], "Bob");
    assert_eq!(members(&login), pairs(&[(&ann, "Ann"), (&bob, "Bob")]));
    let seen_by_ann = ann.recv_type("login").await;
    assert_eq!(seen_by_ann, login, "Ann gets the same login broadcast");

    let mut cid = demo.login("Cid", "lobby").await;
    let login = ann.recv_type("login").await;
    assert_eq!(members(&login), pairs(&[(&ann, "Ann"), (&bob, "Bob"), (&cid, "Cid")]));
    assert_eq!(bob.recv_type("login").await, login);

    // History: room messages of this run, in order; not private messages, not other rooms.
    ann.say("first :smile:").await;
    bob.say("second https://example.com/cat.png").await;
    for c in [&mut ann, &mut bob, &mut cid] {
        let first = c.recv_type("say").await;
        let second = c.recv_type("say").await;
        // Ann's and Bob's messages come from different clients: their order is not fixed.
        let mut got = [first["content"].clone(), second["content"].clone()];
        got.sort_by_key(|v| v.to_string());
        assert_eq!(got, [json!("first :smile:"), json!("second https://example.com/cat.png")]);
    }
    ann.say_to(&bob.id, "private, not in the history").await;
    bob.expect_say(ann.id.clone(), "private, not in the history").await;
    ann.expect_say(ann.id.clone(), "private, not in the history").await;
    let mut elsewhere = demo.login("Eve", "elsewhere").await;
    elsewhere.say("in another room").await;
    elsewhere.expect_say(elsewhere.id.clone(), "in another room").await;

    let mut dan = demo.client().await;
    let (login, history) = dan.login("Dan", "lobby").await;
    assert_eq!(members(&login).len(), 4);
    let messages = history["messages"].as_array().expect("history is a list");
    let contents: Vec<&str> = messages.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents.len(), 2, "{history}");
    assert!(contents.contains(&"first :smile:") && contents.contains(&"second https://example.com/cat.png"));
    for m in messages {
        assert_eq!(m["type"], "say");
        assert_eq!(m["to_id"], "all");
        assert!(m["from_name"] == "Ann" || m["from_name"] == "Bob", "{m}");
    }
    drop((ann, bob, cid, elsewhere, dan));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_the_last_fifty_messages_of_the_room() {
    let demo = Demo::start().await;
    let mut ann = demo.login("Ann", "busy").await;
    for i in 0..55 {
        ann.say(&format!("message {i}")).await;
        ann.expect_say(ann.id.clone(), &format!("message {i}")).await;
    }
    let mut bob = demo.client().await;
    let (_, history) = bob.login("Bob", "busy").await;
    let contents: Vec<String> =
        history["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = (5..55).map(|i| format!("message {i}")).collect();
    assert_eq!(contents, expected);
    drop((ann, bob));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() {
    let demo = Demo::start().await;
    let mut ann = demo.login("Ann", "red").await;
    let mut bob = demo.login("Bob", "red").await;
    ann.recv_type("login").await;
    let mut cid = demo.client().await;
    let (login, _) = cid.login("Cid", "blue").await;
    assert_eq!(members(&login), pairs(&[(&cid, "Cid")]), "the blue room lists only its members");
    let mut dan = demo.login("Dan", "blue").await;
    assert_eq!(members(&cid.recv_type("login").await), pairs(&[(&cid, "Cid"), (&dan, "Dan")]));

    ann.say("hello red").await;
    ann.expect_say(ann.id.clone(), "hello red").await;
    bob.expect_say(ann.id.clone(), "hello red").await;
    cid.say("hello blue").await;
    cid.expect_say(cid.id.clone(), "hello blue").await;
    dan.expect_say(cid.id.clone(), "hello blue").await;

    // Neither room saw the other's logins or messages: the next thing each client reads is this.
    announce_all(&demo, "barrier").await;
    for c in [&mut ann, &mut bob, &mut cid, &mut dan] {
        expect_announce(c, "barrier").await;
    }
    drop((ann, bob, cid, dan));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_messages_reach_only_their_target_and_the_sender() {
    let demo = Demo::start().await;
    let mut ann = demo.login("Ann", "pm").await;
    let mut bob = demo.login("Bob", "pm").await;
    ann.recv_type("login").await;
    let mut cid = demo.login("Cid", "pm").await;
    ann.recv_type("login").await;
    bob.recv_type("login").await;

    ann.say_to(&bob.id, "psst, Bob").await;
    let got = bob.expect_say(ann.id.clone(), "psst, Bob").await;
    assert_eq!(got["to_id"], bob.id.as_str());
    assert_eq!(got["from_name"], "Ann");
    let copy = ann.expect_say(ann.id.clone(), "psst, Bob").await;
    assert_eq!(copy, got, "the sender gets the same message as its copy");

    bob.say_to(&ann.id, "psst, Ann").await;
    ann.expect_say(bob.id.clone(), "psst, Ann").await;
    bob.expect_say(bob.id.clone(), "psst, Ann").await;

    // A note to oneself arrives once.
    cid.say_to(&cid.id.clone(), "note to self").await;
    cid.expect_say(cid.id.clone(), "note to self").await;

    // Cid saw neither private message, Ann and Bob not Cid's note: a room message comes next.
    bob.say("public again").await;
    let bob_id = bob.id.clone();
    for c in [&mut ann, &mut bob, &mut cid] {
        c.expect_say(bob_id.clone(), "public again").await;
    }
    drop((ann, bob, cid));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_sends_a_leave_notice_to_the_room() {
    let demo = Demo::start().await;
    let mut ann = demo.login("Ann", "bye").await;
    let bob = demo.login("Bob", "bye").await;
    ann.recv_type("login").await;
    let mut other = demo.login("Olga", "elsewhere").await;
    let lurker = demo.client().await; // never logs in: no notice when it leaves

    let bob_id = bob.id.clone();
    bob.close().await;
    let bye = ann.recv_type("logout").await;
    assert_eq!(bye["client_id"], bob_id.as_str());
    assert_eq!(bye["name"], "Bob");
    assert_eq!(bye["time"].as_str().map(str::len), Some(19));

    lurker.close().await;
    // Olga's room heard nothing; Ann nothing about the lurker.
    let mut dan = demo.login("Dan", "bye").await;
    let login = ann.recv_type("login").await;
    assert_eq!(members(&login), pairs(&[(&ann, "Ann"), (&dan, "Dan")]), "Bob is no longer listed");
    announce_all(&demo, "barrier").await;
    for c in [&mut ann, &mut other, &mut dan] {
        expect_announce(c, "barrier").await;
    }
    drop((ann, other, dan));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_again_switches_rooms() {
    let demo = Demo::start().await;
    let mut ann = demo.login("Ann", "one").await;
    let mut bob = demo.login("Bob", "one").await;
    ann.recv_type("login").await;
    let mut cid = demo.login("Cid", "two").await;
    cid.say("before Ann came").await;
    cid.expect_say(cid.id.clone(), "before Ann came").await;

    let (login, history) = ann.login("Ann", "two").await;
    assert_eq!(login["room"], "two");
    assert_eq!(members(&login), pairs(&[(&ann, "Ann"), (&cid, "Cid")]));
    assert_eq!(history["messages"][0]["content"], "before Ann came", "the new room's history: {history}");
    assert_eq!(cid.recv_type("login").await, login);
    let bye = bob.recv_type("logout").await;
    assert_eq!(bye["client_id"], ann.id.as_str(), "the old room hears Ann leave");

    bob.say("only room one").await;
    bob.expect_say(bob.id.clone(), "only room one").await;
    ann.say("now in room two").await;
    ann.expect_say(ann.id.clone(), "now in room two").await;
    cid.expect_say(ann.id.clone(), "now in room two").await;
    announce_all(&demo, "barrier").await;
    for c in [&mut ann, &mut bob, &mut cid] {
        expect_announce(c, "barrier").await;
    }

    // Bob's room no longer lists Ann.
    let mut dan = demo.client().await;
    let (login, _) = dan.login("Dan", "one").await;
    assert_eq!(members(&login), pairs(&[(&bob, "Bob"), (&dan, "Dan")]));
    drop((ann, bob, cid, dan));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_an_error_to_that_client_only() {
    let demo = Demo::start().await;
    let mut ann = demo.login("Ann", "strict").await;
    let mut bob = demo.login("Bob", "strict").await;
    ann.recv_type("login").await;
    let mut cid = demo.login("Cid", "other").await;
    let mut newbie = demo.client().await;
    let gone = demo.login("Gus", "strict").await;
    ann.recv_type("login").await;
    bob.recv_type("login").await;
    let gone_id = gone.id.clone();
    gone.close().await;
    ann.recv_type("logout").await;
    bob.recv_type("logout").await;

    ann.send_text("{").await;
    assert_eq!(ann.recv_error().await, "invalid JSON");
    ann.send_text("not json at all").await;
    assert_eq!(ann.recv_error().await, "invalid JSON");
    ann.send(json!({"type": "dance"})).await;
    assert!(ann.recv_error().await.contains("invalid message"));
    ann.send(json!({"content": "no type"})).await;
    assert!(ann.recv_error().await.contains("invalid message"));
    ann.send(json!({"type": "say", "to": "all"})).await;
    assert!(ann.recv_error().await.contains("invalid message"), "missing content");
    ann.send(json!({"type": "say", "to": "all", "content": 42})).await;
    assert!(ann.recv_error().await.contains("invalid message"), "content not a string");
    ann.send_binary(b"{\"type\":\"say\",\"to\":\"all\",\"content\":\"binary\"}").await;
    assert!(ann.recv_error().await.contains("binary"));
    ann.send_binary(b"\xff\xfe").await;
    assert!(ann.recv_error().await.contains("binary"));

    // Logins that are refused leave the client where it was.
    ann.send(json!({"type": "login", "name": "x".repeat(33), "room": "strict"})).await;
    assert!(ann.recv_error().await.contains("too long"));
    ann.send(json!({"type": "login", "name": "   ", "room": "strict"})).await;
    assert!(ann.recv_error().await.contains("empty"));
    ann.send(json!({"type": "login", "name": "<b>Ann</b>", "room": "strict"})).await;
    assert!(ann.recv_error().await.contains("< >"));
    ann.send(json!({"type": "login", "name": "Ann", "room": "no spaces"})).await;
    assert!(ann.recv_error().await.contains("room name"));
    ann.send(json!({"type": "login", "name": "Ann", "room": "r".repeat(33)})).await;
    assert!(ann.recv_error().await.contains("room name"));

    // Messages.
    ann.say("<script>alert(1)</script>").await;
    assert_eq!(ann.recv_error().await, "HTML is not allowed in messages");
    ann.say("<img src=x onerror=alert(1)>").await;
    assert_eq!(ann.recv_error().await, "HTML is not allowed in messages");
    ann.say("  ").await;
    assert!(ann.recv_error().await.contains("empty"));
    ann.say(&"y".repeat(2001)).await;
    assert!(ann.recv_error().await.contains("too long"));
    ann.say_to(&cid.id, "you are in another room").await;
    assert_eq!(ann.recv_error().await, "that member is not in this room");
    ann.say_to("not-a-client-id", "hello?").await;
    assert_eq!(ann.recv_error().await, "unknown recipient");
    ann.say_to("", "hello?").await;
    assert_eq!(ann.recv_error().await, "unknown recipient");
    ann.say_to(&gone_id, "are you there?").await;
    assert_eq!(ann.recv_error().await, "that member is not in this room");
    newbie.say("hi before logging in").await;
    assert_eq!(newbie.recv_error().await, "log in first");
    newbie.say_to(&ann.id, "hi before logging in").await;
    assert_eq!(newbie.recv_error().await, "log in first");

    // Markup-looking text that is not markup is fine, and Ann is still in her room under her name.
    ann.say("a < b && c > d").await;
    let m = bob.expect_say(ann.id.clone(), "a < b && c > d").await;
    assert_eq!(m["from_name"], "Ann");
    ann.expect_say(ann.id.clone(), "a < b && c > d").await;
    // Nobody else got any of the errors.
    announce_all(&demo, "barrier").await;
    for c in [&mut ann, &mut bob, &mut cid, &mut newbie] {
        expect_announce(c, "barrier").await;
    }
    drop((ann, bob, cid, newbie));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_backend_binds_a_uid_and_joins_the_room() {
    let demo = Demo::start().await;
    // A page's connection: welcome, then the page posts its client id to /api/bind.
    let mut web = demo.client().await;
    let (status, body) =
        demo.post("/api/bind", &json!({"client_id": web.id, "name": " Wendy ", "room": "webroom"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"ok": true, "uid": "user:Wendy", "room": "webroom"}));
    let mut vic = demo.login("Vic", "webroom").await;
    // Wendy is in the room's group (though not a listed member, having never logged in herself).
    let login = web.recv_type("login").await;
    assert_eq!(members(&login), pairs(&[(&vic, "Vic")]));
    let (status, body) = demo.post("/api/bind", &json!({"client_id": vic.id, "name": "Vic", "room": "webroom"})).await;
    assert_eq!(status, 200, "{body}");
    let mut outsider = demo.login("Otto", "lobby").await;

    // The uid reaches exactly Wendy's connection.
    let (status, body) = demo.post("/api/announce", &json!({"uid": "user:Wendy", "content": "just for Wendy"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sent_to"], "uid user:Wendy");
    assert_eq!(body["connections"], 1, "{body}");
    expect_announce(&mut web, "just for Wendy").await;
    // A uid nobody is bound to: still 200 (nothing failed), but the answer says it reached no one.
    let (status, body) = demo.post("/api/announce", &json!({"uid": "user:Nobody", "content": "anyone?"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"], 0, "{body}");
    assert_eq!(body["note"], "uid user:Nobody has no connection: nobody got the announcement", "{body}");
    let announce = json!({"room": "webroom", "content": "webroom only"});
    let (status, body) = demo.post("/api/announce", &announce).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["connections"].clone(), body["complete"].clone()), (json!(2), json!(true)), "{body}");
    // Vic's first announcement is this one.
    expect_announce(&mut web, "webroom only").await;
    expect_announce(&mut vic, "webroom only").await;
    // And Wendy gets the room's chat too.
    vic.say("hi Wendy").await;
    vic.expect_say(vic.id.clone(), "hi Wendy").await;
    web.expect_say(vic.id.clone(), "hi Wendy").await;

    announce_all(&demo, "to everyone").await;
    for c in [&mut web, &mut vic, &mut outsider] {
        expect_announce(c, "to everyone").await;
    }

    let (status, online) = demo.get("/api/online").await;
    assert_eq!(status, 200);
    let online: Value = serde_json::from_str(&online).unwrap();
    assert_eq!(online["clients"], 3, "{online}");
    assert_eq!(online["uids"], 2, "{online}");
    assert_eq!(online["complete"], true, "{online}");
    drop((web, vic, outsider));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_reach_a_room_or_everyone() {
    let demo = Demo::start().await;
    let mut ann = demo.login("Ann", "news").await;
    let mut bob = demo.login("Bob", "news").await;
    ann.recv_type("login").await;
    let mut cid = demo.login("Cid", "sports").await;
    let mut lurker = demo.client().await;

    let (status, body) = demo.post("/api/announce", &json!({"room": " news ", "content": "news only"})).await;
    assert_eq!((status, body["ok"].clone()), (200, json!(true)), "{body}");
    assert_eq!(body["sent_to"], "room news");
    expect_announce(&mut ann, "news only").await;
    expect_announce(&mut bob, "news only").await;
    let (status, _) = demo.post("/api/announce", &json!({"room": "sports", "content": "sports only"})).await;
    assert_eq!(status, 200);
    expect_announce(&mut cid, "sports only").await;
    // Markup in an announcement is passed on as text (the page escapes it).
    let (status, body) = demo.post("/api/announce", &json!({"content": "<b>everyone</b>"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sent_to"], "everyone");
    for c in [&mut ann, &mut bob, &mut cid, &mut lurker] {
        expect_announce(c, "<b>everyone</b>").await;
    }
    let m = ann.next_within(QUIET).await;
    assert!(m.is_none(), "nothing else: {m:?}");
    drop((ann, bob, cid, lurker));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_web_requests_get_400_with_a_json_error() {
    let demo = Demo::start().await;
    let alive = demo.client().await;
    let gone = demo.client().await;
    let gone_id = gone.id.clone();
    gone.close().await;

    // A well-formed id on a gateway that is not in the cluster: not connected either (issue 26,
    // item 17: it was a 503 "gateway ... is not connected").
    let elsewhere = gw_proto::ClientId::new("127.0.0.1:9", 1, 1).to_string();
    let bad_binds = [
        json!({"client_id": "nope", "name": "Ann", "room": "lobby"}),
        json!({"client_id": "", "name": "Ann", "room": "lobby"}),
        json!({"client_id": gone_id, "name": "Ann", "room": "lobby"}),
        json!({"client_id": elsewhere, "name": "Ann", "room": "lobby"}),
        json!({"client_id": alive.id, "name": "", "room": "lobby"}),
        json!({"client_id": alive.id, "name": "x".repeat(33), "room": "lobby"}),
        json!({"client_id": alive.id, "name": "<i>Ann</i>", "room": "lobby"}),
        json!({"client_id": alive.id, "name": "Ann", "room": "two words"}),
        json!({"client_id": alive.id, "name": "Ann", "room": ""}),
        json!({"client_id": alive.id, "name": "Ann"}),
        json!({"client_id": 7, "name": "Ann", "room": "lobby"}),
        json!(["not", "an", "object"]),
    ];
    for req in &bad_binds {
        let (status, body) = demo.post("/api/bind", req).await;
        assert_eq!(status, 400, "bind {req}: {body}");
        assert_eq!(body["ok"], false, "bind {req}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "bind {req}: {body}");
    }
    let bad_announcements = [
        json!({"content": ""}),
        json!({"content": "   "}),
        json!({"content": "z".repeat(2001)}),
        json!({"room": "lobby"}),
        json!({"content": 5}),
        json!({"content": "hi", "room": "two words"}),
        json!({"content": "hi", "room": ""}),
        json!({"content": "hi", "uid": ""}),
        json!({"content": "hi", "room": "lobby", "uid": "user:Ann"}),
    ];
    for req in &bad_announcements {
        let (status, body) = demo.post("/api/announce", req).await;
        assert_eq!(status, 400, "announce {req}: {body}");
        assert_eq!(body["ok"], false, "announce {req}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "announce {req}: {body}");
    }
    for path in ["/api/bind", "/api/announce"] {
        for raw in ["{", "", "null", "{\"content\": \"unterminated}"] {
            let (status, body) = demo.post_raw(path, raw).await;
            assert_eq!(status, 400, "{path} {raw:?}: {body}");
            assert_eq!(body["ok"], false, "{path} {raw:?}: {body}");
        }
    }
    // A good request still works afterwards.
    let (status, body) = demo.post("/api/bind", &json!({"client_id": alive.id, "name": "Ann", "room": "lobby"})).await;
    assert_eq!(status, 200, "{body}");
    drop((alive,));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_config_are_served() {
    let demo = Demo::start().await;
    let (status, page) = demo.get("/").await;
    assert_eq!(status, 200);
    for id in [
        "id=\"name\"",
        "id=\"room\"",
        "id=\"join\"",
        "id=\"status\"",
        "id=\"messages\"",
        "id=\"members\"",
        "id=\"to\"",
        "id=\"input\"",
        "id=\"send\"",
        "id=\"client-id\"",
        "id=\"new-room\"",
        "id=\"switch-room\"",
        "id=\"leave\"",
    ] {
        assert!(page.contains(id), "the page has {id}");
    }
    let (status, config) = demo.get("/api/config").await;
    assert_eq!(status, 200);
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["ws_url"], demo.ws_url());
    // The page's recovering WebSocket is the one copy in clients/js, served as is.
    assert!(page.contains("<script src=\"/gatewayrs.js\"></script>"), "the page loads gatewayrs.js");
    let (status, js) = demo.get("/gatewayrs.js").await;
    assert_eq!(status, 200);
    assert_eq!(js, include_str!("../../clients/js/gatewayrs.js"));
    demo.stop().await;
}

/// The chat worker's heartbeat (workerman-chat's `pingInterval` + `pingData`): every client gets
/// `{"type":"ping"}` periodically and may answer `{"type":"pong"}`, which is accepted silently.
/// Runs its own small cluster because the demo uses the default (25 s) interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_pings_every_client() {
    let cluster = common::Cluster::start(Duration::from_millis(200)).await;
    let mut ann = Chatter::connect(&cluster.ws_url).await;
    let mut lurker = Chatter::connect(&cluster.ws_url).await;
    ann.login("Ann", "beat").await;
    // Reading skips pings, counts them and answers each with a pong.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ann.pings < 2 || lurker.pings < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat: {} and {} pings", ann.pings, lurker.pings);
        if let Some(m) = ann.next_within(Duration::from_millis(50)).await {
            panic!("unexpected {m}");
        }
        if let Some(m) = lurker.next_within(Duration::from_millis(50)).await {
            panic!("unexpected {m}");
        }
    }
    // The pongs were accepted without an error, and chat goes on.
    ann.say("still alive").await;
    let m = ann.recv_type("say").await;
    assert_eq!(m["content"], "still alive");
    drop((ann, lurker));
    cluster.stop().await;
}

/// A client that logs in and speaks in one breath (no wait for the login answer) is logged in,
/// under its new name, for its message: the say event may leave the gateway before the login's
/// session write-back lands there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_say_sent_back_to_back_are_both_honoured() {
    let demo = Demo::start().await;
    let mut ann = demo.client().await;
    for i in 0..10 {
        ann.send(json!({"type": "login", "name": format!("Ann{i}"), "room": "lobby"})).await;
        ann.say(&format!("as Ann{i}")).await;
    }
    let id = ann.id.clone();
    for i in 0..10 {
        let login = ann.recv_type("login").await;
        assert_eq!(login["name"], format!("Ann{i}"));
        ann.recv_type("history").await;
        let say = ann.expect_say(id.clone(), &format!("as Ann{i}")).await;
        assert_eq!(say["from_name"], format!("Ann{i}"), "the say after login {i}: {say}");
    }
}
