//! `business-worker`: runs a built-in application (the chat demo by default).

use gw_business_worker::apps::{bench::Bench, chat::Chat};
use gw_config::WorkerConfig;

fn main() -> std::process::ExitCode {
    gw_daemon::main("business-worker", |config: WorkerConfig, shutdown| async move {
        match config.app.as_str() {
            "echo" => gw_business_worker::run(config, Bench, shutdown).await?,
            _ => gw_business_worker::run(config, Chat::default(), shutdown).await?,
        }
        Ok(())
    })
}
