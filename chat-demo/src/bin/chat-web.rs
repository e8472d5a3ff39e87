//! `chat-web`: the chat demo's web backend on its own, for a cluster whose register, gateways and
//! business workers run as separate processes or containers (see `docker-compose.yml`). It serves
//! the chat page and the `/api/*` endpoints of [`gw_chat_demo::web`], pushing through a
//! `GatewayClient` that learns the gateways from the registers.
//!
//! Settings come from the environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GW_REGISTERS` | register addresses, comma-separated | `127.0.0.1:1236` |
//! | `GW_SECRET` | the cluster secret | empty (loopback-only clusters) |
//! | `CHAT_WEB_LISTEN` | address of the page and the API | `127.0.0.1:8080` |
//! | `CHAT_WS_URL` | WebSocket URL the page connects to | `ws://127.0.0.1:7272/` |
//! | `GW_LOG_LEVEL`, `GW_LOG_FORMAT` | logging, as for the daemons | `info`, `plain` |
//!
//! The page replaces a `127.0.0.1` host in `CHAT_WS_URL` with the host it was loaded from, and
//! `?ws=ws://host:port/` on the page URL picks another gateway.
//!
//! `chat-web healthcheck` asks the running backend at `CHAT_WEB_LISTEN` for `/api/config` and
//! exits 0 only if it answers 200 (for container health checks; no curl needed).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use gw_config::{LogConfig, LogFormat};
use gw_gateway_client::GatewayClient;

struct Settings {
    registers: Vec<String>,
    secret: String,
    listen: String,
    ws_url: String,
    log: LogConfig,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let registers: Vec<String> = var("GW_REGISTERS")
            .unwrap_or_else(|| gw_config::DEFAULT_REGISTER.to_string())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        anyhow::ensure!(!registers.is_empty(), "GW_REGISTERS names no register");
        let mut log = LogConfig::default();
        if let Some(level) = var("GW_LOG_LEVEL") {
            gw_config::check_log_level(&level).map_err(|reason| anyhow::anyhow!("GW_LOG_LEVEL: {reason}"))?;
            log.level = level;
        }
        log.format = match var("GW_LOG_FORMAT").as_deref() {
            None | Some("plain") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(other) => anyhow::bail!("GW_LOG_FORMAT {other:?} is not `plain` or `json`"),
        };
        Ok(Self {
            registers,
            secret: std::env::var("GW_SECRET").unwrap_or_default(),
            listen: var("CHAT_WEB_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into()),
            ws_url: var("CHAT_WS_URL").unwrap_or_else(|| "ws://127.0.0.1:7272/".into()),
            log,
        })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat-web: {e:#}");
            return ExitCode::from(gw_daemon::EXIT_CONFIG);
        }
    };
    match args.first().map(String::as_str) {
        None | Some("start") => {}
        Some("healthcheck") => return healthcheck(&settings.listen),
        Some("-V" | "--version") => {
            println!("chat-web {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("-h" | "--help" | "help") => {
            println!("usage: chat-web [start | healthcheck | --version]\n");
            println!("The chat demo's web backend. Settings from the environment: GW_REGISTERS, GW_SECRET,");
            println!("CHAT_WEB_LISTEN, CHAT_WS_URL, GW_LOG_LEVEL, GW_LOG_FORMAT.");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("chat-web: unknown command {other:?} (try --help)");
            return ExitCode::from(gw_daemon::EXIT_CONFIG);
        }
    }
    gw_daemon::init_tracing(&settings.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-web: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log = settings.log.clone();
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            gw_daemon::report_failure("chat-web", &log, &e);
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = gw_daemon::shutdown_on_signals();
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} (CHAT_WEB_LISTEN)", settings.listen))?;
    // The registers may come up after us (containers start in any order): keep trying.
    let mut delay = Duration::from_millis(200);
    let client = loop {
        let connect = GatewayClient::builder(settings.registers.clone())
            .secret(settings.secret.clone())
            .name("chat-web")
            .connect();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = connect => match r {
                Ok(c) => break c,
                // A wrong secret does not get better by retrying.
                Err(e @ gw_gateway_client::ClientError::AuthenticationFailed { .. }) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(registers = ?settings.registers, error = %e, retry_in = ?delay, "no register answered yet");
                }
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        ws_url = %settings.ws_url,
        gateways = ?client.connected_gateways(),
        "chat-web serving the chat page"
    );
    let app = gw_chat_demo::web::router(client.clone(), settings.ws_url);
    let stop = shutdown.clone();
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await?;
    client.shutdown().await;
    Ok(())
}

/// `GET /api/config` on our own listen address; 0 only on a 200 answer.
fn healthcheck(listen: &str) -> ExitCode {
    let fail = |why: String| {
        eprintln!("chat-web healthcheck: {why}");
        ExitCode::FAILURE
    };
    let addr: SocketAddr = match listen.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => return fail(format!("cannot resolve {listen}")),
    };
    // A wildcard listen address is reached on loopback.
    let target = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        SocketAddr::V6(a) if a.ip().is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
        a => a,
    };
    let timeout = Duration::from_secs(3);
    let mut stream = match TcpStream::connect_timeout(&target, timeout) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot connect to {target}: {e}")),
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!("GET /api/config HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return fail(format!("cannot send the request: {e}"));
    }
    let mut answer = Vec::new();
    if let Err(e) = stream.take(64 * 1024).read_to_end(&mut answer) {
        return fail(format!("no answer: {e}"));
    }
    let status_line = String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_string();
    if status_line.split_whitespace().nth(1) == Some("200") {
        ExitCode::SUCCESS
    } else {
        fail(format!("unexpected answer {status_line:?}"))
    }
}
