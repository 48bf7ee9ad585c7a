//! The control plane's application requests ([`ControlCommand`]) and their results.
//!
//! A command is a fact to record, not a request that may fail halfway: the state machine applies
//! it deterministically on every node, and a command that does not fit the current state is
//! answered with a [`Rejection`] (and changes nothing) instead of an error. Callers (the leader's
//! planner, the operator commands) read the response to decide what to do next.
//!
//! Compatibility: these types are stored in the Raft log with postcard, which numbers enum
//! variants by position. Append new variants at the end; never reorder or remove one.

use roost_engine::ids::NodeId;
use serde::Deserialize;
use serde::Serialize;

use super::Node;
use crate::rebalance::Move;
use crate::shard::ShardId;
use crate::shard::ShardMap;

/// Longest setting key, in bytes.
pub const MAX_SETTING_KEY_BYTES: usize = 128;
/// Longest setting value, in bytes.
pub const MAX_SETTING_VALUE_BYTES: usize = 4096;

/// A change to the control state, proposed through Raft and applied by every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Creates the shard map with `shard_count` unowned shards (`roost cluster init`). The count
    /// is fixed for the life of the cluster; repeating the command with the same count is a no-op.
    CreateShardMap { shard_count: u32 },
    /// Adds a member, or updates its addresses, and makes it `Active` (a dead or leaving node
    /// that joins again is active again).
    AddMember { id: NodeId, node: Node },
    /// Starts a graceful leave: the planner moves the member's shards away, with draining.
    MarkLeaving { id: NodeId },
    /// Declares a member failed (after the failure timeout): its shards are reassigned without
    /// its help.
    MarkDead { id: NodeId },
    /// Forgets a member that owns no shard. Removing an unknown member is a no-op.
    Remove { id: NodeId },
    /// Moves shards, each only if the shard's epoch and owner are still those the move was
    /// planned against (see [`FencedMove`]).
    ApplyMoves { moves: Vec<FencedMove> },
    /// Sets a cluster-wide setting.
    SetSetting { key: String, value: String },
    /// Gives a shard back to the owner that released it for a move that never committed: bumps
    /// the shard's epoch, owner unchanged, if it is still at `expected_epoch`. The owner may then
    /// serve it again (its lease covers the new epoch), and any late copy of the abandoned move is
    /// fenced (its expected epoch is now stale). Answers `MovesApplied` with one outcome.
    Reclaim { shard: ShardId, expected_epoch: u64 },
}

/// A planned [`Move`] with the epoch of its shard when it was planned.
///
/// The state machine applies it only if the shard is still at `expected_epoch` (and owned by
/// `planned.from`); a move planned against an older map is refused. So a stale plan (from a
/// deposed leader, or one overtaken by a failover) can never take a shard from its current owner,
/// and each ownership change is decided exactly once per epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedMove {
    pub planned: Move,
    pub expected_epoch: u64,
}

impl FencedMove {
    /// Attaches the current epochs of `map` to planned moves. Moves of shards outside the map
    /// are kept with epoch 0; the state machine refuses them.
    pub fn fence(map: &ShardMap, moves: &[Move]) -> Vec<FencedMove> {
        moves
            .iter()
            .map(|&planned| FencedMove {
                planned,
                expected_epoch: map.get(planned.shard).map_or(0, |assignment| assignment.epoch),
            })
            .collect()
    }
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The entry carried no command (a blank or membership entry).
    Empty,
    /// The command took effect, or had already.
    Done,
    /// One outcome per move of an `ApplyMoves`, in order.
    MovesApplied { outcomes: Vec<MoveOutcome> },
    /// The setting was stored; its previous value.
    SettingSet { previous: Option<String> },
    /// The command does not fit the current state and changed nothing.
    Rejected { reason: Rejection },
}

/// What happened to one move of an `ApplyMoves`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveOutcome {
    /// The shard now belongs to the move's target, at `epoch`.
    Applied { shard: ShardId, epoch: u64 },
    /// The shard's epoch moved on since the plan: re-plan from the current map.
    StaleEpoch { shard: ShardId, expected: u64, actual: u64 },
    /// The shard's owner is not the plan's `from` (a plan built from mismatched data).
    OwnerMismatch {
        shard: ShardId,
        expected: Option<NodeId>,
        actual: Option<NodeId>,
    },
    /// The target is not an active member any more.
    TargetNotActive { shard: ShardId, to: NodeId },
    /// No such shard in the map (or no map yet).
    UnknownShard { shard: ShardId },
}

impl MoveOutcome {
    pub fn is_applied(&self) -> bool {
        matches!(self, MoveOutcome::Applied { .. })
    }
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("the shard map already exists with {shard_count} shards")]
    ShardMapExists { shard_count: u32 },
    #[error("shard count {shard_count} is out of range")]
    InvalidShardCount { shard_count: u32 },
    #[error("node id 0 is reserved; node ids start at 1")]
    ReservedNodeId,
    #[error("node {id} is not a member")]
    UnknownMember { id: NodeId },
    #[error("node {id} is dead; it must join again first")]
    MemberIsDead { id: NodeId },
    #[error("node {id} still owns {shards} shards; move them first")]
    StillOwnsShards { id: NodeId, shards: u32 },
    #[error(
        "setting key must be 1 to {MAX_SETTING_KEY_BYTES} bytes and value at most {MAX_SETTING_VALUE_BYTES} bytes"
    )]
    InvalidSetting,
}
