//! The virtual shard map: conversation -> shard (a fixed hash) -> owner node (replicated state).
//!
//! Conversations are not placed one by one: each one hashes to one of a fixed number of virtual
//! shards ([`shard_of`]), and the Raft-replicated [`ShardMap`] names the node that owns each
//! shard. Moving a shard moves every conversation in it, so the map stays small (256 entries by
//! default) however many conversations there are.
//!
//! Every change of a shard's owner bumps that shard's epoch. The epoch is the fencing token of
//! seq assignment (see ARCHITECTURE.md ("Fencing across ownership changes")): "node N owns shard S at epoch E" is true for at
//! most one N per (S, E), cluster-wide, because only the Raft state machine changes owners.
//!
//! Architecture invariant: [`shard_of`] never changes. It decides where every existing
//! conversation lives; changing it (or the shard count of a running cluster) would move every
//! conversation at once. `tests/t10_shard.rs` pins its output.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;

use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use serde::Deserialize;
use serde::Serialize;

/// Shards per cluster unless configured otherwise: enough to spread load evenly over a few dozen
/// nodes, few enough that the whole map is a few kilobytes.
pub const DEFAULT_SHARD_COUNT: u32 = 256;

/// Upper bound on the shard count, so a typo cannot make every snapshot megabytes long.
pub const MAX_SHARD_COUNT: u32 = 65_536;

/// A virtual shard: `0..shard_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// The shard a conversation belongs to, for a cluster of `shard_count` shards.
///
/// The function, frozen forever:
///
/// 1. `h = splitmix64(conversation.0)`, the SplitMix64 output function (Steele, Lea and Flood,
///    2014): `z = x + 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
///    z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^ (z >> 31)`, wrapping arithmetic on `u64`.
/// 2. `shard = (h * shard_count) >> 64`, computed in `u128` (Lemire's multiply-shift range
///    reduction, which unlike `h % n` needs no division and has no bias worth measuring).
///
/// Why not `std::hash`: `DefaultHasher`'s algorithm is explicitly allowed to change between Rust
/// releases. Why a mixer at all: conversation ids are sequential, and consecutive ids must not
/// land on consecutive shards (one busy day of new groups would otherwise load one node).
pub fn shard_of(conversation: ConversationId, shard_count: NonZeroU32) -> ShardId {
    let h = splitmix64(conversation.0);
    let shard = (u128::from(h) * u128::from(shard_count.get())) >> 64;
    // The product of a u64 and a u32, shifted right by 64, is below the u32 factor.
    ShardId(shard as u32)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A shard count outside `1..=MAX_SHARD_COUNT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shard count {0} is outside 1..={MAX_SHARD_COUNT}")]
pub struct ShardCountError(pub u32);

/// Who owns one shard, and how many times its owner has changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAssignment {
    /// The owning node; `None` before the first assignment.
    pub owner: Option<NodeId>,
    /// Starts at 0 (unowned) and grows by one on every change of `owner`.
    pub epoch: u64,
}

/// The owner and epoch of every shard. Indexed by [`ShardId`].
///
/// The field is private so that the only way to change an owner, [`ShardMap::set_owner`], also
/// bumps the epoch ([`ShardMap::bump_epoch`] bumps it alone). The empty map (`ShardMap::default()`,
/// no shards) is the state of a cluster
/// whose shard map has not been created yet; it places nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    shards: Vec<ShardAssignment>,
}

impl ShardMap {
    /// A map of `shard_count` unowned shards at epoch 0.
    pub fn new(shard_count: u32) -> Result<Self, ShardCountError> {
        if shard_count == 0 || shard_count > MAX_SHARD_COUNT {
            return Err(ShardCountError(shard_count));
        }
        Ok(Self {
            shards: vec![ShardAssignment::default(); shard_count as usize],
        })
    }

    /// Number of shards; 0 for a map not created yet.
    pub fn shard_count(&self) -> u32 {
        // `new` bounds the length by MAX_SHARD_COUNT.
        self.shards.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard of `conversation`; `None` while the map is empty.
    pub fn shard_of(&self, conversation: ConversationId) -> Option<ShardId> {
        NonZeroU32::new(self.shard_count()).map(|count| shard_of(conversation, count))
    }

    /// The node owning `conversation`'s shard; `None` while the map is empty or the shard unowned.
    pub fn owner_of(&self, conversation: ConversationId) -> Option<NodeId> {
        self.shard_of(conversation)
            .and_then(|shard| self.get(shard))
            .and_then(|a| a.owner)
    }

    pub fn get(&self, shard: ShardId) -> Option<&ShardAssignment> {
        self.shards.get(shard.0 as usize)
    }

    /// Every shard with its assignment, in shard order.
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, &ShardAssignment)> + '_ {
        self.shards.iter().enumerate().map(|(i, a)| (ShardId(i as u32), a))
    }

    /// Shards owned per node (nodes owning none are absent).
    pub fn load(&self) -> BTreeMap<NodeId, u32> {
        let mut load = BTreeMap::new();
        for owner in self.shards.iter().filter_map(|a| a.owner) {
            *load.entry(owner).or_insert(0) += 1;
        }
        load
    }

    /// Shards owned by `node`, in shard order.
    pub fn owned_by(&self, node: NodeId) -> Vec<ShardId> {
        self.iter()
            .filter(|(_, a)| a.owner == Some(node))
            .map(|(s, _)| s)
            .collect()
    }

    /// Makes `owner` the owner of `shard` and returns the shard's epoch afterwards. A change of
    /// owner bumps the epoch; setting the current owner again changes nothing. `None` for a shard
    /// outside the map.
    pub fn set_owner(&mut self, shard: ShardId, owner: Option<NodeId>) -> Option<u64> {
        let assignment = self.shards.get_mut(shard.0 as usize)?;
        if assignment.owner != owner {
            assignment.owner = owner;
            assignment.epoch += 1;
        }
        Some(assignment.epoch)
    }

    /// Bumps `shard`'s epoch without changing its owner (a reclaim after an abandoned handover),
    /// and returns the new epoch. With `set_owner`, the only mutator. `None` for a shard outside
    /// the map.
    pub fn bump_epoch(&mut self, shard: ShardId) -> Option<u64> {
        let assignment = self.shards.get_mut(shard.0 as usize)?;
        assignment.epoch += 1;
        Some(assignment.epoch)
    }
}
