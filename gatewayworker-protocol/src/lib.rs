//! PHP GatewayWorker's wire format, sans-IO: no sockets, no clocks.
//!
//! What a PHP `BusinessWorker`, `Lib\Gateway` and the web backends' `GatewayClient` speak, so the
//! gateway and register can serve them unmodified:
//! - [`packet`]: the 28-byte big-endian header of `GatewayProtocol.php` with its ext data and body;
//! - [`php`]: PHP `serialize()` / `unserialize()` of plain values (no objects, no references),
//!   with depth, length and element-count limits, and their bridge to JSON sessions;
//! - [`register`]: the register's newline-delimited JSON messages (`Register.php`);
//! - [`client_id`]: the 20-hex-digit client id of `Lib/Context.php`.

pub mod client_id;
pub mod packet;
pub mod php;
pub mod register;

pub use client_id::PhpClientId;
pub use packet::{Cmd, Header, Packet, PacketDecoder, PacketError};
pub use php::{Limits, PhpError, Value};
