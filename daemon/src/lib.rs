//! The part of `main` the three daemons share, so each binary stays a few lines: parse the CLI,
//! load the config (a bad config is one clear message and exit code 64), start logging, turn
//! SIGTERM/SIGINT into a cancellation, run the library's `run`, map the outcome to an exit code.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gw_config::{DaemonConfig, LogConfig, LogFormat};
use tokio_util::sync::CancellationToken;

/// Exit code for a bad configuration (EX_CONFIG would be 78; GatewayWorker tooling and our docs
/// use EX_USAGE, 64, for every invalid-input case).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code when the daemon fails at run time (cannot bind, …).
pub const EXIT_FAILURE: u8 = 1;

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
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Run in the foreground with logs on the terminal (the default).
    Start,
}

/// Loads the configuration or explains why not.
pub fn load_config<C: DaemonConfig>(path: Option<&std::path::Path>) -> Result<C, gw_config::ConfigError> {
    gw_config::load_from_process_env(path)
}

/// Installs the global tracing subscriber per the config.
pub fn init_tracing(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level).unwrap_or_else(|e| {
        eprintln!("log.level {:?} is not a valid filter ({e}); using \"info\"", log.level);
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGTERM handler");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping gracefully"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping gracefully"),
        }
        t.cancel();
    });
    token
}

/// The whole `main` of a daemon: `run` gets the validated config and the shutdown token.
pub fn main<C, F, Fut>(binary: &str, run: F) -> ExitCode
where
    C: DaemonConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let cli = Cli::parse();
    let config: C = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{binary}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Start) {
        Command::Start => {}
    }
    init_tracing(config.log());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_on_signals();
        run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{binary} failed");
            eprintln!("{binary}: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
