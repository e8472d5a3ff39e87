//! `business-worker`: a master running `count` worker processes of a built-in application (the
//! chat demo by default, `app = "echo"`, or `app = "http"`: an HTTP endpoint in any language), built
//! on the same entry point as any application.
//!
//! It lives here rather than in `business-worker/` because it ships the chat app: the chat
//! handler implements the business worker's `Events`, so `gw-business-worker` cannot depend on
//! it, and this binary, like any application's, sits above both (the echo and http apps are in
//! `stock-apps/`).

use gw_business_worker::{App, Application, NoConfig};
use gw_chat_demo::Chat;
use gw_stock_apps::{Echo, HttpApp, HttpAppError};

fn main() -> std::process::ExitCode {
    App::try_with_worker_config(|_: &NoConfig, worker| -> Result<Application, HttpAppError> {
        Ok(match worker.app.as_str() {
            "echo" => Echo.into(),
            "http" => HttpApp::new(worker.http_app.clone())?.into(),
            _ => Chat::default().into(),
        })
    })
    .name("business-worker")
    .about(
        "Business worker: runs the application's event handlers for the clients the gateways route to it. \
         `start` runs a master with `count` worker processes; `reload` replaces them one at a time.",
    )
    .main()
}
