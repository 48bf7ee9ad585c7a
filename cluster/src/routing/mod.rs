//! Routing: the engine's [`RemoteNodes`] over the peer transport, and the inbound side of that
//! actor traffic. It owns the routing wire format ([`wire`], kinds 32..=47), the user directory
//! ([`directory`], which users are connected on which other node) and the task that keeps the
//! peers' directories current (`directory_task`).
//!
//! Three flows, all enqueue-only on the engine's actix threads:
//! - **forward**: a command for a conversation another node owns is encoded and queued on the
//!   FIFO link to the owner *before* `forward` returns, so one connection's commands keep their
//!   order; a task on the cluster runtime awaits the answer. The owner enqueues forwarded
//!   commands into its engine in frame order (`Engine::submit_local`, never `submit`, which would
//!   forward again) and answers with the actor's result. If the applied shard map moves the
//!   conversation away from that owner while the answer is pending (the owner failed or is cut
//!   off), the wait ends at once with `NotOwner`: the client retries, at the new owner, with the
//!   same `client_msg_id`, instead of waiting for the transport's timeout.
//! - **fan-out**: the owner's actor hands every outgoing item over after its local fan-out; the
//!   recipients are grouped by node through the directory and each node gets one `DELIVER`
//!   with only its users. A full peer queue drops the envelope (counted): sessions notice the
//!   gap at the next event or re-read on resync, from the shared store.
//! - **directory**: the hub reports users whose first connection opened or last closed; the
//!   directory task batches these for the peers, sends a full snapshot when a link comes up,
//!   and forgets a node's users when its link goes down (then every local session resyncs).
//!
//! The cluster runtime's handle is captured at construction because the engine calls in from
//! actix threads, which have no tokio runtime of their own to spawn the waits on.

pub mod directory;
mod directory_task;
mod metrics;
pub mod wire;

use std::sync::Arc;
use std::sync::OnceLock;

use bytes::Bytes;
use roost_engine::conversation::command::Command;
use roost_engine::delivery::Outbound;
use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use roost_engine::ids::UserId;
use roost_engine::remote::RemoteNodes;
use roost_engine::ConversationError;
use roost_engine::Engine;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;

use self::directory::Directory;
pub use self::directory::DirectoryView;
use self::directory_task::DirectoryEvent;
pub use self::directory_task::FLUSH_INTERVAL;
use self::wire::DeliverEncoder;
use self::wire::Forward;
use self::wire::ForwardResult;
use self::wire::UsersDelta;
use self::wire::UsersSnapshot;
use crate::node::ActorTraffic;
use crate::shard::ShardMap;
use crate::transport::Inbound;
use crate::transport::Responder;
use crate::transport::Transport;
use crate::transport::TransportError;

/// The routing layer of one node. Cheap to clone; every clone is the same router.
#[derive(Clone)]
pub struct Routing {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    runtime: Handle,
    engine: Arc<OnceLock<Engine>>,
    directory: DirectoryView,
    directory_tx: mpsc::UnboundedSender<DirectoryEvent>,
    /// The applied shard map, once the node provides it: pending forwards watch it.
    shard_map: OnceLock<watch::Receiver<Arc<ShardMap>>>,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("engine_attached", &self.inner.engine.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Routing {
    /// A router over `transport` whose tasks run on the current tokio runtime (the cluster's).
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`; use [`Routing::with_runtime`] there.
    pub fn new(transport: Transport) -> Self {
        Self::with_runtime(transport, Handle::current())
    }

    /// A router over `transport` whose tasks run on `runtime`.
    pub fn with_runtime(transport: Transport, runtime: Handle) -> Self {
        let directory = Directory::new();
        let view = directory.view();
        let engine = Arc::new(OnceLock::new());
        let directory_tx = directory_task::spawn(&runtime, transport.clone(), engine.clone(), directory);
        Self {
            inner: Arc::new(Inner {
                transport,
                runtime,
                engine,
                directory: view,
                directory_tx,
                shard_map: OnceLock::new(),
            }),
        }
    }

    /// Connects the local engine: forwarded commands and deliveries reach it from now on (until
    /// then forwarded commands answer `Unavailable` and deliveries are dropped). Once; a second
    /// engine is ignored.
    pub fn attach_engine(&self, engine: Engine) {
        if self.inner.engine.set(engine).is_err() {
            tracing::warn!("An engine was already attached to routing; ignoring the second one.");
        }
    }

    /// Makes pending forwards end with `NotOwner` as soon as the applied map moves their
    /// conversation to another owner. Once; later calls are ignored.
    pub fn watch_owners(&self, shard_map: watch::Receiver<Arc<ShardMap>>) {
        let _ = self.inner.shard_map.set(shard_map);
    }

    /// The directory as `fan_out` reads it (which users are connected on which other node).
    pub fn directory(&self) -> &DirectoryView {
        &self.inner.directory
    }

    fn tell_directory(&self, event: DirectoryEvent) {
        // Fails only when the directory task is gone, i.e. the runtime is shutting down.
        if self.inner.directory_tx.send(event).is_err() {
            tracing::debug!("Routing directory task stopped; directory event dropped.");
        }
    }

    /// A peer forwarded a command for a conversation this node owns.
    fn serve_forward(&self, from: NodeId, body: Bytes, reply: Responder) {
        let forward: Forward = match wire::decode(wire::FORWARD, &body) {
            Ok(forward) => forward,
            Err(error) => {
                tracing::warn!(peer = %from, %error, "Refusing a forwarded command.");
                reply.err(error.to_string());
                return;
            }
        };
        let Some(engine) = self.inner.engine.get() else {
            let why = "this node's engine is not started yet".to_owned();
            answer_forward(reply, Err(ConversationError::Unavailable(why)));
            return;
        };
        // Enqueued now, in frame order; only the wait is spawned.
        let outcome = engine.submit_local(forward.conversation, forward.command);
        self.inner.runtime.spawn(async move {
            let result = outcome.await.unwrap_or_else(|_| {
                let why = "the conversation actor stopped before answering".to_owned();
                Err(ConversationError::Unavailable(why))
            });
            answer_forward(reply, result);
        });
    }

    /// A peer fanned an item out to some of this node's users.
    fn serve_deliver(&self, from: NodeId, body: Bytes) {
        let deliver: wire::Deliver = match wire::decode(wire::DELIVER, &body) {
            Ok(deliver) => deliver,
            Err(error) => {
                tracing::warn!(peer = %from, %error, "Dropping an undecodable delivery.");
                return;
            }
        };
        match self.inner.engine.get() {
            Some(engine) => engine.deliver_local(deliver.users.into(), deliver.item),
            None => tracing::debug!(peer = %from, "Delivery before the engine started; dropped."),
        }
    }

    /// A peer's announcement: applied by the directory task, answered (when it is a request)
    /// once applied, so the peer knows our fan-out lookups see it.
    fn serve_users(&self, from: NodeId, kind: wire::Kind, body: Bytes, reply: Option<Responder>) {
        let (applied, answered) = match reply {
            Some(reply) => {
                let (tx, rx) = oneshot::channel::<()>();
                (Some(tx), Some((reply, rx)))
            }
            None => (None, None),
        };
        let event = if kind == wire::USERS_SNAPSHOT {
            wire::decode::<UsersSnapshot>(kind, &body).map(|s| DirectoryEvent::Snapshot {
                node: from,
                users: s.users,
                applied,
            })
        } else {
            wire::decode::<UsersDelta>(kind, &body).map(|delta| DirectoryEvent::Delta {
                node: from,
                delta,
                applied,
            })
        };
        match event {
            Ok(event) => self.tell_directory(event),
            Err(error) => tracing::warn!(peer = %from, %error, "Dropping an undecodable directory update."),
        }
        if let Some((reply, rx)) = answered {
            self.inner.runtime.spawn(async move {
                match rx.await {
                    Ok(()) => reply.ok(Bytes::new()),
                    Err(_) => reply.err("directory update not applied".to_owned()),
                }
            });
        }
    }
}

fn answer_forward(reply: Responder, result: ForwardResult) {
    match wire::encode(wire::FORWARD, &result) {
        Ok(body) => reply.ok(body),
        Err(error) => {
            tracing::error!(%error, "Cannot encode the answer to a forwarded command.");
            reply.err(error.to_string());
        }
    }
}

/// Delivers an outcome right away (the receiver is returned by the same call).
fn ready(result: ForwardResult) -> oneshot::Receiver<ForwardResult> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(result);
    rx
}

impl RemoteNodes for Routing {
    fn forward(
        &self,
        owner: NodeId,
        conversation: ConversationId,
        command: Command,
    ) -> oneshot::Receiver<ForwardResult> {
        let body = match wire::encode(wire::FORWARD, &Forward { conversation, command }) {
            Ok(body) => body,
            Err(error) => return ready(Err(ConversationError::Internal(error.to_string()))),
        };
        // `request` queues the frame before it returns: this is what keeps the order.
        let response = self.inner.transport.request(owner, wire::FORWARD, body);
        metrics::forwarded();
        let (tx, rx) = oneshot::channel();
        let shard_map = self.inner.shard_map.get().cloned();
        self.inner.runtime.spawn(async move {
            let answered = async {
                match response.await {
                    Ok(body) => wire::decode::<ForwardResult>(wire::FORWARD, &body)
                        .unwrap_or_else(|error| Err(ConversationError::Internal(error.to_string()))),
                    Err(error) => Err(ConversationError::Unavailable(format!(
                        "owner node {owner} unreachable: {error}"
                    ))),
                }
            };
            let result = tokio::select! {
                result = answered => result,
                () = moved_away(shard_map, conversation, owner) => Err(ConversationError::NotOwner(conversation)),
            };
            let _ = tx.send(result);
        });
        rx
    }

    fn fan_out(&self, users: &Arc<[UserId]>, item: &Outbound) {
        let by_node = self.inner.directory.group(users);
        if by_node.is_empty() {
            return;
        }
        let encoder = match DeliverEncoder::new(item) {
            Ok(encoder) => encoder,
            Err(error) => {
                tracing::error!(%error, "Cannot encode a fan-out item.");
                return;
            }
        };
        for (node, users) in by_node {
            let sent = encoder
                .body(&users)
                .map_err(|error| error.to_string())
                .and_then(|body| self.send_deliver(node, body));
            match sent {
                Ok(()) => metrics::deliver_queued(users.len()),
                Err(error) => tracing::debug!(peer = %node, %error, "Fan-out envelope dropped."),
            }
        }
    }

    fn local_user(&self, user: UserId, connected: bool) {
        self.tell_directory(DirectoryEvent::Local { user, connected });
    }
}

impl Routing {
    fn send_deliver(&self, node: NodeId, body: Bytes) -> Result<(), String> {
        self.inner.transport.send(node, wire::DELIVER, body).map_err(|error| {
            let reason = match error {
                TransportError::Backpressure => "backpressure",
                _ => "unreachable",
            };
            metrics::fanout_dropped(reason);
            error.to_string()
        })
    }
}

impl ActorTraffic for Routing {
    fn inbound(&self, inbound: Inbound) {
        match inbound {
            Inbound::Request {
                from,
                kind,
                body,
                reply,
            } if kind == wire::FORWARD => self.serve_forward(from, body, reply),
            Inbound::Request {
                from,
                kind,
                body,
                reply,
            } if kind == wire::USERS || kind == wire::USERS_SNAPSHOT => self.serve_users(from, kind, body, Some(reply)),
            Inbound::Request { from, kind, reply, .. } => {
                tracing::warn!(peer = %from, kind, "Unknown routing request kind.");
                reply.err(format!("unknown routing request kind {kind}"));
            }
            Inbound::Message { from, kind, body } if kind == wire::DELIVER => self.serve_deliver(from, body),
            Inbound::Message { from, kind, body } if kind == wire::USERS || kind == wire::USERS_SNAPSHOT => {
                self.serve_users(from, kind, body, None)
            }
            Inbound::Message { from, kind, .. } => {
                tracing::warn!(peer = %from, kind, "Unknown routing message kind; dropped.");
            }
        }
    }

    fn peer_up(&self, node: NodeId) {
        self.tell_directory(DirectoryEvent::PeerUp(node));
    }

    fn peer_down(&self, node: NodeId) {
        self.tell_directory(DirectoryEvent::PeerDown(node));
    }
}

#[cfg(test)]
mod link_tests;

/// Completes when the applied map names an owner other than `owner` for `conversation` (never,
/// without a map). The map applied here may lag the cluster's; that only makes this fire later.
async fn moved_away(shard_map: Option<watch::Receiver<Arc<ShardMap>>>, conversation: ConversationId, owner: NodeId) {
    let Some(mut shard_map) = shard_map else {
        return std::future::pending().await;
    };
    loop {
        let current = shard_map.borrow_and_update().owner_of(conversation);
        if current.is_some_and(|now| now != owner) {
            return;
        }
        if shard_map.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
