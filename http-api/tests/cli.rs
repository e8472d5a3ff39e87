//! The `http-api` binary as a process: config errors exit 64, `start` serves, `status` answers,
//! SIGTERM stops it, and no API key ever reaches its log.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use gw_integration_tests::process::{Daemon, cli, http_get, temp_dir, write_config};

const T: Duration = Duration::from_secs(20);

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_http-api"))
}

#[test]
fn bad_config_names_the_key_and_exits_64() {
    let dir = temp_dir("http-api-bad");
    let cfg = write_config(&dir, "http-api.toml", "listen = \"0.0.0.0:8090\"\nmax_body = 1\n");
    let out = cli(exe(), &["--config", cfg.to_str().unwrap(), "start"]);
    assert_eq!(out.code, Some(64), "{}", out.text());
    assert!(out.stderr.contains("keys: at least one API key is required"), "{}", out.stderr);
    assert!(out.stderr.contains("max_body"), "{}", out.stderr);
    let cfg = write_config(&dir, "typo.toml", "[[keys]]\nname = \"a\"\nkey = \"0123456789abcdef\"\nacess = \"read\"\n");
    let out = cli(exe(), &["--config", cfg.to_str().unwrap(), "start"]);
    assert_eq!(out.code, Some(64), "{}", out.text());
    assert!(out.stderr.contains("acess"), "{}", out.stderr);
    let out = cli(exe(), &["--config", cfg.to_str().unwrap(), "reload"]);
    assert_eq!(out.code, Some(64), "a bad config fails every subcommand: {}", out.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_reports_status_stops_and_never_logs_a_key() {
    let cluster = Cluster::start(1).await;
    let dir = temp_dir("http-api-bin");
    let key = "the-very-secret-api-key-42";
    let cfg = write_config(
        &dir,
        "http-api.toml",
        &format!(
            "name = \"api-1\"\nlisten = \"127.0.0.1:0\"\nregisters = [\"{}\"]\nsecret = \"{SECRET}\"\n\
             [[keys]]\nname = \"backend\"\nkey = \"{key}\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\
             [process]\nrun_dir = \"{}\"\n",
            cluster.register.addr,
            dir.display()
        ),
    );
    let cfg = cfg.to_str().unwrap().to_string();
    let mut daemon = Daemon::spawn_exe(exe(), &["--config", &cfg, "start"], &[("GW_RUN_DIR", dir.to_str().unwrap())]);
    let listen = daemon.wait_for_log("serving the HTTP API", T)["listen"].as_str().unwrap().to_string();
    let admin = daemon.wait_for_log("serving /metrics and /health", T)["admin"].as_str().unwrap().to_string();
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let a = addr;
    gw_integration_tests::eventually(T, "the API links the gateway", || async move {
        post(a, "/v1/get_all_client_count", Some("the-very-secret-api-key-42"), "").await.status == 200
    })
    .await;
    assert_eq!(post(addr, "/v1/send_to_all", Some("a-wrong-key-0123456789"), r#"{"message":"x"}"#).await.status, 401);
    let r = post(addr, "/v1/send_to_all", Some(key), r#"{"message":"x"}"#).await;
    assert_eq!(r.status, 200, "{:?}", r.json());

    let status = cli(exe(), &["--config", &cfg, "status"]);
    assert_eq!(status.code, Some(0), "{}", status.text());
    assert!(status.stdout.contains("api-1") && status.stdout.contains(&listen), "{}", status.stdout);
    let (code, metrics) = http_get(&admin, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains(r#"gw_http_requests_total{route="/v1/send_to_all",status="401"} 1"#), "{metrics}");
    assert!(
        metrics.contains(r#"gw_http_request_duration_seconds_bucket{route="/v1/send_to_all",le="+Inf"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("gw_http_gateways 1"), "{metrics}");
    assert_eq!(http_get(&admin, "/health").0, 200);

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(T), Some(0), "{}", daemon.output());
    let log = daemon.output();
    assert!(log.contains("\"key\":\"backend\"") || log.contains("backend"), "the key's name is logged: {log}");
    assert!(!log.contains(key) && !log.contains("a-wrong-key"), "an API key reached the log:\n{log}");
}
