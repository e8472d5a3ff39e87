//! The unmodified PHP `GatewayClient` (a web backend's `Gateway::$registerAddress = …;
//! Gateway::sendToUid(…)`) against our register and two gateways, in a mixed cluster: a Rust
//! business worker serves the clients, a Rust gateway-client and the PHP one act on the same
//! clients. Every public call of `GatewayClient/Gateway.php` is exercised by
//! `tests/php/gateway_client.php`; what PHP's queries return is compared with what our Rust
//! gateway-client sees, and what its sends deliver is checked at real WebSocket clients
//! (a client in two targeted groups gets one copy).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gw_business_worker::{ClientId, Context, Events, HandlerResult, Message};
use gw_integration_tests::php::{Php, PhpGateway, PhpRegister};
use gw_integration_tests::ws::Received;
use gw_integration_tests::{RegisterHandle, WorkerHandle, WsClient, eventually, gateway_client};
use serde_json::{Value, json};

/// Tells each client its (Rust) client id.
struct SayId;

impl Events for SayId {
    async fn on_connect(&self, ctx: &mut Context) -> HandlerResult {
        ctx.send(ctx.client_id.to_string()).await?;
        Ok(())
    }

    async fn on_message(&self, _ctx: &mut Context, _msg: Message) -> HandlerResult {
        Ok(())
    }
}

fn run_phase(php: &Php, register: &str, key: &str, phase: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/gateway_client.php");
    let out = std::process::Command::new(&php.php)
        .arg("-d")
        .arg("display_errors=stderr")
        .arg(&script)
        .args([php.peers.to_str().unwrap(), register, key, phase])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "php {phase} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // PHP's GatewayClient echoes deprecation notices on stdout before our JSON.
    let json = stdout.rfind("{\"ids\"").map_or("", |i| stdout[i..].trim());
    serde_json::from_str(json).unwrap_or_else(|e| panic!("php {phase} printed no JSON ({e}):\n{stdout}"))
}

/// Every text message until `n` arrived, sorted (PHP's GatewayClient opens a connection per
/// call, so calls are not ordered with each other), then checks nothing more comes.
async fn collect(c: &mut WsClient, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.next(Duration::from_secs(10)).await {
            Some(Received::Text(t)) => got.push(t),
            other => panic!("expected {n} messages, got {got:?} then {other:?}"),
        }
    }
    c.expect_silence(Duration::from_millis(300)).await;
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_gateway_client_calls_all_work_against_our_gateways() {
    let Some(php) = Php::find("php_gateway_client_calls_all_work_against_our_gateways") else { return };
    let key = "php-key";
    let register = RegisterHandle::start("s").await;
    let php_register = PhpRegister::start(key).await;
    let gw1 = PhpGateway::start(&[register.addr], "s", php_register.addr, key).await;
    let gw2 = PhpGateway::start(&[register.addr], "s", php_register.addr, key).await;
    php_register.wait_for_gateways(2).await;
    let _worker = WorkerHandle::start("rust-worker", &[register.addr], "s", SayId);
    gw_integration_tests::wait_for_workers(&gw1.gateway, 1).await;
    gw_integration_tests::wait_for_workers(&gw2.gateway, 1).await;
    let rust = gateway_client(&[register.addr], "s", 2).await;

    let mut clients = BTreeMap::new();
    let mut rust_ids = BTreeMap::new();
    for (name, gw) in [("a", &gw1), ("b", &gw1), ("c", &gw2)] {
        let mut c = gw.gateway.client().await;
        let id = c.recv_id().await;
        let session = json!({ "name": name }).as_object().unwrap().clone();
        rust.set_session(&id, &session).await.unwrap();
        rust_ids.insert(name, id);
        clients.insert(name, c);
    }
    let reg = php_register.addr.to_string();

    let name_of = |id: &ClientId| rust_ids.iter().find(|(_, v)| *v == id).map(|(k, _)| k.to_string()).unwrap();
    let names = |ids: Vec<ClientId>| {
        let mut n: Vec<String> = ids.iter().map(name_of).collect();
        n.sort();
        n
    };

    // Sends, binds, joins and sessions from PHP.
    let out = run_phase(&php, &reg, key, "commands");
    let ids = out["ids"].as_object().unwrap();
    for (name, gw) in [("a", &gw1), ("c", &gw2)] {
        let id: gw_gatewayworker_protocol::PhpClientId = ids[name].as_str().unwrap().parse().unwrap();
        assert_eq!(id.port, gw.php_addr.port(), "{name}'s PHP id names its gateway");
    }
    let want = |l: &[&str]| {
        let mut v: Vec<String> = l.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    let a = collect(clients.get_mut("a").unwrap(), 8).await;
    assert_eq!(
        a,
        want(&["to-u1", "to-u1-u2", "to-g1", "to-g1-g2", "to-g1-but-b", "to-all", "to-a-c", "commands-done"])
    );
    let b = collect(clients.get_mut("b").unwrap(), 6).await;
    assert_eq!(b, want(&["to-b", "to-g1", "to-g1-g2", "to-all", "to-all-but-a", "commands-done"]));
    // c is in g1 and g2: one copy of the message to both groups (PHP's gateway sends two).
    let c = collect(clients.get_mut("c").unwrap(), 8).await;
    assert_eq!(
        c,
        want(&["to-u1-u2", "to-g1", "to-g1-g2", "to-g1-but-b", "to-all", "to-a-c", "to-all-but-a", "commands-done"])
    );

    // What PHP's synchronous queries return, and what our Rust gateway-client sees.
    let q = run_phase(&php, &reg, key, "queries");
    let expected = json!({
        "isOnline_a": 1, "isOnline_gone": 0,
        "isUidOnline_u1": 1, "isUidOnline_none": 0, "isUidsOnline": {"u1": 1, "none": 0},
        "getAllClientIdCount": 3, "getAllClientCount": 3,
        "getClientIdCountByGroup_g1": 3, "getClientCountByGroup_g2": 1,
        "batchGetClientIdCountByGroup": {"g1": 3, "g2": 1, "none": 0},
        "getClientIdListByGroup_g1": ["a", "b", "c"], "getAllClientIdList": ["a", "b", "c"],
        "getClientIdByUid_u1": ["a"], "batchGetClientIdByUid": {"none": [], "u1": ["a"], "u2": ["c"]},
        "getUidListByGroup_g1": ["u1", "u2"], "getUidCountByGroup_g1": 2,
        "getAllUidList": ["u1", "u2"], "getAllUidCount": 2,
        "getUidByClientId_c": "u2", "getUidByClientId_b": null,
        "getAllGroupIdList": ["g1", "g2"],
        "getAllGroupUidCount": {"g1": 2, "g2": 1}, "getAllGroupUidList": {"g1": ["u1", "u2"], "g2": ["u2"]},
        "getAllGroupClientIdList": {"g1": ["a", "b", "c"], "g2": ["c"]}, "getAllGroupClientIdCount": {"g1": 3, "g2": 1},
        "getClientSessionsByGroup_g1": {"a": {"name": "a", "y": {"z": 2}}, "b": {"name": "b", "x": 1}, "c": {"name": "c"}},
        "getAllClientSessions": {"a": {"name": "a", "y": {"z": 2}}, "b": {"name": "b", "x": 1}, "c": {"name": "c"}},
        "getAllClientInfo": {"a": {"name": "a", "y": {"z": 2}}, "b": {"name": "b", "x": 1}, "c": {"name": "c"}},
        "getClientInfoByGroup_g2": {"c": {"name": "c"}},
        "getSession_a": {"name": "a", "y": {"z": 2}}, "getSession_gone": null,
    });
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&q[k], v, "PHP {k}");
    }
    let rid = |n: &str| rust_ids[n].clone();
    assert_eq!(rust.client_count().await.unwrap().value, 3);
    assert_eq!(names(rust.client_ids_by_group("g1").await.unwrap().value), ["a", "b", "c"]);
    assert_eq!(names(rust.client_ids_by_uid("u1").await.unwrap().value), ["a"]);
    assert_eq!(rust.uid_of(&rid("c")).await.unwrap().as_deref(), Some("u2"));
    let mut uids = rust.uids().await.unwrap().value;
    uids.sort();
    assert_eq!(uids, ["u1", "u2"]);
    assert_eq!(rust.client_count_by_group("g2").await.unwrap().value, 1);
    assert_eq!(Value::Object(rust.session(&rid("a")).await.unwrap().unwrap()), q["getSession_a"]);
    assert_eq!(Value::Object(rust.session(&rid("b")).await.unwrap().unwrap()), json!({"name": "b", "x": 1}));

    // Leaving, unbinding (PHP's own gateway ignores the uid; ours honours it), dissolving,
    // a raw session write, then closing one client with a last message and destroying another.
    let t = run_phase(&php, &reg, key, "teardown");
    assert_eq!(t["after_g1"], json!(["a", "c"]));
    assert_eq!(t["after_g2"], 0);
    assert_eq!(t["after_uids"], json!(["u2"]), "unbindUid(c, 'other-uid') must leave c bound to u2");
    assert_eq!(t["after_session_c"], json!({"name": "c", "raw": true}));
    let a = clients.get_mut("a").unwrap();
    assert_eq!(a.recv().await, "bye-a");
    a.expect_close().await;
    // destoryClient right after sendToClient: b gets the message, then its connection is
    // dropped without a close frame.
    let b = clients.get_mut("b").unwrap();
    assert_eq!(b.next(Duration::from_secs(10)).await, Some(Received::Text("bye-b".into())));
    assert_eq!(b.next(Duration::from_secs(10)).await, Some(Received::Closed(None)));
    eventually(Duration::from_secs(10), "a and b gone", || {
        let rust = rust.clone();
        async move { rust.client_count().await.unwrap().value == 1 }
    })
    .await;
    assert!(rust.is_online(&rid("c")).await.unwrap());
}
