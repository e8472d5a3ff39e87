//! A TCP proxy in front of a gateway's WebSocket listener that can cut the network: every
//! connection through it reset at once (both sides see a reset, as when a phone changes
//! networks), and optionally no new connection accepted afterwards (the gateway unreachable
//! on this path), so a client must fail over to another gateway. Before a cut it can swallow
//! what clients send (the gateway never reads it, as with bytes in flight on a network that
//! dies), while the gateway's side still gets through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A proxy on `127.0.0.1:0` to one upstream `ws://` URL.
pub struct CutProxy {
    /// `ws://` URL of the proxy.
    pub url: String,
    cut: tokio::sync::watch::Sender<u64>,
    down: Arc<AtomicBool>,
    /// The number of cuts so far plus one while swallowing (the connections made since that
    /// cut swallow); 0: not swallowing.
    swallow: Arc<AtomicU64>,
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
        let swallow = Arc::new(AtomicU64::new(0));
        let swallowing = swallow.clone();
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
                let era = *cuts.borrow_and_update() + 1;
                let swallowing = swallowing.clone();
                tokio::spawn(async move {
                    let (mut client_in, mut client_out) = client.split();
                    let (mut server_in, mut server_out) = server.split();
                    let up = async {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = client_in.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if swallowing.load(Ordering::Acquire) != era {
                                server_out.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = tokio::io::copy(&mut server_in, &mut client_out) => {}
                        _ = cuts.changed() => {}
                    }
                    // Dropped with SO_LINGER 0: both sides get a reset.
                });
            }
        });
        Self { url, cut, down, swallow }
    }

    /// Resets every connection through the proxy now (and stops swallowing).
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// From now until the next cut, what clients send is read and dropped: the gateway never
    /// sees it, while what the gateway sends still reaches them.
    pub fn swallow(&self) {
        self.swallow.store(*self.cut.borrow() + 1, Ordering::Release);
    }

    /// Resets every connection now, and every new one from now on.
    pub fn down(&self) {
        self.down.store(true, Ordering::Release);
        self.cut();
    }
}
