//! The part of `main` the daemon binaries share, so each binary stays a few lines.
//!
//! Subcommands, as in Workerman: `start` (foreground; `-d` daemonizes with a log file and pid
//! file), `stop` (graceful, forced after the grace period), `restart`, `reload` (business workers
//! only), `status` and `connections` (asked of the running process over its control socket), all
//! with `--config FILE`. A bad configuration is one clear message and exit code 64, and so is a
//! TLS certificate or key that `start` cannot read.
//!
//! Where things are: `cli.rs` parses the command line and dispatches ([`main`]); `start.rs` runs a
//! node in the foreground and `detach.rs` in the background (`start -d`); `control_client.rs`
//! holds the subcommands that act on a running node (`stop`, `reload`, `status`,
//! `connections`); [`control`] is the control socket both sides speak; [`runner`] drives a
//! running node (signals, rates, graceful stop); `failure.rs` says why a binary stopped (once);
//! `table.rs` lays out the `status` and `connections` tables; [`supervisor`] is a business
//! worker's master, which runs its worker processes.

pub mod admin;
mod cli;
pub mod control;
mod control_client;
mod detach;
mod failure;
pub mod histogram;
pub mod node;
pub mod pidfile;
pub mod report;
pub mod runner;
mod start;
pub mod supervisor;
mod table;
mod totals;

pub use cli::{Cli, Command, Spec, main};
pub use failure::{error_text, report_failure};
pub use node::{BoxFuture, Node};
pub use report::{ConnectionRow, MetricFamily, ProcessStatus};
pub use runner::{ProcessRole, RunContext, shutdown_on_signals};
pub use start::{init_tracing, load_config};

/// Exit code for a bad configuration or usage (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for everything else that failed (not running, already running, cannot bind, …).
pub const EXIT_FAILURE: u8 = 1;

/// What `--version` prints after the binary's name: the gatewayrs release it is built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
