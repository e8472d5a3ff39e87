//! `register`: the discovery daemon.

use anyhow::Context;
use gw_config::RegisterConfig;

fn main() -> std::process::ExitCode {
    gw_daemon::main("register", |config: RegisterConfig, shutdown| async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        gw_register::run(config, listener, shutdown).await?;
        Ok(())
    })
}
