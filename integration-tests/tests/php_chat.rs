//! workerman-chat's own `Events.php` and `start_businessworker.php` (only the register address
//! changed), run by PHP's unmodified `BusinessWorker`, behind our register and two of our
//! gateways, with real WebSocket clients on both gateways: logins with the room's member list
//! (a synchronous cross-gateway query), room messages, private messages and logout notices.

use std::time::Duration;

use gw_integration_tests::php::{Php, PhpGateway, PhpRegister};
use gw_integration_tests::{RegisterHandle, WsClient, eventually};
use serde_json::{Value, json};

async fn recv(c: &mut WsClient) -> Value {
    c.recv_json().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workerman_chat_runs_unmodified_behind_our_register_and_two_gateways() {
    let Some(php) = Php::find("workerman_chat_runs_unmodified_behind_our_register_and_two_gateways") else { return };
    let register = RegisterHandle::start("s").await;
    let php_register = PhpRegister::start("").await;
    let gw1 = PhpGateway::start(&[register.addr], "s", php_register.addr, "").await;
    let gw2 = PhpGateway::start(&[register.addr], "s", php_register.addr, "").await;
    php_register.wait_for_gateways(2).await;

    let workers = php.start_chat_workers("php-chat", php_register.addr);
    // start_businessworker.php says count = 4: four PHP processes, each linked to both gateways.
    for gw in [&gw1, &gw2] {
        let g = gw.gateway.gw.clone();
        eventually(Duration::from_secs(30), "4 PHP workers on each gateway", || {
            let n = g.worker_count();
            async move { n == 4 }
        })
        .await;
    }

    let mut ann = gw1.gateway.client().await;
    let mut bob = gw2.gateway.client().await;

    ann.send(r#"{"type":"login","client_name":"Ann","room_id":"1"}"#).await;
    let me = recv(&mut ann).await;
    assert_eq!(me["type"], "login");
    assert_eq!(me["client_name"], "Ann");
    let ann_id = me["client_id"].as_str().unwrap().to_string();
    // PHP's format: 20 hex digits naming gateway 1's GatewayWorker address.
    let parsed: gw_gatewayworker_protocol::PhpClientId = ann_id.parse().unwrap();
    assert_eq!(parsed.port, gw1.php_addr.port());
    assert_eq!(me["client_list"], json!({ ann_id.clone(): "Ann" }));

    bob.send(r#"{"type":"login","client_name":"Bob","room_id":"1"}"#).await;
    let bob_me = recv(&mut bob).await;
    let bob_id = bob_me["client_id"].as_str().unwrap().to_string();
    assert_eq!(bob_id.parse::<gw_gatewayworker_protocol::PhpClientId>().unwrap().port, gw2.php_addr.port());
    // getClientSessionsByGroup across both gateways, with Ann's session as PHP wrote it.
    assert_eq!(bob_me["client_list"], json!({ ann_id.clone(): "Ann", bob_id.clone(): "Bob" }));
    let joined = recv(&mut ann).await;
    assert_eq!((joined["type"].as_str(), joined["client_name"].as_str()), (Some("login"), Some("Bob")));
    assert_eq!(joined["client_id"], bob_id.as_str());

    // A room message: $_SESSION['room_id'] and ['client_name'] written by PHP on login come back.
    ann.send(r#"{"type":"say","to_client_id":"all","content":"hello <room>"}"#).await;
    for c in [&mut ann, &mut bob] {
        let m = recv(c).await;
        assert_eq!(m["type"], "say");
        assert_eq!(m["from_client_name"], "Ann");
        assert_eq!(m["from_client_id"], ann_id.as_str());
        assert_eq!(m["content"], "hello &lt;room&gt;");
    }

    // A private message from gateway 2 to a client of gateway 1, by PHP client id.
    let private = json!({"type":"say","to_client_id":ann_id,"to_client_name":"Ann","content":"psst"});
    bob.send(&private.to_string()).await;
    let to_ann = recv(&mut ann).await;
    assert_eq!(to_ann["from_client_name"], "Bob");
    assert_eq!(to_ann["content"], "<b>对你说: </b>psst");
    let to_bob = recv(&mut bob).await;
    assert_eq!(to_bob["content"], "<b>你对Ann说: </b>psst");

    // Logout notice: onClose with the session of the client that left.
    bob.close().await;
    let left = recv(&mut ann).await;
    assert_eq!(left["type"], "logout");
    assert_eq!(left["from_client_name"], "Bob");
    assert_eq!(left["from_client_id"], bob_id.as_str());

    let out = workers.stop();
    assert!(out.contains("onMessage:{\"type\":\"login\""), "Events.php's own debug line is missing:\n{out}");
    // $_SERVER as PHP's BusinessWorker builds it from our header: the client's address and the
    // public address and port of the gateway it connected to.
    let gw1_port = gw1.gateway.ws_url.trim_end_matches('/').rsplit(':').next().unwrap().to_string();
    let server = format!("gateway:127.0.0.1:{gw1_port}  client_id:{ann_id}");
    assert!(out.contains(&server), "no Events.php line with {server:?}:\n{out}");
    assert!(out.contains("client:127.0.0.1:"), "$_SERVER['REMOTE_ADDR'] missing:\n{out}");
    ann.close().await;
}
