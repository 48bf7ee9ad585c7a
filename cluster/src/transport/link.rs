//! One outbound link to a peer: its bounded queue, and the task that dials, writes and reads.
//!
//! The task owns the receiving end of the queue across connections. It dials only when a frame
//! is waiting (lazy), so an idle peer costs no connection. A failed dial fails the frames queued
//! at that moment (their callers learn now, not at the request timeout) and waits a backoff
//! (50 ms doubling to 1 s) before the next attempt; so does a connection that drops within a
//! second (one that lasted longer resets the backoff). While connected, a writer and a reader
//! run in the same task: the writer drains the queue in batches and records each request's
//! correlation in [`Pending`]; the reader hands responses to their callers. When the connection
//! drops, requests written on it fail with `Disconnected`, and frames still queued wait for the
//! next connection. Dropping the [`Link`] aborts the task, closing the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use roost_engine::ids::NodeId;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::conn;
use super::conn::Pending;
use super::conn::SendStats;
use super::frame;
use super::liveness::LiveGuard;
use super::tls;
use super::Outgoing;
use super::Shared;
use super::TransportError;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A connection that lasted this long resets the backoff when it drops.
const STABLE: Duration = Duration::from_secs(1);

/// The handle the transport keeps per peer: the queue's sending end and the task.
pub(super) struct Link {
    addr: String,
    node: String,
    queue: mpsc::Sender<Outgoing>,
    task: AbortHandle,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection that completed its hello.
struct Connected {
    stream: TlsStream<TcpStream>,
    read_buf: BytesMut,
    _live: Option<LiveGuard>,
}

impl Link {
    /// Starts the (idle) task for the peer `node` (if known) at `addr`.
    pub(super) fn spawn(shared: Arc<Shared>, node: Option<NodeId>, addr: String) -> Self {
        let (queue, rx) = mpsc::channel(shared.queue_capacity);
        let label = node.map_or_else(|| addr.clone(), |node| node.to_string());
        let runtime = shared.runtime.clone();
        let task = runtime.spawn(run(shared, node, addr.clone(), rx, label.clone()));
        Self {
            addr,
            node: label,
            queue,
            task: task.abort_handle(),
        }
    }

    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues one frame without waiting.
    pub(super) fn push(&self, out: Outgoing) -> Result<(), TransportError> {
        self.queue.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                metrics::counter!("roost_peer_queue_full_total", "peer" => self.node.clone()).increment(1);
                TransportError::Backpressure
            }
            mpsc::error::TrySendError::Closed(_) => TransportError::Shutdown,
        })
    }
}

/// The link task: wait for a frame, dial, serve the connection until it drops; repeat.
async fn run(shared: Arc<Shared>, node: Option<NodeId>, addr: String, mut rx: mpsc::Receiver<Outgoing>, label: String) {
    let mut shutdown = shared.shutdown.clone();
    let stats = SendStats::new(label);
    let mut backoff = MIN_BACKOFF;
    loop {
        let first = tokio::select! {
            first = rx.recv() => match first {
                Some(first) => first,
                None => return,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match connect(&shared, node, &addr).await {
            Ok(connected) => {
                let opened = tokio::time::Instant::now();
                tokio::select! {
                    why = serve(connected, first, &mut rx, &stats) => {
                        tracing::debug!(peer = %addr, %why, "peer link dropped");
                    }
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                // A peer that accepts and then drops at once must not be redialed in a tight loop.
                match opened.elapsed() >= STABLE {
                    true => backoff = MIN_BACKOFF,
                    false => {
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.wait_for(|stop| *stop) => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            Err(why) => {
                tracing::warn!(peer = %addr, %why, "cannot reach peer");
                fail(first, &why);
                while let Ok(queued) = rx.try_recv() {
                    fail(queued, &why);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn fail(out: Outgoing, why: &TransportError) {
    if let Some(reply) = out.reply {
        let _ = reply.send(Err(TransportError::Unreachable(why.to_string())));
    }
}

/// TCP, TLS (server verified as `roost-node-<id>` or the address's host) and the hello, all
/// within the request timeout.
async fn connect(shared: &Arc<Shared>, node: Option<NodeId>, addr: &str) -> Result<Connected, TransportError> {
    let name = tls::server_name(node, addr)?;
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| TransportError::Unreachable(format!("connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let connector = TlsConnector::from(shared.tls.client_config());
        let mut stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| TransportError::Unreachable(format!("TLS with {addr}: {e}")))?;
        let (hello, read_buf) = conn::client_hello(&mut stream, shared, node).await?;
        // Only links to known nodes count for liveness; a seed dial is a one-off.
        let live = node.map(|node| shared.liveness.up(node, hello.incarnation));
        Ok(Connected {
            stream,
            read_buf,
            _live: live,
        })
    };
    match tokio::time::timeout(shared.request_timeout, attempt).await {
        Ok(connected) => connected,
        Err(_) => Err(TransportError::Unreachable(format!(
            "{addr}: no hello within {:?}",
            shared.request_timeout
        ))),
    }
}

/// Runs one connection until it drops; returns why. Requests written on it fail on the way out.
async fn serve(
    connected: Connected,
    first: Outgoing,
    rx: &mut mpsc::Receiver<Outgoing>,
    stats: &SendStats,
) -> TransportError {
    let Connected {
        stream,
        mut read_buf,
        _live,
    } = connected;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let pending = Pending::default();
    let write = async {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut next = Some(first);
        loop {
            let first = match next.take() {
                Some(first) => first,
                None => match rx.recv().await {
                    Some(first) => first,
                    None => return TransportError::Shutdown,
                },
            };
            if let Err(e) = conn::write_batch(
                &mut writer,
                &mut buf,
                first,
                || rx.try_recv().ok(),
                Some(&pending),
                stats,
            )
            .await
            {
                return e;
            }
        }
    };
    let why = tokio::select! {
        why = write => why,
        why = read_answers(&mut reader, &mut read_buf, &pending) => why,
    };
    pending.fail_all();
    why
}

/// Reads responses and hands them to their callers; returns why the connection ended.
async fn read_answers<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut, pending: &Pending) -> TransportError {
    loop {
        let frame = match conn::read_frame(reader, buf).await {
            Ok(frame) => frame,
            Err(e) => return e,
        };
        match (frame.kind, frame.correlation) {
            (frame::KIND_RESPONSE_OK, correlation) if correlation != 0 => pending.complete(correlation, Ok(frame.body)),
            (frame::KIND_RESPONSE_ERR, correlation) if correlation != 0 => {
                pending.complete(correlation, Err(conn::remote_error(&frame.body)))
            }
            (frame::KIND_RESPONSE_ERR, _) => return conn::remote_error(&frame.body),
            (kind, _) => return TransportError::Protocol(format!("unexpected frame kind {kind} on an outbound link")),
        }
    }
}
