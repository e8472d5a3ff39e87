//! Environment overrides, for containers: addresses, the secret, the node name and logging.
//! Everything else belongs in the TOML file.

use crate::types::*;
use crate::validate::{Problem, check_log_level};

/// The variables read, and what they override.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("GW_NAME", "name"),
    ("GW_SECRET", "secret"),
    ("GW_LISTEN", "listen (register, gateway, http-api)"),
    ("GW_INTERNAL_LISTEN", "internal_listen (gateway)"),
    ("GW_ADVERTISE", "advertise (gateway)"),
    ("GW_REGISTERS", "registers, comma-separated (gateway, worker, http-api)"),
    ("GW_API_KEY", "http-api: adds a key named `env` with access to every call"),
    ("GW_RUN_DIR", "process.run_dir (pid file, log file, control socket)"),
    ("GW_ADMIN", "process.admin (/metrics and /health address; empty disables)"),
    ("GW_LOG_LEVEL", "log.level"),
    ("GW_LOG_FORMAT", "log.format: plain or json"),
    ("GW_PUSHER_SECRET_{ID}", "pusher.apps secret of the app with this id (upper-cased, other characters as _)"),
];

/// A configuration that takes environment overrides.
pub trait EnvOverride {
    /// Applies the variables this type uses; returns problems with their values.
    fn apply(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem>;
}

/// Applies the environment overrides of `config`.
pub fn apply_env<T: EnvOverride>(config: &mut T, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    config.apply(env)
}

fn set(target: &mut String, env: &dyn Fn(&str) -> Option<String>, var: &str) {
    if let Some(v) = env(var) {
        *target = v;
    }
}

fn registers(target: &mut Vec<String>, env: &dyn Fn(&str) -> Option<String>) {
    if let Some(v) = env("GW_REGISTERS") {
        *target = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    }
}

fn process(process: &mut ProcessConfig, env: &dyn Fn(&str) -> Option<String>) {
    set(&mut process.run_dir, env, "GW_RUN_DIR");
    set(&mut process.admin, env, "GW_ADMIN");
}

fn log(log: &mut LogConfig, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(level) = env("GW_LOG_LEVEL") {
        // Named after the variable, not log.level, so the operator looks in the right place.
        match check_log_level(&level) {
            Ok(()) => log.level = level,
            Err(reason) => problems.push(Problem { key: "GW_LOG_LEVEL".into(), reason }),
        }
    }
    match env("GW_LOG_FORMAT").as_deref() {
        None => {}
        Some("plain") => log.format = LogFormat::Plain,
        Some("json") => log.format = LogFormat::Json,
        Some(other) => problems
            .push(Problem { key: "GW_LOG_FORMAT".into(), reason: format!("{other:?} is not `plain` or `json`") }),
    }
    problems
}

impl EnvOverride for RegisterConfig {
    fn apply(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
        set(&mut self.name, env, "GW_NAME");
        set(&mut self.secret, env, "GW_SECRET");
        set(&mut self.listen, env, "GW_LISTEN");
        process(&mut self.process, env);
        log(&mut self.log, env)
    }
}

impl EnvOverride for GatewayConfig {
    fn apply(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
        set(&mut self.name, env, "GW_NAME");
        set(&mut self.secret, env, "GW_SECRET");
        set(&mut self.listen, env, "GW_LISTEN");
        set(&mut self.internal_listen, env, "GW_INTERNAL_LISTEN");
        if let Some(v) = env("GW_ADVERTISE") {
            self.advertise = Some(v);
        }
        registers(&mut self.registers, env);
        self.pusher.iter_mut().for_each(|p| p.apply_env(env));
        process(&mut self.process, env);
        log(&mut self.log, env)
    }
}

impl EnvOverride for WorkerConfig {
    fn apply(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
        set(&mut self.name, env, "GW_NAME");
        set(&mut self.secret, env, "GW_SECRET");
        registers(&mut self.registers, env);
        process(&mut self.process, env);
        log(&mut self.log, env)
    }
}

impl EnvOverride for HttpApiConfig {
    fn apply(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
        set(&mut self.name, env, "GW_NAME");
        set(&mut self.secret, env, "GW_SECRET");
        set(&mut self.listen, env, "GW_LISTEN");
        registers(&mut self.registers, env);
        // Empty counts as unset, so a compose file can pass `${GW_API_KEY:-}` through.
        if let Some(key) = env("GW_API_KEY").filter(|k| !k.is_empty()) {
            self.keys.push(ApiKeyConfig { name: "env".into(), key, access: ApiAccess::All });
        }
        self.pusher.iter_mut().for_each(|p| p.apply_env(env));
        process(&mut self.process, env);
        log(&mut self.log, env)
    }
}
