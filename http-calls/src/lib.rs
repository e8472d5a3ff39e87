//! `gw-http-calls`: the Gateway API's calls as JSON, shared by the HTTP push API (`http-api`),
//! which serves them, and the `http` application of the stock business worker, whose endpoint
//! answers with them. Argument types check themselves while they are parsed ([`types`]); each
//! call runs one `GatewayClient` method and answers `{"value", "missing"}` ([`calls::Reply`]).
//!
//! A crate of its own so that what uses the calls compiles neither the HTTP server nor the
//! daemon that serves them.

pub mod calls;
pub mod types;
