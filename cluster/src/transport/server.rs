//! The accept loop and inbound connections: TLS with a required client certificate, the hello
//! (refused unless that certificate is valid for `roost-node-<claimed id>`), then requests and
//! one-way messages handed to the `InboundHandler` in frame order.
//!
//! Each inbound connection is one task running its reader and its writer side by side. The
//! reader calls the handler synchronously per frame (that is the ordering guarantee); the
//! handler answers requests later through a `Responder`, which queues the answer for this
//! connection's writer. That answer queue is unbounded: the answers are bounded by the requests
//! the peer sent, which its own bounded queue limits, and refusing an answer would leave the
//! peer's caller waiting for its timeout. When the connection ends (peer closed, bad frame,
//! shutdown), the task ends with it and outstanding `Responder`s answer into nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use roost_engine::ids::NodeId;
use tokio::io::AsyncRead;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::conn;
use super::conn::SendStats;
use super::frame;
use super::Inbound;
use super::Outgoing;
use super::Responder;
use super::Shared;
use super::TransportError;

/// Accepts peers until shutdown; each connection gets a task of its own.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((tcp, from)) => {
                tokio::spawn(inbound_connection(shared.clone(), tcp, from));
            }
            Err(e) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "cannot accept a peer connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn inbound_connection(shared: Arc<Shared>, tcp: TcpStream, from: SocketAddr) {
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        why = serve(&shared, tcp) => match why {
            TransportError::Disconnected => tracing::debug!(%from, "inbound peer connection closed"),
            why => tracing::warn!(%from, %why, "inbound peer connection closed"),
        },
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// TLS, hello, then the reader and writer until the connection ends; returns why it ended.
async fn serve(shared: &Arc<Shared>, tcp: TcpStream) -> TransportError {
    let _ = tcp.set_nodelay(true);
    let acceptor = TlsAcceptor::from(shared.tls.server_config());
    let opening = async {
        let mut stream = acceptor.accept(tcp).await?;
        // The verifier required a certificate chained to the cluster CA; its leaf comes first.
        let peer_cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned();
        let (hello, buf) = conn::server_hello(&mut stream, shared, peer_cert.as_ref()).await?;
        Ok::<_, TransportError>((stream, hello, buf))
    };
    let (stream, hello, mut read_buf) = match tokio::time::timeout(shared.request_timeout, opening).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(why)) => return why,
        Err(_) => return TransportError::Protocol(format!("no hello within {:?}", shared.request_timeout)),
    };
    let peer = NodeId(hello.node_id);
    let _live = shared.liveness.up(peer, hello.incarnation);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (answers, mut queued) = mpsc::unbounded_channel::<Outgoing>();
    let stats = SendStats::new(peer.to_string());
    let write = async {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        // `answers` is kept by the reader, so `recv` ends only with the connection.
        while let Some(first) = queued.recv().await {
            if let Err(e) =
                conn::write_batch(&mut writer, &mut buf, first, || queued.try_recv().ok(), None, &stats).await
            {
                return e;
            }
        }
        TransportError::Disconnected
    };
    tokio::select! {
        why = write => why,
        why = read_requests(shared, peer, &mut reader, &mut read_buf, answers) => why,
    }
}

/// Reads frames and hands them to the handler in order; returns why the connection ended.
async fn read_requests<R: AsyncRead + Unpin>(
    shared: &Shared,
    from: NodeId,
    reader: &mut R,
    buf: &mut BytesMut,
    answers: mpsc::UnboundedSender<Outgoing>,
) -> TransportError {
    loop {
        let frame = match conn::read_frame(reader, buf).await {
            Ok(frame) => frame,
            Err(e) => return e,
        };
        if frame.kind < frame::FIRST_USER_KIND {
            return TransportError::Protocol(format!("unexpected frame kind {} on an inbound connection", frame.kind));
        }
        let inbound = match frame.correlation {
            0 => Inbound::Message {
                from,
                kind: frame.kind,
                body: frame.body,
            },
            correlation => Inbound::Request {
                from,
                kind: frame.kind,
                body: frame.body,
                reply: Responder {
                    tx: Some(answers.clone()),
                    correlation,
                },
            },
        };
        shared.handler.inbound(inbound);
    }
}
