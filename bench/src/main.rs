//! `gw-bench`: load generator for a gateway cluster running the `echo` application.
//!
//! Every scenario prints one machine-readable `RESULT scenario=… key=value …` line on stdout
//! (rate-finding scenarios also print one `STEP …` line per step); progress goes to stderr.
//! A nonzero exit means the scenario could not run or lost messages.

mod coord;
mod deflate;
mod echo;
mod endpoint;
mod fanout;
mod handover;
mod heartbeat;
mod hist;
mod idle;
mod lean_ws;
mod net;
mod procfs;
mod push;
mod pusher;
mod restart;
mod scale;
mod storm;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::net::Targets;

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for the gateway cluster (echo application)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print N free TCP ports on 127.0.0.1 (bound together, then released).
    Ports {
        n: usize,
        /// Pick them below the ephemeral range (`ip_local_port_range`), so the outgoing
        /// connections of the processes started meanwhile cannot take one before its listener
        /// binds it (with dozens of daemons starting, that race is real).
        #[arg(long)]
        outside_ephemeral: bool,
    },
    /// Wait until a WebSocket echo round trip succeeds on every URL.
    Wait {
        #[arg(long, value_delimiter = ',', required = true)]
        url: Vec<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// N connections, each keeping W messages in flight: round trips/s and latency.
    Echo(echo::EchoArgs),
    /// S senders broadcast (`b:`) at a fixed rate; every connection receives every message.
    Broadcast(fanout::FanoutArgs),
    /// Every connection joins group `g` (`j`); S senders send to it (`g:`) at a fixed rate.
    Group(fanout::FanoutArgs),
    /// N idle connections: gateway resident memory per connection and connection rate.
    Idle(idle::IdleArgs),
    /// N idle connections with heartbeats (the gateway's, or the clients' too): gateway CPU per
    /// client per ping interval.
    Heartbeat(heartbeat::HeartbeatArgs),
    /// permessage-deflate: bytes on the wire for the chat's messages and a 1 KB JSON broadcast,
    /// and the gateway's CPU per delivery, with and without it in the same run.
    Deflate(deflate::DeflateArgs),
    /// N clients connect at once and each sends one message: time until all are answered.
    Storm(storm::StormArgs),
    /// N clients with recovery dropped on one gateway resume on another (relayed to their
    /// home): time per resume and how many resumed.
    Handover(handover::HandoverArgs),
    /// A gateway with N recovery clients is stopped gracefully while another runs: it hands
    /// them over; time until every client resumed on the other gateway.
    Restart(restart::RestartArgs),
    /// `send_to_uid` through the HTTP API vs directly through gateway-client, in the same run.
    Push(push::PushArgs),
    /// Pusher channels: an HTTP publish to one channel's subscribers on every gateway
    /// (deliveries/s, latency), and a subscribed Pusher client's memory at rest against a plain one.
    Pusher(pusher::PusherArgs),
    /// Serve an echo endpoint for business workers running `app = "http"`.
    Endpoint(endpoint::EndpointArgs),
    /// Up to a million idle WebSocket clients with heartbeats from generator processes: memory
    /// and CPU per connection, `send_to_all` and `send_to_uid` at that scale, and what limited it.
    /// An option given twice takes its last value (scripts/scale.sh passes its own, then yours).
    #[command(args_override_self = true)]
    Scale(scale::ScaleArgs),
}

/// Options every load scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Gateway WebSocket URL(s) `ws://ip:port/`, comma-separated; connections go round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub url: Vec<String>,
    /// Number of connections (in total, over all generator processes).
    #[arg(long)]
    pub conns: usize,
    /// Client sockets bind to this many source addresses `127.0.<net>.<first>`…, round-robin, so
    /// one generator can exceed the ephemeral ports of a single address and no address exceeds
    /// the gateway's per-IP connection cap (default: one address per 800 connections, at least
    /// 4; 0: let the kernel pick).
    #[arg(long)]
    pub sources: Option<u8>,
    /// Third octet of the source addresses (`127.0.<net>.x`).
    #[arg(long, default_value_t = 0)]
    pub source_net: u8,
    /// Last octet of the first source address.
    #[arg(long, default_value_t = 2)]
    pub source_first: u8,
    /// Server pids whose CPU time is reported as `server_cores` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<String>,
    /// Generator processes (results are summed). Scenarios that find a rate run in one process.
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// Runtime threads per generator process (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Offer permessage-deflate in every handshake (idle: what a compressed idle client costs).
    #[arg(long)]
    pub deflate: bool,
    /// Internal: this process is shard i of n started by a parent `gw-bench`.
    #[arg(long, hide = true)]
    pub shard: Option<String>,
}

impl Common {
    /// Where each connection goes and which source address it binds.
    pub fn targets(&self) -> anyhow::Result<Targets> {
        let room = 255u16.saturating_sub(self.source_first as u16) as usize;
        let auto = self.conns.div_ceil(800).clamp(4, room.max(1));
        let mut t = Targets::new(&self.url, self.source_net, self.source_first, self.sources.unwrap_or(auto as u8))?;
        t.deflate = self.deflate;
        Ok(t)
    }

    /// `--shard i/n` when this process is a generator started by a parent.
    pub fn shard(&self) -> anyhow::Result<Option<coord::Shard>> {
        self.shard.as_deref().map(coord::Shard::parse).transpose()
    }

    /// The tokio runtime of one generator process (`--threads`).
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        Ok(if self.threads <= 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?
        } else {
            tokio::runtime::Builder::new_multi_thread().worker_threads(self.threads).enable_all().build()?
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Ports { n, outside_ephemeral } => ports(n, outside_ephemeral),
        Cmd::Wait { url, timeout } => wait(url, timeout),
        Cmd::Echo(a) => echo::main(a),
        Cmd::Broadcast(a) => fanout::main(a, fanout::Kind::Broadcast),
        Cmd::Group(a) => fanout::main(a, fanout::Kind::Group),
        Cmd::Idle(a) => idle::main(a),
        Cmd::Heartbeat(a) => heartbeat::main(a),
        Cmd::Deflate(a) => deflate::main(a),
        Cmd::Storm(a) => storm::main(a),
        Cmd::Handover(a) => handover::main(a),
        Cmd::Restart(a) => restart::main(a),
        Cmd::Push(a) => push::main(a),
        Cmd::Pusher(a) => pusher::main(a),
        Cmd::Endpoint(a) => endpoint::main(a),
        Cmd::Scale(a) => scale::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gw-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ports(n: usize, outside_ephemeral: bool) -> anyhow::Result<()> {
    let listeners = if outside_ephemeral {
        let range = procfs::numbers("/proc/sys/net/ipv4/ip_local_port_range");
        let below = range.first().copied().unwrap_or(32768).min(65535) as u16;
        anyhow::ensure!(below > 1024, "no ports below the ephemeral range {range:?}");
        // Start at a different place each time so concurrent scripts rarely probe the same ports.
        let span = below - 1024;
        let start = (std::process::id() as u64 ^ scale::wall_us()) % span as u64;
        let mut found = Vec::new();
        for i in 0..span {
            if found.len() == n {
                break;
            }
            let port = 1024 + ((start + i as u64) % span as u64) as u16;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                found.push(l);
            }
        }
        anyhow::ensure!(found.len() == n, "only {} free ports below {below}", found.len());
        found
    } else {
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?
    };
    let ports: Vec<String> =
        listeners.iter().map(|l| l.local_addr().map(|a| a.port().to_string())).collect::<Result<_, _>>()?;
    println!("{}", ports.join(" "));
    Ok(())
}

/// Polls until one echo round trip works on every URL: the gateway listens and a worker is bound.
fn wait(urls: Vec<String>, timeout: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        for (i, url) in urls.iter().enumerate() {
            let targets = Targets::new(std::slice::from_ref(url), 0, 0, 0)?;
            let mut delay = Duration::from_millis(20);
            loop {
                let attempt = async {
                    let mut ws = targets.connect(i, 4096).await?;
                    net::round_trip(&mut ws, "ready?", Duration::from_secs(2), |t| t == "ready?").await
                };
                match attempt.await {
                    Ok(()) => break,
                    Err(e) if tokio::time::Instant::now() + delay > deadline => {
                        anyhow::bail!("{url} not ready after {timeout}s: {e:#}")
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_millis(500));
                    }
                }
            }
            eprintln!("ready: {url}");
        }
        Ok(())
    })
}
