//! `gw-soak`: a chaos soak of a real cluster.
//!
//! Starts one register, gateways (connection state recovery on) and business workers
//! (`app = "echo"`, one worker process per master) as processes of the release binaries, connects
//! N clients spread over the gateways that send numbered messages at a steady rate, and for the
//! duration keeps doing random harm (kill -9, SIGSTOP/SIGCONT, graceful restarts of workers,
//! gateways and the register). Clients with recovery (all by default) resume after a break, on
//! any gateway. Then it lets the cluster recover, drains the clients and checks, per logical
//! client across its connections: replies in order; a client that resumed keeps its id and gets
//! every reply exactly once (a graceful gateway restart loses nothing for it); nothing lost
//! otherwise except what a killed gateway held, or one that a client left without recovery or
//! could not resume with (at most the in-flight window per broken connection); duplicates only
//! around faults that may cause them; every node fully linked again within a bound after the last
//! fault; no panic in any log; file descriptors and memory of the long-lived processes back near
//! their baseline; clean exits.
//!
//! Prints the totals (resumed, not recovered by reason, lost and duplicated, per kind of fault)
//! and every violation; exits 1 if any assertion failed, 2 if the soak itself could not run.

mod chaos;
mod clients;
mod cluster;
mod logs;
mod metrics;
mod procfs;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;

/// The command line.
#[derive(Debug, Parser)]
#[command(version, about = "Chaos soak of a gateway cluster: real processes, random faults, delivery checks")]
pub struct Cli {
    /// Directory with the `register`, `gateway` and `business-worker` binaries
    /// [default: $CARGO_TARGET_DIR/release or target/release].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Logical clients.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// How long faults are injected (`90s`, `10m`, …).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Messages per second per client.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Share of the clients that ask for connection state recovery (`gw_recover=1`) and resume
    /// after a break, from 0 to 1; the others start a new client on every connection.
    #[arg(long, default_value_t = 1.0, value_parser = parse_share)]
    pub recovery_share: f64,
    /// Most unanswered messages per client.
    #[arg(long, default_value_t = 3)]
    pub window: usize,
    /// Gateways in the cluster.
    #[arg(long, default_value_t = 3)]
    pub gateways: usize,
    /// Business-worker processes in the cluster.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Seed of the fault schedule [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where configs, run dirs and logs go [default: a new directory under target/soak].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Shortest and longest pause between two faults.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub fault_min: Duration,
    /// Longest pause between two faults.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub fault_max: Duration,
    /// Faults alternate between calm segments of this length (only faults that cannot cause a
    /// duplicate reply: graceful restarts, gateway and register kills) and crash segments (all);
    /// 0 for no calm segments.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub segment: Duration,
    /// Shortest and longest SIGSTOP.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub stop_min: Duration,
    /// Longest SIGSTOP.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    pub stop_max: Duration,
    /// `[link] heartbeat_interval` and `heartbeat_timeout` of every node.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// How long a silent link lives on.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// `grace_period` of gateways and workers.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,
    /// A message unanswered this long on a live connection is a hang.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub stall: Duration,
    /// Every node must be fully linked again within this after the last fault.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub recovery_bound: Duration,
    /// Kinds of fault, comma-separated: worker-kill, worker-stop, worker-restart, master-kill,
    /// gateway-kill, gateway-stop, gateway-restart, register-kill, register-restart.
    #[arg(long, value_delimiter = ',', value_parser = chaos::FaultKind::parse, default_value = DEFAULT_FAULTS)]
    pub faults: Vec<chaos::FaultKind>,
    /// Keep the work directory even if every check passed.
    #[arg(long)]
    pub keep: bool,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a share from 0 to 1")),
    }
}

/// `250ms`, `10s`, `5m`, `1h`, or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 90s, 10m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Every kind of fault but `master-kill`: a worker process whose master was killed keeps running,
/// still linked to every gateway, and the restarted master's new worker process fails to start
/// while it lives (same control socket name) until the generation numbers pass it. Add
/// `master-kill` to `--faults` to see it.
const DEFAULT_FAULTS: &str =
    "worker-kill,worker-stop,worker-restart,gateway-kill,gateway-stop,gateway-restart,register-kill,register-restart";

static START: OnceLock<Instant> = OnceLock::new();
/// The wall clock at `START`, to place the daemons' log time stamps on the soak's time line.
static START_WALL: OnceLock<std::time::SystemTime> = OnceLock::new();

pub use run::since_start;

/// A progress line on stderr, stamped with the time since the soak started.
pub fn log(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1}s] {msg}");
}

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    START_WALL.get_or_init(std::time::SystemTime::now);
    let cli = Cli::parse();
    // Own process group, so a wrapper script can kill every process of the soak at once.
    let _ = nix::unistd::setsid();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gw-soak: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run::soak(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("gw-soak: could not run: {e:#}");
            ExitCode::from(2)
        }
    }
}
