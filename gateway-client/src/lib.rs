//! gw-gateway-client
