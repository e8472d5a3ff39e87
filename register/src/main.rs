//! `register`: the discovery daemon.

use std::sync::Arc;

use anyhow::Context;
use gw_config::RegisterConfig;
use gw_daemon::Spec;

const SPEC: Spec = Spec {
    binary: "register",
    about: "Register: service discovery. Gateways announce their internal address here; business workers and \
            gateway clients learn the gateway list from here.",
    reloadable: false,
    has_connections: false,
};

fn main() -> std::process::ExitCode {
    gw_daemon::main(SPEC, |config: RegisterConfig, ctx| async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let registry = Arc::new(gw_register::Registry::default());
        ctx.publish(Arc::new(gw_register::RegisterNode {
            registry: registry.clone(),
            name: config.name.clone(),
            listen: listener.local_addr()?.to_string(),
        }));
        // PHP GatewayWorker's register protocol, when configured, on its own listener.
        let php = match config.gatewayworker.clone() {
            Some(php) => {
                let socket = tokio::net::TcpListener::bind(&php.listen)
                    .await
                    .with_context(|| format!("cannot listen on {} (gatewayworker.listen)", php.listen))?;
                let registry = Arc::new(gw_register::Registry::default());
                Some(tokio::spawn(gw_register::gatewayworker::serve(php, socket, ctx.shutdown.clone(), registry)))
            }
            None => None,
        };
        gw_register::run_with(config, listener, ctx.shutdown.clone(), registry).await?;
        if let Some(php) = php {
            let _ = php.await;
        }
        Ok(())
    })
}
