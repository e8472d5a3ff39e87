//! `http-api`: the HTTP push API daemon.

use std::sync::Arc;

use anyhow::Context;
use gw_config::HttpApiConfig;
use gw_daemon::Spec;

const SPEC: Spec = Spec {
    binary: "http-api",
    about: "HTTP push API: serves the whole Gateway API over HTTP with JSON (POST /v1/<call>, \
            /v1/batch, /openapi.json) for backends in any language. Stateless: run as many as you like.",
    reloadable: false,
    has_connections: false,
};

fn main() -> std::process::ExitCode {
    gw_daemon::main(SPEC, |config: HttpApiConfig, ctx| async move {
        let listener = gw_link::listener::listen(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
        let api = gw_http_api::Api::start(&config)?;
        ctx.publish(Arc::new(gw_http_api::HttpApiNode {
            api: api.clone(),
            name: config.name.clone(),
            listen: listener.local_addr()?.to_string(),
        }));
        gw_http_api::serve(api, listener, ctx.shutdown.clone()).await?;
        Ok(())
    })
}
