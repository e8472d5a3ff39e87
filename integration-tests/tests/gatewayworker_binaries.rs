//! The `register` and `gateway` binaries with their `[gatewayworker]` sections, as processes: the
//! gateway announces its GatewayWorker-protocol address to the register's GatewayWorker listener,
//! which hands it to a PHP-style `worker_connect`, and both list that listener in `status`; a bad
//! section (an IPv6 address PHP cannot hold, no `secret_key` off loopback) exits 64 naming the key.

use std::time::Duration;

use gw_integration_tests::process::{Daemon, bin_path, cli, temp_dir, write_config};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn gateway_binary_announces_its_gatewayworker_listener_to_the_register_binary() {
    let dir = temp_dir("gw-binaries");
    let run_dir = dir.display();
    let register_cfg = write_config(
        &dir,
        "register.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[process]\nrun_dir = \"{run_dir}\"\n[gatewayworker]\nlisten = \"127.0.0.1:0\"\nsecret_key = \"k\"\n"
        ),
    );
    // Their run_dir is the config's, so that `status` (run below without the environment) finds them.
    let env = [("GW_RUN_DIR", dir.to_str().unwrap())];
    let mut register = Daemon::spawn("register", &["--config", register_cfg.to_str().unwrap(), "start"], &env);
    let ours = register.wait_for_log("register listening", T)["listen"].as_str().unwrap().to_string();
    let php = register.wait_for_log("register listening for GatewayWorker (PHP) peers", T)["listen"]
        .as_str()
        .unwrap()
        .to_string();

    let gateway_cfg = write_config(
        &dir,
        "gateway.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ninternal_listen = \"127.0.0.1:0\"\nregisters = [\"{ours}\"]\n[log]\nformat = \"json\"\n[process]\nrun_dir = \"{run_dir}\"\n[gatewayworker]\nlisten = \"127.0.0.1:0\"\nregisters = [\"{php}\"]\nsecret_key = \"k\"\n"
        ),
    );
    let mut gateway = Daemon::spawn("gateway", &["--config", gateway_cfg.to_str().unwrap(), "start"], &env);
    let advertise =
        gateway.wait_for_log("gateway listening for GatewayWorker (PHP) workers and clients", T)["advertise"]
            .as_str()
            .unwrap()
            .to_string();

    // With the default runtime (a thread per core) the PHP side has no thread of its own: it
    // runs in one task on the gateway's runtime, and a client's round trip through a PHP worker
    // need not cross threads.
    let threads = thread_names(gateway.pid());
    assert!(!threads.iter().any(|t| t == "gatewayworker"), "{threads:?}");

    // What a PHP BusinessWorker does: worker_connect, then broadcast_addresses on every change.
    let stream = TcpStream::connect(&php).await.unwrap();
    let (r, mut w) = stream.into_split();
    w.write_all(b"{\"event\":\"worker_connect\",\"secret_key\":\"k\"}\n").await.unwrap();
    let mut lines = BufReader::new(r).lines();
    let want = serde_json::json!({"event": "broadcast_addresses", "addresses": [advertise]});
    loop {
        let line = tokio::time::timeout(T, lines.next_line()).await.expect("no broadcast in time").unwrap().unwrap();
        if serde_json::from_str::<serde_json::Value>(&line).unwrap() == want {
            break;
        }
    }

    // `status` lists every listener, the GatewayWorker ones included.
    let out = cli(&bin_path("gateway"), &["--config", gateway_cfg.to_str().unwrap(), "status"]);
    assert!(out.stdout.contains(&format!("gatewayworker://{advertise}")), "{}", out.text());
    let out = cli(&bin_path("register"), &["--config", register_cfg.to_str().unwrap(), "status"]);
    assert!(out.stdout.contains(&format!("gatewayworker://{php}")), "{}", out.text());

    // The gateway leaves: the register tells the PHP worker at once.
    gateway.signal("TERM");
    assert_eq!(gateway.wait_exit(T), Some(0), "gateway output:\n{}", gateway.output());
    let empty = serde_json::json!({"event": "broadcast_addresses", "addresses": []});
    let line = tokio::time::timeout(T, lines.next_line()).await.unwrap().unwrap().unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&line).unwrap(), empty);
    register.signal("TERM");
    assert_eq!(register.wait_exit(T), Some(0), "register output:\n{}", register.output());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_gatewayworker_section_with_an_ipv6_advertise_exits_64() {
    let dir = temp_dir("gw-badconfig");
    let cfg = write_config(&dir, "gateway.toml", "[gatewayworker]\nlisten = \"[::1]:0\"\n");
    let mut gateway = Daemon::spawn("gateway", &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(gateway.wait_exit(T), Some(64));
    let out = gateway.output();
    assert!(out.contains("gatewayworker.advertise") && out.contains("IPv4"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_gatewayworker_listener_off_loopback_without_a_secret_key_exits_64_unless_allowed() {
    let dir = temp_dir("gw-nokey");
    for (binary, section) in [
        ("gateway", "[gatewayworker]\nlisten = \"0.0.0.0:0\"\nadvertise = \"10.0.0.5:2901\"\n"),
        ("register", "[gatewayworker]\nlisten = \"0.0.0.0:0\"\n"),
    ] {
        let cfg = write_config(&dir, &format!("{binary}.toml"), section);
        let mut daemon = Daemon::spawn(binary, &["--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(daemon.wait_exit(T), Some(64), "{binary}: {}", daemon.output());
        let out = daemon.output();
        assert!(out.contains("gatewayworker.secret_key") && out.contains("allow_empty_secret_key"), "{binary}: {out}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The names of process `pid`'s threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}
