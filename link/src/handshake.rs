//! The handshake of `gw_proto::handshake` over a TCP stream, with a timeout.

use std::time::Duration;

use gw_proto::{Acceptor, Connector, Role, codec, handshake::PeerIdentity};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::{FrameReader, LinkError, random_nonce};

/// What both sides need to run a handshake.
#[derive(Debug, Clone)]
pub struct HandshakeOptions {
    /// The shared cluster secret (never sent).
    pub secret: Vec<u8>,
    /// This end's role.
    pub role: Role,
    /// This end's node name, shown in the peer's logs.
    pub node: String,
    /// Frame limit for the link once authenticated.
    pub max_frame: usize,
    /// Time allowed for the whole handshake.
    pub timeout: Duration,
}

impl HandshakeOptions {
    /// This end's options from its configuration: the cluster secret, its role and node name,
    /// and the `[link]` frame limit and handshake timeout.
    pub fn new(secret: &str, role: Role, node: &str, link: &gw_config::LinkConfig) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
            role,
            node: node.to_string(),
            max_frame: link.max_frame,
            timeout: link.handshake_timeout,
        }
    }
}

/// An authenticated link, ready for messages.
#[derive(Debug)]
pub struct Link {
    /// Frames from the peer (bytes already read past the handshake included).
    pub reader: FrameReader<OwnedReadHalf>,
    /// The socket's writing half.
    pub writer: OwnedWriteHalf,
    /// Who the peer proved to be.
    pub peer: PeerIdentity,
}

async fn send<T: Serialize>(w: &mut OwnedWriteHalf, msg: &T, max: usize) -> Result<(), LinkError> {
    let mut buf = Vec::with_capacity(128);
    codec::encode_frame(msg, &mut buf, max)?;
    w.write_all(&buf).await?;
    Ok(())
}

async fn next_frame(r: &mut FrameReader<OwnedReadHalf>) -> Result<bytes::BytesMut, LinkError> {
    r.read_frame().await?.ok_or(LinkError::ClosedDuringHandshake)
}

/// Runs the accepting side. On a failed verification the peer is told why (never the secret or a
/// proof) before the error is returned; the caller logs it and drops the stream.
pub async fn accept(stream: TcpStream, opts: &HandshakeOptions, allowed: &[Role]) -> Result<Link, LinkError> {
    accept_within(stream, opts, allowed, opts.timeout).await
}

/// [`accept`] with its own deadline instead of `opts.timeout` (shorter for an address over its
/// failed-handshake budget, see [`Permit::timeout`](crate::Permit::timeout)).
pub async fn accept_within(
    stream: TcpStream,
    opts: &HandshakeOptions,
    allowed: &[Role],
    timeout: Duration,
) -> Result<Link, LinkError> {
    stream.set_nodelay(true).ok();
    let (r, mut w) = stream.into_split();
    // Handshake frames are tiny; a peer cannot make us buffer more than this before it has
    // authenticated.
    let mut reader = FrameReader::new(r, 4096);
    let fut = async {
        let acceptor = Acceptor::new(&opts.secret, opts.role, opts.node.clone(), random_nonce());
        send(&mut w, &acceptor.hello(), opts.max_frame).await?;
        let hello = next_frame(&mut reader).await?;
        match acceptor.verify(&hello, allowed) {
            Ok((peer, verdict)) => {
                send(&mut w, &verdict, opts.max_frame).await?;
                Ok(peer)
            }
            Err(e) => {
                let verdict = gw_proto::handshake::HandshakeResult::Rejected { reason: e.reason_for_peer() };
                send(&mut w, &verdict, opts.max_frame).await.ok();
                w.shutdown().await.ok();
                Err(LinkError::Handshake(e))
            }
        }
    };
    let peer = tokio::time::timeout(timeout, fut).await.map_err(|_| LinkError::HandshakeTimeout)??;
    let (r, rest) = reader.into_parts();
    Ok(Link { reader: FrameReader::with_buffer(r, opts.max_frame, rest), writer: w, peer })
}

/// Connects to `addr` (host:port; names are resolved) and runs the connecting side.
pub async fn connect(addr: &str, opts: &HandshakeOptions) -> Result<Link, LinkError> {
    let fut = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true).ok();
        let (r, mut w) = stream.into_split();
        let mut reader = FrameReader::new(r, 4096);
        let mut connector = Connector::new(&opts.secret, opts.role, opts.node.clone(), random_nonce());
        let hello = next_frame(&mut reader).await?;
        let (peer, answer) = connector.respond(&hello)?;
        send(&mut w, &answer, opts.max_frame).await?;
        let verdict = next_frame(&mut reader).await?;
        connector.finish(&verdict)?;
        let (r, rest) = reader.into_parts();
        Ok::<_, LinkError>(Link { reader: FrameReader::with_buffer(r, opts.max_frame, rest), writer: w, peer })
    };
    tokio::time::timeout(opts.timeout, fut).await.map_err(|_| LinkError::HandshakeTimeout)?
}
