//! `cargo run --release`: the chat demo with register, gateway, business worker and web page in
//! one process. The demo itself is `chat-demo/` ([`gw_chat_demo::start`]); this is its command line.

use std::process::ExitCode;

use clap::Parser;

/// Chat demo: register, gateway, business worker and the chat page in one process.
#[derive(Debug, Parser)]
#[command(version = gw_daemon::VERSION)]
struct Args {
    /// Address of the chat page and the WebSocket listener (0.0.0.0 to reach the demo from other
    /// machines). The register and the gateway's internal listener have no secret in the demo, so
    /// they stay on 127.0.0.1 whatever this says.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port of the chat page.
    #[arg(long, default_value_t = 8080)]
    web_port: u16,
    /// Port of the WebSocket listener.
    #[arg(long, default_value_t = 7272)]
    ws_port: u16,
    /// Port of the register.
    #[arg(long, default_value_t = 1236)]
    register_port: u16,
    /// Port of the gateway's internal listener.
    #[arg(long, default_value_t = 2900)]
    internal_port: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    gw_daemon::init_tracing(&gw_config::LogConfig::default());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatewayrs: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = gw_chat_demo::DemoListeners::bind(
            &args.host,
            args.register_port,
            args.ws_port,
            args.internal_port,
            args.web_port,
        )
        .await?;
        let shutdown = gw_daemon::shutdown_on_signals();
        let (addrs, done) = gw_chat_demo::start(listeners, shutdown).await?;
        print!("{}", addrs.banner(&args.host));
        done.await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatewayrs: {}", gw_daemon::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
