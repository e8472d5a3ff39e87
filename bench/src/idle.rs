//! `idle`: N WebSocket connections that stay idle. The parent reads each gateway's VmRSS before
//! any connection exists and again once all are connected (after a short settling pause), and
//! reports the growth per connection and the rate at which the connections were established.
//! Finally every connection sends one message and must get its echo, proving none was dropped.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Common;
use crate::coord::{self, Ctl, Shard, Shards};
use crate::net;
use crate::procfs;

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Gateway pid(s) whose VmRSS is measured (comma-separated, summed).
    #[arg(long, value_delimiter = ',', required = true)]
    pub gateway_pid: Vec<String>,
    /// WebSocket handshakes in progress at once, per generator process.
    #[arg(long, default_value_t = 512)]
    pub connect_limit: usize,
    /// Seconds between the last connection and the "after" reading.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

pub fn main(a: IdleArgs) -> anyhow::Result<()> {
    match a.common.shard()? {
        Some(shard) => a.common.runtime()?.block_on(child(a, shard)),
        None => parent(a),
    }
}

fn rss_sum(pids: &[String]) -> anyhow::Result<u64> {
    pids.iter().map(|p| procfs::rss_kib(p).ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {p}"))).sum()
}

fn parent(a: IdleArgs) -> anyhow::Result<()> {
    let pids = &a.gateway_pid;
    let mut shards = Shards::start(a.common.procs, Duration::from_secs(600))?;
    let before = rss_sum(pids)?;
    let tcp_before = procfs::tcp_ext(&["ListenOverflows"]);
    shards.send("GO")?;
    let parts = shards.collect("PART")?;
    let overflows = procfs::tcp_ext(&["ListenOverflows"])[0] - tcp_before[0];
    std::thread::sleep(Duration::from_secs_f64(a.settle));
    let after = rss_sum(pids)?;
    let (mut connected, mut failed, mut secs, mut gen_rss) = (0u64, 0u64, 0f64, 0u64);
    for p in &parts {
        connected += coord::get::<u64>(p, "connected")?;
        failed += coord::get::<u64>(p, "failed")?;
        secs = secs.max(coord::get::<f64>(p, "secs")?);
        gen_rss += coord::get::<u64>(p, "gen_rss_kib")?;
    }
    shards.send("CHECK")?;
    let checks = shards.collect("PART")?;
    let after_check = rss_sum(pids)?;
    let (mut alive, mut lost) = (0u64, 0u64);
    for p in &checks {
        alive += coord::get::<u64>(p, "alive")?;
        lost += coord::get::<u64>(p, "lost")?;
    }
    shards.finish()?;
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / connected.max(1) as f64;
    println!(
        "RESULT scenario=idle conns={} gateways={} procs={} connected={connected} failed={failed} alive={alive} lost={lost} \
         conn_per_sec={:.0} connect_secs={secs:.2} rss_per_conn_bytes={per_conn:.0} gw_rss_before_kib={before} \
         gw_rss_after_kib={after} gw_rss_after_check_kib={after_check} gen_rss_kib={gen_rss} \
         listen_overflows={overflows}",
        a.common.conns,
        pids.len(),
        a.common.procs,
        connected as f64 / secs.max(1e-6),
    );
    anyhow::ensure!(
        failed == 0 && alive == connected,
        "idle: {failed} connections failed, {alive} of {connected} alive"
    );
    Ok(())
}

/// What the connection tasks of one generator process share.
#[derive(Debug, Default)]
struct Counters {
    alive: AtomicU64,
    failed_checks: AtomicU64,
    /// Connections the server closed while they were idle.
    lost: AtomicU64,
}

async fn child(a: IdleArgs, shard: Shard) -> anyhow::Result<()> {
    let targets = a.common.targets()?;
    let mut ctl = Ctl::new();
    let ids: Vec<usize> = shard.conns(a.common.conns).collect();
    ctl.ready().await?;
    let t0 = std::time::Instant::now();
    let (conns, failed) = net::connect_all(&targets, &ids, a.connect_limit, 1024).await;
    let secs = t0.elapsed().as_secs_f64();
    net::report_errors("idle connect", &failed);
    // Every connection is read by its own task, so heartbeat pings are answered as a real client
    // would; on the parent's CHECK each sends one message and waits for its echo.
    let counters = Arc::new(Counters::default());
    let (check_tx, check_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let n = conns.len();
    for (g, ws) in conns {
        tasks.spawn(idle_conn(ws, g, check_rx.clone(), counters.clone()));
    }
    ctl.say(&format!(
        "PART connected={n} failed={} secs={secs:.3} gen_rss_kib={}",
        failed.len(),
        procfs::rss_kib("self").unwrap_or(0)
    ))
    .await?;
    match ctl.next().await?.as_deref() {
        Some("CHECK") => {}
        None => return Ok(()),
        Some(other) => anyhow::bail!("unexpected command {other:?}"),
    }
    let _ = check_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counters.alive.load(Ordering::Relaxed) + counters.failed_checks.load(Ordering::Relaxed) < n as u64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctl.say(&format!(
        "PART alive={} lost={}",
        counters.alive.load(Ordering::Relaxed),
        counters.lost.load(Ordering::Relaxed)
    ))
    .await?;
    ctl.wait_end().await?;
    tasks.abort_all();
    Ok(())
}

async fn idle_conn(mut ws: net::Ws, g: usize, mut check: watch::Receiver<bool>, counters: Arc<Counters>) {
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(_)) => {} // pings are answered by tungstenite on the next read
                _ => {
                    counters.lost.fetch_add(1, Ordering::Relaxed);
                    counters.failed_checks.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            ok = async { check.wait_for(|c| *c).await.is_ok() } => {
                if !ok {
                    return;
                }
                let text = format!("idle {g}");
                match net::round_trip(&mut ws, &text, Duration::from_secs(30), |t| t == text).await {
                    Ok(()) => counters.alive.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("idle check of connection {g}: {e:#}");
                        counters.failed_checks.fetch_add(1, Ordering::Relaxed)
                    }
                };
                // Stay connected (and answer pings) until the parent ends the run.
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
        }
    }
}
