//! gw-register
