//! `handover`: N clients with recovery (`gw_recover=1`) connect to the first gateway, are
//! dropped abruptly (a reset), and come back on the second with their resume tokens, which
//! relays each to its home (the first) where it resumes. The figure is the time from the start
//! of each new connection (TCP connect included) to its `resumed` frame, and how many resumed.
//! Both gateways need `[recovery] enabled = true` and the same cluster secret.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::hist::Hist;
use crate::net::{self, Targets, Ws};

#[derive(Debug, Clone, Args)]
pub struct HandoverArgs {
    /// The two gateways: clients start on the first and come back on the second.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub url: Vec<String>,
    /// Clients.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Resumes in progress at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Seconds a resume may take before it counts as failed.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// The two gateways' pids (home, other): their resident memory per client is reported with
    /// the clients live at home, held there, and relayed through the other.
    #[arg(long, value_delimiter = ',')]
    pub gateway_pid: Vec<String>,
    /// Server pids whose CPU time during the resumes is reported as `server_cores`.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<String>,
}

/// Resident KiB of each pid given.
fn rss(pids: &[String]) -> Vec<i64> {
    pids.iter().map(|p| crate::procfs::rss_kib(p).unwrap_or(0) as i64).collect()
}

/// Bytes per client between two readings of one pid, as a field.
fn per_client(name: &str, before: &[i64], after: &[i64], i: usize, n: usize) -> String {
    match (before.get(i), after.get(i)) {
        (Some(b), Some(a)) if n > 0 => format!("{name}={}", (a - b) * 1024 / n as i64),
        _ => format!("{name}=-"),
    }
}

pub fn main(a: HandoverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.url.len() == 2, "handover needs exactly two --url (the home, then the other gateway)");
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(a))
}

/// The control frame of type `kind` among the first frames, as JSON.
pub(crate) async fn control(ws: &mut Ws, kinds: &[&str]) -> anyhow::Result<serde_json::Value> {
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg?
            && let Some(json) = t.as_str().strip_prefix('\0').filter(|j| j.starts_with('{'))
        {
            let v: serde_json::Value = serde_json::from_str(json)?;
            if kinds.iter().any(|k| v["type"] == *k) {
                return Ok(v);
            }
        }
    }
    anyhow::bail!("closed before a {kinds:?} frame")
}

/// A WebSocket connection to `url` from client number `g`'s source address.
pub(crate) async fn open(targets: &Targets, g: usize, url: String) -> anyhow::Result<Ws> {
    let stream = targets.tcp(g).await?;
    let (ws, _) = tokio_tungstenite::client_async(url.as_str(), stream).await.with_context(|| url.clone())?;
    Ok(ws)
}

async fn run(a: HandoverArgs) -> anyhow::Result<()> {
    let targets = Targets::new(&a.url, 6, 2, (a.conns.div_ceil(800)).clamp(4, 250) as u8)?;
    let timeout = Duration::from_secs(a.timeout);
    // Clients 0, 2, 4, ... go to the first URL; 1, 3, 5, ... to the second.
    let home = |i: usize| 2 * i;
    let other = |i: usize| 2 * i + 1;
    let base = rss(&a.gateway_pid);
    eprintln!("handover: connecting {} clients to {}", a.conns, a.url[0]);
    let tokens: Vec<anyhow::Result<(Ws, String)>> = futures_util::stream::iter(0..a.conns)
        .map(|i| {
            let targets = &targets;
            let url = format!("{}?gw_recover=1", a.url[0]);
            async move {
                let mut ws = open(targets, home(i), url).await?;
                let v = control(&mut ws, &["recovery"]).await?;
                let token = v["token"].as_str().context("recovery frame without a token")?.to_string();
                Ok((ws, token))
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let mut held = Vec::new();
    let mut errors = Vec::new();
    for t in tokens {
        match t {
            Ok(x) => held.push(x),
            Err(e) => errors.push(e),
        }
    }
    net::report_errors("handover connect", &errors);
    anyhow::ensure!(errors.is_empty(), "{} clients could not connect", errors.len());
    // Every client has its token, so its connect events reached the workers: it is settled.
    let live = rss(&a.gateway_pid);
    // Dropped abruptly: the sockets have zero linger, so closing them sends a reset.
    let tokens: Vec<String> = held
        .into_iter()
        .map(|(ws, token)| {
            drop(ws);
            token
        })
        .collect();
    // Time for the home to see every reset and hold its client (a held client's task is gone).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = rss(&a.gateway_pid);
    // What a held client costs: the memory its connection used is free again but not returned
    // to the system, so N plain clients connect to the home now and reuse it. The growth over
    // the start, per client, minus what a plain client costs (`idle-plain`), is a held client.
    // The plain clients are measured idle, as `idle-plain` measures them (connected, settled,
    // no message yet): a client that just got a message keeps its codec's buffers until its
    // next heartbeat, about 1.2 KB more, which an earlier version counted as held.
    let plain: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(0..a.conns)
        .map(|i| {
            let targets = &targets;
            let url = a.url[0].clone();
            async move { open(targets, home(a.conns + i), url).await }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let plain_failed = plain.iter().filter(|p| p.is_err()).count();
    anyhow::ensure!(plain_failed == 0, "{plain_failed} plain clients could not connect");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held_and_plain = rss(&a.gateway_pid);
    let mut plain: Vec<Ws> = plain.into_iter().flatten().collect();
    let alive = futures_util::stream::iter(plain.iter_mut())
        .map(|ws| net::round_trip(ws, "plain", timeout, |t| t == "plain"))
        .buffer_unordered(a.concurrency)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    anyhow::ensure!(alive == plain.len(), "{} plain clients did not answer", plain.len() - alive);
    // Closed before the resumes: they would double this process's sockets, and their ends must
    // not overlap the resumes.
    drop(plain);
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("handover: {} clients reset; resuming on {}", tokens.len(), a.url[1]);
    let hist = Hist::new();
    let cpu = crate::procfs::CpuWindow::start(&a.server_pids);
    let t0 = Instant::now();
    let outcomes: Vec<anyhow::Result<(bool, Ws)>> = futures_util::stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| {
            let (targets, hist) = (&targets, &hist);
            let url = format!("{}?gw_recover=1&gw_resume={token}&gw_received=0", a.url[1]);
            async move {
                let start = Instant::now();
                let attempt = async {
                    let mut ws = open(targets, other(i), url).await?;
                    let v = control(&mut ws, &["resumed", "not_recovered"]).await?;
                    Ok::<_, anyhow::Error>((v["type"] == "resumed", ws))
                };
                let out = tokio::time::timeout(timeout, attempt).await.map_err(|_| anyhow::anyhow!("timed out"))??;
                hist.record(start.elapsed().as_micros() as u64);
                Ok(out)
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let all_secs = t0.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let relayed = rss(&a.gateway_pid);
    let (mut resumed, mut refused, mut failed) = (0u64, 0u64, 0u64);
    let mut open_now = Vec::new();
    for o in outcomes {
        match o {
            Ok((true, ws)) => {
                resumed += 1;
                open_now.push(ws);
            }
            Ok((false, _)) => refused += 1,
            Err(e) => {
                failed += 1;
                eprintln!("handover: {e:#}");
            }
        }
    }
    println!(
        "RESULT scenario=handover conns={} concurrency={} resumed={resumed} not_recovered={refused} failed={failed} \
         all_resumed_secs={all_secs:.3} {} {} {} {} {} {} {}",
        a.conns,
        a.concurrency,
        hist.summary(),
        cpu.fields(),
        per_client("home_live_bytes_per_client", &base, &live, 0, a.conns),
        per_client("home_held_bytes_per_client", &base, &held, 0, a.conns),
        per_client("home_held_plus_plain_bytes_per_client", &base, &held_and_plain, 0, a.conns),
        per_client("home_relayed_extra_bytes_per_client", &held_and_plain, &relayed, 0, a.conns),
        per_client("edge_relay_bytes_per_client", &base, &relayed, 1, a.conns),
    );
    for mut ws in open_now {
        let _ = ws.close(None).await;
    }
    anyhow::ensure!(
        resumed == a.conns as u64,
        "handover: {} of {} clients did not resume",
        a.conns as u64 - resumed,
        a.conns
    );
    Ok(())
}
