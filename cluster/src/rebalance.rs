//! The rebalancing planner: a pure function from (shard map, members) to the moves to make.
//!
//! The Raft leader runs [`plan`] whenever members change, fences the moves with the shards'
//! current epochs (`ShardMap` + `FencedMove`) and proposes them as one `ApplyMoves` command. The
//! planner does no I/O and reads no clock, so it is tested exhaustively on its own
//! (`tests/t10_rebalance.rs`, including a property test).
//!
//! What a plan guarantees, for a non-empty map and at least one `Active` member:
//!
//! - **Balance.** Afterwards every shard is owned by an active member, and the most and least
//!   loaded active members differ by at most one shard.
//! - **Minimality.** A shard moves only if its owner is not an active member (dead, leaving,
//!   removed or none) or its owner holds more than its target. Targets are `base = shards /
//!   active` for every member plus one extra shard for the `shards % active` members that already
//!   hold the most (ties: lower node id), which is the choice that moves the fewest shards. The
//!   number of moves is therefore the lower bound: the orphaned shards, plus the excess of
//!   overloaded members over the best balanced targets.
//! - **Determinism.** Same input, same output, whatever the order of `members`: an overloaded
//!   member gives up its highest-numbered shards; moving shards are handed out in shard order to
//!   underloaded members in node-id order. Two leaders planning from the same committed state
//!   propose the same moves.
//!
//! With no active member the plan is empty: there is nobody to give shards to, and the shards of a
//! dead node stay assigned to it (unavailable) until a node is active again.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use roost_engine::ids::NodeId;
use serde::Deserialize;
use serde::Serialize;

use crate::member::MemberState;
use crate::shard::ShardId;
use crate::shard::ShardMap;

/// Give `shard` to `to`. `from` is the owner when the plan was made: `None` for a shard never
/// owned, or the dead/leaving/overloaded node to take it from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Move {
    pub shard: ShardId,
    pub from: Option<NodeId>,
    pub to: NodeId,
}

/// The moves that balance `map` across the active `members`, moving as few shards as possible.
/// Sorted by shard. See the module documentation for the guarantees.
pub fn plan(map: &ShardMap, members: &[MemberState]) -> Vec<Move> {
    let active: BTreeSet<NodeId> = members.iter().filter(|m| m.is_active()).map(|m| m.id).collect();
    if active.is_empty() || map.is_empty() {
        return Vec::new();
    }

    // Shards of active members stay put for now; every other shard has to move.
    let mut owned: BTreeMap<NodeId, Vec<ShardId>> = active.iter().map(|&id| (id, Vec::new())).collect();
    let mut moving: Vec<(ShardId, Option<NodeId>)> = Vec::new();
    for (shard, assignment) in map.iter() {
        match assignment.owner.and_then(|owner| owned.get_mut(&owner)) {
            Some(shards) => shards.push(shard),
            None => moving.push((shard, assignment.owner)),
        }
    }

    let target = targets(map.shard_count() as usize, &owned);

    // Overloaded members give up their highest-numbered shards (`owned` lists are in shard order).
    for (&id, shards) in &owned {
        let keep = target[&id];
        if shards.len() > keep {
            moving.extend(shards[keep..].iter().map(|&shard| (shard, Some(id))));
        }
    }
    moving.sort_unstable_by_key(|&(shard, _)| shard);

    // Underloaded members, in node-id order, take moving shards in shard order up to their target.
    // The deficits add up to exactly the number of moving shards: the targets sum to the shard
    // count, and every shard is either kept by an active member or moving.
    let mut moving = moving.into_iter();
    let mut moves = Vec::new();
    for (&id, shards) in &owned {
        for _ in shards.len()..target[&id] {
            if let Some((shard, from)) = moving.next() {
                moves.push(Move { shard, from, to: id });
            }
        }
    }
    debug_assert!(moving.next().is_none(), "every moving shard has a receiver");
    moves.sort_unstable();
    moves
}

/// Each active member's target: `base`, plus one for the `extra` members that hold the most now
/// (ties broken by lower node id). Giving the extra shards to the most loaded members is what
/// keeps the most shards in place.
fn targets(shard_count: usize, owned: &BTreeMap<NodeId, Vec<ShardId>>) -> BTreeMap<NodeId, usize> {
    let base = shard_count / owned.len();
    let extra = shard_count % owned.len();
    let mut by_load: Vec<(NodeId, usize)> = owned.iter().map(|(&id, shards)| (id, shards.len())).collect();
    by_load.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_load
        .into_iter()
        .enumerate()
        .map(|(rank, (id, _))| (id, base + usize::from(rank < extra)))
        .collect()
}
