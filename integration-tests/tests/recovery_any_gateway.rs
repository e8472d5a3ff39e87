//! Connection state recovery on any gateway (issue 25; `docs/recovery.md`, "On another
//! gateway"): a client dropped on one gateway comes back on another with its token; that
//! gateway relays it to its home, where it resumes with every message sent meanwhile exactly
//! once, in order, under the same client id, and the worker sees `on_resume`. And the ways it
//! fails there: a forged token (nothing dialled), a home that is gone, no cluster secret.

use std::time::Duration;

use gw_config::RecoveryConfig;
use gw_gateway_client::{ClientId, GatewayClient};
use gw_integration_tests::recovering::{EventLog, Outcome, RecoveringClient};
use gw_integration_tests::*;

const SECRET: &str = "recovery-any-gateway-secret-0123";

/// What the worker saw.
type Log = EventLog;

struct Cluster {
    _register: RegisterHandle,
    gateways: Vec<GatewayHandle>,
    _worker: WorkerHandle,
    backend: GatewayClient,
    log: Log,
}

async fn cluster(secret: &str, tweak: impl Fn(&mut gw_config::GatewayConfig)) -> Cluster {
    let register = RegisterHandle::start(secret).await;
    let mut gateways = Vec::new();
    for _ in 0..2 {
        gateways.push(
            GatewayHandle::start_with(&[register.addr], secret, |c| {
                c.recovery =
                    RecoveryConfig { enabled: true, window: Duration::from_secs(30), ..RecoveryConfig::default() };
                tweak(c);
            })
            .await,
        );
    }
    let log = Log::default();
    let worker = WorkerHandle::start("w", &[register.addr], secret, log.clone());
    for g in &gateways {
        wait_for_workers(g, 1).await;
    }
    let backend = gateway_client(&[register.addr], secret, 2).await;
    Cluster { _register: register, gateways, _worker: worker, backend, log }
}

impl Cluster {
    async fn until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn held(&self) -> u64 {
        self.gateways.iter().map(|g| g.metric("recovery_held_clients")).sum()
    }

    fn url(&self, gateway: usize) -> &str {
        &self.gateways[gateway].ws_url
    }
}

fn id(text: &str) -> ClientId {
    text.parse().unwrap()
}

/// One client of the checker: where it is now, and what it must receive, in order.
struct Tracked {
    /// `None` while it is away.
    client: Option<RecoveringClient>,
    id: ClientId,
    at: usize,
    uid: String,
    group: String,
    expected: Vec<String>,
    got: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_dropped_on_one_gateway_resume_on_the_other_with_every_message_once_in_order() {
    let c = cluster(SECRET, |_| {}).await;
    // Two clients homed on each gateway, each with its uid and group, and everyone in "all".
    let mut clients = Vec::new();
    for k in 0..4 {
        let at = k % 2;
        let client = RecoveringClient::connect(c.url(at)).await;
        let cid = id(&client.client_id);
        let (uid, group) = (format!("u{k}"), format!("g{k}"));
        c.backend.bind_uid(&cid, &uid).await.unwrap();
        c.backend.join_group(&cid, &group).await.unwrap();
        c.backend.join_group(&cid, "all").await.unwrap();
        clients.push(Tracked { client: Some(client), id: cid, at, uid, group, expected: Vec::new(), got: Vec::new() });
    }
    let mut n = 0u64;
    // Rounds: numbered sends by id, uid, group, group of all and everyone; then every client is
    // reset and comes back on the other gateway, while more is sent; then it reads.
    for round in 0..4 {
        for _ in 0..25 {
            n += 1;
            let text = format!("m{n}");
            let target = (n as usize) % clients.len();
            match n % 5 {
                0 => c.backend.send_to_client(&clients[target].id, text.clone()).await.unwrap(),
                1 => c.backend.send_to_uid(&clients[target].uid, text.clone()).await.unwrap(),
                2 => c.backend.send_to_group(&clients[target].group, text.clone()).await.unwrap(),
                3 => c.backend.send_to_group("all", text.clone()).await.unwrap(),
                _ => c.backend.send_to_all(text.clone()).await.unwrap(),
            }
            for (k, t) in clients.iter_mut().enumerate() {
                if n % 5 >= 3 || k == target {
                    t.expected.push(text.clone());
                }
            }
        }
        // Each reads some (not all: what was written to the dead socket and not read comes
        // again), then drops without a close.
        let mut away = Vec::new();
        for t in clients.iter_mut() {
            let some = (t.expected.len() - t.got.len()) / 2;
            let rc = t.client.as_mut().unwrap();
            for _ in 0..some {
                let m = rc.recv().await;
                t.got.push(m);
            }
            let rc = t.client.take().unwrap();
            away.push((rc.token.clone(), rc.received));
            rc.ws.reset();
        }
        // Sent while they are away: to each, and to everyone.
        for t in clients.iter_mut() {
            n += 1;
            c.backend.send_to_client(&t.id, format!("m{n}")).await.unwrap();
            t.expected.push(format!("m{n}"));
        }
        n += 1;
        c.backend.send_to_all(format!("m{n}")).await.unwrap();
        // Each comes back on the other gateway.
        for (t, (token, received)) in clients.iter_mut().zip(away) {
            t.expected.push(format!("m{n}"));
            let other = 1 - t.at;
            let resumed = RecoveringClient::resume_with(c.url(other), &token, received).await;
            assert!(matches!(resumed.outcome, Outcome::Resumed { .. }), "round {round}: {:?}", resumed.outcome);
            assert_eq!(resumed.client_id, t.id.to_string(), "same client id on the other gateway");
            t.client = Some(resumed);
            t.at = other;
        }
        // The echo still goes through the worker and back, wherever the socket is.
        for t in clients.iter_mut() {
            t.client.as_mut().unwrap().ws.send(&format!("echo:{round}")).await;
            t.expected.push(format!("echoed:{round}"));
        }
        for t in clients.iter_mut() {
            while t.got.len() < t.expected.len() {
                let m = t.client.as_mut().unwrap().recv().await;
                t.got.push(m);
            }
            assert_eq!(t.got, t.expected, "client {}: every message once, in order", t.id);
        }
    }
    for t in clients.iter_mut() {
        t.client.as_mut().unwrap().expect_no_more().await;
        // The worker saw one connect and a resume per move, never a close.
        let events: Vec<_> = c.log.of(&t.id.to_string()).into_iter().filter(|e| !e.starts_with("message:")).collect();
        assert_eq!(events[0], "connect");
        assert_eq!(events.iter().filter(|e| e.starts_with("resume:")).count(), 4, "{events:?}");
        assert!(!events.contains(&"close".to_string()), "{events:?}");
    }
    // Both gateways relayed, and both were homes.
    for g in &c.gateways {
        assert!(g.metric("relay_opened_total") >= 2, "relayed from here");
        assert!(g.metric("relay_homed_total") >= 2, "resumed here through the other");
    }
    assert_eq!(c.held(), 0);
    // Every client is relayed now (each round moved it to the other gateway, four times:
    // it is back on its home's neighbour). A clean close ends it for good: on_close once at
    // its home, nothing held, its relay gone.
    let relays = || c.gateways.iter().map(|g| g.metric("relay_clients")).sum::<u64>();
    assert_eq!(relays(), 0, "after an even number of moves every client is at home");
    let t = clients.pop().unwrap();
    t.client.unwrap().ws.close().await;
    c.until("its close", |c| c.log.of(&t.id.to_string()).contains(&"close".to_string())).await;
    assert_eq!(c.held(), 0, "a clean close is not held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_client_silent_past_the_heartbeat_is_held_at_its_home_and_resumes_anywhere() {
    let c = cluster(SECRET, |g| {
        g.ping_interval = Duration::from_millis(100);
        g.ping_not_response_limit = 1;
    })
    .await;
    let mut client = RecoveringClient::connect(c.url(0)).await;
    let cid = id(&client.client_id);
    let (token, received) = (client.token.clone(), client.received);
    client.ws.reset();
    c.until("held", |c| c.held() == 1).await;
    // Relayed through gateway 1, it stops reading and answering pings: the home's heartbeat
    // (through the relay) ends it, and it is held at home again.
    let relayed = RecoveringClient::resume_with(c.url(1), &token, received).await;
    assert_eq!(relayed.outcome, Outcome::Resumed { replayed: 0 });
    let token = relayed.token.clone();
    let stalled = relayed.ws;
    c.until("held again at its home", |c| c.gateways[0].metric("recovery_held_clients") == 1).await;
    c.backend.send_to_client(&cid, "while away").await.unwrap();
    // Recorded for the held client (the send only queued it on the backend's link).
    c.until("the message recorded", |c| c.gateways[0].metric("recovery_held_bytes") == 10).await;
    drop(stalled);
    client = RecoveringClient::resume_with(c.url(1), &token, 0).await;
    assert_eq!(client.outcome, Outcome::Resumed { replayed: 1 });
    assert_eq!(client.recv().await, "while away");
    assert_eq!(client.client_id, cid.to_string());
    c.until("the relay counted", |c| c.gateways[1].metric("relay_clients") == 1).await;
}

/// Resumes on gateway `at` with `token` and expects `not_recovered` for `reason`, counted there.
async fn refused_on(c: &Cluster, at: usize, token: &str, reason: &str) -> RecoveringClient {
    let before = c.gateways[at].metric(&format!("recovery_failed_{reason}"));
    let client = RecoveringClient::resume_with(c.url(at), token, 0).await;
    match &client.outcome {
        Outcome::NotRecovered { reason: r, .. } => assert_eq!(r, reason, "{:?}", client.outcome),
        other => panic!("expected not_recovered {reason}, got {other:?}"),
    }
    assert_eq!(c.gateways[at].metric(&format!("recovery_failed_{reason}")), before + 1);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_before_anything_is_dialled_a_gone_home_is_unknown_and_a_stopped_one_hands_over() {
    let mut c = cluster(SECRET, |_| {}).await;
    let mut client = RecoveringClient::connect(c.url(0)).await;
    let (token, old) = (client.token.clone(), client.client_id.clone());
    // Two messages the worker gets: the count of them moves with the client to its adopter.
    client.send_counted("a1").await;
    client.send_counted("a2").await;
    c.until("both messages at the worker", |c| c.log.of(&old).contains(&"message:a2".to_string())).await;
    client.ws.reset();
    c.until("held", |c| c.held() == 1).await;

    // Forged: refused by the gateway it reached, which links to no other gateway for it.
    let forged = format!("{}.AAAA", token.rsplit_once('.').unwrap().0);
    let fresh = refused_on(&c, 1, &forged, "forged").await;
    assert_ne!(fresh.client_id, old);
    assert_eq!(c.gateways[1].metric("relay_opened_total"), 0);
    assert_eq!(c.gateways[0].metric("relay_homed_total"), 0);
    fresh.ws.close().await;
    // A token naming a gateway address nobody listens on, signed with the secret as a real
    // one is: unknown, with the reason, and a new client served where it came.
    let ghost =
        gw_proto::ResumeToken { client: ClientId::new("127.0.0.1:9", 1, 1), generation: 0 }.sign(SECRET.as_bytes());
    let fresh = refused_on(&c, 1, &ghost, "unknown").await;
    fresh.ws.close().await;

    // The home stops gracefully: it hands its held client over to the other gateway, where the
    // client resumes under its id, with no on_close (docs/recovery.md, "Gateway stop").
    let home = c.gateways.remove(0);
    home.stop().await;
    let mut back = RecoveringClient::resume_with(c.url(0), &token, 0).await;
    assert!(matches!(back.outcome, Outcome::Resumed { .. }), "{:?}", back.outcome);
    assert_eq!(back.client_id, old);
    assert_eq!(back.accepted, Some(2), "the adopter knows what the client's old gateway took from it");
    back.ws.send("echo:x").await;
    assert_eq!(back.recv().await, "echoed:x");
    assert!(!c.log.of(&old).contains(&"close".to_string()), "{:?}", c.log.of(&old));
}

/// Clients of a gateway's earlier run, adopted by the other gateway, are handed back to the
/// restarted gateway (on the same address) when the other one stops. They come back there the
/// moment they get 1012, while the hand-over may still be on its way: each must wait for it
/// and resume, not be told `expired` because its state is not installed yet (their tokens name
/// this gateway's address, which must not skip that wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_handed_back_to_their_restarted_gateway_resume_there_at_once() {
    const N: usize = 40;
    let mut c = cluster(SECRET, |_| {}).await;
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(RecoveringClient::connect(c.url(0)).await);
    }
    let ids: Vec<String> = clients.iter().map(|r| r.client_id.clone()).collect();
    // The first run stops: the other gateway adopts its clients, which resume there.
    let first = c.gateways.remove(0);
    let internal = first.internal;
    let closing: Vec<_> = clients
        .into_iter()
        .map(|mut r| tokio::spawn(async move { (r.next_or_closed(Duration::from_secs(10)).await, r) }))
        .collect();
    first.stop().await;
    let mut moved = Vec::new();
    for t in closing {
        let (end, r) = t.await.unwrap();
        assert!(matches!(end, Err(Some((1012, _)))), "{end:?}");
        let back = RecoveringClient::resume_with(c.url(0), &r.token, r.received).await;
        assert!(matches!(back.outcome, Outcome::Resumed { .. }), "{:?}", back.outcome);
        moved.push(back);
    }
    // The gateway starts again on its address; then the adopter stops and hands them back.
    let again = GatewayHandle::start_on(bind_again(internal).await, &[c._register.addr], SECRET, |g| {
        g.recovery = RecoveryConfig { enabled: true, window: Duration::from_secs(30), ..RecoveryConfig::default() };
    })
    .await;
    wait_for_workers(&again, 1).await;
    let adopter = c.gateways.remove(0);
    let (me, it) = (again.gw.address().to_string(), adopter.gw.address().to_string());
    until_true("the two gateways linked", || adopter.gw.peers().contains(&me) && again.gw.peers().contains(&it)).await;
    let url = again.ws_url.clone();
    let returning: Vec<_> = moved
        .into_iter()
        .map(|mut r| {
            let url = url.clone();
            tokio::spawn(async move {
                let end = r.next_or_closed(Duration::from_secs(10)).await;
                assert!(matches!(end, Err(Some((1012, _)))), "{end:?}");
                RecoveringClient::resume_with(&url, &r.token, r.received).await
            })
        })
        .collect();
    adopter.stop().await;
    for (t, id) in returning.into_iter().zip(&ids) {
        let back = t.await.unwrap();
        assert!(matches!(back.outcome, Outcome::Resumed { .. }), "{id}: {:?}", back.outcome);
        assert_eq!(&back.client_id, id);
    }
}

async fn until_true(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_secret_a_token_of_another_gateway_is_refused_saying_why() {
    let c = cluster("", |_| {}).await;
    let client = RecoveringClient::connect(c.url(0)).await;
    let token = client.token.clone();
    client.ws.reset();
    c.until("held", |c| c.held() == 1).await;
    let refused = refused_on(&c, 1, &token, "unknown").await;
    match &refused.outcome {
        Outcome::NotRecovered { detail, .. } => assert!(detail.contains("secret"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // Back at its home it still resumes.
    let home = RecoveringClient::resume_with(c.url(0), &token, 0).await;
    assert_eq!(home.outcome, Outcome::Resumed { replayed: 0 });
}

/// The browser helper (`clients/js/gatewayrs.js`, under Node's WebSocket) given two gateways:
/// its path to the first is cut and stays down, so its next attempt fails and it moves on to
/// the second, where it resumes (relayed to its home): every message once, in order, same id.
/// Skips, saying so, without Node 20+ unless `GW_REQUIRE_NODE=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_helper_fails_over_to_another_gateway_and_resumes_there() {
    use gw_integration_tests::cut_proxy::CutProxy;
    use gw_integration_tests::recovering::{ScriptedClient, node_websocket, numbers};
    if let Err(why) = node_websocket() {
        assert!(std::env::var_os("GW_REQUIRE_NODE").is_none(), "GW_REQUIRE_NODE is set but {why}");
        eprintln!("SKIP the_js_helper_fails_over_to_another_gateway_and_resumes_there: {why}");
        return;
    }
    let c = cluster(SECRET, |_| {}).await;
    let proxy = CutProxy::start(c.url(0)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recovery_client.js");
    let urls = format!("{},{}", proxy.url, c.url(1));
    let mut helper = ScriptedClient::spawn("node", &["--experimental-websocket", "--no-warnings", script, &urls]);
    let line = helper.said().await;
    let cid = line.strip_prefix("ID ").unwrap_or_else(|| panic!("{line}")).to_owned();
    let client = id(&cid);
    c.backend.bind_uid(&client, "alice").await.unwrap();
    c.backend.join_group(&client, "room").await.unwrap();
    let send = async |n: u64| {
        let text = format!("n{n}");
        match n % 4 {
            0 => c.backend.send_to_client(&client, text).await.unwrap(),
            1 => c.backend.send_to_uid("alice", text).await.unwrap(),
            2 => c.backend.send_to_group("room", text).await.unwrap(),
            _ => c.backend.send_to_all(text).await.unwrap(),
        }
    };
    for n in 1..=40 {
        send(n).await;
    }
    helper.tell("READ 40").await;
    assert_eq!(helper.said().await, format!("GOT {}", numbers(1, 40)));
    // The first gateway becomes unreachable for this client (it keeps running: it is the home).
    proxy.down();
    c.until("held at its home", |c| c.gateways[0].metric("recovery_held_clients") == 1).await;
    for n in 41..=90 {
        send(n).await;
    }
    let line = helper.said().await;
    let replayed: u64 = line
        .strip_prefix(&format!("RESUMED {cid} "))
        .unwrap_or_else(|| panic!("expected a resume, got {line}"))
        .parse()
        .unwrap();
    assert!(replayed >= 50, "at least the 50 sent while away: {replayed}");
    assert_eq!(c.gateways[1].metric("relay_clients"), 1, "through the second gateway");
    for n in 91..=100 {
        send(n).await;
    }
    helper.tell("READ 60").await;
    assert_eq!(helper.said().await, format!("GOT {}", numbers(41, 100)));
    helper.quit().await;
    c.until("its close", |c| c.log.of(&cid).contains(&"close".to_string())).await;
    assert_eq!(
        c.log.of(&cid).iter().filter(|e| !e.starts_with("message:")).cloned().collect::<Vec<_>>(),
        ["connect".to_owned(), format!("resume:{replayed}"), "close".to_owned()]
    );
}

/// The Python helper (`clients/python/gatewayrs_recovery.py`) dropped on one gateway resumes on
/// the other (`reconnect(url)`). Skips, saying so, without Python's websocket-client unless
/// `GW_REQUIRE_PYTHON=1` (`scripts/install-python-deps.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_helper_resumes_on_the_other_gateway() {
    use gw_integration_tests::recovering::{ScriptedClient, numbers, python_websocket_client};
    if let Err(why) = python_websocket_client() {
        assert!(std::env::var_os("GW_REQUIRE_PYTHON").is_none(), "GW_REQUIRE_PYTHON is set but {why}");
        eprintln!("SKIP the_python_helper_resumes_on_the_other_gateway: {why}");
        return;
    }
    let c = cluster(SECRET, |_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recovery_client.py");
    let mut helper = ScriptedClient::spawn("python3", &[script, c.url(0)]);
    let line = helper.said().await;
    let cid = line.strip_prefix("ID ").unwrap_or_else(|| panic!("{line}")).to_owned();
    for n in 1..=30 {
        c.backend.send_to_client(&id(&cid), format!("n{n}")).await.unwrap();
    }
    helper.tell("READ 10").await;
    assert_eq!(helper.said().await, format!("GOT {}", numbers(1, 10)));
    helper.tell("DROP").await;
    assert_eq!(helper.said().await, "DROPPED");
    c.until("held at its home", |c| c.gateways[0].metric("recovery_held_clients") == 1).await;
    for n in 31..=40 {
        c.backend.send_to_client(&id(&cid), format!("n{n}")).await.unwrap();
    }
    let _ = c.backend.client_count().await; // the sends before it were executed
    helper.tell(&format!("RESUME {}", c.url(1))).await;
    let line = helper.said().await;
    assert!(line.starts_with(&format!("RESUMED {cid} ")), "{line}");
    helper.tell("READ 30").await;
    assert_eq!(helper.said().await, format!("GOT {}", numbers(11, 40)));
    assert_eq!(c.gateways[1].metric("relay_clients"), 1, "through the other gateway");
    helper.quit().await;
    c.until("its close", |c| c.log.of(&cid).contains(&"close".to_string())).await;
}
