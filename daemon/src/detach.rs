//! `start -d`: runs the daemon in the background and reports whether it came up.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use gw_config::DaemonConfig;

use crate::cli::{Cli, Spec};
use crate::{EXIT_FAILURE, control, pidfile};

/// Environment variable marking the process that `start -d` detached.
pub(crate) const DETACHED_ENV: &str = "GW_DETACHED";

/// `start -d`: re-runs this binary detached (own process group, output to the log file) and
/// waits until it answers on its control socket, or reports why it died.
pub(crate) fn detach<C: DaemonConfig>(spec: Spec, cli: &Cli, config: &C) -> ExitCode {
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
