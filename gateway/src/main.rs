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
        let public = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
        let internal = tokio::net::TcpListener::bind(&config.internal_listen)
            .await
            .with_context(|| format!("cannot listen on {} (internal_listen)", config.internal_listen))?;
        let listen = vec![public.local_addr()?.to_string(), internal.local_addr()?.to_string()];
        let listeners = gw_gateway::Listeners { public, internal };
        let gateway = gw_gateway::build(config, &listeners)?;
        ctx.publish(Arc::new(gw_gateway::GatewayNode { gateway: gateway.clone(), listen }));
        gw_gateway::serve(gateway, listeners, ctx.shutdown.clone()).await?;
        Ok(())
    })
}
