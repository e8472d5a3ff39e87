//! Running a node in the foreground: pid file, control socket, admin endpoint, signals, rate
//! sampling, and a hard deadline on graceful stop.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// Which process of a node this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRole {
    /// The process started by `start` (for the business worker: the master).
    Main,
    /// A business-worker process run by the master.
    Child {
        /// Its slot among the master's `count` processes.
        index: usize,
        /// The reload generation that started it.
        generation: u64,
    },
}

/// What a daemon's `run` gets from the runner.
#[derive(Clone)]
pub struct RunContext {
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Notified on SIGUSR1 (reload).
    pub reload: Arc<Notify>,
    /// Which process of the node this is.
    pub role: ProcessRole,
    /// This process's control socket.
    pub control_socket: PathBuf,
    /// The `--config` file, for processes that start more processes.
    pub config_path: Option<PathBuf>,
    node: watch::Sender<Option<Arc<dyn Node>>>,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext").field("role", &self.role).field("control_socket", &self.control_socket).finish()
    }
}

impl RunContext {
    /// Makes the running node visible to `status`, `connections` and `/metrics`. Until then the
    /// control socket does not answer, which is how `start -d` knows the node is up.
    pub fn publish(&self, node: Arc<dyn Node>) {
        self.node.send_replace(Some(node));
    }

    /// A context for running a node without the CLI (tests, the one-process launcher).
    pub fn detached(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            reload: Arc::new(Notify::new()),
            role: ProcessRole::Main,
            control_socket: PathBuf::new(),
            config_path: None,
            node: watch::channel(None).0,
        }
    }
}

/// Request-rate sampling over the last few seconds.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Rates {
    fn record(&self, total: u64) {
        let mut s = self.samples.lock().expect("rates lock");
        s.push_back((Instant::now(), total));
        while s.len() > 6 {
            s.pop_front();
        }
    }

    /// Requests per second between the oldest and newest sample.
    pub fn per_second(&self) -> f64 {
        let s = self.samples.lock().expect("rates lock");
        match (s.front(), s.back()) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => c1.saturating_sub(*c0) as f64 / (*t1 - *t0).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// Runs `run` with the control socket on `control` (already bound), an optional admin listener,
/// and signal handling. A stop that overruns `grace` by more than a few seconds is forced.
pub(crate) async fn run_node<Fut>(
    run: impl FnOnce(RunContext) -> Fut,
    role: ProcessRole,
    config_path: Option<PathBuf>,
    control_path: PathBuf,
    control: tokio::net::UnixListener,
    admin: Option<tokio::net::TcpListener>,
    grace: Duration,
) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let shutdown = CancellationToken::new();
    let reload = Arc::new(Notify::new());
    spawn_signal_handlers(shutdown.clone(), reload.clone(), role)?;
    let (node_tx, mut node_rx) = watch::channel::<Option<Arc<dyn Node>>>(None);
    let ctx = RunContext {
        shutdown: shutdown.clone(),
        reload,
        role,
        control_socket: control_path.clone(),
        config_path,
        node: node_tx,
    };

    let servers_stop = CancellationToken::new();
    let rates = Arc::new(Rates::default());
    let servers = tokio::spawn({
        let (servers_stop, rates) = (servers_stop.clone(), rates.clone());
        async move {
            let node = tokio::select! {
                _ = servers_stop.cancelled() => return,
                n = node_rx.wait_for(|n| n.is_some()) => match n {
                    Ok(n) => n.clone().expect("checked"),
                    Err(_) => return,
                },
            };
            let mut admin_addr = None;
            if let Some(admin) = admin {
                if let Ok(addr) = admin.local_addr() {
                    tracing::info!(admin = %addr, "serving /metrics and /health");
                    admin_addr = Some(addr.to_string());
                }
                tokio::spawn(crate::admin::serve(admin, node.clone(), servers_stop.clone()));
            }
            let sampler = {
                let (node, rates, stop) = (node.clone(), rates.clone(), servers_stop.clone());
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tick.tick() => rates.record(node.requests_total()),
                        }
                    }
                }
            };
            tokio::join!(crate::control::serve(control, node, rates, admin_addr, servers_stop.clone()), sampler);
        }
    });

    let main = run(ctx);
    tokio::pin!(main);
    let result = tokio::select! {
        r = &mut main => r,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace + Duration::from_secs(3)).await;
        } => {
            // Reported (once) by whoever handles the error.
            Err(anyhow::anyhow!("graceful stop overran the grace period of {grace:?}; exiting now"))
        }
    };
    servers_stop.cancel();
    let _ = servers.await;
    let _ = std::fs::remove_file(&control_path);
    result
}

/// Registers the handlers before returning (so a signal arriving right after startup is never
/// handled by the default action, which would kill the process), then serves them in a task.
fn spawn_signal_handlers(shutdown: CancellationToken, reload: Arc<Notify>, role: ProcessRole) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM: stopping gracefully");
                    shutdown.cancel();
                }
                _ = int.recv() => {
                    // Children share the terminal's process group with the master, which stops
                    // them itself; a child ignores the terminal's Ctrl-C.
                    if matches!(role, ProcessRole::Child { .. }) {
                        continue;
                    }
                    tracing::info!("SIGINT: stopping gracefully");
                    shutdown.cancel();
                }
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: reload requested");
                    reload.notify_one();
                }
            }
        }
    });
    Ok(())
}

/// A token cancelled on the first SIGTERM or SIGINT (for programs that do not use the full
/// runner, like the one-process demo).
pub fn shutdown_on_signals() -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let t = token.clone();
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping gracefully"),
            _ = int.recv() => tracing::info!("SIGINT: stopping gracefully"),
        }
        t.cancel();
    });
    token
}
