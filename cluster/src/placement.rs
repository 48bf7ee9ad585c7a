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
//! Leases: `Owner::Local` from the applied map alone ("the map applied on this node names this
//! node") is necessary, not sufficient, for assigning seqs. A placement built with
//! [`RaftPlacement::with_lease`] (what a cluster node uses) answers `Local` only if, in addition,
//! the node's lease covers the shard at the map's epoch and the shard is not being handed over
//! (ARCHITECTURE.md ("Fencing across ownership changes")); a shard the map gives this node but the lease does not cover answers
//! `Unassigned` (retry shortly). [`RaftPlacement::new`] (no lease) is for tests and tools.

use std::sync::Arc;

use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use roost_engine::placement::Owner;
use roost_engine::placement::Placement;
use tokio::sync::watch;

use crate::node::lease::NodeLease;
use crate::shard::ShardAssignment;
use crate::shard::ShardId;
use crate::shard::ShardMap;

/// Placement from the latest applied shard map, for the node `node_id`.
#[derive(Clone, Debug)]
pub struct RaftPlacement {
    node_id: NodeId,
    shard_map: watch::Receiver<Arc<ShardMap>>,
    lease: Option<Arc<NodeLease>>,
}

impl RaftPlacement {
    /// `shard_map` comes from `StateMachineStore::subscribe`. No lease check: `Local` whenever the
    /// map names this node.
    pub fn new(node_id: NodeId, shard_map: watch::Receiver<Arc<ShardMap>>) -> Self {
        Self {
            node_id,
            shard_map,
            lease: None,
        }
    }

    /// A placement that answers `Local` only for shards `lease` covers at the map's epoch.
    pub fn with_lease(node_id: NodeId, shard_map: watch::Receiver<Arc<ShardMap>>, lease: Arc<NodeLease>) -> Self {
        Self {
            node_id,
            shard_map,
            lease: Some(lease),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The current map, for callers that need several lookups against one consistent version.
    pub fn shard_map(&self) -> Arc<ShardMap> {
        Arc::clone(&self.shard_map.borrow())
    }
}

impl RaftPlacement {
    /// The conversation's shard and its assignment in the applied map, if any.
    fn assignment(&self, conversation: ConversationId) -> Option<(ShardId, ShardAssignment)> {
        let map = self.shard_map.borrow();
        let shard = map.shard_of(conversation)?;
        map.get(shard).map(|assignment| (shard, *assignment))
    }
}

impl Placement for RaftPlacement {
    fn owner(&self, conversation: ConversationId) -> Owner {
        let Some((shard, assignment)) = self.assignment(conversation) else {
            return Owner::Unassigned;
        };
        match assignment.owner {
            Some(owner) if owner == self.node_id => match &self.lease {
                Some(lease) if !lease.covers(shard, assignment.epoch) => Owner::Unassigned,
                _ => Owner::Local,
            },
            Some(owner) => Owner::Remote(owner),
            None => Owner::Unassigned,
        }
    }

    fn may_confirm(&self, conversation: ConversationId) -> bool {
        let Some((shard, assignment)) = self.assignment(conversation) else {
            return false;
        };
        assignment.owner == Some(self.node_id)
            && self
                .lease
                .as_ref()
                .is_none_or(|lease| lease.may_confirm(shard, assignment.epoch))
    }
}
