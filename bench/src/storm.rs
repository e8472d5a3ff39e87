//! `storm`: N clients connect at the same moment and each sends one message; the figure is the
//! time from the start until the last client got its echo. Connections stay open until every
//! generator process is done, so no shard's teardown disturbs another's measurement.

use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;

use crate::Common;
use crate::coord::{self, Ctl, Shard, Shards};
use crate::hist::Hist;
use crate::net;
use crate::procfs::{self, CpuWindow};

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Handshakes in progress at once per generator process (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub connect_limit: usize,
    /// Seconds a client may take before it counts as failed.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// Machine-wide TCP counters that show a listen queue overflowing: connections the kernel
/// dropped because the gateway did not accept them fast enough, and the SYNs clients resent.
const TCP_COUNTERS: &[&str] = &["ListenOverflows", "TCPSynRetrans"];

pub fn main(a: StormArgs) -> anyhow::Result<()> {
    match a.common.shard()? {
        Some(shard) => a.common.runtime()?.block_on(child(a, shard)),
        None => parent(a),
    }
}

fn parent(a: StormArgs) -> anyhow::Result<()> {
    let mut shards = Shards::start(a.common.procs, Duration::from_secs(a.timeout + 60))?;
    let before = procfs::tcp_ext(TCP_COUNTERS);
    shards.send("GO")?;
    let parts = shards.collect("PART")?;
    let after = procfs::tcp_ext(TCP_COUNTERS);
    shards.finish()?;
    let hist = Hist::new();
    let (mut answered, mut failed, mut all_us) = (0u64, 0u64, 0u64);
    for p in &parts {
        hist.merge_encoded(p.get("hist").map_or("-", String::as_str))?;
        answered += coord::get::<u64>(p, "answered")?;
        failed += coord::get::<u64>(p, "failed")?;
        all_us = all_us.max(coord::get::<u64>(p, "all_us")?);
    }
    let cpu = coord::merge_cpu(&parts)?;
    println!(
        "RESULT scenario=storm conns={} procs={} answered={answered} failed={failed} all_answered_secs={:.3} {} \
         {} listen_overflows={} syn_retrans={}",
        a.common.conns,
        a.common.procs,
        all_us as f64 / 1e6,
        hist.summary(),
        cpu.fields(),
        after[0] - before[0],
        after[1] - before[1],
    );
    anyhow::ensure!(failed == 0, "storm: {failed} clients were not answered");
    Ok(())
}

async fn child(a: StormArgs, shard: Shard) -> anyhow::Result<()> {
    let targets = a.common.targets()?;
    let mut ctl = Ctl::new();
    let ids: Vec<usize> = shard.conns(a.common.conns).collect();
    let limit = if a.connect_limit == 0 { ids.len().max(1) } else { a.connect_limit };
    let timeout = Duration::from_secs(a.timeout);
    ctl.ready().await?;
    let t0 = Instant::now();
    let cpu = CpuWindow::start(&a.common.server_pids);
    let hist = Hist::new();
    let results: Vec<anyhow::Result<net::Ws>> = futures_util::stream::iter(ids.iter().copied())
        .map(|g| {
            let targets = &targets;
            let hist = &hist;
            async move {
                let attempt = async {
                    let mut ws = targets.connect(g, 1024).await?;
                    let text = format!("storm {g}");
                    net::round_trip(&mut ws, &text, timeout, |t| t == text).await?;
                    Ok::<_, anyhow::Error>(ws)
                };
                let ws = tokio::time::timeout(timeout, attempt).await.map_err(|_| anyhow::anyhow!("timed out"))??;
                hist.record(t0.elapsed().as_micros() as u64);
                Ok(ws)
            }
        })
        .buffer_unordered(limit)
        .collect()
        .await;
    let all_us = t0.elapsed().as_micros() as u64;
    let cpu = cpu.finish();
    let mut open = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(ws) => open.push(ws),
            Err(e) => errors.push(e),
        }
    }
    net::report_errors("storm", &errors);
    ctl.say(&format!(
        "PART answered={} failed={} all_us={all_us} hist={} {} \
         gen_rss_kib={}",
        open.len(),
        errors.len(),
        hist.encode(),
        cpu.fields(),
        procfs::rss_kib("self").unwrap_or(0),
    ))
    .await?;
    ctl.wait_end().await
}
