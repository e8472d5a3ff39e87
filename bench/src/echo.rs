//! `echo`: N connections, each keeping W messages in flight. A message carries its connection
//! number and send time; the reply's arrival gives the round-trip time. Replies arriving inside
//! the measurement window (after the warm-up) count; at the end of the window no new messages are
//! sent and every outstanding one must still come back: a missing reply fails the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::Common;
use crate::coord::{self, Ctl, Shard, Shards};
use crate::hist::Hist;
use crate::net::{self, Clock, Ws};
use crate::procfs::{self, CpuWindow};

#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages each connection keeps in flight.
    #[arg(long, default_value_t = 8)]
    pub inflight: usize,
    /// Message size in bytes (at least 33).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

/// Time allowed after the window for the last replies.
const DRAIN: Duration = Duration::from_secs(5);
/// Echo messages start with `e`: never `b:`, `g:` or `j`.
const HEAD: &[u8] = b"e";

pub fn main(a: EchoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.size >= HEAD.len() + 32, "--size must be at least 33");
    match a.common.shard()? {
        Some(shard) => a.common.runtime()?.block_on(child(a, shard)),
        None => parent(a),
    }
}

fn parent(a: EchoArgs) -> anyhow::Result<()> {
    let mut shards = Shards::start(a.common.procs, Duration::from_secs(120))?;
    shards.send("GO")?;
    let parts = shards.collect("PART")?;
    shards.finish()?;
    let hist = Hist::new();
    let (mut rtt, mut sent, mut missing, mut errors, mut gen_rss) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for p in &parts {
        hist.merge_encoded(p.get("hist").map_or("-", String::as_str))?;
        rtt += coord::get::<u64>(p, "rtt")?;
        sent += coord::get::<u64>(p, "sent")?;
        missing += coord::get::<u64>(p, "missing")?;
        errors += coord::get::<u64>(p, "errors")?;
        gen_rss += coord::get::<u64>(p, "gen_rss_kib")?;
    }
    let cpu = coord::merge_cpu(&parts)?;
    println!(
        "RESULT scenario=echo conns={} inflight={} size={} procs={} rtt_per_sec={:.0} {} sent={sent} missing={missing} \
         errors={errors} {} gen_rss_kib={gen_rss}",
        a.common.conns,
        a.inflight,
        a.size,
        a.common.procs,
        rtt as f64 / a.duration,
        hist.summary(),
        cpu.fields(),
    );
    if missing > 0 || errors > 0 {
        bail!("echo: {missing} replies missing, {errors} connections failed");
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Stats {
    /// Replies received inside the window.
    rtt: AtomicU64,
    sent: AtomicU64,
    missing: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_us: u64,
    end_us: u64,
}

async fn child(a: EchoArgs, shard: Shard) -> anyhow::Result<()> {
    let targets = a.common.targets()?;
    let clock = Clock::new();
    let mut ctl = Ctl::new();
    let ids: Vec<usize> = shard.conns(a.common.conns).collect();
    let (conns, failed) = net::connect_all(&targets, &ids, 256, 8 * 1024).await;
    net::report_errors("echo connect", &failed);
    ctl.ready().await?;

    let t0 = tokio::time::Instant::now();
    let start = t0 + Duration::from_secs_f64(a.warmup);
    let end = start + Duration::from_secs_f64(a.duration);
    let window = Window { start_us: clock.us_of(start.into_std()), end_us: clock.us_of(end.into_std()) };
    let run = Arc::new(Run {
        inflight: a.inflight,
        size: a.size,
        clock,
        window,
        deadline: end + DRAIN,
        stats: Stats::default(),
        hist: Hist::new(),
    });
    let mut tasks = JoinSet::new();
    for (g, ws) in conns {
        tasks.spawn(run_conn(ws, g as u64, run.clone()));
    }
    tokio::time::sleep_until(start).await;
    let cpu = CpuWindow::start(&a.common.server_pids);
    tokio::time::sleep_until(end).await;
    let cpu = cpu.finish();
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.into()),
        }
    }
    net::report_errors("echo connection", &errors);
    ctl.say(&format!(
        "PART rtt={} sent={} missing={} errors={} hist={} {} \
         gen_rss_kib={}",
        run.stats.rtt.load(Ordering::Relaxed),
        run.stats.sent.load(Ordering::Relaxed),
        run.stats.missing.load(Ordering::Relaxed),
        errors.len() + failed.len(),
        run.hist.encode(),
        cpu.fields(),
        procfs::rss_kib("self").unwrap_or(0),
    ))
    .await?;
    ctl.wait_end().await
}

/// What every connection task of one process shares.
#[derive(Debug)]
struct Run {
    inflight: usize,
    size: usize,
    clock: Clock,
    window: Window,
    /// Outstanding replies are waited for until then.
    deadline: tokio::time::Instant,
    stats: Stats,
    hist: Hist,
}

/// One connection's closed loop: every reply is answered by a new message until the window ends;
/// replies already waiting in the socket are taken together and answered with one write.
async fn run_conn(mut ws: Ws, id: u64, run: Arc<Run>) -> anyhow::Result<()> {
    let r = &*run;
    let mut outstanding = 0usize;
    for _ in 0..r.inflight {
        ws.feed(net::payload(HEAD, &[id, r.clock.now_us()], r.size)).await?;
        outstanding += 1;
    }
    ws.flush().await?;
    let mut sent = r.inflight as u64;
    let result = async {
        while outstanding > 0 {
            let first = match tokio::time::timeout_at(r.deadline, ws.next()).await {
                Err(_) => break,
                Ok(None) => bail!("connection {id} closed by the server"),
                Ok(Some(m)) => m.with_context(|| format!("connection {id}"))?,
            };
            let mut replies = handle(first, id, r)?;
            while let Some(Some(m)) = ws.next().now_or_never() {
                replies += handle(m.with_context(|| format!("connection {id}"))?, id, r)?;
            }
            outstanding -= replies;
            if replies > 0 && r.clock.now_us() < r.window.end_us {
                for _ in 0..replies {
                    ws.feed(net::payload(HEAD, &[id, r.clock.now_us()], r.size)).await?;
                }
                ws.flush().await?;
                outstanding += replies;
                sent += replies as u64;
            }
        }
        Ok(())
    }
    .await;
    r.stats.sent.fetch_add(sent, Ordering::Relaxed);
    r.stats.missing.fetch_add(outstanding as u64, Ordering::Relaxed);
    result
}

/// Counts one echo reply (returns 1) or skips a control frame (returns 0).
fn handle(msg: Message, id: u64, r: &Run) -> anyhow::Result<usize> {
    let data = match &msg {
        Message::Text(t) => t.as_bytes(),
        Message::Close(c) => bail!("connection {id} closed by the server: {c:?}"),
        _ => return Ok(0),
    };
    if data.len() != r.size || !data.starts_with(HEAD) || net::field(data, HEAD.len(), 0) != Some(id) {
        bail!("connection {id}: unexpected message {:?}", String::from_utf8_lossy(data));
    }
    let sent_at = net::field(data, HEAD.len(), 1).context("no timestamp")?;
    let now = r.clock.now_us();
    if (r.window.start_us..r.window.end_us).contains(&now) {
        r.stats.rtt.fetch_add(1, Ordering::Relaxed);
        r.hist.record(now.saturating_sub(sent_at));
    }
    Ok(1)
}
