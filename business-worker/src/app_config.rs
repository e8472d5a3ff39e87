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
    /// Why keys of `[app_config]` could not be read as `C` (unknown, or of the wrong type);
    /// reported by `validate` together with every other problem rather than alone.
    app_errors: Vec<Problem>,
}

/// At most this many unknown or mistyped keys are collected from `[app_config]`.
const MAX_SECTION_ERRORS: usize = 32;

impl<'de, C: AppConfig> Deserialize<'de> for Config<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The worker's keys are read straight from the file (so errors keep their line numbers);
        // the section arrives as raw TOML and is typed here.
        let mut worker = WorkerConfig::deserialize(deserializer)?;
        let (app, app_errors) = match worker.app_config.take() {
            None => (C::default(), Vec::new()),
            Some(table) => typed(table),
        };
        Ok(Self { worker, app, app_errors })
    }
}

/// Types the section, collecting every key that does not fit `C` at once: serde stops at the
/// first, so each failing key is set aside and the rest read again, until it reads. What is left
/// is then typed (the set-aside keys at their defaults), so `C::validate` checks the values in
/// the same round as the unknown keys are reported.
fn typed<C: AppConfig>(mut table: toml::Table) -> (C, Vec<Problem>) {
    let mut errors = Vec::new();
    loop {
        let e = match serde_path_to_error::deserialize::<_, C>(toml::Value::Table(table.clone())) {
            Ok(app) => return (app, errors),
            Err(e) => e,
        };
        let keys = map_keys(e.path());
        let key = std::iter::once(APP_SECTION).chain(keys.iter().map(String::as_str)).collect::<Vec<_>>().join(".");
        errors.push(Problem { key, reason: e.inner().to_string().trim_end().to_string() });
        // An error about the section as a whole (a missing key) cannot be set aside.
        if errors.len() >= MAX_SECTION_ERRORS || !remove(&mut table, &keys) {
            return (C::default(), errors);
        }
    }
}

/// The table keys leading to the failing value, up to the first list (a bad element sets its
/// whole list aside).
fn map_keys(path: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment;
    path.iter()
        .map_while(|s| match s {
            Segment::Map { key } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

/// Removes the value at `keys`; false if there is none.
fn remove(table: &mut toml::Table, keys: &[String]) -> bool {
    match keys {
        [] => false,
        [last] => table.remove(last).is_some(),
        [first, rest @ ..] => match table.get_mut(first) {
            Some(toml::Value::Table(inner)) => remove(inner, rest),
            _ => table.remove(first).is_some(),
        },
    }
}

impl<C: AppConfig> Validate for Config<C> {
    fn validate(&self) -> Vec<Problem> {
        let mut problems = self.worker.validate();
        problems.extend(self.app_errors.iter().cloned());
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
        assert!(
            err.contains("count: 0 is outside") && err.contains("app_config.gretting: unknown field `gretting`"),
            "{err}"
        );
        let err = load::<Settings>("[app_config]\nrepeat = \"twice\"\n").unwrap_err().to_string();
        assert!(err.contains("app_config.repeat: invalid type: string \"twice\""), "{err}");
    }

    #[test]
    fn an_application_without_settings_rejects_any_key_in_the_section() {
        let err = load::<NoConfig>("[app_config]\ngreeting = \"x\"\nfarewell = 1\n").unwrap_err().to_string();
        assert!(err.contains("app_config.greeting: unknown field `greeting`"), "{err}");
        assert!(err.contains("app_config.farewell: unknown field `farewell`"), "{err}");
        load::<NoConfig>("[app_config]\n").unwrap();
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_values_of_the_section_come_in_one_round() {
        let text = "[app_config]\ncolour = \"red\"\nrepeat = 0\nshade = 3\n";
        let err = load::<Settings>(text).unwrap_err().to_string();
        for needle in [
            "app_config.colour: unknown field `colour`",
            "app_config.shade: unknown field `shade`",
            "app_config.repeat: must be at least 1",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in\n{err}");
        }
        let err = load::<Settings>("[app_config]\nrepeat = \"twice\"\ngreeting = 5\ncolour = 1\n").unwrap_err();
        let err = err.to_string();
        assert!(err.contains("app_config.repeat: invalid type: string \"twice\""), "{err}");
        assert!(err.contains("app_config.greeting: invalid type: integer `5`"), "{err}");
        assert!(err.contains("app_config.colour: unknown field"), "{err}");
    }

    #[test]
    fn a_nested_table_names_the_nested_key() {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct Outer {
            inner: Settings,
            names: Vec<String>,
        }
        impl AppConfig for Outer {}
        let err =
            load::<Outer>("[app_config]\nnames = [\"a\", 2]\n[app_config.inner]\nrepat = 2\n").unwrap_err().to_string();
        assert!(err.contains("app_config.inner.repat: unknown field `repat`"), "{err}");
        assert!(err.contains("app_config.names: invalid type: integer `2`"), "{err}");
    }
}
