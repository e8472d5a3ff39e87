//! `gateway`: holds client connections.

use std::sync::Arc;

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
        let gateway = gw_gateway::build(config, &listeners)?;
        ctx.publish(Arc::new(gw_gateway::GatewayNode::new(gateway.clone())));
        gw_gateway::serve(gateway, listeners, ctx.shutdown.clone()).await?;
        Ok(())
    })
}
