//! `RaftPlacement`: the engine's `Placement` answered from the replicated shard map.
//!
//! The state machine publishes every new shard map as an `Arc<ShardMap>` on a
//! `tokio::sync::watch` channel; `RaftPlacement` keeps the receiving end. A lookup borrows the
//! current map (a shared read of the channel's slot, uncontended: the state machine writes it only
//! when the map changes, a few times per rebalance), hashes the conversation to its shard and
//! compares the owner with this node. No lookup waits on Raft or the network, and nothing is
//! locked for longer than one lookup. A watch channel rather than `arc-swap`: it is already in the
//! workspace (tokio), and it also lets later code await `changed()` to learn of a new map.
//!
//! Unassigned conversations: before the shard map exists, or while a shard has no owner, there is
//! no node to answer: `Owner::Unassigned`, which routing treats as "retry later".
//!
//! Fencing caveat: `Owner::Local` means "the map applied on this node names this node". That is
//! necessary, not sufficient, for assigning seqs; the lease described in `cluster/FENCING.md`
//! closes the gap while ownership changes.

use std::sync::Arc;

use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use roost_engine::placement::Owner;
use roost_engine::placement::Placement;
use tokio::sync::watch;

use crate::shard::ShardMap;

/// Placement from the latest applied shard map, for the node `node_id`.
#[derive(Clone, Debug)]
pub struct RaftPlacement {
    node_id: NodeId,
    shard_map: watch::Receiver<Arc<ShardMap>>,
}

impl RaftPlacement {
    /// `shard_map` comes from `StateMachineStore::subscribe`.
    pub fn new(node_id: NodeId, shard_map: watch::Receiver<Arc<ShardMap>>) -> Self {
        Self { node_id, shard_map }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The current map, for callers that need several lookups against one consistent version.
    pub fn shard_map(&self) -> Arc<ShardMap> {
        Arc::clone(&self.shard_map.borrow())
    }
}

impl Placement for RaftPlacement {
    fn owner(&self, conversation: ConversationId) -> Owner {
        match self.shard_map.borrow().owner_of(conversation) {
            Some(owner) if owner == self.node_id => Owner::Local,
            Some(owner) => Owner::Remote(owner),
            None => Owner::Unassigned,
        }
    }
}
