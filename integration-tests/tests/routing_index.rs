//! Issue 16, part 1: the routing index. Gateways tell the workers and gateway clients linked to
//! them which uids and groups they hold; senders route uid and group calls only to those
//! gateways. These tests check the rules the README states ("Routing index"):
//!
//! - a call reaches only the gateways that hold its uid or group, a call nobody holds goes
//!   nowhere and is counted, and with the index off every gateway gets every call;
//! - read-your-writes: a send right after the sender's own bind or join reaches the client,
//!   wherever it is connected;
//! - another sender's bind is visible within a bounded window, measured here;
//! - a gateway whose index has not (yet, or again after its link restarted) fully arrived gets
//!   every call;
//! - after any churn, the index answers exactly what asking every gateway answers.
//!
//! Non-delivery is proven without silence windows: a marker sent to every client afterwards
//! over the same links arrives only after every earlier command of those links was executed,
//! and then the gateways' command counters say which gateways got what.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_gateway_client::{ClientId, GatewayClient};
use gw_integration_tests::fake_gateway::FakeGateway;
use gw_integration_tests::*;
use gw_proto::{Command, IndexChange, IndexUpdate};

const SECRET: &str = "test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

/// Answers `id` with the client's id.
#[derive(Clone)]
struct Ids;

impl Events for Ids {
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        if msg.as_text() == Some("id") {
            ctx.send(ctx.client_id.to_string()).await?;
        }
        Ok(())
    }
}

/// A connected client and its id.
struct Client {
    ws: WsClient,
    id: ClientId,
}

async fn client(gw: &GatewayHandle) -> Client {
    let mut ws = gw.client().await;
    ws.send("id").await;
    let id = ws.recv_id().await;
    Client { ws, id }
}

/// A register, `n` gateways and a worker answering `id`.
struct Cluster {
    reg: RegisterHandle,
    gws: Vec<GatewayHandle>,
    _worker: WorkerHandle,
}

async fn cluster(n: usize) -> Cluster {
    let reg = RegisterHandle::start(SECRET).await;
    let mut gws = Vec::new();
    for _ in 0..n {
        gws.push(GatewayHandle::start(&[reg.addr], SECRET).await);
    }
    let worker = WorkerHandle::start("w1", &[reg.addr], SECRET, Ids);
    for gw in &gws {
        wait_for_workers(gw, 1).await;
    }
    Cluster { reg, gws, _worker: worker }
}

impl Cluster {
    /// A gateway client linked to every gateway, with the routing index on or off.
    async fn sender(&self, index: bool) -> GatewayClient {
        let g = GatewayClient::builder([self.reg.addr.to_string()])
            .secret(SECRET)
            .link_config(fast_link())
            .routing_index(index)
            .connect()
            .await
            .unwrap();
        assert!(g.wait_for_gateways(self.gws.len(), WAIT).await, "sender not linked to every gateway");
        g
    }

    fn commands(&self) -> Vec<u64> {
        self.gws.iter().map(|g| g.metric("commands")).collect()
    }
}

/// Makes `g` watch the index (its first uid call) and waits until every gateway's has arrived.
async fn index_ready(g: &GatewayClient, gateways: u64) {
    g.send_to_uid("warm-up", "nobody has this uid").await.unwrap();
    eventually(WAIT, "the index of every gateway", || {
        let complete = g.routing_stats().complete_links;
        async move { complete == gateways }
    })
    .await;
}

/// Sends a marker to every client through `g` and waits until each has it (with whatever came
/// before on the same links): afterwards every earlier command of `g` has been executed.
async fn settle(g: &GatewayClient, clients: &mut [&mut Client], expect_before: &[(&ClientId, &str)]) {
    g.send_to_all("marker").await.unwrap();
    for c in clients.iter_mut() {
        let mut got = Vec::new();
        loop {
            let m = c.ws.recv().await;
            if m == "marker" {
                break;
            }
            got.push(m);
        }
        let want: Vec<&str> = expect_before.iter().filter(|(id, _)| **id == c.id).map(|(_, m)| *m).collect();
        assert_eq!(got, want, "what client {} got before the marker", c.id);
    }
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[tokio::test]
async fn uid_and_group_calls_reach_only_the_gateways_that_hold_them_and_misses_are_counted() {
    let c = cluster(3).await;
    let (mut ca, mut cb, mut cc) = (client(&c.gws[0]).await, client(&c.gws[1]).await, client(&c.gws[2]).await);
    let api = c.sender(true).await;
    let all_gateways = c.sender(false).await;
    api.bind_uid(&ca.id, "ann").await.unwrap();
    api.join_group(&cb.id, "room").await.unwrap();
    index_ready(&api, 3).await;
    settle(&api, &mut [&mut ca, &mut cb, &mut cc], &[]).await;

    // A uid on gateway 0 only, a group on gateway 1 only.
    let before = c.commands();
    api.send_to_uid("ann", "to ann").await.unwrap();
    api.send_to_group("room", "to room").await.unwrap();
    let (a, b) = (ca.id.clone(), cb.id.clone());
    settle(&api, &mut [&mut ca, &mut cb, &mut cc], &[(&a, "to ann"), (&b, "to room")]).await;
    assert_eq!(delta(&c.commands(), &before), vec![2, 2, 1], "each send reached only its holder (+1 marker)");

    // Queries too.
    let before_q: Vec<u64> = c.gws.iter().map(|g| g.metric("queries")).collect();
    let ids = api.client_ids_by_uid("ann").await.unwrap().complete().unwrap();
    assert_eq!(ids, vec![ca.id.clone()]);
    let n = api.client_count_by_group("room").await.unwrap().complete().unwrap();
    assert_eq!(n, 1);
    let after_q: Vec<u64> = c.gws.iter().map(|g| g.metric("queries")).collect();
    assert_eq!(delta(&after_q, &before_q), vec![1, 1, 0], "each query asked only the holder");

    // Nobody holds these: the calls go nowhere and are counted.
    let stats = api.routing_stats();
    let before = c.commands();
    api.send_to_uid("nobody", "lost?").await.unwrap();
    api.send_to_groups(&["empty-1", "empty-2"], "lost?").await.unwrap();
    settle(&api, &mut [&mut ca, &mut cb, &mut cc], &[]).await;
    assert_eq!(delta(&c.commands(), &before), vec![1, 1, 1], "only the marker went out");
    let after = api.routing_stats();
    assert_eq!(after.misses - stats.misses, 2);
    assert!(after.skipped >= stats.skipped + 6);
    assert_eq!((after.uids, after.groups), (1, 1), "the index holds ann and room");

    // With the index off, every gateway gets every uid call, as in GatewayWorker.
    let before = c.commands();
    all_gateways.send_to_uid("ann", "to ann, everywhere").await.unwrap();
    settle(&all_gateways, &mut [&mut ca, &mut cb, &mut cc], &[(&a, "to ann, everywhere")]).await;
    assert_eq!(delta(&c.commands(), &before), vec![2, 2, 2]);
    assert_eq!(all_gateways.routing_stats().routed, 0);
    assert!(!all_gateways.routing_stats().enabled);
}

#[tokio::test]
async fn a_send_right_after_the_senders_own_bind_or_join_reaches_the_client_wherever_it_is() {
    let c = cluster(3).await;
    let mut clients = Vec::new();
    for i in 0..24 {
        clients.push(client(&c.gws[i % 3]).await);
    }
    let api = c.sender(true).await;
    index_ready(&api, 3).await;
    let before = api.routing_stats();
    for (i, cl) in clients.iter_mut().enumerate() {
        // No wait between the write and the send: the gateway's index update about this bind
        // cannot have arrived yet, so only the sender's own record of it can route the send.
        api.bind_uid(&cl.id, &format!("fresh-{i}")).await.unwrap();
        api.send_to_uid(&format!("fresh-{i}"), format!("uid {i}")).await.unwrap();
        api.join_group(&cl.id, &format!("g-{i}")).await.unwrap();
        api.send_to_group(&format!("g-{i}"), format!("group {i}")).await.unwrap();
        assert_eq!(cl.ws.recv().await, format!("uid {i}"));
        assert_eq!(cl.ws.recv().await, format!("group {i}"));
    }
    let after = api.routing_stats();
    assert_eq!(after.misses, before.misses, "no send after an own write went nowhere");
    assert!(after.skipped >= before.skipped + 2 * 24 * 2, "each send skipped the two other gateways");
    // The index confirms the writes: the sender's own records are dropped, the gateways' remain.
    eventually(WAIT, "the index to hold every fresh uid and group", || {
        let s = api.routing_stats();
        async move { s.uids == 24 && s.groups == 24 }
    })
    .await;
}

#[tokio::test]
async fn another_senders_bind_is_visible_within_a_bounded_measured_window() {
    let c = cluster(3).await;
    let mut clients = Vec::new();
    for i in 0..30 {
        clients.push(client(&c.gws[i % 3]).await);
    }
    let reader = c.sender(true).await;
    let writer = c.sender(true).await;
    index_ready(&reader, 3).await;
    // One internal round trip, for comparison: a query to one gateway.
    let mut rtts = Vec::new();
    for cl in &clients {
        let t = Instant::now();
        assert!(reader.is_online(&cl.id).await.unwrap());
        rtts.push(t.elapsed());
    }
    // The documented bound: a link that delivers nothing for this long is declared dead.
    let bound = fast_link().heartbeat_timeout;
    let mut windows = Vec::new();
    for (i, cl) in clients.iter_mut().enumerate() {
        let uid = format!("other-{i}");
        writer.bind_uid(&cl.id, &uid).await.unwrap();
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            let misses = reader.routing_stats().misses;
            attempt += 1;
            reader.send_to_uid(&uid, format!("attempt {attempt}")).await.unwrap();
            if reader.routing_stats().misses == misses {
                break;
            }
            assert!(start.elapsed() < bound, "{uid} bound by another sender not visible after {bound:?}");
            tokio::task::yield_now().await;
        }
        windows.push(start.elapsed());
        // The first send the index routed is the one the client gets; earlier ones went nowhere.
        assert_eq!(cl.ws.recv().await, format!("attempt {attempt}"));
    }
    rtts.sort();
    windows.sort();
    let (rtt, median, max) = (rtts[rtts.len() / 2], windows[windows.len() / 2], windows[windows.len() - 1]);
    println!(
        "cross-sender window over {} binds: median {} µs, max {} µs (one query round trip: median {} µs; bound {} ms)",
        windows.len(),
        median.as_micros(),
        max.as_micros(),
        rtt.as_micros(),
        bound.as_millis()
    );
}

#[tokio::test]
async fn a_gateway_whose_index_has_not_arrived_gets_every_call_again_after_its_link_restarts() {
    let reg = RegisterHandle::start(SECRET).await;
    let real = GatewayHandle::start(&[reg.addr], SECRET).await;
    let fake = FakeGateway::start(reg.addr, SECRET).await;
    let api =
        GatewayClient::builder([reg.addr.to_string()]).secret(SECRET).link_config(fast_link()).connect().await.unwrap();
    assert!(api.wait_for_gateways(2, WAIT).await);
    let uid_sends = |link: usize| {
        fake.commands().into_iter().filter(|(l, c)| *l == link && matches!(c, Command::SendToUids { .. })).count()
    };

    // The first uid call asks for the index; the fake holds its answer, so it gets the call.
    api.send_to_uid("zed", "1").await.unwrap();
    eventually(WAIT, "the fake to be asked for its index", || {
        let w = fake.watching(0);
        async move { w }
    })
    .await;
    eventually(WAIT, "the real gateway's index", || {
        let n = api.routing_stats().complete_links;
        async move { n == 1 }
    })
    .await;
    api.send_to_uid("zed", "2").await.unwrap();
    eventually(WAIT, "both sends at the fake", || async { uid_sends(0) == 2 }).await;

    // Its index arrives, empty: uid calls stop going there and count as misses.
    fake.send_index(0, IndexUpdate { applied: 0, reset: true, complete: true, changes: vec![] }).await;
    eventually(WAIT, "the fake's index", || {
        let n = api.routing_stats().complete_links;
        async move { n == 2 }
    })
    .await;
    let misses = api.routing_stats().misses;
    api.send_to_uid("zed", "3").await.unwrap();
    api.send_to_all("marker").await.unwrap();
    eventually(WAIT, "the marker at the fake", || async {
        fake.commands().iter().any(|(_, c)| matches!(c, Command::SendToAll { .. }))
    })
    .await;
    assert_eq!(uid_sends(0), 2, "a send to a uid the fake does not hold did not go there");
    assert_eq!(api.routing_stats().misses, misses + 1);

    // The link restarts: until the new link's index arrives, the fake gets uid calls again.
    fake.drop_link(0);
    eventually(WAIT, "the link to come back and ask for the index", || {
        let back = fake.links() == 2 && fake.watching(1);
        async move { back }
    })
    .await;
    assert!(api.routing_stats().complete_links <= 1, "the new link's index is not complete");
    api.send_to_uid("zed", "4").await.unwrap();
    eventually(WAIT, "the send at the fake's new link", || async { uid_sends(1) == 1 }).await;

    // Its new index says it holds zed now: the uid calls go there, and not as misses.
    let update =
        IndexUpdate { applied: 0, reset: true, complete: true, changes: vec![IndexChange::UidOn("zed".into())] };
    fake.send_index(1, update).await;
    eventually(WAIT, "the fake's new index", || {
        let s = api.routing_stats();
        async move { s.complete_links == 2 && s.uids == 1 }
    })
    .await;
    let misses = api.routing_stats().misses;
    api.send_to_uid("zed", "5").await.unwrap();
    eventually(WAIT, "the send at the fake, routed by its index", || async { uid_sends(1) == 2 }).await;
    assert_eq!(api.routing_stats().misses, misses);
    drop(real);
}

#[tokio::test]
async fn after_any_churn_the_index_answers_what_asking_every_gateway_answers() {
    let c = cluster(3).await;
    let mut clients = Vec::new();
    for i in 0..24 {
        clients.push(client(&c.gws[i % 3]).await);
    }
    let indexed = c.sender(true).await;
    let everywhere = c.sender(false).await;
    let churner = c.sender(true).await;
    index_ready(&indexed, 3).await;
    let uids: Vec<String> = (0..6).map(|i| format!("u{i}")).collect();
    let groups: Vec<String> = (0..4).map(|i| format!("g{i}")).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut gone = Vec::new();
    for round in 0..400 {
        let at = next(clients.len());
        let id = clients[at].id.clone();
        match next(7) {
            0 | 1 => churner.bind_uid(&id, &uids[next(uids.len())]).await.unwrap(),
            2 => churner.unbind_uid(&id, &uids[next(uids.len())]).await.unwrap(),
            3 | 4 => churner.join_group(&id, &groups[next(groups.len())]).await.unwrap(),
            5 => churner.leave_group(&id, &groups[next(groups.len())]).await.unwrap(),
            _ if round % 50 == 0 => churner.ungroup(&groups[next(groups.len())]).await.unwrap(),
            _ if clients.len() > 12 => gone.push(clients.swap_remove(at)),
            _ => {}
        }
    }
    for c in gone {
        c.ws.close().await;
    }
    // Outside the window (bounded, see the test above) both must agree exactly.
    eventually(WAIT, "the indexed answers to match asking every gateway", || {
        let (indexed, everywhere, uids, groups) = (indexed.clone(), everywhere.clone(), uids.clone(), groups.clone());
        async move {
            let a = indexed.client_ids_by_uids(&uids).await.unwrap().complete().unwrap();
            let b = everywhere.client_ids_by_uids(&uids).await.unwrap().complete().unwrap();
            let mut ga = BTreeMap::new();
            let mut gb = BTreeMap::new();
            for g in &groups {
                ga.insert(g.clone(), indexed.client_ids_by_group(g).await.unwrap().complete().unwrap());
                gb.insert(g.clone(), everywhere.client_ids_by_group(g).await.unwrap().complete().unwrap());
            }
            a == b && ga == gb
        }
    })
    .await;
    let stats = indexed.routing_stats();
    assert!(stats.skipped > 0, "the indexed sender did skip gateways: {stats:?}");
}
