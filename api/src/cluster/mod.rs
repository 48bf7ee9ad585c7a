//! The API crate's side of a cluster: this node's [`ClusterNode`] as `[cluster]` configures it,
//! and what the rest of the node needs from it.
//!
//! `roost-cluster` owns the control plane (Raft, leases, the peer transport, routing). This module
//! is the glue a `roost serve` process adds around it: building [`ClusterOptions`] from the node
//! configuration ([`start`]), the engine [`Topology`] the node provides ([`topology`]), joining an
//! existing cluster through a seed with retries ([`join`]), what `/readyz` reports about the
//! cluster ([`readiness`]), and closing this node's clients once it has left the cluster
//! ([`spawn_leave_watch`]): a node whose last shard was handed over has nothing left to serve, so
//! its WebSockets are closed with 1001 "node leaving; reconnect" and readiness turns off.
//!
//! [`client`] and [`cli`] are the operator's side: the `roost cluster` commands, which talk to a
//! node's admin endpoints (`crate::http::cluster`) on its internal listener.

pub mod cli;
pub mod client;

use std::time::Duration;

use anyhow::Context;
use roost_cluster::node::ClusterNode;
use roost_cluster::node::ClusterOptions;
use roost_cluster::node::ClusterStatus;
use roost_cluster::transport::PeerTls;
use roost_cluster::MemberStatus;
use roost_engine::delivery::hub::CountConnections;
use roost_engine::delivery::hub::KickAll;
use roost_engine::delivery::DisconnectReason;
use roost_engine::ids::NodeId;
use roost_engine::remote::Topology;
use serde::Serialize;

use crate::config::NodeConfig;
use crate::state::AppState;

/// How long `roost serve --join` keeps trying before it gives up.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(60);
/// First and longest pause between join attempts.
const JOIN_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));
/// How often a node checks whether it has left the cluster.
const LEAVE_POLL: Duration = Duration::from_secs(1);

/// Load the peer certificates and start this node's cluster runtime (Raft log in
/// `storage.data_dir/raft.redb`). Blocks while starting; call it before the engine starts.
pub fn start(config: &NodeConfig) -> anyhow::Result<ClusterNode> {
    let c = &config.cluster;
    let missing = |key: &str| anyhow::anyhow!("cluster.{key} is not set");
    let node_id = c.node_id.filter(|&id| id > 0).ok_or_else(|| missing("node_id"))?;
    let (ca, cert, key) = match (&c.ca_cert, &c.node_cert, &c.node_key) {
        (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
        _ => anyhow::bail!("cluster.ca_cert, cluster.node_cert and cluster.node_key must all be set"),
    };
    let tls = PeerTls::load(ca, cert, key).context("cannot load the cluster certificates")?;
    let options = ClusterOptions {
        node_id: NodeId(node_id),
        cluster_id: c.cluster_id.clone(),
        data_dir: config.storage.data_dir.clone(),
        peer_listen: c.peer_listen,
        advertise_peer: c.advertised_peer().ok_or_else(|| missing("advertise_peer"))?,
        advertise_client: c
            .advertised_client(config.server.listen)
            .ok_or_else(|| missing("advertise_client"))?,
        tls,
        settings: c.control.clone(),
    };
    let node = ClusterNode::start(options)
        .with_context(|| format!("cannot start cluster node {node_id} (peer listener {})", c.peer_listen))?;
    tracing::info!(node = node_id, peer = %node.peer_addr(), cluster = %c.cluster_id, "Cluster node started.");
    Ok(node)
}

/// What the engine runs on in a cluster: the lease-checked placement and the peer routing.
pub fn topology(node: &ClusterNode) -> Topology {
    Topology {
        node: node.node_id(),
        placement: node.placement(),
        remote: node.remote_nodes(),
    }
}

/// Join the cluster `seed` (a member's peer address) belongs to, retrying with backoff for up to
/// [`JOIN_DEADLINE`]. A node that is already a member (a restart with `--join` still on its
/// command line) skips the join: it rejoined by itself when it started.
pub async fn join(node: &ClusterNode, seed: &str) -> anyhow::Result<()> {
    let me = node.node_id();
    if let Ok(status) = node.status().await {
        if status
            .members
            .iter()
            .any(|m| m.id == me && m.status != MemberStatus::Dead)
        {
            tracing::info!(node = %me, "Already a cluster member; not joining again.");
            return Ok(());
        }
    }
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut pause = JOIN_BACKOFF.0;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        tracing::info!(node = %me, seed, attempt, "Joining the cluster.");
        let error = match tokio::time::timeout_at(deadline, node.join(seed)).await {
            Ok(Ok(())) => {
                tracing::info!(node = %me, seed, "Joined the cluster.");
                return Ok(());
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        if tokio::time::Instant::now() + pause >= deadline {
            anyhow::bail!(
                "cannot join the cluster through {seed} within {} s (last error: {error}); check that \
                 the seed is a running member, that its cluster.peer_listen is reachable from here, and \
                 that both nodes have certificates from the same CA and the same cluster.cluster_id",
                JOIN_DEADLINE.as_secs()
            );
        }
        tracing::warn!(node = %me, seed, attempt, %error, retry_in = ?pause, "Joining failed; retrying.");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(JOIN_BACKOFF.1);
    }
}

/// The cluster part of `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterReadiness {
    /// A serving member, and a leader is known.
    Ok,
    /// Not (yet) a member: waiting for `roost cluster init` or a join, or declared dead.
    NotMember,
    /// A member whose shards are being handed over (`roost cluster remove`).
    Leaving,
    /// This node has left the cluster; it serves no one.
    Left,
    /// No Raft leader is known: no shard moves or failovers can happen until one is elected.
    NoLeader,
    /// The cluster runtime did not answer.
    Unavailable,
}

impl ClusterReadiness {
    pub fn is_ready(self) -> bool {
        self == ClusterReadiness::Ok
    }
}

/// Where this node stands in the cluster, from its applied state.
pub async fn readiness(state: &AppState, node: &ClusterNode) -> ClusterReadiness {
    if state.lifecycle.has_left() {
        return ClusterReadiness::Left;
    }
    match tokio::time::timeout(Duration::from_secs(2), node.status()).await {
        Ok(Ok(status)) => readiness_of(&status),
        _ => ClusterReadiness::Unavailable,
    }
}

fn readiness_of(status: &ClusterStatus) -> ClusterReadiness {
    match status.members.iter().find(|m| m.id == status.node_id).map(|m| m.status) {
        None | Some(MemberStatus::Dead) => ClusterReadiness::NotMember,
        Some(MemberStatus::Leaving) => ClusterReadiness::Leaving,
        Some(MemberStatus::Active) if status.leader.is_none() => ClusterReadiness::NoLeader,
        Some(MemberStatus::Active) => ClusterReadiness::Ok,
    }
}

/// Whether `status` says this node has left: it is leaving and owns no shard any more, or it was
/// a member before and is no longer listed.
fn has_left(status: &ClusterStatus, was_member: bool) -> bool {
    match status.members.iter().find(|m| m.id == status.node_id) {
        Some(member) => member.status == MemberStatus::Leaving && member.shards == 0,
        None => was_member,
    }
}

/// Watch for this node leaving the cluster; once it has, turn readiness off and close every
/// client with 1001 "node leaving; reconnect" (again for any that connect later), until the node
/// shuts down.
pub fn spawn_leave_watch(state: AppState, node: ClusterNode) {
    actix_web::rt::spawn(async move {
        let mut was_member = false;
        while !state.lifecycle.is_draining() {
            tokio::time::sleep(LEAVE_POLL).await;
            if !state.lifecycle.has_left() {
                let Ok(status) = node.status().await else {
                    continue;
                };
                was_member |= status.members.iter().any(|m| m.id == status.node_id);
                if !has_left(&status, was_member) {
                    continue;
                }
                state.lifecycle.set_left();
                tracing::warn!(
                    node = %status.node_id,
                    "This node has left the cluster: closing its clients so they reconnect to other nodes."
                );
            }
            let hub = state.engine.hub();
            if hub.send(CountConnections).await.unwrap_or(0) > 0 {
                let told = hub
                    .send(KickAll {
                        reason: DisconnectReason::ShuttingDown,
                    })
                    .await
                    .unwrap_or(0);
                tracing::info!(connections = told, "Clients of a node that left told to reconnect.");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use roost_cluster::node::MemberInfo;

    use super::*;

    fn status(me: u64, members: &[(u64, MemberStatus, u32)], leader: Option<u64>) -> ClusterStatus {
        ClusterStatus {
            node_id: NodeId(me),
            leader: leader.map(NodeId),
            term: 3,
            members: members
                .iter()
                .map(|&(id, status, shards)| MemberInfo {
                    id: NodeId(id),
                    peer_addr: format!("127.0.0.1:70{id:02}"),
                    client_addr: format!("127.0.0.1:80{id:02}"),
                    status,
                    shards,
                    shard_ids: Vec::new(),
                    voter: true,
                    reachable: true,
                })
                .collect(),
            shard_count: 16,
            unassigned: 0,
        }
    }

    #[test]
    fn readiness_follows_membership_and_leadership() {
        use MemberStatus::*;
        assert_eq!(readiness_of(&status(1, &[], None)), ClusterReadiness::NotMember);
        assert_eq!(
            readiness_of(&status(1, &[(1, Active, 16)], Some(1))),
            ClusterReadiness::Ok
        );
        assert_eq!(
            readiness_of(&status(2, &[(1, Active, 8), (2, Active, 8)], None)),
            ClusterReadiness::NoLeader
        );
        assert_eq!(
            readiness_of(&status(2, &[(1, Active, 8), (2, Leaving, 8)], Some(1))),
            ClusterReadiness::Leaving
        );
        assert_eq!(
            readiness_of(&status(2, &[(1, Active, 16), (2, Dead, 0)], Some(1))),
            ClusterReadiness::NotMember
        );
    }

    #[test]
    fn a_node_has_left_once_it_has_no_shards_or_is_gone() {
        use MemberStatus::*;
        assert!(!has_left(&status(2, &[(1, Active, 8), (2, Leaving, 8)], Some(1)), true));
        assert!(has_left(&status(2, &[(1, Active, 16), (2, Leaving, 0)], Some(1)), true));
        assert!(has_left(&status(2, &[(1, Active, 16)], Some(1)), true));
        assert!(
            !has_left(&status(2, &[(1, Active, 16)], Some(1)), false),
            "not joined yet"
        );
        assert!(
            !has_left(&status(2, &[(1, Active, 8), (2, Active, 0)], Some(1)), true),
            "just joined"
        );
    }
}
