//! The crate against Pusher's official Python server SDK (PyPI `pusher`): every value in
//! `fixtures/sdk_vectors.json` was computed by the SDK (`tests/sdk_vectors.py`): subscription
//! and sign-in `auth` strings, HTTP API requests as it puts them on the wire, a webhook
//! signature. The first test checks them byte for byte against this crate, with no Python.
//!
//! The last two run the SDK itself when `python3` can import `pusher` (`pip install pusher`):
//! the script must still produce the committed fixtures, and the SDK's `validate_webhook` must
//! accept a webhook this crate signed (and refuse a tampered one). Without the SDK they say
//! SKIP and pass, unless `GW_REQUIRE_PUSHER_SDK=1`.

use std::io::Write;
use std::process::{Command, Stdio};

use gw_pusher_protocol::api::channels::{ChannelQuery, ChannelsQuery, channel_in_path, user_in_path};
use gw_pusher_protocol::api::events::{BatchEvent, Trigger};
use gw_pusher_protocol::api::signature::{string_to_sign, verify_request};
use gw_pusher_protocol::presence::{parse_channel_data, parse_user_data};
use gw_pusher_protocol::webhook::{self, WebhookBody, WebhookEvent};
use gw_pusher_protocol::{ChannelName, Limits, SocketId, auth};
use serde_json::Value;

const FIXTURES: &str = include_str!("fixtures/sdk_vectors.json");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_vectors.py");

fn fixtures() -> Value {
    serde_json::from_str(FIXTURES).expect("fixtures/sdk_vectors.json is JSON")
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// The query's pairs. None of the fixtures' values is escaped (checked), so splitting is
/// decoding here; escaping itself is covered by the signature module's unit tests.
fn decoded(query: &str) -> Vec<(String, String)> {
    assert!(!query.contains('%') && !query.contains('+'), "{query}");
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn http_api_requests_signed_by_the_sdk_verify_and_parse() {
    let f = fixtures();
    let (key, secret) = (s(&f["app"]["key"]), s(&f["app"]["secret"]));
    let ts = f["app"]["timestamp"].as_u64().unwrap();
    let limits = Limits::default();
    let http = f["http"].as_object().unwrap();
    assert_eq!(http.len(), 9, "every SDK call of the fixtures is checked");
    for (name, req) in http {
        let (method, path, query, body) = (s(&req["method"]), s(&req["path"]), s(&req["query"]), s(&req["body"]));
        // Our string to sign, signed, is the SDK's signature (none of these values needs escaping).
        let params = decoded(query);
        assert_eq!(auth::sign(secret, &string_to_sign(method, path, &params)), s(&req["auth_signature"]), "{name}");
        // The server's check passes at the SDK's timestamp and at the edges of the window.
        for now in [ts, ts - 600, ts + 600] {
            let verified = verify_request(key, secret, method, path, query, body.as_bytes(), now, 600);
            assert!(verified.is_ok(), "{name}: {verified:?}");
        }
        // And fails when anything changes.
        let tampered = format!("{body} ");
        assert_eq!(
            verify_request(key, secret, method, path, query, tampered.as_bytes(), ts, 600).unwrap_err().status,
            401
        );
        assert_eq!(
            verify_request(key, secret, method, path, query, body.as_bytes(), ts + 601, 600).unwrap_err().status,
            401
        );
    }

    let trigger = |name: &str| Trigger::parse(s(&http[name]["body"]).as_bytes(), &limits).unwrap();
    let t = trigger("trigger");
    assert_eq!((t.name.as_str(), t.data.as_str()), ("foo", r#"{"some": "data"}"#));
    let t = trigger("trigger_many_with_socket_id");
    assert_eq!(t.channels.iter().map(ChannelName::as_str).collect::<Vec<_>>(), ["a", "private-b", "presence-c"]);
    assert_eq!((t.data.as_str(), t.socket_id), ("plain text", Some(SocketId::new(1234, 5678))));
    let t = trigger("send_to_user");
    assert_eq!(t.channels[0].server_to_user(), Some("user-42"));
    let batch = BatchEvent::parse_batch(s(&http["trigger_batch"]["body"]).as_bytes(), &limits).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!((batch[0].data.as_str(), batch[1].socket_id), (r#"{"n": 1}"#, Some(SocketId::new(1, 2))));

    let q = ChannelsQuery::from_params(&decoded(s(&http["channels_info"]["query"]))).unwrap();
    assert!(q.prefix.as_deref() == Some("presence-") && q.info.user_count);
    assert!(ChannelsQuery::from_params(&decoded(s(&http["channels_info_plain"]["query"]))).unwrap().info.is_empty());
    let channel =
        channel_in_path(s(&http["channel_info"]["path"]).rsplit('/').next().unwrap(), false, &limits).unwrap();
    let q = ChannelQuery::from_params(&channel, &decoded(s(&http["channel_info"]["query"]))).unwrap();
    assert!(q.info.user_count && q.info.subscription_count);
    let users_path = s(&http["users_info"]["path"]);
    assert_eq!(channel_in_path(users_path.split('/').nth(4).unwrap(), true, &limits).unwrap().as_str(), "presence-c");
    assert_eq!(
        user_in_path(s(&http["terminate_user_connections"]["path"]).split('/').nth(2).unwrap(), &limits).unwrap(),
        "user-42"
    );
}

#[test]
fn subscription_and_signin_auth_made_by_the_sdk_verify() {
    let f = fixtures();
    let (key, secret) = (s(&f["app"]["key"]), s(&f["app"]["secret"]));
    let limits = Limits::default();
    let cases = f["channel_auth"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for c in cases {
        let (sid, channel, given) = (s(&c["socket_id"]), s(&c["channel"]), s(&c["auth"]));
        let data = c["channel_data"].as_str();
        sid.parse::<SocketId>().unwrap();
        ChannelName::parse(channel, &limits).unwrap();
        assert_eq!(auth::channel_auth(key, secret, sid, channel, data), given, "{channel}");
        assert_eq!(auth::verify_channel_auth(key, secret, sid, channel, data, Some(given)), Ok(()), "{channel}");
        assert!(auth::verify_channel_auth(key, secret, "1.1", channel, data, Some(given)).is_err(), "another socket");
        if let Some(data) = data {
            parse_channel_data(data, &limits).unwrap();
        }
    }
    let presence = |i: usize| parse_channel_data(s(&cases[i]["channel_data"]), &limits).unwrap();
    assert_eq!(presence(1).user_id, "10");
    assert_eq!(presence(1).user_info.unwrap().get(), r#"{"name": "Mr. Channels"}"#);
    assert_eq!(presence(2).user_id, "zo\u{eb}");

    for u in f["user_auth"].as_array().unwrap() {
        let (sid, user_data, given) = (s(&u["socket_id"]), s(&u["user_data"]), s(&u["auth"]));
        assert_eq!(auth::user_auth(key, secret, sid, user_data), given);
        assert_eq!(auth::verify_user_auth(key, secret, sid, user_data, given), Ok(()));
        parse_user_data(user_data, &limits).unwrap();
    }
    let ann = parse_user_data(s(&f["user_auth"][1]["user_data"]), &limits).unwrap();
    assert_eq!((ann.id.as_str(), ann.watchlist.len()), ("user-42", 2));
}

#[test]
fn webhook_signature_matches_the_sdk_and_our_encoding_is_what_it_checked() {
    let f = fixtures();
    let (key, secret) = (s(&f["app"]["key"]), s(&f["app"]["secret"]));
    let body = s(&f["webhook"]["body"]);
    assert_eq!(webhook::sign(secret, body.as_bytes()), s(&f["webhook"]["signature"]));
    let parsed =
        webhook::verify(key, secret, key, s(&f["webhook"]["signature"]), body.as_bytes(), 1_327_078_148_132, 300_000)
            .unwrap();
    assert_eq!(parsed.encode(), body, "our encoder writes the body the SDK's signature covers");
}

/// `Ok` when `python3` can import the SDK; `Err` says why not.
fn sdk() -> Result<(), String> {
    match Command::new("python3").args(["-c", "import pusher, requests"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "python3 cannot import pusher: {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or_default()
        )),
        Err(e) => Err(format!("python3 not found: {e}")),
    }
}

fn skip(test: &str) -> bool {
    match sdk() {
        Ok(()) => false,
        Err(why) => {
            assert!(std::env::var_os("GW_REQUIRE_PUSHER_SDK").is_none(), "GW_REQUIRE_PUSHER_SDK is set but {why}");
            eprintln!("SKIP {test}: {why} (pip install pusher)");
            true
        }
    }
}

#[test]
fn the_sdk_still_produces_the_committed_vectors() {
    if skip("the_sdk_still_produces_the_committed_vectors") {
        return;
    }
    let out = Command::new("python3").arg(SCRIPT).output().unwrap();
    assert!(out.status.success(), "sdk_vectors.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let fresh: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut committed = fixtures();
    // The SDK's version may move on; the values must not.
    committed["sdk"] = fresh["sdk"].clone();
    assert_eq!(
        fresh, committed,
        "the SDK now computes other values: regenerate fixtures/sdk_vectors.json and find out why"
    );
}

#[test]
fn the_sdk_accepts_our_webhooks_and_refuses_tampered_ones() {
    if skip("the_sdk_accepts_our_webhooks_and_refuses_tampered_ones") {
        return;
    }
    let f = fixtures();
    let (key, secret) = (s(&f["app"]["key"]), s(&f["app"]["secret"]));
    let now_ms =
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let body = WebhookBody {
        time_ms: now_ms,
        events: vec![
            WebhookEvent::ChannelOccupied { channel: "presence-room".into() },
            WebhookEvent::MemberAdded { channel: "presence-room".into(), user_id: "zo\u{eb}".into() },
            WebhookEvent::ClientEvent {
                channel: "presence-room".into(),
                event: "client-typing".into(),
                data: r#"{"typing":true}"#.into(),
                socket_id: SocketId::new(u64::MAX, 1).to_string(),
                user_id: Some("zo\u{eb}".into()),
            },
            WebhookEvent::ChannelVacated { channel: "presence-room".into() },
        ],
    }
    .encode();
    let [(_, key_header), (_, signature)] = webhook::headers(key, secret, body.as_bytes());
    let run = |signature: &str| {
        let mut child = Command::new("python3")
            .args([SCRIPT, "validate-webhook"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let input = serde_json::json!({"key": key_header, "signature": signature, "body": body});
        child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(&signature);
    assert!(ok && stdout.starts_with("OK "), "the SDK refused our webhook: {stdout} {stderr}");
    let seen: Value = serde_json::from_str(stdout.trim_start_matches("OK ").trim()).unwrap();
    assert_eq!(seen["events"][2]["user_id"], "zo\u{eb}");
    let mut wrong = signature.clone();
    wrong.replace_range(0..1, if signature.starts_with('0') { "1" } else { "0" });
    let (ok, stdout, _) = run(&wrong);
    assert!(!ok && stdout.starts_with("REFUSED"), "the SDK accepted a tampered signature: {stdout}");
}
