//! The node side of a lease: which `(shard, epoch)` pairs this node may sequence, and until when.
//!
//! ARCHITECTURE.md ("Fencing across ownership changes") (pieces 3 and 4) is the design. A node may answer `Local` for a shard only
//! while the lease granted by the Raft leader covers the shard at the epoch of the applied map, and
//! only until `t_send + L` on its own clock, `t_send` read *before* the renewal was sent. The
//! clock is `CLOCK_BOOTTIME` ([`BootClock`]), which keeps counting while the machine is suspended;
//! `Instant` (`CLOCK_MONOTONIC`) does not, and would let a resumed node trust an expired lease.
//!
//! [`NodeLease`] also remembers the shards this node is handing over (`Release`): from the moment a
//! release starts they are no longer `Local` and no longer claimed in renewals; once drained they
//! are reported as released, so the leader may move them.
//!
//! State: one small `RwLock` around [`LeaseState`]. It is read on every placement lookup (a
//! clock read and a compare, never across an await) and written once per renewal or release, so
//! a lock is simpler than an actor here; nothing else is kept under it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

use crate::shard::ShardId;
use crate::shard::ShardMap;

/// A clock for leases: time since an arbitrary origin that never goes backwards.
pub trait LeaseClock: Send + Sync + 'static {
    fn now(&self) -> Duration;
}

/// `CLOCK_BOOTTIME`: time since boot, including time suspended.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootClock;

impl LeaseClock for BootClock {
    fn now(&self) -> Duration {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        // The kernel never answers negative times for CLOCK_BOOTTIME.
        Duration::new(
            u64::try_from(now.tv_sec).unwrap_or(0),
            u32::try_from(now.tv_nsec).unwrap_or(0),
        )
    }
}

/// A shard this node is handing over at `epoch`; `drained` once its actors have stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedShard {
    pub shard: ShardId,
    pub epoch: u64,
    pub drained: bool,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// The send time of the renewal the current grant answered.
    sent_at: Option<Duration>,
    /// The grant is valid before this time.
    until: Option<Duration>,
    /// Shard -> epoch this node may sequence.
    covered: BTreeMap<ShardId, u64>,
    /// Shards being (or already) handed over, by (shard, epoch): never `Local`, never claimed.
    released: BTreeMap<(ShardId, u64), bool>,
}

/// This node's lease. Shared by the placement (reads) and the renew and release tasks (writes).
pub struct NodeLease {
    clock: Arc<dyn LeaseClock>,
    duration: Duration,
    state: RwLock<LeaseState>,
}

impl std::fmt::Debug for NodeLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("NodeLease")
            .field("duration", &self.duration)
            .field("until", &state.until)
            .field("covered", &state.covered.len())
            .field("released", &state.released.len())
            .finish()
    }
}

impl NodeLease {
    /// A node without a lease yet (a restarted node has none until it renews).
    pub fn new(clock: Arc<dyn LeaseClock>, duration: Duration) -> Self {
        Self {
            clock,
            duration,
            state: RwLock::new(LeaseState::default()),
        }
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Records a grant of `covered` for a renewal sent at `sent_at` (read before sending). A grant
    /// older than the current one is ignored.
    pub fn renewed(&self, sent_at: Duration, covered: &[(ShardId, u64)]) {
        let mut state = self.write();
        if state.sent_at.is_some_and(|current| current > sent_at) {
            return;
        }
        state.sent_at = Some(sent_at);
        state.until = Some(sent_at + self.duration);
        state.covered = covered
            .iter()
            .filter(|pair| !state.released.contains_key(pair))
            .copied()
            .collect();
    }

    /// Whether this node may sequence `shard` at `epoch` right now.
    pub fn covers(&self, shard: ShardId, epoch: u64) -> bool {
        let now = self.clock.now();
        let state = self.read();
        state.until.is_some_and(|until| now < until)
            && state.covered.get(&shard) == Some(&epoch)
            && !state.released.contains_key(&(shard, epoch))
    }

    /// Whether this node may still confirm appends of `shard` it assigned at `epoch`: the grant
    /// is current and covers the pair, or the pair is being handed over (its drain waits for
    /// exactly these confirmations, and the leader moves it only after the drain).
    pub fn may_confirm(&self, shard: ShardId, epoch: u64) -> bool {
        let now = self.clock.now();
        let state = self.read();
        state.until.is_some_and(|until| now < until)
            && (state.covered.get(&shard) == Some(&epoch) || state.released.get(&(shard, epoch)) == Some(&false))
    }

    /// When the current grant ends, if there is one.
    pub fn expires_at(&self) -> Option<Duration> {
        self.read().until
    }

    /// Starts handing `pairs` over: from now on they are not `Local` and not claimed.
    pub fn begin_release(&self, pairs: &[(ShardId, u64)]) {
        let mut state = self.write();
        for &pair in pairs {
            state.released.entry(pair).or_insert(false);
            if state.covered.get(&pair.0) == Some(&pair.1) {
                state.covered.remove(&pair.0);
            }
        }
    }

    /// The actors of `pairs` have stopped: the leader may now move them.
    pub fn finish_release(&self, pairs: &[(ShardId, u64)]) {
        let mut state = self.write();
        for pair in pairs {
            if let Some(drained) = state.released.get_mut(pair) {
                *drained = true;
            }
        }
    }

    /// The shards being handed over, for the next renewal.
    pub fn released(&self) -> Vec<ReleasedShard> {
        self.read()
            .released
            .iter()
            .map(|(&(shard, epoch), &drained)| ReleasedShard { shard, epoch, drained })
            .collect()
    }

    /// Forgets releases the applied map has moved past (the shard's epoch is now higher).
    pub fn forget_settled(&self, map: &ShardMap) {
        let mut state = self.write();
        state
            .released
            .retain(|&(shard, epoch), _| map.get(shard).is_some_and(|assignment| assignment.epoch <= epoch));
    }

    fn read(&self) -> RwLockReadGuard<'_, LeaseState> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, LeaseState> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
