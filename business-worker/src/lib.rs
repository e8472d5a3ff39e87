//! gw-business-worker
