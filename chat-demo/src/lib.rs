//! gw-chat-demo
