//! One peer's link to one register, kept up forever: connect, send a hello (a gateway's
//! `Announce`, a client's `Subscribe`), answer heartbeats, hand gateway lists to the owner, and on
//! any failure reconnect with backoff. Gateways, gateway clients and business workers all run it.

use std::time::Duration;

use gw_config::LinkConfig;
use gw_proto::{FromRegister, GatewayInfo, ToRegister};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;

use crate::{Backoff, HandshakeOptions, LinkError};

/// Which register to keep a link to, and what to say to it.
#[derive(Debug)]
pub struct RegisterLink<'a> {
    /// The register's address.
    pub address: &'a str,
    pub handshake: &'a HandshakeOptions,
    /// Frame limit, heartbeats and reconnect backoff.
    pub link: &'a LinkConfig,
    /// Sent after every handshake: `Announce` for a gateway, `Subscribe` for a client.
    pub hello: ToRegister,
}

/// What the link tells its owner.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegisterEvent {
    /// A handshake succeeded and the hello was sent.
    Up,
    /// The register's complete current gateway list (not a delta).
    Gateways(Vec<GatewayInfo>),
    /// The register refused the handshake (wrong secret, protocol version or role). Retrying
    /// cannot help until the configuration changes, so owners that wait for a register give up
    /// on this instead of waiting out their timeout.
    Refused(String),
}

/// Keeps a link to one register until `stop` or `leave` is cancelled.
///
/// `stop` ends the loop at once, wherever it is. `leave` ends a link or a connection attempt, but
/// not a backoff wait in progress: the loop ends when that wait is over. An owner with one token
/// passes it as both.
///
/// Failures are logged (a warning for the first of a run, then debug), within the caller's span:
/// instrument the future with the peer's identity.
///
/// # Examples
///
/// ```no_run
/// # async fn example(handshake: gw_link::HandshakeOptions, stop: tokio_util::sync::CancellationToken) {
/// use gw_link::{RegisterEvent, RegisterLink};
/// let link = gw_config::LinkConfig::default();
/// let target = RegisterLink { address: "127.0.0.1:1238", handshake: &handshake, link: &link, hello: gw_proto::ToRegister::Subscribe };
/// gw_link::keep_register_link(target, &stop, &stop, |event| {
///     if let RegisterEvent::Gateways(list) = event {
///         println!("{} gateways", list.len());
///     }
/// })
/// .await;
/// # }
/// ```
pub async fn keep_register_link(
    target: RegisterLink<'_>,
    stop: &CancellationToken,
    leave: &CancellationToken,
    mut on_event: impl FnMut(RegisterEvent),
) {
    let mut backoff = Backoff::new(target.link.reconnect_min, target.link.reconnect_max);
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            _ = leave.cancelled() => return,
            r = link_once(&target, &mut backoff, &mut on_event) => r,
        };
        if let Err(e) = result {
            if let LinkError::Handshake(refusal) = &e {
                on_event(RegisterEvent::Refused(refusal.to_string()));
            }
            failures += 1;
            // Say it loudly once, then quietly while the register stays away.
            if failures == 1 {
                tracing::warn!(error = %e, "register link failed; retrying with backoff");
            } else {
                tracing::debug!(error = %e, failures, "register still unreachable");
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One link, from connect until it fails.
async fn link_once(
    target: &RegisterLink<'_>,
    backoff: &mut Backoff,
    on_event: &mut impl FnMut(RegisterEvent),
) -> Result<(), LinkError> {
    let max_frame = target.link.max_frame;
    let mut link = crate::connect(target.address, target.handshake).await?;
    send(&mut link.writer, &target.hello, max_frame).await?;
    on_event(RegisterEvent::Up);
    backoff.reset();
    let mut ping = tokio::time::interval(target.link.heartbeat_interval);
    let timeout = target.link.heartbeat_timeout;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() > timeout {
                    return Err(LinkError::HeartbeatTimeout(timeout));
                }
                send(&mut link.writer, &ToRegister::Ping, max_frame).await?;
            }
            msg = link.reader.read::<FromRegister>() => {
                last_heard = tokio::time::Instant::now();
                match msg? {
                    None => return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                    Some(FromRegister::Gateways { list }) => on_event(RegisterEvent::Gateways(list)),
                    Some(FromRegister::Ping) => send(&mut link.writer, &ToRegister::Pong, max_frame).await?,
                    Some(FromRegister::Pong) => {}
                }
            }
        }
    }
}

/// Writes one frame; a register that stops reading for 5 s counts as gone.
async fn send(w: &mut OwnedWriteHalf, msg: &ToRegister, max: usize) -> Result<(), LinkError> {
    let mut out = Vec::with_capacity(16);
    gw_proto::encode_frame(msg, &mut out, max)?;
    tokio::time::timeout(Duration::from_secs(5), w.write_all(&out))
        .await
        .map_err(|_| LinkError::Io(std::io::ErrorKind::TimedOut.into()))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gw_proto::Role;
    use tokio::net::TcpListener;

    fn options(role: Role, node: &str) -> HandshakeOptions {
        HandshakeOptions {
            secret: b"secret".to_vec(),
            role,
            node: node.into(),
            max_frame: 1 << 16,
            timeout: Duration::from_secs(5),
        }
    }

    /// A fake register: takes one link, checks the hello, sends a list, then drops the link.
    async fn serve_once(listener: &TcpListener, list: Vec<GatewayInfo>) {
        let (stream, _) = listener.accept().await.unwrap();
        let mut link = crate::accept(stream, &options(Role::Register, "register"), &[Role::Client]).await.unwrap();
        let hello = link.reader.read::<ToRegister>().await.unwrap();
        assert!(matches!(hello, Some(ToRegister::Subscribe)), "{hello:?}");
        let mut out = Vec::new();
        gw_proto::encode_frame(&FromRegister::Gateways { list }, &mut out, 1 << 16).unwrap();
        link.writer.write_all(&out).await.unwrap();
    }

    #[tokio::test]
    async fn reconnects_after_a_lost_link_and_stops_when_cancelled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let handshake = options(Role::Client, "client");
        let link = LinkConfig {
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(20),
            ..LinkConfig::default()
        };
        let stop = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let target = RegisterLink {
                    address: &address,
                    handshake: &handshake,
                    link: &link,
                    hello: ToRegister::Subscribe,
                };
                keep_register_link(target, &stop, &stop, |event| {
                    let _ = tx.send(event);
                })
                .await;
            })
        };
        for n in 0..2 {
            let gateway = GatewayInfo { address: format!("127.0.0.1:{}", 7000 + n), name: format!("gw{n}") };
            serve_once(&listener, vec![gateway.clone()]).await;
            assert!(matches!(rx.recv().await, Some(RegisterEvent::Up)));
            match rx.recv().await {
                Some(RegisterEvent::Gateways(list)) => assert_eq!(list, vec![gateway]),
                other => panic!("expected a gateway list, got {other:?}"),
            }
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), driver).await.expect("stops when cancelled").unwrap();
    }
}
