//! A gateway at its open-files limit, run as a process under `prlimit --nofile`: clients are
//! capped below the limit so its workers still get in, and when the process runs out of
//! descriptors anyway, existing clients keep working, new ones are refused at once instead of
//! hanging, the accept loops back off instead of spinning, and everything recovers by itself.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gw_gateway_client::GatewayClient;
use gw_integration_tests::process::{Daemon, bin_path, cpu_time, http_get, temp_dir, write_config};
use gw_integration_tests::{
    GatewayHandle, NamedEcho, RegisterHandle, WorkerHandle, WsClient, eventually, fast_link, wait_for_workers,
};
use tokio::io::AsyncReadExt;

const SECRET: &str = "fd-limit-secret-0123456789";
const T: Duration = Duration::from_secs(20);
/// The gateway's `RLIMIT_NOFILE`, soft and hard.
const NOFILE: usize = 96;
const RESERVE: usize = 24;

/// Descriptor numbers below the limit that the process `pid` has in use (an inherited
/// descriptor numbered above it, such as cargo's jobserver pipe, takes no slot).
fn open_fds(pid: u32) -> usize {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok()).filter(|&fd| fd < NOFILE).count()
}

/// Opens a raw TCP connection to a WebSocket listener and reads what the gateway answers before
/// closing: a refused client gets a 503 at once.
async fn refused_answer(addr: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("a refused client must get an answer at once, not wait in the backlog")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A web backend (an internal link: one descriptor at the gateway) and whether it linked to the
/// gateway within `wait`.
async fn link_backend(register: SocketAddr, wait: Duration) -> (GatewayClient, bool) {
    let client =
        GatewayClient::builder([register.to_string()]).secret(SECRET).link_config(fast_link()).connect().await.unwrap();
    let linked = client.wait_for_gateways(1, wait).await;
    (client, linked)
}

async fn backend(register: &RegisterHandle) -> GatewayClient {
    let (client, linked) = link_backend(register.addr, T).await;
    assert!(linked, "the backend did not link to the gateway");
    client
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_out_of_descriptors_keeps_its_clients_and_workers_and_recovers() {
    let Ok(prlimit) = which("prlimit") else {
        panic!("prlimit (util-linux) is needed to run a gateway under a descriptor limit");
    };
    let register = RegisterHandle::start(SECRET).await;
    let dir = temp_dir("fdlimit");
    let cfg = write_config(
        &dir,
        "gateway.toml",
        &format!(
            "name = \"gw-fd\"\nlisten = \"127.0.0.1:0\"\ninternal_listen = \"127.0.0.1:0\"\nregisters = [\"{}\"]\n\
             secret = \"{SECRET}\"\nfd_reserve = {RESERVE}\nping_interval = \"0s\"\nping_not_response_limit = 0\n\
             [link]\nheartbeat_interval = \"200ms\"\nheartbeat_timeout = \"2s\"\nreconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n\
             [log]\nformat = \"json\"\n[process]\nrun_dir = \"{}\"\nadmin = \"127.0.0.1:0\"\n",
            register.addr,
            dir.display()
        ),
    );
    let limit = format!("--nofile={NOFILE}:{NOFILE}");
    let gateway_bin = bin_path("gateway");
    let mut gateway = Daemon::spawn_exe(
        &prlimit,
        &[&limit, "--", gateway_bin.to_str().unwrap(), "--config", cfg.to_str().unwrap()],
        &[],
    );
    let pid = gateway.pid(); // prlimit execs the gateway: same process
    let capped = gateway
        .wait_for_log("the open-files limit caps clients below max_connections; raise it (ulimit -n) for more", T);
    let capacity = capped["client_capacity"].as_u64().unwrap() as usize;
    assert_eq!(capped["open_files_limit"].as_u64(), Some(NOFILE as u64), "{capped}");
    assert!(
        (10..NOFILE - RESERVE).contains(&capacity),
        "capacity {capacity} must leave the reserve of {RESERVE} out of {NOFILE}: {capped}"
    );
    let public = gateway.wait_for_log("gateway listening", T)["public"].as_str().unwrap().to_string();
    let admin = gateway.wait_for_log("serving /metrics and /health", T)["admin"].as_str().unwrap().to_string();
    let ws_url = format!("ws://{public}/");

    // Fill the gateway with clients, before any worker is there.
    let mut clients = Vec::new();
    for _ in 0..capacity {
        clients.push(WsClient::connect(&ws_url).await);
    }
    let answer = refused_answer(&public).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "a client over capacity must get a 503, got {answer:?}");

    // The full gateway still takes its worker and a web backend: the reserve.
    let worker = WorkerHandle::start("w-fd", &[register.addr], SECRET, NamedEcho("w".into()));
    gateway.wait_for_log("worker connected", T);
    let web = backend(&register).await;
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&format!("m{i}")).await;
        assert_eq!(c.recv().await, format!("w:m{i}"));
    }
    web.send_to_all("to everyone").await.unwrap();
    for c in clients.iter_mut() {
        assert_eq!(c.recv().await, "to everyone");
    }

    // Now use up every descriptor left with more internal links (authenticated web backends).
    let mut backends = Vec::new();
    while open_fds(pid) < NOFILE {
        backends.push(backend(&register).await);
        assert!(backends.len() <= RESERVE + 4, "descriptors do not run out: {} open", open_fds(pid));
    }
    // A new client is shed at once rather than left hanging; existing clients keep working.
    let answer = refused_answer(&public).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "out of descriptors, a new client gets a 503 or a close, got {answer:?}"
    );
    // One more backend waits in the internal listener's backlog.
    let waiting = tokio::spawn(link_backend(register.addr, Duration::from_secs(60)));
    let before = cpu_time(&pid.to_string());
    let started = std::time::Instant::now();
    for (i, c) in clients.iter_mut().enumerate().take(10) {
        c.send(&format!("still {i}")).await;
        assert_eq!(c.recv().await, format!("w:still {i}"));
    }
    // While the waiting backend retries, the accept loops must back off, not spin: over this
    // window a spinning loop burns a whole core.
    let window = Duration::from_secs(2);
    tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
    let cpu = cpu_time(&pid.to_string()).saturating_sub(before).as_secs_f64();
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("gateway CPU while out of descriptors: {cpu:.2} s in {elapsed:.2} s");
    assert!(cpu < 0.5 * elapsed, "the gateway used {cpu:.2} s of CPU in {elapsed:.2} s while out of descriptors");
    assert!(!waiting.is_finished(), "a backend linked although no descriptor was free");

    // Free some descriptors: the waiting backend links and a new client gets in, by themselves.
    backends.truncate(backends.len().saturating_sub(4));
    let waiting = tokio::time::timeout(T, waiting).await.expect("the waiting backend links once descriptors are free");
    let (waiting, linked) = waiting.unwrap();
    assert!(linked, "the waiting backend never linked");
    clients.pop().unwrap().close().await;
    let deadline = tokio::time::Instant::now() + T;
    let late = loop {
        // The closed client's slot is released when the gateway sees the close.
        match tokio_tungstenite::connect_async(&ws_url).await {
            Ok((stream, _)) => break stream,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no new client accepted after recovery: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    gateway.wait_for_log("file descriptors available again; accepting", T);
    waiting.send_to_all("after recovery").await.unwrap();
    for c in clients.iter_mut() {
        assert_eq!(c.recv().await, "after recovery");
    }

    let (code, body) = http_get(&admin, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&body, "gw_client_capacity") as usize, capacity);
    assert!(metric(&body, "gw_connections_rejected_total{reason=\"capacity\"}") >= 1.0, "{body}");
    assert!(metric(&body, "gw_connections_rejected_total{reason=\"fd_exhausted\"}") >= 1.0, "{body}");
    assert!(!gateway.output().contains("panicked"), "{}", gateway.output());

    drop((late, backends, web, clients));
    waiting.shutdown().await;
    worker.stop().await;
    gateway.signal("TERM");
    assert_eq!(gateway.wait_exit(T), Some(0), "{}", gateway.output());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_limit_that_leaves_no_room_for_clients_is_a_clear_startup_error() {
    let prlimit = which("prlimit").expect("prlimit (util-linux)");
    let dir = temp_dir("fdlimit-tiny");
    let cfg = write_config(
        &dir,
        "gateway.toml",
        "listen = \"127.0.0.1:0\"\ninternal_listen = \"127.0.0.1:0\"\nregisters = [\"127.0.0.1:9\"]\nfd_reserve = 256\n",
    );
    let gateway_bin = bin_path("gateway");
    let mut gateway = Daemon::spawn_exe(
        &prlimit,
        &["--nofile=200:200", "--", gateway_bin.to_str().unwrap(), "--config", cfg.to_str().unwrap()],
        &[],
    );
    let code = gateway.wait_exit(T);
    let out = gateway.output();
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("the open-files limit (RLIMIT_NOFILE) is 200") && out.contains("fd_reserve = 256"),
        "the error must name the limit and the reserve:\n{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_internal_connections_cannot_take_the_reserve_from_workers() {
    let register = RegisterHandle::start(SECRET).await;
    // fd_reserve 32: 16 handshakes pending at most, 4 from one address.
    let gw = GatewayHandle::start_with(&[register.addr], SECRET, |c| {
        c.fd_reserve = 32;
        c.link.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    // A hostile host opens 20 internal connections and never says a word.
    let mut silent = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        silent.push(socket.connect(gw.internal).await.unwrap());
    }
    let g = gw.gw.clone();
    eventually(T, "16 silent connections refused at once", || {
        let n = g.state.metrics.get("rejected_links_busy").unwrap();
        async move { n == 16 }
    })
    .await;
    let mut closed = 0;
    for s in &mut silent {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 16, "all but the 4 allowed per address are closed at once");
    // A worker on another address links while those 4 still sit in their handshake.
    let _worker = WorkerHandle::start("w-ok", &[register.addr], SECRET, NamedEcho("ok".into()));
    wait_for_workers(&gw, 1).await;
    let mut client = gw.client().await;
    client.send("hi").await;
    assert_eq!(client.recv().await, "ok:hi");
    drop(silent);
    gw.stop().await;
}

/// The path of a program on `PATH`.
fn which(program: &str) -> Result<std::path::PathBuf, String> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([Path::new("/usr/bin").to_path_buf(), Path::new("/bin").to_path_buf()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{program} not found"))
}
