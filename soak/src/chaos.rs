//! Random harm, every `interval` (random in a range): kill -9, SIGSTOP then SIGCONT, graceful
//! restart, of a random worker process, worker master, gateway or the register. Faults run
//! concurrently but never two on one node, never on every gateway at once, and always leave one
//! worker untouched. A killed node is started again (as a supervisor would) on its old addresses.
//!
//! Two nodes are kept "long-lived" so their file descriptors and memory can be compared before and
//! after the chaos: gateway 0 is only ever stopped and continued, and worker 0's master is never
//! killed or restarted (its worker process is).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::{Cluster, Health, Kind, Node, signal};
use crate::procfs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 of a worker process; its master restarts it.
    WorkerKill,
    /// SIGSTOP of a worker process, SIGCONT a few seconds later.
    WorkerStop,
    /// Graceful restart of a worker (SIGTERM to the master, start again).
    WorkerRestart,
    /// kill -9 of a worker master, started again shortly after.
    MasterKill,
    GatewayKill,
    GatewayStop,
    GatewayRestart,
    RegisterKill,
    RegisterRestart,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            FaultKind::WorkerKill => "worker process kill -9",
            FaultKind::WorkerStop => "worker process SIGSTOP/SIGCONT",
            FaultKind::WorkerRestart => "worker graceful restart",
            FaultKind::MasterKill => "worker master kill -9",
            FaultKind::GatewayKill => "gateway kill -9",
            FaultKind::GatewayStop => "gateway SIGSTOP/SIGCONT",
            FaultKind::GatewayRestart => "gateway graceful restart",
            FaultKind::RegisterKill => "register kill -9",
            FaultKind::RegisterRestart => "register graceful restart",
        })
    }
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::WorkerKill,
        FaultKind::WorkerStop,
        FaultKind::WorkerRestart,
        FaultKind::MasterKill,
        FaultKind::GatewayKill,
        FaultKind::GatewayStop,
        FaultKind::GatewayRestart,
        FaultKind::RegisterKill,
        FaultKind::RegisterRestart,
    ];

    /// The name used on the command line.
    pub fn key(self) -> &'static str {
        match self {
            FaultKind::WorkerKill => "worker-kill",
            FaultKind::WorkerStop => "worker-stop",
            FaultKind::WorkerRestart => "worker-restart",
            FaultKind::MasterKill => "master-kill",
            FaultKind::GatewayKill => "gateway-kill",
            FaultKind::GatewayStop => "gateway-stop",
            FaultKind::GatewayRestart => "gateway-restart",
            FaultKind::RegisterKill => "register-kill",
            FaultKind::RegisterRestart => "register-restart",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.key() == s)
            .ok_or_else(|| format!("unknown fault {s:?}; one of {}", Self::ALL.map(|k| k.key()).join(", ")))
    }

    /// Whether a client may see a reply twice because of it: a worker that handled an event but
    /// whose acknowledgement never reached the gateway gets the event redelivered elsewhere.
    pub fn may_duplicate(self) -> bool {
        matches!(self, FaultKind::WorkerKill | FaultKind::WorkerStop | FaultKind::MasterKill | FaultKind::GatewayStop)
    }

    /// Whether it closes the client connections of its gateway.
    pub fn breaks_clients(self) -> bool {
        matches!(self, FaultKind::GatewayKill | FaultKind::GatewayRestart)
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub node: String,
    /// The gateway's index, for gateway faults.
    pub gateway: Option<usize>,
    pub start: Instant,
    /// When the node was back (continued or restarted); `None` while in progress.
    pub end: Option<Instant>,
    /// Time from `end` until the node was fully linked again.
    pub recovered: Option<Duration>,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub seed: u64,
    pub interval: (Duration, Duration),
    /// How long a SIGSTOP lasts.
    pub stop_for: (Duration, Duration),
    /// The kinds of fault to inject.
    pub kinds: Vec<FaultKind>,
    /// Length of the alternating segments: calm ones (first, third, …) inject only faults that
    /// cannot cause a duplicate, so any duplicate seen there is a violation. Zero: no calm segments.
    pub segment: Duration,
    pub grace: Duration,
}

/// Faults so far, and problems seen while injecting them.
#[derive(Debug, Default)]
pub struct Journal {
    pub faults: Mutex<Vec<Fault>>,
    pub problems: Mutex<Vec<String>>,
}

impl Journal {
    fn begin(&self, kind: FaultKind, node: &Node) -> usize {
        let mut f = self.faults.lock().expect("journal");
        f.push(Fault {
            kind,
            node: node.name.clone(),
            gateway: (node.kind == Kind::Gateway).then_some(node.index),
            start: Instant::now(),
            end: None,
            recovered: None,
            note: String::new(),
        });
        f.len() - 1
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut Fault)) {
        f(&mut self.faults.lock().expect("journal")[i]);
    }

    pub fn problem(&self, p: String) {
        crate::log(&format!("PROBLEM: {p}"));
        self.problems.lock().expect("journal").push(p);
    }

    pub fn counts(&self) -> BTreeMap<FaultKind, usize> {
        let mut m = BTreeMap::new();
        for f in self.faults.lock().expect("journal").iter() {
            *m.entry(f.kind).or_default() += 1;
        }
        m
    }

    /// When the last fault's node was back.
    pub fn last_end(&self) -> Option<Instant> {
        self.faults.lock().expect("journal").iter().filter_map(|f| f.end).max()
    }
}

fn uniform(rng: &mut StdRng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo { lo } else { rng.gen_range(lo..hi) }
}

fn candidates(cluster: &Cluster, opts: &ChaosOptions, calm: bool) -> Vec<(FaultKind, Arc<Node>, u32)> {
    let mut out = all_candidates(cluster);
    out.retain(|(k, _, _)| opts.kinds.contains(k) && !(calm && k.may_duplicate()));
    out
}

fn all_candidates(cluster: &Cluster) -> Vec<(FaultKind, Arc<Node>, u32)> {
    let busy = |n: &Arc<Node>| n.op.try_lock().is_err();
    let busy_gateways = cluster.gateways.iter().filter(|n| busy(n)).count();
    let busy_workers = cluster.workers.iter().filter(|n| busy(n)).count();
    let mut out = Vec::new();
    if busy_gateways + 1 < cluster.gateways.len() {
        for g in cluster.gateways.iter().filter(|n| !busy(n)) {
            out.push((FaultKind::GatewayStop, g.clone(), 2));
            if g.index != 0 {
                out.push((FaultKind::GatewayKill, g.clone(), 2));
                out.push((FaultKind::GatewayRestart, g.clone(), 2));
            }
        }
    }
    if busy_workers + 1 < cluster.workers.len() {
        for w in cluster.workers.iter().filter(|n| !busy(n)) {
            out.push((FaultKind::WorkerKill, w.clone(), 3));
            out.push((FaultKind::WorkerStop, w.clone(), 2));
            if w.index != 0 {
                out.push((FaultKind::WorkerRestart, w.clone(), 2));
                out.push((FaultKind::MasterKill, w.clone(), 1));
            }
        }
    }
    if !busy(&cluster.register) {
        out.push((FaultKind::RegisterKill, cluster.register.clone(), 1));
        out.push((FaultKind::RegisterRestart, cluster.register.clone(), 1));
    }
    out
}

/// Injects faults until `until`, then waits for the ones in progress to finish.
pub async fn run(cluster: Arc<Cluster>, opts: ChaosOptions, until: Instant, journal: Arc<Journal>) {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut calm_was = None;
    loop {
        let wait = uniform(&mut rng, opts.interval);
        if Instant::now() + wait >= until {
            break;
        }
        tokio::time::sleep(wait).await;
        let calm =
            !opts.segment.is_zero() && (started.elapsed().as_secs_f64() / opts.segment.as_secs_f64()) as u64 & 1 == 0;
        if calm_was != Some(calm) {
            calm_was = Some(calm);
            crate::log(if calm {
                "calm segment: only faults that cannot cause duplicates"
            } else {
                "crash segment: every kind of fault"
            });
        }
        let options = candidates(&cluster, &opts, calm);
        let total: u32 = options.iter().map(|(_, _, w)| w).sum();
        if total == 0 {
            continue;
        }
        let mut pick = rng.gen_range(0..total);
        let (kind, node, _) = options
            .into_iter()
            .find(|(_, _, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .expect("weights add up");
        let sub_seed: u64 = rng.r#gen();
        tasks.spawn(inject(cluster.clone(), node, kind, opts.clone(), sub_seed, journal.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn inject(
    cluster: Arc<Cluster>,
    node: Arc<Node>,
    kind: FaultKind,
    opts: ChaosOptions,
    seed: u64,
    journal: Arc<Journal>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(mut proc) = node.op.clone().try_lock_owned() else { return };
    let i = journal.begin(kind, &node);
    crate::log(&format!("fault: {kind} on {node}"));
    let stop_limit = opts.grace + Duration::from_secs(10);
    let result: anyhow::Result<String> = async {
        let mut note = String::new();
        match kind {
            FaultKind::WorkerKill | FaultKind::WorkerStop => {
                let children = node.worker_processes();
                let [child] = children[..] else {
                    anyhow::bail!("{node}: expected one worker process, found {children:?}");
                };
                if kind == FaultKind::WorkerKill {
                    signal(child, Signal::SIGKILL)?;
                    note = format!("pid {child}");
                } else {
                    signal(child, Signal::SIGSTOP)?;
                    node.set_health(Health::Stopped);
                    let d = uniform(&mut rng, opts.stop_for);
                    tokio::time::sleep(d).await;
                    signal(child, Signal::SIGCONT)?;
                    node.set_health(Health::Up);
                    note = format!("pid {child} stopped {:.1}s", d.as_secs_f64());
                }
            }
            FaultKind::GatewayStop => {
                cluster.signal(&node, Signal::SIGSTOP)?;
                node.set_health(Health::Stopped);
                let d = uniform(&mut rng, opts.stop_for);
                tokio::time::sleep(d).await;
                cluster.signal(&node, Signal::SIGCONT)?;
                node.set_health(Health::Up);
                note = format!("stopped {:.1}s", d.as_secs_f64());
            }
            FaultKind::WorkerRestart | FaultKind::GatewayRestart | FaultKind::RegisterRestart => {
                let started = Instant::now();
                let (status, killed) = cluster.stop(&node, &mut proc, Signal::SIGTERM, stop_limit).await?;
                if killed || !status.success() {
                    journal.problem(format!(
                        "{node}: graceful stop {} ({status}) after {:.1}s",
                        if killed { "overran its grace period and was killed" } else { "failed" },
                        started.elapsed().as_secs_f64()
                    ));
                }
                note = format!("stopped in {:.1}s", started.elapsed().as_secs_f64());
                cluster.start(&node, &mut proc).await?;
            }
            FaultKind::MasterKill | FaultKind::GatewayKill | FaultKind::RegisterKill => {
                let orphans = node.worker_processes();
                cluster.stop(&node, &mut proc, Signal::SIGKILL, stop_limit).await?;
                let down = match kind {
                    FaultKind::RegisterKill => (Duration::from_millis(200), Duration::from_secs(1)),
                    _ => (Duration::from_millis(500), Duration::from_secs(2)),
                };
                tokio::time::sleep(uniform(&mut rng, down)).await;
                if kind == FaultKind::MasterKill {
                    let alive: Vec<u32> = orphans.iter().copied().filter(|p| procfs::alive(*p)).collect();
                    note = format!("worker process(es) {orphans:?} left running without a master: {alive:?}");
                }
                cluster.start(&node, &mut proc).await?;
            }
        }
        Ok(note)
    }
    .await;
    let end = Instant::now();
    match result {
        Ok(note) => journal.update(i, |f| {
            f.end = Some(end);
            f.note = note;
        }),
        Err(e) => {
            journal.problem(format!("{kind} on {node}: {e:#}"));
            journal.update(i, |f| f.end = Some(end));
            return;
        }
    }
    // Hold the node until it is fully linked again, so faults do not pile up on one node.
    let deadline = end + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cluster.linked(&node).await.unwrap_or(false) {
            journal.update(i, |f| f.recovered = Some(end.elapsed()));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::log(&format!("{node} not fully linked 30 s after {kind}"));
}
