//! `heartbeat`: what the heartbeat costs the gateway per client (issue 29). N idle WebSocket
//! clients stay connected while the gateway pings them every `ping_interval` (its own setting,
//! passed here as `--interval` for the arithmetic); with `--mode client` each client also sends
//! its own ping every interval, from a phase spread evenly over it, as a mobile client does. After
//! a warm-up (the gateway's first look at a client only notes it), the gateway's CPU time (user +
//! system from `/proc/<pid>/stat`) over a window of whole intervals is divided by the clients
//! and the intervals: µs of gateway CPU per client per interval, and per ping exchanged.
//!
//! With `--callgrind` the gateway runs under `valgrind --tool=callgrind` (the script starts it
//! so); its counters are zeroed when the window starts and dumped when it ends, and the script
//! divides the instructions the same way, since this shared machine's CPU times are noisy.
//!
//! The clients are [`crate::lean_ws`] ones: a task owning only its socket while idle, answering
//! the gateway's pings at once, so the generator stays small next to the gateway it measures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use tokio::net::TcpStream;

use crate::Common;
use crate::coord::{self, Ctl, Shard, Shards};
use crate::lean_ws::{self, CLOSE, PING, PONG};
use crate::procfs;

/// Who pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Only the gateway: the clients answer its pings.
    Server,
    /// The clients too, each every interval: the gateway answers them (and, following
    /// GatewayWorker, does not ping a client that spoke since its last look).
    Client,
}

#[derive(Debug, Clone, Args)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    pub common: Common,
    /// Gateway pid(s) whose CPU time and VmRSS are measured (comma-separated, summed).
    #[arg(long, value_delimiter = ',', required = true)]
    pub gateway_pid: Vec<String>,
    /// The gateway's `ping_interval` in seconds (the clients ping at it too in client mode).
    #[arg(long)]
    pub interval: f64,
    /// Who pings.
    #[arg(long, value_enum, default_value_t = Mode::Server)]
    pub mode: Mode,
    /// Seconds between the last connection and the window (default: two intervals and a
    /// second, so every client was looked at once and pinged once before it starts).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Length of the measured window, in intervals.
    #[arg(long, default_value_t = 5)]
    pub intervals: u32,
    /// WebSocket handshakes in progress at once, per generator process.
    #[arg(long, default_value_t = 256)]
    pub connect_limit: usize,
    /// The gateway runs under callgrind: zero its counters when the window starts and dump them
    /// when it ends (`callgrind_control -z` / `-d`).
    #[arg(long)]
    pub callgrind: bool,
}

pub fn main(a: HeartbeatArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.interval > 0.0, "--interval must be positive");
    match a.common.shard()? {
        Some(shard) => a.common.runtime()?.block_on(child(a, shard)),
        None => parent(a),
    }
}

fn sum(pids: &[String], f: impl Fn(&str) -> Option<f64>) -> anyhow::Result<f64> {
    pids.iter().map(|p| f(p).ok_or_else(|| anyhow::anyhow!("gateway pid {p} is gone"))).sum()
}

fn rss(pids: &[String]) -> anyhow::Result<f64> {
    sum(pids, |p| procfs::rss_kib(p).map(|k| k as f64))
}

fn callgrind(pids: &[String], flag: &str) -> anyhow::Result<()> {
    for p in pids {
        let out = std::process::Command::new("callgrind_control").arg(flag).arg(p).output()?;
        anyhow::ensure!(out.status.success(), "callgrind_control {flag} {p}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Every shard's counter `key`, summed.
fn total(parts: &[coord::Part], key: &str) -> anyhow::Result<u64> {
    parts.iter().map(|p| coord::get::<u64>(p, key)).sum()
}

fn parent(a: HeartbeatArgs) -> anyhow::Result<()> {
    let pids = &a.gateway_pid;
    let mut shards = Shards::start(a.common.procs, Duration::from_secs(600))?;
    let rss_before = rss(pids)?;
    shards.send("GO")?;
    let parts = shards.collect("PART")?;
    let (connected, failed) = (total(&parts, "connected")?, total(&parts, "failed")?);
    let connect_secs =
        parts.iter().map(|p| coord::get::<f64>(p, "secs")).sum::<anyhow::Result<f64>>()? / parts.len().max(1) as f64;
    let warmup = a.warmup.unwrap_or(2.0 * a.interval + 1.0);
    eprintln!("heartbeat: {connected} clients connected ({failed} failed) in {connect_secs:.1} s; warm-up {warmup} s");
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let rss_held = rss(pids)?;

    if a.callgrind {
        callgrind(pids, "-z")?;
    }
    shards.send("COUNT")?;
    let c0 = shards.collect("PART")?;
    let sys = |p: &str| procfs::cpu_user_sys(p).map(|(_, s)| s);
    let (cpu0, sys0) = (sum(pids, procfs::cpu_secs)?, sum(pids, sys)?);
    let (machine0, t0) = (procfs::machine_busy_secs().unwrap_or(0.0), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(a.interval * f64::from(a.intervals)));
    let (cpu1, sys1) = (sum(pids, procfs::cpu_secs)?, sum(pids, sys)?);
    let (machine1, secs) = (procfs::machine_busy_secs().unwrap_or(0.0), t0.elapsed());
    shards.send("COUNT")?;
    let c1 = shards.collect("PART")?;
    if a.callgrind {
        callgrind(pids, "-d")?;
    }
    let rss_after = rss(pids)?;
    shards.finish()?;

    let secs = secs.as_secs_f64();
    let delta = |key: &str| -> anyhow::Result<u64> { Ok(total(&c1, key)?.saturating_sub(total(&c0, key)?)) };
    let (server_pings, client_pings, pongs) = (delta("server_pings")?, delta("client_pings")?, delta("pongs")?);
    let alive = total(&c1, "alive")?;
    let lost = total(&c1, "lost")?;
    let gen_cpu = total_f(&c1, "cpu_s")? - total_f(&c0, "cpu_s")?;
    let gw_cpu = cpu1 - cpu0;
    // Client-intervals in the window: what one heartbeat per client per interval would cost.
    let client_intervals = connected as f64 * secs / a.interval;
    let per_client_interval_us = gw_cpu * 1e6 / client_intervals.max(1.0);
    let pings = server_pings + client_pings;
    println!(
        "RESULT scenario=heartbeat mode={mode:?} conns={conns} connected={connected} failed={failed} alive={alive} \
         lost={lost} interval_s={interval} window_s={secs:.2} gw_cpu_s={gw_cpu:.3} \
         us_per_client_interval={per_client_interval_us:.2} sys_us_per_client_interval={sys_us:.2} \
         us_per_ping={per_ping:.2} \
         server_pings_per_sec={sp:.0} client_pings_per_sec={cp:.0} pongs_per_sec={pp:.0} \
         gw_cores={gw_cores:.3} gen_cores={gen_cores:.3} machine_cores={machine_cores:.2} \
         rss_per_conn_bytes={rss_conn:.0} rss_per_conn_after_bytes={rss_conn_after:.0} connect_secs={connect_secs:.2}",
        mode = a.mode,
        conns = a.common.conns,
        interval = a.interval,
        per_ping = gw_cpu * 1e6 / pings.max(1) as f64,
        sys_us = (sys1 - sys0) * 1e6 / client_intervals.max(1.0),
        sp = server_pings as f64 / secs,
        cp = client_pings as f64 / secs,
        pp = pongs as f64 / secs,
        gw_cores = gw_cpu / secs,
        gen_cores = gen_cpu / secs,
        machine_cores = (machine1 - machine0) / secs,
        rss_conn = (rss_held - rss_before) * 1024.0 / connected.max(1) as f64,
        rss_conn_after = (rss_after - rss_before) * 1024.0 / connected.max(1) as f64,
    );
    anyhow::ensure!(failed == 0 && lost == 0, "heartbeat: {failed} connects failed, {lost} clients lost");
    Ok(())
}

fn total_f(parts: &[coord::Part], key: &str) -> anyhow::Result<f64> {
    parts.iter().map(|p| coord::get::<f64>(p, key)).sum()
}

/// What the clients of one generator process count.
#[derive(Debug, Default)]
struct Counters {
    alive: AtomicU64,
    lost: AtomicU64,
    /// Gateway pings answered.
    server_pings: AtomicU64,
    /// Pings the clients sent.
    client_pings: AtomicU64,
    /// Pongs the gateway sent back.
    pongs: AtomicU64,
    /// Anything else the gateway sent.
    other: AtomicU64,
}

async fn child(a: HeartbeatArgs, shard: Shard) -> anyhow::Result<()> {
    let targets = a.common.targets()?;
    let counters = Arc::new(Counters::default());
    let mut ctl = Ctl::new();
    ctl.ready().await?;
    let every = Duration::from_secs_f64(a.interval);
    let t0 = Instant::now();
    let mut attempts = futures_util::stream::iter(shard.conns(a.common.conns))
        .map(|g| {
            let (addr, path, source) = targets.endpoint(g);
            async move { lean_ws::connect(addr, source, &path, Duration::from_secs(30)).await }
        })
        .buffer_unordered(a.connect_limit.max(1));
    let (mut connected, mut failed, mut first_error) = (0u64, 0u64, None);
    // Golden-ratio steps spread the clients' pings evenly over the interval.
    let mut phase = (shard.index as f64 * 0.754_877_666).fract();
    while let Some(r) = attempts.next().await {
        match r {
            Ok((stream, rest)) => {
                connected += 1;
                counters.alive.fetch_add(1, Ordering::Relaxed);
                phase = (phase + 0.618_033_988_75).fract();
                let first_ping = (a.mode == Mode::Client).then(|| tokio::time::Instant::now() + every.mul_f64(phase));
                tokio::spawn(client(stream, rest, counters.clone(), first_ping, every));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    drop(attempts);
    if let Some(e) = first_error {
        eprintln!("heartbeat generator {}: {failed} connects failed, the first: {e}", shard.index);
    }
    ctl.say(&format!("PART connected={connected} failed={failed} secs={:.3}", t0.elapsed().as_secs_f64())).await?;
    while let Some(cmd) = ctl.next().await? {
        anyhow::ensure!(cmd.trim() == "COUNT", "unexpected command {cmd:?}");
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ctl.say(&format!(
            "PART alive={} lost={} server_pings={} client_pings={} pongs={} other={} cpu_s={:.3}",
            v(&counters.alive),
            v(&counters.lost),
            v(&counters.server_pings),
            v(&counters.client_pings),
            v(&counters.pongs),
            v(&counters.other),
            procfs::cpu_secs("self").unwrap_or(0.0),
        ))
        .await?;
    }
    Ok(())
}

/// The connection is closed or broken.
struct Gone;

/// One client: answers the gateway's pings, and pings on its own from `first_ping` if given.
async fn client(
    stream: TcpStream,
    mut pending: Vec<u8>,
    counters: Arc<Counters>,
    first_ping: Option<tokio::time::Instant>,
    every: Duration,
) {
    let mut next_ping = first_ping;
    let mut out = Vec::new();
    let mut result = Ok(());
    if !pending.is_empty() {
        let data = std::mem::take(&mut pending);
        result = on_bytes(&data, &mut pending, &counters, &mut out);
    }
    while result.is_ok() {
        result = tokio::select! {
            ready = stream.readable() => match ready {
                Ok(()) => read_available(&stream, &mut pending, &counters, &mut out),
                Err(_) => Err(Gone),
            },
            _ = async { tokio::time::sleep_until(next_ping.expect("guarded")).await }, if next_ping.is_some() => {
                next_ping = next_ping.map(|t| t + every);
                counters.client_pings.fetch_add(1, Ordering::Relaxed);
                out.extend_from_slice(&lean_ws::control_frame(PING, b""));
                Ok(())
            }
        };
        if result.is_ok() && !out.is_empty() {
            result = write_all(&stream, &out).await;
            out = Vec::new();
        }
    }
    counters.alive.fetch_sub(1, Ordering::Relaxed);
    counters.lost.fetch_add(1, Ordering::Relaxed);
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> Result<(), Gone> {
    while !data.is_empty() {
        stream.writable().await.map_err(|_| Gone)?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Gone),
        }
    }
    Ok(())
}

/// Reads everything the socket has into a stack buffer (an idle client owns none).
fn read_available(stream: &TcpStream, pending: &mut Vec<u8>, c: &Counters, out: &mut Vec<u8>) -> Result<(), Gone> {
    let mut buf = [0u8; 2048];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return Err(Gone),
            Ok(n) => on_bytes(&buf[..n], pending, c, out)?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(Gone),
        }
    }
}

/// Handles the complete frames in `pending` + `data`; keeps an incomplete one in `pending`.
fn on_bytes(data: &[u8], pending: &mut Vec<u8>, c: &Counters, out: &mut Vec<u8>) -> Result<(), Gone> {
    let joined;
    let mut buf: &[u8] = if pending.is_empty() {
        data
    } else {
        pending.extend_from_slice(data);
        joined = std::mem::take(pending);
        &joined
    };
    loop {
        match lean_ws::decode(buf) {
            Ok(Some((frame, used))) => {
                match frame.opcode {
                    PING => {
                        c.server_pings.fetch_add(1, Ordering::Relaxed);
                        out.extend_from_slice(&lean_ws::control_frame(PONG, frame.payload));
                    }
                    PONG => {
                        c.pongs.fetch_add(1, Ordering::Relaxed);
                    }
                    CLOSE => return Err(Gone),
                    _ => {
                        c.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
                buf = &buf[used..];
            }
            Ok(None) => {
                *pending = buf.to_vec();
                return Ok(());
            }
            Err(_) => return Err(Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_answered_and_pongs_counted_across_split_reads() {
        let c = Counters::default();
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        let bytes = [0x89, 0x01, b'p', 0x8a, 0x00, 0x89, 0x00];
        on_bytes(&bytes[..4], &mut pending, &c, &mut out).ok().unwrap();
        assert_eq!(pending, [0x8a]);
        on_bytes(&bytes[4..], &mut pending, &c, &mut out).ok().unwrap();
        assert!(pending.is_empty());
        assert_eq!((c.server_pings.load(Ordering::Relaxed), c.pongs.load(Ordering::Relaxed)), (2, 1));
        let mut want = lean_ws::control_frame(PONG, b"p");
        want.extend(lean_ws::control_frame(PONG, b""));
        assert_eq!(out, want);
        assert!(on_bytes(&[0x88, 0x00], &mut pending, &c, &mut out).is_err());
    }
}
