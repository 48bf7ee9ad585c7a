//! The leader loop: failure detection, voter upkeep, rebalancing with graceful handover, and
//! removing members that have left. Runs on every node; acts only while the node leads.
//!
//! Every `rebalance_interval_ms` (failure detection every `renew_ms`), the leader of term `T`:
//! 1. declares dead (`MarkDead`) every active or leaving member it has not granted a lease for
//!    `failure_timeout_ms`, counting from its last grant or, if later, from when this node took
//!    office in `T` ([`LeaderLeases`]; ARCHITECTURE.md ("Fencing across ownership changes") pieces 5 and 6);
//! 2. keeps three voters: active voters stay, active learners are promoted in id order to fill
//!    the places of dead or missing ones (dead voters become learners);
//! 3. plans with `rebalance::plan` and moves shards: from a live owner by handover (`Release`,
//!    wait for `Released`, then a fenced `ApplyMoves`), from a dead or removed owner directly but
//!    only once its lease has certainly expired on this leader's clock, and shards their owner
//!    already released directly; a released shard the plan no longer moves is given back with
//!    `Reclaim`;
//! 4. removes `Leaving` members that own no shard: out of Raft's membership, then `Remove`.
//!
//! State: [`LeaderLeases`] is the one piece shared with the renew handler (which records grants);
//! it sits behind a small mutex because a grant and a failure decision must exclude each other
//! (a member condemned as dead must get no further grant). Everything else is read from the
//! applied state and Raft's metrics at each round.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use futures_util::future::join_all;
use openraft::ChangeMembers;
use roost_engine::ids::NodeId;
use tokio::sync::watch;

use super::control;
use super::control::ReleaseRequest;
use super::control::ReleasedReply;
use super::kind;
use super::lease::ReleasedShard;
use super::ClusterError;
use super::Shared;
use crate::member::MemberStatus;
use crate::raft::command::ControlCommand;
use crate::raft::command::FencedMove;
use crate::raft::state_machine::ControlState;
use crate::rebalance::plan;
use crate::rebalance::Move;
use crate::shard::ShardId;

/// How long the leader waits for an owner to drain and release shards.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Target number of Raft voters.
const VOTERS: usize = 3;

/// The leader's record of lease grants in its current term.
#[derive(Default)]
pub(crate) struct LeaderLeases {
    grants: Mutex<Grants>,
}

#[derive(Default)]
struct Grants {
    term: u64,
    /// When this node took office (first seen as leader of `term`), on the lease clock.
    elected_at: Duration,
    granted: HashMap<NodeId, Duration>,
    /// Members declared dead this term: no further grants.
    condemned: BTreeSet<NodeId>,
    /// What each node reported as handed over in its last renewal.
    released: HashMap<NodeId, Vec<ReleasedShard>>,
}

impl LeaderLeases {
    fn lock(&self, term: u64, now: Duration) -> MutexGuard<'_, Grants> {
        let mut grants = self.grants.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if grants.term != term {
            *grants = Grants {
                term,
                elected_at: now,
                ..Grants::default()
            };
        }
        grants
    }

    /// Records a grant to `node` at `now`; `false` (grant nothing) if `node` was condemned.
    pub(crate) fn grant(&self, term: u64, node: NodeId, now: Duration, released: Vec<ReleasedShard>) -> bool {
        let mut grants = self.lock(term, now);
        grants.released.insert(node, released);
        if grants.condemned.contains(&node) {
            return false;
        }
        grants.granted.insert(node, now);
        true
    }

    /// Whether every lease `node` may hold has certainly expired: `timeout` since its last grant
    /// and since this node took office.
    fn expired(grants: &Grants, node: NodeId, now: Duration, timeout: Duration) -> bool {
        let since = grants
            .granted
            .get(&node)
            .copied()
            .unwrap_or_default()
            .max(grants.elected_at);
        now.saturating_sub(since) >= timeout
    }

    /// The members of `candidates` whose leases have expired; they are condemned (no more grants).
    /// A member seen here for the first time (it just joined) counts from now: it may not have
    /// renewed yet, and waiting only delays a failover, never makes one unsafe.
    fn condemn_overdue(&self, term: u64, now: Duration, candidates: &[NodeId], timeout: Duration) -> Vec<NodeId> {
        let mut grants = self.lock(term, now);
        for &node in candidates {
            grants.granted.entry(node).or_insert(now);
        }
        let overdue: Vec<NodeId> = candidates
            .iter()
            .copied()
            .filter(|&node| Self::expired(&grants, node, now, timeout))
            .collect();
        grants.condemned.extend(overdue.iter().copied());
        overdue
    }

    /// Whether `node`'s leases have certainly expired (so its shards may move without it).
    fn has_expired(&self, term: u64, now: Duration, node: NodeId, timeout: Duration) -> bool {
        let grants = self.lock(term, now);
        Self::expired(&grants, node, now, timeout)
    }

    /// The drained releases reported in the latest renewals: (owner, shard, epoch).
    fn drained(&self, term: u64, now: Duration) -> BTreeSet<(NodeId, ShardId, u64)> {
        let grants = self.lock(term, now);
        grants
            .released
            .iter()
            .flat_map(|(&node, shards)| {
                shards
                    .iter()
                    .filter(|r| r.drained)
                    .map(move |r| (node, r.shard, r.epoch))
            })
            .collect()
    }

    /// A member joined again: it may be granted leases.
    pub(crate) fn absolve(&self, node: NodeId) {
        let mut grants = self.grants.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        grants.condemned.remove(&node);
        // Its last grant predates its death; counting from it would condemn it again at once.
        grants.granted.remove(&node);
    }
}

/// Runs until `stop` turns true. Failure detection runs every renewal interval (so a failed
/// owner is declared dead soon after its failure timeout, not up to a rebalance interval later);
/// the rest of the round every rebalance interval, and at once after a member was declared dead.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let rebalance_every = shared.settings.rebalance_interval();
    let mut tick = tokio::time::interval(rebalance_every.min(shared.settings.renew_interval()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_round = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let Some(term) = shared.leading_term() else {
            continue;
        };
        let declared_dead = match detect_failures(&shared, term).await {
            Ok(count) => count,
            Err(error) => {
                tracing::debug!(%error, "failure detection did not finish");
                continue;
            }
        };
        if declared_dead == 0 && last_round.elapsed() < rebalance_every {
            continue;
        }
        last_round = tokio::time::Instant::now();
        if let Err(error) = round(&shared, term).await {
            tracing::debug!(%error, "leader round did not finish");
        }
    }
}

async fn round(shared: &Arc<Shared>, term: u64) -> Result<(), ClusterError> {
    keep_voters(shared).await?;
    rebalance(shared, term).await?;
    remove_departed(shared).await
}

fn current_state(shared: &Shared) -> Arc<ControlState> {
    Arc::clone(&shared.state.borrow())
}

/// Declares dead the members whose leases have certainly expired; answers how many.
async fn detect_failures(shared: &Arc<Shared>, term: u64) -> Result<usize, ClusterError> {
    let state = current_state(shared);
    let candidates: Vec<NodeId> = state
        .members
        .iter()
        .filter(|(&id, member)| id != shared.id && member.status != MemberStatus::Dead)
        .map(|(&id, _)| id)
        .collect();
    let now = shared.lease.now();
    let timeout = shared.settings.failure_timeout();
    let overdue = shared.leader.condemn_overdue(term, now, &candidates, timeout);
    for &id in &overdue {
        tracing::warn!(
            node = id.0,
            "no lease renewal within the failure timeout: marking the node dead"
        );
        shared.propose_checked(ControlCommand::MarkDead { id }).await?;
    }
    Ok(overdue.len())
}

/// Keeps up to three voters: live voters stay, active learners fill free places in id order.
async fn keep_voters(shared: &Arc<Shared>) -> Result<(), ClusterError> {
    let membership = shared.membership();
    if membership.get_joint_config().len() > 1 {
        return Ok(());
    }
    let state = current_state(shared);
    let status = |id: u64| state.members.get(&NodeId(id)).map(|member| member.status);
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let mut desired: BTreeSet<u64> = voters
        .iter()
        .copied()
        .filter(|&id| id == shared.id.0 || matches!(status(id), Some(MemberStatus::Active | MemberStatus::Leaving)))
        .collect();
    let mut learners: Vec<u64> = membership
        .learner_ids()
        .filter(|&id| status(id) == Some(MemberStatus::Active))
        .collect();
    learners.sort_unstable();
    for id in learners {
        if desired.len() >= VOTERS {
            break;
        }
        desired.insert(id);
    }
    if desired == voters || desired.is_empty() {
        return Ok(());
    }
    tracing::info!(?voters, ?desired, "changing the raft voters");
    shared
        .raft
        .change_membership(ChangeMembers::ReplaceAllVoters(desired), true)
        .await
        .map_err(ClusterError::raft)?;
    Ok(())
}

async fn rebalance(shared: &Arc<Shared>, term: u64) -> Result<(), ClusterError> {
    let state = current_state(shared);
    let map = &state.shards;
    let moves = plan(map, &state.member_states());
    let now = shared.lease.now();
    let drained = shared.leader.drained(term, now);
    let timeout = shared.settings.failure_timeout();
    let epoch = |shard: ShardId| map.get(shard).map_or(0, |assignment| assignment.epoch);
    let mut direct = Vec::new();
    let mut handovers: BTreeMap<NodeId, Vec<Move>> = BTreeMap::new();
    for planned in &moves {
        let Some(owner) = planned.from else {
            direct.push(*planned);
            continue;
        };
        let status = state.members.get(&owner).map(|member| member.status);
        if drained.contains(&(owner, planned.shard, epoch(planned.shard))) {
            direct.push(*planned);
        } else if matches!(status, Some(MemberStatus::Active | MemberStatus::Leaving)) {
            handovers.entry(owner).or_default().push(*planned);
        } else if shared.leader.has_expired(term, now, owner, timeout) {
            direct.push(*planned);
        }
    }
    if !direct.is_empty() {
        apply_moves(shared, FencedMove::fence(map, &direct)).await?;
    }
    let handed = handovers
        .into_iter()
        .map(|(owner, moves)| handover(shared, owner, FencedMove::fence(map, &moves)));
    for result in join_all(handed).await {
        if let Err(error) = result {
            tracing::info!(%error, "shard handover did not finish; retrying next round");
        }
    }
    let planned: BTreeSet<ShardId> = moves.iter().map(|planned| planned.shard).collect();
    reclaim(shared, &state, &drained, &planned).await
}

/// Asks `owner` to release the moves' shards, then commits the moves it released.
async fn handover(shared: &Arc<Shared>, owner: NodeId, moves: Vec<FencedMove>) -> Result<(), ClusterError> {
    let request = ReleaseRequest {
        shards: moves.iter().map(|m| (m.planned.shard, m.expected_epoch)).collect(),
    };
    let released = async {
        if owner == shared.id {
            control::release(shared, request).await
        } else {
            control::call::<_, ReleasedReply>(shared, owner, kind::RELEASE, &request).await
        }
    };
    let released = tokio::time::timeout(RELEASE_TIMEOUT, released)
        .await
        .map_err(|_| ClusterError::Timeout(format!("node {} did not release its shards", owner.0)))??;
    let released: BTreeSet<(ShardId, u64)> = released.shards.into_iter().collect();
    let moves: Vec<FencedMove> = moves
        .into_iter()
        .filter(|m| released.contains(&(m.planned.shard, m.expected_epoch)))
        .collect();
    apply_moves(shared, moves).await
}

async fn apply_moves(shared: &Arc<Shared>, moves: Vec<FencedMove>) -> Result<(), ClusterError> {
    if moves.is_empty() {
        return Ok(());
    }
    let count = moves.len();
    let response = shared.propose(ControlCommand::ApplyMoves { moves }).await?;
    tracing::info!(count, ?response, "applied shard moves");
    Ok(())
}

/// Gives back shards that were released for a move that never committed and is no longer planned.
async fn reclaim(
    shared: &Arc<Shared>,
    state: &ControlState,
    drained: &BTreeSet<(NodeId, ShardId, u64)>,
    planned: &BTreeSet<ShardId>,
) -> Result<(), ClusterError> {
    for &(owner, shard, epoch) in drained {
        let Some(assignment) = state.shards.get(shard) else {
            continue;
        };
        if assignment.owner != Some(owner) || assignment.epoch != epoch || planned.contains(&shard) {
            continue;
        }
        tracing::info!(node = owner.0, %shard, epoch, "reclaiming a shard whose move was abandoned");
        shared
            .propose(ControlCommand::Reclaim {
                shard,
                expected_epoch: epoch,
            })
            .await?;
    }
    Ok(())
}

/// `Leaving` members that own nothing: out of Raft's membership first, then `Remove`.
async fn remove_departed(shared: &Arc<Shared>) -> Result<(), ClusterError> {
    let state = current_state(shared);
    let departed: Vec<NodeId> = state
        .members
        .iter()
        .filter(|(&id, member)| member.status == MemberStatus::Leaving && state.shards.owned_by(id).is_empty())
        .map(|(&id, _)| id)
        .collect();
    for id in departed {
        leave_raft(shared, id, &state).await?;
        tracing::info!(node = id.0, "removing a member that has handed over its shards");
        shared.propose_checked(ControlCommand::Remove { id }).await?;
        shared.transport.remove_peer(id);
    }
    Ok(())
}

/// Removes `id` from Raft's voters and learners, promoting an active learner in its place.
async fn leave_raft(shared: &Arc<Shared>, id: NodeId, state: &ControlState) -> Result<(), ClusterError> {
    let membership = shared.membership();
    if membership.get_node(&id.0).is_none() {
        return Ok(());
    }
    let mut voters: BTreeSet<u64> = membership.voter_ids().collect();
    let change = if voters.remove(&id.0) {
        let mut learners: Vec<u64> = membership
            .learner_ids()
            .filter(|&l| state.members.get(&NodeId(l)).map(|m| m.status) == Some(MemberStatus::Active))
            .collect();
        learners.sort_unstable();
        if let Some(&promoted) = learners.first() {
            voters.insert(promoted);
        }
        ChangeMembers::ReplaceAllVoters(voters)
    } else {
        ChangeMembers::RemoveNodes([id.0].into())
    };
    shared
        .raft
        .change_membership(change, false)
        .await
        .map_err(ClusterError::raft)?;
    Ok(())
}
