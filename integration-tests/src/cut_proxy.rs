//! A TCP proxy in front of a gateway's WebSocket listener that can cut the network: every
//! connection through it reset at once (both sides see a reset, as when a phone changes
//! networks), and optionally no new connection accepted afterwards (the gateway unreachable
//! on this path), so a client must fail over to another gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A proxy on `127.0.0.1:0` to one upstream `ws://` URL.
pub struct CutProxy {
    /// `ws://` URL of the proxy.
    pub url: String,
    cut: tokio::sync::watch::Sender<u64>,
    down: Arc<AtomicBool>,
}

impl CutProxy {
    /// A proxy to the gateway listening at `ws_url` (`ws://ip:port/`).
    pub async fn start(ws_url: &str) -> Self {
        let upstream = ws_url.trim_start_matches("ws://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let down = Arc::new(AtomicBool::new(false));
        let is_down = down.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                // Deprecated because a non-zero linger blocks the thread on drop; zero does not.
                #[allow(deprecated)]
                client.set_linger(Some(Duration::ZERO)).unwrap();
                if is_down.load(Ordering::Acquire) {
                    continue; // reset at once
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                #[allow(deprecated)]
                server.set_linger(Some(Duration::ZERO)).unwrap();
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                    // Dropped with SO_LINGER 0: both sides get a reset.
                });
            }
        });
        Self { url, cut, down }
    }

    /// Resets every connection through the proxy now.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Resets every connection now, and every new one from now on.
    pub fn down(&self) {
        self.down.store(true, Ordering::Release);
        self.cut();
    }
}
