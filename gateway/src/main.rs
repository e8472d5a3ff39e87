//! `gateway`: holds client connections.

use std::sync::Arc;

use anyhow::Context;
use gw_config::GatewayConfig;
use gw_daemon::Spec;

const SPEC: Spec = Spec {
    binary: "gateway",
    about: "Gateway: holds client WebSocket connections, forwards their events to business workers and executes \
            the workers' and web backends' commands.",
    reloadable: false,
    has_connections: true,
};

fn main() -> std::process::ExitCode {
    gw_daemon::main(SPEC, |config: GatewayConfig, ctx| async move {
        let listeners = gw_gateway::Listeners::bind(&config).await?;
        let php = gw_gateway::gatewayworker::bind(&config).await?;
        let php_config = config.gatewayworker.clone();
        let gateway = gw_gateway::build(config, &listeners)?;
        let mut listen = gateway.listener_urls();
        listen.push(listeners.internal.local_addr().context("internal listener")?.to_string());
        ctx.publish(Arc::new(gw_gateway::GatewayNode { gateway: gateway.clone(), listen }));
        // PHP GatewayWorker's protocol, when configured, on its own internal listener.
        // Its links stay up until the gateway has closed its clients, so PHP workers get their
        // close events too.
        let php_down = tokio_util::sync::CancellationToken::new();
        let php = match (php, php_config) {
            (Some(socket), Some(cfg)) => {
                Some(tokio::spawn(gw_gateway::gatewayworker::serve(gateway.clone(), cfg, socket, php_down.clone())))
            }
            _ => None,
        };
        let served = gw_gateway::serve(gateway, listeners, ctx.shutdown.clone()).await;
        php_down.cancel();
        if let Some(php) = php {
            php.await.context("GatewayWorker listener")??;
        }
        served?;
        Ok(())
    })
}
