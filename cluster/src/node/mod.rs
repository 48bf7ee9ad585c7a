//! A cluster node: Raft, the peer transport, the lease and the leader's duties, on a runtime of
//! their own.
//!
//! [`ClusterNode`] is what `roost serve` starts when the node is part of a cluster. It owns a
//! dedicated multi-threaded tokio runtime (two workers named `roost-cluster`), separate from
//! actix's per-thread runtimes, and everything below runs there: the transport
//! (`crate::transport`), openraft over it ([`network`]), the control RPCs ([`control`]), this
//! node's lease and its upkeep ([`lease`], [`local`]) and the leader loop ([`leader`]). Its async
//! methods may be awaited from any runtime: they run on the cluster runtime and hand the result
//! back.
//!
//! Inbound frames all arrive at one handler ([`Dispatcher`]): Raft and control kinds
//! ([`kind`], 16..=31) are served here, actor traffic (32..=47) goes to the routing layer
//! (`crate::routing`, through [`ActorTraffic`]).
//!
//! Ownership: [`Shared`] is immutable after start except for the lease (its own small lock, see
//! [`lease`]), the leader's grant table (see [`leader`]) and the engine, attached once. The applied
//! control state is read from the state machine's watch channels.

pub mod control;
mod leader;
pub mod lease;
mod local;
mod network;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::Weak;
use std::time::Duration;

use openraft::Membership;
use openraft::ServerState;
use roost_engine::ids::NodeId;
use roost_engine::placement::Placement;
use roost_engine::remote::RemoteNodes;
use roost_engine::Engine;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use self::leader::LeaderLeases;
use self::lease::BootClock;
use self::lease::NodeLease;
use crate::config::ClusterConfig;
use crate::member::MemberStatus;
use crate::placement::RaftPlacement;
use crate::raft::command::ControlCommand;
use crate::raft::command::ControlResponse;
use crate::raft::command::Rejection;
use crate::raft::open_storage;
use crate::raft::state_machine::ControlState;
use crate::raft::ControlRaft;
use crate::raft::Node;
use crate::raft::RaftNodeId;
use crate::raft::RaftStoreError;
use crate::routing::Routing;
use crate::shard::shard_of;
use crate::shard::ShardId;
use crate::shard::ShardMap;
use crate::transport::Inbound;
use crate::transport::InboundHandler;
use crate::transport::PeerTls;
use crate::transport::Transport;
use crate::transport::TransportConfig;

/// Message kinds on the peer transport. This module owns 16..=31; routing owns 32..=47.
pub mod kind {
    use std::ops::RangeInclusive;

    use crate::transport::Kind;

    pub const RAFT_APPEND: Kind = 16;
    pub const RAFT_VOTE: Kind = 17;
    pub const RAFT_SNAPSHOT: Kind = 18;
    pub const JOIN: Kind = 20;
    pub const RENEW: Kind = 21;
    pub const RELEASE: Kind = 22;
    pub const LEAVE: Kind = 23;
    /// Raft and control kinds, served by the node.
    pub const CONTROL: RangeInclusive<Kind> = 16..=31;
    /// Actor traffic, passed to routing.
    pub const ACTOR_TRAFFIC: RangeInclusive<Kind> = 32..=47;
}

/// The routing layer as the node's inbound handler sees it.
pub(crate) trait ActorTraffic: Send + Sync {
    fn inbound(&self, inbound: Inbound);
    fn peer_up(&self, node: NodeId);
    fn peer_down(&self, node: NodeId);
}

/// How long to wait for an election when a request needs the leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long `remove` waits for the member to hand over its shards and leave.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);
/// Snapshot after this many log entries.
const SNAPSHOT_EVERY: u64 = 5_000;
/// Entries kept in the log behind the latest snapshot (so a briefly lagging follower needs no
/// snapshot).
const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 500;

/// What a node needs to start.
#[derive(Clone)]
pub struct ClusterOptions {
    /// This node's id (1 and up), fixed for the life of its data directory.
    pub node_id: NodeId,
    /// The cluster's name: peers of another cluster are refused at the handshake.
    pub cluster_id: String,
    /// Where `raft.redb` lives.
    pub data_dir: PathBuf,
    /// The peer listener (Raft and actor traffic); port 0 picks a free one.
    pub peer_listen: SocketAddr,
    /// The peer address other nodes dial (`host:port`).
    pub advertise_peer: String,
    /// The client address other nodes redirect clients to.
    pub advertise_client: String,
    pub tls: PeerTls,
    pub settings: ClusterConfig,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    #[error("cannot start the cluster runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Storage(#[from] RaftStoreError),
    #[error("peer transport: {0}")]
    Transport(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("this node is already initialized (it is a member of a cluster)")]
    AlreadyInitialized,
    #[error("no leader is known")]
    NoLeader,
    #[error("not the leader: {0}")]
    NotLeader(String),
    #[error("refused: {0}")]
    Rejected(#[from] Rejection),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("cannot encode or decode a peer message: {0}")]
    Codec(#[from] postcard::Error),
    #[error("the cluster node has stopped")]
    Stopped,
}

impl ClusterError {
    pub(crate) fn raft(error: impl std::fmt::Display) -> Self {
        ClusterError::Raft(error.to_string())
    }
}

/// The cluster as one node sees it (`roost cluster status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub members: Vec<MemberInfo>,
    /// 0 before `roost cluster init`.
    pub shard_count: u32,
    /// Shards with no owner.
    pub unassigned: u32,
}

/// One member in [`ClusterStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub peer_addr: String,
    pub client_addr: String,
    pub status: MemberStatus,
    /// Shards it owns in the applied map.
    pub shards: u32,
    /// Which ones (`roost_cluster::shard_of` maps a conversation to its shard).
    pub shard_ids: Vec<u32>,
    /// Whether it votes in Raft (the others are learners).
    pub voter: bool,
    /// This node itself, or a peer it has a live connection to.
    pub reachable: bool,
}

/// A running cluster node. Cheap to clone; clones share the node.
#[derive(Clone)]
pub struct ClusterNode {
    shared: Arc<Shared>,
    _runtime: Arc<RuntimeGuard>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

/// Shuts the runtime down without waiting (so the last clone may drop anywhere, even inside
/// another runtime).
struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl ClusterNode {
    /// Opens `raft.redb` in the data directory, starts the transport and Raft on a runtime of
    /// their own, and returns once they run. A node that was a member before rejoins by itself.
    /// Blocks the calling thread while starting (call it from `main`, not from async code that
    /// must not block).
    pub fn start(opts: ClusterOptions) -> Result<Self, ClusterError> {
        let problems = opts.settings.problems();
        if !problems.is_empty() {
            return Err(ClusterError::Config(problems.join("; ")));
        }
        std::fs::create_dir_all(&opts.data_dir).map_err(|source| ClusterError::DataDir {
            path: opts.data_dir.clone(),
            source,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("roost-cluster")
            .enable_all()
            .build()
            .map_err(ClusterError::Runtime)?;
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(Shared::start(opts).await);
        });
        let started = rx.recv().map_err(|_| ClusterError::Stopped);
        let runtime = Arc::new(RuntimeGuard(Some(runtime)));
        Ok(Self {
            shared: started??,
            _runtime: runtime,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.shared.id
    }

    /// The peer listener's address (useful with port 0).
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.transport.local_addr()
    }

    /// The lease-checked placement for the engine.
    pub fn placement(&self) -> Arc<dyn Placement> {
        Arc::clone(&self.shared.placement) as Arc<dyn Placement>
    }

    /// The routing layer, for the engine's `Topology`.
    pub fn remote_nodes(&self) -> Arc<dyn RemoteNodes> {
        Arc::new(self.shared.routing.clone())
    }

    /// Connects the engine (once, right after `Engine::start`): routing delivers to it, and the
    /// node drains and resyncs it when shards move. A second engine is ignored.
    pub fn attach_engine(&self, engine: Engine) {
        self.shared.routing.attach_engine(engine.clone());
        if self.shared.engine.set(engine).is_err() {
            tracing::warn!("an engine was already attached to the cluster node; ignoring the second one");
        }
    }

    /// `roost cluster init`: makes this node a cluster of one (single voter), creates the shard
    /// map and adds this node as a member; the leader loop then gives it every shard.
    pub async fn init(&self) -> Result<(), ClusterError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.init().await }).await
    }

    /// `roost serve --join`: asks the cluster reachable at `seed_peer_addr` to add this node.
    /// Idempotent: a member joining again with the same addresses changes nothing.
    pub async fn join(&self, seed_peer_addr: &str) -> Result<(), ClusterError> {
        let shared = Arc::clone(&self.shared);
        let seed = seed_peer_addr.to_owned();
        self.run(async move { shared.join(&seed).await }).await
    }

    /// The cluster as this node has applied it.
    pub async fn status(&self) -> Result<ClusterStatus, ClusterError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { Ok(shared.status()) }).await
    }

    /// `roost cluster remove`: asks the leader to hand `node`'s shards over and remove it, and
    /// waits until it is gone from the applied member list. Removing a non-member is a no-op.
    pub async fn remove(&self, node: NodeId) -> Result<(), ClusterError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.remove(node).await }).await
    }

    /// Stops the loops, Raft and the transport, without leaving the cluster (the others see a
    /// failure, or this node back when it restarts).
    pub async fn shutdown(&self) {
        let shared = Arc::clone(&self.shared);
        let _ = self
            .run(async move {
                shared.shutdown().await;
                Ok(())
            })
            .await;
    }

    /// Runs `work` on the cluster runtime and awaits it from whatever runtime the caller is on.
    async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, ClusterError>> + Send + 'static,
    ) -> Result<T, ClusterError> {
        self.shared
            .runtime
            .spawn(work)
            .await
            .map_err(|_| ClusterError::Stopped)?
    }
}

/// Everything a running node shares between its tasks.
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) me: Node,
    pub(crate) settings: ClusterConfig,
    pub(crate) raft: ControlRaft,
    pub(crate) transport: Transport,
    pub(crate) state: watch::Receiver<Arc<ControlState>>,
    pub(crate) shard_map: watch::Receiver<Arc<ShardMap>>,
    pub(crate) lease: Arc<NodeLease>,
    pub(crate) leader: LeaderLeases,
    placement: Arc<RaftPlacement>,
    routing: Routing,
    pub(crate) engine: OnceLock<Engine>,
    runtime: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
}

impl Shared {
    async fn start(opts: ClusterOptions) -> Result<Arc<Self>, ClusterError> {
        let path = opts.data_dir.join("raft.redb");
        let (log, state_machine) = tokio::task::spawn_blocking(move || open_storage(&path))
            .await
            .map_err(|_| ClusterError::Stopped)??;
        let shard_map = state_machine.subscribe();
        let state = state_machine.subscribe_state();
        let dispatcher = Arc::new(Dispatcher::default());
        let transport_config = TransportConfig::new(opts.node_id, opts.cluster_id.clone(), opts.peer_listen, opts.tls);
        let transport = Transport::start(transport_config, Arc::clone(&dispatcher) as Arc<dyn InboundHandler>)
            .await
            .map_err(|error| ClusterError::Transport(error.to_string()))?;
        let raft_config = raft_config(&opts.cluster_id, &opts.settings)?;
        let network = network::Network::new(transport.clone());
        let raft = ControlRaft::new(opts.node_id.0, raft_config, network, log, state_machine)
            .await
            .map_err(ClusterError::raft)?;
        let lease = Arc::new(NodeLease::new(Arc::new(BootClock), opts.settings.lease()));
        let placement = Arc::new(RaftPlacement::with_lease(
            opts.node_id,
            shard_map.clone(),
            Arc::clone(&lease),
        ));
        let (stop, _) = watch::channel(false);
        let routing = Routing::new(transport.clone());
        routing.watch_owners(shard_map.clone());
        let shared = Arc::new(Shared {
            id: opts.node_id,
            me: Node {
                peer_addr: opts.advertise_peer,
                client_addr: opts.advertise_client,
            },
            settings: opts.settings,
            raft,
            routing,
            transport,
            state,
            shard_map,
            lease,
            leader: LeaderLeases::default(),
            placement,
            engine: OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
            stop,
        });
        dispatcher.attach(&shared);
        tokio::spawn(leader::run(Arc::clone(&shared), shared.stop.subscribe()));
        tokio::spawn(local::renew(Arc::clone(&shared), shared.stop.subscribe()));
        tokio::spawn(local::serve_local(Arc::clone(&shared), shared.stop.subscribe()));
        tokio::spawn(local::track_peers(Arc::clone(&shared), shared.stop.subscribe()));
        tracing::info!(node = opts.node_id.0, addr = %shared.transport.local_addr(), "cluster node started");
        Ok(shared)
    }

    async fn init(self: &Arc<Self>) -> Result<(), ClusterError> {
        if self.raft.is_initialized().await.map_err(ClusterError::raft)? {
            return Err(ClusterError::AlreadyInitialized);
        }
        let voters = BTreeMap::from([(self.id.0, self.me.clone())]);
        self.raft.initialize(voters).await.map_err(ClusterError::raft)?;
        self.wait_for_leader().await?;
        let shard_count = self.settings.shard_count;
        self.propose_checked(ControlCommand::CreateShardMap { shard_count })
            .await?;
        self.propose_checked(ControlCommand::AddMember {
            id: self.id,
            node: self.me.clone(),
        })
        .await?;
        tracing::info!(node = self.id.0, shard_count, "initialized a new cluster");
        Ok(())
    }

    async fn join(self: &Arc<Self>, seed: &str) -> Result<(), ClusterError> {
        let request = control::JoinRequest {
            id: self.id,
            node: self.me.clone(),
        };
        let body = bytes::Bytes::from(postcard::to_allocvec(&request)?);
        let reply = self
            .transport
            .request_addr(seed, kind::JOIN, body)
            .await
            .map_err(|error| ClusterError::Transport(error.to_string()))?;
        let reply: control::JoinReply = postcard::from_bytes(&reply)?;
        tracing::info!(node = self.id.0, leader = reply.leader.0, "joined the cluster");
        Ok(())
    }

    fn status(&self) -> ClusterStatus {
        let (leader, term, voters) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let voters: BTreeSet<u64> = metrics.membership_config.membership().voter_ids().collect();
            (metrics.current_leader.map(NodeId), metrics.current_term, voters)
        };
        let state = Arc::clone(&self.state.borrow());
        let connected: BTreeSet<NodeId> = self.transport.connected_peers().into_iter().collect();
        let load = state.shards.load();
        let members = state
            .members
            .iter()
            .map(|(&id, member)| MemberInfo {
                id,
                peer_addr: member.node.peer_addr.clone(),
                client_addr: member.node.client_addr.clone(),
                status: member.status,
                shards: load.get(&id).copied().unwrap_or(0),
                shard_ids: state.shards.owned_by(id).into_iter().map(|shard| shard.0).collect(),
                voter: voters.contains(&id.0),
                reachable: id == self.id || connected.contains(&id),
            })
            .collect();
        let unassigned = state.shards.iter().filter(|(_, a)| a.owner.is_none()).count();
        ClusterStatus {
            node_id: self.id,
            leader,
            term,
            members,
            shard_count: state.shards.shard_count(),
            unassigned: u32::try_from(unassigned).unwrap_or(u32::MAX),
        }
    }

    async fn remove(self: &Arc<Self>, node: NodeId) -> Result<(), ClusterError> {
        let mut state = self.state.clone();
        if !state.borrow().members.contains_key(&node) {
            return Ok(());
        }
        control::leave(self, control::LeaveRequest { node }).await?;
        let gone = state.wait_for(|state| !state.members.contains_key(&node));
        let outcome = tokio::time::timeout(REMOVE_TIMEOUT, gone)
            .await
            .map(|seen| seen.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(ClusterError::Stopped),
            Err(_) => Err(ClusterError::Timeout(format!("node {} did not leave", node.0))),
        }
    }

    async fn shutdown(&self) {
        self.stop.send_replace(true);
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
        self.transport.shutdown().await;
        tracing::info!(node = self.id.0, "cluster node stopped");
    }

    /// The leader this node knows of, if any.
    pub(crate) fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader.map(NodeId)
    }

    /// The term this node leads, if it is the leader.
    pub(crate) fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.state == ServerState::Leader).then_some(metrics.current_term)
    }

    /// Waits (up to [`LEADER_WAIT`]) until some node is known to lead.
    pub(crate) async fn wait_for_leader(&self) -> Result<NodeId, ClusterError> {
        let mut metrics = self.raft.metrics();
        let known = metrics.wait_for(|metrics| metrics.current_leader.is_some());
        let outcome = tokio::time::timeout(LEADER_WAIT, known)
            .await
            .map(|seen| seen.map(|metrics| metrics.current_leader));
        match outcome {
            Ok(Ok(leader)) => leader.map(NodeId).ok_or(ClusterError::NoLeader),
            Ok(Err(_)) => Err(ClusterError::Stopped),
            Err(_) => Err(ClusterError::NoLeader),
        }
    }

    /// Raft's current membership (voters, learners, their addresses).
    pub(crate) fn membership(&self) -> Membership<RaftNodeId, Node> {
        self.raft.metrics().borrow().membership_config.membership().clone()
    }

    /// Proposes `command` (this node must lead) and returns what the state machine answered.
    pub(crate) async fn propose(&self, command: ControlCommand) -> Result<ControlResponse, ClusterError> {
        let written = self.raft.client_write(command).await.map_err(ClusterError::raft)?;
        Ok(written.data)
    }

    /// Like [`Shared::propose`], with a rejection turned into an error.
    pub(crate) async fn propose_checked(&self, command: ControlCommand) -> Result<ControlResponse, ClusterError> {
        match self.propose(command).await? {
            ControlResponse::Rejected { reason } => Err(ClusterError::Rejected(reason)),
            response => Ok(response),
        }
    }

    /// Stops the engine's actors of `shards` (after their in-flight appends). Without an engine
    /// there is nothing to stop.
    pub(crate) async fn drain(&self, shards: BTreeSet<ShardId>) {
        let Some(engine) = self.engine.get() else {
            return;
        };
        let Some(count) = NonZeroU32::new(self.shard_map.borrow().shard_count()) else {
            return;
        };
        engine
            .drain(move |conversation| shards.contains(&shard_of(conversation, count)))
            .await;
    }
}

fn raft_config(cluster_id: &str, settings: &ClusterConfig) -> Result<Arc<openraft::Config>, ClusterError> {
    let config = openraft::Config {
        cluster_name: cluster_id.to_owned(),
        heartbeat_interval: settings.heartbeat_ms,
        election_timeout_min: settings.election_min_ms,
        election_timeout_max: settings.election_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: LOG_KEPT_BEHIND_SNAPSHOT,
        ..openraft::Config::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|error| ClusterError::Config(error.to_string()))
}

/// The transport's one inbound handler: Raft and control kinds here, actor traffic to routing.
/// Holds the node weakly (the node holds the transport, which holds this handler).
#[derive(Default)]
struct Dispatcher {
    shared: OnceLock<Weak<Shared>>,
}

impl Dispatcher {
    fn attach(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(Arc::downgrade(shared));
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.get().and_then(Weak::upgrade)
    }
}

impl InboundHandler for Dispatcher {
    fn inbound(&self, inbound: Inbound) {
        let Some(shared) = self.shared() else {
            if let Inbound::Request { reply, .. } = inbound {
                reply.err("the node is starting".to_owned());
            }
            return;
        };
        let frame_kind = match &inbound {
            Inbound::Request { kind, .. } | Inbound::Message { kind, .. } => *kind,
        };
        if kind::ACTOR_TRAFFIC.contains(&frame_kind) {
            return ActorTraffic::inbound(&shared.routing, inbound);
        }
        match inbound {
            Inbound::Request {
                from,
                kind: kind @ (kind::RAFT_APPEND | kind::RAFT_VOTE | kind::RAFT_SNAPSHOT),
                body,
                reply,
            } => {
                let _guard = shared.runtime.enter();
                network::serve(shared.raft.clone(), kind, body, reply);
                let _ = from;
            }
            Inbound::Request {
                from,
                kind,
                body,
                reply,
            } => {
                let _guard = shared.runtime.enter();
                control::serve(shared, from, kind, body, reply);
            }
            Inbound::Message { from, kind, .. } => {
                tracing::debug!(peer = from.0, kind, "unexpected one-way control message; dropped");
            }
        }
    }

    fn peer_up(&self, node: NodeId) {
        if let Some(shared) = self.shared() {
            ActorTraffic::peer_up(&shared.routing, node);
        }
    }

    fn peer_down(&self, node: NodeId) {
        if let Some(shared) = self.shared() {
            ActorTraffic::peer_down(&shared.routing, node);
        }
    }
}
