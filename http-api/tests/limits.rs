//! What a client can hold of the HTTP API, and for how long: a request without a valid key is
//! refused from its head (its body is never read), slow heads and bodies time out, connections
//! are capped in all and per address (503 beyond), and each of these is counted in `/metrics`.
//! Valid requests from other addresses are served throughout.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{ApiHandle, KEY_ALL, get, read_response};
use gw_integration_tests::sockets::{closed_within, connect_from};
use gw_integration_tests::{RegisterHandle, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[tokio::test]
async fn a_request_without_a_valid_key_is_refused_before_its_body_is_read() {
    let register = RegisterHandle::start(common::SECRET).await;
    let api = ApiHandle::start(&[register.addr], |_| {}).await;
    for auth in ["", "Authorization: Bearer wrong-key-0123456789\r\n"] {
        let mut s = TcpStream::connect(api.addr).await.unwrap();
        // The head announces a body of almost max_body; not a byte of it is sent.
        let head = format!("POST /v1/send_to_uid HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 1000000\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let r = tokio::time::timeout(T, read_response(&mut s))
            .await
            .expect("answered from the head, without waiting for the body")
            .expect("a response");
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (401, Some("unauthorized")), "auth {auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(api.api.stats.count("/v1/send_to_uid", 401), 2);
    api.stop().await;
}

#[tokio::test]
async fn slow_heads_and_bodies_time_out_and_are_counted() {
    let register = RegisterHandle::start(common::SECRET).await;
    let api = ApiHandle::start(&[register.addr], |c| {
        c.header_timeout = Duration::from_millis(500);
        c.body_timeout = Duration::from_millis(500);
    })
    .await;
    // Half a head, then silence: closed.
    let mut s = TcpStream::connect(api.addr).await.unwrap();
    s.write_all(b"POST /v1/send_to_uid HTTP/1.1\r\nHost: t\r\nContent-Le").await.unwrap();
    assert!(closed_within(&mut s, T).await, "a stalled head is closed");
    // A whole head with the key, a tenth of the body, then silence: 408.
    let mut s = TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "POST /v1/send_to_uid HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY_ALL}\r\nContent-Length: 100\r\n\r\n{{\"uid\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let r = tokio::time::timeout(T, read_response(&mut s)).await.expect("answered in time").expect("a response");
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (408, Some("timeout")));
    assert!(closed_within(&mut s, T).await, "the connection of a timed-out body is closed");
    let stats = &api.api.stats;
    assert_eq!((load(&stats.head_timeouts), load(&stats.body_timeouts)), (1, 1));
    assert_eq!(stats.count("/v1/send_to_uid", 408), 1);
    let metrics = format!("{:?}", stats.families());
    assert!(metrics.contains("gw_http_timeouts_total"), "{metrics}");
    // Meanwhile a request that keeps to the deadlines is served.
    assert_eq!(get(api.addr, "/openapi.json").await.status, 200);
    api.stop().await;
}

#[tokio::test]
async fn connections_are_capped_in_all_and_per_address_and_valid_requests_are_served() {
    let register = RegisterHandle::start(common::SECRET).await;
    let api = ApiHandle::start(&[register.addr], |c| {
        c.max_connections = 6;
        c.max_connections_per_ip = 3;
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    // An attacker on 127.0.0.2 opens 5 connections and sends half a head on each.
    let mut attack = Vec::new();
    for _ in 0..5 {
        let mut s = connect_from("127.0.0.2", api.addr).await;
        s.write_all(b"POST /v1/send_to_all HTTP/1.1\r\n").await.unwrap();
        attack.push(s);
    }
    let stats = &api.api.stats;
    let rejected = || load(&stats.rejected_per_ip);
    eventually(T, "2 of them refused", || async { rejected() == 2 }).await;
    let mut refused = 0;
    for s in &mut attack {
        let mut buf = Vec::new();
        // Closed at once (a 503 first, or a reset: the half head was never read).
        if tokio::time::timeout(Duration::from_millis(300), s.read_to_end(&mut buf)).await.is_ok() {
            assert!(buf.is_empty() || buf.starts_with(b"HTTP/1.1 503"), "{:?}", String::from_utf8_lossy(&buf));
            refused += 1;
        }
    }
    assert_eq!(refused, 2, "the 3 allowed per address are held, the rest refused at once");
    // Another address is still served.
    assert_eq!(get(api.addr, "/openapi.json").await.status, 200);
    // Three more on 127.0.0.3 reach the cap of 6: the next client, from anywhere, gets 503.
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.3", api.addr).await;
        s.write_all(b"GET /openapi.json HTTP/1.1\r\n").await.unwrap();
        attack.push(s);
    }
    eventually(T, "6 connections open", || async { load(&stats.connections) == 6 }).await;
    let mut s = TcpStream::connect(api.addr).await.unwrap();
    s.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let r = tokio::time::timeout(T, read_response(&mut s)).await.unwrap().expect("a 503");
    assert_eq!(r.status, 503);
    assert_eq!(load(&stats.rejected_capacity), 1);
    // The attack ends: served again.
    drop(attack);
    let addr = api.addr;
    eventually(
        T,
        "served once the connections close",
        || async move { get(addr, "/openapi.json").await.status == 200 },
    )
    .await;
    api.stop().await;
}
