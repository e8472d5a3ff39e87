//! A rolling restart loses nothing (issue 25 §5; `docs/recovery.md`, "Gateway stop and
//! rolling upgrade"): clients with recovery receive numbered messages sent by a backend to
//! their client id, uid, group, a group of all and everyone, without a pause, while each
//! gateway in turn is stopped gracefully and a new one started. A stopped gateway closes its
//! clients with 1012 and hands them over to another; they come back there with their tokens.
//! Every message arrives exactly once, in order, under the same client id, and the worker sees
//! `on_resume` for each move, never `on_close`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use gw_config::RecoveryConfig;
use gw_gateway_client::{ClientId, GatewayClient};
use gw_integration_tests::recovering::{EventLog, Outcome, RecoveringClient};
use gw_integration_tests::*;

const SECRET: &str = "rolling-restart-secret-0123456789";
const CLIENTS: usize = 12;
/// Gateways stopped one after the other (a new one joins after each).
const ROUNDS: u64 = 3;

async fn gateway(register: &RegisterHandle) -> GatewayHandle {
    GatewayHandle::start_with(&[register.addr], SECRET, with_recovery).await
}

/// The gateways clients may reconnect to (what a load balancer would offer).
type Live = Arc<Mutex<Vec<String>>>;

/// One client of the checker, reading on its own task until it gets `end`: what it got, its
/// moves.
struct Reader {
    id: ClientId,
    task: tokio::task::JoinHandle<(Vec<String>, u64)>,
    /// Messages received so far (for waiting on progress).
    count: Arc<AtomicU64>,
    /// Where it is connected now.
    at: Arc<Mutex<String>>,
}

/// On a 1012 it comes back on another live gateway: the `pick`-th of them (round robin).
fn spawn_reader(mut rc: RecoveringClient, url: String, live: Live, pick: usize) -> Reader {
    let id: ClientId = rc.client_id.parse().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let at = Arc::new(Mutex::new(url));
    let (c, a) = (count.clone(), at.clone());
    let task = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut moves = 0;
        loop {
            match rc.next_or_closed(Duration::from_secs(20)).await {
                Ok(Some(m)) if m == "end" => return (got, moves),
                Ok(Some(m)) => {
                    got.push(m);
                    c.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => panic!("client {}: nothing for 20 s after {} messages", rc.client_id, got.len()),
                Err(Some((1012, _))) => {
                    // The gateway restarts: come back on another one with the token.
                    let here = a.lock().unwrap().clone();
                    let others: Vec<String> = live.lock().unwrap().iter().filter(|u| **u != here).cloned().collect();
                    let there = others[pick % others.len()].clone();
                    let (token, received) = (rc.token.clone(), rc.received);
                    // The old socket goes, as a browser's does once the close frame came.
                    drop(rc.ws);
                    let resumed = RecoveringClient::resume_with(&there, &token, received).await;
                    assert!(
                        matches!(resumed.outcome, Outcome::Resumed { .. }),
                        "client {} on {there}: {:?}",
                        rc.client_id,
                        resumed.outcome
                    );
                    assert_eq!(resumed.client_id, rc.client_id, "the same client id after the move");
                    rc = resumed;
                    *a.lock().unwrap() = there;
                    moves += 1;
                }
                Err(other) => panic!("client {}: closed with {other:?}", rc.client_id),
            }
        }
    });
    Reader { id, task, count, at }
}

/// A register, `n` gateways with recovery, a worker logging its events, a backend linked to
/// every gateway, and the gateways clients may come back to.
struct Cluster {
    register: RegisterHandle,
    gateways: Vec<GatewayHandle>,
    _worker: WorkerHandle,
    log: EventLog,
    backend: GatewayClient,
    live: Live,
}

impl Cluster {
    async fn start(n: usize) -> Self {
        let register = RegisterHandle::start(SECRET).await;
        let mut gateways = Vec::new();
        for _ in 0..n {
            gateways.push(gateway(&register).await);
        }
        let log = EventLog::default();
        let worker = WorkerHandle::start("w", &[register.addr], SECRET, log.clone());
        for g in &gateways {
            wait_for_workers(g, 1).await;
        }
        let backend = gateway_client(&[register.addr], SECRET, n).await;
        let live: Live = Arc::new(Mutex::new(gateways.iter().map(|g| g.ws_url.clone()).collect()));
        Self { register, gateways, _worker: worker, log, backend, live }
    }
}

/// Client `k` connected to `url` with recovery, bound to uid `u{k}`, in groups `g{k}` and
/// `all`, reading on its own task (see [`spawn_reader`]).
async fn tracked(backend: &GatewayClient, url: &str, k: usize, live: &Live, pick: usize) -> Reader {
    let rc = RecoveringClient::connect(url).await;
    let id: ClientId = rc.client_id.parse().unwrap();
    backend.bind_uid(&id, &format!("u{k}")).await.unwrap();
    backend.join_group(&id, &format!("g{k}")).await.unwrap();
    backend.join_group(&id, "all").await.unwrap();
    spawn_reader(rc, url.to_string(), live.clone(), pick)
}

/// Sends numbered messages without a pause until `stop`: to a client's id, its uid, its group,
/// the group of all, and everyone. Returns what each client must get, in order.
fn spawn_sender(
    backend: GatewayClient,
    clients: Vec<ClientId>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Vec<String>>> {
    tokio::spawn(async move {
        let mut expected = vec![Vec::new(); clients.len()];
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let text = format!("m{n}");
            let k = (n as usize / 5) % clients.len();
            let sent = match n % 5 {
                0 => backend.send_to_client(&clients[k], text.clone()).await,
                1 => backend.send_to_uid(&format!("u{k}"), text.clone()).await,
                2 => backend.send_to_group(&format!("g{k}"), text.clone()).await,
                3 => backend.send_to_group("all", text.clone()).await,
                _ => backend.send_to_all(text.clone()).await,
            };
            match sent {
                Ok(()) => {}
                // A gateway that has just joined is listed before the backend's link to it is
                // up: a call to every gateway says it missed that one (it holds no client of
                // ours yet). Whether the clients got everything is checked at the end.
                Err(gw_gateway_client::ClientError::Unreachable { .. }) => {}
                Err(e) => panic!("send {text}: {e}"),
            }
            for (i, e) in expected.iter_mut().enumerate() {
                if n % 5 >= 3 || i == k {
                    e.push(text.clone());
                }
            }
            // Pacing, not waiting for anything: about a thousand messages a second.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        expected
    })
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_gateway_under_load_loses_and_repeats_nothing() {
    let _ = tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or("off".into())).try_init();
    let Cluster { register, mut gateways, _worker, log, backend, live } = Cluster::start(2).await;
    let mut readers = Vec::new();
    for k in 0..CLIENTS {
        readers.push(tracked(&backend, &gateways[k % 2].ws_url, k, &live, 0).await);
    }
    let ids: Vec<ClientId> = readers.iter().map(|r| r.id.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(backend.clone(), ids.clone(), stop.clone());
    let progress = |readers: &[Reader], more: u64| {
        let base: Vec<u64> = readers.iter().map(|r| r.count.load(Ordering::Relaxed)).collect();
        move |readers: &[Reader]| readers.iter().zip(&base).all(|(r, b)| r.count.load(Ordering::Relaxed) >= b + more)
    };
    let p = progress(&readers, 30);
    until("messages flowing", || p(&readers)).await;

    // The oldest gateway in turn: stopped gracefully (its clients handed to the other one,
    // where they come back), then a new one joins.
    for round in 0..ROUNDS {
        let old = gateways.remove(0);
        let old_url = old.ws_url.clone();
        live.lock().unwrap().retain(|u| *u != old_url);
        // It picks its successor among the gateways the register lists: the one left.
        let others: std::collections::BTreeSet<String> = gateways.iter().map(|g| g.gw.address().to_string()).collect();
        let stopping = old.gw.clone();
        until("the stopping gateway knows exactly the others", || stopping.peers() == others).await;
        old.stop().await;
        let shipped = stopping.state.metrics.handover_shipped_clients.load(Ordering::Relaxed);
        assert!(shipped >= CLIENTS as u64 / 2, "round {round}: the stopped gateway handed {shipped} clients over");
        // It stopped only after its successor (the gateway left, which adopted nothing before
        // this round) said the whole hand-over was applied.
        assert_eq!(gateways[0].metric("handover_finished"), 1, "round {round}");
        until("every client away from the stopped gateway", || {
            readers.iter().all(|r| *r.at.lock().unwrap() != old_url)
        })
        .await;
        let p = progress(&readers, 20);
        until("messages flowing after the restart", || p(&readers)).await;
        let new = gateway(&register).await;
        wait_for_workers(&new, 1).await;
        assert!(backend.wait_for_gateways(2, Duration::from_secs(10)).await, "the backend links to the new gateway");
        live.lock().unwrap().push(new.ws_url.clone());
        gateways.push(new);
    }

    let total_moves = finish(&backend, readers, sender, stop, &log).await;
    // The first gateway's clients moved at every round, the second's at every round but one.
    let half = CLIENTS as u64 / 2;
    assert_eq!(total_moves, half * ROUNDS + half * (ROUNDS - 1));
}

/// Stops the sender, tells each client to end, and checks that each got every message once,
/// in order, and that the worker saw one connect and a resume per move, never a close. Returns
/// the moves of all clients.
async fn finish(
    backend: &GatewayClient,
    readers: Vec<Reader>,
    sender: tokio::task::JoinHandle<Vec<Vec<String>>>,
    stop: Arc<AtomicBool>,
    log: &EventLog,
) -> u64 {
    let ids: Vec<ClientId> = readers.iter().map(|r| r.id.clone()).collect();
    stop.store(true, Ordering::Relaxed);
    let mut expected = sender.await.unwrap();
    for (r, e) in ids.iter().zip(expected.iter_mut()) {
        backend.send_to_client(r, "end").await.unwrap();
        e.shrink_to_fit();
    }
    let mut total_moves = 0;
    for (r, e) in readers.into_iter().zip(&expected) {
        let (got, moves) = r.task.await.unwrap();
        total_moves += moves;
        if got != *e {
            let first = got.iter().zip(e).position(|(g, x)| g != x).unwrap_or(got.len().min(e.len()));
            panic!(
                "client {}: {} messages, {} expected; first difference at {first}: got {:?}, expected {:?}",
                r.id,
                got.len(),
                e.len(),
                &got[first.saturating_sub(2)..(first + 3).min(got.len())],
                &e[first.saturating_sub(2)..(first + 3).min(e.len())]
            );
        }
        // The worker saw one connect and a resume per move, never a close.
        let events: Vec<String> =
            log.of(&r.id.to_string()).into_iter().filter(|e| !e.starts_with("message:")).collect();
        assert_eq!(events.first().map(String::as_str), Some("connect"), "{events:?}");
        assert_eq!(events.iter().filter(|e| e.starts_with("resume:")).count() as u64, moves, "{events:?}");
        assert!(!events.contains(&"close".to_string()), "client {}: {events:?}", r.id);
    }
    total_moves
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_coming_back_to_a_gateway_that_did_not_adopt_them_are_relayed_to_the_one_that_did() {
    let Cluster { register: _register, mut gateways, _worker, log, backend, live } = Cluster::start(3).await;
    // Every client on the first gateway; on its stop, half come back to each of the others:
    // one adopted them, the other relays them there.
    let mut readers = Vec::new();
    for k in 0..8 {
        readers.push(tracked(&backend, &gateways[0].ws_url, k, &live, k).await);
    }
    let ids: Vec<ClientId> = readers.iter().map(|r| r.id.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(backend.clone(), ids, stop.clone());
    until("messages flowing", || readers.iter().all(|r| r.count.load(Ordering::Relaxed) >= 30)).await;
    let old = gateways.remove(0);
    let old_url = old.ws_url.clone();
    live.lock().unwrap().retain(|u| *u != old_url);
    let stopping = old.gw.clone();
    until("the stopping gateway knows its peers", || stopping.peers().len() == 2).await;
    old.stop().await;
    until("every client back", || readers.iter().all(|r| *r.at.lock().unwrap() != old_url)).await;
    let base: Vec<u64> = readers.iter().map(|r| r.count.load(Ordering::Relaxed)).collect();
    until("messages flowing after the stop", || {
        readers.iter().zip(&base).all(|(r, b)| r.count.load(Ordering::Relaxed) >= b + 20)
    })
    .await;
    let moves = finish(&backend, readers, sender, stop, &log).await;
    assert_eq!(moves, 8);
    let adopted: Vec<u64> = gateways.iter().map(|g| g.metric("handover_adopted_clients")).collect();
    let relayed: Vec<u64> = gateways.iter().map(|g| g.metric("relay_opened_total")).collect();
    assert!(adopted.contains(&8) && adopted.contains(&0), "one gateway adopted all 8: {adopted:?}");
    let other = adopted.iter().position(|a| *a == 0).unwrap();
    assert_eq!(relayed[other], 4, "the other relayed the 4 that came back to it: {relayed:?}");
}

/// A client of the stopped gateway whose messages are `m1..=m{n}` (sent by id) reads them all.
async fn numbered_client(c: &Cluster, url: &str, n: u64) -> RecoveringClient {
    let mut rc = RecoveringClient::connect(url).await;
    let id: ClientId = rc.client_id.parse().unwrap();
    for k in 1..=n {
        c.backend.send_to_client(&id, format!("m{k}")).await.unwrap();
    }
    for k in 1..=n {
        assert_eq!(rc.recv().await, format!("m{k}"));
    }
    rc
}

/// Sends `m{from}..=m{to}` to the client by id (wherever it is now) and checks that it reads
/// exactly those, in order.
async fn more_numbered(c: &Cluster, rc: &mut RecoveringClient, from: u64, to: u64) {
    let id: ClientId = rc.client_id.parse().unwrap();
    for k in from..=to {
        c.backend.send_to_client(&id, format!("m{k}")).await.unwrap();
    }
    for k in from..=to {
        assert_eq!(rc.recv().await, format!("m{k}"));
    }
    rc.expect_no_more().await;
}

/// A cluster of two gateways whose first, with one client of ours that got `m1..=m5`, was
/// stopped gracefully (its client handed to the second and closed with 1012): the cluster, the
/// client, and the stopped gateway's internal address.
async fn first_gateway_stopped() -> (Cluster, RecoveringClient, std::net::SocketAddr) {
    let Cluster { register, mut gateways, _worker, log, backend, live } = Cluster::start(2).await;
    let c = Cluster { register, gateways: Vec::new(), _worker, log, backend, live };
    let mut rc = numbered_client(&c, &gateways[0].ws_url, 5).await;
    let old = gateways.remove(0);
    let (internal, stopping) = (old.internal, old.gw.clone());
    until("the stopping gateway knows the other", || stopping.peers().len() == 1).await;
    old.stop().await;
    assert!(matches!(rc.next_or_closed(Duration::from_secs(5)).await, Err(Some((1012, _)))));
    (c, rc, internal)
}

/// The stopped gateway's client comes back to `via` at once (which may not have heard its
/// peers' lists yet), is relayed to its adopter, resumes under its id and gets `m6..=m15`.
async fn resumes_relayed_through(c: &Cluster, rc: RecoveringClient, via: &GatewayHandle) {
    let (token, received, cid) = (rc.token.clone(), rc.received, rc.client_id.clone());
    drop(rc.ws);
    let mut rc = RecoveringClient::resume_with(&via.ws_url, &token, received).await;
    assert!(matches!(rc.outcome, Outcome::Resumed { replayed: 0 }), "{:?}", rc.outcome);
    assert_eq!(rc.client_id, cid, "the same client id");
    assert_eq!(via.metric("relay_opened_total"), 1, "relayed to the gateway that adopted it");
    more_numbered(c, &mut rc, 6, 15).await;
    assert!(!c.log.of(&cid).contains(&"close".to_string()), "{:?}", c.log.of(&cid));
}

fn with_recovery(cfg: &mut gw_config::GatewayConfig) {
    cfg.recovery = RecoveryConfig { enabled: true, window: Duration::from_secs(30), ..RecoveryConfig::default() };
}

/// A gateway restarted on the address it had (compose's `docker compose restart gateway-1`):
/// its previous run handed its clients to another gateway, and a client that comes back to the
/// restarted one is relayed there (once it has heard of the adoption), not told `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_on_its_own_address_relays_its_earlier_clients_to_their_adopter() {
    let (c, rc, internal) = first_gateway_stopped().await;
    let again = GatewayHandle::start_on(bind_again(internal).await, &[c.register.addr], SECRET, with_recovery).await;
    resumes_relayed_through(&c, rc, &again).await;
}

/// A gateway that joined after a hand-over, and that the adopter cannot reach (a new task
/// whose name the adopter cannot resolve yet, as in a rolling `docker service update`), still
/// relays the stopped gateway's clients to their adopter: it links to its peers, which say
/// what they adopted, instead of waiting to be told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_joined_after_a_hand_over_asks_its_peers_where_the_clients_went() {
    let (c, rc, _) = first_gateway_stopped().await;
    // The new gateway advertises an address nobody reaches: the adopter cannot tell it.
    let unreachable = cut_proxy::CutProxy::start("ws://127.0.0.1:9/").await;
    unreachable.down();
    let advertised = unreachable.url.trim_start_matches("ws://").trim_end_matches('/').to_string();
    let late = GatewayHandle::start_with(&[c.register.addr], SECRET, |cfg| {
        with_recovery(cfg);
        cfg.advertise = Some(advertised);
    })
    .await;
    resumes_relayed_through(&c, rc, &late).await;
}

/// A stopping gateway hands its held clients over as soon as they are held, whatever else it
/// still serves: a socket that has not finished its handshake (a slow client; a relayed
/// client's search for its gateway) does not keep them from their successor, where they are
/// coming back (before: it did, for the grace period, and a client back at once was told it was
/// not recovered after the successor's wait). A client that finishes its handshake there after
/// the hand-over, asking to resume, is closed with 1012 before anything is opened, and resumes
/// at the successor with its token unused; one asking to open a new client with recovery is
/// closed with 1012 too (it would be held there after the hand-over, and lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handshake_does_not_hold_up_a_hand_over_and_a_resume_after_it_is_sent_elsewhere() {
    let register = RegisterHandle::start(SECRET).await;
    // Longer than the successor waits for a hand-over to be installed (5 s).
    let patient = |cfg: &mut gw_config::GatewayConfig| {
        with_recovery(cfg);
        cfg.grace_period = Duration::from_secs(20);
        cfg.handshake_timeout = Duration::from_secs(20);
    };
    let old = GatewayHandle::start_with(&[register.addr], SECRET, patient).await;
    let new = GatewayHandle::start_with(&[register.addr], SECRET, patient).await;
    let log = EventLog::default();
    let worker = WorkerHandle::start("w", &[register.addr], SECRET, log.clone());
    wait_for_workers(&old, 1).await;
    wait_for_workers(&new, 1).await;
    let backend = gateway_client(&[register.addr], SECRET, 2).await;
    let c = Cluster { register, gateways: Vec::new(), _worker: worker, log, backend, live: Live::default() };
    let mut a = numbered_client(&c, &old.ws_url, 5).await;
    let b = numbered_client(&c, &old.ws_url, 3).await;
    // A socket that says nothing yet, accepted by the old gateway.
    let addr = old.ws_url.trim_start_matches("ws://").trim_end_matches('/').to_string();
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let silent_new = tokio::net::TcpStream::connect(&addr).await.unwrap();
    until("the silent sockets accepted", || old.gw.open_sockets() == 4).await;
    let stopping = old.gw.clone();
    until("the old gateway knows the new one", || stopping.peers().len() == 1).await;
    old.begin_stop();
    assert!(matches!(a.next_or_closed(Duration::from_secs(5)).await, Err(Some((1012, _)))));
    let (token, received, cid) = (a.token.clone(), a.received, a.client_id.clone());
    drop(a.ws);
    let started = std::time::Instant::now();
    let mut a = RecoveringClient::resume_with(&new.ws_url, &token, received).await;
    assert!(matches!(a.outcome, Outcome::Resumed { replayed: 0 }), "{:?} after {:?}", a.outcome, started.elapsed());
    assert_eq!(a.client_id, cid);
    more_numbered(&c, &mut a, 6, 10).await;
    // `b` was handed over too: its resume at the old gateway, after the hand-over, is sent
    // elsewhere (1012 first, no control frame), its token left as it was.
    let url = format!("{}?gw_recover=1&gw_resume={}&gw_received={}", old.ws_url, b.token, b.received);
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), silent).await.expect("the handshake completes");
    match ws.next().await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1012, "{f:?}");
        }
        other => panic!("expected a close with 1012 first, got {other:?}"),
    }
    // A new client asking for recovery there is not opened (it would be held there after the
    // hand-over and lost): closed with 1012 before anything, it opens on another gateway.
    let url = format!("{}?gw_recover=1", old.ws_url);
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), silent_new).await.expect("the handshake completes");
    match ws.next().await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1012, "{f:?}");
        }
        other => panic!("expected a close with 1012 first, got {other:?}"),
    }
    let (token, received, cid) = (b.token.clone(), b.received, b.client_id.clone());
    drop(b.ws);
    let mut b = RecoveringClient::resume_with(&new.ws_url, &token, received).await;
    assert!(matches!(b.outcome, Outcome::Resumed { replayed: 0 }), "{:?}", b.outcome);
    assert_eq!(b.client_id, cid);
    more_numbered(&c, &mut b, 4, 8).await;
    tokio::time::timeout(Duration::from_secs(10), old.stop()).await.expect("the old gateway ends");
    for id in [&a.client_id, &b.client_id] {
        let events = c.log.of(id);
        assert!(!events.contains(&"close".to_string()), "{id}: {events:?}");
        assert_eq!(events.iter().filter(|e| e.starts_with("resume:")).count(), 1, "{id}: {events:?}");
    }
}

/// A chat room: `join` puts the client in `room`; `say:<text>` sends `<text>` to the room.
#[derive(Clone)]
struct Room;

impl gw_business_worker::Events for Room {
    async fn on_message(
        &self,
        ctx: &mut gw_business_worker::Context,
        msg: gw_business_worker::Message,
    ) -> gw_business_worker::HandlerResult {
        let text = msg.as_text().unwrap_or_default().to_string();
        if text == "join" {
            let id = ctx.client_id.clone();
            ctx.gateway().join_group(&id, "room").await?;
            ctx.send("joined").await?;
        } else if let Some(said) = text.strip_prefix("say:") {
            ctx.gateway().send_to_group("room", said.to_string()).await?;
        }
        Ok(())
    }
}

/// What clients say to a room reaches the room's members on a gateway being stopped exactly
/// once, in order, through the hand-over: the sends come from two workers answering client
/// events (as in the chat demo), not from a backend, and the moved clients come back through a
/// gateway that joined after the hand-over (as a swarm's replacement task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_messages_from_client_events_reach_the_moved_clients_once_through_a_hand_over() {
    let _ = tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or("off".into())).try_init();
    let register = RegisterHandle::start(SECRET).await;
    let (x, a) = (gateway(&register).await, gateway(&register).await);
    let w1 = WorkerHandle::start("w1", &[register.addr], SECRET, Room);
    let w2 = WorkerHandle::start("w2", &[register.addr], SECRET, Room);
    for g in [&x, &a] {
        wait_for_workers(g, 2).await;
    }
    // Members on the gateway to be stopped.
    let mut members = Vec::new();
    for _ in 0..4 {
        let mut rc = RecoveringClient::connect(&x.ws_url).await;
        rc.ws.send("join").await;
        assert_eq!(rc.recv().await, "joined");
        members.push(rc);
    }
    // Speakers on the other gateway, saying numbered lines without a pause.
    let stop = Arc::new(AtomicBool::new(false));
    let mut speakers = Vec::new();
    for s in 0..4 {
        let (url, stop) = (a.ws_url.clone(), stop.clone());
        speakers.push(tokio::spawn(async move {
            let mut ws = WsClient::connect(&url).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                ws.send(&format!("say:s{s}:{n}")).await;
                // Pacing (about 400 lines a second in all), reading meanwhile so that the
                // gateway's pings are answered.
                let _ = ws.next(Duration::from_millis(10)).await;
            }
            ws.close().await;
            n
        }));
    }
    let count = Arc::new(AtomicU64::new(0));
    let late_url: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let mut readers = Vec::new();
    for mut rc in members {
        let (count, late_url) = (count.clone(), late_url.clone());
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match rc.next_or_closed(Duration::from_secs(20)).await {
                    Ok(Some(m)) if m == "end" => return got,
                    Ok(Some(m)) => {
                        got.push(m);
                        count.fetch_add(1, Ordering::Relaxed);
                        if rc.received % 100 == 0 {
                            rc.ack().await;
                        }
                    }
                    Ok(None) => panic!("nothing for 20 s after {} messages", got.len()),
                    Err(Some((1012, _))) => {
                        let there = loop {
                            if let Some(u) = late_url.lock().unwrap().clone() {
                                break u;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        };
                        let (token, received, cid) = (rc.token.clone(), rc.received, rc.client_id.clone());
                        drop(rc.ws);
                        rc = RecoveringClient::resume_with(&there, &token, received).await;
                        assert!(matches!(rc.outcome, Outcome::Resumed { .. }), "{:?}", rc.outcome);
                        assert_eq!(rc.client_id, cid);
                    }
                    Err(other) => panic!("closed with {other:?}"),
                }
            }
        }));
    }
    until("room messages flowing", || count.load(Ordering::Relaxed) >= 400).await;
    let stopping = x.gw.clone();
    until("the stopping gateway knows the other", || stopping.peers().len() == 1).await;
    x.stop().await;
    // The replacement joins after the hand-over; the moved clients come back through it.
    let late = gateway(&register).await;
    *late_url.lock().unwrap() = Some(late.ws_url.clone());
    let base = count.load(Ordering::Relaxed);
    until("room messages flowing after the move", || count.load(Ordering::Relaxed) >= base + 400).await;
    stop.store(true, Ordering::Relaxed);
    let mut said = Vec::new();
    for s in speakers {
        said.push(s.await.unwrap());
    }
    // Every line reached the room: the end marker after them all, through the same workers.
    let mut closer = WsClient::connect(&a.ws_url).await;
    closer.send("say:end").await;
    let mut gots = Vec::new();
    for r in readers {
        gots.push(r.await.unwrap());
    }
    for (k, got) in gots.iter().enumerate() {
        let mut missing = Vec::new();
        for (s, n) in said.iter().enumerate() {
            for i in 1..=*n {
                if !got.contains(&format!("s{s}:{i}")) {
                    missing.push(format!("s{s}:{i}"));
                }
            }
        }
        assert!(missing.is_empty(), "member {k}: {} messages, missing {missing:?}", got.len());
    }
    for (k, got) in gots.into_iter().enumerate() {
        for (s, n) in said.iter().enumerate() {
            let mine: Vec<u64> = got
                .iter()
                .filter_map(|m| m.strip_prefix(&format!("s{s}:")).map(|v| v.parse::<u64>().unwrap()))
                .collect();
            assert_eq!(mine, (1..=*n).collect::<Vec<_>>(), "member {k}: speaker s{s}'s lines, once, in order");
        }
    }
    drop((w1, w2, late, a, register));
}
