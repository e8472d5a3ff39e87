//! The application's own settings: the `[app_config]` section of the config file. Unknown keys
//! and bad values are reported with every other problem of the file, and the process exits 64.

use gw_business_worker::{AppConfig, Problem};

/// `[app_config]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Sent to each client when it connects, followed by its client id.
    pub greeting: String,
    /// Put before every answer to a client's message.
    pub reply_prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self { greeting: "welcome".into(), reply_prefix: String::new() }
    }
}

impl AppConfig for Settings {
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.greeting.trim().is_empty() {
            problems.push(Problem { key: "greeting".into(), reason: "must not be empty".into() });
        }
        problems
    }
}
