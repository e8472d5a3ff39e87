//! The part of `main` the three daemons share, so each binary stays a few lines.
//!
//! Subcommands, as in Workerman: `start` (foreground; `-d` daemonizes with a log file and pid
//! file), `stop` (graceful, forced after the grace period), `restart`, `reload` (business workers
//! only), `status` and `connections` (asked of the running process over its control socket), all
//! with `--config FILE`. A bad configuration is one clear message and exit code 64.

pub mod admin;
pub mod control;
pub mod histogram;
pub mod node;
pub mod pidfile;
pub mod report;
pub mod runner;

use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use gw_config::{DaemonConfig, LogConfig, LogFormat};

pub use node::{BoxFuture, Node};
pub use report::{ConnectionRow, MetricFamily, ProcessStatus};
pub use runner::{ProcessRole, RunContext, shutdown_on_signals};

/// Exit code for a bad configuration or usage (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for everything else that failed (not running, already running, cannot bind, …).
pub const EXIT_FAILURE: u8 = 1;

/// What `--version` prints after the binary's name: the gatewayrs release it is built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Environment variable marking the process that `start -d` detached.
const DETACHED_ENV: &str = "GW_DETACHED";

/// Command line shared by `register`, `gateway` and `business-worker`.
#[derive(Debug, Parser)]
pub struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults apply; GW_* environment variables
    /// override addresses, the secret and logging either way.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand, PartialEq, Eq, Clone)]
pub enum Command {
    /// Start in the foreground with logs on the terminal (the default); -d runs it as a daemon
    /// with its log in process.log_file and its pid in process.pid_file.
    Start {
        /// Detach and run in the background.
        #[arg(short = 'd', long = "daemon")]
        daemon: bool,
    },
    /// Stop gracefully: stop accepting, finish what is in flight, close clients with a close
    /// frame; forced after the grace period.
    Stop,
    /// Stop, then start again (keeps -d).
    Restart {
        #[arg(short = 'd', long = "daemon")]
        daemon: bool,
    },
    /// Business worker: replace the worker processes one at a time with the binary now on disk,
    /// without dropping or reordering any client event. Gateways and registers are not reloadable.
    Reload,
    /// Show the running processes: pid, memory, listen address, connections, messages, drops,
    /// requests per second, state.
    Status,
    /// Gateway: list client connections (client id, peer, uid, groups, bytes, queue length).
    Connections,
    /// Internal: a worker process run by the master.
    #[command(hide = true)]
    Child {
        #[arg(long)]
        index: usize,
        #[arg(long)]
        generation: u64,
    },
}

/// What differs between the three binaries.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub binary: &'static str,
    pub about: &'static str,
    /// Whether `reload` means anything (business worker).
    pub reloadable: bool,
    /// Whether `connections` means anything (gateway).
    pub has_connections: bool,
}

/// Loads the configuration or explains why not.
pub fn load_config<C: DaemonConfig>(path: Option<&Path>) -> Result<C, gw_config::ConfigError> {
    gw_config::load_from_process_env(path)
}

/// Installs the global tracing subscriber per the config.
pub fn init_tracing(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level).unwrap_or_else(|e| {
        eprintln!("log.level {:?} is not a valid filter ({e}); using \"info\"", log.level);
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The whole `main` of a daemon. `run` gets the validated config and the run context; it binds
/// its sockets, publishes its [`Node`] and runs until the context's shutdown token is cancelled.
pub fn main<C, F, Fut>(spec: Spec, run: F) -> ExitCode
where
    C: DaemonConfig,
    F: FnOnce(C, RunContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let matches = Cli::command().name(spec.binary).about(spec.about).version(VERSION).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config: C = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", spec.binary);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let ctl = Control::new(spec, &config);
    let command = cli.command.clone().unwrap_or(Command::Start { daemon: false });
    match command {
        Command::Start { daemon } => start(spec, &cli, config, daemon, ProcessRole::Main, run),
        Command::Child { index, generation } => {
            start(spec, &cli, config, false, ProcessRole::Child { index, generation }, run)
        }
        Command::Stop => ctl.stop(true),
        Command::Restart { daemon } => {
            let stopped = ctl.stop(false);
            if stopped != ExitCode::SUCCESS {
                return stopped;
            }
            start(spec, &cli, config, daemon, ProcessRole::Main, run)
        }
        Command::Reload => ctl.reload(),
        Command::Status => ctl.status(),
        Command::Connections => ctl.connections(),
    }
}

/// The commands that act on a running node.
struct Control {
    spec: Spec,
    name: String,
    pid_file: PathBuf,
    socket: PathBuf,
    grace: Duration,
}

impl Control {
    fn new<C: DaemonConfig>(spec: Spec, config: &C) -> Self {
        let name = config.node_name().to_string();
        Self {
            spec,
            pid_file: config.process().pid_file(&name),
            socket: config.process().control_socket(&name),
            grace: config.grace(),
            name,
        }
    }

    fn what(&self) -> String {
        format!("{} {:?}", self.spec.binary, self.name)
    }

    fn not_running(&self) -> ExitCode {
        eprintln!("{} is not running (no live process in {})", self.what(), self.pid_file.display());
        ExitCode::from(EXIT_FAILURE)
    }

    /// `stop`; with `must_run`, "not running" is an error (for `restart` it is fine).
    fn stop(&self, must_run: bool) -> ExitCode {
        let Some(pid) = pidfile::running(&self.pid_file) else {
            return if must_run { self.not_running() } else { ExitCode::SUCCESS };
        };
        println!("stopping {} (pid {pid}) ...", self.what());
        if let Err(e) = pidfile::signal(pid, pidfile::Sig::SIGTERM) {
            eprintln!("cannot signal pid {pid}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        let started = Instant::now();
        let deadline = started + self.grace + Duration::from_secs(5);
        while pidfile::alive(pid) {
            if Instant::now() > deadline {
                eprintln!("{} did not stop within its grace period; killing pid {pid}", self.what());
                let _ = pidfile::signal(pid, pidfile::Sig::SIGKILL);
                std::thread::sleep(Duration::from_millis(200));
                let _ = std::fs::remove_file(&self.pid_file);
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        println!("{} stopped in {:.1}s", self.what(), started.elapsed().as_secs_f64());
        ExitCode::SUCCESS
    }

    fn ask(&self, request: control::Request) -> Result<control::Response, ExitCode> {
        if pidfile::running(&self.pid_file).is_none() && !self.socket.exists() {
            return Err(self.not_running());
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            eprintln!("cannot start a runtime: {e}");
            ExitCode::from(EXIT_FAILURE)
        })?;
        rt.block_on(control::ask(&self.socket, request, Duration::from_secs(10))).map_err(|e| {
            if pidfile::running(&self.pid_file).is_none() {
                self.not_running()
            } else {
                eprintln!("{} is running but did not answer on {}: {e}", self.what(), self.socket.display());
                ExitCode::from(EXIT_FAILURE)
            }
        })
    }

    fn status(&self) -> ExitCode {
        match self.ask(control::Request::Status) {
            Ok(control::Response::Status(rows)) => {
                print!("{}", report::status_table(&self.what(), &rows));
                ExitCode::SUCCESS
            }
            Ok(_) => ExitCode::from(EXIT_FAILURE),
            Err(code) => code,
        }
    }

    fn connections(&self) -> ExitCode {
        if !self.spec.has_connections {
            eprintln!("{}: only gateways hold client connections; run `gateway connections`", self.spec.binary);
            return ExitCode::from(EXIT_FAILURE);
        }
        match self.ask(control::Request::Connections) {
            Ok(control::Response::Connections(Some(rows))) => {
                print!("{}", report::connections_table(&rows));
                ExitCode::SUCCESS
            }
            Ok(_) => ExitCode::from(EXIT_FAILURE),
            Err(code) => code,
        }
    }

    fn reload(&self) -> ExitCode {
        if !self.spec.reloadable {
            let why = if self.spec.has_connections {
                format!(
                    "it holds the client connections, and restarting it closes them (clients must reconnect). \
                     Use `{} restart` only when that is acceptable.",
                    self.spec.binary
                )
            } else {
                format!(
                    "it runs no application code, so there is nothing to reload. `{} restart` is safe: \
                     clients stay connected and the gateways announce themselves again within a second or two.",
                    self.spec.binary
                )
            };
            eprintln!(
                "{} is not reloadable: {why} Nothing was changed. \
                 To deploy new application code, reload the business workers (`business-worker reload`).",
                self.spec.binary
            );
            return ExitCode::from(EXIT_FAILURE);
        }
        let Some(pid) = pidfile::running(&self.pid_file) else { return self.not_running() };
        let started = Instant::now();
        if let Err(e) = pidfile::signal(pid, pidfile::Sig::SIGUSR1) {
            eprintln!("cannot signal pid {pid}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        println!("reloading {} (master pid {pid}): replacing worker processes one at a time ...", self.what());
        // Wait until the master reports the reload finished.
        let deadline = started + Duration::from_secs(600);
        let mut seen_reloading = false;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            match self.ask(control::Request::Status) {
                Ok(control::Response::Status(rows)) => {
                    let master = rows.iter().find(|r| r.pid == pid);
                    let reloading = master.is_some_and(|m| m.state.starts_with("reloading"));
                    seen_reloading |= reloading;
                    if !reloading && (seen_reloading || started.elapsed() > Duration::from_secs(2)) {
                        let state = master.map(|m| m.state.clone()).unwrap_or_default();
                        if state.contains("failed") {
                            eprintln!("reload failed: {state}");
                            return ExitCode::from(EXIT_FAILURE);
                        }
                        println!("reload complete in {:.1}s", started.elapsed().as_secs_f64());
                        return ExitCode::SUCCESS;
                    }
                }
                Ok(_) => {}
                Err(code) => return code,
            }
            if Instant::now() > deadline {
                eprintln!("reload still running after 10 minutes; check the log");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
}

fn start<C, F, Fut>(spec: Spec, cli: &Cli, config: C, daemon: bool, role: ProcessRole, run: F) -> ExitCode
where
    C: DaemonConfig,
    F: FnOnce(C, RunContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = config.node_name().to_string();
    let process = config.process().clone();
    if daemon && std::env::var_os(DETACHED_ENV).is_none() {
        return detach(spec, cli, &config);
    }
    init_tracing(config.log());
    let (pid_file, socket) = match role {
        ProcessRole::Main => (Some(process.pid_file(&name)), process.control_socket(&name)),
        // Named after the master too: a new master never collides with an orphan of an old one.
        ProcessRole::Child { index, generation } => {
            (None, process.control_socket(&format!("{name}-{index}.{}.{generation}", nix::unistd::getppid())))
        }
    };
    let _pid = match pid_file.as_deref().map(pidfile::PidFile::acquire) {
        Some(Err(pidfile::PidFileError::Running(pid))) => {
            eprintln!("{} {name:?} is already running (pid {pid}); refusing to start a second one", spec.binary);
            return ExitCode::from(EXIT_FAILURE);
        }
        Some(Err(e)) => {
            eprintln!("{}: {e}", spec.binary);
            return ExitCode::from(EXIT_FAILURE);
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", spec.binary);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let grace = config.grace();
    let admin_addr = if matches!(role, ProcessRole::Main) { process.admin.clone() } else { String::new() };
    let result = runtime.block_on(async {
        let control =
            control::bind(&socket).await.map_err(|e| anyhow::anyhow!("control socket {}: {e}", socket.display()))?;
        // Ours from here on: whatever fails next, no stale socket is left behind.
        let _socket = control::RemoveOnDrop(socket.clone());
        let admin = if admin_addr.is_empty() {
            None
        } else {
            Some(
                tokio::net::TcpListener::bind(&admin_addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {admin_addr} (process.admin): {e}"))?,
            )
        };
        let config_path = cli.config.as_ref().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
        runner::run_node(|ctx| run(config, ctx), role, config_path, socket.clone(), control, admin, grace).await
    });
    // Do not wait for stray blocking tasks.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{} failed", spec.binary);
            eprintln!("{}: {e:#}", spec.binary);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `start -d`: re-runs this binary detached (own process group, output to the log file) and
/// waits until it answers on its control socket, or reports why it died.
fn detach<C: DaemonConfig>(spec: Spec, cli: &Cli, config: &C) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let name = config.node_name();
    let process = config.process();
    let pid_file = process.pid_file(name);
    if let Some(pid) = pidfile::running(&pid_file) {
        eprintln!("{} {name:?} is already running (pid {pid}); refusing to start a second one", spec.binary);
        return ExitCode::from(EXIT_FAILURE);
    }
    let log_path = process.log_file(name);
    if let Some(dir) = log_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let log = match std::fs::OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: cannot open log file {}: {e}", spec.binary, log_path.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: cannot find my own executable: {e}", spec.binary);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(cfg) = &cli.config {
        cmd.arg("--config").arg(std::fs::canonicalize(cfg).unwrap_or_else(|_| cfg.clone()));
    }
    cmd.arg("start").env(DETACHED_ENV, "1").stdin(std::process::Stdio::null()).process_group(0);
    match log.try_clone() {
        Ok(l) => {
            cmd.stdout(l);
        }
        Err(e) => {
            eprintln!("{}: log file: {e}", spec.binary);
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    cmd.stderr(log);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: cannot start the daemon process: {e}", spec.binary);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let socket = process.control_socket(name);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: {e}", spec.binary);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("{} {name:?} failed to start ({status}); last lines of {}:", spec.binary, log_path.display());
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for l in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("  {l}");
            }
            return ExitCode::from(EXIT_FAILURE);
        }
        let answered = rt.block_on(control::ask(&socket, control::Request::Status, Duration::from_millis(500))).is_ok();
        if answered && pidfile::running(&pid_file) == Some(child.id()) {
            println!(
                "{} {name:?} started as a daemon (pid {}); log: {}; pid file: {}",
                spec.binary,
                child.id(),
                log_path.display(),
                pid_file.display()
            );
            return ExitCode::SUCCESS;
        }
        if Instant::now() > deadline {
            eprintln!("{} {name:?} did not come up within 30 s; see {}", spec.binary, log_path.display());
            return ExitCode::from(EXIT_FAILURE);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
