//! The directory task: the single owner of the [`Directory`] and of this node's own user list,
//! and the one place that tells peers who is connected here.
//!
//! Everything that changes the directory arrives on one unbounded mpsc, in order: local
//! connects and disconnects from the engine (`local_user`, called on actix threads, which must
//! not block or fail), peers' deltas and snapshots from the transport's reader, and link
//! up/down events. The queue is unbounded because dropping a directory event would leave a
//! peer's view wrong until the next snapshot, and its length is bounded by connection churn,
//! which the batching below turns into at most one message per peer per 10 ms.
//!
//! Announcements are requests: a peer answers once its directory has applied them. When every
//! peer has answered, the sessions of the users announced as connected re-read their live
//! conversations from the store (after a snapshot: every local session). This closes the window
//! in which an owner released an event before it knew the user was here: such an event was
//! durable before it was released, so the re-read, which starts after the owner's directory
//! names this node, finds it.
//!
//! Local changes are batched: flushed as one `USERS` delta to every connected peer after
//! [`FLUSH_INTERVAL`] or at [`FLUSH_AT`] entries, with the last change of a user winning. A peer
//! whose delta could not be queued (backpressure) is marked stale and gets a full snapshot
//! instead, retried every [`RETRY_INTERVAL`] until it is queued: a snapshot replaces all that
//! peer knew of this node, so a lost delta never leaves a permanent hole.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use roost_engine::delivery::Outbound;
use roost_engine::ids::NodeId;
use roost_engine::ids::UserId;
use roost_engine::Engine;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::directory::Directory;
use super::wire;
use super::wire::UsersDelta;
use super::wire::UsersSnapshot;
use crate::transport::Kind;
use crate::transport::Transport;

/// Longest a local change waits before it is announced.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Pending changes that trigger an announcement at once.
pub const FLUSH_AT: usize = 1024;
/// How often a stale peer's snapshot is retried.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Users per snapshot message: the first chunk is a `USERS_SNAPSHOT`, the rest `USERS` deltas,
/// which keeps every frame far below the transport's 16 MiB limit.
pub const SNAPSHOT_CHUNK: usize = 65_536;
/// How long an announcement waits for the peers' answers before the sessions resync anyway.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the directory task is told.
#[derive(Debug)]
pub enum DirectoryEvent {
    /// A user's first connection on this node opened, or its last closed.
    Local {
        user: UserId,
        connected: bool,
    },
    /// A peer's delta; `applied` is answered once the directory has it.
    Delta {
        node: NodeId,
        delta: UsersDelta,
        applied: Option<oneshot::Sender<()>>,
    },
    /// A peer's full list; `applied` is answered once the directory has it.
    Snapshot {
        node: NodeId,
        users: Vec<UserId>,
        applied: Option<oneshot::Sender<()>>,
    },
    PeerUp(NodeId),
    PeerDown(NodeId),
    /// An announcement to `node` was not delivered: it is owed a snapshot.
    Missed(NodeId),
}

/// This node's connected users and the changes not yet announced.
#[derive(Debug, Default)]
pub struct LocalUsers {
    connected: HashSet<UserId>,
    pending: HashMap<UserId, bool>,
}

impl LocalUsers {
    /// Records a change; the latest change of a user replaces an earlier unannounced one.
    pub fn set(&mut self, user: UserId, connected: bool) {
        if connected {
            self.connected.insert(user);
        } else {
            self.connected.remove(&user);
        }
        self.pending.insert(user, connected);
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The unannounced changes, emptied.
    pub fn take_delta(&mut self) -> UsersDelta {
        let mut delta = UsersDelta::default();
        for (user, connected) in self.pending.drain() {
            if connected {
                delta.connected.push(user);
            } else {
                delta.disconnected.push(user);
            }
        }
        delta
    }

    /// The messages that tell a peer every user connected here: a snapshot, then deltas.
    pub fn snapshot_messages(&self) -> Vec<(Kind, Bytes)> {
        let mut users: Vec<UserId> = self.connected.iter().copied().collect();
        users.sort_unstable();
        let mut chunks = users.chunks(SNAPSHOT_CHUNK);
        let first = UsersSnapshot {
            users: chunks.next().map(<[UserId]>::to_vec).unwrap_or_default(),
        };
        let mut messages = Vec::new();
        messages.extend(
            wire::encode(wire::USERS_SNAPSHOT, &first)
                .ok()
                .map(|b| (wire::USERS_SNAPSHOT, b)),
        );
        for chunk in chunks {
            let delta = UsersDelta {
                connected: chunk.to_vec(),
                disconnected: Vec::new(),
            };
            messages.extend(wire::encode(wire::USERS, &delta).ok().map(|b| (wire::USERS, b)));
        }
        messages
    }
}

/// Starts the task on `runtime`; it ends when every sender is dropped.
pub fn spawn(
    runtime: &Handle,
    transport: Transport,
    engine: Arc<OnceLock<Engine>>,
    directory: Directory,
) -> mpsc::UnboundedSender<DirectoryEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = DirectoryTask {
        rx,
        me: tx.downgrade(),
        transport,
        engine,
        directory,
        local: LocalUsers::default(),
        stale: HashSet::new(),
    };
    runtime.spawn(task.run());
    tx
}

struct DirectoryTask {
    rx: mpsc::UnboundedReceiver<DirectoryEvent>,
    /// For the announcement waiters to report misses (weak: the task ends with its last sender).
    me: mpsc::WeakUnboundedSender<DirectoryEvent>,
    transport: Transport,
    engine: Arc<OnceLock<Engine>>,
    directory: Directory,
    local: LocalUsers,
    /// Peers that missed an announcement and are owed a full snapshot.
    stale: HashSet<NodeId>,
}

impl DirectoryTask {
    async fn run(mut self) {
        let mut deadline: Option<Instant> = None;
        loop {
            let event = match deadline {
                Some(at) => tokio::select! {
                    event = self.rx.recv() => event,
                    () = tokio::time::sleep_until(at) => {
                        self.flush();
                        deadline = (!self.stale.is_empty()).then(|| Instant::now() + RETRY_INTERVAL);
                        continue;
                    }
                },
                None => self.rx.recv().await,
            };
            let Some(event) = event else {
                break;
            };
            self.handle(event);
            if self.local.pending_len() >= FLUSH_AT {
                self.flush();
            }
            let busy = self.local.pending_len() > 0 || !self.stale.is_empty();
            if deadline.is_none() && busy {
                deadline = Some(Instant::now() + FLUSH_INTERVAL);
            }
        }
        tracing::debug!("Routing directory task stopped.");
    }

    fn handle(&mut self, event: DirectoryEvent) {
        match event {
            DirectoryEvent::Local { user, connected } => self.local.set(user, connected),
            DirectoryEvent::Delta { node, delta, applied } => {
                self.directory.apply_delta(node, &delta);
                if let Some(applied) = applied {
                    let _ = applied.send(());
                }
            }
            DirectoryEvent::Snapshot { node, users, applied } => {
                self.directory.replace(node, &users);
                if let Some(applied) = applied {
                    let _ = applied.send(());
                }
            }
            DirectoryEvent::PeerUp(node) => self.send_snapshot(node),
            DirectoryEvent::Missed(node) => {
                self.stale.insert(node);
            }
            DirectoryEvent::PeerDown(node) => {
                self.stale.remove(&node);
                let forgotten = self.directory.users_on(node);
                self.directory.forget(node);
                tracing::info!(peer = %node, forgotten, "Peer link down; forgot its users and resyncing sessions.");
                if let Some(engine) = self.engine.get() {
                    engine.resync_sessions();
                }
            }
        }
    }

    /// Announces the pending delta to every connected peer that is not owed a snapshot, and
    /// retries the snapshots owed to connected peers.
    fn flush(&mut self) {
        let delta = self.local.take_delta();
        let peers = self.transport.connected_peers();
        self.stale.retain(|node| peers.contains(node));
        if !delta.is_empty() {
            match wire::encode(wire::USERS, &delta) {
                Ok(body) => {
                    let fresh: Vec<NodeId> = peers
                        .iter()
                        .copied()
                        .filter(|node| !self.stale.contains(node))
                        .collect();
                    let answers: Vec<_> = fresh
                        .into_iter()
                        .map(|node| (node, self.transport.request(node, wire::USERS, body.clone())))
                        .collect();
                    self.after_answers(answers, Resync::Users(delta.connected));
                }
                Err(error) => tracing::error!(%error, "Cannot encode a directory delta."),
            }
        }
        let owed: Vec<NodeId> = self.stale.iter().copied().collect();
        for node in owed {
            self.send_snapshot(node);
        }
    }

    fn send_snapshot(&mut self, node: NodeId) {
        let answers: Vec<_> = self
            .local
            .snapshot_messages()
            .into_iter()
            .map(|(kind, body)| (node, self.transport.request(node, kind, body)))
            .collect();
        self.stale.remove(&node);
        self.after_answers(answers, Resync::Everyone);
    }

    /// Waits (off this task) for the peers' answers; a peer that did not take the announcement
    /// is owed a snapshot; then the sessions concerned re-read from the store.
    fn after_answers<F>(&self, answers: Vec<(NodeId, F)>, resync: Resync)
    where
        F: std::future::Future<Output = Result<Bytes, crate::transport::TransportError>> + Send + 'static,
    {
        let me = self.me.clone();
        let engine = Arc::clone(&self.engine);
        tokio::spawn(async move {
            let waits = answers.into_iter().map(|(node, answer)| async move {
                let outcome = tokio::time::timeout(ANNOUNCE_TIMEOUT, answer).await;
                (node, matches!(outcome, Ok(Ok(_))))
            });
            for (node, ok) in join_all(waits).await {
                if !ok {
                    tracing::debug!(peer = %node, "Directory announcement not answered; the peer gets a snapshot.");
                    if let Some(me) = me.upgrade() {
                        let _ = me.send(DirectoryEvent::Missed(node));
                    }
                }
            }
            let Some(engine) = engine.get() else {
                return;
            };
            match resync {
                Resync::Users(users) if users.is_empty() => {}
                Resync::Users(users) => engine.deliver_local(users.into(), Outbound::Resync),
                Resync::Everyone => engine.resync_sessions(),
            }
        });
    }
}

/// Whose sessions re-read once an announcement is answered.
enum Resync {
    Users(Vec<UserId>),
    Everyone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_change_of_a_user_wins_in_a_delta() {
        let mut local = LocalUsers::default();
        local.set(UserId(1), true);
        local.set(UserId(2), true);
        local.set(UserId(1), false);
        assert_eq!(local.pending_len(), 2);
        let delta = local.take_delta();
        assert_eq!(delta.connected, vec![UserId(2)]);
        assert_eq!(delta.disconnected, vec![UserId(1)]);
        assert_eq!(local.pending_len(), 0);
        assert!(local.take_delta().is_empty());
    }

    #[test]
    fn snapshot_lists_connected_users_in_chunks() {
        let mut local = LocalUsers::default();
        assert_eq!(local.snapshot_messages().len(), 1, "an empty snapshot still replaces");
        for user in 0..(SNAPSHOT_CHUNK as u64 + 5) {
            local.set(UserId(user), true);
        }
        local.set(UserId(3), false);
        let messages = local.snapshot_messages();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].0, wire::USERS_SNAPSHOT);
        assert_eq!(messages[1].0, wire::USERS);
        let first: UsersSnapshot = wire::decode(messages[0].0, &messages[0].1).expect("snapshot decodes");
        let rest: UsersDelta = wire::decode(messages[1].0, &messages[1].1).expect("delta decodes");
        assert_eq!(first.users.len(), SNAPSHOT_CHUNK);
        assert_eq!(rest.connected.len(), 4);
        assert!(!first.users.contains(&UserId(3)));
    }
}
