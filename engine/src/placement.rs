//! Placement: which node owns a conversation. The seam the cluster crate implements.
//!
//! A single node owns everything ([`SingleNode`]). In a cluster, `roost-cluster` answers from its
//! Raft-replicated shard map; the registry refuses to start an actor for a conversation that is
//! not local, so at most one actor sequences a conversation.

use crate::ids::ConversationId;
pub use crate::ids::NodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This node sequences the conversation.
    Local,
    /// Another node does.
    Remote(NodeId),
    /// Nobody does right now (the shard is being moved or has no owner yet): retry shortly.
    Unassigned,
}

pub trait Placement: Send + Sync + 'static {
    /// Who sequences `conversation` now. `Local` is the permission to assign a new seq.
    fn owner(&self, conversation: ConversationId) -> Owner;

    /// Whether this node may still acknowledge an append it assigned earlier. Wider than
    /// `owner() == Local`: while a conversation is being handed over gracefully, new commands
    /// are refused but appends in flight are still confirmed (nobody else owns it until they
    /// are); once this node's lease has lapsed, nothing is.
    fn may_confirm(&self, conversation: ConversationId) -> bool {
        self.owner(conversation) == Owner::Local
    }
}

/// Every conversation is owned by this node.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleNode;

impl Placement for SingleNode {
    fn owner(&self, _conversation: ConversationId) -> Owner {
        Owner::Local
    }
}
