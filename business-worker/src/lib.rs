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
//! which is itself built that way. To run a worker inside a process of your own (tests, a
//! one-process launcher), use [`Worker`].

mod acks;
mod app;
mod app_config;
mod client_task;
mod dispatch;
mod events;
mod node;
mod session_writes;
mod worker;

pub use app::{App, Application, main};
pub use app_config::{AppConfig, NoConfig};
pub use events::{Context, Events, HandlerResult, Message, ServerData, WebSocketRequest, WorkerContext};
pub use gw_config::{Problem, WorkerConfig};
pub use gw_daemon::MetricFamily;
pub use gw_gateway_client::{Answer, ClientError, ClientId, CloseReason, GatewayClient, Payload, Session};
pub use gw_proto::Protocol;
pub use worker::{Worker, WorkerStats};
