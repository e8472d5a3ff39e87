//! The shared command line: the subcommands every daemon binary takes, what differs per binary
//! ([`Spec`]), and [`main`], which parses the command line, loads the configuration and hands the
//! subcommand to the code that runs it.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use gw_config::{ConfigError, DaemonConfig};

use crate::control_client::Control;
use crate::runner::{ProcessRole, RunContext};
use crate::start::{load_config, start};
use crate::{EXIT_CONFIG, VERSION};

/// Command line shared by `register`, `gateway` and `business-worker`.
#[derive(Debug, Parser)]
pub struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults apply; GW_* environment variables
    /// override addresses, the secret and logging either way.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do; `start` when none is given.
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
        /// Detach and run in the background.
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
        /// Which process of the master this is.
        #[arg(long)]
        index: usize,
        /// Which reload generation it belongs to.
        #[arg(long)]
        generation: u64,
    },
}

/// What differs between the three binaries.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Name in `--help`, `--version` and messages.
    pub binary: &'static str,
    /// What `--help` says the binary is.
    pub about: &'static str,
    /// Whether `reload` means anything (business worker).
    pub reloadable: bool,
    /// Whether `connections` means anything (gateway).
    pub has_connections: bool,
}

/// The whole `main` of a daemon. `run` gets the validated config and the run context; it binds
/// its sockets, publishes its [`Node`](crate::Node) and runs until the context's shutdown token is cancelled.
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
    // Before anything stops or starts, so a `restart` with a bad certificate path leaves the
    // running node alone.
    if matches!(command, Command::Start { .. } | Command::Restart { .. }) {
        let problems = config.check_files();
        if !problems.is_empty() {
            eprintln!("{}: {}", spec.binary, ConfigError::Invalid { path: cli.config.clone(), problems });
            return ExitCode::from(EXIT_CONFIG);
        }
    }
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
