//! The node-to-node transport: persistent mutual-TLS connections carrying requests, responses and
//! one-way messages between cluster nodes (Raft RPCs and actor traffic ride on it).
//!
//! Each node keeps **one outbound connection per peer** (a [`link`]) and accepts inbound ones
//! ([`server`]). A node sends its requests and messages only on its own outbound connection and
//! answers requests on the connection they arrived on, so each direction is a FIFO: frames to
//! one peer are written in the order [`Transport::request`] and [`Transport::send`] enqueued them
//! (both enqueue synchronously, before returning), and the peer's [`InboundHandler`] sees them in
//! that order. Per link a bounded queue feeds a writer that drains everything queued into one
//! buffer, one write, one flush; a full queue is [`TransportError::Backpressure`] for the caller
//! to handle (fan-out drops, sessions resync from the store).
//!
//! Links dial lazily (on the first frame) and redial with backoff (50 ms doubling to 1 s) after a
//! failed attempt; frames queued during a failed attempt fail at once rather than wait for the
//! request timeout. A dropped connection fails its requests already written with
//! [`TransportError::Disconnected`] (they may or may not have run); frames still queued go out on
//! the next connection. Every connection opens with a [`frame::Hello`] both ways; a different
//! wire version or cluster id is refused with an error frame and closed.
//!
//! Identity: both ends present a certificate of the cluster CA ([`tls`]). A dialer verifies the
//! node it meant to reach by the server name `roost-node-<id>`; an acceptor refuses (same error
//! frame, then closes, with a warning naming the claimed id and no `peer_up`) a dialer whose
//! hello claims a node id its client certificate is not valid for as `roost-node-<id>`. So a
//! node's certificate cannot speak for another node, inbound or outbound.
//!
//! Liveness: `peer_up` is called when the first connection (either direction) to a node
//! completes its hello, `peer_down` when the last one drops. A node that restarted is noticed by
//! its new hello incarnation: its stale connections no longer count and the handler sees
//! `peer_down` then `peer_up`, in that order, before any frame of the new connection.
//!
//! Frame kinds below 16 belong to the transport ([`frame::KIND_HELLO`] and the two response
//! kinds); the layers above define theirs from [`frame::FIRST_USER_KIND`] (16) up.

mod conn;
pub mod frame;
mod link;
mod liveness;
mod server;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;

use bytes::Bytes;
use roost_engine::ids::NodeId;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::frame::FrameError;
pub use self::frame::FIRST_USER_KIND;
use self::link::Link;
use self::liveness::Liveness;
pub use self::tls::PeerTls;

/// A message kind. Kinds below [`FIRST_USER_KIND`] are the transport's own.
pub type Kind = u8;

/// Frames a link may queue before [`Transport::send`] answers `Backpressure`.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// How long a request waits for its answer (and a dial for its hello) by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("unusable TLS material ({path}): {why}")]
    Pem { path: String, why: String },
    #[error("cannot listen for peers on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("peer address {0:?} is not host:port")]
    InvalidAddress(String),
    #[error("node {0} is not a known peer (set_peer first)")]
    UnknownPeer(NodeId),
    #[error("kind {0} is reserved for the transport (layers above use 16 and up)")]
    ReservedKind(Kind),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the queue to the peer is full")]
    Backpressure,
    #[error("the connection to the peer dropped before the answer arrived")]
    Disconnected,
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("the peer refused the connection: {0}")]
    Refused(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the peer answered with an error: {0}")]
    Remote(String),
    #[error("peer protocol error: {0}")]
    Protocol(String),
    #[error("peer I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the transport is shut down")]
    Shutdown,
}

/// What the transport hands to the layers above, in frame order per connection.
#[derive(Debug)]
pub enum Inbound {
    /// Answer exactly once through `reply` (dropping it answers with an error).
    Request {
        from: NodeId,
        kind: Kind,
        body: Bytes,
        reply: Responder,
    },
    Message {
        from: NodeId,
        kind: Kind,
        body: Bytes,
    },
}

/// Receives inbound frames and liveness changes. Called from the transport's tasks.
pub trait InboundHandler: Send + Sync + 'static {
    /// Called synchronously, in frame order per connection; must not block. Answer later through
    /// the Responder (spawn). Order matters: forwarded commands are enqueued in arrival order.
    fn inbound(&self, inbound: Inbound);
    /// The first connection to `node` completed its hello. Must not block.
    fn peer_up(&self, _node: NodeId) {}
    /// The last connection to `node` dropped (or `node` restarted). Must not block.
    fn peer_down(&self, _node: NodeId) {}
}

/// Answers one request on the connection it arrived on.
#[derive(Debug)]
pub struct Responder {
    tx: Option<mpsc::UnboundedSender<Outgoing>>,
    correlation: u64,
}

impl Responder {
    /// Answers with `body`. An answer over the frame limit becomes an error answer.
    pub fn ok(mut self, body: Bytes) {
        match frame::check_size(body.len()) {
            Ok(()) => self.answer(frame::KIND_RESPONSE_OK, body),
            Err(e) => self.answer(frame::KIND_RESPONSE_ERR, Bytes::from(e.to_string())),
        }
    }

    /// Answers with an error; the requester sees `TransportError::Remote(why)`.
    pub fn err(mut self, why: String) {
        self.answer(frame::KIND_RESPONSE_ERR, Bytes::from(why));
    }

    fn answer(&mut self, kind: Kind, body: Bytes) {
        if let Some(tx) = self.tx.take() {
            // The connection may be gone; the requester then sees Disconnected.
            let _ = tx.send(Outgoing {
                kind,
                correlation: self.correlation,
                body,
                reply: None,
            });
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.answer(
            frame::KIND_RESPONSE_ERR,
            Bytes::from_static(b"request dropped without an answer"),
        );
    }
}

/// The answer to one request, as the reader hands it to the waiting caller.
type Reply = Result<Bytes, TransportError>;

/// One queued frame; `reply` is set for requests.
#[derive(Debug)]
struct Outgoing {
    kind: Kind,
    correlation: u64,
    body: Bytes,
    reply: Option<oneshot::Sender<Reply>>,
}

/// Settings of one node's transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub node_id: NodeId,
    pub cluster_id: String,
    /// Where peers connect (port 0 picks a free one; see [`Transport::local_addr`]).
    pub listen: SocketAddr,
    pub tls: PeerTls,
    /// Frames queued per peer before `send` answers `Backpressure` (default 4096).
    pub queue_capacity: usize,
    /// How long a request waits for its answer; also bounds a dial up to the hello (default 5 s).
    pub request_timeout: Duration,
}

impl TransportConfig {
    /// A configuration with the default queue capacity and request timeout.
    pub fn new(node_id: NodeId, cluster_id: impl Into<String>, listen: SocketAddr, tls: PeerTls) -> Self {
        Self {
            node_id,
            cluster_id: cluster_id.into(),
            listen,
            tls,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// State every transport task shares.
struct Shared {
    node_id: NodeId,
    cluster_id: String,
    /// Differs on every start: lets peers tell a restart from a reconnect.
    incarnation: u64,
    tls: PeerTls,
    handler: Arc<dyn InboundHandler>,
    queue_capacity: usize,
    request_timeout: Duration,
    next_correlation: AtomicU64,
    liveness: Arc<Liveness>,
    runtime: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn hello(&self) -> frame::Hello {
        frame::Hello {
            version: frame::VERSION,
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id.0,
            incarnation: self.incarnation,
        }
    }

    /// Checks a peer's hello; the reason is what the refusal frame says.
    fn check_hello(&self, hello: &frame::Hello) -> Result<(), String> {
        if hello.version != frame::VERSION {
            return Err(format!("wire version {} is not {}", hello.version, frame::VERSION));
        }
        if hello.cluster_id != self.cluster_id {
            return Err(format!(
                "cluster id {:?} is not {:?}",
                hello.cluster_id, self.cluster_id
            ));
        }
        Ok(())
    }
}

/// Persistent mTLS connections to the other nodes. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.inner.shared.node_id)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    links: Mutex<HashMap<NodeId, Link>>,
    stop: watch::Sender<bool>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Locks `mutex`, ignoring poisoning: every critical section here leaves its map consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A value that differs between two starts of a transport (time, process and a counter).
fn new_incarnation() -> u64 {
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let starts = STARTS.fetch_add(1, Ordering::Relaxed);
    nanos ^ (u64::from(std::process::id()) << 40) ^ starts.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Transport {
    /// Binds `cfg.listen` and starts accepting peers on the current tokio runtime, which also
    /// runs every link this transport opens.
    pub async fn start(cfg: TransportConfig, handler: Arc<dyn InboundHandler>) -> Result<Self, TransportError> {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| TransportError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let local_addr = listener.local_addr()?;
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            node_id: cfg.node_id,
            cluster_id: cfg.cluster_id,
            incarnation: new_incarnation(),
            tls: cfg.tls,
            liveness: Arc::new(Liveness::new(handler.clone())),
            handler,
            queue_capacity: cfg.queue_capacity.max(1),
            request_timeout: cfg.request_timeout,
            next_correlation: AtomicU64::new(1),
            runtime: tokio::runtime::Handle::current(),
            shutdown,
        });
        let accept = tokio::spawn(server::accept_loop(shared.clone(), listener));
        tracing::info!(node = %shared.node_id, %local_addr, "peer transport listening");
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                local_addr,
                links: Mutex::new(HashMap::new()),
                stop,
                accept: Mutex::new(Some(accept)),
            }),
        })
    }

    /// The address peers connect to (the bound port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.shared.node_id
    }

    /// Where `node` listens. A changed address replaces the link (its queued frames fail).
    pub fn set_peer(&self, node: NodeId, addr: String) {
        if self.is_shut_down() {
            return;
        }
        let mut links = lock(&self.inner.links);
        if links.get(&node).is_some_and(|link| link.addr() == addr) {
            return;
        }
        let link = Link::spawn(self.inner.shared.clone(), Some(node), addr);
        links.insert(node, link);
    }

    /// Forgets `node`: closes its link; requests in flight fail with `Disconnected`.
    pub fn remove_peer(&self, node: NodeId) {
        lock(&self.inner.links).remove(&node);
    }

    /// Enqueue now (synchronously); await the answer. Dials lazily, reconnects with backoff (50 ms .. 1 s).
    pub fn request(
        &self,
        node: NodeId,
        kind: Kind,
        body: Bytes,
    ) -> impl Future<Output = Result<Bytes, TransportError>> + Send + 'static {
        let queued = self.enqueue_request(node, kind, body);
        let timeout = self.inner.shared.request_timeout;
        async move { await_reply(queued?, timeout).await }
    }

    /// Request to an address whose node id is not known yet (joining via a seed). Uses a
    /// connection of its own, closed after the answer; it does not count for `peer_up`.
    pub async fn request_addr(&self, addr: &str, kind: Kind, body: Bytes) -> Result<Bytes, TransportError> {
        if self.is_shut_down() {
            return Err(TransportError::Shutdown);
        }
        let link = Link::spawn(self.inner.shared.clone(), None, addr.to_owned());
        let queued = self
            .enqueue(&link, kind, body, true)?
            .ok_or(TransportError::Disconnected)?;
        let answer = await_reply(queued, self.inner.shared.request_timeout).await;
        drop(link);
        answer
    }

    /// One-way, enqueue now. Err(TransportError::Backpressure) when the peer's queue is full
    /// (the caller decides: fan-out drops and lets sessions resync from the store).
    pub fn send(&self, node: NodeId, kind: Kind, body: Bytes) -> Result<(), TransportError> {
        let links = lock(&self.inner.links);
        let link = links.get(&node).ok_or(TransportError::UnknownPeer(node))?;
        self.enqueue(link, kind, body, false).map(|_| ())
    }

    /// Nodes with at least one connection (either direction) that completed its hello.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        self.inner.shared.liveness.connected()
    }

    /// Stops accepting, closes every connection and link. Requests in flight fail.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        lock(&self.inner.links).clear();
        let accept = lock(&self.inner.accept).take();
        if let Some(accept) = accept {
            let _ = accept.await;
        }
    }

    fn is_shut_down(&self) -> bool {
        *self.inner.shared.shutdown.borrow()
    }

    fn enqueue_request(
        &self,
        node: NodeId,
        kind: Kind,
        body: Bytes,
    ) -> Result<oneshot::Receiver<Reply>, TransportError> {
        let links = lock(&self.inner.links);
        let link = links.get(&node).ok_or(TransportError::UnknownPeer(node))?;
        self.enqueue(link, kind, body, true)?
            .ok_or(TransportError::Disconnected)
    }

    /// Puts one frame on `link`'s queue; for a request, returns where its answer will arrive.
    fn enqueue(
        &self,
        link: &Link,
        kind: Kind,
        body: Bytes,
        request: bool,
    ) -> Result<Option<oneshot::Receiver<Reply>>, TransportError> {
        if kind < FIRST_USER_KIND {
            return Err(TransportError::ReservedKind(kind));
        }
        frame::check_size(body.len())?;
        if self.is_shut_down() {
            return Err(TransportError::Shutdown);
        }
        let (reply, answer) = match request {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let correlation = match request {
            true => self.inner.shared.next_correlation.fetch_add(1, Ordering::Relaxed),
            false => 0,
        };
        link.push(Outgoing {
            kind,
            correlation,
            body,
            reply,
        })?;
        Ok(answer)
    }
}

async fn await_reply(answer: oneshot::Receiver<Reply>, timeout: Duration) -> Result<Bytes, TransportError> {
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => Err(TransportError::Disconnected),
        Err(_) => Err(TransportError::Timeout(timeout)),
    }
}
