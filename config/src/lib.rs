//! gw-config
