//! The cluster under test: one register, gateways and business workers (a master with one worker
//! process each) as real processes of the release binaries. Every node has its own directory
//! (config file, run dir, log file that all its incarnations append to), is started, signalled and
//! restarted on demand, and is observed through its log, its `/metrics` and /proc.
//!
//! A node is started on port 0 the first time and restarted on the addresses it got then, so
//! clients, workers and gateways find it again where they knew it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::metrics::{self, Metrics};
use crate::procfs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register,
    Gateway,
    Worker,
}

/// What the harness last did to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Down,
    Up,
    /// SIGSTOPped (the node, or for a worker its worker process).
    Stopped,
}

/// What the rest of the harness may read about a node at any time, without waiting for an
/// operation on it to finish.
#[derive(Debug, Clone, Default)]
pub struct Info {
    /// The main process (for a worker: the master).
    pub pid: u32,
    pub health: Health,
    /// `/metrics` address of the current incarnation.
    pub admin: Option<String>,
    /// Register: `[listen]`; gateway: `[public, internal]`.
    pub listen: Vec<String>,
    pub starts: u32,
}

/// The process handle; held under the node's operation lock.
#[derive(Debug, Default)]
pub struct Proc {
    child: Option<tokio::process::Child>,
}

#[derive(Debug)]
pub struct Node {
    pub kind: Kind,
    pub index: usize,
    pub name: String,
    pub config: PathBuf,
    pub log: PathBuf,
    run_dir: PathBuf,
    /// Serialises operations (start, faults, stop) on this node.
    pub op: Arc<tokio::sync::Mutex<Proc>>,
    info: Mutex<Info>,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Node {
    pub fn info(&self) -> Info {
        self.info.lock().expect("info lock").clone()
    }

    pub fn set_health(&self, health: Health) {
        self.info.lock().expect("info lock").health = health;
    }

    /// The worker processes of a worker node's master right now.
    pub fn worker_processes(&self) -> Vec<u32> {
        match self.kind {
            Kind::Worker => procfs::children(self.info().pid),
            _ => Vec::new(),
        }
    }
}

/// Settings written into every config file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub grace: Duration,
}

#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    settings: Settings,
    pub register: Arc<Node>,
    pub gateways: Vec<Arc<Node>>,
    pub workers: Vec<Arc<Node>>,
}

/// The cluster secret of every node.
const SECRET: &str = "gw-soak-cluster-secret-0123456789";

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Cluster {
    pub fn new(bin: &Path, root: &Path, gateways: usize, workers: usize, settings: Settings) -> anyhow::Result<Self> {
        for b in ["register", "gateway", "business-worker"] {
            let p = bin.join(b);
            anyhow::ensure!(
                p.is_file(),
                "{} not found: build with `cargo build --release -p gw-register -p gw-gateway -p gw-chat-demo` or pass --bin-dir",
                p.display()
            );
        }
        let node = |kind, index, name: String| -> anyhow::Result<Arc<Node>> {
            let dir = root.join(&name);
            std::fs::create_dir_all(dir.join("run")).with_context(|| format!("create {}", dir.display()))?;
            Ok(Arc::new(Node {
                kind,
                index,
                config: dir.join("config.toml"),
                log: dir.join("output.log"),
                run_dir: dir.join("run"),
                name,
                op: Arc::new(tokio::sync::Mutex::new(Proc::default())),
                info: Mutex::new(Info::default()),
            }))
        };
        Ok(Self {
            bin: bin.to_path_buf(),
            settings,
            register: node(Kind::Register, 0, "register".into())?,
            gateways: (0..gateways).map(|i| node(Kind::Gateway, i, format!("gw-{i}"))).collect::<Result<_, _>>()?,
            workers: (0..workers).map(|i| node(Kind::Worker, i, format!("wk-{i}"))).collect::<Result<_, _>>()?,
        })
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        std::iter::once(&self.register).chain(&self.gateways).chain(&self.workers)
    }

    /// WebSocket URLs of the gateways (fixed after their first start).
    pub fn urls(&self) -> Vec<String> {
        self.gateways.iter().map(|g| format!("ws://{}/", g.info().listen[0])).collect()
    }

    fn register_addr(&self) -> String {
        self.register.info().listen.first().cloned().unwrap_or_default()
    }

    fn config_text(&self, node: &Node, info: &Info) -> String {
        let s = &self.settings;
        let addr = |i: usize| info.listen.get(i).cloned().unwrap_or_else(|| "127.0.0.1:0".into());
        let head = match node.kind {
            Kind::Register => format!("name = \"register\"\nlisten = \"{}\"\n", addr(0)),
            Kind::Gateway => format!(
                "name = \"{}\"\nlisten = \"{}\"\ninternal_listen = \"{}\"\nregisters = [\"{}\"]\n\
                 grace_period = \"{}\"\nworker_wait = \"30s\"\n",
                node.name,
                addr(0),
                addr(1),
                self.register_addr(),
                ms(s.grace)
            ),
            Kind::Worker => format!(
                "name = \"{}\"\napp = \"echo\"\nregisters = [\"{}\"]\ncount = 1\nrestart_limit = 10000\n\
                 restart_window = \"60s\"\ngrace_period = \"{}\"\n",
                node.name,
                self.register_addr(),
                ms(s.grace)
            ),
        };
        // Gateways: connection state recovery on (docs/recovery.md), so a graceful restart hands
        // its clients over to another gateway and a client that comes back anywhere is relayed to
        // its state; that takes the cluster secret on every node (a gateway checks the others'
        // tokens with it, and every internal link is authenticated with it).
        let recovery = if node.kind == Kind::Gateway { "\n[recovery]\nenabled = true\n" } else { "" };
        format!(
            "{head}secret = \"{SECRET}\"\n{recovery}\n[link]\nheartbeat_interval = \"{}\"\nheartbeat_timeout = \"{}\"\n\n[log]\nlevel = \"info\"\nformat = \"json\"\n\n\
             [process]\nrun_dir = \"{}\"\nadmin = \"127.0.0.1:0\"\n",
            ms(s.heartbeat_interval),
            ms(s.heartbeat_timeout),
            node.run_dir.display()
        )
    }

    /// Starts the node and waits until it is serving: listening (register, gateway) or its worker
    /// process linked to every gateway (worker), and its `/metrics` address known. Retries for a
    /// while if the old address is not free yet. Returns how long it took.
    pub async fn start(&self, node: &Node, proc: &mut Proc) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last_err = None;
        for attempt in 0..30 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            match self.start_once(node, proc).await {
                Ok(()) => return Ok(started.elapsed()),
                Err(e) => {
                    let retry = format!("{e:#}").contains("in use");
                    crate::log(&format!("{node}: start attempt {} failed: {e:#}", attempt + 1));
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    async fn start_once(&self, node: &Node, proc: &mut Proc) -> anyhow::Result<()> {
        let info = node.info();
        std::fs::write(&node.config, self.config_text(node, &info))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let offset = log.metadata()?.len();
        let binary = match node.kind {
            Kind::Register => "register",
            Kind::Gateway => "gateway",
            Kind::Worker => "business-worker",
        };
        let mut cmd = tokio::process::Command::new(self.bin.join(binary));
        cmd.arg("--config").arg(&node.config).arg("start");
        for (k, _) in std::env::vars() {
            if k.starts_with("GW_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_BACKTRACE", "1").stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(false);
        let mut child = cmd.spawn().with_context(|| format!("spawn {}", self.bin.join(binary).display()))?;
        let pid = child.id().unwrap_or(0);
        {
            let mut i = node.info.lock().expect("info lock");
            i.pid = pid;
            i.admin = None;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut read = offset;
        let mut partial = String::new();
        let mut listen: Option<Vec<String>> = None;
        let mut admin: Option<String> = None;
        let mut ready = false;
        loop {
            let (lines, n) = read_lines(&node.log, read, &mut partial);
            read = n;
            for line in lines {
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                let f = &v["fields"];
                let field = |k: &str| f[k].as_str().map(str::to_string);
                match f["message"].as_str().unwrap_or_default() {
                    "serving /metrics and /health" => admin = field("admin"),
                    "register listening" if node.kind == Kind::Register => {
                        listen = field("listen").map(|l| vec![l]);
                        ready = true;
                    }
                    "gateway listening" if node.kind == Kind::Gateway => {
                        listen = field("public").zip(field("internal")).map(|(p, i)| vec![p, i]);
                        ready = true;
                    }
                    "worker process ready" if node.kind == Kind::Worker => ready = true,
                    _ => {}
                }
            }
            if ready && admin.is_some() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let tail = tail(&node.log, offset, 8);
                bail!("{node} exited during startup ({status}):\n{tail}");
            }
            if Instant::now() > deadline {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
                let _ = child.wait().await;
                bail!("{node} did not come up within 30 s:\n{}", tail(&node.log, offset, 8));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        proc.child = Some(child);
        let mut i = node.info.lock().expect("info lock");
        if let Some(l) = listen
            && i.listen.is_empty()
        {
            i.listen = l;
        }
        i.admin = admin;
        i.health = Health::Up;
        i.starts += 1;
        Ok(())
    }

    /// Sends `sig` to the node's main process.
    #[expect(clippy::unused_self, reason = "the cluster is what tests act through, even where it needs no state")]
    pub fn signal(&self, node: &Node, sig: Signal) -> anyhow::Result<()> {
        signal(node.info().pid, sig)
    }

    /// Sends `sig` to the node's main process and waits for it to exit (SIGKILL after `limit`).
    /// Returns the exit status and whether it had to be killed.
    pub async fn stop(
        &self,
        node: &Node,
        proc: &mut Proc,
        sig: Signal,
        limit: Duration,
    ) -> anyhow::Result<(ExitStatus, bool)> {
        let Some(mut child) = proc.child.take() else { bail!("{node} is not running") };
        node.set_health(Health::Down);
        let pid = child.id().unwrap_or(0);
        signal(pid, sig)?;
        if sig == Signal::SIGTERM {
            // A stopped process never handles SIGTERM.
            let _ = signal(pid, Signal::SIGCONT);
        }
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => Ok((status?, false)),
            Err(_) => {
                signal(pid, Signal::SIGKILL)?;
                Ok((child.wait().await?, true))
            }
        }
    }

    /// Whether the node's main process has exited on its own; reaps it.
    #[expect(clippy::unused_self, reason = "the cluster is what tests act through, even where it needs no state")]
    pub fn exited(&self, proc: &mut Proc) -> Option<ExitStatus> {
        let status = proc.child.as_mut()?.try_wait().ok().flatten()?;
        proc.child = None;
        Some(status)
    }

    pub async fn metrics(&self, node: &Node) -> anyhow::Result<Metrics> {
        let admin = node.info().admin.with_context(|| format!("{node} has no admin address (down?)"))?;
        metrics::fetch(&admin, Duration::from_secs(2)).await
    }

    /// Whether the node is fully linked: the register lists every gateway, a gateway has every
    /// worker, a worker's single process is linked to every gateway.
    pub async fn linked(&self, node: &Node) -> anyhow::Result<bool> {
        let m = self.metrics(node).await?;
        Ok(match node.kind {
            Kind::Register => m.get("gw_register_gateways") as usize == self.gateways.len(),
            Kind::Gateway => m.get("gw_worker_links") as usize == self.workers.len(),
            Kind::Worker => {
                m.get("gw_worker_processes") as usize == 1
                    && m.get("gw_worker_gateway_links") as usize == self.gateways.len()
            }
        })
    }

    /// Every process this cluster ever started that is still alive, including worker processes
    /// whose master is gone (found by their config path on the command line).
    pub fn all_processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = Vec::new();
        for n in self.nodes() {
            let pid = n.info().pid;
            if pid != 0 && procfs::alive(pid) {
                pids.push(pid);
            }
            pids.extend(procfs::with_arg(&n.config).into_iter().map(|(p, _)| p));
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs everything (cleanup on failure).
    pub fn kill_all(&self) {
        for pid in self.all_processes() {
            let _ = signal(pid, Signal::SIGKILL);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

pub fn signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    anyhow::ensure!(pid > 1, "no process to signal");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).with_context(|| format!("kill -{sig} {pid}"))
}

/// Complete lines of `path` after byte `from`; returns them and the new offset. A trailing partial
/// line is kept in `partial`.
fn read_lines(path: &Path, from: u64, partial: &mut String) -> (Vec<String>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return (Vec::new(), from) };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return (Vec::new(), from);
    }
    let mut buf = Vec::new();
    #[expect(clippy::verbose_file_reads, reason = "reads on from an offset, which fs::read cannot")]
    let n = f.read_to_end(&mut buf).unwrap_or(0) as u64;
    partial.push_str(&String::from_utf8_lossy(&buf));
    let mut lines: Vec<String> = partial.split('\n').map(str::to_string).collect();
    *partial = lines.pop().unwrap_or_default();
    (lines, from + n)
}

/// The last `n` lines written after `from`.
pub fn tail(path: &Path, from: u64, n: usize) -> String {
    let mut partial = String::new();
    let (mut lines, _) = read_lines(path, from, &mut partial);
    lines.push(partial);
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
