//! The one-process demo (`gatewayrs`, what `cargo run --release` starts) as a newcomer runs it:
//! a clean Ctrl-C logs no error, and `--host 0.0.0.0` exposes no unauthenticated internal port.

use std::time::Duration;

use gw_integration_tests::WsClient;
use gw_integration_tests::process::Daemon;

const T: Duration = Duration::from_secs(30);

/// Starts the demo with every port chosen by the system; returns it and its WebSocket URL.
fn start_demo(host: &str) -> (Daemon, String) {
    let demo = Daemon::spawn(
        "gatewayrs",
        &["--host", host, "--web-port", "0", "--ws-port", "0", "--register-port", "0", "--internal-port", "0"],
        &[],
    );
    let line = demo.wait_for_line(T, "the websocket address", |l| l.trim_start().starts_with("websocket:"));
    let url = line.split_whitespace().nth(1).expect("websocket: URL").to_string();
    (demo, url)
}

#[tokio::test]
async fn the_first_screen_has_no_warning_under_a_low_open_files_limit() {
    // 1,024 is the usual default; the demo's gateway would want 100,000 clients.
    let mut demo = Daemon::spawn_exe(
        std::path::Path::new("/bin/sh"),
        &[
            "-c",
            "ulimit -n 1024 && exec \"$0\" \"$@\"",
            gw_integration_tests::process::bin_path("gatewayrs").to_str().unwrap(),
            "--web-port",
            "0",
            "--ws-port",
            "0",
            "--register-port",
            "0",
            "--internal-port",
            "0",
        ],
        &[],
    );
    let line = demo.wait_for_line(T, "the websocket address", |l| l.trim_start().starts_with("websocket:"));
    let url = line.split_whitespace().nth(1).unwrap().to_string();
    let _ann = logged_in(&url, "Ann").await;
    let output = demo.output();
    assert!(!output.contains("WARN"), "the demo's first screen shows no warning:\n{output}");
    demo.signal("TERM");
    assert_eq!(demo.wait_exit(T), Some(0), "{}", demo.output());
}

/// Connects a chat client and logs it in; returns it once its own login is echoed.
async fn logged_in(url: &str, name: &str) -> WsClient {
    let mut c = WsClient::connect(url).await;
    assert_eq!(c.recv_json().await["type"], "welcome");
    c.send(&format!(r#"{{"type":"login","name":"{name}","room":"lobby"}}"#)).await;
    loop {
        let m = c.recv_json().await;
        if m["type"] == "login" && m["name"] == name {
            return c;
        }
    }
}

#[tokio::test]
async fn ctrl_c_with_logged_in_clients_stops_cleanly_without_error_lines() {
    let (mut demo, url) = start_demo("127.0.0.1");
    let mut clients = Vec::new();
    for name in ["Ann", "Bob", "Cid"] {
        clients.push(logged_in(&url, name).await);
    }
    clients[0].send(r#"{"type":"say","to":"all","content":"bye"}"#).await;
    demo.signal("INT");
    for c in &mut clients {
        assert_eq!(c.expect_close().await.map(|c| c.0), Some(1001), "clients get a going-away close frame");
    }
    let code = demo.wait_exit(T);
    let output = demo.output();
    assert_eq!(code, Some(0), "a clean stop exits 0; output:\n{output}");
    assert!(output.contains("SIGINT: stopping gracefully"), "{output}");
    let errors: Vec<&str> = output.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "a normal stop logs no errors:\n{}\n\nwhole output:\n{output}", errors.join("\n"));
}

#[tokio::test]
async fn host_0_0_0_0_keeps_the_register_and_internal_listener_on_loopback_and_says_so() {
    let (mut demo, url) = start_demo("0.0.0.0");
    let note = demo.wait_for_line(T, "the note on internal listeners", |l| l.contains("internal listeners"));
    assert!(note.contains("127.0.0.1"), "{note}");
    let register = demo.wait_for_line(T, "the register address", |l| l.trim_start().starts_with("register:"));
    let register = register.split_whitespace().nth(1).unwrap().to_string();
    assert!(register.starts_with("127.0.0.1:"), "the register has no secret: loopback only, got {register}");
    // Public listeners do follow --host: the WebSocket answers on a non-loopback address too.
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let public = format!("ws://{}:{port}/", non_loopback_ip().unwrap_or_else(|| "127.0.0.1".into()));
    let mut c = WsClient::connect(&public).await;
    assert_eq!(c.recv_json().await["type"], "welcome");
    // Nothing else of the demo listens on a wildcard address besides the page and the WebSocket.
    let wildcard = wildcard_ports(demo.pid());
    assert_eq!(wildcard.len(), 2, "only the page and the WebSocket listen on 0.0.0.0: {wildcard:?}");
    demo.signal("TERM");
    assert_eq!(demo.wait_exit(T), Some(0), "{}", demo.output());
}

/// An address of this machine other than loopback, if it has one.
fn non_loopback_ip() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

/// TCP ports process `pid` listens on at 0.0.0.0 (from /proc/net/tcp and its open sockets).
fn wildcard_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local address, state 0A = LISTEN, inode
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            let (ip, port) = local.split_once(':')?;
            (*state == "0A" && ip == "00000000" && inodes.iter().any(|i| i == inode))
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}
