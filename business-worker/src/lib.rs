//! The business worker: connects to every register and gateway, receives client events and runs
//! the application's [`Events`] handler; the handler talks back through the Gateway API
//! ([`Context::gateway`], the same [`GatewayClient`] web backends use).
//!
//! A handler that returns an error or panics is logged with the client id and the worker goes on
//! serving everyone else (PHP's worker process dies instead).
//!
//! An application binary is its [`Events`] plus one line of `main`: [`main`]`(MyApp)`, or
//! [`App::new`] when the application is built from its typed `[app_config]` section. Either gets
//! the whole command line, configuration and process model of the stock `business-worker` binary,
//! which is itself built that way.

mod acks;
mod app;
mod app_config;
pub mod apps;
mod client_task;
mod dispatch;
mod events;
pub mod master;
mod node;
mod runtime;
mod session_writes;
mod totals;

pub use app::{App, Application, main};
pub use app_config::{APP_SECTION, AppConfig, Config, NoConfig};
pub use events::{Context, Events, HandlerResult, Message, ServerData, WebSocketRequest, WorkerContext};
pub use gw_config::{Problem, WorkerConfig};
pub use gw_gateway_client::{Answer, ClientError, CloseReason, GatewayClient, Payload, Session};
pub use node::WorkerNode;
pub use runtime::{WorkerStats, run, run_with, run_with_stats};
