//! The entry point of an application binary: your [`Events`] plus one line of `main` get the whole
//! `business-worker` command line (start, `-d`, stop, restart, reload, status), the TOML config
//! with a typed `[app_config]` section, `GW_*` overrides, a master with `count` processes, crash
//! restarts, zero-loss reload of the rebuilt binary, status and metrics.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use gw_config::WorkerConfig;
use gw_daemon::{ProcessRole, RunContext, Spec, supervisor};

use crate::app_config::{AppConfig, Config, NoConfig};
use crate::{Events, Worker};

/// Runs `events` as a business-worker application: parses the command line, loads the config and
/// runs the master or a worker process. The whole `main` of a binary whose application has no
/// settings of its own:
///
/// ```no_run
/// use gw_business_worker::{Context, Events, HandlerResult, Message};
///
/// struct Echo;
///
/// impl Events for Echo {
///     async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
///         ctx.send(msg).await?;
///         Ok(())
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     gw_business_worker::main(Echo)
/// }
/// ```
pub fn main(app: impl Into<Application>) -> ExitCode {
    let app = app.into();
    App::<NoConfig>::new(move |_| app).main()
}

/// An application ready to be served by a worker process: any [`Events`], with its type erased so
/// one binary can choose between several (as the stock binary does with `app = "chat" | "echo"`).
pub struct Application {
    serve: Box<dyn FnOnce(WorkerConfig, usize, RunContext) -> LocalFuture>,
}

/// A worker process's run. `anyhow` only here, at the edge: this is what `gw_daemon::main`, the
/// binary's `main`, runs.
type LocalFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>>>>;

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Application")
    }
}

impl<E: Events> From<E> for Application {
    fn from(events: E) -> Self {
        Self { serve: Box::new(move |config, index, ctx| Box::pin(worker_process(config, index, ctx, events))) }
    }
}

type Factory<C> = Box<dyn FnOnce(&C, &WorkerConfig) -> anyhow::Result<Application>>;

/// An application binary whose application is built from its `[app_config]` section `C`.
///
/// ```no_run
/// use gw_business_worker::{App, AppConfig, Context, Events, HandlerResult, Message};
///
/// #[derive(Debug, Default, serde::Deserialize)]
/// #[serde(deny_unknown_fields, default)]
/// struct Settings {
///     prefix: String,
/// }
///
/// impl AppConfig for Settings {}
///
/// struct Prefixer(String);
///
/// impl Events for Prefixer {
///     async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
///         ctx.send(format!("{}{}", self.0, msg.as_text().unwrap_or_default())).await?;
///         Ok(())
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     App::new(|settings: &Settings| Prefixer(settings.prefix.clone())).main()
/// }
/// ```
pub struct App<C = NoConfig> {
    factory: Factory<C>,
    name: Option<&'static str>,
    about: Option<&'static str>,
}

impl<C> std::fmt::Debug for App<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<C: AppConfig> App<C> {
    /// An application built in each worker process from its validated settings.
    pub fn new<A: Into<Application>>(factory: impl FnOnce(&C) -> A + 'static) -> Self {
        Self::with_worker_config(move |settings, _| factory(settings))
    }

    /// Like [`new`](Self::new), with the worker's own configuration too (its `name`, `app`, …).
    pub fn with_worker_config<A: Into<Application>>(factory: impl FnOnce(&C, &WorkerConfig) -> A + 'static) -> Self {
        Self::try_with_worker_config(move |settings, worker| {
            Ok::<_, std::convert::Infallible>(factory(settings, worker))
        })
    }

    /// Like [`with_worker_config`](Self::with_worker_config), for an application whose construction
    /// can fail: the error is logged by the worker process, which exits non-zero (and its master
    /// restarts it, up to `restart_limit`).
    pub fn try_with_worker_config<A, E>(factory: impl FnOnce(&C, &WorkerConfig) -> Result<A, E> + 'static) -> Self
    where
        A: Into<Application>,
        E: std::error::Error + Send + Sync + 'static,
    {
        Self {
            factory: Box::new(move |settings, worker| Ok(factory(settings, worker)?.into())),
            name: None,
            about: None,
        }
    }

    /// The program name in `--help` and messages (default: the executable's file name).
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }

    /// The description in `--help`.
    pub fn about(mut self, about: &'static str) -> Self {
        self.about = Some(about);
        self
    }

    /// Runs the command line; returns the process's exit code (64 for a bad configuration).
    pub fn main(self) -> ExitCode {
        let spec = Spec {
            binary: self.name.unwrap_or_else(executable_name),
            about: self.about.unwrap_or(
                "A business-worker application: runs its event handlers for the clients the gateways route to it. \
                 `start` runs a master with `count` worker processes; `reload` replaces them one at a time with \
                 the binary now on disk.",
            ),
            reloadable: true,
            has_connections: false,
        };
        let factory = self.factory;
        gw_daemon::main(spec, move |config: Config<C>, ctx: RunContext| async move {
            match ctx.role {
                ProcessRole::Main => Ok(supervisor::run(config.worker, ctx).await?),
                ProcessRole::Child { index, .. } => {
                    let app = factory(&config.app, &config.worker)?;
                    (app.serve)(config.worker, index, ctx).await
                }
            }
        })
    }
}

/// The executable's file name, for messages; it lives as long as the process.
fn executable_name() -> &'static str {
    let name = std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "business-worker".into());
    Box::leak(name.into_boxed_str())
}

/// One worker process under the master: serves `events` until stopped, and tells the master on
/// stdout once it is linked to every gateway.
async fn worker_process<E: Events>(
    mut config: WorkerConfig,
    index: usize,
    ctx: RunContext,
    events: E,
) -> anyhow::Result<()> {
    config.name = format!("{}-{index}", config.name);
    // A worker process lives only as long as its master.
    supervisor::stop_when_orphaned(ctx.shutdown.clone());
    let worker = Worker::new(config, events).on_ready(supervisor::announce_ready);
    ctx.publish(Arc::new(worker.node()));
    worker.run(ctx.shutdown.clone()).await;
    Ok(())
}
