//! gw-gateway
