//! A generator process of `scale`: holds its share of the clients (every n-th of the global
//! numbers, `--shard i/n`) on one current-thread runtime and answers the parent's commands.
//!
//! Each client is one task owning its socket and nothing else while idle (see [`crate::lean_ws`]):
//! it pings every `--ping-secs` from a random phase so the pings of a million clients spread
//! evenly, answers the gateway's pings, and counts what it receives in the process's [`Counters`].
//!
//! Commands on stdin, each answered by one `PART` line: `GO` (after `READY`: connect, then report
//! the connect phase), `COUNT` (every counter), `STEP s` (start counting uid step s), `HIST` (the
//! latency histogram of the current step). Closing stdin ends the process and resets every
//! connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpStream;

use super::limits::{self, Failures, Stop};
use super::{ALL, IDENTIFY, ScaleArgs, UID, wall_us};
use crate::coord::{Ctl, Shard};
use crate::hist::Hist;
use crate::lean_ws::{self, CLOSE, PING, PONG, TEXT};
use crate::net;
use crate::procfs;

/// A client's uid before it learned one.
const NO_UID: u64 = u64::MAX;

/// What the clients of one process count, read by `COUNT`.
#[derive(Debug, Default)]
struct Counters {
    /// Open now.
    alive: AtomicU64,
    /// Closed by the server or broken after connecting.
    lost: AtomicU64,
    /// Told their uid (`i:`).
    identified: AtomicU64,
    /// Received the `send_to_all` message.
    all_got: AtomicU64,
    /// Wall-clock µs at which the last client received it.
    all_last_us: AtomicU64,
    /// The uid step being counted.
    step: AtomicU64,
    /// uid messages of the current step received by the client bound to that uid.
    step_got: AtomicU64,
    /// uid messages received by a client bound to another uid (must stay 0).
    wrong: AtomicU64,
    /// uid messages of an earlier step (late arrivals).
    stale: AtomicU64,
    /// Frames other than the above, or undecodable ones.
    other: AtomicU64,
    pings_sent: AtomicU64,
    pongs_got: AtomicU64,
    /// Gateway pings answered.
    server_pings: AtomicU64,
    /// Latency of the current step's uid messages (µs).
    hist: Hist,
}

impl Counters {
    fn line(&self) -> String {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "PART alive={} lost={} identified={} all_got={} all_last_us={} step_got={} wrong={} stale={} other={} \
             pings_sent={} pongs_got={} server_pings={} cpu_s={:.3} gen_rss_kib={}",
            v(&self.alive),
            v(&self.lost),
            v(&self.identified),
            v(&self.all_got),
            v(&self.all_last_us),
            v(&self.step_got),
            v(&self.wrong),
            v(&self.stale),
            v(&self.other),
            v(&self.pings_sent),
            v(&self.pongs_got),
            v(&self.server_pings),
            procfs::cpu_secs("self").unwrap_or(0.0),
            procfs::rss_kib("self").unwrap_or(0),
        )
    }
}

pub fn main(a: &ScaleArgs, shard: Shard) -> anyhow::Result<()> {
    let nofile = limits::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(a, shard, nofile))
}

async fn run(a: &ScaleArgs, shard: Shard, nofile: u64) -> anyhow::Result<()> {
    let gateways = a.gateways()?;
    let counters = Arc::new(Counters::default());
    let mut ctl = Ctl::new();
    ctl.ready().await?;

    // Connect phase: every success starts its client task at once (its heartbeat runs while the
    // others connect); after --max-failures failures this process stops trying.
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let timeout = Duration::from_secs_f64(a.connect_timeout);
    let ids = {
        let stop = stop.clone();
        shard.conns(a.conns).take_while(move |_| !stop.load(Ordering::Relaxed))
    };
    let mut attempts = futures_util::stream::iter(ids)
        .map(|g| {
            let (addr, path) = &gateways[g % gateways.len()];
            let source = a.source(g);
            async move { lean_ws::connect(*addr, Some(source), path, timeout).await }
        })
        .buffer_unordered(a.connect_limit.max(1));
    let (mut connected, mut failures, mut first_error, mut stopped) = (0u64, Failures::default(), None, None);
    let ping_every = a.ping_every();
    let mut phase = Phase::new(shard.index as u64);
    while let Some(result) = attempts.next().await {
        match result {
            Ok((stream, rest)) => {
                connected += 1;
                counters.alive.fetch_add(1, Ordering::Relaxed);
                if connected % 256 == 0
                    && let Some(why) = limits::guard(a.min_mem_available_mib * 1024)
                {
                    stopped.get_or_insert(why);
                    stop.store(true, Ordering::Relaxed);
                }
                let first_ping = Instant::now() + ping_every.mul_f64(phase.next());
                tokio::spawn(client(stream, rest, counters.clone(), first_ping, ping_every));
            }
            Err(e) => {
                failures.add(&e);
                first_error.get_or_insert_with(|| e.to_string());
                if failures.total() as usize >= a.max_failures {
                    stopped.get_or_insert(Stop::Failures);
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    drop(attempts);
    let secs = started.elapsed().as_secs_f64();
    let attempted = connected + failures.total();
    let planned = shard.conns(a.conns).count() as u64;
    if let Some(e) = &first_error {
        eprintln!("generator {}: {} connects failed, the first: {e}", shard.index, failures.total());
    }
    ctl.say(&format!(
        "PART connected={connected} not_attempted={} stopped={} secs={secs:.3} {} nofile={nofile} \
         gen_rss_kib={}",
        planned - attempted,
        stopped.map_or("no", Stop::name),
        failures.fields(),
        procfs::rss_kib("self").unwrap_or(0)
    ))
    .await?;

    while let Some(cmd) = ctl.next().await? {
        let cmd = cmd.trim();
        if cmd == "COUNT" {
            ctl.say(&counters.line()).await?;
        } else if let Some(step) = cmd.strip_prefix("STEP ") {
            counters.step.store(step.parse()?, Ordering::Relaxed);
            counters.step_got.store(0, Ordering::Relaxed);
            counters.hist.clear();
            ctl.say("PART step=ok").await?;
        } else if cmd == "HIST" {
            ctl.say(&format!("PART hist={}", counters.hist.encode())).await?;
        } else {
            anyhow::bail!("unexpected command {cmd:?}");
        }
    }
    Ok(())
}

/// Spreads the clients' first pings over the interval: a low-discrepancy sequence (golden ratio
/// steps), started at a different point in each process.
struct Phase(f64);

impl Phase {
    fn new(seed: u64) -> Self {
        Self((seed as f64 * 0.754_877_666).fract())
    }

    fn next(&mut self) -> f64 {
        self.0 = (self.0 + 0.618_033_988_75).fract();
        self.0
    }
}

/// The connection is closed or broken.
struct Gone;

/// One client: reads what the gateway sends and pings on its own schedule.
async fn client(
    stream: TcpStream,
    mut pending: Vec<u8>,
    counters: Arc<Counters>,
    first_ping: Instant,
    every: Duration,
) {
    let mut uid = NO_UID;
    let mut next_ping = tokio::time::Instant::from_std(first_ping);
    let mut replies = Vec::new();
    // Bytes that came with the handshake answer are frames too.
    if !pending.is_empty() {
        let data = std::mem::take(&mut pending);
        if on_bytes(&data, &mut pending, &mut uid, &counters, &mut replies).is_err() {
            counters.alive.fetch_sub(1, Ordering::Relaxed);
            counters.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    loop {
        let outcome = tokio::select! {
            ready = stream.readable() => match ready {
                Ok(()) => read_available(&stream, &mut pending, &mut uid, &counters, &mut replies),
                Err(_) => Err(Gone),
            },
            _ = tokio::time::sleep_until(next_ping) => {
                next_ping += every;
                counters.pings_sent.fetch_add(1, Ordering::Relaxed);
                replies.extend_from_slice(&lean_ws::control_frame(PING, b""));
                Ok(())
            }
        };
        let outcome = match outcome {
            Ok(()) if !replies.is_empty() => write_all(&stream, &replies).await,
            other => other,
        };
        replies = Vec::new();
        if outcome.is_err() {
            counters.alive.fetch_sub(1, Ordering::Relaxed);
            counters.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
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

/// Reads everything the socket has (into a stack buffer, so an idle client owns none).
fn read_available(
    stream: &TcpStream,
    pending: &mut Vec<u8>,
    uid: &mut u64,
    counters: &Counters,
    replies: &mut Vec<u8>,
) -> Result<(), Gone> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return Err(Gone),
            Ok(n) => on_bytes(&buf[..n], pending, uid, counters, replies)?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(Gone),
        }
    }
}

/// Handles the complete frames in `pending` + `data`; keeps an incomplete one in `pending`.
fn on_bytes(
    data: &[u8],
    pending: &mut Vec<u8>,
    uid: &mut u64,
    counters: &Counters,
    replies: &mut Vec<u8>,
) -> Result<(), Gone> {
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
                    TEXT => on_text(frame.payload, uid, counters),
                    PING => {
                        counters.server_pings.fetch_add(1, Ordering::Relaxed);
                        replies.extend_from_slice(&lean_ws::control_frame(PONG, frame.payload));
                    }
                    PONG => {
                        counters.pongs_got.fetch_add(1, Ordering::Relaxed);
                    }
                    CLOSE => return Err(Gone),
                    _ => {
                        counters.other.fetch_add(1, Ordering::Relaxed);
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

fn on_text(data: &[u8], uid: &mut u64, c: &Counters) {
    let head = data.get(..2).unwrap_or_default();
    let field = |n| net::field(data, 2, n);
    if head == UID
        && let (Some(k), Some(step), Some(at)) = (field(0), field(1), field(2))
    {
        if k != *uid {
            c.wrong.fetch_add(1, Ordering::Relaxed);
        } else if step != c.step.load(Ordering::Relaxed) {
            c.stale.fetch_add(1, Ordering::Relaxed);
        } else {
            c.step_got.fetch_add(1, Ordering::Relaxed);
            c.hist.record(wall_us().saturating_sub(at));
        }
    } else if head == ALL && field(0).is_some() {
        c.all_got.fetch_add(1, Ordering::Relaxed);
        c.all_last_us.fetch_max(wall_us(), Ordering::Relaxed);
    } else if head == IDENTIFY
        && let Some(k) = field(0)
    {
        if *uid == NO_UID {
            c.identified.fetch_add(1, Ordering::Relaxed);
        }
        *uid = k;
    } else {
        c.other.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::text;

    fn frame(payload: &str) -> Vec<u8> {
        let mut f = vec![0x81, payload.len() as u8];
        f.extend_from_slice(payload.as_bytes());
        f
    }

    #[test]
    fn messages_are_counted_and_split_frames_reassembled() {
        let c = Counters::default();
        let (mut pending, mut uid, mut replies) = (Vec::new(), NO_UID, Vec::new());
        let mut bytes = frame(&text(IDENTIFY, &[5]));
        bytes.extend(frame(&text(UID, &[5, 0, wall_us()])));
        bytes.extend(frame(&text(UID, &[6, 0, wall_us()])));
        bytes.extend([0x89, 0x01, b'p']);
        let split = bytes.len() - 2;
        on_bytes(&bytes[..split], &mut pending, &mut uid, &c, &mut replies).ok().unwrap();
        assert_eq!(pending.len(), 1);
        on_bytes(&bytes[split..], &mut pending, &mut uid, &c, &mut replies).ok().unwrap();
        assert!(pending.is_empty());
        assert_eq!(uid, 5);
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!((v(&c.identified), v(&c.step_got), v(&c.wrong), v(&c.server_pings)), (1, 1, 1, 1));
        assert_eq!(replies, lean_ws::control_frame(PONG, b"p"));
        assert!(on_bytes(&[0x88, 0x00], &mut pending, &mut uid, &c, &mut replies).is_err());
    }

    #[test]
    fn first_pings_spread_over_the_interval() {
        let mut p = Phase::new(3);
        let mut buckets = [0u32; 10];
        for _ in 0..1000 {
            buckets[(p.next() * 10.0) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| (90..=110).contains(&n)), "{buckets:?}");
    }
}
