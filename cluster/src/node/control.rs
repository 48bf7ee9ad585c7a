//! The control RPCs between nodes (join, lease renewal, shard release, leave) and their messages.
//!
//! Each RPC is one transport request of a control kind ([`super::kind`]), with a postcard body and
//! a postcard answer; a refusal travels as the transport's error answer (a string). Requests that
//! only the Raft leader can serve (`Join`, `Renew`, `Leave`) are forwarded by a follower to the
//! leader it knows (`Join`, `Leave`) or refused (`Renew`, whose sender retries with the leader it
//! learns from Raft). `Release` goes from the leader to a shard's owner.
//!
//! The leader's side of a renewal is the lease grant of ARCHITECTURE.md ("Fencing across ownership changes"): confirm leadership
//! with a quorum (`ensure_linearizable`) after the request arrived, then answer with the
//! `(shard, epoch)` pairs the node owns in the committed state, minus those it is handing over,
//! and record the grant time for failure detection ([`super::leader::LeaderLeases`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::ChangeMembershipError;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use openraft::ServerState;
use roost_engine::ids::NodeId;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

use super::kind;
use super::lease::ReleasedShard;
use super::ClusterError;
use super::Shared;
use crate::member::MemberStatus;
use crate::raft::command::ControlCommand;
use crate::raft::Node;
use crate::shard::ShardId;
use crate::transport::Kind;
use crate::transport::Responder;

/// How long a learner may take to catch up with the leader's log when it joins.
const JOIN_CATCH_UP: Duration = Duration::from_secs(30);

/// Pause before retrying a membership change refused because another is in progress.
const MEMBERSHIP_RETRY: Duration = Duration::from_millis(50);

/// A node asks to become (or stay) a member.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub id: NodeId,
    pub node: Node,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JoinReply {
    pub leader: NodeId,
}

/// A node renews its lease; `released` are the shards it is handing over (not claimed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RenewRequest {
    pub node: NodeId,
    pub released: Vec<ReleasedShard>,
}

/// The pairs the lease covers, and the node's member status (`None`: not a member).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RenewReply {
    pub granted: Vec<(ShardId, u64)>,
    pub status: Option<MemberStatus>,
}

/// The leader asks a shard's owner to stop serving these shards at these epochs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ReleaseRequest {
    pub shards: Vec<(ShardId, u64)>,
}

/// The owner has stopped serving these pairs (its actors have drained).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ReleasedReply {
    pub shards: Vec<(ShardId, u64)>,
}

/// Asks the leader to remove a member gracefully (`MarkLeaving`; the leader does the rest).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LeaveRequest {
    pub node: NodeId,
}

/// Serves one inbound control request. Spawns; returns at once.
pub(crate) fn serve(shared: Arc<Shared>, from: NodeId, kind: Kind, body: Bytes, reply: Responder) {
    tokio::spawn(async move {
        let answer = match kind {
            kind::JOIN => handle(&body, |request| join(&shared, request)).await,
            kind::RENEW => handle(&body, |request| renew_as_leader(&shared, request)).await,
            kind::RELEASE => handle(&body, |request| release(&shared, request)).await,
            kind::LEAVE => handle(&body, |request| leave(&shared, request)).await,
            other => Err(format!("unknown control message kind {other} from node {}", from.0)),
        };
        match answer {
            Ok(bytes) => reply.ok(bytes),
            Err(why) => reply.err(why),
        }
    });
}

async fn handle<Req, Resp, F, Fut>(body: &[u8], serve: F) -> Result<Bytes, String>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, ClusterError>>,
{
    let request = postcard::from_bytes(body).map_err(|error| format!("cannot decode the request: {error}"))?;
    let answer = serve(request).await.map_err(|error| error.to_string())?;
    postcard::to_allocvec(&answer)
        .map(Bytes::from)
        .map_err(|error| format!("cannot encode the answer: {error}"))
}

/// Sends a control request to `node` and decodes its answer.
pub(crate) async fn call<Req, Resp>(
    shared: &Shared,
    node: NodeId,
    kind: Kind,
    request: &Req,
) -> Result<Resp, ClusterError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let body = Bytes::from(postcard::to_allocvec(request)?);
    let reply = shared
        .transport
        .request(node, kind, body)
        .await
        .map_err(|error| ClusterError::Transport(error.to_string()))?;
    Ok(postcard::from_bytes(&reply)?)
}

/// `Join`: served by the leader, forwarded by anyone else.
pub(crate) async fn join(shared: &Arc<Shared>, request: JoinRequest) -> Result<JoinReply, ClusterError> {
    let leader = shared.wait_for_leader().await?;
    if leader != shared.id {
        return call(shared, leader, kind::JOIN, &request).await;
    }
    join_as_leader(shared, request).await?;
    Ok(JoinReply { leader })
}

/// Adds the node as a Raft learner (waiting until it has caught up) and as an active member.
/// Idempotent: a member that joins again with the same addresses changes nothing. The leader loop
/// promotes it to voter while there are fewer than three.
async fn join_as_leader(shared: &Arc<Shared>, request: JoinRequest) -> Result<(), ClusterError> {
    let JoinRequest { id, node } = request;
    if id.0 == 0 {
        return Err(ClusterError::Rejected(crate::raft::command::Rejection::ReservedNodeId));
    }
    let in_raft = shared.membership().get_node(&id.0).cloned();
    let active = shared
        .state
        .borrow()
        .members
        .get(&id)
        .is_some_and(|member| member.status == MemberStatus::Active && member.node == node);
    if active && in_raft.as_ref() == Some(&node) {
        return Ok(());
    }
    shared.transport.set_peer(id, node.peer_addr.clone());
    let change = match in_raft {
        Some(existing) if existing == node => None,
        Some(_) => Some(openraft::ChangeMembers::SetNodes([(id.0, node.clone())].into())),
        None => Some(openraft::ChangeMembers::AddNodes([(id.0, node.clone())].into())),
    };
    if let Some(change) = change {
        tracing::info!(node = id.0, "adding the node to raft as a learner");
        add_learner(shared, change).await?;
        let target = shared.raft.metrics().borrow().last_log_index;
        let wait = shared.raft.wait(Some(JOIN_CATCH_UP));
        let caught_up = wait.metrics(
            |metrics| {
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id.0).copied().flatten());
                matched.map(|log_id| log_id.index) >= target
            },
            "the new learner has caught up",
        );
        if caught_up.await.is_err() {
            tracing::warn!(node = id.0, "learner still catching up; adding it as a member anyway");
        }
    }
    shared.leader.absolve(id);
    shared.propose_checked(ControlCommand::AddMember { id, node }).await?;
    Ok(())
}

/// Commits a learner change, waiting out membership changes in progress (the leader loop's voter
/// changes, another join).
async fn add_learner(shared: &Shared, change: openraft::ChangeMembers<u64, Node>) -> Result<(), ClusterError> {
    let deadline = tokio::time::Instant::now() + JOIN_CATCH_UP;
    loop {
        match shared.raft.change_membership(change.clone(), true).await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(MEMBERSHIP_RETRY).await;
            }
            Err(error) => return Err(ClusterError::raft(error)),
        }
    }
}

/// `Renew`, on the leader: confirm leadership, then grant what the node owns and has not released.
pub(crate) async fn renew_as_leader(shared: &Arc<Shared>, request: RenewRequest) -> Result<RenewReply, ClusterError> {
    shared
        .raft
        .ensure_linearizable()
        .await
        .map_err(|error| ClusterError::NotLeader(error.to_string()))?;
    let term = {
        let metrics = shared.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state != ServerState::Leader {
            return Err(ClusterError::NotLeader("lost leadership".to_owned()));
        }
        metrics.current_term
    };
    let state = Arc::clone(&shared.state.borrow());
    let status = state.members.get(&request.node).map(|member| member.status);
    let withheld: BTreeSet<(ShardId, u64)> = request.released.iter().map(|r| (r.shard, r.epoch)).collect();
    let mut granted: Vec<(ShardId, u64)> = match status {
        Some(MemberStatus::Active | MemberStatus::Leaving) => state
            .shards
            .iter()
            .filter(|(_, assignment)| assignment.owner == Some(request.node))
            .map(|(shard, assignment)| (shard, assignment.epoch))
            .filter(|pair| !withheld.contains(pair))
            .collect(),
        Some(MemberStatus::Dead) | None => Vec::new(),
    };
    let now = shared.lease.now();
    if !shared.leader.grant(term, request.node, now, request.released) {
        granted.clear();
    }
    Ok(RenewReply { granted, status })
}

/// `Release`, on a shard's owner: stop serving the pairs, drain their actors, then confirm.
pub(crate) async fn release(shared: &Arc<Shared>, request: ReleaseRequest) -> Result<ReleasedReply, ClusterError> {
    let pairs = request.shards;
    shared.lease.begin_release(&pairs);
    let shards: BTreeSet<ShardId> = pairs.iter().map(|&(shard, _)| shard).collect();
    shared.drain(shards).await;
    shared.lease.finish_release(&pairs);
    tracing::info!(shards = pairs.len(), "released shards for a handover");
    Ok(ReleasedReply { shards: pairs })
}

/// `Leave`: served by the leader (proposes `MarkLeaving`), forwarded by anyone else.
pub(crate) async fn leave(shared: &Arc<Shared>, request: LeaveRequest) -> Result<(), ClusterError> {
    let leader = shared.wait_for_leader().await?;
    if leader != shared.id {
        return call(shared, leader, kind::LEAVE, &request).await;
    }
    shared
        .propose_checked(ControlCommand::MarkLeaving { id: request.node })
        .await?;
    Ok(())
}
