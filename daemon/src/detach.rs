//! `start -d`: runs the daemon in the background and reports whether it came up.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use gw_config::DaemonConfig;

use crate::cli::{Cli, Spec};
use crate::start::already_running;
use crate::{EXIT_CONFIG, EXIT_FAILURE, control, pidfile};

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
        return already_running(spec, name, pid, &pid_file);
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
    // The log is appended to across starts: what this attempt wrote begins here.
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
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
            report_failed_start(spec, name, status, &log_path, log_start);
            // A configuration error found by the daemon is still one (64).
            return match status.code() {
                Some(code) if code == i32::from(EXIT_CONFIG) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::from(EXIT_FAILURE),
            };
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

/// Lines of the log shown when a detached start fails.
const SHOWN_LINES: usize = 15;

/// Says that the detached daemon exited with `status`, with the last lines it wrote to the log:
/// only this attempt's (from byte `from` on), never an earlier run's.
fn report_failed_start(spec: Spec, name: &str, status: std::process::ExitStatus, log: &std::path::Path, from: u64) {
    let text = std::fs::read(log).unwrap_or_default();
    // Shorter than before: rotated or truncated meanwhile, so all of it is this attempt's.
    let from = usize::try_from(from).ok().filter(|&f| f <= text.len()).unwrap_or(0);
    let ours = String::from_utf8_lossy(&text[from..]);
    let lines: Vec<&str> = ours.lines().collect();
    if lines.is_empty() {
        eprintln!("{} {name:?} failed to start ({status}) and wrote nothing to {}", spec.binary, log.display());
        return;
    }
    let shown = &lines[lines.len().saturating_sub(SHOWN_LINES)..];
    let which = if shown.len() < lines.len() { "last lines" } else { "what it wrote" };
    eprintln!("{} {name:?} failed to start ({status}); {which} in {}:", spec.binary, log.display());
    for l in shown {
        eprintln!("  {l}");
    }
}
