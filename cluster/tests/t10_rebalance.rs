//! The rebalancing planner: balanced, minimal, deterministic. Worked scenarios, then properties.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use proptest::prelude::*;
use roost_cluster::plan;
use roost_cluster::MemberState;
use roost_cluster::MemberStatus;
use roost_cluster::Move;
use roost_cluster::ShardId;
use roost_cluster::ShardMap;
use roost_engine::ids::NodeId;

fn active(ids: &[u64]) -> Vec<MemberState> {
    ids.iter()
        .map(|&id| MemberState::new(NodeId(id), MemberStatus::Active))
        .collect()
}

fn with_status(mut members: Vec<MemberState>, id: u64, status: MemberStatus) -> Vec<MemberState> {
    for member in &mut members {
        if member.id == NodeId(id) {
            member.status = status;
        }
    }
    members
}

fn applied(map: &ShardMap, moves: &[Move]) -> ShardMap {
    let mut map = map.clone();
    for m in moves {
        map.set_owner(m.shard, Some(m.to));
    }
    map
}

fn loads(map: &ShardMap, members: &[MemberState]) -> Vec<u32> {
    let load = map.load();
    members
        .iter()
        .filter(|m| m.is_active())
        .map(|m| load.get(&m.id).copied().unwrap_or(0))
        .collect()
}

/// Plans, checks the plan is complete (planning again moves nothing), and returns it with the
/// map after the moves.
fn plan_and_apply(map: &ShardMap, members: &[MemberState]) -> (Vec<Move>, ShardMap) {
    let moves = plan(map, members);
    let after = applied(map, &moves);
    assert_eq!(
        plan(&after, members),
        Vec::new(),
        "a balanced map needs no further move"
    );
    (moves, after)
}

#[test]
fn nothing_to_do_without_shards_or_active_members() {
    assert_eq!(plan(&ShardMap::default(), &active(&[1, 2])), Vec::new());
    let map = ShardMap::new(16).expect("valid count");
    assert_eq!(plan(&map, &[]), Vec::new());
    let dead = with_status(active(&[1]), 1, MemberStatus::Dead);
    assert_eq!(plan(&map, &dead), Vec::new());
}

#[test]
fn first_three_nodes_split_a_fresh_map() {
    let map = ShardMap::new(256).expect("valid count");
    let members = active(&[1, 2, 3]);
    let (moves, after) = plan_and_apply(&map, &members);
    assert_eq!(moves.len(), 256);
    assert!(moves.iter().all(|m| m.from.is_none()));
    // 256 = 86 + 85 + 85; on a tie the extra shard goes to the lowest id.
    assert_eq!(loads(&after, &members), vec![86, 85, 85]);
    assert!(after.iter().all(|(_, a)| a.epoch == 1));
}

#[test]
fn a_joining_node_takes_a_fair_share_from_the_others_only() {
    let members = active(&[1, 2, 3]);
    let (_, three) = plan_and_apply(&ShardMap::new(256).expect("valid count"), &members);
    let members = active(&[1, 2, 3, 4]);
    let (moves, four) = plan_and_apply(&three, &members);
    assert_eq!(moves.len(), 64, "256 / 4: exactly the new node's share moves");
    assert!(moves.iter().all(|m| m.to == NodeId(4) && m.from.is_some()));
    assert_eq!(loads(&four, &members), vec![64, 64, 64, 64]);
}

#[test]
fn a_dead_nodes_shards_and_only_those_move() {
    let members = active(&[1, 2, 3, 4]);
    let (_, before) = plan_and_apply(&ShardMap::new(256).expect("valid count"), &members);
    let members = with_status(members, 2, MemberStatus::Dead);
    let (moves, after) = plan_and_apply(&before, &members);
    assert_eq!(moves.len(), 64);
    assert!(moves.iter().all(|m| m.from == Some(NodeId(2))));
    assert_eq!(loads(&after, &members), vec![86, 85, 85]);
    assert!(after.owned_by(NodeId(2)).is_empty());
}

#[test]
fn a_leaving_node_is_emptied_like_a_dead_one() {
    let members = active(&[1, 2, 3]);
    let (_, before) = plan_and_apply(&ShardMap::new(10).expect("valid count"), &members);
    let members = with_status(members, 3, MemberStatus::Leaving);
    let (moves, after) = plan_and_apply(&before, &members);
    assert_eq!(moves.len(), 3);
    assert!(moves.iter().all(|m| m.from == Some(NodeId(3))));
    assert_eq!(loads(&after, &members), vec![5, 5]);
}

#[test]
fn shards_of_forgotten_nodes_are_orphans() {
    let mut map = ShardMap::new(4).expect("valid count");
    for shard in 0..4 {
        map.set_owner(ShardId(shard), Some(NodeId(9)));
    }
    let (moves, after) = plan_and_apply(&map, &active(&[1, 2]));
    assert_eq!(moves.len(), 4);
    assert_eq!(loads(&after, &active(&[1, 2])), vec![2, 2]);
}

#[test]
fn more_nodes_than_shards() {
    let members = active(&[1, 2, 3, 4, 5, 6]);
    let (moves, after) = plan_and_apply(&ShardMap::new(4).expect("valid count"), &members);
    assert_eq!(moves.len(), 4);
    assert_eq!(loads(&after, &members), vec![1, 1, 1, 1, 0, 0]);
}

#[test]
fn a_node_at_base_plus_one_keeps_its_shards_when_it_can() {
    // 7 shards over 3 nodes: targets 3, 2, 2. Node 1 holds 3, node 2 holds 3, node 3 holds 1:
    // one of the two nodes holding 3 must give one up (the higher id, on a tie), nothing else moves.
    let mut map = ShardMap::new(7).expect("valid count");
    for (shard, owner) in [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 3)] {
        map.set_owner(ShardId(shard), Some(NodeId(owner)));
    }
    let (moves, _) = plan_and_apply(&map, &active(&[1, 2, 3]));
    assert_eq!(
        moves,
        vec![Move {
            shard: ShardId(5),
            from: Some(NodeId(2)),
            to: NodeId(3)
        }]
    );
}

#[test]
fn the_order_of_members_does_not_matter() {
    let mut map = ShardMap::new(32).expect("valid count");
    for shard in 0..32 {
        map.set_owner(ShardId(shard), Some(NodeId(u64::from(shard % 3) + 1)));
    }
    let members = with_status(active(&[1, 2, 3, 4, 5]), 2, MemberStatus::Dead);
    let mut reversed = members.clone();
    reversed.reverse();
    assert_eq!(plan(&map, &members), plan(&map, &reversed));
}

/// Members 1..=10 with a random status (or absent), and a map whose shards are unowned or owned
/// by nodes 1..=12 (11 and 12 are never members: forgotten nodes).
fn scenario() -> impl Strategy<Value = (ShardMap, Vec<MemberState>)> {
    let statuses = prop::collection::vec(
        prop_oneof![
            4 => Just(Some(MemberStatus::Active)),
            1 => Just(Some(MemberStatus::Leaving)),
            1 => Just(Some(MemberStatus::Dead)),
            1 => Just(None),
        ],
        10,
    );
    let owners = (1u32..=300).prop_flat_map(|shards| {
        prop::collection::vec(
            prop_oneof![1 => Just(None), 6 => (1u64..=12).prop_map(Some)],
            shards as usize,
        )
    });
    (owners, statuses).prop_map(|(owners, statuses)| {
        let mut map = ShardMap::new(owners.len() as u32).expect("1..=300 shards");
        for (shard, owner) in owners.into_iter().enumerate() {
            map.set_owner(ShardId(shard as u32), owner.map(NodeId));
        }
        let members = statuses
            .into_iter()
            .enumerate()
            .filter_map(|(i, status)| status.map(|s| MemberState::new(NodeId(i as u64 + 1), s)))
            .collect();
        (map, members)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_balanced_minimal_and_deterministic((map, members) in scenario(), rotate in 0usize..10) {
        let moves = plan(&map, &members);
        let active: BTreeSet<NodeId> = members.iter().filter(|m| m.is_active()).map(|m| m.id).collect();

        // Determinism: the same input (in any member order) gives the same plan.
        let mut rotated = members.clone();
        rotated.rotate_left(rotate.min(members.len()));
        prop_assert_eq!(&plan(&map, &rotated), &moves);

        if active.is_empty() {
            prop_assert!(moves.is_empty());
            return Ok(());
        }

        let shards = map.shard_count() as usize;
        let (base, extra) = (shards / active.len(), shards % active.len());
        let before: BTreeMap<NodeId, usize> = active
            .iter()
            .map(|&id| (id, map.owned_by(id).len()))
            .collect();

        // Each move is well formed: a shard at most once, from its current owner, to an active member.
        let moved: BTreeSet<ShardId> = moves.iter().map(|m| m.shard).collect();
        prop_assert_eq!(moved.len(), moves.len());
        for m in &moves {
            prop_assert_eq!(map.get(m.shard).and_then(|a| a.owner), m.from);
            prop_assert!(active.contains(&m.to));
            prop_assert_ne!(m.from, Some(m.to));
        }

        // No move touches a shard of a healthy member that is not above the lowest target, and
        // no member gives up more than its excess over that target.
        let mut given: BTreeMap<NodeId, usize> = BTreeMap::new();
        for from in moves.iter().filter_map(|m| m.from).filter(|from| active.contains(from)) {
            *given.entry(from).or_insert(0) += 1;
        }
        for (node, count) in &given {
            prop_assert!(before[node] > base, "node {} at {} <= base {} gave shards", node, before[node], base);
            prop_assert!(before[node] - count >= base);
        }

        // Balance: afterwards every shard belongs to an active member, loads within one.
        let after = applied(&map, &moves);
        prop_assert!(after.iter().all(|(_, a)| a.owner.is_some_and(|o| active.contains(&o))));
        let loads: Vec<usize> = active.iter().map(|&id| after.owned_by(id).len()).collect();
        let (min, max) = (loads.iter().min().copied(), loads.iter().max().copied());
        prop_assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "loads {:?}", loads);

        // Minimality: orphans, plus the excess over `base` minus the extra slots that overloaded
        // members can keep.
        let orphans = map.iter().filter(|(_, a)| !a.owner.is_some_and(|o| active.contains(&o))).count();
        let excess: usize = before.values().map(|&c| c.saturating_sub(base)).sum();
        let above_base = before.values().filter(|&&c| c > base).count();
        prop_assert_eq!(moves.len(), orphans + excess - extra.min(above_base));

        // Complete: nothing left to do.
        prop_assert!(plan(&after, &members).is_empty());
    }
}
