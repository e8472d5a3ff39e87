//! The process supervisor of a business-worker application: the master process of `start`. It
//! runs `count` worker processes, restarts one that crashes (within a restart budget), and on
//! reload (SIGUSR1 / `reload`) replaces them one at a time with the binary now on disk: start the
//! new process, wait until it is linked to every gateway, then stop the old one gracefully (it
//! drains, finishes what it received and exits). Gateways keep every client connected throughout.
//!
//! A worker process (`child --index N --generation G`) tells the master it is ready by printing
//! [`READY_LINE`] ([`announce_ready`]) and stops when the master is gone
//! ([`stop_when_orphaned`]). Its `status` row says whether it can serve: one whose state starts
//! with [`NOT_LINKED`] makes the master's `/health` answer 503 with that state.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gw_config::WorkerConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::{self, Request, Response};
use crate::pidfile::{self, Sig};
use crate::report::{own_rss, with_label};
use crate::totals::Totals;
use crate::{BoxFuture, MetricFamily, Node, ProcessStatus, RunContext};

/// Line a worker process prints on stdout once it is linked to every gateway.
pub const READY_LINE: &str = "GW-WORKER-READY";

/// How the `status` state of a worker process that cannot serve begins (`not linked:
/// authentication failed (check secret)`): the master is unhealthy while one says so.
pub const NOT_LINKED: &str = "not linked";

/// Why the master stopped, or a reload failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The master cannot find its own executable, to start worker processes from.
    #[error("cannot find this program's executable: {0}")]
    Executable(#[source] std::io::Error),
    /// A worker process could not be started.
    #[error("cannot start worker process {index}: {source}")]
    Spawn {
        /// Its slot.
        index: usize,
        /// Why.
        source: std::io::Error,
    },
    /// Worker processes crashed more often than the restart budget allows.
    #[error(
        "worker processes crashed {crashes} times within {window:?} (restart_limit = {limit}); giving up. Last: worker {index} exited with {status}"
    )]
    CrashLoop {
        /// Crashes within the window.
        crashes: usize,
        /// `restart_window`.
        window: Duration,
        /// `restart_limit`.
        limit: usize,
        /// The slot of the last crashed process.
        index: usize,
        /// How it exited.
        status: String,
    },
    /// A new process of a reload did not print its ready line in time (it was killed).
    #[error("worker process {index} did not become ready within {timeout:?}")]
    NotReady {
        /// Its slot.
        index: usize,
        /// How long it had.
        timeout: Duration,
    },
    /// A new process of a reload exited before it was ready.
    #[error("new worker process {index} exited before it was ready ({status}); is the new binary broken?")]
    ExitedBeforeReady {
        /// Its slot.
        index: usize,
        /// How it exited.
        status: String,
    },
    /// The master stopped watching its processes (it is shutting down).
    #[error("the master stopped watching its worker processes")]
    Stopped,
}

/// Prints [`READY_LINE`]: what a worker process does once it is linked to every gateway.
pub fn announce_ready() {
    println!("{READY_LINE}");
}

/// Cancels `shutdown` when this process's parent (the master) is gone, even killed with
/// `kill -9`: a worker process stops gracefully instead of serving on unsupervised.
pub fn stop_when_orphaned(shutdown: CancellationToken) {
    let master = nix::unistd::getppid();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if nix::unistd::getppid() != master {
                tracing::warn!("master process gone; stopping this worker process");
                shutdown.cancel();
                return;
            }
        }
    });
}

/// How long a new process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum ChildEvent {
    Ready { index: usize, generation: u64 },
    Exited { index: usize, generation: u64, status: String },
}

#[derive(Debug, Clone)]
struct Slot {
    index: usize,
    generation: u64,
    pid: u32,
    socket: PathBuf,
}

/// State shared with `status`.
#[derive(Debug, Default)]
struct Shared {
    slots: Vec<Slot>,
    state: String,
}

/// The master as a [`Node`].
#[derive(Debug)]
struct MasterNode {
    name: String,
    shared: Arc<Mutex<Shared>>,
    reloads: AtomicU64,
    /// Reloads that stopped half-way (the remaining old processes kept running).
    reload_failures: AtomicU64,
    /// How long the last completed reload took, in microseconds (what `reload` reports).
    last_reload_micros: AtomicU64,
    restarts: AtomicU64,
    /// What every process generation counted, so counters survive reloads and restarts.
    totals: Totals,
    /// The states of the processes that said they cannot serve ([`NOT_LINKED`]), as last
    /// sampled: `<name>-<index>: <state>`.
    problems: Mutex<Vec<String>>,
}

/// How often the master samples its processes' counters (what a crashed process counted since
/// its last sample is lost).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl MasterNode {
    fn label(&self, slot: &Slot) -> String {
        format!("{}-{}", self.name, slot.index)
    }

    /// Asks one process for its metrics and records them; false if it did not answer.
    async fn sample(&self, slot: &Slot) -> bool {
        match control::ask(&slot.socket, Request::Metrics, Duration::from_secs(2)).await {
            Ok(Response::Metrics(families)) => {
                self.totals.record(&self.label(slot), slot.generation, families);
                true
            }
            _ => false,
        }
    }

    /// Asks every process for its `status` row and keeps the states of those that cannot serve.
    async fn sample_health(&self) {
        let slots = self.shared.lock().expect("master lock").slots.clone();
        let mut problems = Vec::new();
        for slot in slots {
            if let Ok(Response::Status(rows)) =
                control::ask(&slot.socket, Request::Status, Duration::from_secs(2)).await
            {
                problems.extend(
                    rows.into_iter()
                        .filter(|r| r.state.starts_with(NOT_LINKED))
                        .map(|r| format!("{}: {}", r.name, r.state)),
                );
            }
        }
        *self.problems.lock().expect("problems lock") = problems;
    }

    /// Samples a retiring process until it is gone, so the work it finishes while draining counts.
    async fn follow(self: Arc<Self>, slot: Slot) {
        while self.sample(&slot).await {
            tokio::time::sleep(SAMPLE_EVERY / 5).await;
        }
    }
}

impl Node for MasterNode {
    fn status(&self) -> BoxFuture<'_, Vec<ProcessStatus>> {
        Box::pin(async move {
            let (slots, state) = {
                let s = self.shared.lock().expect("master lock");
                (s.slots.clone(), s.state.clone())
            };
            let mut rows = vec![ProcessStatus {
                pid: std::process::id(),
                role: "master".into(),
                name: self.name.clone(),
                memory: own_rss(),
                state: format!("{state}, {} process(es)", slots.len()),
                ..Default::default()
            }];
            for slot in slots {
                match control::ask(&slot.socket, Request::Status, Duration::from_secs(2)).await {
                    Ok(Response::Status(mut child)) => rows.append(&mut child),
                    _ => rows.push(ProcessStatus {
                        pid: slot.pid,
                        role: "worker".into(),
                        name: format!("{}-{}", self.name, slot.index),
                        state: "not answering".into(),
                        ..Default::default()
                    }),
                }
            }
            rows
        })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        Box::pin(async move {
            let slots = self.shared.lock().expect("master lock").slots.clone();
            let mut families = vec![
                MetricFamily::gauge("gw_worker_processes", "Worker processes run by the master.", slots.len() as f64),
                MetricFamily::counter(
                    "gw_worker_reloads_total",
                    "Completed reloads.",
                    self.reloads.load(Ordering::Acquire),
                ),
                MetricFamily::counter(
                    "gw_worker_reload_failures_total",
                    "Reloads that failed; the remaining old processes kept running.",
                    self.reload_failures.load(Ordering::Acquire),
                ),
                MetricFamily::gauge(
                    "gw_worker_last_reload_seconds",
                    "How long the last completed reload took.",
                    self.last_reload_micros.load(Ordering::Relaxed) as f64 / 1e6,
                ),
                MetricFamily::counter(
                    "gw_worker_restarts_total",
                    "Worker processes restarted after a crash.",
                    self.restarts.load(Ordering::Relaxed),
                ),
            ];
            for slot in slots {
                // A process that does not answer keeps its last totals rather than vanishing.
                self.sample(&slot).await;
                let mut child = self.totals.report(&self.label(&slot));
                with_label(&mut child, &format!("process=\"{}\"", self.label(&slot)));
                families.extend(child);
            }
            families
        })
    }

    fn requests_total(&self) -> u64 {
        0
    }

    fn healthy(&self) -> bool {
        self.health().is_ok()
    }

    fn health(&self) -> Result<(), String> {
        let problems = self.problems.lock().expect("problems lock");
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

struct Master {
    config: WorkerConfig,
    exe: PathBuf,
    config_path: Option<PathBuf>,
    node: Arc<MasterNode>,
    events_tx: mpsc::UnboundedSender<ChildEvent>,
    events: mpsc::UnboundedReceiver<ChildEvent>,
    crashes: VecDeque<Instant>,
    next_generation: u64,
    /// Children being stopped on purpose (index, generation): their exit is not a crash.
    retiring: Vec<(usize, u64)>,
}

/// Runs the master until shutdown; returns an error if the restart budget is exhausted.
pub async fn run(config: WorkerConfig, ctx: RunContext) -> Result<(), SupervisorError> {
    // The path now, before a reload replaces the file: re-running it later runs the new binary.
    let exe = std::env::current_exe().map_err(SupervisorError::Executable)?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let node = Arc::new(MasterNode {
        name: config.name.clone(),
        shared: Arc::new(Mutex::new(Shared { slots: Vec::new(), state: "starting".into() })),
        reloads: AtomicU64::new(0),
        reload_failures: AtomicU64::new(0),
        last_reload_micros: AtomicU64::new(0),
        restarts: AtomicU64::new(0),
        totals: Totals::default(),
        problems: Mutex::new(Vec::new()),
    });
    ctx.publish(node.clone());
    let sampler = tokio::spawn({
        let node = node.clone();
        async move {
            loop {
                tokio::time::sleep(SAMPLE_EVERY).await;
                let _ = node.metrics().await;
                node.sample_health().await;
            }
        }
    });
    let mut master = Master {
        exe,
        config_path: ctx.config_path.clone(),
        node,
        events_tx,
        events,
        crashes: VecDeque::new(),
        next_generation: 1,
        retiring: Vec::new(),
        config,
    };
    tracing::info!(count = master.config.count, "business worker master starting its worker processes");
    for index in 0..master.config.count {
        let generation = master.generation();
        let slot = master.spawn(index, generation)?;
        master.node.shared.lock().expect("master lock").slots.push(slot);
    }
    master.set_state("running");
    let result = loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break Ok(()),
            _ = ctx.reload.notified() => {
                let started = Instant::now();
                match master.reload().await {
                    Ok(()) => {
                        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                        master.node.last_reload_micros.store(micros, Ordering::Relaxed);
                        // Release: whoever sees the new count sees this reload's duration.
                        master.node.reloads.fetch_add(1, Ordering::Release);
                        tracing::info!(seconds = micros as f64 / 1e6, "reload complete");
                        master.set_state("running");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; the remaining old processes keep running");
                        master.set_state(&format!("running (last reload failed: {e})"));
                        // After the state: whoever sees the count reads why in `status`.
                        master.node.reload_failures.fetch_add(1, Ordering::Release);
                    }
                }
            }
            ev = master.events.recv() => {
                let Some(ev) = ev else { break Ok(()) };
                if let Err(e) = master.on_event(ev) {
                    break Err(e);
                }
            }
        }
    };
    master.set_state("stopping");
    sampler.abort();
    master.stop_all().await;
    result
}

impl Master {
    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation - 1
    }

    fn set_state(&self, state: &str) {
        self.node.shared.lock().expect("master lock").state = state.to_string();
    }

    fn socket(&self, index: usize, generation: u64) -> PathBuf {
        self.config.process.control_socket(&format!("{}-{index}.{}.{generation}", self.config.name, std::process::id()))
    }

    fn spawn(&self, index: usize, generation: u64) -> Result<Slot, SupervisorError> {
        let mut cmd = tokio::process::Command::new(&self.exe);
        if let Some(p) = &self.config_path {
            cmd.arg("--config").arg(p);
        }
        cmd.args(["child", "--index", &index.to_string(), "--generation", &generation.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|source| SupervisorError::Spawn { index, source })?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(index, generation, pid, "worker process started");
        let stdout = child.stdout.take();
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            if let Some(out) = stdout {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.trim() == READY_LINE {
                        let _ = tx.send(ChildEvent::Ready { index, generation });
                    }
                }
            }
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = tx.send(ChildEvent::Exited { index, generation, status });
        });
        Ok(Slot { index, generation, pid, socket: self.socket(index, generation) })
    }

    /// Handles an event outside a reload: a crash is restarted unless the budget is spent.
    fn on_event(&mut self, ev: ChildEvent) -> Result<(), SupervisorError> {
        match ev {
            ChildEvent::Ready { index, generation } => {
                tracing::info!(index, generation, "worker process ready");
                Ok(())
            }
            ChildEvent::Exited { index, generation, status } => {
                if let Some(pos) = self.retiring.iter().position(|r| *r == (index, generation)) {
                    self.retiring.remove(pos);
                    return Ok(());
                }
                let current = self
                    .node
                    .shared
                    .lock()
                    .expect("master lock")
                    .slots
                    .iter()
                    .any(|s| s.index == index && s.generation == generation);
                if !current {
                    return Ok(());
                }
                let now = Instant::now();
                self.crashes.push_back(now);
                while self.crashes.front().is_some_and(|t| now.duration_since(*t) > self.config.restart_window) {
                    self.crashes.pop_front();
                }
                if self.crashes.len() > self.config.restart_limit {
                    return Err(SupervisorError::CrashLoop {
                        crashes: self.crashes.len(),
                        window: self.config.restart_window,
                        limit: self.config.restart_limit,
                        index,
                        status,
                    });
                }
                tracing::error!(index, generation, status = %status, "worker process died; restarting it");
                self.node.restarts.fetch_add(1, Ordering::Relaxed);
                let generation = self.generation();
                let slot = self.spawn(index, generation)?;
                let mut shared = self.node.shared.lock().expect("master lock");
                if let Some(s) = shared.slots.iter_mut().find(|s| s.index == index) {
                    *s = slot;
                }
                Ok(())
            }
        }
    }

    /// Replaces every process, one at a time.
    async fn reload(&mut self) -> Result<(), SupervisorError> {
        let count = self.node.shared.lock().expect("master lock").slots.len();
        tracing::info!(count, binary = %self.exe.display(), "reload: replacing worker processes one at a time");
        for i in 0..count {
            self.set_state(&format!("reloading {}/{count}", i + 1));
            let old = self.node.shared.lock().expect("master lock").slots[i].clone();
            let generation = self.generation();
            let new = self.spawn(old.index, generation)?;
            // Wait for the new process to be linked to every gateway.
            let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
            loop {
                let ev = tokio::time::timeout_at(deadline, self.events.recv()).await;
                match ev {
                    Err(_) => {
                        let _ = pidfile::signal(new.pid, Sig::SIGKILL);
                        self.retiring.push((new.index, new.generation));
                        return Err(SupervisorError::NotReady { index: new.index, timeout: READY_TIMEOUT });
                    }
                    Ok(None) => return Err(SupervisorError::Stopped),
                    Ok(Some(ChildEvent::Ready { index, generation }))
                        if index == new.index && generation == new.generation =>
                    {
                        break;
                    }
                    Ok(Some(ChildEvent::Exited { index, generation, status }))
                        if index == new.index && generation == new.generation =>
                    {
                        return Err(SupervisorError::ExitedBeforeReady { index, status });
                    }
                    Ok(Some(other)) => self.on_event(other)?,
                }
            }
            // Swap, then retire the old one: it drains, finishes what it has and exits.
            self.node.shared.lock().expect("master lock").slots[i] = new;
            self.retiring.push((old.index, old.generation));
            let follow = tokio::spawn(self.node.clone().follow(old.clone()));
            self.stop_child(&old).await;
            follow.abort();
        }
        Ok(())
    }

    async fn stop_child(&mut self, slot: &Slot) {
        let _ = pidfile::signal(slot.pid, Sig::SIGTERM);
        let deadline = tokio::time::Instant::now() + self.config.grace_period + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => {
                    tracing::warn!(pid = slot.pid, "worker process did not stop within its grace period; killing it");
                    let _ = pidfile::signal(slot.pid, Sig::SIGKILL);
                    return;
                }
                Ok(None) => return,
                Ok(Some(ChildEvent::Exited { index, generation, .. }))
                    if index == slot.index && generation == slot.generation =>
                {
                    self.retiring.retain(|r| *r != (index, generation));
                    tracing::info!(index, generation, "old worker process exited");
                    return;
                }
                Ok(Some(other)) => {
                    if let Err(e) = self.on_event(other) {
                        tracing::error!(error = %e, "during reload");
                    }
                }
            }
        }
    }

    async fn stop_all(&mut self) {
        let slots = std::mem::take(&mut self.node.shared.lock().expect("master lock").slots);
        for s in &slots {
            self.retiring.push((s.index, s.generation));
            let _ = pidfile::signal(s.pid, Sig::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + self.config.grace_period + Duration::from_secs(3);
        let mut left: Vec<(usize, u64)> = slots.iter().map(|s| (s.index, s.generation)).collect();
        while !left.is_empty() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ChildEvent::Exited { index, generation, .. })) => left.retain(|x| *x != (index, generation)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        for s in slots.iter().filter(|s| left.contains(&(s.index, s.generation))) {
            tracing::warn!(pid = s.pid, "worker process did not stop in time; killing it");
            let _ = pidfile::signal(s.pid, Sig::SIGKILL);
        }
    }
}
