//! Pusher channels under load (issue 27's targets), in one run:
//!
//! - **At rest**: `--idle N` plain WebSocket clients on the first gateway's plain listener and N
//!   Pusher clients subscribed to one channel (shared by all, so the figure is a connection's
//!   cost) on the second gateway's Pusher listener (two gateways started alike, so their
//!   baselines match): gateway RSS per client of each kind, and the ratio. A plain client is not
//!   sent anything: one that was keeps its codec's buffers until its next heartbeat, and the
//!   allocator keeps their pages after.
//! - **Publish**: `--subscribers` Pusher clients spread over every gateway subscribe to one
//!   channel; publishers POST `/apps/{id}/events` to the HTTP API daemon (signed as the SDKs sign
//!   it) at `--rate` per second for `--duration` seconds, each event carrying its send time:
//!   deliveries per second and the latency from the POST to each subscriber's frame. Every
//!   subscriber must get every event (a missing one fails the run).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use gw_pusher_protocol::api::signature::{query_string, sign_request};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::hist::Hist;
use crate::net::{Clock, Targets, Ws, connect_all, report_errors};
use crate::procfs;

/// The channel every subscriber of the publish part joins.
const CHANNEL: &str = "bench-news";

#[derive(Debug, Clone, Args)]
pub struct PusherArgs {
    /// Each gateway's Pusher URL, `ws://ip:port/app/KEY?protocol=7`, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub url: Vec<String>,
    /// Each gateway's plain WebSocket URL (same order), for the at-rest comparison.
    #[arg(long, value_delimiter = ',')]
    pub plain_url: Vec<String>,
    /// Each gateway's pid (same order): RSS at rest.
    #[arg(long, value_delimiter = ',')]
    pub gateway_pids: Vec<String>,
    /// The HTTP API daemon's base URL, `http://ip:port`.
    #[arg(long)]
    pub api: String,
    #[arg(long)]
    pub app_id: String,
    #[arg(long)]
    pub key: String,
    #[arg(long)]
    pub secret: String,
    /// Clients of each kind at rest (0: skip that part).
    #[arg(long, default_value_t = 5_000)]
    pub idle: usize,
    /// Seconds the clients at rest settle before RSS is read. A plain client that was just
    /// answered keeps its codec's buffers until its next heartbeat (`ping_interval`, 25 s by
    /// default); a Pusher client gives them up once its frame is answered. More than one
    /// interval compares them at rest.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// Subscribers of the published channel, over every gateway.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 20)]
    pub rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Server pids whose CPU time is reported (`server_cores`).
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<String>,
}

pub fn main(a: PusherArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(a))
}

async fn run(a: PusherArgs) -> anyhow::Result<()> {
    let mut result = format!("RESULT gateways={}", a.url.len());
    if a.idle > 0 {
        result.push_str(&at_rest(&a).await?);
    }
    if a.subscribers > 0 {
        result.push_str(&publish(&a).await?);
    }
    println!("{result}");
    Ok(())
}

/// Reads text frames until one whose `event` is `want`; its parsed JSON.
async fn expect_event(ws: &mut Ws, want: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.with_context(|| format!("no {want} within 30 s"))?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).with_context(|| format!("not JSON: {t}"))?;
                if v["event"] == want {
                    return Ok(v);
                }
                if v["event"] == "pusher:error" {
                    bail!("pusher:error while waiting for {want}: {t}");
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("waiting for {want}: {e}"),
            None => bail!("closed while waiting for {want}"),
        }
    }
}

/// Connects `n` Pusher clients (client `i` to gateway `first + i`) and subscribes client `i` to
/// `channel(i)`, 200 at a time.
async fn subscribed(
    targets: &Targets,
    ids: &[usize],
    channel: impl Fn(usize) -> String + Sync,
) -> anyhow::Result<Vec<(usize, Ws)>> {
    let (conns, errors) = connect_all(targets, ids, 200, 4096).await;
    report_errors("pusher connect", &errors);
    ensure!(errors.is_empty(), "{} of {} Pusher clients could not connect", errors.len(), ids.len());
    let channel = &channel;
    let results: Vec<anyhow::Result<(usize, Ws)>> = futures_util::stream::iter(conns)
        .map(|(g, mut ws)| async move {
            expect_event(&mut ws, "pusher:connection_established").await?;
            let sub = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel(g)}});
            ws.send(Message::text(sub.to_string())).await?;
            expect_event(&mut ws, "pusher_internal:subscription_succeeded").await?;
            Ok((g, ws))
        })
        .buffer_unordered(200)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Gateway RSS per plain idle client (gateway 1) and per Pusher client subscribed to a channel
/// shared by all (gateway 2): what a connection costs, the channel's own cost spread thin.
async fn at_rest(a: &PusherArgs) -> anyhow::Result<String> {
    ensure!(
        a.url.len() >= 2 && a.plain_url.len() >= 2 && a.gateway_pids.len() >= 2,
        "--idle needs two gateways: --url, --plain-url and --gateway-pids with two entries each"
    );
    let rss = |i: usize| procfs::rss_kib(&a.gateway_pids[i]).with_context(|| format!("RSS of {}", a.gateway_pids[i]));
    let (plain_before, pusher_before) = (rss(0)?, rss(1)?);
    let plain_targets = Targets::new(&a.plain_url[..1], 12, 2, 16)?;
    let ids: Vec<usize> = (0..a.idle).collect();
    let (plain, errors) = connect_all(&plain_targets, &ids, 200, 4096).await;
    report_errors("plain connect", &errors);
    ensure!(errors.is_empty(), "{} of {} plain clients could not connect", errors.len(), a.idle);
    let pusher_targets = Targets::new(&a.url[1..2], 13, 2, 16)?;
    let pusher = subscribed(&pusher_targets, &ids, |_| "idle".to_string()).await?;
    // Let both gateways settle (buffers shrink after the handshakes), then read RSS.
    tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
    let (plain_after, pusher_after) = (rss(0)?, rss(1)?);
    let per = |before: u64, after: u64| after.saturating_sub(before) * 1024 / a.idle as u64;
    let (plain_b, pusher_b) = (per(plain_before, plain_after), per(pusher_before, pusher_after));
    eprintln!("at rest: plain {plain_b} B per client, Pusher (subscribed) {pusher_b} B per client");
    drop((plain, pusher));
    Ok(format!(
        " idle={} plain_bytes_per_conn={plain_b} pusher_bytes_per_conn={pusher_b} pusher_over_plain_pct={:.1}",
        a.idle,
        (pusher_b as f64 / plain_b.max(1) as f64 - 1.0) * 100.0
    ))
}

/// The publish part: deliveries per second and latency, every event to every subscriber.
async fn publish(a: &PusherArgs) -> anyhow::Result<String> {
    let targets = Targets::new(&a.url, 14, 2, 32)?;
    let ids: Vec<usize> = (0..a.subscribers).collect();
    let started = Instant::now();
    let subs = subscribed(&targets, &ids, |_| CHANNEL.to_string()).await?;
    eprintln!("{} subscribers in {:.1} s", subs.len(), started.elapsed().as_secs_f64());
    let mut api = Api::connect(a).await?;
    // Publish only once every gateway's subscriptions reached the routing index the API uses.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info =
            api.get(&format!("/apps/{}/channels/{CHANNEL}", a.app_id), &[("info", "subscription_count")]).await?;
        let v: serde_json::Value = serde_json::from_str(&info).with_context(|| format!("channel info: {info}"))?;
        if v["subscription_count"].as_u64() == Some(a.subscribers as u64) {
            break;
        }
        ensure!(Instant::now() < deadline, "the channel never counted {} subscriptions: {info}", a.subscribers);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let clock = Clock::new();
    let hist = Arc::new(Hist::new());
    let received = Arc::new(AtomicU64::new(0));
    let events = (a.rate as f64 * a.duration).round().max(1.0) as u64;
    let mut readers = Vec::new();
    for (_, mut ws) in subs {
        let (hist, received) = (hist.clone(), received.clone());
        readers.push(tokio::spawn(async move {
            let mut got = 0u64;
            while got < events {
                let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await else { break };
                let Message::Text(t) = msg else { continue };
                // Read without a JSON parser: at 10,000 subscribers the generator, not the
                // cluster, would otherwise set the rate.
                let Some(sent) = tick_time(&t) else { continue };
                hist.record(clock.now_us().saturating_sub(sent));
                received.fetch_add(1, Ordering::Relaxed);
                got += 1;
            }
            got
        }));
    }
    let cpu_before: f64 = a.server_pids.iter().filter_map(|p| procfs::cpu_secs(p)).sum();
    let t0 = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let path = format!("/apps/{}/events", a.app_id);
    for i in 0..events {
        tokio::time::sleep_until((t0 + interval * i as u32).into()).await;
        let body = serde_json::json!({"name": "tick", "channels": [CHANNEL], "data": clock.now_us().to_string()});
        let answer = api.post(&path, body.to_string().as_bytes()).await?;
        ensure!(answer.0 == 200, "publish {i} answered HTTP {}: {}", answer.0, answer.1);
    }
    let mut complete = 0;
    for r in readers {
        if r.await? == events {
            complete += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu: f64 = a.server_pids.iter().filter_map(|p| procfs::cpu_secs(p)).sum::<f64>() - cpu_before;
    let delivered = received.load(Ordering::Relaxed);
    let expected = events * a.subscribers as u64;
    eprintln!("{delivered} of {expected} deliveries in {secs:.2} s; {}", hist.summary());
    ensure!(
        delivered == expected,
        "{} deliveries missing ({complete} of {} subscribers got all)",
        expected - delivered,
        a.subscribers
    );
    Ok(format!(
        " subscribers={} events={events} rate={} delivered={delivered} missing=0 deliveries_per_sec={:.0} p50_us={} p99_us={} p999_us={} max_us={} server_cores={:.2}",
        a.subscribers,
        a.rate,
        delivered as f64 / secs,
        hist.quantile(0.5),
        hist.quantile(0.99),
        hist.quantile(0.999),
        hist.max(),
        cpu / secs,
    ))
}

/// A keep-alive HTTP/1.1 connection to the HTTP API daemon, signing as the Pusher SDKs do.
struct Api {
    conn: BufReader<TcpStream>,
    host: String,
    key: String,
    secret: String,
}

impl Api {
    async fn connect(a: &PusherArgs) -> anyhow::Result<Self> {
        let host = a.api.strip_prefix("http://").context("--api must be http://ip:port")?.trim_end_matches('/');
        let stream = TcpStream::connect(host).await.with_context(|| format!("connect {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Self { conn: BufReader::new(stream), host: host.to_string(), key: a.key.clone(), secret: a.secret.clone() })
    }

    fn signed(&self, method: &str, path: &str, params: &[(&str, &str)], body: &[u8]) -> String {
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let all = sign_request(&self.key, &self.secret, method, path, &params, body, now);
        format!("{path}?{}", query_string(&all))
    }

    async fn get(&mut self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let target = self.signed("GET", path, params, b"");
        let (status, body) =
            self.exchange(&format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host), b"").await?;
        ensure!(status == 200, "GET {path} answered HTTP {status}: {body}");
        Ok(body)
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        let target = self.signed("POST", path, &[], body);
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.exchange(&head, body).await
    }

    async fn exchange(&mut self, head: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        let stream = self.conn.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut line = String::new();
        self.conn.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.conn.read_line(&mut line).await?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().context("content-length")?;
            }
        }
        let mut answer = vec![0; len];
        self.conn.read_exact(&mut answer).await?;
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    }
}

/// The send time in a `tick` event, `{"event":"tick","channel":"…","data":"<µs>"}`.
fn tick_time(frame: &str) -> Option<u64> {
    if !frame.contains("\"event\":\"tick\"") {
        return None;
    }
    let at = frame.find("\"data\":\"")? + "\"data\":\"".len();
    let digits = &frame[at..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tick_s_time_is_read_from_the_frame_the_gateway_sends() {
        let frame = r#"{"event":"tick","channel":"bench-news","data":"123456"}"#;
        assert_eq!(super::tick_time(frame), Some(123_456));
        assert_eq!(super::tick_time(r#"{"event":"pusher:pong","data":"{}"}"#), None);
    }
}
