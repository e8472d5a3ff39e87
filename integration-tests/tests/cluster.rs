//! The cluster end to end: registers, gateways and workers on 127.0.0.1:0, real WebSocket clients.

use std::time::Duration;

use gw_integration_tests::*;
use gw_stock_apps::Echo;

const SECRET: &str = "test-secret-0123456789";

#[tokio::test]
async fn a_message_goes_to_the_worker_and_the_reply_comes_back() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _w = WorkerHandle::start("w1", &[reg.addr], SECRET, NamedEcho("w1".into()));
    wait_for_workers(&gw, 1).await;
    let mut c = gw.client().await;
    c.send("hello").await;
    assert_eq!(c.recv().await, "w1:hello");
    // Binary frames stay binary through the echo app.
    let mut c2 = gw.client().await;
    c2.send("x").await;
    assert_eq!(c2.recv().await, "w1:x");
    assert_eq!(gw.metric("messages_in"), 2);
}

#[tokio::test]
async fn events_of_one_client_arrive_in_order() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _w = WorkerHandle::start("w1", &[reg.addr], SECRET, Echo);
    wait_for_workers(&gw, 1).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(gw.client().await);
    }
    for i in 0..200 {
        for (n, c) in clients.iter_mut().enumerate() {
            c.send(&format!("{n}-{i}")).await;
        }
    }
    for (n, c) in clients.iter_mut().enumerate() {
        for i in 0..200 {
            assert_eq!(c.recv().await, format!("{n}-{i}"));
        }
    }
}

#[tokio::test]
async fn a_uid_bound_on_gateway_a_is_reached_from_a_client_on_gateway_b() {
    let reg = RegisterHandle::start(SECRET).await;
    let a = GatewayHandle::start(&[reg.addr], SECRET).await;
    let b = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _w = WorkerHandle::start("w1", &[reg.addr], SECRET, UidRelay);
    wait_for_workers(&a, 1).await;
    wait_for_workers(&b, 1).await;
    let mut alice = a.client().await;
    alice.send("bind alice").await;
    assert_eq!(alice.recv().await, "bound");
    let mut bob = b.client().await;
    bob.send("to alice hi from b").await;
    assert_eq!(alice.recv().await, "hi from b");
}

#[tokio::test]
async fn send_to_group_reaches_exactly_the_members_across_two_gateways() {
    let reg = RegisterHandle::start(SECRET).await;
    let a = GatewayHandle::start(&[reg.addr], SECRET).await;
    let b = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _w = WorkerHandle::start("w1", &[reg.addr], SECRET, Echo);
    wait_for_workers(&a, 1).await;
    wait_for_workers(&b, 1).await;
    let mut members = [a.client().await, b.client().await, b.client().await];
    let mut others = [a.client().await, b.client().await];
    for m in members.iter_mut() {
        m.send("j").await;
        assert_eq!(m.recv().await, "joined");
    }
    members[0].send("g:news").await;
    for m in members.iter_mut() {
        assert_eq!(m.recv().await, "g:news");
    }
    for o in others.iter_mut() {
        o.expect_silence(Duration::from_millis(300)).await;
    }
    // And from outside the cluster, through the gateway client library.
    let client = gateway_client(&[reg.addr], SECRET, 2).await;
    client.send_to_group("g", "from backend").await.unwrap();
    for m in members.iter_mut() {
        assert_eq!(m.recv().await, "from backend");
    }
    for o in others.iter_mut() {
        o.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_killed_worker_is_replaced_by_the_other_for_its_clients_whose_sockets_stay_open() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let w1 = WorkerHandle::start("w1", &[reg.addr], SECRET, NamedEcho("w1".into()));
    let _w2 = WorkerHandle::start("w2", &[reg.addr], SECRET, NamedEcho("w2".into()));
    wait_for_workers(&gw, 2).await;
    // Least-loaded routing spreads clients over both workers.
    let mut clients = Vec::new();
    let mut on_w1 = Vec::new();
    for i in 0..10 {
        let mut c = gw.client().await;
        c.send(&format!("m{i}")).await;
        let reply = c.recv().await;
        if reply.starts_with("w1:") {
            on_w1.push(i);
        }
        clients.push(c);
    }
    assert!(!on_w1.is_empty() && on_w1.len() < 10, "least-loaded routing should use both workers: {on_w1:?}");
    w1.kill();
    wait_for_workers(&gw, 1).await;
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&format!("after{i}")).await;
        let mut reply = c.recv().await;
        // At least once: w1 may have handled its client's last message without acknowledging it
        // before the crash; then w2 gets that message again, before anything newer.
        if on_w1.contains(&i) && reply == format!("w2:m{i}") {
            reply = c.recv().await;
        }
        assert_eq!(reply, format!("w2:after{i}"), "client {i} after the kill");
    }
    assert_eq!(gw.metric("connections"), 10, "no client socket was closed");
}

#[tokio::test]
async fn a_register_restarted_while_traffic_flows_changes_nothing_for_connected_clients() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _w = WorkerHandle::start("w1", &[reg.addr], SECRET, Echo);
    wait_for_workers(&gw, 1).await;
    let mut c = gw.client().await;
    let traffic = tokio::spawn(async move {
        for i in 0..300 {
            c.send(&format!("n{i}")).await;
            assert_eq!(c.recv().await, format!("n{i}"));
        }
        c
    });
    let reg = reg.restart().await;
    // The new register is repopulated by the gateway's re-announcement.
    let registry = reg.registry.clone();
    eventually(Duration::from_secs(5), "gateway re-announced", || {
        let r = registry.clone();
        async move { r.gateways().len() == 1 }
    })
    .await;
    let mut c = traffic.await.unwrap();
    c.send("still here").await;
    assert_eq!(c.recv().await, "still here");
    assert_eq!(gw.gw.worker_count(), 1, "the worker link never dropped");
    // A gateway started after the restart is discovered by the worker.
    let late = GatewayHandle::start(&[reg.addr], SECRET).await;
    wait_for_workers(&late, 1).await;
    let mut d = late.client().await;
    d.send("late").await;
    assert_eq!(d.recv().await, "late");
}

#[tokio::test]
async fn gateway_client_basic_calls_across_two_gateways() {
    let reg = RegisterHandle::start(SECRET).await;
    let a = GatewayHandle::start(&[reg.addr], SECRET).await;
    let b = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _w = WorkerHandle::start("w1", &[reg.addr], SECRET, WhoAmI);
    wait_for_workers(&a, 1).await;
    wait_for_workers(&b, 1).await;
    let client = gateway_client(&[reg.addr], SECRET, 2).await;

    let mut ca = a.client().await;
    let mut cb = b.client().await;
    ca.send("id").await;
    let id_a = ca.recv_id().await;
    cb.send("id").await;
    let id_b = cb.recv_id().await;

    assert!(client.is_online(&id_a).await.unwrap());
    assert!(client.is_online(&id_b).await.unwrap());
    client.send_to_client(&id_b, "direct").await.unwrap();
    assert_eq!(cb.recv().await, "direct");

    client.bind_uid(&id_a, "u1").await.unwrap();
    client.bind_uid(&id_b, "u1").await.unwrap();
    assert!(client.is_uid_online("u1").await.unwrap().complete().unwrap());
    assert!(!client.is_uid_online("nobody").await.unwrap().complete().unwrap());
    client.send_to_uid("u1", "to u1").await.unwrap();
    assert_eq!(ca.recv().await, "to u1");
    assert_eq!(cb.recv().await, "to u1");
    client.unbind_uid(&id_a, "u1").await.unwrap();
    client.send_to_uid("u1", "again").await.unwrap();
    assert_eq!(cb.recv().await, "again");
    ca.expect_silence(Duration::from_millis(200)).await;

    client.join_group(&id_a, "room").await.unwrap();
    client.send_to_group("room", "in room").await.unwrap();
    assert_eq!(ca.recv().await, "in room");
    client.leave_group(&id_a, "room").await.unwrap();
    client.send_to_group("room", "nobody hears").await.unwrap();

    client.send_to_all_except("everyone but a", std::slice::from_ref(&id_a)).await.unwrap();
    assert_eq!(cb.recv().await, "everyone but a");
    ca.expect_silence(Duration::from_millis(200)).await;

    client.close_client(&id_a).await.unwrap();
    assert_eq!(ca.expect_close().await.map(|c| c.0), Some(1000));
    let id = id_a.clone();
    eventually(Duration::from_secs(5), "closed client offline", || {
        let (client, id) = (client.clone(), id.clone());
        async move { !client.is_online(&id).await.unwrap() }
    })
    .await;
    assert!("garbage".parse::<gw_gateway_client::ClientId>().is_err());
}

#[tokio::test]
async fn client_ids_are_never_reused_across_gateway_restarts() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _w = WorkerHandle::start("w1", &[reg.addr], SECRET, WhoAmI);
    wait_for_workers(&gw, 1).await;
    let mut c = gw.client().await;
    c.send("id").await;
    let first = c.recv_id().await;
    let internal = gw.internal;
    gw.stop().await;
    assert_eq!(c.expect_close().await.map(|c| c.0), Some(1001), "clients get a going-away close frame on stop");
    // Same internal address, same local counter start: the id must still differ.
    let gw2 = GatewayHandle::start_on(bind_again(internal).await, &[reg.addr], SECRET, |_| {}).await;
    assert_eq!(gw2.gw.address(), internal.to_string());
    wait_for_workers(&gw2, 1).await;
    let mut c2 = gw2.client().await;
    c2.send("id").await;
    let second = c2.recv_id().await;
    assert_ne!(first, second);
    let client = gateway_client(&[reg.addr], SECRET, 1).await;
    assert!(!client.is_online(&first).await.unwrap(), "an id of the previous run is offline");
    assert!(client.is_online(&second).await.unwrap());
}

/// Replies with the client's own id to "id".
#[derive(Debug, Clone)]
struct WhoAmI;

impl gw_business_worker::Events for WhoAmI {
    async fn on_message(
        &self,
        ctx: &mut gw_business_worker::Context,
        msg: gw_business_worker::Message,
    ) -> gw_business_worker::HandlerResult {
        if msg.as_text() == Some("id") {
            ctx.send(ctx.client_id.to_string()).await?;
        }
        Ok(())
    }
}

/// "bind <uid>" binds the client; "to <uid> <text>" sends text to that uid.
#[derive(Debug, Clone)]
struct UidRelay;

impl gw_business_worker::Events for UidRelay {
    async fn on_message(
        &self,
        ctx: &mut gw_business_worker::Context,
        msg: gw_business_worker::Message,
    ) -> gw_business_worker::HandlerResult {
        let text = msg.as_text().unwrap_or_default().to_string();
        if let Some(uid) = text.strip_prefix("bind ") {
            ctx.gateway().bind_uid(&ctx.client_id, uid).await?;
            ctx.send("bound").await?;
        } else if let Some(rest) = text.strip_prefix("to ") {
            let (uid, body) = rest.split_once(' ').unwrap_or((rest, ""));
            ctx.gateway().send_to_uid(uid, body.to_string()).await?;
        }
        Ok(())
    }
}
