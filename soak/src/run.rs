//! The soak from start to verdict: bring the cluster up, connect the clients, take a baseline,
//! inject faults, let the cluster recover, drain, take the final measurements, stop everything
//! and check.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};

use crate::chaos::{self, ChaosOptions, Fault, FaultKind, Journal};
use crate::clients::{self, Break, Counters, Outcome, Phase, Record, Shared};
use crate::cluster::{Cluster, Kind, Settings};
use crate::logs::LinkTimeout;
use crate::{Cli, log, procfs};

/// Checks that failed, in words.
#[derive(Debug, Default)]
struct Verdict {
    violations: Vec<String>,
}

impl Verdict {
    fn fail(&mut self, v: String) {
        log(&format!("VIOLATION: {v}"));
        self.violations.push(v);
    }
}

/// Open files and memory of one process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    pid: u32,
    fds: usize,
    rss: u64,
    /// Client connections (gateways only).
    conns: usize,
}

fn sample(pid: u32, conns: usize) -> Option<Sample> {
    Some(Sample { pid, fds: procfs::fds(pid)?, rss: procfs::rss(pid)?, conns })
}

/// Main process and (for workers) worker process of every node.
async fn resources(cluster: &Cluster) -> BTreeMap<String, (Option<Sample>, Option<Sample>)> {
    let mut out = BTreeMap::new();
    for n in cluster.nodes() {
        let conns = match n.kind {
            // Sockets of clients relayed to their home gateway are client connections too.
            Kind::Gateway => cluster
                .metrics(n)
                .await
                .map(|m| (m.get("gw_connections") + m.get("gw_relay_clients")) as usize)
                .unwrap_or(0),
            _ => 0,
        };
        let main = sample(n.info().pid, conns);
        let child = n.worker_processes().first().and_then(|p| sample(*p, 0));
        out.insert(n.name.clone(), (main, child));
    }
    out
}

fn default_bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        // The workspace root is the parent of this crate's directory.
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(|p| p.join("target")).unwrap_or_else(|| "target".into())
    });
    target.join("release")
}

fn work_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    let dir = match &cli.work_dir {
        Some(d) => d.clone(),
        None => {
            let stamp =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
            default_bin_dir()
                .parent()
                .unwrap_or(Path::new("."))
                .join("soak")
                .join(format!("run-{stamp}-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Waits until every node is fully linked and `clients` clients are connected; returns the nodes
/// that are not when `deadline` passes.
async fn wait_linked(cluster: &Cluster, counters: Option<(&Counters, usize)>, deadline: Instant) -> Vec<String> {
    loop {
        let mut missing = Vec::new();
        for n in cluster.nodes() {
            match cluster.linked(n).await {
                Ok(true) => {}
                Ok(false) => missing.push(format!("{n} not fully linked")),
                Err(e) => missing.push(format!("{n}: {e:#}")),
            }
        }
        if let Some((c, n)) = counters {
            let connected = c.connected.load(Ordering::Relaxed) as usize;
            if connected != n {
                missing.push(format!("{connected} of {n} clients connected"));
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the links look like now, for a failure report.
async fn link_report(cluster: &Cluster) -> String {
    let mut out = String::new();
    for n in cluster.nodes() {
        let line = match cluster.metrics(n).await {
            Ok(m) => match n.kind {
                Kind::Register => format!("gateways={}", m.get("gw_register_gateways")),
                Kind::Gateway => format!(
                    "worker_links={} connections={} unacked={}",
                    m.get("gw_worker_links"),
                    m.get("gw_connections"),
                    m.get("gw_events_unacknowledged")
                ),
                Kind::Worker => format!(
                    "processes={} gateway_links={} children={:?}",
                    m.get("gw_worker_processes"),
                    m.get("gw_worker_gateway_links"),
                    n.worker_processes()
                ),
            },
            Err(e) => format!("{e:#}"),
        };
        out.push_str(&format!("\n    {n} (pid {}): {line}", n.info().pid));
    }
    out
}

/// Progress every 10 s until `stop`.
async fn progress(counters: Arc<Shared>, journal: Arc<Journal>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let c = &counters.counters;
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        log(&format!(
            "sent {} replies {} duplicates {} lost-at-break {} resumed {} not-recovered {} connected {} connections {} \
             moves-home {} faults {} problems {}",
            g(&c.sent),
            g(&c.replies),
            g(&c.duplicates),
            g(&c.lost_at_break),
            g(&c.resumed),
            c.not_recovered.lock().expect("counters").values().sum::<u64>(),
            g(&c.connected),
            g(&c.connections),
            g(&c.moves_home),
            journal.faults.lock().expect("journal").len(),
            journal.problems.lock().expect("journal").len()
        ));
    }
}

/// Restarts nodes that exited without being told to (reported as problems).
async fn watchdog(cluster: Arc<Cluster>, journal: Arc<Journal>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for n in cluster.nodes() {
            let Ok(mut proc) = n.op.clone().try_lock_owned() else { continue };
            if let Some(status) = cluster.exited(&mut proc) {
                journal.problem(format!(
                    "{n} exited on its own ({status}); last lines:\n{}",
                    crate::cluster::tail(&n.log, 0, 10)
                ));
                if let Err(e) = cluster.start(n, &mut proc).await {
                    journal.problem(format!("{n} cannot be started again: {e:#}"));
                }
            }
        }
    }
}

pub async fn soak(cli: Cli) -> anyhow::Result<bool> {
    let seed = cli.seed.unwrap_or_else(rand::random);
    let bin = cli.bin_dir.clone().unwrap_or_else(default_bin_dir);
    let dir = work_dir(&cli)?;
    log(&format!(
        "seed {seed}; {} clients at {}/s (window {}), {} gateways, {} workers, faults for {:?}; work dir {}",
        cli.clients,
        cli.rate,
        cli.window,
        cli.gateways,
        cli.workers,
        cli.duration,
        dir.display()
    ));
    anyhow::ensure!(cli.gateways >= 2, "at least 2 gateways (one must stay up while another is harmed)");
    anyhow::ensure!(cli.workers >= 2, "at least 2 workers");
    anyhow::ensure!(cli.rate > 0.0 && cli.window > 0, "rate and window must be positive");
    let settings = Settings {
        heartbeat_interval: cli.heartbeat_interval,
        heartbeat_timeout: cli.heartbeat_timeout,
        grace: cli.grace,
    };
    let cluster = Arc::new(Cluster::new(&bin, &dir, cli.gateways, cli.workers, settings)?);
    let mut verdict = Verdict::default();

    // Bring-up.
    let t = Instant::now();
    {
        let mut p = cluster.register.op.lock().await;
        cluster.start(&cluster.register, &mut p).await?;
    }
    for n in cluster.gateways.iter().chain(&cluster.workers) {
        let mut p = n.op.lock().await;
        cluster.start(n, &mut p).await?;
    }
    let missing = wait_linked(&cluster, None, Instant::now() + Duration::from_secs(30)).await;
    anyhow::ensure!(
        missing.is_empty(),
        "cluster not linked 30 s after start: {missing:?}{}",
        link_report(&cluster).await
    );
    log(&format!("cluster up and linked in {:.1}s; gateways {:?}", t.elapsed().as_secs_f64(), cluster.urls()));

    // Clients.
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let (rec_tx, mut rec_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        urls: cluster.urls(),
        window: cli.window,
        period: Duration::from_secs_f64(1.0 / cli.rate),
        stall: cli.stall,
        recovery_share: cli.recovery_share,
        phase: phase_rx,
        counters: Counters::default(),
        records: rec_tx,
    });
    let mut client_tasks = tokio::task::JoinSet::new();
    for id in 0..cli.clients {
        client_tasks.spawn(clients::run(id, shared.clone()));
        if id % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let missing =
        wait_linked(&cluster, Some((&shared.counters, cli.clients)), Instant::now() + Duration::from_secs(30)).await;
    anyhow::ensure!(missing.is_empty(), "clients not connected within 30 s: {missing:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = resources(&cluster).await;
    log(&format!(
        "{} clients connected, traffic flowing ({} replies so far); faults start",
        cli.clients,
        shared.counters.replies.load(Ordering::Relaxed)
    ));

    // Chaos.
    let journal = Arc::new(Journal::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let side = tokio::spawn({
        let (shared, journal, cluster, stop) = (shared.clone(), journal.clone(), cluster.clone(), stop_rx.clone());
        async move { tokio::join!(progress(shared, journal.clone(), stop.clone()), watchdog(cluster, journal, stop)) }
    });
    let chaos_started = Instant::now();
    let options = ChaosOptions {
        seed,
        interval: (cli.fault_min, cli.fault_max),
        stop_for: (cli.stop_min, cli.stop_max),
        kinds: cli.faults.clone(),
        segment: cli.segment,
        grace: cli.grace,
    };
    chaos::run(cluster.clone(), options, chaos_started + cli.duration, journal.clone()).await;
    let last_fault = journal.last_end().unwrap_or_else(Instant::now);
    log(&format!("faults over ({} injected); waiting for recovery", journal.faults.lock().expect("journal").len()));

    // Recovery after the last fault.
    let missing = wait_linked(&cluster, Some((&shared.counters, cli.clients)), last_fault + cli.recovery_bound).await;
    let final_recovery = last_fault.elapsed();
    if missing.is_empty() {
        log(&format!(
            "everything linked and every client connected {:.1}s after the last fault",
            final_recovery.as_secs_f64()
        ));
    } else {
        verdict.fail(format!(
            "not recovered {:.1}s after the last fault (bound {:?}): {missing:?}{}",
            final_recovery.as_secs_f64(),
            cli.recovery_bound,
            link_report(&cluster).await
        ));
        // Give it more time so the rest of the checks mean something.
        let more =
            wait_linked(&cluster, Some((&shared.counters, cli.clients)), Instant::now() + Duration::from_secs(30))
                .await;
        if !more.is_empty() {
            verdict.fail(format!("still not recovered 30 s later: {more:?}"));
        }
    }
    let _ = stop_tx.send(true);
    let _ = side.await;
    // A few seconds of calm traffic, then the final resource sample (same load as the baseline).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = resources(&cluster).await;

    // Drain.
    let _ = phase_tx.send(Phase::Draining);
    let drained = tokio::time::timeout(cli.stall, async { while client_tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        let _ = phase_tx.send(Phase::Done);
        while client_tasks.join_next().await.is_some() {}
    }
    log("clients drained and closed");

    // Gateways: no client left, nothing unacknowledged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut gw_metrics = HashMap::new();
    for g in &cluster.gateways {
        loop {
            let m = cluster.metrics(g).await;
            let done = m.as_ref().is_ok_and(|m| {
                m.get("gw_connections") == 0.0
                    && m.get("gw_relay_clients") == 0.0
                    && m.get("gw_events_unacknowledged") == 0.0
            });
            if done || Instant::now() > deadline {
                match m {
                    Ok(m) if !done => verdict.fail(format!(
                        "{g}: {} connections, {} relayed sockets and {} unacknowledged events left after every client \
                         closed",
                        m.get("gw_connections"),
                        m.get("gw_relay_clients"),
                        m.get("gw_events_unacknowledged")
                    )),
                    Err(e) => verdict.fail(format!("{g}: {e:#}")),
                    Ok(m) => {
                        gw_metrics.insert(g.name.clone(), m);
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Stop everything gracefully: workers, gateways, register.
    for n in cluster.workers.iter().chain(&cluster.gateways).chain([&cluster.register]) {
        let mut p = n.op.lock().await;
        let t = Instant::now();
        match cluster.stop(n, &mut p, Signal::SIGTERM, cli.grace + Duration::from_secs(10)).await {
            Ok((status, killed)) if killed || !status.success() => verdict.fail(format!(
                "{n}: final graceful stop {} ({status}) after {:.1}s",
                if killed { "overran and was killed" } else { "failed" },
                t.elapsed().as_secs_f64()
            )),
            Ok(_) => {}
            Err(e) => verdict.fail(format!("{n}: final stop: {e:#}")),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let strays = cluster.all_processes();
    if !strays.is_empty() {
        verdict.fail(format!("processes still running after every node stopped: {strays:?}"));
        cluster.kill_all();
    }

    // Records of the clients.
    let mut records = Vec::new();
    while let Ok(r) = rec_rx.try_recv() {
        records.push(r);
    }
    let faults: Vec<Fault> = journal.faults.lock().expect("journal").clone();
    let problems: Vec<String> = journal.problems.lock().expect("journal").clone();
    for p in &problems {
        verdict.fail(format!("during the faults: {p}"));
    }
    let start = *crate::START.get().expect("set in main");
    let start_wall = *crate::START_WALL.get().expect("set in main");
    let timeouts: Vec<LinkTimeout> =
        cluster.nodes().flat_map(|n| crate::logs::link_timeouts(&n.name, &n.log, start, start_wall)).collect();
    let checked = check_records(&records, &faults, &timeouts, &cli, &mut verdict);
    let dups_after_timeouts = checked.dups_after_timeouts;
    check_logs(&cluster, &faults, &mut verdict);
    check_resources(&baseline, &after, &mut verdict);

    // Totals.
    let c = &shared.counters;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    println!("== soak totals (seed {seed}, {} clients, faults for {:?})", cli.clients, cli.duration);
    println!("messages sent            {}", g(&c.sent));
    println!("replies (first)          {}", g(&c.replies));
    println!(
        "duplicates               {}{}",
        g(&c.duplicates),
        if dups_after_timeouts > 0 {
            format!(" ({dups_after_timeouts} outside faults, after a link heartbeat timeout)")
        } else {
            String::new()
        }
    );
    let spurious = timeouts
        .iter()
        .filter(|t| {
            !faults.iter().any(|f| {
                f.start <= t.at + Duration::from_secs(1)
                    && t.at <= f.end.unwrap_or(t.at) + cli.heartbeat_timeout * 2 + Duration::from_secs(3)
            })
        })
        .collect::<Vec<_>>();
    println!(
        "link heartbeat timeouts  {} ({} outside any fault{})",
        timeouts.len(),
        spurious.len(),
        spurious.first().map(|t| format!(", first on {} at {:.1}s", t.node, since_start(t.at))).unwrap_or_default()
    );
    let lost: u64 = checked.breaks.values().map(|t| t.lost + t.lost_unread).sum();
    println!(
        "lost at broken connections {} (over {} broken connections; by fault below)",
        lost,
        records.iter().filter(|r| matches!(r, Record::Broken { .. })).count(),
    );
    let not_recovered = c.not_recovered.lock().expect("counters");
    println!(
        "recovery                 {} of {} clients; resumed {} (replayed {} messages, sent {} again); not recovered {} ({})",
        (0..cli.clients).filter(|i| shared.recovers(*i)).count(),
        cli.clients,
        g(&c.resumed),
        g(&c.replayed),
        g(&c.resent),
        not_recovered.values().sum::<u64>(),
        not_recovered.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
    );
    drop(not_recovered);
    println!("breaks by fault          breaks resumed unsure  not-recovered (by reason)  new ended  lost unread dups");
    for (kind, t) in &checked.breaks {
        let name = kind.map_or_else(|| "(no fault: stalled or unexplained)".to_string(), |k| k.to_string());
        println!(
            "  {name:<32} {:>5} {:>7} {:>6}  {:<25} {:>4} {:>5} {:>5} {:>6} {:>4}",
            t.breaks,
            t.resumed,
            t.resumed_unsure,
            format!(
                "{}{}",
                t.not_recovered.values().sum::<u64>(),
                if t.not_recovered.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        t.not_recovered.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
                    )
                }
            ),
            t.new,
            t.ended,
            t.lost,
            t.lost_unread,
            t.duplicates
        );
    }
    if !checked.not_resumed_after_restart.is_empty() {
        println!("not resumed after a graceful gateway restart, e.g.:");
        for l in checked.not_resumed_after_restart.iter().take(8) {
            println!("  {l}");
        }
    }
    println!(
        "connections              {} ({} after a break, {} going back to the home gateway)",
        g(&c.connections),
        g(&c.connections).saturating_sub(cli.clients as u64 + g(&c.moves_home)),
        g(&c.moves_home)
    );
    println!("longest reconnection     {:.2}s", g(&c.max_reconnect_us) as f64 / 1e6);
    println!("longest reply latency    {:.2}s", g(&c.max_latency_us) as f64 / 1e6);
    let counts = journal.counts();
    println!("faults injected          {}", counts.values().sum::<usize>());
    let mut per_kind: BTreeMap<FaultKind, Duration> = BTreeMap::new();
    for f in &faults {
        if let Some(r) = f.recovered {
            let e = per_kind.entry(f.kind).or_default();
            *e = (*e).max(r);
        }
    }
    for (kind, n) in &counts {
        let unrecovered = faults.iter().filter(|f| f.kind == *kind && f.recovered.is_none()).count();
        println!(
            "  {kind:<32} {n:>4}   longest recovery {:.2}s{}",
            per_kind.get(kind).map_or(0.0, |d| d.as_secs_f64()),
            if unrecovered > 0 {
                format!(" ({unrecovered} not linked within 30 s while other faults ran)")
            } else {
                String::new()
            }
        );
    }
    let longest = faults.iter().filter_map(|f| f.recovered.map(|r| (r, f))).max_by_key(|(r, _)| *r);
    if let Some((r, f)) = longest {
        println!("longest recovery         {:.2}s ({} on {})", r.as_secs_f64(), f.kind, f.node);
    }
    println!("recovery after last fault {:.2}s (bound {:?})", final_recovery.as_secs_f64(), cli.recovery_bound);
    for (name, m) in &gw_metrics {
        println!(
            "{name} (since its last start): redelivered {} dropped slow_consumer {} client_gone {} no_worker {}; \
             held clients left {}, resumed {}, relayed {}, adopted {}",
            m.get("gw_events_redelivered_total"),
            m.labelled("gw_dropped_total", "slow_consumer"),
            m.labelled("gw_dropped_total", "client_gone"),
            m.labelled("gw_dropped_total", "no_worker"),
            m.get("gw_recovery_held_clients"),
            m.get("gw_recovery_resumed_total"),
            m.get("gw_relay_opened_total"),
            m.get("gw_handover_adopted_clients_total"),
        );
    }
    println!("logs and configs         {}", dir.display());
    if verdict.violations.is_empty() {
        println!("== PASS");
        if !cli.keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(true)
    } else {
        println!("== FAIL: {} violation(s)", verdict.violations.len());
        for v in verdict.violations.iter().take(40) {
            println!("  - {v}");
        }
        if verdict.violations.len() > 40 {
            println!("  … and {} more", verdict.violations.len() - 40);
        }
        Ok(false)
    }
}

/// What came of the breaks one kind of fault explains (or of unexplained ones).
#[derive(Debug, Default)]
struct BreakTotals {
    breaks: u64,
    /// Resumed as the same client, the gateway saying how many messages it had read.
    resumed: u64,
    /// Resumed, the gateway not saying how many messages it had read.
    resumed_unsure: u64,
    not_recovered: BTreeMap<String, u64>,
    /// Clients without recovery: a new client after the break.
    new: u64,
    /// The soak ended before the client reconnected.
    ended: u64,
    /// Messages lost with the break (unanswered when a client could not resume or had no
    /// recovery) ...
    lost: u64,
    /// ... and unanswered when a client resumed without knowing whether the gateway read them,
    /// never answered.
    lost_unread: u64,
    duplicates: u64,
}

/// Outcome of [`check_records`].
#[derive(Debug, Default)]
struct Checked {
    /// By the kind of fault that explains the break (`None`: none does, a violation unless the
    /// client stalled, itself a violation).
    breaks: BTreeMap<Option<FaultKind>, BreakTotals>,
    dups_after_timeouts: u64,
    /// Clients not resumed after a graceful gateway restart, in words.
    not_resumed_after_restart: Vec<String>,
}

/// Matches duplicates and broken connections against the faults that may explain them, and
/// totals what came of the breaks by the kind of fault that broke them.
/// A duplicate is explained by a fault that may cause one, or else by a gateway↔worker link that
/// was declared dead for silence (a stall of the machine can do that; the event is redelivered as
/// after a crash): those are counted apart, not failed.
/// A break is explained by a kill or graceful restart of the gateway the connection was to, or,
/// for a connection that may have been relayed to its home on another gateway, by a fault of any
/// gateway. A client that could not resume after a graceful restart of its gateway, while no
/// other node but workers was harmed, is a violation: an isolated rolling restart loses nobody.
fn check_records(
    records: &[Record],
    faults: &[Fault],
    timeouts: &[LinkTimeout],
    cli: &Cli,
    verdict: &mut Verdict,
) -> Checked {
    // A redelivery follows the fault within a heartbeat timeout, or (a stopped gateway) once the
    // workers have linked again after it continued.
    let dup_slack = cli.heartbeat_timeout * 2 + Duration::from_secs(5);
    let explains_dup = |at: Instant| {
        faults.iter().find(|f| f.kind.may_duplicate() && f.start <= at && at <= f.end.unwrap_or(at) + dup_slack)
    };
    let after_timeout =
        |at: Instant| timeouts.iter().any(|t| t.at <= at + Duration::from_secs(1) && at <= t.at + dup_slack);
    let around = |f: &Fault, at: Instant| {
        f.start <= at + Duration::from_secs(1) && at <= f.end.unwrap_or(at) + Duration::from_secs(5)
    };
    // The latest fault that began before the break (a restart followed by a kill of the same
    // gateway within seconds: the kill), a graceful restart first for a 1012 close.
    let explains_break = |brk: &Break| {
        let graceful = brk.reason.contains("1012");
        faults
            .iter()
            .filter(|f| f.gateway == Some(brk.gateway) && f.kind.breaks_clients() && around(f, brk.at))
            .max_by_key(|f| ((f.kind == FaultKind::GatewayRestart) == graceful, f.start))
            .or_else(|| {
                // Relayed: its home may have been killed, restarted or stopped.
                brk.relayed
                    .then(|| faults.iter().filter(|f| f.gateway.is_some() && around(f, brk.at)).max_by_key(|f| f.start))
                    .flatten()
            })
    };
    let mut out = Checked::default();
    let mut unexplained_dups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut unexplained_breaks = Vec::new();
    let mut isolated = Vec::new();
    for r in records {
        match r {
            Record::Violation { client, at, what } => {
                verdict.fail(format!("client {client} at {:.1}s: {what}", since_start(*at)));
            }
            Record::Duplicate { client, seq, gateway, at } => {
                if let Some(f) = explains_dup(*at) {
                    out.breaks.entry(Some(f.kind)).or_default().duplicates += 1;
                    continue;
                }
                if after_timeout(*at) {
                    out.dups_after_timeouts += 1;
                    continue;
                }
                out.breaks.entry(None).or_default().duplicates += 1;
                unexplained_dups
                    .entry(*client)
                    .or_default()
                    .push(format!("{seq} on gw-{gateway} at {:.1}s", since_start(*at)));
            }
            Record::Broken { brk, unreplied, lost, outcome, detail, resolved } => {
                let Break { client, gateway, at, reason, relayed } = &**brk;
                if *unreplied > cli.window {
                    verdict.fail(format!(
                        "client {client}: {unreplied} messages lost with one connection (window {})",
                        cli.window
                    ));
                }
                let fault = explains_break(brk);
                let t = out.breaks.entry(fault.map(|f| f.kind)).or_default();
                t.breaks += 1;
                t.lost += *lost as u64;
                match outcome {
                    Outcome::Resumed { accepted: true } => t.resumed += 1,
                    Outcome::Resumed { accepted: false } => t.resumed_unsure += 1,
                    Outcome::NotRecovered(reason) => *t.not_recovered.entry(reason.clone()).or_default() += 1,
                    Outcome::New => t.new += 1,
                    Outcome::Ended => t.ended += 1,
                }
                if reason != "stalled" && fault.is_none() {
                    unexplained_breaks.push(format!(
                        "client {client} on gw-{gateway}{} at {:.1}s: {reason} ({unreplied} unanswered)",
                        if *relayed { " (relayed)" } else { "" },
                        since_start(*at)
                    ));
                }
                if let (Some(f), Outcome::NotRecovered(why)) = (fault, outcome)
                    && f.kind == FaultKind::GatewayRestart
                {
                    out.not_resumed_after_restart.push(format!(
                        "client {client} on gw-{gateway}{} at {:.1}s ({reason}), {why} at {:.1}s ({detail})",
                        if *relayed { " (relayed)" } else { "" },
                        since_start(*at),
                        since_start(*resolved)
                    ));
                    let others = faults.iter().any(|o| {
                        !std::ptr::eq(o, f)
                            && (o.gateway.is_some() || o.node == "register")
                            && o.start <= *resolved + Duration::from_secs(1)
                            && f.start <= o.end.unwrap_or(*resolved) + Duration::from_secs(1)
                    });
                    if !others {
                        isolated.push(format!(
                            "client {client} on gw-{gateway} at {:.1}s ({reason}): not recovered ({why}) at {:.1}s",
                            since_start(*at),
                            since_start(*resolved)
                        ));
                    }
                }
            }
            Record::Lost { brk, n } => {
                out.breaks.entry(explains_break(brk).map(|f| f.kind)).or_default().lost_unread += *n as u64;
            }
        }
    }
    if !unexplained_dups.is_empty() {
        let n: usize = unexplained_dups.values().map(Vec::len).sum();
        let sample: Vec<String> = unexplained_dups.iter().take(5).map(|(c, s)| format!("client {c}: {s:?}")).collect();
        verdict.fail(format!("{n} duplicate replies outside any fault that may cause them: {}", sample.join("; ")));
    }
    if !unexplained_breaks.is_empty() {
        verdict.fail(format!(
            "{} client connections broke without their gateway being killed or restarted, e.g. {}",
            unexplained_breaks.len(),
            unexplained_breaks.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    if !isolated.is_empty() {
        verdict.fail(format!(
            "{} client(s) with recovery not resumed after a graceful gateway restart while no other gateway nor \
             the register was harmed, e.g. {}",
            isolated.len(),
            isolated.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    out
}

/// Seconds since the soak started (the time stamps of the progress lines).
pub fn since_start(at: Instant) -> f64 {
    crate::START.get().map_or(0.0, |s| at.saturating_duration_since(*s).as_secs_f64())
}

/// No panic anywhere; a worker process died only when the soak killed it.
fn check_logs(cluster: &Cluster, faults: &[Fault], verdict: &mut Verdict) {
    for n in cluster.nodes() {
        let text = std::fs::read_to_string(&n.log).unwrap_or_default();
        let panics: Vec<&str> = text.lines().filter(|l| l.contains("panicked")).collect();
        if !panics.is_empty() {
            verdict.fail(format!("{n}: {} panic line(s) in {}, first: {}", panics.len(), n.log.display(), panics[0]));
        }
        if n.kind == Kind::Worker {
            let deaths = text.lines().filter(|l| l.contains("worker process died; restarting it")).count();
            let kills = faults.iter().filter(|f| f.node == n.name && f.kind == FaultKind::WorkerKill).count();
            if deaths != kills {
                verdict.fail(format!("{n}: {deaths} worker process deaths in the log but the soak killed {kills}"));
            }
        }
    }
}

/// Long-lived processes (same pid before and after) back near their baseline; worker processes
/// that replaced killed ones near the baseline of the one they replaced.
fn check_resources(
    before: &BTreeMap<String, (Option<Sample>, Option<Sample>)>,
    after: &BTreeMap<String, (Option<Sample>, Option<Sample>)>,
    verdict: &mut Verdict,
) {
    const FD_SLACK: usize = 16;
    const RSS_SLACK: u64 = 48 << 20;
    println!("== resources (baseline -> after the faults; fds exclude client connections)");
    for (name, (b_main, b_child)) in before {
        let (a_main, a_child) = after.get(name).copied().unwrap_or((None, None));
        for (what, b, a) in [("main", b_main, a_main), ("worker process", b_child, a_child)] {
            let (Some(b), Some(a)) = (b, a) else { continue };
            let same = b.pid == a.pid;
            let fd_b = b.fds.saturating_sub(b.conns);
            let fd_a = a.fds.saturating_sub(a.conns);
            println!(
                "  {name:<9} {what:<15} pid {} -> {}{}  fds {fd_b} -> {fd_a}  rss {:.1} -> {:.1} MiB",
                b.pid,
                a.pid,
                if same { " (long-lived)" } else { "" },
                b.rss as f64 / 1048576.0,
                a.rss as f64 / 1048576.0
            );
            if fd_a > fd_b + FD_SLACK {
                verdict.fail(format!("{name} {what}: {fd_a} file descriptors after the faults, {fd_b} before"));
            }
            let per_conn = (a.conns.saturating_sub(b.conns) as u64) * 64 * 1024;
            if same && a.rss > b.rss * 2 + RSS_SLACK + per_conn {
                verdict.fail(format!(
                    "{name} {what}: resident memory {:.1} MiB after the faults, {:.1} MiB before",
                    a.rss as f64 / 1048576.0,
                    b.rss as f64 / 1048576.0
                ));
            }
        }
    }
}
