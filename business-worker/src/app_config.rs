//! The configuration of an application binary: the worker's own keys plus the application's typed
//! `[app_config]` section, loaded, overridden by `GW_*` variables and validated as one.

use gw_config::{DaemonConfig, EnvOverride, LogConfig, Problem, ProcessConfig, Validate, WorkerConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Name of the TOML section that holds the application's own settings.
const APP_SECTION: &str = "app_config";

/// The type of an application's `[app_config]` section.
///
/// Derive `serde::Deserialize` with `#[serde(deny_unknown_fields, default)]` and implement
/// [`Default`] for the defaults; override [`validate`](AppConfig::validate) to check values. Its
/// problems are reported together with those of the rest of the file (keys prefixed with
/// `app_config.`), and the process exits with code 64.
///
/// ```
/// use gw_business_worker::{AppConfig, Problem};
///
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields, default)]
/// struct Settings {
///     greeting: String,
/// }
///
/// impl Default for Settings {
///     fn default() -> Self {
///         Self { greeting: "hello".into() }
///     }
/// }
///
/// impl AppConfig for Settings {
///     fn validate(&self) -> Vec<Problem> {
///         if self.greeting.is_empty() {
///             return vec![Problem { key: "greeting".into(), reason: "must not be empty".into() }];
///         }
///         vec![]
///     }
/// }
/// ```
pub trait AppConfig: DeserializeOwned + Default + Send + 'static {
    /// Every problem with the values; empty when they are usable. Keys are relative to the section.
    fn validate(&self) -> Vec<Problem> {
        Vec::new()
    }
}

/// The settings of an application that has none: an `[app_config]` section must then be empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

impl AppConfig for NoConfig {}

/// A whole configuration file of an application binary.
#[derive(Debug, Clone, Default)]
pub(crate) struct Config<C> {
    /// Everything but `[app_config]`: registers, secret, `count`, logging, process files, ….
    pub worker: WorkerConfig,
    /// The `[app_config]` section (its defaults when the file has none).
    pub app: C,
    /// Why `[app_config]` could not be read as `C`; reported by `validate` together with every
    /// other problem rather than alone.
    app_error: Option<String>,
}

impl<'de, C: AppConfig> Deserialize<'de> for Config<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The worker's keys are read straight from the file (so errors keep their line numbers);
        // the section arrives as raw TOML and is typed here.
        let mut worker = WorkerConfig::deserialize(deserializer)?;
        let (app, app_error) = match worker.app_config.take() {
            None => (C::default(), None),
            Some(table) => match table.try_into::<C>() {
                Ok(app) => (app, None),
                Err(e) => (C::default(), Some(e.to_string().trim_end().to_string())),
            },
        };
        Ok(Self { worker, app, app_error })
    }
}

impl<C: AppConfig> Validate for Config<C> {
    fn validate(&self) -> Vec<Problem> {
        let mut problems = self.worker.validate();
        if let Some(reason) = &self.app_error {
            problems.push(Problem { key: APP_SECTION.into(), reason: reason.clone() });
        }
        problems.extend(
            self.app
                .validate()
                .into_iter()
                .map(|p| Problem { key: format!("{APP_SECTION}.{}", p.key), reason: p.reason }),
        );
        problems
    }
}

impl<C> EnvOverride for Config<C> {
    fn apply(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
        self.worker.apply(env)
    }
}

impl<C: AppConfig> DaemonConfig for Config<C> {
    fn log(&self) -> &LogConfig {
        &self.worker.log
    }

    fn node_name(&self) -> &str {
        &self.worker.name
    }

    fn process(&self) -> &ProcessConfig {
        &self.worker.process
    }

    fn grace(&self) -> std::time::Duration {
        self.worker.grace_period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Settings {
        greeting: String,
        repeat: u32,
    }

    impl Default for Settings {
        fn default() -> Self {
            Self { greeting: "hello".into(), repeat: 1 }
        }
    }

    impl AppConfig for Settings {
        fn validate(&self) -> Vec<Problem> {
            if self.repeat == 0 {
                vec![Problem { key: "repeat".into(), reason: "must be at least 1".into() }]
            } else {
                vec![]
            }
        }
    }

    fn load<C: AppConfig>(text: &str) -> Result<Config<C>, gw_config::ConfigError> {
        let dir = std::env::temp_dir().join(format!("gw-app-config-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = gw_config::load(Some(&path), |_| None);
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    #[test]
    fn the_section_is_typed_with_defaults_and_the_worker_keys_stay_where_they_were() {
        let c: Config<Settings> = load("name = \"w\"\ncount = 3\n[app_config]\ngreeting = \"hi\"\n").unwrap();
        assert_eq!(c.app, Settings { greeting: "hi".into(), repeat: 1 });
        assert_eq!((c.worker.name.as_str(), c.worker.count), ("w", 3));
        let c: Config<Settings> = load("name = \"w\"\n").unwrap();
        assert_eq!(c.app, Settings::default());
    }

    #[test]
    fn section_problems_are_reported_with_the_rest_of_the_file() {
        let err = load::<Settings>("count = 0\n[app_config]\nrepeat = 0\n").unwrap_err().to_string();
        assert!(err.contains("count: 0 is outside") && err.contains("app_config.repeat: must be at least 1"), "{err}");
        let err = load::<Settings>("count = 0\n[app_config]\ngretting = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("count: 0 is outside") && err.contains("app_config: unknown field `gretting`"), "{err}");
        let err = load::<Settings>("[app_config]\nrepeat = \"twice\"\n").unwrap_err().to_string();
        assert!(err.contains("app_config: invalid type: string \"twice\""), "{err}");
    }

    #[test]
    fn an_application_without_settings_rejects_any_key_in_the_section() {
        let err = load::<NoConfig>("[app_config]\ngreeting = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("app_config: unknown field `greeting`"), "{err}");
        load::<NoConfig>("[app_config]\n").unwrap();
    }
}
