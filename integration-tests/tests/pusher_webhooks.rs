//! Pusher webhooks from a real gateway to a real receiver (a tiny HTTP/1.1 server on
//! 127.0.0.1:0 in this test): occupancy, member and client events, signed as Pusher signs them
//! (checked with `pusher-protocol`'s `verify` and, when Python has it, the official SDK's
//! `validate_webhook` in `pusher_webhook.py`), the linger that a quick return cancels, retries
//! of a receiver that answers 500, and the lingering events a graceful stop still sends.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_config::PusherWebhook;
use gw_integration_tests::pusher::{
    APP_ID, APP_KEY, APP_SECRET, PusherClient, app_url, data_of, pusher_gateway, wait_for_peers,
};
use gw_integration_tests::{GatewayHandle, RegisterHandle, eventually};
use gw_pusher_protocol::webhook::{WebhookBody, WebhookEvent, verify};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "pusher-webhooks-cluster-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hook {
    key: String,
    signature: String,
    body: String,
}

/// A webhook receiver: records every POST and answers with the next scripted status (200 once
/// the script is over).
#[derive(Clone, Default)]
struct Receiver {
    hooks: Arc<Mutex<Vec<Hook>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(statuses: &[u16]) -> (Self, SocketAddr) {
        Self::start_with(statuses, None).await
    }

    /// The same over TLS (`https://`), with this acceptor's certificate.
    async fn start_with(statuses: &[u16], tls: Option<tokio_rustls::TlsAcceptor>) -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = Self { hooks: Arc::default(), statuses: Arc::new(Mutex::new(statuses.iter().copied().collect())) };
        let served = me.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let served = served.clone();
                match tls.clone() {
                    None => drop(tokio::spawn(served.connection(stream))),
                    // A client that refuses the certificate ends the handshake: nothing to serve.
                    Some(tls) => drop(tokio::spawn(async move {
                        if let Ok(stream) = tls.accept(stream).await {
                            served.connection(stream).await;
                        }
                    })),
                }
            }
        });
        (me, addr)
    }

    /// Serves keep-alive requests on one connection until it closes.
    async fn connection(self, mut stream: impl AsyncRead + AsyncWrite + Unpin) {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let head_end = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            assert!(head.starts_with("POST "), "{head}");
            let header = |name: &str| {
                head.lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            };
            assert_eq!(header("content-type").as_deref(), Some("application/json"), "{head}");
            let len: usize = header("content-length").expect("a content length").parse().unwrap();
            while buf.len() < head_end + len {
                if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            }
            let body = String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap();
            buf.drain(..head_end + len);
            let hook = Hook {
                key: header("x-pusher-key").unwrap_or_default(),
                signature: header("x-pusher-signature").unwrap_or_default(),
                body,
            };
            let status = self.statuses.lock().unwrap().pop_front().unwrap_or(200);
            self.hooks.lock().unwrap().push(hook);
            let answer = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 2\r\n\r\nok");
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// Every request verified as a receiver verifies it, its body parsed.
    fn bodies(&self) -> Vec<WebhookBody> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        self.hooks()
            .iter()
            .map(|h| {
                verify(APP_KEY, APP_SECRET, &h.key, &h.signature, h.body.as_bytes(), now, 300_000)
                    .unwrap_or_else(|e| panic!("{e}: {h:?}"))
            })
            .collect()
    }

    /// Every event received, in order.
    fn events(&self) -> Vec<WebhookEvent> {
        self.bodies().into_iter().flat_map(|b| b.events).collect()
    }

    async fn wait_for_events(&self, n: usize, what: &str) -> Vec<WebhookEvent> {
        eventually(Duration::from_secs(15), what, || async { self.events().len() >= n }).await;
        self.events()
    }
}

async fn webhook_gateway(
    reg: &RegisterHandle,
    receiver: SocketAddr,
    tweak: impl FnOnce(&mut gw_config::PusherConfig),
) -> GatewayHandle {
    let url = format!("http://{receiver}/pusher/webhook");
    pusher_gateway(
        &[reg.addr],
        SECRET,
        |app| app.webhooks = vec![PusherWebhook::new(url)],
        |c| tweak(c.pusher.as_mut().unwrap()),
    )
    .await
}

/// A sample of `/metrics`, or -1 when absent.
async fn metric(gw: &GatewayHandle, name: &str, labels: &str) -> f64 {
    use gw_daemon::Node;
    let families = gw_gateway::GatewayNode::new(gw.gw.clone()).metrics().await;
    families
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| f.samples.iter().find(|s| s.labels == labels))
        .map_or(-1.0, |s| s.value)
}

fn occupied(c: &str) -> WebhookEvent {
    WebhookEvent::ChannelOccupied { channel: c.into() }
}
fn vacated(c: &str) -> WebhookEvent {
    WebhookEvent::ChannelVacated { channel: c.into() }
}
fn added(c: &str, u: &str) -> WebhookEvent {
    WebhookEvent::MemberAdded { channel: c.into(), user_id: u.into() }
}
fn removed(c: &str, u: &str) -> WebhookEvent {
    WebhookEvent::MemberRemoved { channel: c.into(), user_id: u.into() }
}

async fn join_presence(c: &mut PusherClient, user: &str) {
    let data = format!(r#"{{"user_id":"{user}","user_info":{{"name":"{user}"}}}}"#);
    c.subscribe_signed("presence-room", Some(&data)).await;
    c.expect("pusher_internal:subscription_succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occupancy_member_and_client_event_webhooks_are_signed_lingered_and_validated_by_the_sdk() {
    let reg = RegisterHandle::start(SECRET).await;
    let (receiver, addr) = Receiver::start(&[]).await;
    let gw = webhook_gateway(&reg, addr, |p| p.webhook_delay = Duration::from_secs(2)).await;

    let mut a = PusherClient::connect(&app_url(&gw)).await;
    join_presence(&mut a, "u1").await;
    let mut b = PusherClient::connect(&app_url(&gw)).await;
    join_presence(&mut b, "u2").await;
    a.expect("pusher_internal:member_added").await;
    a.subscribe_signed("private-chat", None).await;
    a.expect("pusher_internal:subscription_succeeded").await;
    a.client_event("presence-room", "client-typing", r#"{"t":1}"#).await;
    assert_eq!(b.expect("client-typing").await["user_id"], "u1");
    let client_event = WebhookEvent::ClientEvent {
        channel: "presence-room".into(),
        event: "client-typing".into(),
        data: r#"{"t":1}"#.into(),
        socket_id: a.socket_id.clone(),
        user_id: Some("u1".into()),
    };
    let first = vec![
        occupied("presence-room"),
        added("presence-room", "u1"),
        added("presence-room", "u2"),
        occupied("private-chat"),
        client_event,
    ];
    assert_eq!(receiver.wait_for_events(5, "the first five events").await, first);

    // A page reload: u1 leaves (the others see it at once) and is back within the linger.
    drop(a);
    let gone = b.expect("pusher_internal:member_removed").await;
    assert_eq!(data_of(&gone)["user_id"], "u1");
    // The connection is unregistered after it left every channel.
    let one_left = || async { gw.metric("connections") == 1 };
    eventually(Duration::from_secs(5), "u1's first connection gone", one_left).await;
    let mut a = PusherClient::connect(&app_url(&gw)).await;
    join_presence(&mut a, "u1").await;
    a.subscribe_signed("private-chat", None).await;
    a.expect("pusher_internal:subscription_succeeded").await;
    b.expect("pusher_internal:member_added").await;

    // Gone for good: after the linger, in the order it happened.
    drop(b);
    a.expect("pusher_internal:member_removed").await;
    eventually(Duration::from_secs(5), "u2's connection gone", one_left).await;
    drop(a);
    let mut expected = first.clone();
    expected.extend([
        removed("presence-room", "u2"),
        removed("presence-room", "u1"),
        vacated("presence-room"),
        vacated("private-chat"),
    ]);
    assert_eq!(receiver.wait_for_events(9, "the departures").await, expected, "the reload sent nothing");
    let hooks = receiver.hooks();
    assert!(hooks.len() < expected.len(), "batched: {} bodies for {} events", hooks.len(), expected.len());

    let labels = |event: &str| format!("app=\"{APP_ID}\",event=\"{event}\"");
    assert_eq!(metric(&gw, "gw_pusher_webhooks_sent_total", &labels("member_added")).await, 2.0);
    assert_eq!(metric(&gw, "gw_pusher_webhooks_sent_total", &labels("channel_vacated")).await, 2.0);
    assert_eq!(metric(&gw, "gw_pusher_webhooks_retried_total", &format!("app=\"{APP_ID}\"")).await, 0.0);
    let none_dropped = format!("{},reason=\"queue_full\"", labels("client_event"));
    assert_eq!(metric(&gw, "gw_pusher_webhooks_dropped_total", &none_dropped).await, 0.0);

    // The official SDK accepts every body and refuses them tampered with.
    let python = std::process::Command::new("python3").args(["-c", "import pusher"]).output();
    if !python.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("GW_REQUIRE_PYTHON").is_none(),
            "GW_REQUIRE_PYTHON is set but python3 cannot import pusher"
        );
        eprintln!("SKIP the SDK's validate_webhook: python3 cannot import pusher (run scripts/install-python-deps.sh)");
        return;
    }
    let input = serde_json::Value::Array(
        hooks.iter().map(|h| serde_json::json!({"key": h.key, "signature": h.signature, "body": h.body})).collect(),
    )
    .to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pusher_webhook.py");
    let mut child = tokio::process::Command::new("python3")
        .args([script, "--app-id", APP_ID, "--key", APP_KEY, "--secret", APP_SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pusher_webhook.py: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<&str> = expected.iter().map(WebhookEvent::name).collect();
    assert!(stdout.contains(&format!("OK: {} webhooks, events: {}", hooks.len(), names.join(","))), "{stdout}");
}

#[tokio::test]
async fn a_receiver_that_fails_gets_the_same_events_again_until_it_answers_2xx() {
    let reg = RegisterHandle::start(SECRET).await;
    let (receiver, addr) = Receiver::start(&[500, 503]).await;
    let gw = webhook_gateway(&reg, addr, |p| p.webhook_delay = Duration::ZERO).await;
    let mut c = PusherClient::connect(&app_url(&gw)).await;
    c.subscribe("news", None, None).await;
    c.expect("pusher_internal:subscription_succeeded").await;
    eventually(Duration::from_secs(15), "three attempts", || async { receiver.hooks().len() >= 3 }).await;
    let bodies = receiver.bodies();
    assert!(bodies.iter().all(|b| b.events == [occupied("news")]), "{bodies:?}");
    eventually(Duration::from_secs(5), "the success counted", || async {
        metric(&gw, "gw_pusher_webhooks_sent_total", &format!("app=\"{APP_ID}\",event=\"channel_occupied\"")).await
            == 1.0
    })
    .await;
    assert_eq!(metric(&gw, "gw_pusher_webhooks_retried_total", &format!("app=\"{APP_ID}\"")).await, 2.0);
    // Then the next event goes once.
    drop(c);
    assert_eq!(receiver.wait_for_events(4, "the vacated").await.last(), Some(&vacated("news")));
    assert_eq!(receiver.hooks().len(), 4);
}

#[tokio::test]
async fn a_graceful_stop_sends_the_lingering_events_of_the_clients_it_closed() {
    let reg = RegisterHandle::start(SECRET).await;
    let (receiver, addr) = Receiver::start(&[]).await;
    let gw = webhook_gateway(&reg, addr, |p| p.webhook_delay = Duration::from_secs(60)).await;
    let mut c = PusherClient::connect(&app_url(&gw)).await;
    c.subscribe("news", None, None).await;
    c.expect("pusher_internal:subscription_succeeded").await;
    receiver.wait_for_events(1, "the occupied").await;
    gw.stop().await;
    assert_eq!(receiver.events(), [occupied("news"), vacated("news")], "sent before the gateway stopped");
}

/// A TLS acceptor with a fresh self-signed certificate for `localhost`, and that certificate's
/// PEM file (in `dir`).
fn localhost_tls(dir: &std::path::Path) -> (tokio_rustls::TlsAcceptor, String) {
    let (cert_path, key_path, cert) = gw_integration_tests::tls::self_signed(dir);
    let key = std::fs::read(&key_path).unwrap();
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert_path)
}

#[tokio::test]
async fn https_webhooks_trust_the_webhook_s_ca_file_and_refuse_a_certificate_nobody_vouches_for() {
    let dir = gw_integration_tests::process::temp_dir("webhook-tls");
    let (tls, cert_path) = localhost_tls(&dir);
    let (receiver, addr) = Receiver::start_with(&[], Some(tls)).await;
    let url = format!("https://localhost:{}/pusher/webhook", addr.port());
    let reg = RegisterHandle::start(SECRET).await;
    // The receiver's own certificate as the webhook's trust: delivered, signed as over http.
    let mut hook = PusherWebhook::new(&url);
    hook.ca_file = Some(cert_path);
    let trusting = pusher_gateway(
        &[reg.addr],
        SECRET,
        |app| app.webhooks = vec![hook],
        |c| {
            c.pusher.as_mut().unwrap().webhook_delay = Duration::ZERO;
        },
    )
    .await;
    let mut c = PusherClient::connect(&app_url(&trusting)).await;
    c.subscribe("secure-news", None, None).await;
    c.expect("pusher_internal:subscription_succeeded").await;
    assert_eq!(receiver.wait_for_events(1, "the occupied over https").await, [occupied("secure-news")]);
    drop(c);
    assert_eq!(receiver.wait_for_events(2, "the vacated over https").await[1], vacated("secure-news"));

    // Without it, the system's trust store does not know a self-signed certificate: the request
    // never reaches the receiver, and the failure is retried and counted, not silent.
    // (A cluster of its own: in one cluster the channel's home, maybe the trusting gateway,
    // would send its webhooks.)
    let before = receiver.hooks().len();
    let other = RegisterHandle::start(SECRET).await;
    let doubting = pusher_gateway(
        &[other.addr],
        SECRET,
        |app| app.webhooks = vec![PusherWebhook::new(&url)],
        |c| {
            c.pusher.as_mut().unwrap().webhook_delay = Duration::ZERO;
        },
    )
    .await;
    let mut c = PusherClient::connect(&app_url(&doubting)).await;
    c.subscribe("doubted", None, None).await;
    c.expect("pusher_internal:subscription_succeeded").await;
    eventually(Duration::from_secs(15), "a refused attempt retried", || async {
        metric(&doubting, "gw_pusher_webhooks_retried_total", &format!("app=\"{APP_ID}\"")).await >= 1.0
    })
    .await;
    assert_eq!(receiver.hooks().len(), before, "nothing reached the receiver without trusting its certificate");
}

/// Events in a stable order, to compare what two gateways' dispatchers sent.
fn sorted(mut events: Vec<WebhookEvent>) -> Vec<String> {
    let mut names: Vec<String> = events.drain(..).map(|e| format!("{e:?}")).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occupancy_and_member_webhooks_are_decided_once_for_the_whole_cluster() {
    let reg = RegisterHandle::start(SECRET).await;
    let (receiver, addr) = Receiver::start(&[]).await;
    let linger = |p: &mut gw_config::PusherConfig| p.webhook_delay = Duration::from_secs(2);
    let one = webhook_gateway(&reg, addr, linger).await;
    let two = webhook_gateway(&reg, addr, linger).await;
    wait_for_peers(&[&one, &two]).await;

    // u1 on both gateways, "news" subscribed on both: each is occupied and added once.
    let mut a = PusherClient::connect(&app_url(&one)).await;
    join_presence(&mut a, "u1").await;
    let mut b = PusherClient::connect(&app_url(&two)).await;
    join_presence(&mut b, "u1").await;
    let mut news = Vec::new();
    for gw in [&one, &two] {
        let mut c = PusherClient::connect(&app_url(gw)).await;
        c.subscribe("news", None, None).await;
        c.expect("pusher_internal:subscription_succeeded").await;
        news.push(c);
    }
    let first = vec![occupied("presence-room"), added("presence-room", "u1"), occupied("news")];
    assert_eq!(sorted(receiver.wait_for_events(3, "the first events").await), sorted(first.clone()));

    // A reload across gateways: u1 leaves both and comes back on the other within the linger;
    // "news" loses its subscriber on one gateway only. Nothing is sent.
    drop(a);
    drop(b);
    drop(news.remove(0));
    eventually(Duration::from_secs(5), "the connections gone", || async {
        one.metric("connections") == 0 && two.metric("connections") == 1
    })
    .await;
    let mut a = PusherClient::connect(&app_url(&two)).await;
    join_presence(&mut a, "u1").await;

    // Gone for good: one removed and one vacated per channel, from the channels' homes.
    drop(a);
    drop(news);
    let mut expected = first;
    expected.extend([removed("presence-room", "u1"), vacated("presence-room"), vacated("news")]);
    let got = receiver.wait_for_events(6, "the departures").await;
    assert_eq!(sorted(got), sorted(expected), "each once, the reload nothing");
    let (one, two) = (&one, &two);
    let sent = |event: &str| {
        let labels = format!("app=\"{APP_ID}\",event=\"{event}\"");
        async move {
            metric(one, "gw_pusher_webhooks_sent_total", &labels).await
                + metric(two, "gw_pusher_webhooks_sent_total", &labels).await
        }
    };
    eventually(Duration::from_secs(5), "every event counted as sent", || async {
        sent("channel_vacated").await == 2.0 && sent("member_removed").await == 1.0
    })
    .await;
    assert_eq!(sent("channel_occupied").await, 2.0);
    assert_eq!(sent("member_added").await, 1.0);
    assert_eq!(receiver.events().len(), 6);
    assert_eq!(one.metric("mesh_dropped") + two.metric("mesh_dropped"), 0);
}
