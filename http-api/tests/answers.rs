//! Issue 26 items 3 and 6 against a real cluster: a batch's answer is bounded (`max_response`)
//! with a precise error in place of what does not fit, while every call still runs; names and
//! argument shapes the gateways would refuse get a 400 naming the field before anything is sent.

mod common;

use std::time::Duration;

use common::*;
use gw_integration_tests::{WsClient, eventually};
use serde_json::{Value, json};

/// Connects `n` WebSocket clients to the cluster's first gateway; returns them and their ids.
async fn clients(cluster: &Cluster, n: usize) -> Vec<(WsClient, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut ws = cluster.gateways[0].client().await;
        let id = ws.recv().await; // `Hello` says the id on connect
        out.push((ws, id));
    }
    out
}

#[tokio::test]
async fn a_batch_answer_holds_at_most_max_response_bytes_and_every_call_still_runs() {
    let cluster = Cluster::start(1).await;
    let api = ApiHandle::start(&[cluster.register.addr], |c| c.max_response = 256 * 1024).await.linked(1).await;
    let mut clients = clients(&cluster, 20).await;
    for (_, id) in &clients {
        let body = json!({"client_id": id, "session": {"blob": "s".repeat(10_000)}}).to_string();
        assert_eq!(post(api.addr, "/v1/set_session", Some(KEY_ALL), &body).await.status, 200);
    }
    // Ten times every session (200 KB each: 2 MB in all), a send, a count. The hostile run sent
    // 100 of these in 3.7 KB and got 300 MB back.
    let mut calls = vec![json!({"call": "get_all_client_sessions"}); 10];
    calls.push(json!({"call": "send_to_all", "args": {"message": "still runs"}}));
    calls.push(json!({"call": "get_all_client_count"}));
    let r = post(api.addr, "/v1/batch", Some(KEY_ALL), &json!({ "calls": calls }).to_string()).await;
    assert_eq!(r.status, 200);
    assert!(r.body.len() < 256 * 1024 + 10 * 1024, "answer of {} bytes", r.body.len());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 12, "one result per call");
    assert_eq!(results[0]["value"].as_object().unwrap().len(), 20, "the first answer fits");
    for (i, result) in results.iter().enumerate().take(10).skip(1) {
        let error = &result["error"];
        assert_eq!((error["status"].as_u64(), error["code"].as_str()), (Some(422), Some("answer_too_large")), "{i}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("calls[{i}] (get_all_client_sessions) ran, but its result ("))
                && message.contains("max_response (262144 bytes)"),
            "{message}"
        );
    }
    assert_eq!(results[10], json!({"value": null, "missing": []}), "the send after them ran");
    assert_eq!(results[11], json!({"value": 20, "missing": []}));
    for (ws, _) in &mut clients {
        assert_eq!(ws.recv().await, "still runs");
    }
    assert_eq!(api.api.stats.answers_too_large.load(std::sync::atomic::Ordering::Relaxed), 9);
    // Counted in /metrics.
    let families = api.api.stats.families();
    let counted = families.iter().find(|f| f.name == "gw_http_answers_too_large_total").expect("a metric");
    assert_eq!(counted.samples[0].value, 9.0);
    // A small batch is answered whole, as before.
    let r = post(api.addr, "/v1/batch", Some(KEY_ALL), r#"{"calls":[{"call":"get_all_client_count"}]}"#).await;
    assert_eq!(r.json(), json!({"results": [{"value": 20, "missing": []}]}));
    api.stop().await;
}

#[tokio::test]
async fn names_the_gateways_would_refuse_are_a_400_naming_the_field() {
    let cluster = Cluster::start(1).await;
    let api = ApiHandle::start(&[cluster.register.addr], |_| {}).await.linked(1).await;
    let clients = clients(&cluster, 1).await;
    let id = clients[0].1.clone();
    let long = "u".repeat(1025);
    for (name, why) in [
        ("", "empty"),
        ("  \t ", "empty"),
        ("a\u{0}b", "control character"),
        ("two\nlines", "control character"),
        (long.as_str(), "1025 bytes"),
    ] {
        for (path, body, field) in [
            ("/v1/bind_uid", json!({"client_id": id, "uid": name}), "uid"),
            ("/v1/join_group", json!({"client_id": id, "group": name}), "group"),
            ("/v1/send_to_uids", json!({"uids": ["fine", name], "message": "x"}), "uids[1]"),
            (
                "/v1/batch",
                json!({"calls": [{"call": "join_group", "args": {"client_id": id, "group": name}}]}),
                "calls[0].args.group",
            ),
        ] {
            let r = post(api.addr, path, Some(KEY_ALL), &body.to_string()).await;
            assert_eq!(r.status, 400, "{path} {name:?}: {:?}", r.json());
            let error = &r.json()["error"];
            assert_eq!(error["field"], field, "{path} {name:?}");
            assert!(error["message"].as_str().unwrap().contains(why), "{path} {name:?}: {error}");
        }
    }
    // Nothing reached the gateway.
    let r = post(api.addr, "/v1/get_all_uids", Some(KEY_ALL), "").await;
    assert_eq!(r.json()["value"], json!([]));
    assert_eq!(cluster.gateways[0].metric("rejected_commands"), 0);
    api.stop().await;
}

#[tokio::test]
async fn arguments_come_by_name_and_a_cut_body_names_no_field() {
    let cluster = Cluster::start(1).await;
    let api = ApiHandle::start(&[cluster.register.addr], |_| {}).await.linked(1).await;
    let mut clients = clients(&cluster, 1).await;
    // Positional arguments were taken as `uid` then `message`.
    let r = post(api.addr, "/v1/send_to_all", Some(KEY_ALL), r#"["positional"]"#).await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("not an array"), "{:?}", r.json());
    let batch = r#"{"calls":[{"call":"send_to_all","args":["positional"]}]}"#;
    let r = post(api.addr, "/v1/batch", Some(KEY_ALL), batch).await;
    assert_eq!((r.status, r.json()["error"]["field"].as_str()), (400, Some("calls[0].args")), "{:?}", r.json());
    // Nothing was sent: the next message the client gets is this one.
    let r = post(api.addr, "/v1/send_to_all", Some(KEY_ALL), r#"{"message":"named"}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(clients[0].0.recv().await, "named");
    // A lone `{` named the field "?".
    for body in ["{", r#"{"message""#, r#"{"message":"#] {
        let r = post(api.addr, "/v1/send_to_all", Some(KEY_ALL), body).await;
        assert_eq!(r.status, 400);
        let error = r.json()["error"].clone();
        assert!(error.get("field").is_none_or(|f| f == "message"), "{body}: {error}");
        assert!(error["message"].as_str().unwrap().contains("EOF while parsing"), "{body}: {error}");
    }
    api.stop().await;
}

#[tokio::test]
async fn answers_from_below_the_application_have_json_bodies_too() {
    let cluster = Cluster::start(1).await;
    let api = ApiHandle::start(&[cluster.register.addr], |_| {}).await.linked(1).await;
    // A request head too large for the server (431) and one it cannot parse (400).
    let big = format!("POST /v1/get_all_client_count HTTP/1.1\r\nX-Big: {}", "b".repeat(1 << 20));
    for (head, status) in [(big.as_str(), 431), ("POST /v1/get_all_client_count HTTP/1.1\r\nBad Header", 400)] {
        let r = raw(api.addr, head, b"").await;
        assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
        let body: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {:?}", String::from_utf8_lossy(&r.body)));
        assert_eq!(body["error"]["status"], status);
    }
    let addr = api.addr;
    eventually(Duration::from_secs(5), "the API still serves", || async move {
        post(addr, "/v1/get_all_client_count", Some(KEY_ALL), "").await.status == 200
    })
    .await;
    api.stop().await;
}

#[tokio::test]
async fn a_session_write_over_the_gateways_cap_is_a_413_naming_the_limit_and_changes_nothing() {
    let cluster = Cluster::start(1).await;
    let api = ApiHandle::start(&[cluster.register.addr], |_| {}).await.linked(1).await;
    let (_ws, id) = clients(&cluster, 1).await.pop().unwrap();
    // Each patch is well under the API's max_body (1 MiB); two of them pass the gateway's
    // max_session_bytes (1 MiB): the second is refused by the gateway, and the caller hears it.
    let patch = |key: &str| json!({"client_id": id, "session": {key: "p".repeat(600_000)}}).to_string();
    assert_eq!(post(api.addr, "/v1/update_session", Some(KEY_ALL), &patch("a")).await.status, 200);
    let r = post(api.addr, "/v1/update_session", Some(KEY_ALL), &patch("b")).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (413, Some("too_large")), "{}", r.json());
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("max_session_bytes") && message.contains("1048576"), "{message}");
    // The refused write changed nothing: the session is what the accepted one made it.
    let r = post(api.addr, "/v1/get_session", Some(KEY_ALL), &json!({"client_id": id}).to_string()).await;
    let session = r.json()["value"].clone();
    let keys: Vec<&String> = session.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    assert_eq!(keys, ["a"]);
    // A session that fits is still written.
    let small = json!({"client_id": id, "session": {"c": 1}}).to_string();
    assert_eq!(post(api.addr, "/v1/set_session", Some(KEY_ALL), &small).await.status, 200);
    let r = post(api.addr, "/v1/get_session", Some(KEY_ALL), &json!({"client_id": id}).to_string()).await;
    assert_eq!(r.json()["value"], json!({"c": 1}));
    api.stop().await;
}
