//! Cluster members as the control plane sees them: a node id and a lifecycle status.
//!
//! This is the application's view of membership, kept in the Raft state machine. It is distinct
//! from openraft's own membership (which nodes vote): a node can own shards without voting, and a
//! voter can be `Leaving` while its shards are handed over.

use std::fmt;

use roost_engine::ids::NodeId;
use serde::Deserialize;
use serde::Serialize;

/// Where a member is in its life. Only `Active` members own shards once the planner has run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Serving: may be given shards.
    Active,
    /// Asked to leave (`roost cluster remove`): its shards are handed over gracefully (the owner
    /// drains its conversation actors first), then it can be removed.
    Leaving,
    /// Declared failed after the failure timeout: its shards are reassigned without its help. It
    /// may join again (as a new `Active` member) after a restart.
    Dead,
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberStatus::Active => "active",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Dead => "dead",
        })
    }
}

/// A member as the rebalancing planner needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberState {
    pub id: NodeId,
    pub status: MemberStatus,
}

impl MemberState {
    pub fn new(id: NodeId, status: MemberStatus) -> Self {
        Self { id, status }
    }

    pub fn is_active(&self) -> bool {
        self.status == MemberStatus::Active
    }
}
