//! `business-worker`: a master running `count` worker processes of a built-in application (the
//! chat demo by default, or `app = "echo"`), built on the same entry point as any application.

use gw_business_worker::apps::{bench::Bench, chat::Chat};
use gw_business_worker::{App, Application, NoConfig};

fn main() -> std::process::ExitCode {
    App::with_worker_config(|_: &NoConfig, worker| -> Application {
        match worker.app.as_str() {
            "echo" => Bench.into(),
            _ => Chat::default().into(),
        }
    })
    .name("business-worker")
    .about(
        "Business worker: runs the application's event handlers for the clients the gateways route to it. \
         `start` runs a master with `count` worker processes; `reload` replaces them one at a time.",
    )
    .main()
}
