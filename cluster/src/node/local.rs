//! This node's own duties, on every node: renewing its lease, stopping the actors of shards it no
//! longer serves, and telling the transport where the other members live.
//!
//! - [`renew`]: every `renew_ms` (and right after the applied map changes, so new shards become
//!   servable quickly) send `Renew` to the Raft leader, reading the lease clock *before* sending,
//!   and record the grant in [`super::lease::NodeLease`]. A node the leader reports as dead while
//!   it is alive joins again (it becomes an active member and is given shards anew).
//! - [`serve_local`]: after every map change and every half renewal interval, compute the shards
//!   this node may serve (map names it and the lease covers that epoch); shards that dropped out
//!   are drained from the engine, and a change of any owner makes the sessions resync from the
//!   store (events fanned out by a lost or former owner may be missing).
//! - [`track_peers`]: every node in Raft's membership is given to the transport by address.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;

use roost_engine::ids::NodeId;
use tokio::sync::watch;

use super::control;
use super::control::JoinRequest;
use super::control::RenewReply;
use super::control::RenewRequest;
use super::kind;
use super::ClusterError;
use super::Shared;
use crate::member::MemberStatus;
use crate::shard::ShardId;
use crate::shard::ShardMap;

/// Renews the lease until `stop` turns true.
pub(crate) async fn renew(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.settings.renew_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut map = shared.shard_map.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = map.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        match tokio::time::timeout(shared.settings.lease(), renew_once(&shared)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "lease renewal failed"),
            Err(_) => tracing::debug!("lease renewal timed out"),
        }
    }
}

async fn renew_once(shared: &Arc<Shared>) -> Result<(), ClusterError> {
    let Some(leader) = shared.leader_id() else {
        return Err(ClusterError::NoLeader);
    };
    let sent_at = shared.lease.now();
    let request = RenewRequest {
        node: shared.id,
        released: shared.lease.released(),
    };
    let reply: RenewReply = if leader == shared.id {
        control::renew_as_leader(shared, request).await?
    } else {
        control::call(shared, leader, kind::RENEW, &request).await?
    };
    shared.lease.renewed(sent_at, &reply.granted);
    if reply.status == Some(MemberStatus::Dead) {
        tracing::warn!("the leader declared this node dead; joining again");
        let request = JoinRequest {
            id: shared.id,
            node: shared.me.clone(),
        };
        control::join(shared, request).await?;
    }
    Ok(())
}

/// Drains shards this node stops serving, until `stop` turns true.
pub(crate) async fn serve_local(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut map_rx = shared.shard_map.clone();
    let mut served: BTreeMap<ShardId, u64> = BTreeMap::new();
    let mut owners: Vec<Option<NodeId>> = Vec::new();
    let period = shared.settings.renew_interval() / 2;
    loop {
        tokio::select! {
            changed = map_rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let map = Arc::clone(&map_rx.borrow_and_update());
        shared.lease.forget_settled(&map);
        let now_served = servable(&shared, &map);
        let lost: BTreeSet<ShardId> = served
            .iter()
            .filter(|(shard, epoch)| now_served.get(shard) != Some(epoch))
            .map(|(&shard, _)| shard)
            .collect();
        served = now_served;
        if !lost.is_empty() {
            tracing::info!(
                shards = lost.len(),
                "no longer serving shards: draining their conversations"
            );
            let shared = Arc::clone(&shared);
            tokio::spawn(async move { shared.drain(lost).await });
        }
        let now_owners: Vec<Option<NodeId>> = map.iter().map(|(_, assignment)| assignment.owner).collect();
        if now_owners != owners {
            owners = now_owners;
            if let Some(engine) = shared.engine.get() {
                engine.resync_sessions();
            }
        }
    }
}

/// The shards this node may serve now: the map names it and the lease covers that epoch.
fn servable(shared: &Shared, map: &ShardMap) -> BTreeMap<ShardId, u64> {
    map.iter()
        .filter(|(shard, assignment)| {
            assignment.owner == Some(shared.id) && shared.lease.covers(*shard, assignment.epoch)
        })
        .map(|(shard, assignment)| (shard, assignment.epoch))
        .collect()
}

/// Gives the transport every Raft member's peer address, until `stop` turns true.
pub(crate) async fn track_peers(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut metrics = shared.raft.metrics();
    let mut known: HashMap<u64, String> = HashMap::new();
    loop {
        let nodes: Vec<(u64, String)> = metrics
            .borrow_and_update()
            .membership_config
            .membership()
            .nodes()
            .map(|(&id, node)| (id, node.peer_addr.clone()))
            .collect();
        for (id, addr) in nodes {
            if id != shared.id.0 && known.get(&id) != Some(&addr) {
                shared.transport.set_peer(NodeId(id), addr.clone());
                known.insert(id, addr);
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}
