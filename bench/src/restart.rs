//! `restart`: a gateway with N recovery clients is stopped gracefully (SIGTERM to its pid, as
//! `stop` or `docker stop` does) while a second gateway runs: it hands its held clients over
//! (issue 25 §5). Each client, closed with 1012, comes back on the second gateway with its
//! token, resumes under its id and round-trips an echo there. Reported: how many resumed, the
//! time from the SIGTERM to each client's `resumed` (and to the last one), how long the stopping
//! gateway took to exit, and the servers' CPU. Both gateways need `[recovery] enabled = true`
//! and the same cluster secret; the app must echo (`app = "echo"`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::handover::{control, open};
use crate::hist::Hist;
use crate::net::{self, Targets, Ws};

#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// The two gateways: clients start on the first, which is stopped, and come back on the
    /// second.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub url: Vec<String>,
    /// Clients.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Connections being opened at once (at the start, and when the clients come back).
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// The first gateway's pid: it gets SIGTERM.
    #[arg(long)]
    pub stop_pid: i32,
    /// Seconds a client may take to come back before it counts as failed.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Server pids whose CPU time during the restart is reported as `server_cores`.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<String>,
}

pub fn main(a: RestartArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.url.len() == 2, "restart needs exactly two --url (the gateway stopped, then the other)");
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(run(a))
}

/// How one client's restart went.
enum Outcome {
    /// Resumed under its id on the other gateway and answered there.
    Resumed,
    /// Told `not_recovered`.
    Refused,
}

/// What every client's way back shares: where to connect from, the cap on connects in
/// flight, the moment of the SIGTERM and the latencies from it.
struct Shared {
    targets: Targets,
    gate: Semaphore,
    t0: std::sync::OnceLock<Instant>,
    hist: Hist,
    url: String,
}

/// Waits for the close of `ws` (its code), then comes back on the other gateway with `token`.
async fn come_back(
    s: &Shared,
    g: usize,
    mut ws: Ws,
    token: String,
    client_id: String,
) -> anyhow::Result<(Outcome, bool)> {
    let mut code_1012 = false;
    while let Some(msg) = ws.next().await {
        if let Ok(Message::Close(Some(f))) = msg {
            code_1012 = f.code == CloseCode::Restart;
        }
    }
    drop(ws);
    let _opening = s.gate.acquire().await?;
    let mut ws = open(&s.targets, g, format!("{}?gw_recover=1&gw_resume={token}&gw_received=0", s.url)).await?;
    let v = control(&mut ws, &["resumed", "not_recovered"]).await?;
    if v["type"] != "resumed" {
        return Ok((Outcome::Refused, code_1012));
    }
    let v = control(&mut ws, &["recovery"]).await?;
    anyhow::ensure!(v["client_id"] == client_id.as_str(), "resumed under another id: {v}");
    if let Some(t0) = s.t0.get() {
        s.hist.record(t0.elapsed().as_micros() as u64);
    }
    drop(_opening);
    net::round_trip(&mut ws, "after-restart", Duration::from_secs(30), |t| t == "after-restart").await?;
    let _ = ws.close(None).await;
    Ok((Outcome::Resumed, code_1012))
}

async fn run(a: RestartArgs) -> anyhow::Result<()> {
    // Sources under the gateways' per-address cap (500 by default): at most 400 clients each.
    let shared = Arc::new(Shared {
        targets: Targets::new(&a.url, 12, 2, (a.conns.div_ceil(400)).clamp(4, 250) as u8)?,
        gate: Semaphore::new(a.concurrency),
        t0: std::sync::OnceLock::new(),
        hist: Hist::new(),
        url: a.url[1].clone(),
    });
    eprintln!("restart: connecting {} clients with recovery to {}", a.conns, a.url[0]);
    let connected: Vec<anyhow::Result<(Ws, String, String)>> = futures_util::stream::iter(0..a.conns)
        .map(|i| {
            let shared = shared.clone();
            let url = format!("{}?gw_recover=1", a.url[0]);
            async move {
                let mut ws = open(&shared.targets, 2 * i, url).await?;
                let v = control(&mut ws, &["recovery"]).await?;
                let token = v["token"].as_str().context("recovery frame without a token")?.to_string();
                let id = v["client_id"].as_str().context("recovery frame without a client id")?.to_string();
                ws.send(Message::text("warm")).await?;
                Ok((ws, token, id))
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let mut clients = Vec::new();
    let mut errors = Vec::new();
    for c in connected {
        match c {
            Ok(x) => clients.push(x),
            Err(e) => errors.push(e),
        }
    }
    net::report_errors("restart connect", &errors);
    anyhow::ensure!(errors.is_empty(), "{} clients could not connect", errors.len());
    // Each got its echo: settled, its connect event handled.
    for (ws, _, _) in clients.iter_mut() {
        let got = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
        anyhow::ensure!(matches!(got, Ok(Some(Ok(Message::Text(_))))), "no echo before the restart: {got:?}");
    }
    let timeout = Duration::from_secs(a.timeout);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (ws, token, id))| {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::timeout(timeout, come_back(&shared, 2 * i + 1, ws, token, id))
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out"))?
            })
        })
        .collect();
    let cpu = crate::procfs::CpuWindow::start(&a.server_pids);
    eprintln!("restart: SIGTERM to {}", a.stop_pid);
    shared.t0.set(Instant::now()).expect("set once");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.stop_pid), nix::sys::signal::Signal::SIGTERM)
        .context("SIGTERM the gateway")?;
    let stop_pid = a.stop_pid;
    let exited = tokio::spawn(async move {
        let start = Instant::now();
        while std::path::Path::new(&format!("/proc/{stop_pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        start.elapsed().as_secs_f64()
    });
    let (mut resumed, mut refused, mut failed, mut closed_1012) = (0u64, 0u64, 0u64, 0u64);
    for t in tasks {
        match t.await? {
            Ok((outcome, code)) => {
                closed_1012 += u64::from(code);
                match outcome {
                    Outcome::Resumed => resumed += 1,
                    Outcome::Refused => refused += 1,
                }
            }
            Err(e) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("restart: {e:#}");
                }
            }
        }
    }
    let all_secs = shared.t0.get().expect("set").elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let exit_secs = tokio::time::timeout(Duration::from_secs(60), exited).await.ok().and_then(Result::ok);
    println!(
        "RESULT scenario=restart conns={} concurrency={} closed_1012={closed_1012} resumed={resumed} \
         not_recovered={refused} failed={failed} all_resumed_secs={all_secs:.3} stopped_gateway_exit_secs={} {} {}",
        a.conns,
        a.concurrency,
        exit_secs.map_or("-".to_string(), |s| format!("{s:.3}")),
        shared.hist.summary(),
        cpu.fields(),
    );
    anyhow::ensure!(
        resumed == a.conns as u64,
        "restart: {} of {} clients did not resume",
        a.conns as u64 - resumed,
        a.conns
    );
    Ok(())
}
