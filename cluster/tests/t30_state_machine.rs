//! The pure `apply`: every command on its own, then the leader's loop (plan, fence, apply) through
//! a join, a failure and a stale plan.

use roost_cluster::plan;
use roost_cluster::raft::command::ControlCommand;
use roost_cluster::raft::command::ControlResponse;
use roost_cluster::raft::command::FencedMove;
use roost_cluster::raft::command::MoveOutcome;
use roost_cluster::raft::command::Rejection;
use roost_cluster::raft::state_machine::apply;
use roost_cluster::raft::state_machine::ControlState;
use roost_cluster::raft::Node;
use roost_cluster::MemberStatus;
use roost_cluster::Move;
use roost_cluster::ShardId;
use roost_engine::ids::NodeId;

fn node(n: u64) -> Node {
    Node {
        peer_addr: format!("10.0.0.{n}:7070"),
        client_addr: format!("10.0.0.{n}:443"),
    }
}

fn add(id: u64) -> ControlCommand {
    ControlCommand::AddMember {
        id: NodeId(id),
        node: node(id),
    }
}

fn rejected(reason: Rejection) -> ControlResponse {
    ControlResponse::Rejected { reason }
}

/// A state with a map of `shards` shards and active members `ids`, not yet balanced.
fn state(shards: u32, ids: &[u64]) -> ControlState {
    let mut state = ControlState::default();
    assert_eq!(
        apply(&mut state, ControlCommand::CreateShardMap { shard_count: shards }),
        ControlResponse::Done
    );
    for &id in ids {
        assert_eq!(apply(&mut state, add(id)), ControlResponse::Done);
    }
    state
}

/// What the leader does: plan against the current state, fence with its epochs, propose.
fn rebalance(state: &mut ControlState) -> Vec<MoveOutcome> {
    let moves = plan(&state.shards, &state.member_states());
    let moves = FencedMove::fence(&state.shards, &moves);
    match apply(state, ControlCommand::ApplyMoves { moves }) {
        ControlResponse::MovesApplied { outcomes } => outcomes,
        other => panic!("unexpected response {other:?}"),
    }
}

#[test]
fn the_shard_map_is_created_once() {
    let mut state = ControlState::default();
    assert_eq!(
        apply(&mut state, ControlCommand::CreateShardMap { shard_count: 0 }),
        rejected(Rejection::InvalidShardCount { shard_count: 0 })
    );
    assert!(state.shards.is_empty());
    assert_eq!(
        apply(&mut state, ControlCommand::CreateShardMap { shard_count: 16 }),
        ControlResponse::Done
    );
    assert_eq!(
        apply(&mut state, ControlCommand::CreateShardMap { shard_count: 16 }),
        ControlResponse::Done
    );
    assert_eq!(
        apply(&mut state, ControlCommand::CreateShardMap { shard_count: 32 }),
        rejected(Rejection::ShardMapExists { shard_count: 16 })
    );
    assert_eq!(state.shards.shard_count(), 16);
}

#[test]
fn member_lifecycle() {
    let mut state = state(4, &[]);
    assert_eq!(apply(&mut state, add(0)), rejected(Rejection::ReservedNodeId));
    assert_eq!(
        apply(&mut state, ControlCommand::MarkLeaving { id: NodeId(1) }),
        rejected(Rejection::UnknownMember { id: NodeId(1) })
    );
    assert_eq!(
        apply(&mut state, ControlCommand::MarkDead { id: NodeId(1) }),
        rejected(Rejection::UnknownMember { id: NodeId(1) })
    );

    assert_eq!(apply(&mut state, add(1)), ControlResponse::Done);
    assert_eq!(
        apply(&mut state, ControlCommand::MarkLeaving { id: NodeId(1) }),
        ControlResponse::Done
    );
    assert_eq!(state.members[&NodeId(1)].status, MemberStatus::Leaving);
    assert_eq!(
        apply(&mut state, ControlCommand::MarkDead { id: NodeId(1) }),
        ControlResponse::Done
    );
    assert_eq!(
        apply(&mut state, ControlCommand::MarkLeaving { id: NodeId(1) }),
        rejected(Rejection::MemberIsDead { id: NodeId(1) })
    );

    // A dead node that restarts joins again, with new addresses.
    let moved = Node {
        peer_addr: "10.0.1.1:7070".into(),
        client_addr: "10.0.1.1:443".into(),
    };
    assert_eq!(
        apply(
            &mut state,
            ControlCommand::AddMember {
                id: NodeId(1),
                node: moved.clone()
            }
        ),
        ControlResponse::Done
    );
    assert_eq!(state.members[&NodeId(1)].status, MemberStatus::Active);
    assert_eq!(state.members[&NodeId(1)].node, moved);
}

#[test]
fn a_member_is_removed_only_without_shards() {
    let mut state = state(4, &[1, 2]);
    assert!(rebalance(&mut state).iter().all(MoveOutcome::is_applied));
    assert_eq!(
        apply(&mut state, ControlCommand::Remove { id: NodeId(2) }),
        rejected(Rejection::StillOwnsShards {
            id: NodeId(2),
            shards: 2
        })
    );
    apply(&mut state, ControlCommand::MarkLeaving { id: NodeId(2) });
    assert!(rebalance(&mut state).iter().all(MoveOutcome::is_applied));
    assert_eq!(
        apply(&mut state, ControlCommand::Remove { id: NodeId(2) }),
        ControlResponse::Done
    );
    assert!(!state.members.contains_key(&NodeId(2)));
    assert_eq!(
        apply(&mut state, ControlCommand::Remove { id: NodeId(2) }),
        ControlResponse::Done,
        "idempotent"
    );
}

#[test]
fn moves_are_fenced_by_epoch_owner_and_target() {
    let mut state = state(4, &[1, 2]);
    let to_1 = |shard| FencedMove {
        planned: Move {
            shard: ShardId(shard),
            from: None,
            to: NodeId(1),
        },
        expected_epoch: 0,
    };
    let outcomes = |state: &mut ControlState, moves| match apply(state, ControlCommand::ApplyMoves { moves }) {
        ControlResponse::MovesApplied { outcomes } => outcomes,
        other => panic!("unexpected response {other:?}"),
    };

    // Two moves of one shard in one batch: the first bumps the epoch, the second is then stale.
    let second = FencedMove {
        planned: Move {
            shard: ShardId(0),
            from: None,
            to: NodeId(2),
        },
        expected_epoch: 0,
    };
    assert_eq!(
        outcomes(&mut state, vec![to_1(0), second]),
        vec![
            MoveOutcome::Applied {
                shard: ShardId(0),
                epoch: 1
            },
            MoveOutcome::StaleEpoch {
                shard: ShardId(0),
                expected: 0,
                actual: 1
            },
        ]
    );
    assert_eq!(state.shards.get(ShardId(0)).and_then(|a| a.owner), Some(NodeId(1)));

    // Right epoch, wrong owner.
    let wrong_owner = FencedMove {
        planned: Move {
            shard: ShardId(0),
            from: Some(NodeId(2)),
            to: NodeId(2),
        },
        expected_epoch: 1,
    };
    assert_eq!(
        outcomes(&mut state, vec![wrong_owner]),
        vec![MoveOutcome::OwnerMismatch {
            shard: ShardId(0),
            expected: Some(NodeId(2)),
            actual: Some(NodeId(1))
        }]
    );

    // The target died between the plan and the commit.
    apply(&mut state, ControlCommand::MarkDead { id: NodeId(1) });
    assert_eq!(
        outcomes(&mut state, vec![to_1(1)]),
        vec![MoveOutcome::TargetNotActive {
            shard: ShardId(1),
            to: NodeId(1)
        }]
    );

    // No such shard.
    let outside = FencedMove {
        planned: Move {
            shard: ShardId(9),
            from: None,
            to: NodeId(2),
        },
        expected_epoch: 0,
    };
    assert_eq!(
        outcomes(&mut state, vec![outside]),
        vec![MoveOutcome::UnknownShard { shard: ShardId(9) }]
    );
    assert_eq!(
        state.shards.get(ShardId(1)).map(|a| (a.owner, a.epoch)),
        Some((None, 0)),
        "refused moves change nothing"
    );
}

#[test]
fn settings_are_bounded_and_report_the_previous_value() {
    let mut state = ControlState::default();
    let set = |key: &str, value: &str| ControlCommand::SetSetting {
        key: key.into(),
        value: value.into(),
    };
    assert_eq!(
        apply(&mut state, set("retention_days", "30")),
        ControlResponse::SettingSet { previous: None }
    );
    assert_eq!(
        apply(&mut state, set("retention_days", "90")),
        ControlResponse::SettingSet {
            previous: Some("30".into())
        }
    );
    assert_eq!(apply(&mut state, set("", "x")), rejected(Rejection::InvalidSetting));
    assert_eq!(
        apply(&mut state, set(&"k".repeat(129), "x")),
        rejected(Rejection::InvalidSetting)
    );
    assert_eq!(
        apply(&mut state, set("big", &"v".repeat(4097))),
        rejected(Rejection::InvalidSetting)
    );
    assert_eq!(state.settings.len(), 1);
}

#[test]
fn join_failure_and_a_stale_plan() {
    tracing::info!("--- three nodes split 12 shards");
    let mut state = state(12, &[1, 2, 3]);
    assert_eq!(rebalance(&mut state).len(), 12);
    assert!(state.shards.load().values().all(|&n| n == 4));

    tracing::info!("--- a plan is made for a fourth node, but node 2 dies before it commits");
    apply(&mut state, add(4));
    let stale_plan = FencedMove::fence(&state.shards, &plan(&state.shards, &state.member_states()));
    assert_eq!(stale_plan.len(), 3);
    apply(&mut state, ControlCommand::MarkDead { id: NodeId(2) });
    let after_failure = rebalance(&mut state);
    assert!(after_failure.iter().all(MoveOutcome::is_applied));
    assert!(state.shards.owned_by(NodeId(2)).is_empty());

    tracing::info!("--- the stale plan arrives: every move whose shard moved since is refused");
    let moved_since: Vec<bool> = stale_plan
        .iter()
        .map(|fenced| {
            state
                .shards
                .get(fenced.planned.shard)
                .is_some_and(|a| a.epoch != fenced.expected_epoch)
        })
        .collect();
    let outcomes = match apply(
        &mut state,
        ControlCommand::ApplyMoves {
            moves: stale_plan.clone(),
        },
    ) {
        ControlResponse::MovesApplied { outcomes } => outcomes,
        other => panic!("unexpected response {other:?}"),
    };
    for ((fenced, outcome), moved_since) in stale_plan.iter().zip(&outcomes).zip(moved_since) {
        assert_eq!(outcome.is_applied(), !moved_since, "{outcome:?}");
        if fenced.planned.from == Some(NodeId(2)) {
            assert!(matches!(outcome, MoveOutcome::StaleEpoch { .. }), "{outcome:?}");
        }
    }

    tracing::info!("--- whatever the stale plan did, the leader's next plan restores balance");
    rebalance(&mut state);
    let load = state.shards.load();
    assert_eq!(load.get(&NodeId(2)), None);
    assert_eq!(load.values().sum::<u32>(), 12);
    assert!(load.values().all(|&n| n == 4), "{load:?}");
}
