//! The HTTP API against a real cluster over real sockets: the OpenAPI document against the real
//! routes, hostile input, keys and access, 503 without gateways, and the metrics.

mod common;

use std::time::Duration;

use common::*;
use gw_integration_tests::{RegisterHandle, eventually};
use serde_json::{Value, json};

/// The schema a `$ref` points to.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").expect("a component ref");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

#[tokio::test]
async fn openapi_document_matches_the_real_routes() {
    let cluster = Cluster::start(1).await;
    let api = ApiHandle::start(&[cluster.register.addr], |_| {}).await.linked(1).await;
    let doc = get(api.addr, "/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 41, "40 calls and the batch");
    for (path, item) in paths {
        let op = &item["post"];
        let schema = resolve(&doc, &op["requestBody"]["content"]["application/json"]["schema"]);
        // Every documented route exists and rejects what its schema does not allow, by name.
        let r = post(api.addr, path, Some(KEY_ALL), r#"{"not_a_field": 1}"#).await;
        assert_eq!(r.status, 400, "{path}: {:?}", r.json());
        assert_eq!(r.json()["error"]["field"], "not_a_field", "{path}");
        // Every field the schema requires is required by the route.
        let required: Vec<&str> =
            schema["required"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let properties = schema["properties"].as_object().cloned().unwrap_or_default();
        for field in &required {
            assert!(properties.contains_key(*field), "{path}: required {field} is not a property");
            let r = post(api.addr, path, Some(KEY_ALL), "{}").await;
            assert_eq!(r.status, 400, "{path}");
            assert!(required.contains(&r.json()["error"]["field"].as_str().unwrap()), "{path}: {:?}", r.json());
        }
        // Calls without required fields run with an empty body.
        if required.is_empty() && path != "/v1/batch" {
            let r = post(api.addr, path, Some(KEY_ALL), "").await;
            assert_eq!(r.status, 200, "{path}: {:?}", r.json());
            assert!(r.json()["missing"].as_array().unwrap().is_empty(), "{path}");
            assert!(op["responses"]["200"].is_object());
        }
    }
    // Every call a batch accepts is a documented route, and the other way round.
    let call = resolve(&doc, &doc["components"]["schemas"]["BatchRequest"]["properties"]["calls"]["items"]);
    let mut in_batch: Vec<String> = call["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["properties"]["call"]["const"].as_str().expect("a call name").to_string())
        .collect();
    in_batch.sort();
    let mut routes: Vec<String> =
        paths.keys().filter(|p| *p != "/v1/batch").map(|p| p.trim_start_matches("/v1/").to_string()).collect();
    routes.sort();
    assert_eq!(in_batch, routes);
    // A path that is not documented is not served.
    let r = post(api.addr, "/v1/send_to_nobody", Some(KEY_ALL), "{}").await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("unknown_call")));
    api.stop().await;
}

#[tokio::test]
async fn hostile_input_gets_precise_errors() {
    let cluster = Cluster::start(1).await;
    let api = ApiHandle::start(&[cluster.register.addr], |c| c.max_body = 4096).await.linked(1).await;
    let a = api.addr;
    let body = r#"{"uid":"u1","message":"hi"}"#;
    // Keys.
    let r = post(a, "/v1/send_to_uid", None, body).await;
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")));
    let r = post(a, "/v1/send_to_uid", Some("wrong-key-0123456789"), body).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (401, Some("unauthorized")));
    let r = post(a, "/v1/send_to_uid", Some(KEY_READ), body).await;
    assert_eq!(r.status, 403, "{:?}", r.json());
    let r = post(a, "/v1/bind_uid", Some(KEY_SEND), r#"{"client_id":"x","uid":"u"}"#).await;
    assert_eq!(r.status, 403);
    let r = post(a, "/v1/get_all_uids", Some(KEY_SEND), "{}").await;
    assert_eq!(r.status, 403);
    assert_eq!(post(a, "/v1/get_all_uids", Some(KEY_READ), "{}").await.status, 200);
    assert_eq!(post(a, "/v1/send_to_uid", Some(KEY_SEND), body).await.status, 200);
    // A batch with one call the key may not make runs nothing.
    let batch = r#"{"calls":[{"call":"get_all_uids"},{"call":"send_to_all","args":{"message":"x"}}]}"#;
    let r = post(a, "/v1/batch", Some(KEY_READ), batch).await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("call 1"), "{:?}", r.json());
    // Bodies.
    let huge = format!(r#"{{"uid":"u1","message":"{}"}}"#, "x".repeat(100_000));
    let r = post(a, "/v1/send_to_uid", Some(KEY_ALL), &huge).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (413, Some("too_large")));
    let deep = format!("{}{}", "{\"a\":".repeat(600), "}".repeat(600));
    let r = post(a, "/v1/send_to_uid", Some(KEY_ALL), &deep).await;
    assert_eq!(r.status, 400);
    let deep_session = format!(
        r#"{{"client_id":"MTI3LjAuMC4xOjI5MDA.1f.1","session":{}1{}}}"#,
        "{\"a\":".repeat(500),
        "}".repeat(500)
    );
    assert_eq!(post(a, "/v1/set_session", Some(KEY_ALL), &deep_session).await.status, 400);
    for (path, body, field) in [
        ("/v1/send_to_uid", r#"{"uid":5,"message":"hi"}"#, "uid"),
        ("/v1/send_to_uid", r#"{"uid":"","message":"hi"}"#, "uid"),
        ("/v1/send_to_uid", r#"{"uid":"u","message":7}"#, "message"),
        ("/v1/send_to_uid", r#"{"uid":"u","message":{"base64":"***"}}"#, "message"),
        ("/v1/send_to_uid", r#"{"uid":"u"}"#, "message"),
        ("/v1/send_to_uids", r#"{"uids":["a",3],"message":"hi"}"#, "uids[1]"),
        ("/v1/send_to_clients", r#"{"client_ids":["nope"],"message":"hi"}"#, "client_ids[0]"),
        ("/v1/close_client", r#"{"client_id":"MTI3LjAuMC4xOjI5MDA.1f.1","code":1006}"#, "code"),
        ("/v1/set_session", r#"{"client_id":"MTI3LjAuMC4xOjI5MDA.1f.1","session":[1]}"#, "session"),
        ("/v1/batch", r#"{"calls":[{"call":"send_to_uid","args":{"uid":1}}]}"#, "calls[0].args.uid"),
        ("/v1/batch", r#"{"calls":[{"call":"launch_rockets"}]}"#, "calls[0].call"),
        ("/v1/batch", r#"{"calls":{}}"#, "calls"),
    ] {
        let r = post(a, path, Some(KEY_ALL), body).await;
        assert_eq!(r.status, 400, "{path} {body}: {:?}", r.json());
        assert_eq!(r.json()["error"]["field"], field, "{path} {body}: {:?}", r.json());
    }
    for body in ["not json", "[1,2]", "null", r#"{"uid":"u","message":"x"} {}"#] {
        let r = post(a, "/v1/send_to_uid", Some(KEY_ALL), body).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.json());
    }
    let many = format!(r#"{{"calls":[{}]}}"#, vec![r#"{"call":"get_all_uids"}"#; 1001].join(","));
    let api_big = ApiHandle::start(&[cluster.register.addr], |c| c.max_body = 1 << 20).await.linked(1).await;
    let r = post(api_big.addr, "/v1/batch", Some(KEY_ALL), &many).await;
    assert_eq!((r.status, r.json()["error"]["field"].as_str()), (400, Some("calls")));
    // Routes and methods.
    let r = raw(a, "GET /v1/send_to_uid HTTP/1.1", b"").await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    let r = get(a, "/admin").await;
    assert_eq!(r.status, 404);
    // Garbage instead of HTTP gets an error or a closed socket, and the server goes on.
    let _ = raw(a, "\u{1}\u{2}GARBAGE", b"").await;
    assert_eq!(post(a, "/v1/get_all_client_count", Some(KEY_ALL), "").await.status, 200);
    // Everything was counted by route and status.
    let stats = &api.api.stats;
    assert_eq!(stats.count("/v1/send_to_uid", 413), 1);
    assert!(stats.count("/v1/send_to_uid", 401) >= 2);
    assert!(stats.count("unmatched", 404) >= 1);
    api.stop().await;
    api_big.stop().await;
}

#[tokio::test]
async fn no_gateway_is_503_and_calls_work_once_one_is_up() {
    let register = RegisterHandle::start(SECRET).await;
    let api = ApiHandle::start(&[register.addr], |_| {}).await;
    let r = post(api.addr, "/v1/send_to_all", Some(KEY_ALL), r#"{"message":"hi"}"#).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (503, Some("no_gateways")));
    let r = post(api.addr, "/v1/batch", Some(KEY_ALL), r#"{"calls":[{"call":"get_all_uids"}]}"#).await;
    assert_eq!(r.status, 503);
    let gateway = gw_integration_tests::GatewayHandle::start(&[register.addr], SECRET).await;
    let addr = api.addr;
    eventually(Duration::from_secs(10), "the API links the new gateway", || async move {
        post(addr, "/v1/get_all_client_count", Some(KEY_ALL), "").await.status == 200
    })
    .await;
    let r = post(api.addr, "/v1/get_all_client_count", Some(KEY_ALL), "").await;
    assert_eq!(r.json(), json!({"value": 0, "missing": []}));
    api.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn https_with_the_configured_certificate() {
    let dir = gw_integration_tests::process::temp_dir("http-api-tls");
    let (cert, key, der) = gw_integration_tests::self_signed(&dir);
    let cluster = Cluster::start(1).await;
    let api = ApiHandle::start(&[cluster.register.addr], |c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await
    .linked(1)
    .await;
    let stream = gw_integration_tests::tls_connect(&api.addr.to_string(), der).await;
    let auth = format!("POST /v1/get_all_client_count HTTP/1.1\r\nAuthorization: Bearer {KEY_ALL}");
    let r = raw_on(stream, &auth, b"").await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["missing"], json!([]));
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain.write_all(b"POST /v1/get_all_client_count HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf));
    // A missing certificate file is a startup error naming it.
    let config = gw_config::HttpApiConfig {
        tls_cert: Some("/nonexistent/cert.pem".into()),
        tls_key: Some(key),
        ..gw_config::HttpApiConfig::default()
    };
    let err = gw_http_api::Api::start(&config).err().expect("a missing file is an error");
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    api.stop().await;
}
