//! `scale`: as many idle WebSocket clients as the cluster and the machine hold (issue 16 part 2).
//!
//! The parent ([`driver`]) starts generator processes ([`generator`], this binary again with
//! `--shard i/n`, each under the 20,000 open-files limit) that connect their share of the clients
//! from source addresses spread over 127.0.0.0/8 and keep them alive with WebSocket pings. Then it
//! measures, in this order: connections held and connect rate; memory per connection (gateway
//! RSS, the kernel's socket memory, the generators separately); CPU while idle with heartbeats
//! running; `send_to_all` to every client; `send_to_uid` to random uids at the highest rate with
//! nothing missing, through a gateway client with the routing index off (every uid send goes to
//! every gateway), on (only to the gateway that holds the uid), or both in the same run over the
//! same clients, with the ratio on/off. Finally it names what limited the run ([`limits`]).
//!
//! Messages the clients receive are short text frames made by [`text`]: a two-byte head and
//! 16-hex-digit fields. Times in them are wall-clock microseconds, so a message sent by the parent
//! can be timed by the generator process that receives it.

mod driver;
mod generator;
mod limits;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

/// `i:` + k: "your uid is k" (k is the client's place in the sorted list of client ids).
pub const IDENTIFY: &[u8] = b"i:";
/// `a:` + send time: the `send_to_all` message.
pub const ALL: &[u8] = b"a:";
/// `u:` + uid + step + intended send time: a `send_to_uid` message.
pub const UID: &[u8] = b"u:";

/// Which gateways a uid send goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Index {
    /// Every gateway (GatewayWorker's behaviour): a gateway client with `routing_index(false)`.
    Off,
    /// Only the gateways holding the uid: a gateway client with `routing_index(true)` whose
    /// index is complete before the search starts.
    On,
    /// Both searches in one run, over the same cluster and clients (off first, then on), and
    /// the ratio of their rates.
    Both,
    /// No search (a run for the connect, memory, idle and `send_to_all` figures only).
    None,
}

impl Index {
    /// The searches to run, in order: `false` is index off, `true` index on.
    pub fn searches(self) -> &'static [bool] {
        match self {
            Index::Off => &[false],
            Index::On => &[true],
            Index::Both => &[false, true],
            Index::None => &[],
        }
    }
}

/// Options of the scale scenario.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Gateway WebSocket URLs `ws://ip:port/`, comma-separated; client g goes to URL g mod n.
    #[arg(long, value_delimiter = ',', required = true)]
    pub url: Vec<String>,
    /// The cluster's register (`ip:port`), for the parent's gateway client.
    #[arg(long)]
    pub register: String,
    /// Clients to hold in all.
    #[arg(long)]
    pub conns: usize,
    /// Gateway pids (comma-separated): their VmRSS is the gateway memory.
    #[arg(long, value_delimiter = ',', required = true)]
    pub gateway_pid: Vec<String>,
    /// Every server pid (gateways, register, worker master; descendants are included): CPU.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<String>,
    /// Generator processes (default: enough for at most `--per-proc` clients each).
    #[arg(long)]
    pub procs: Option<usize>,
    /// Clients per generator process at most when `--procs` is not given (the open-files limit
    /// of a process is 20,000 here).
    #[arg(long, default_value_t = 19_000)]
    pub per_proc: usize,
    /// Clients per source address (`127.<net>.<y>.<z>`, z in 1..=254): below the gateway's
    /// per-IP cap and far below the ~28,000 ephemeral ports of one address.
    #[arg(long, default_value_t = 500)]
    pub per_source: usize,
    /// Second octet of the first source address (`127.<net>.0.1`).
    #[arg(long, default_value_t = 16)]
    pub source_net: u8,
    /// Each client sends a WebSocket ping this often (the gateways' `ping_interval`), and answers
    /// the gateway's pings.
    #[arg(long, default_value_t = 25.0)]
    pub ping_secs: f64,
    /// Seconds of the idle window over which CPU is measured (at least one ping interval).
    #[arg(long, default_value_t = 60.0)]
    pub idle_secs: f64,
    /// Scheduling niceness of the generator processes: dozens of them connecting at once would
    /// otherwise take CPU from the servers they measure (a starved worker misses its link
    /// heartbeats, and the gateways then close clients for want of a worker).
    #[arg(long, default_value_t = 10)]
    pub generator_nice: u8,
    /// WebSocket handshakes in progress at once per generator process.
    #[arg(long, default_value_t = 64)]
    pub connect_limit: usize,
    /// Seconds one connection attempt may take (SYNs dropped by a full kernel table time out).
    #[arg(long, default_value_t = 15.0)]
    pub connect_timeout: f64,
    /// A generator process stops opening connections after this many failures.
    #[arg(long, default_value_t = 200)]
    pub max_failures: usize,
    /// Generators stop opening connections when the machine's MemAvailable falls below this
    /// (MiB): the run then names memory as its limit instead of waking the OOM killer on a
    /// shared machine.
    #[arg(long, default_value_t = 4096)]
    pub min_mem_available_mib: u64,
    /// Which gateways uid sends go to: `off` every gateway, `on` by the routing index, `both`
    /// one search each in the same run.
    #[arg(long, value_enum, default_value_t = Index::Both)]
    pub index: Index,
    /// Seconds the parent's gateway-client links may stay silent before they count as dead
    /// (`[link] heartbeat_timeout`; also their handshake timeout). Default: the library's (5 s).
    /// The full run raises it, as it does for the servers, so CPU starvation does not cut links.
    #[arg(long)]
    pub link_timeout_secs: Option<f64>,
    /// Milliseconds the parent's gateway-client links hold each write to gather more into it
    /// (`[link] write_delay`; default 0: write at once).
    #[arg(long, default_value_t = 0.0)]
    pub write_delay_ms: f64,
    /// `send_to_all` rounds, one after the other, each timed until every client had it (the
    /// first is the figure of the summary line; each prints a `RESULT scenario=scale-all` line
    /// with the CPU seconds of the gateways and of the generators over it).
    #[arg(long, default_value_t = 1)]
    pub broadcasts: usize,
    /// Seconds each `send_to_uid` rate step sends.
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,
    /// First `send_to_uid` rate (calls/s).
    #[arg(long, default_value_t = 500.0)]
    pub start_rate: f64,
    /// Factor between rate steps while they pass.
    #[arg(long, default_value_t = 2.0)]
    pub growth: f64,
    /// Never offer more calls/s than this.
    #[arg(long, default_value_t = 200_000.0)]
    pub max_rate: f64,
    /// Bisection steps after the first failing rate.
    #[arg(long, default_value_t = 3)]
    pub refine: usize,
    /// A step fails when p99 latency is above this many milliseconds.
    #[arg(long, default_value_t = 100.0)]
    pub p99_limit_ms: f64,
    /// A step fails when median latency is above this many milliseconds: messages queue up
    /// (a rate the cluster does not sustain shows here first; a stall shows in p99).
    #[arg(long, default_value_t = 25.0)]
    pub p50_limit_ms: f64,
    /// A step that failed on latency alone (everything arrived, at the right clients, sent on
    /// time) runs again up to this many times before its rate counts as too high: the machine
    /// is shared, and another tenant's burst is not the cluster's limit.
    #[arg(long, default_value_t = 2)]
    pub latency_retries: usize,
    /// Scheduling niceness of the generator processes (every thread) during the `send_to_uid`
    /// searches: they receive and time the messages, and at `--generator-nice` another tenant's
    /// build on this shared machine starves them for hundreds of milliseconds, which the
    /// latency would then measure.
    #[arg(long, default_value_t = 0)]
    pub search_nice: i32,
    /// Report the clients held instead of failing when fewer than `--conns` could be opened
    /// (the full run: it goes as far as the machine allows and names the limit).
    #[arg(long)]
    pub allow_short: bool,
    /// Internal: this process is generator i of n.
    #[arg(long, hide = true)]
    pub shard: Option<String>,
}

impl ScaleArgs {
    /// Generator processes to start.
    pub fn procs(&self) -> usize {
        self.procs.unwrap_or_else(|| self.conns.div_ceil(self.per_proc.max(1))).max(1)
    }

    /// The gateways' addresses and paths, in `--url` order.
    pub fn gateways(&self) -> anyhow::Result<Vec<(SocketAddr, String)>> {
        self.url
            .iter()
            .map(|u| {
                let rest = u.strip_prefix("ws://").with_context(|| format!("{u}: only ws:// URLs are supported"))?;
                let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
                let addr: SocketAddr = host.parse().with_context(|| format!("{u}: the host must be ip:port"))?;
                Ok((addr, path))
            })
            .collect()
    }

    /// The source address of client `g`: a block of `per_source` clients per address.
    pub fn source(&self, g: usize) -> IpAddr {
        let a = g / self.per_source.max(1);
        let (hi, lo) = (a / 254, a % 254 + 1);
        let net = (self.source_net as usize + hi / 256).min(255) as u8;
        IpAddr::V4(Ipv4Addr::new(127, net, (hi % 256) as u8, lo as u8))
    }

    /// Source addresses in use.
    pub fn sources(&self) -> usize {
        self.conns.div_ceil(self.per_source.max(1))
    }

    fn ping_every(&self) -> Duration {
        Duration::from_secs_f64(self.ping_secs.max(0.1))
    }
}

/// Runs the scenario: the parent, or a generator when `--shard` is given.
pub fn main(a: ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.conns > 0, "--conns must be positive");
    match a.shard.as_deref() {
        Some(s) => generator::main(&a, crate::coord::Shard::parse(s)?),
        None => driver::main(&a),
    }
}

/// A message of `head` followed by each value as 16 hex digits.
pub fn text(head: &[u8], values: &[u64]) -> String {
    let mut buf = vec![0u8; head.len() + 16 * values.len()];
    buf[..head.len()].copy_from_slice(head);
    for (i, v) in values.iter().enumerate() {
        crate::net::put_hex(&mut buf[head.len() + 16 * i..], *v);
    }
    String::from_utf8(buf).expect("ASCII")
}

/// Wall-clock microseconds: comparable between the processes of one machine.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        a: ScaleArgs,
    }

    fn args(extra: &[&str]) -> ScaleArgs {
        let mut argv =
            vec!["x", "--url", "ws://127.0.0.1:1/,ws://127.0.0.1:2/chat", "--register", "r", "--gateway-pid", "1"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).a
    }

    #[test]
    fn sources_spread_over_127_8_without_network_or_broadcast_addresses() {
        let a = args(&["--conns", "1000000", "--per-source", "500"]);
        assert_eq!(a.source(0), IpAddr::V4(Ipv4Addr::new(127, 16, 0, 1)));
        assert_eq!(a.source(499), a.source(0));
        assert_eq!(a.source(500), IpAddr::V4(Ipv4Addr::new(127, 16, 0, 2)));
        assert_eq!(a.source(254 * 500), IpAddr::V4(Ipv4Addr::new(127, 16, 1, 1)));
        assert_eq!(a.source(999_999), IpAddr::V4(Ipv4Addr::new(127, 16, 7, 222)));
        assert_eq!(a.sources(), 2000);
        assert_eq!(a.procs(), 53);
    }

    #[test]
    fn urls_and_messages() {
        let a = args(&["--conns", "10"]);
        let g = a.gateways().unwrap();
        assert_eq!(g[1], ("127.0.0.1:2".parse().unwrap(), "/chat".to_string()));
        let t = text(UID, &[7, 1, 99]);
        assert_eq!(t.len(), 2 + 48);
        assert_eq!(crate::net::field(t.as_bytes(), 2, 2), Some(99));
    }
}
