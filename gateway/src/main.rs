//! `gateway`: holds client connections.

use anyhow::Context;
use gw_config::GatewayConfig;

fn main() -> std::process::ExitCode {
    gw_daemon::main("gateway", |config: GatewayConfig, shutdown| async move {
        let public = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
        let internal = tokio::net::TcpListener::bind(&config.internal_listen)
            .await
            .with_context(|| format!("cannot listen on {} (internal_listen)", config.internal_listen))?;
        gw_gateway::run(config, gw_gateway::Listeners { public, internal }, shutdown).await?;
        Ok(())
    })
}
