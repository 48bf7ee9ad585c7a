//! A real openraft instance on the redb storage, alone (one voter, so it never dials anyone): it
//! commits control commands, publishes the map to `RaftPlacement`, snapshots, purges its log and
//! comes back from the snapshot plus the remaining log after a restart. No sockets; time bounds
//! are only timeouts, never assertions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::InstallSnapshotError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::Config;
use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;
use openraft::ServerState;
use roost_cluster::raft::command::ControlCommand;
use roost_cluster::raft::command::ControlResponse;
use roost_cluster::raft::command::FencedMove;
use roost_cluster::raft::log_store::LogStore;
use roost_cluster::raft::open_storage;
use roost_cluster::raft::state_machine::StateMachineStore;
use roost_cluster::raft::ControlRaft;
use roost_cluster::raft::Node;
use roost_cluster::raft::RaftNodeId;
use roost_cluster::raft::RaftStoreError;
use roost_cluster::raft::TypeConfig;
use roost_cluster::RaftPlacement;
use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use roost_engine::placement::Owner;
use roost_engine::placement::Placement;

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

/// A network with no peers: a single-voter cluster never sends an RPC.
struct NoPeers;

#[derive(Debug, thiserror::Error)]
#[error("this test cluster has no peers")]
struct NoPeersError;

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: RaftNodeId, _node: &Node) -> Self::Network {
        NoPeers
    }
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftNodeId>, RPCError<RaftNodeId, Node, RaftError<RaftNodeId>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeersError)))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, Node, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeersError)))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<RaftNodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, Node, RaftError<RaftNodeId>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeersError)))
    }
}

fn node(n: u64) -> Node {
    Node {
        peer_addr: format!("10.0.0.{n}:7070"),
        client_addr: format!("10.0.0.{n}:443"),
    }
}

/// Opens the storage, waiting for a previous instance to let go of it: `Raft::shutdown` joins
/// openraft's core task but not its state machine worker, which drops the storage (and so closes
/// the redb file) a moment later.
async fn open_when_released(path: &Path) -> (LogStore, StateMachineStore) {
    for _ in 0..1000 {
        match open_storage(path) {
            Err(RaftStoreError::Redb(redb::Error::DatabaseAlreadyOpen)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            opened => return opened.expect("open raft storage"),
        }
    }
    panic!("the previous instance never released {}", path.display());
}

async fn start(dir: &Path) -> (ControlRaft, RaftPlacement) {
    let (log, state_machine) = open_when_released(&dir.join("raft.redb")).await;
    let placement = RaftPlacement::new(NodeId(1), state_machine.subscribe());
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Purge everything a snapshot covers, so a restart has to use the snapshot.
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Config::default()
    };
    let config = Arc::new(config.validate().expect("valid raft config"));
    let raft = ControlRaft::new(1, config, NoPeers, log, state_machine)
        .await
        .expect("start raft");
    (raft, placement)
}

async fn write(raft: &ControlRaft, command: ControlCommand) -> ControlResponse {
    raft.client_write(command).await.expect("committed").data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_commits_publishes_snapshots_and_restarts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let conversations: Vec<ConversationId> = (1..=50).map(ConversationId).collect();

    tracing::info!("--- node 1 initializes a cluster of one and becomes leader");
    let (raft, placement) = start(dir.path()).await;
    assert!(conversations.iter().all(|&c| placement.owner(c) == Owner::Unassigned));
    raft.initialize(BTreeMap::from([(1, node(1))]))
        .await
        .expect("initialize");
    raft.wait(TIMEOUT)
        .state(ServerState::Leader, "node 1 leads")
        .await
        .expect("leader");

    tracing::info!("--- create the map, add itself, and give itself every shard");
    assert_eq!(
        write(&raft, ControlCommand::CreateShardMap { shard_count: 16 }).await,
        ControlResponse::Done
    );
    assert_eq!(
        write(
            &raft,
            ControlCommand::AddMember {
                id: NodeId(1),
                node: node(1)
            }
        )
        .await,
        ControlResponse::Done
    );
    let map = placement.shard_map();
    let members = [roost_cluster::MemberState::new(
        NodeId(1),
        roost_cluster::MemberStatus::Active,
    )];
    let moves = FencedMove::fence(&map, &roost_cluster::plan(&map, &members));
    let ControlResponse::MovesApplied { outcomes } = write(&raft, ControlCommand::ApplyMoves { moves }).await else {
        panic!("ApplyMoves answers MovesApplied");
    };
    assert_eq!(outcomes.len(), 16);
    assert!(outcomes.iter().all(|o| o.is_applied()));
    assert!(conversations.iter().all(|&c| placement.owner(c) == Owner::Local));

    tracing::info!("--- snapshot, purge, then one more command that only the log holds");
    raft.trigger().snapshot().await.expect("trigger snapshot");
    let metrics = raft
        .wait(TIMEOUT)
        .metrics(
            |m| m.snapshot.is_some() && m.purged == m.snapshot,
            "snapshot taken and log purged",
        )
        .await
        .expect("snapshot");
    let snapshot = metrics.snapshot;
    assert_eq!(
        write(
            &raft,
            ControlCommand::AddMember {
                id: NodeId(2),
                node: node(2)
            }
        )
        .await,
        ControlResponse::Done
    );
    raft.shutdown().await.expect("shutdown");
    drop(raft);

    tracing::info!("--- restart on the same storage: snapshot plus log replay restore everything");
    let (raft, placement) = start(dir.path()).await;
    assert!(
        conversations.iter().all(|&c| placement.owner(c) == Owner::Local),
        "restored from the snapshot"
    );
    raft.wait(TIMEOUT)
        .state(ServerState::Leader, "node 1 leads again")
        .await
        .expect("leader");
    assert_eq!(raft.metrics().borrow().snapshot, snapshot);
    // Node 2 is known again only if the entry after the snapshot was replayed from the log.
    assert_eq!(
        write(&raft, ControlCommand::MarkDead { id: NodeId(2) }).await,
        ControlResponse::Done
    );
    raft.shutdown().await.expect("shutdown");
}
