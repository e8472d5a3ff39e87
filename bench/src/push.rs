//! Push through the HTTP API against push through `gateway-client`, in the same run: the same
//! `send_to_uid` calls to uids bound to live connections, first made directly with the library,
//! then as `POST /v1/send_to_uid` over keep-alive HTTP connections. Closed loop: each of
//! `concurrency` pushers owns one uid (one connection) and sends its next push when the previous
//! one has arrived, so nothing queues up unseen and the latency is end to end (call → WebSocket
//! frame received). The ratio of the two rates is the API's overhead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use gw_gateway_client::{ClientId, GatewayClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::hist::Hist;
use crate::net::Targets;

#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Gateway WebSocket URL(s) for the receiving connections.
    #[arg(long, value_delimiter = ',', required = true)]
    pub url: Vec<String>,
    /// The cluster's register (`ip:port`), for the direct `gateway-client` calls.
    #[arg(long)]
    pub register: String,
    /// The HTTP API's base URL, `http://ip:port`.
    #[arg(long)]
    pub api: String,
    /// API key (empty: none).
    #[arg(long, default_value = "")]
    pub key: String,
    /// Pushers, each with its own uid, receiving connection and (over HTTP) keep-alive connection.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds of each of the two measurements.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<String>,
}

pub fn main(a: PushArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(a))
}

async fn run(a: PushArgs) -> anyhow::Result<()> {
    let gateway = GatewayClient::builder([a.register.clone()]).connect().await.context("gateway client")?;
    let targets = Targets::new(&a.url, 0, 0, 0)?;
    let received = Arc::new(AtomicU64::new(0));
    let before: std::collections::BTreeSet<ClientId> = gateway.client_ids().await?.value.into_iter().collect();
    let mut sockets = Vec::new();
    for i in 0..a.concurrency {
        sockets.push(targets.connect(i, 4096).await?);
    }
    // The new connections are among the ids that were not there before (a probe connection that
    // is closing may be listed too): each new id is told its id, and each socket learns its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ids = loop {
        let ids: Vec<ClientId> =
            gateway.client_ids().await?.value.into_iter().filter(|id| !before.contains(id)).collect();
        if ids.len() >= a.concurrency {
            break ids;
        }
        if Instant::now() > deadline {
            bail!("only {} of {} connections registered", ids.len(), a.concurrency);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for id in &ids {
        gateway.send_to_client(id, id.to_string()).await?;
    }
    let uids: Vec<String> = (0..a.concurrency).map(|i| format!("push-{i}")).collect();
    for (ws, uid) in sockets.iter_mut().zip(&uids) {
        let own: ClientId = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(m))) if m.is_text() => break m.into_text()?.parse()?,
                Ok(Some(Ok(_))) => {}
                _ => bail!("a connection did not learn its client id"),
            }
        };
        gateway.bind_uid(&own, uid).await?;
    }
    // Connection i is bound to uid i; its reader tells pusher i that a push arrived.
    let mut arrivals = Vec::new();
    for ws in sockets {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        arrivals.push(rx);
        let received = received.clone();
        tokio::spawn(async move {
            let (_, mut read) = ws.split();
            while let Some(Ok(m)) = read.next().await {
                if m.is_text() {
                    received.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(());
                }
            }
        });
    }
    let duration = Duration::from_secs_f64(a.duration);
    let arrival_timeout = Duration::from_secs(10);

    // Direct: gateway-client.
    let direct = Arc::new(Hist::new());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (t, mut arrived) in arrivals.into_iter().enumerate() {
        let (gateway, uid, hist) = (gateway.clone(), uids[t].clone(), direct.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < duration {
                let t0 = Instant::now();
                gateway.send_to_uid(&uid, "push").await?;
                tokio::time::timeout(arrival_timeout, arrived.recv()).await?.context("connection closed")?;
                hist.record(t0.elapsed().as_micros() as u64);
            }
            anyhow::Ok(arrived)
        }));
    }
    let mut arrivals = Vec::new();
    for t in tasks {
        arrivals.push(t.await??);
    }
    let direct_secs = started.elapsed().as_secs_f64();

    // HTTP: the same calls as POST /v1/send_to_uid, one keep-alive connection per pusher.
    let addr = a.api.strip_prefix("http://").context("--api must be http://ip:port")?.trim_end_matches('/').to_string();
    let http = Arc::new(Hist::new());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (t, mut arrived) in arrivals.into_iter().enumerate() {
        let (uid, hist, addr, key) = (uids[t].clone(), http.clone(), addr.clone(), a.key.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = BufReader::new(TcpStream::connect(&addr).await?);
            conn.get_ref().set_nodelay(true)?;
            let auth = if key.is_empty() { String::new() } else { format!("Authorization: Bearer {key}\r\n") };
            let body = format!(r#"{{"uid":"{uid}","message":"push"}}"#);
            let req = format!(
                "POST /v1/send_to_uid HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            while started.elapsed() < duration {
                let t0 = Instant::now();
                conn.get_mut().write_all(req.as_bytes()).await?;
                let status = read_response(&mut conn).await?;
                anyhow::ensure!(status == 200, "HTTP API answered {status}");
                tokio::time::timeout(arrival_timeout, arrived.recv()).await?.context("connection closed")?;
                hist.record(t0.elapsed().as_micros() as u64);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let http_secs = started.elapsed().as_secs_f64();

    let sent = direct.count() + http.count();
    let missing = sent.saturating_sub(received.load(Ordering::Relaxed));
    let direct_rate = direct.count() as f64 / direct_secs;
    let http_rate = http.count() as f64 / http_secs;
    println!(
        "RESULT scenario=push concurrency={} direct_per_sec={:.0} direct_p50_us={} direct_p99_us={} \
         http_per_sec={:.0} http_p50_us={} http_p99_us={} overhead={:.2} sent={sent} missing={missing}",
        a.concurrency,
        direct_rate,
        direct.quantile(0.5),
        direct.quantile(0.99),
        http_rate,
        http.quantile(0.5),
        http.quantile(0.99),
        direct_rate / http_rate.max(1.0),
    );
    if missing > 0 {
        bail!("{missing} of {sent} pushed messages never arrived");
    }
    Ok(())
}

/// Reads one response (status line, headers, `Content-Length` body); returns the status.
async fn read_response(conn: &mut BufReader<TcpStream>) -> anyhow::Result<u16> {
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status: u16 = line.split(' ').nth(1).context("no status line")?.parse()?;
    let mut length = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            bail!("connection closed in the middle of a response");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok(status)
}
