//! The three real binaries as processes, configured by TOML files, on one host.

use std::time::Duration;

use gw_integration_tests::WsClient;
use gw_integration_tests::process::{Daemon, temp_dir, write_config};

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn register_gateway_and_worker_binaries_form_a_cluster() {
    let dir = temp_dir("binaries");
    let secret = "binary-test-secret-123456";
    let register_cfg = write_config(
        &dir,
        "register.toml",
        &format!(
            "name = \"reg-1\"\nlisten = \"127.0.0.1:0\"\nsecret = \"{secret}\"\n[log]\nformat = \"json\"\n[process]\nrun_dir = \"{}\"\n",
            dir.display()
        ),
    );
    let mut register = Daemon::spawn("register", &["--config", register_cfg.to_str().unwrap(), "start"], &[]);
    let fields = register.wait_for_log("register listening", T);
    let register_addr = fields["listen"].as_str().unwrap().to_string();

    let gateway_cfg = write_config(
        &dir,
        "gateway.toml",
        &format!(
            "name = \"gw-1\"\nlisten = \"127.0.0.1:0\"\ninternal_listen = \"127.0.0.1:0\"\nregisters = [\"{register_addr}\"]\nsecret = \"{secret}\"\n[log]\nformat = \"json\"\n"
        ),
    );
    let mut gateway = Daemon::spawn("gateway", &["--config", gateway_cfg.to_str().unwrap()], &[]);
    let fields = gateway.wait_for_log("gateway listening", T);
    let ws_url = format!("ws://{}/", fields["public"].as_str().unwrap());

    let worker_cfg = write_config(
        &dir,
        "business-worker.toml",
        &format!("name = \"w-1\"\napp = \"echo\"\nsecret = \"{secret}\"\n[log]\nformat = \"json\"\n"),
    );
    // The register address comes from the environment, as in containers.
    let mut worker = Daemon::spawn(
        "business-worker",
        &["--config", worker_cfg.to_str().unwrap()],
        &[("GW_REGISTERS", &register_addr)],
    );
    gateway.wait_for_log("worker connected", T);

    let mut client = WsClient::connect(&ws_url).await;
    client.send("ping through three processes").await;
    assert_eq!(client.recv().await, "ping through three processes");

    // SIGTERM stops the gateway gracefully: the client gets a going-away close frame.
    gateway.signal("TERM");
    assert_eq!(client.expect_close().await.map(|c| c.0), Some(1001));
    assert_eq!(gateway.wait_exit(T), Some(0), "gateway output:\n{}", gateway.output());
    worker.signal("INT");
    assert_eq!(worker.wait_exit(T), Some(0), "worker output:\n{}", worker.output());
    register.signal("TERM");
    assert_eq!(register.wait_exit(T), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_bad_config_file_names_the_key_and_exits_64() {
    let dir = temp_dir("badconfig");
    let cfg = write_config(&dir, "gateway.toml", "listn = \"127.0.0.1:0\"\n");
    let mut gateway = Daemon::spawn("gateway", &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(gateway.wait_exit(T), Some(64));
    assert!(gateway.output().contains("unknown field `listn`"), "{}", gateway.output());

    let cfg = write_config(&dir, "register.toml", "listen = \"0.0.0.0:0\"\n");
    let mut register = Daemon::spawn("register", &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(register.wait_exit(T), Some(64));
    let out = register.output();
    assert!(out.contains("secret: required because `listen` listens on the non-loopback address 0.0.0.0:0"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn workers_started_before_the_register_converge() {
    let dir = temp_dir("coldstart");
    // The register gets its port from the OS, then goes away; the worker starts while no
    // register runs and must keep retrying until the register is back on that address.
    let reg_cfg = write_config(&dir, "r0.toml", "listen = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n");
    let mut first = Daemon::spawn("register", &["--config", reg_cfg.to_str().unwrap()], &[]);
    let register_addr = first.wait_for_log("register listening", T)["listen"].as_str().unwrap().to_string();
    first.signal("TERM");
    assert_eq!(first.wait_exit(T), Some(0));
    let mut worker = Daemon::spawn(
        "business-worker",
        &[],
        &[("GW_REGISTERS", &register_addr), ("GW_LOG_FORMAT", "json"), ("GW_NAME", "early")],
    );
    worker.wait_for_log("register link failed; retrying with backoff", T);
    let reg_cfg = write_config(&dir, "r.toml", &format!("listen = \"{register_addr}\"\n[log]\nformat = \"json\"\n"));
    let mut register = Daemon::spawn("register", &["--config", reg_cfg.to_str().unwrap()], &[]);
    register.wait_for_log("register listening", T);
    let gw_cfg = write_config(
        &dir,
        "g.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ninternal_listen = \"127.0.0.1:0\"\nregisters = [\"{register_addr}\"]\n[log]\nformat = \"json\"\n"
        ),
    );
    let mut gateway = Daemon::spawn("gateway", &["--config", gw_cfg.to_str().unwrap()], &[]);
    let ws = gateway.wait_for_log("gateway listening", T)["public"].as_str().unwrap().to_string();
    gateway.wait_for_log("worker connected", T);
    let mut c = WsClient::connect(&format!("ws://{ws}/")).await;
    let welcome = c.recv_json().await;
    assert_eq!(welcome["type"], "welcome", "the default app is the chat");
    for d in [&mut gateway, &mut worker, &mut register] {
        d.signal("TERM");
        assert_eq!(d.wait_exit(T), Some(0), "{}", d.output());
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The runtime threads (`/proc/<pid>/task`) of a process.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn process_threads_sets_the_runtime_threads_of_each_daemon() {
    // `[process] threads = 1` runs a daemon on one thread (dozens of gateways on a few cores);
    // every part of the cluster works that way: the register, the gateway, a worker master and
    // its worker processes.
    let dir = temp_dir("threads");
    let process = |threads: usize| {
        format!("[log]\nformat = \"json\"\n[process]\nrun_dir = \"{}\"\nthreads = {threads}\n", dir.display())
    };
    let register_cfg =
        write_config(&dir, "register.toml", &format!("name = \"reg-t\"\nlisten = \"127.0.0.1:0\"\n{}", process(1)));
    let mut register = Daemon::spawn("register", &["--config", register_cfg.to_str().unwrap(), "start"], &[]);
    let register_addr = register.wait_for_log("register listening", T)["listen"].as_str().unwrap().to_string();
    let gateway = |name: &str, threads: usize| {
        let cfg = write_config(
            &dir,
            &format!("{name}.toml"),
            &format!(
                "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\ninternal_listen = \"127.0.0.1:0\"\nregisters = [\"{register_addr}\"]\n{}",
                process(threads)
            ),
        );
        let gw = Daemon::spawn("gateway", &["--config", cfg.to_str().unwrap()], &[]);
        let url = format!("ws://{}/", gw.wait_for_log("gateway listening", T)["public"].as_str().unwrap());
        (gw, url)
    };
    let (mut one, one_url) = gateway("gw-one", 1);
    let (mut three, three_url) = gateway("gw-three", 3);
    let worker_cfg = write_config(
        &dir,
        "business-worker.toml",
        &format!("name = \"w-t\"\napp = \"echo\"\ncount = 2\nregisters = [\"{register_addr}\"]\n{}", process(1)),
    );
    let mut worker = Daemon::spawn("business-worker", &["--config", worker_cfg.to_str().unwrap()], &[]);
    one.wait_for_log("worker connected", T);
    three.wait_for_log("worker connected", T);

    for url in [&one_url, &three_url] {
        let mut client = WsClient::connect(url).await;
        client.send("one thread is enough").await;
        assert_eq!(client.recv().await, "one thread is enough");
    }
    // One thread in the one-thread gateway and register; the three-thread gateway has its three
    // and the main thread (blocked in `block_on`).
    assert_eq!(threads(one.pid()), 1, "gw-one threads");
    assert_eq!(threads(register.pid()), 1, "register threads");
    assert!(threads(three.pid()) >= 4, "gw-three has {} threads", threads(three.pid()));

    for d in [&mut one, &mut three, &mut worker, &mut register] {
        d.signal("TERM");
        assert_eq!(d.wait_exit(T), Some(0), "output:\n{}", d.output());
    }
    let _ = std::fs::remove_dir_all(dir);
}
