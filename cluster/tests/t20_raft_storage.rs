//! The redb Raft storage passes openraft's storage suite, and what it stores survives a reopen.

use std::collections::BTreeMap;
use std::path::Path;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::storage::RaftStateMachine;
use openraft::testing::blank_ent;
use openraft::testing::log_id;
use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::Membership;
use openraft::RaftLogReader;
use openraft::RaftSnapshotBuilder;
use openraft::StorageError;
use openraft::Vote;
use roost_cluster::raft::command::ControlCommand;
use roost_cluster::raft::log_store::LogStore;
use roost_cluster::raft::open_storage;
use roost_cluster::raft::state_machine::StateMachineStore;
use roost_cluster::raft::ControlEntry;
use roost_cluster::raft::Node;
use roost_cluster::raft::RaftNodeId;
use roost_cluster::raft::TypeConfig;
use roost_cluster::ShardId;
use roost_engine::ids::NodeId;
use tempfile::TempDir;

/// Fresh stores in a fresh temporary directory; the directory lives as long as the stores.
struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<RaftNodeId>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (log, state_machine) = open_storage(&dir.path().join("raft.redb")).expect("open raft storage");
        Ok((dir, log, state_machine))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    if let Err(error) = Suite::test_all(RedbBuilder) {
        panic!("openraft storage suite: {error}");
    }
}

fn open(path: &Path) -> (LogStore, StateMachineStore) {
    open_storage(&path.join("raft.redb")).expect("open raft storage")
}

fn command(term: u64, index: u64, command: ControlCommand) -> ControlEntry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(command),
    }
}

fn node(n: u64) -> Node {
    Node {
        peer_addr: format!("10.0.0.{n}:7070"),
        client_addr: format!("10.0.0.{n}:443"),
    }
}

#[tokio::test]
async fn log_vote_and_committed_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let (mut log, _) = open(dir.path());
        let entries = (1..=10).map(|i| blank_ent::<TypeConfig>(1, 1, i));
        log.blocking_append(entries).await.expect("append");
        log.save_vote(&Vote::new(2, 1)).await.expect("save vote");
        log.save_committed(Some(log_id(1, 1, 8))).await.expect("save committed");
        log.purge(log_id(1, 1, 3)).await.expect("purge");
        log.truncate(log_id(1, 1, 9)).await.expect("truncate");
        // The committed id is written non-durably; a durable write after it carries it to disk.
        log.save_vote(&Vote::new(2, 1)).await.expect("save vote again");
    }

    let (mut log, _) = open(dir.path());
    assert_eq!(log.read_vote().await.expect("read vote"), Some(Vote::new(2, 1)));
    assert_eq!(
        log.read_committed().await.expect("read committed"),
        Some(log_id(1, 1, 8))
    );
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 8)));
    let indexes: Vec<u64> = log
        .try_get_log_entries(0..100)
        .await
        .expect("read log")
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(indexes, (4..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_fully_purged_log_reports_the_purge_point() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut log, _) = open(dir.path());
    log.blocking_append((1..=3).map(|i| blank_ent::<TypeConfig>(1, 1, i)))
        .await
        .expect("append");
    log.purge(log_id(1, 1, 3)).await.expect("purge");
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 3)));
}

#[tokio::test]
async fn the_state_machine_comes_back_from_its_snapshot() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let membership = Membership::new(vec![[1u64].into()], None);
    let entries = vec![
        Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Membership(membership.clone()),
        },
        command(1, 2, ControlCommand::CreateShardMap { shard_count: 8 }),
        command(
            1,
            3,
            ControlCommand::AddMember {
                id: NodeId(1),
                node: node(1),
            },
        ),
        command(
            1,
            4,
            ControlCommand::SetSetting {
                key: "motd".into(),
                value: "hello".into(),
            },
        ),
    ];
    let built = {
        let (_, mut sm) = open(dir.path());
        sm.apply(entries).await.expect("apply");
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build snapshot");
        // Applied after the snapshot: lost from the state machine on reopen (the log replays it).
        sm.apply([command(1, 5, ControlCommand::MarkDead { id: NodeId(1) })])
            .await
            .expect("apply");
        snapshot.meta
    };

    let (_, mut sm) = open(dir.path());
    let (last_applied, last_membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(last_applied, Some(log_id(1, 1, 4)));
    assert_eq!(last_membership.membership(), &membership);
    assert_eq!(sm.state().shards.shard_count(), 8);
    assert_eq!(
        sm.state().settings,
        BTreeMap::from([("motd".to_owned(), "hello".to_owned())])
    );
    assert_eq!(sm.state().member_states().len(), 1);
    assert!(sm.state().member_states()[0].is_active());
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read snapshot")
        .expect("a snapshot");
    assert_eq!(current.meta, built);
}

#[tokio::test]
async fn an_installed_snapshot_replaces_the_state_and_publishes_the_map() {
    let leader_dir = tempfile::tempdir().expect("temporary directory");
    let follower_dir = tempfile::tempdir().expect("temporary directory");
    let (_, mut leader) = open(leader_dir.path());
    let (_, mut follower) = open(follower_dir.path());
    let mut shard_map = follower.subscribe();

    leader
        .apply([
            command(1, 1, ControlCommand::CreateShardMap { shard_count: 4 }),
            command(
                1,
                2,
                ControlCommand::AddMember {
                    id: NodeId(2),
                    node: node(2),
                },
            ),
        ])
        .await
        .expect("apply");
    let moves = roost_cluster::plan(&leader.state().shards, &leader.state().member_states());
    let fenced = roost_cluster::raft::command::FencedMove::fence(&leader.state().shards, &moves);
    leader
        .apply([command(1, 3, ControlCommand::ApplyMoves { moves: fenced })])
        .await
        .expect("apply");
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");

    let mut receiving = follower.begin_receiving_snapshot().await.expect("begin receiving");
    *receiving = *snapshot.snapshot;
    follower
        .install_snapshot(&snapshot.meta, receiving)
        .await
        .expect("install");

    assert_eq!(follower.state(), leader.state());
    assert!(shard_map.has_changed().expect("sender alive"));
    let published = shard_map.borrow_and_update().clone();
    assert_eq!(published.get(ShardId(0)).and_then(|a| a.owner), Some(NodeId(2)));
    assert_eq!(
        follower.applied_state().await.expect("applied state").0,
        Some(log_id(1, 1, 3))
    );
}

#[tokio::test]
async fn a_stale_snapshot_never_replaces_a_newer_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (_, mut sm) = open(dir.path());
    sm.apply([command(1, 1, ControlCommand::CreateShardMap { shard_count: 4 })])
        .await
        .expect("apply");
    let mut old_builder = sm.get_snapshot_builder().await;
    sm.apply([command(
        1,
        2,
        ControlCommand::AddMember {
            id: NodeId(1),
            node: node(1),
        },
    )])
    .await
    .expect("apply");
    let newer = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build newer");
    // The older builder finishes last; it returns its snapshot but must not overwrite the newer one.
    let older = old_builder.build_snapshot().await.expect("build older");
    assert_eq!(older.meta.last_log_id, Some(log_id(1, 1, 1)));
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read snapshot")
        .expect("a snapshot");
    assert_eq!(current.meta, newer.meta);
}
