//! What both ends of a connection do: the hello exchange, reading frames into a buffer, and the
//! writer's batching (everything queued goes into one buffer, one write, one flush).
//!
//! The dialing side speaks first: it sends its hello and waits for the peer's; the accepting side
//! checks the dialer's hello (and that the dialer's client certificate is valid for the node id
//! it claims) and answers with its own or with a refusal frame (`KIND_RESPONSE_ERR`,
//! correlation 0) before closing. Nothing else is sent before the hellos, so a refused peer never
//! gets a frame of ours to the layers above.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use bytes::Bytes;
use bytes::BytesMut;
use roost_engine::ids::NodeId;
use rustls_pki_types::CertificateDer;
use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::frame;
use super::frame::Frame;
use super::frame::Hello;
use super::lock;
use super::tls;
use super::Outgoing;
use super::Reply;
use super::Shared;
use super::TransportError;

/// A batch stops taking more frames once it holds this much (a single larger frame still goes).
const BATCH_BYTES: usize = 1024 * 1024;

/// Requests written on one outbound connection, by correlation, waiting for their answers.
#[derive(Default)]
pub(super) struct Pending {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    prune_at: AtomicUsize,
}

impl Pending {
    fn insert(&self, correlation: u64, reply: oneshot::Sender<Reply>) {
        let mut waiting = lock(&self.waiting);
        waiting.insert(correlation, reply);
        // Requests whose caller gave up (timed out) and whose peer never answers would stay
        // forever; sweep them when the map has doubled since the last sweep.
        let prune_at = self.prune_at.load(Ordering::Relaxed).max(1024);
        if waiting.len() > prune_at {
            waiting.retain(|_, reply| !reply.is_closed());
            let next = (waiting.len() * 2).max(1024);
            self.prune_at.store(next, Ordering::Relaxed);
        }
    }

    /// Hands an answer to its waiting caller (nothing if it gave up or never existed).
    pub(super) fn complete(&self, correlation: u64, reply: Reply) {
        if let Some(waiting) = lock(&self.waiting).remove(&correlation) {
            let _ = waiting.send(reply);
        }
    }

    /// Fails every request still waiting: the connection they were written on is gone.
    pub(super) fn fail_all(&self) {
        for (_, waiting) in lock(&self.waiting).drain() {
            let _ = waiting.send(Err(TransportError::Disconnected));
        }
    }
}

/// Send-side counters of one connection, labelled with the peer.
pub(super) struct SendStats {
    frames: metrics::Counter,
    bytes: metrics::Counter,
}

impl SendStats {
    pub(super) fn new(peer: String) -> Self {
        Self {
            frames: metrics::counter!("roost_peer_frames_sent_total", "peer" => peer.clone()),
            bytes: metrics::counter!("roost_peer_bytes_sent_total", "peer" => peer),
        }
    }
}

/// Reads until `buf` holds one whole frame, and takes it off.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Frame, TransportError> {
    loop {
        if let Some(frame) = frame::decode(buf)? {
            return Ok(frame);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(TransportError::Disconnected);
        }
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, kind: u8, body: &[u8]) -> Result<(), TransportError> {
    let mut out = BytesMut::new();
    frame::encode(&mut out, kind, 0, body)?;
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(())
}

/// Dialer's side: send our hello, read the peer's. `expect` is the node we meant to reach.
pub(super) async fn client_hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
    expect: Option<NodeId>,
) -> Result<(Hello, BytesMut), TransportError> {
    let mut out = BytesMut::new();
    frame::encode_hello(&mut out, &shared.hello())?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut buf = BytesMut::new();
    let first = read_frame(stream, &mut buf).await?;
    if first.kind == frame::KIND_RESPONSE_ERR {
        return Err(TransportError::Refused(
            String::from_utf8_lossy(&first.body).into_owned(),
        ));
    }
    if first.kind != frame::KIND_HELLO {
        return Err(TransportError::Protocol(format!(
            "first frame has kind {}, not hello",
            first.kind
        )));
    }
    let hello = frame::decode_hello(&first.body)?;
    shared.check_hello(&hello).map_err(TransportError::Refused)?;
    if let Some(expect) = expect.filter(|node| node.0 != hello.node_id) {
        return Err(TransportError::Refused(format!(
            "expected node {expect}, reached node {}",
            hello.node_id
        )));
    }
    Ok((hello, buf))
}

/// Acceptor's side: read the dialer's hello, refuse it or answer with ours. `peer_cert` is the
/// dialer's end-entity certificate: it must be valid for the node id the hello claims.
pub(super) async fn server_hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
    peer_cert: Option<&CertificateDer<'_>>,
) -> Result<(Hello, BytesMut), TransportError> {
    let mut buf = BytesMut::new();
    let first = read_frame(stream, &mut buf).await?;
    let hello = match first.kind {
        frame::KIND_HELLO => frame::decode_hello(&first.body)?,
        kind => {
            let why = format!("first frame has kind {kind}, not hello");
            write_frame(stream, frame::KIND_RESPONSE_ERR, why.as_bytes()).await?;
            return Err(TransportError::Protocol(why));
        }
    };
    let checked = shared
        .check_hello(&hello)
        .and_then(|()| tls::check_peer_node(peer_cert, NodeId(hello.node_id)));
    if let Err(why) = checked {
        write_frame(stream, frame::KIND_RESPONSE_ERR, why.as_bytes()).await?;
        return Err(TransportError::Refused(why));
    }
    let mut out = BytesMut::new();
    frame::encode_hello(&mut out, &shared.hello())?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok((hello, buf))
}

/// Writes `first` and whatever `more` yields right now as one write. Requests are registered in
/// `pending` before the write, so their answer cannot arrive first.
pub(super) async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &mut BytesMut,
    first: Outgoing,
    mut more: impl FnMut() -> Option<Outgoing>,
    pending: Option<&Pending>,
    stats: &SendStats,
) -> Result<(), TransportError> {
    buf.clear();
    let mut frames = 0u64;
    let mut next = Some(first);
    while let Some(out) = next.take() {
        match frame::encode(buf, out.kind, out.correlation, &out.body) {
            Ok(()) => {
                frames += 1;
                if let (Some(reply), Some(pending)) = (out.reply, pending) {
                    pending.insert(out.correlation, reply);
                }
            }
            Err(e) => {
                if let Some(reply) = out.reply {
                    let _ = reply.send(Err(e.into()));
                }
            }
        }
        if buf.len() < BATCH_BYTES {
            next = more();
        }
    }
    if frames == 0 {
        return Ok(());
    }
    writer.write_all(buf).await?;
    writer.flush().await?;
    stats.frames.increment(frames);
    stats.bytes.increment(buf.len() as u64);
    if buf.capacity() > 4 * BATCH_BYTES {
        *buf = BytesMut::with_capacity(64 * 1024);
    }
    Ok(())
}

/// The body of an error answer as the requester sees it.
pub(super) fn remote_error(body: &Bytes) -> TransportError {
    TransportError::Remote(String::from_utf8_lossy(body).into_owned())
}
