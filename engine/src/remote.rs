//! The seam to other nodes: forwarding commands to a conversation's owner and fanning events out.
//!
//! A single node has no other nodes ([`NoRemoteNodes`]). In a cluster, `roost-cluster` implements
//! [`RemoteNodes`] over its mutually authenticated peer links. The engine calls it in three places:
//! [`crate::Engine::submit`] forwards a command whose conversation another node owns; a
//! conversation actor hands every outgoing item to `fan_out` right after its local fan-out; and
//! the session hub reports users whose first connection opened or last one closed, so the other
//! nodes know where to send a conversation's events. No I/O happens here: the implementation
//! enqueues and returns, so actors never wait on the network.
//!
//! [`Topology`] bundles what makes a node part of a cluster (its id, the placement and the remote
//! nodes) so the engine starts the same way on one node and on many.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::conversation::command::Command;
use crate::conversation::command::Reply;
use crate::delivery::Outbound;
use crate::error::ConversationError;
use crate::ids::ConversationId;
use crate::ids::NodeId;
use crate::ids::UserId;
use crate::placement::Placement;
use crate::placement::SingleNode;

/// The other nodes of the cluster, as the engine sees them.
pub trait RemoteNodes: Send + Sync + 'static {
    /// Runs `command` on `owner`'s conversation actor. Enqueues before returning, so the commands
    /// of one connection reach the owner in the order they were submitted; the outcome arrives on
    /// the receiver. An unreachable owner answers `Unavailable` (retryable).
    fn forward(
        &self,
        owner: NodeId,
        conversation: ConversationId,
        command: Command,
    ) -> oneshot::Receiver<Result<Reply, ConversationError>>;

    /// Sends an encoded item to the other nodes where any of `users` is connected: one envelope
    /// per node, never one per recipient.
    fn fan_out(&self, users: &Arc<[UserId]>, item: &Outbound);

    /// `user`'s first connection on this node opened (`true`), or its last one closed (`false`).
    fn local_user(&self, user: UserId, connected: bool);
}

/// A node alone: nothing to forward to, nobody to fan out to.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRemoteNodes;

impl RemoteNodes for NoRemoteNodes {
    fn forward(
        &self,
        _owner: NodeId,
        conversation: ConversationId,
        _command: Command,
    ) -> oneshot::Receiver<Result<Reply, ConversationError>> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(ConversationError::NotOwner(conversation)));
        rx
    }

    fn fan_out(&self, _users: &Arc<[UserId]>, _item: &Outbound) {}

    fn local_user(&self, _user: UserId, _connected: bool) {}
}

/// Where this node stands: its id, who owns which conversation, and how to reach the others.
#[derive(Clone)]
pub struct Topology {
    pub node: NodeId,
    pub placement: Arc<dyn Placement>,
    pub remote: Arc<dyn RemoteNodes>,
}

impl Topology {
    /// One node that owns every conversation.
    pub fn standalone() -> Self {
        Self {
            node: NodeId::STANDALONE,
            placement: Arc::new(SingleNode),
            remote: Arc::new(NoRemoteNodes),
        }
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}
