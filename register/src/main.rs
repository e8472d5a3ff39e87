//! `register`: the discovery daemon.

use std::sync::Arc;

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
        let listeners = gw_register::Listeners::bind(&config).await?;
        let registries = gw_register::Registries::default();
        ctx.publish(Arc::new(gw_register::RegisterNode::new(&config, &listeners, registries.clone())));
        gw_register::run_with(config, listeners, ctx.shutdown.clone(), registries).await?;
        Ok(())
    })
}
