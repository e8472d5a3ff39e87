//! The application template (`app-template/`) as a user runs it: build it with cargo, `start -d`
//! it against a cluster, clients get its answers, rebuild it (a new binary on disk) and `reload`
//! under numbered traffic with nothing lost or reordered, `status`, `/metrics`, `stop`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use gw_integration_tests::numbered::numbered_traffic;
use gw_integration_tests::process::{
    StopOnPanic, cli, http_get, log_field, reload_every_process, start_worker_master, temp_dir, wait_for_file_line,
    worker_pids, write_config,
};
use gw_integration_tests::*;

const SECRET: &str = "template-test-secret-0123456789";
const CLIENTS: usize = 8;
const T: Duration = Duration::from_secs(30);

/// `cargo build`s the template as its README says, into this workspace's target directory (so the
/// registry dependencies built for the workspace are reused); returns the binary's path.
fn build_template() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target = profile_dir.parent().expect("target dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "--manifest-path"])
        .arg(root.join("app-template/Cargo.toml"))
        .env("CARGO_TARGET_DIR", target);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build of app-template failed");
    profile_dir.join("my-app")
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).ino()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_runs_as_a_daemon_and_reloads_its_rebuilt_binary_without_losing_anything() {
    let bin = build_template();
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let dir = temp_dir("template");
    let sections = "[app_config]\ngreeting = \"hi from the template\"\nreply_prefix = \"you said: \"\n";
    let cfg = start_worker_master(&bin, &dir, "name = \"tpl\"", reg.addr, SECRET, "127.0.0.1:0", sections);
    let _stop_on_panic = StopOnPanic::new(&bin, &cfg);
    wait_for_workers(&gw, 2).await;

    // The handlers and the [app_config] section are the template's.
    let mut ws = gw.client().await;
    let greeting = ws.recv().await;
    assert!(greeting.starts_with("hi from the template "), "{greeting}");
    ws.send("all:hello everyone").await;
    assert_eq!(ws.recv().await, "hello everyone");

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut ws = gw.client().await;
        assert!(ws.recv().await.starts_with("hi from the template "));
        tasks.push(tokio::spawn(numbered_traffic(ws, c, stop.clone(), "you said: ".into())));
    }
    gw.wait_for_more_messages(300, "traffic flowing").await;

    // Rebuild after a "code change" (the source file is newer), under traffic: cargo links a new
    // binary, a different file from the one the processes run.
    let old = worker_pids(&bin, &cfg, "tpl");
    assert_eq!(old.len(), 2, "two worker processes");
    let old_inode = inode(&bin);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../app-template/src/events.rs");
    std::fs::File::options().append(true).open(&source).unwrap().set_modified(SystemTime::now()).unwrap();
    let rebuilt = tokio::task::spawn_blocking(build_template).await.unwrap();
    assert_eq!(rebuilt, bin);
    let new_inode = inode(&bin);
    assert_ne!(new_inode, old_inode, "cargo build wrote a new binary");

    let (bin2, cfg2) = (bin.clone(), cfg.clone());
    let new = tokio::task::spawn_blocking(move || reload_every_process(&bin2, &cfg2, "tpl")).await.unwrap();
    for pid in &new {
        assert_eq!(inode(Path::new(&format!("/proc/{pid}/exe"))), new_inode, "process {pid} runs the rebuilt binary");
    }
    gw.wait_for_more_messages(300, "traffic after the reload").await;

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut clients = vec![ws];
    for t in tasks {
        let (sent, ws) = t.await.unwrap();
        total += sent;
        clients.push(ws);
    }
    assert_eq!(gw.metric("connections"), CLIENTS as u64 + 1, "no client was disconnected");
    assert_eq!(gw.metric("redelivered"), 0, "nothing was delivered twice");
    assert_eq!(gw.metric("dropped_no_worker"), 0);
    println!("TEMPLATE RELOAD: {total} numbered messages from {CLIENTS} clients, all answered once and in order");

    // status and /metrics of the user's binary, as of the stock one.
    let out = cli(&bin, &["--config", &cfg, "status"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert!(out.stdout.contains("my-app \"tpl\"") && out.stdout.contains("running, 2 process(es)"), "{}", out.stdout);
    let admin = log_field(&wait_for_file_line(&dir.join("tpl.log"), "serving /metrics", T), "admin");
    let (code, body) = http_get(&admin, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("gw_worker_reloads_total 1"), "{body}");
    assert!(body.contains("gw_worker_events_total{process=\"tpl-0\"}"), "{body}");

    let out = cli(&bin, &["--config", &cfg, "stop"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let out = cli(&bin, &["--config", &cfg, "status"]);
    assert_eq!(out.code, Some(1), "{}", out.text());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_app_config_section_is_reported_with_the_rest_and_exits_64() {
    let bin = build_template();
    let dir = temp_dir("template-bad");
    // Every problem in one round: the worker's, the section's unknown key and its bad value.
    let cfg = write_config(&dir, "bad.toml", "count = 0\n[app_config]\ngreeting = \" \"\ncolour = \"red\"\n");
    let out = cli(&bin, &["--config", cfg.to_str().unwrap(), "start"]);
    assert_eq!(out.code, Some(64), "{}", out.text());
    assert!(out.stderr.contains("count: 0 is outside 1..=256"), "{}", out.stderr);
    assert!(
        out.stderr.contains("app_config.colour: unknown field `colour`, expected `greeting` or `reply_prefix`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("app_config.greeting: must not be empty"), "{}", out.stderr);
    let cfg = write_config(&dir, "empty.toml", "[app_config]\ngreeting = \" \"\n");
    let out = cli(&bin, &["--config", cfg.to_str().unwrap(), "status"]);
    assert_eq!(out.code, Some(64), "{}", out.text());
    assert!(out.stderr.contains("app_config.greeting: must not be empty"), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_template_pins_the_workspace_dependency_versions() {
    // Then building it reuses what the workspace built, and it runs what the tests ran.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let packages = |lock: &str| -> Vec<(String, String)> {
        let text = std::fs::read_to_string(root.join(lock)).unwrap();
        text.split("[[package]]")
            .filter_map(|p| {
                let field =
                    |k: &str| p.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim_matches('"').to_string());
                Some((field("name = ")?, field("version = ")?))
            })
            .collect()
    };
    let workspace = packages("Cargo.lock");
    for (name, version) in packages("app-template/Cargo.lock") {
        if name == "my-app" {
            continue;
        }
        assert!(
            workspace.contains(&(name.clone(), version.clone())),
            "app-template/Cargo.lock has {name} {version}, which the workspace's Cargo.lock does not \
             (copy the workspace's Cargo.lock there and build the template again)"
        );
    }
}
