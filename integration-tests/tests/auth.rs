//! Authentication on internal links: a peer with the wrong secret is refused, the refusal is
//! logged with the peer address, counted, and no secret ever reaches the log.

use std::time::Duration;

use gw_gateway_client::{ClientError, GatewayClient};
use gw_integration_tests::logs::CapturedLogs;
use gw_integration_tests::*;
use gw_link::{HandshakeOptions, LinkError};
use gw_proto::{HandshakeError, Role};

const SECRET: &str = "the-real-cluster-secret-4f9a";
const WRONG: &str = "a-wrong-guess-of-the-secret-77";

#[tokio::test]
async fn peers_with_the_wrong_secret_are_refused_with_a_log_line_and_no_secret_in_the_log() {
    let logs = CapturedLogs::install("info");

    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;

    // A gateway client with the wrong secret never gets past the register, and says so at once
    // (not after its 5 s connect timeout, not as "no gateway is known").
    let started = std::time::Instant::now();
    let refused = GatewayClient::builder([reg.addr.to_string()]).secret(WRONG).connect().await;
    let waited = started.elapsed();
    match &refused {
        Err(e @ ClientError::AuthenticationFailed { register, reason }) => {
            assert_eq!(register, &reg.addr.to_string());
            assert!(reason.contains("authentication failed"), "{reason}");
            assert!(e.to_string().starts_with("authentication failed: register"), "{e}");
        }
        other => panic!("expected AuthenticationFailed, got {other:?}"),
    }
    assert!(waited < Duration::from_secs(3), "took {waited:?}: the refusal must not wait out the connect timeout");
    assert!(reg.registry.stats.handshake_failures.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    // A worker-role peer with the wrong secret on the gateway's internal port is told why.
    let opts = HandshakeOptions::new(WRONG, Role::Worker, "intruder", &gw_config::LinkConfig::default());
    let err = gw_link::connect(&gw.internal.to_string(), &opts).await.unwrap_err();
    match err {
        LinkError::Handshake(HandshakeError::Rejected(reason)) => assert_eq!(reason, "authentication failed"),
        other => panic!("expected a rejection, got {other}"),
    }
    eventually(Duration::from_secs(5), "gateway counted the failure", || {
        let n = gw.metric("handshake_failures");
        async move { n >= 1 }
    })
    .await;

    // The right secret still works.
    let ok = gateway_client(&[reg.addr], SECRET, 1).await;
    assert_eq!(ok.connected_gateways(), vec![gw.gw.address().to_string()]);

    let text = logs.text();
    assert!(text.contains("refused peer: handshake failed"), "register log line missing:\n{text}");
    assert!(text.contains("refused internal peer: handshake failed"), "gateway log line missing:\n{text}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains(SECRET), "the configured secret leaked into the log");
    assert!(!text.contains(WRONG), "the presented secret leaked into the log");
}
