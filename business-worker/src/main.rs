//! `business-worker`: a master running `count` worker processes of a built-in application (the
//! chat demo by default, `app = "echo"`, or `app = "http"`: an HTTP endpoint in any language).

use std::sync::Arc;

use gw_business_worker::apps::{bench::Bench, chat::Chat, http::HttpApp};
use gw_business_worker::{Events, master};
use gw_config::WorkerConfig;
use gw_daemon::{ProcessRole, RunContext, Spec};

const SPEC: Spec = Spec {
    binary: "business-worker",
    about: "Business worker: runs the application's event handlers for the clients the gateways route to it. \
            `start` runs a master with `count` worker processes; `reload` replaces them one at a time.",
    reloadable: true,
    has_connections: false,
};

fn main() -> std::process::ExitCode {
    gw_daemon::main(SPEC, |config: WorkerConfig, ctx| async move {
        match ctx.role {
            ProcessRole::Main => master::run_master(config, ctx).await,
            ProcessRole::Child { index, .. } => match config.app.as_str() {
                "echo" => child(config, index, ctx, Bench).await,
                "http" => {
                    let app = HttpApp::new(config.http_app.clone())?;
                    child(config, index, ctx, app).await
                }
                _ => child(config, index, ctx, Chat::default()).await,
            },
        }
    })
}

async fn child<E: Events>(mut config: WorkerConfig, index: usize, ctx: RunContext, events: E) -> anyhow::Result<()> {
    config.name = format!("{}-{index}", config.name);
    // A worker process lives only as long as its master: if the master dies (kill -9), stop
    // gracefully instead of serving on unsupervised.
    let master = nix::unistd::getppid();
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            if nix::unistd::getppid() != master {
                tracing::warn!("master process gone; stopping this worker process");
                shutdown.cancel();
                return;
            }
        }
    });
    let stats = Arc::new(gw_business_worker::WorkerStats::default());
    ctx.publish(Arc::new(gw_business_worker::WorkerNode { name: config.name.clone(), stats: stats.clone() }));
    gw_business_worker::run_with(config, events, ctx.shutdown.clone(), stats, |_| {
        println!("{}", master::READY_LINE);
    })
    .await?;
    Ok(())
}
