//! The subcommands that act on a node that is already running: `stop` and `reload` (by signal,
//! through the pid file), `status` and `connections` (asked over the node's control socket).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gw_config::DaemonConfig;

use crate::cli::Spec;
use crate::{EXIT_FAILURE, control, pidfile, report};

/// The commands that act on a running node.
pub(crate) struct Control {
    spec: Spec,
    name: String,
    pid_file: PathBuf,
    socket: PathBuf,
    grace: Duration,
}

impl Control {
    pub(crate) fn new<C: DaemonConfig>(spec: Spec, config: &C) -> Self {
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
    pub(crate) fn stop(&self, must_run: bool) -> ExitCode {
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

    pub(crate) fn status(&self) -> ExitCode {
        match self.ask(control::Request::Status) {
            Ok(control::Response::Status(rows)) => {
                print!("{}", report::status_table(&self.what(), &rows));
                ExitCode::SUCCESS
            }
            Ok(_) => ExitCode::from(EXIT_FAILURE),
            Err(code) => code,
        }
    }

    pub(crate) fn connections(&self) -> ExitCode {
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

    pub(crate) fn reload(&self) -> ExitCode {
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
        // The master counts finished and failed reloads: their change says this reload ended,
        // however fast it was (a state polled now and then can miss a short "reloading").
        let before = match self.reload_counts() {
            Ok(c) => c,
            Err(code) => return code,
        };
        let before_state = if before.failed.is_none() { self.master_state(pid) } else { None };
        let started = Instant::now();
        if let Err(e) = pidfile::signal(pid, pidfile::Sig::SIGUSR1) {
            eprintln!("cannot signal pid {pid}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        println!("reloading {} (master pid {pid}): replacing worker processes one at a time ...", self.what());
        let deadline = started + Duration::from_secs(600);
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = match self.reload_counts() {
                Ok(c) => c,
                Err(code) => return code,
            };
            // A master older than the failure count says so in its state only.
            let failed = match (before.failed, now.failed) {
                (Some(b), Some(n)) => n > b,
                _ => self.master_state(pid).is_some_and(|s| s.contains("failed") && Some(&s) != before_state.as_ref()),
            };
            if failed {
                eprintln!("reload failed: {}", self.master_state(pid).unwrap_or_default());
                return ExitCode::from(EXIT_FAILURE);
            }
            if now.done > before.done {
                // The master's own measure; a master too old to report it is timed from here.
                let took = now.last_seconds.unwrap_or_else(|| started.elapsed().as_secs_f64());
                println!("reload complete in {}", seconds(took));
                return ExitCode::SUCCESS;
            }
            if Instant::now() > deadline {
                eprintln!("reload still running after 10 minutes; check the log");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }

    /// The state `status` shows for the master `pid`.
    fn master_state(&self, pid: u32) -> Option<String> {
        match self.ask(control::Request::Status) {
            Ok(control::Response::Status(rows)) => rows.into_iter().find(|r| r.pid == pid).map(|m| m.state),
            _ => None,
        }
    }

    /// The master's reload counters, from its metrics.
    fn reload_counts(&self) -> Result<ReloadCounts, ExitCode> {
        let control::Response::Metrics(families) = self.ask(control::Request::Metrics)? else {
            return Err(ExitCode::from(EXIT_FAILURE));
        };
        let value = |name: &str| {
            families.iter().find(|f| f.name == name).and_then(|f| f.samples.iter().find(|s| s.labels.is_empty()))
        };
        let Some(done) = value("gw_worker_reloads_total") else {
            eprintln!("{} does not report its reloads; is it a business-worker master?", self.what());
            return Err(ExitCode::from(EXIT_FAILURE));
        };
        Ok(ReloadCounts {
            done: done.value as u64,
            failed: value("gw_worker_reload_failures_total").map(|s| s.value as u64),
            last_seconds: value("gw_worker_last_reload_seconds").map(|s| s.value),
        })
    }
}

/// What a business-worker master has counted of its reloads.
#[derive(Debug, Clone, Copy)]
struct ReloadCounts {
    /// Completed reloads.
    done: u64,
    /// Failed reloads, if the master counts them.
    failed: Option<u64>,
    /// How long the last completed one took, if the master says.
    last_seconds: Option<f64>,
}

/// A duration for people: `0.012s`, `2.4s`, `95s`.
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{s:.3}s")
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{s:.0}s")
    }
}
