//! One peer's link to one register, kept up forever: connect, send a hello (a gateway's
//! `Announce`, a client's `Subscribe`), answer heartbeats, hand gateway lists to the owner, and on
//! any failure reconnect with backoff. Gateways, gateway clients and business workers all run it.

use gw_config::LinkConfig;
use gw_proto::{FromRegister, GatewayInfo, ToRegister};
use tokio_util::sync::CancellationToken;

use crate::engine::{Ended, Handler, LinkEngine, LinkOptions};
use crate::wire::RegisterPeerSide;
use crate::{Attempt, HandshakeOptions, LinkError, keep_dialing};

/// Which register to keep a link to, and what to say to it.
#[derive(Debug)]
pub struct RegisterLink<'a> {
    /// The register's address.
    pub address: &'a str,
    /// Secret, role and node name of this end.
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
/// `stop` ends the loop at once, wherever it is. `leave` ends a link or a connection attempt
/// (a link is closed gracefully) and then the loop. An owner with one token passes it as both.
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
    on_event: impl FnMut(RegisterEvent) + Send,
) {
    let on_event = std::sync::Mutex::new(on_event);
    keep_dialing(
        "register",
        target.link,
        stop,
        || async {
            let mut connected = false;
            let result = link_once(&target, leave, &mut connected, &on_event).await;
            if let Err(LinkError::Handshake(refusal)) = &result {
                (on_event.lock().expect("event callback lock"))(RegisterEvent::Refused(refusal.to_string()));
            }
            Attempt { connected, result }
        },
        || !leave.is_cancelled(),
    )
    .await;
}

/// Hands what the register says to the owner.
struct Listener<'a, F> {
    on_event: &'a std::sync::Mutex<F>,
}

impl<F: FnMut(RegisterEvent) + Send> Handler<RegisterPeerSide> for Listener<'_, F> {
    async fn on_message(&mut self, msg: FromRegister) -> Result<(), LinkError> {
        if let FromRegister::Gateways { list } = msg {
            (self.on_event.lock().expect("event callback lock"))(RegisterEvent::Gateways(list));
        }
        Ok(())
    }
}

/// One link, from connect until it fails or `leave` is cancelled.
async fn link_once<F: FnMut(RegisterEvent) + Send>(
    target: &RegisterLink<'_>,
    leave: &CancellationToken,
    connected: &mut bool,
    on_event: &std::sync::Mutex<F>,
) -> Result<(), LinkError> {
    let link = tokio::select! {
        _ = leave.cancelled() => return Ok(()),
        link = crate::connect(target.address, target.handshake) => link?,
    };
    *connected = true;
    let engine = LinkEngine::<RegisterPeerSide>::new(LinkOptions::from(target.link), 16);
    // The hello goes first, ahead of any ping.
    let _ = engine.sender().try_send(target.hello.clone());
    (on_event.lock().expect("event callback lock"))(RegisterEvent::Up);
    match engine.run(link.reader, link.writer, &mut Listener { on_event }, leave).await? {
        // A register never closes a healthy link: its leaving is a failure to retry.
        Ended::Finished => Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        Ended::Closed { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gw_proto::Role;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
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
