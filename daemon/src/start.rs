//! `start` in the foreground: logging, the pid file, the async runtime, the control socket and the
//! admin endpoint around the daemon's own `run`. `start -d` detaches first (`detach.rs`).

use std::future::Future;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use gw_config::{DaemonConfig, LogConfig, LogFormat};

use crate::cli::{Cli, Spec};
use crate::detach::{DETACHED_ENV, detach};
use crate::failure::report_failure;
use crate::runner::{self, ProcessRole, RunContext};
use crate::{EXIT_FAILURE, control, pidfile};

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

/// Refuses a second start of node `name`, and says how to run another node of the same kind
/// beside it: a newcomer's second gateway with the default name lands here.
pub(crate) fn already_running(spec: Spec, name: &str, pid: u32, pid_file: &Path) -> ExitCode {
    eprintln!(
        "{} {name:?} is already running (pid {pid}); refusing to start a second one. To run another {} on \
         this host, give it its own `name`: its pid file ({}), log file and control socket are named after it.",
        spec.binary,
        spec.binary,
        pid_file.display()
    );
    ExitCode::from(EXIT_FAILURE)
}

/// The async runtime with `threads` threads (`process.threads`): 0 is one per CPU core; 1 runs
/// the node on the calling thread alone.
pub(crate) fn build_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// Runs the node in this process (`start`, `restart` and a master's `child`), or detaches first
/// for `start -d`. Returns the exit code of the whole run.
pub(crate) fn start<C, F, Fut>(spec: Spec, cli: &Cli, config: C, daemon: bool, role: ProcessRole, run: F) -> ExitCode
where
    C: DaemonConfig,
    F: FnOnce(C, RunContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = config.node_name().to_string();
    let process = config.process().clone();
    let log = config.log().clone();
    if daemon && std::env::var_os(DETACHED_ENV).is_none() {
        return detach(spec, cli, &config);
    }
    // Before any thread of ours exists (a thread that took an arena of its own keeps it).
    let arenas = gw_malloc_tune::limit_arenas(process.malloc_arenas);
    init_tracing(&log);
    tracing::debug!(?arenas, "malloc arenas");
    let (pid_file, socket) = match role {
        ProcessRole::Main => (Some(process.pid_file(&name)), process.control_socket(&name)),
        // Named after the master too: a new master never collides with an orphan of an old one.
        ProcessRole::Child { index, generation } => {
            (None, process.control_socket(&format!("{name}-{index}.{}.{generation}", nix::unistd::getppid())))
        }
    };
    let _pid = match pid_file.as_deref().map(pidfile::PidFile::acquire) {
        Some(Err(pidfile::PidFileError::Running(pid))) => {
            return already_running(spec, &name, pid, pid_file.as_deref().unwrap_or(Path::new("")));
        }
        Some(Err(e)) => {
            eprintln!("{}: {e}", spec.binary);
            return ExitCode::from(EXIT_FAILURE);
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    let runtime = match build_runtime(process.threads) {
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
            report_failure(spec.binary, &log, &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
