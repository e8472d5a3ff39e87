//! `my-app`: a business-worker application. `main` is one line; the handlers are in `events.rs`
//! and the `[app_config]` section of the config file in `settings.rs`.

mod events;
mod settings;

fn main() -> std::process::ExitCode {
    gw_business_worker::App::new(|settings: &settings::Settings| events::MyApp::new(settings)).main()
}
