//! Typed TOML configuration of the daemons (register, gateway, business worker, HTTP API).
//!
//! Defaults live in code ([`Default`] impls), unknown keys are errors (`deny_unknown_fields`, so a
//! typo is reported rather than ignored), [`validate`](Validate::validate) reports every problem at
//! once with its key, and a few environment variables override what containers need: addresses,
//! the secret, the node name and the log format (see [`env`]).

mod env;
mod files;
mod gatewayworker;
mod pusher;
mod types;
mod validate;

pub use env::{ENV_VARS, EnvOverride, apply_env};
pub use gatewayworker::{GatewayGatewayWorker, RegisterGatewayWorker};
pub use pusher::{MIN_PUSHER_SECRET, PusherApp, PusherConfig, PusherWebhook, WEBHOOK_EVENTS};
pub use types::*;
pub use validate::{
    EVENT_FRAME_OVERHEAD, LOG_LEVELS, ListenerUrl, Problem, Validate, check_log_level, parse_listener_url,
};

/// What every daemon's configuration offers to the shared daemon runner.
pub trait DaemonConfig: serde::de::DeserializeOwned + Default + Validate + EnvOverride + Send + 'static {
    /// Its logging settings.
    fn log(&self) -> &LogConfig;
    /// Its node name: in logs, and in its pid file, log file and control socket names.
    fn node_name(&self) -> &str;
    /// Its process settings (pid file, log file, control socket, admin endpoint).
    fn process(&self) -> &ProcessConfig;
    /// How long a graceful stop may take before `stop` forces it.
    fn grace(&self) -> std::time::Duration;
    /// Problems with the files the configuration names (TLS certificates and keys), checked by
    /// `start` only: `stop` and `status` need not read them, and an operator running them may
    /// not be allowed to.
    fn check_files(&self) -> Vec<Problem> {
        Vec::new()
    }
}

macro_rules! daemon_config {
    ($($t:ty => $grace:expr, $files:expr);*) => {$(
        impl DaemonConfig for $t {
            fn log(&self) -> &LogConfig { &self.log }
            fn node_name(&self) -> &str { &self.name }
            fn process(&self) -> &ProcessConfig { &self.process }
            fn grace(&self) -> std::time::Duration { $grace(self) }
            fn check_files(&self) -> Vec<Problem> { $files(self) }
        }
    )*};
}
daemon_config!(
    RegisterConfig => |_: &RegisterConfig| std::time::Duration::from_secs(3), |_: &RegisterConfig| Vec::new();
    GatewayConfig => |c: &GatewayConfig| c.grace_period, files::gateway;
    WorkerConfig => |c: &WorkerConfig| c.grace_period, |_: &WorkerConfig| Vec::new();
    HttpApiConfig => |c: &HttpApiConfig| c.grace_period, files::http_api
);

use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or values have the wrong type or unknown keys. `message` holds
    /// every such error found (a syntax error ends the reading, so it comes alone).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Every error found, one per line.
        message: String,
    },
    /// The values parsed but break rules; every problem found.
    #[error("invalid configuration{}:\n{}", origin(.path), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file, if the configuration came from one.
        path: Option<PathBuf>,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn origin(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
}

/// At most this many wrong values or unknown keys are collected from one file.
const MAX_TOML_ERRORS: usize = 32;

/// Parses TOML text into a config (no environment, no validation), reporting every wrong type
/// and unknown key at once.
///
/// serde stops at the first error, so each error's line is set aside (commented out) and the
/// text read again, until it reads or an error has no line to set aside. A syntax error ends the
/// search: past it the parser cannot tell what the rest of the file means.
pub fn parse<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    let fail = |errors: Vec<String>| {
        let message = match errors.len() {
            1 => errors.join(""),
            n => format!("{n} errors:\n{}", errors.join("\n")),
        };
        ConfigError::Parse { path: path.to_path_buf(), message }
    };
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(fail(vec![e.to_string().trim_end().to_string()]));
    }
    let mut text = text.to_string();
    let mut errors = Vec::new();
    loop {
        let e = match toml::from_str::<T>(&text) {
            Ok(config) if errors.is_empty() => return Ok(config),
            Ok(_) => return Err(fail(errors)),
            Err(e) => e,
        };
        errors.push(e.to_string().trim_end().to_string());
        let line_start = e.span().map(|span| text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1));
        // An error without a line, a line already set aside, or a line whose removal breaks the
        // syntax (a value spanning lines): stop with what was found.
        // A table header is not set aside either: its keys would land in the table above.
        let settable = |&s: &usize| !text[s..].starts_with('#') && !text[s..].trim_start().starts_with('[');
        let Some(start) = line_start.filter(settable) else { return Err(fail(errors)) };
        text.insert(start, '#');
        if errors.len() >= MAX_TOML_ERRORS || text.parse::<toml::Table>().is_err() {
            return Err(fail(errors));
        }
    }
}

/// Loads a daemon's configuration: the file if given (defaults otherwise), then environment
/// overrides from `env_lookup`, then validation reporting every problem at once.
pub fn load<T>(path: Option<&Path>, env_lookup: impl Fn(&str) -> Option<String>) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned + Default + Validate + EnvOverride,
{
    let mut config: T = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            parse(&text, path)?
        }
        None => T::default(),
    };
    let mut problems = apply_env(&mut config, &env_lookup);
    problems.extend(config.validate());
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid { path: path.map(Path::to_path_buf), problems })
    }
}

/// [`load`] with the process environment.
pub fn load_from_process_env<T>(path: Option<&Path>) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned + Default + Validate + EnvOverride,
{
    load(path, |k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests;
