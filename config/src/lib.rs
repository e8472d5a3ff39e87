//! Typed TOML configuration of the three daemons.
//!
//! Defaults live in code ([`Default`] impls), unknown keys are errors (`deny_unknown_fields`, so a
//! typo is reported rather than ignored), [`validate`](Validate::validate) reports every problem at
//! once with its key, and a few environment variables override what containers need: addresses,
//! the secret, the node name and the log format (see [`env`]).

mod env;
mod gatewayworker;
mod types;
mod validate;

pub use env::{ENV_VARS, EnvOverride, apply_env};
pub use gatewayworker::{GatewayGatewayWorker, RegisterGatewayWorker};
pub use types::*;
pub use validate::{ListenerUrl, Problem, Validate, parse_listener_url};

/// What every daemon's configuration offers to the shared daemon runner.
pub trait DaemonConfig: serde::de::DeserializeOwned + Default + Validate + EnvOverride + Send + 'static {
    fn log(&self) -> &LogConfig;
    fn node_name(&self) -> &str;
    fn process(&self) -> &ProcessConfig;
    /// How long a graceful stop may take before `stop` forces it.
    fn grace(&self) -> std::time::Duration;
}

macro_rules! daemon_config {
    ($($t:ty => $grace:expr),*) => {$(
        impl DaemonConfig for $t {
            fn log(&self) -> &LogConfig { &self.log }
            fn node_name(&self) -> &str { &self.name }
            fn process(&self) -> &ProcessConfig { &self.process }
            fn grace(&self) -> std::time::Duration { $grace(self) }
        }
    )*};
}
daemon_config!(
    RegisterConfig => |_: &RegisterConfig| std::time::Duration::from_secs(3),
    GatewayConfig => |c: &GatewayConfig| c.grace_period,
    WorkerConfig => |c: &WorkerConfig| c.grace_period
);

use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration{}:\n{}", origin(.path), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: Option<PathBuf>, problems: Vec<Problem> },
}

fn origin(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
}

/// Parses TOML text into a config (no environment, no validation).
pub fn parse<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text)
        .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string().trim_end().to_string() })
}

/// Loads a daemon's configuration: the file if given (defaults otherwise), then environment
/// overrides from `env_lookup`, then validation reporting every problem at once.
pub fn load<T>(path: Option<&Path>, env_lookup: impl Fn(&str) -> Option<String>) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned + Default + Validate + env::EnvOverride,
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
    T: serde::de::DeserializeOwned + Default + Validate + env::EnvOverride,
{
    load(path, |k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests;
