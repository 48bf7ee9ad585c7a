//! Cluster nodes end to end, in one process over loopback mutual TLS (no engine attached): init,
//! joins, balance, status, graceful removal, failover of a killed follower and of a killed leader,
//! and, throughout, that no two nodes' placements ever answer `Local` for the same conversation.
//! Also the node lease on an injected clock, and the configuration's timing checks.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use roost_cluster::certs;
use roost_cluster::node::lease::LeaseClock;
use roost_cluster::node::lease::NodeLease;
use roost_cluster::node::lease::ReleasedShard;
use roost_cluster::node::ClusterNode;
use roost_cluster::node::ClusterOptions;
use roost_cluster::node::ClusterStatus;
use roost_cluster::shard_of;
use roost_cluster::transport::PeerTls;
use roost_cluster::ClusterConfig;
use roost_cluster::MemberStatus;
use roost_cluster::ShardId;
use roost_cluster::ShardMap;
use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use roost_engine::placement::Owner;
use roost_engine::placement::Placement;

const SHARDS: u32 = 24;
const PATIENCE: Duration = Duration::from_secs(30);

fn settings() -> ClusterConfig {
    ClusterConfig {
        shard_count: SHARDS,
        lease_ms: 600,
        renew_ms: 150,
        failure_timeout_ms: 800,
        heartbeat_ms: 50,
        election_min_ms: 250,
        election_max_ms: 500,
        rebalance_interval_ms: 100,
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

struct TestNode {
    id: NodeId,
    node: ClusterNode,
    placement: Arc<dyn Placement>,
    peer_addr: String,
    _dir: tempfile::TempDir,
}

async fn start_node(ca: &certs::CaBundle, id: u64) -> TestNode {
    start_node_in(ca, id, tempfile::tempdir().expect("data directory")).await
}

async fn start_node_in(ca: &certs::CaBundle, id: u64, dir: tempfile::TempDir) -> TestNode {
    let id = NodeId(id);
    let (cert, key) = certs::make_node_cert(ca, id, &[]).expect("node certificate");
    let tls = PeerTls::from_pem(&ca.cert_pem, &cert, &key).expect("tls");
    // A node shut down a moment ago may still hold its raft.redb (openraft's state machine task
    // drops it last): retry briefly. Each attempt picks a port anew: the free port is released
    // before the node binds it, and anything on the machine may take it in between.
    let mut attempts = 0;
    let (node, listen) = loop {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let opts = ClusterOptions {
            node_id: id,
            cluster_id: "t60".to_owned(),
            data_dir: dir.path().to_owned(),
            peer_listen: listen,
            advertise_peer: listen.to_string(),
            advertise_client: format!("127.0.0.1:{}", 9000 + id.0),
            tls: tls.clone(),
            settings: settings(),
        };
        match tokio::task::spawn_blocking(move || ClusterNode::start(opts))
            .await
            .expect("start task")
        {
            Ok(node) => break (node, listen),
            Err(_) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("start node {}: {error}", id.0),
        }
    };
    TestNode {
        id,
        placement: node.placement(),
        node,
        peer_addr: listen.to_string(),
        _dir: dir,
    }
}

/// One conversation per shard.
fn probes() -> Vec<ConversationId> {
    let count = NonZeroU32::new(SHARDS).expect("shards");
    let mut probes = vec![None; SHARDS as usize];
    let mut c = 0;
    while probes.iter().any(Option::is_none) {
        let ShardId(shard) = shard_of(ConversationId(c), count);
        probes[shard as usize].get_or_insert(ConversationId(c));
        c += 1;
    }
    probes.into_iter().flatten().collect()
}

/// Samples every node's placement until stopped; records any conversation two nodes call local.
struct Sampler {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
    samples: Arc<AtomicU64>,
    task: std::thread::JoinHandle<()>,
}

fn sample(placements: Vec<(NodeId, Arc<dyn Placement>)>) -> Sampler {
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let samples = Arc::new(AtomicU64::new(0));
    let (stop2, violations2, samples2) = (stop.clone(), violations.clone(), samples.clone());
    let task = std::thread::spawn(move || {
        let probes = probes();
        let local_on = |conversation: ConversationId, nodes: &[NodeId]| -> Vec<NodeId> {
            placements
                .iter()
                .filter(|(id, p)| nodes.contains(id) && p.owner(conversation) == Owner::Local)
                .map(|(id, _)| *id)
                .collect()
        };
        let everyone: Vec<NodeId> = placements.iter().map(|(id, _)| *id).collect();
        while !stop2.load(Ordering::Relaxed) {
            for &conversation in &probes {
                // The nodes are asked one after another: if this thread is descheduled between
                // two of them across a whole handover, the old and the new owner both answer
                // `Local` though never at once. So ask the ones that did again: a node local at
                // both looks was local all the time in between (a shard never comes back to the
                // epoch it left), and every first look precedes every second one, so two nodes
                // local at both looks were local at the same instant.
                let local = local_on(conversation, &everyone);
                if local.len() > 1 {
                    let still = local_on(conversation, &local);
                    if still.len() > 1 {
                        violations2
                            .lock()
                            .expect("violations")
                            .push(format!("{conversation:?} local on {still:?}"));
                    }
                }
            }
            samples2.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    Sampler {
        stop,
        violations,
        samples,
        task,
    }
}

impl Sampler {
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.join().expect("sampler thread");
        let violations = self.violations.lock().expect("violations");
        assert!(
            violations.is_empty(),
            "two owners at once: {:?}",
            &violations[..violations.len().min(10)]
        );
        self.samples.load(Ordering::Relaxed)
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F) -> ClusterStatus
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<ClusterStatus>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = check().await {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Active members hold every shard, evenly (within one), and the others none.
fn balanced(status: &ClusterStatus, active: &[u64]) -> bool {
    let loads: Vec<u32> = status
        .members
        .iter()
        .filter(|m| active.contains(&m.id.0))
        .map(|m| m.shards)
        .collect();
    let others: u32 = status
        .members
        .iter()
        .filter(|m| !active.contains(&m.id.0))
        .map(|m| m.shards)
        .sum();
    let (min, max) = (loads.iter().min(), loads.iter().max());
    status.unassigned == 0
        && others == 0
        && loads.len() == active.len()
        && loads.iter().sum::<u32>() == SHARDS
        && max.zip(min).is_some_and(|(max, min)| max - min <= 1)
}

/// Every probe is served by exactly one of `nodes` (leases granted everywhere).
fn all_served(nodes: &[&TestNode]) -> bool {
    probes()
        .into_iter()
        .all(|c| nodes.iter().filter(|n| n.placement.owner(c) == Owner::Local).count() == 1)
}

async fn wait_balanced(observer: &TestNode, active: &[u64], serving: &[&TestNode], what: &str) -> ClusterStatus {
    eventually(what, || async {
        let status = observer.node.status().await.ok()?;
        (balanced(&status, active) && all_served(serving)).then_some(status)
    })
    .await
}

/// The status of whichever of `nodes` leads by its own account, once `ready` holds for it. Any
/// status may name no leader, or a deposed one, for a moment: a loaded machine can starve the
/// heartbeats past the election timeout, and the followers then elect another leader.
async fn leader_status(nodes: &[&TestNode], what: &str, ready: impl Fn(&ClusterStatus) -> bool) -> ClusterStatus {
    let ready = &ready;
    eventually(what, move || async move {
        for node in nodes {
            if let Ok(status) = node.node.status().await {
                if status.leader == Some(node.id) && ready(&status) {
                    return Some(status);
                }
            }
        }
        None
    })
    .await
}

fn voters(status: &ClusterStatus) -> usize {
    status.members.iter().filter(|m| m.voter).count()
}

fn member(status: &ClusterStatus, id: u64) -> Option<&roost_cluster::node::MemberInfo> {
    status.members.iter().find(|m| m.id.0 == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_balance_leave_and_fail_over_without_two_owners() {
    let ca = certs::make_ca("t60").expect("ca");
    let mut nodes = Vec::new();
    for id in 1..=5 {
        nodes.push(start_node(&ca, id).await);
    }
    let sampler = sample(nodes.iter().map(|n| (n.id, n.placement.clone())).collect());
    let seed = nodes[0].peer_addr.clone();

    // Init node 1, join 2 and 3: three voters, shards in thirds.
    nodes[0].node.init().await.expect("init");
    nodes[1].node.join(&seed).await.expect("join 2");
    nodes[2].node.join(&seed).await.expect("join 3");
    nodes[2].node.join(&seed).await.expect("joining again is fine");
    let three = [&nodes[0], &nodes[1], &nodes[2]];
    let status = wait_balanced(&nodes[0], &[1, 2, 3], &three, "3 balanced").await;
    assert_eq!(status.members.len(), 3);
    assert!(status.term >= 1, "{status:?}");
    // The leader has a live connection to every member (it replicates to each); a follower
    // need not have one to another follower.
    leader_status(
        &three,
        "three voters, all active and reachable from the leader",
        |status| {
            voters(status) == 3
                && status
                    .members
                    .iter()
                    .all(|m| m.status == MemberStatus::Active && m.reachable)
        },
    )
    .await;

    // Nodes 4 and 5 join as learners; shards spread over five.
    nodes[3]
        .node
        .join(&nodes[1].peer_addr)
        .await
        .expect("join 4 via a follower or leader");
    nodes[4].node.join(&seed).await.expect("join 5");
    let all: Vec<&TestNode> = nodes.iter().collect();
    let status = wait_balanced(&nodes[0], &[1, 2, 3, 4, 5], &all, "5 balanced").await;
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 3, "{status:?}");

    // Remove node 3: its shards move (handover), it leaves, a learner takes its vote.
    nodes[0].node.remove(NodeId(3)).await.expect("remove 3");
    let serving = [&nodes[0], &nodes[1], &nodes[3], &nodes[4]];
    let status = wait_balanced(&nodes[0], &[1, 2, 4, 5], &serving, "3 removed").await;
    assert!(member(&status, 3).is_none());
    let status = leader_status(&serving, "three voters again and a leader", |status| {
        voters(status) == 3
    })
    .await;
    assert!(!member(&status, 3).is_some_and(|m| m.voter));

    // Kill a follower that votes: after the failure timeout it is dead and its shards move.
    let leader = status.node_id.0;
    let victim = status
        .members
        .iter()
        .find(|m| m.voter && m.id.0 != leader)
        .expect("a voting follower")
        .id
        .0;
    let victim_node = nodes.iter().find(|n| n.id.0 == victim).expect("victim");
    victim_node.node.shutdown().await;
    let active: Vec<u64> = [1, 2, 4, 5].into_iter().filter(|&id| id != victim).collect();
    let observer = nodes.iter().find(|n| n.id.0 == leader).expect("leader node");
    let serving: Vec<&TestNode> = nodes.iter().filter(|n| active.contains(&n.id.0)).collect();
    let status = wait_balanced(observer, &active, &serving, "the killed follower's shards moved").await;
    assert_eq!(member(&status, victim).map(|m| m.status), Some(MemberStatus::Dead));

    // Kill the leader: the others elect a new one, which fails the old one over too. Which node
    // leads is asked again (an election may have moved the leadership since it was observed
    // above); either way the term must grow past the one it leads in now.
    let status = leader_status(&serving, "a leader after the follower's failover", |_| true).await;
    let (leader, before) = (status.node_id.0, status.term);
    let observer = nodes.iter().find(|n| n.id.0 == leader).expect("leader node");
    observer.node.shutdown().await;
    let active: Vec<u64> = active.into_iter().filter(|&id| id != leader).collect();
    let new_observer = nodes.iter().find(|n| n.id.0 == active[0]).expect("survivor");
    let serving: Vec<&TestNode> = nodes.iter().filter(|n| active.contains(&n.id.0)).collect();
    let status = wait_balanced(new_observer, &active, &serving, "the old leader's shards moved").await;
    assert!(status.term > before, "a new term: {status:?}");
    assert!(status.leader.is_some_and(|l| l.0 != leader));
    assert_eq!(member(&status, leader).map(|m| m.status), Some(MemberStatus::Dead));

    let samples = sampler.finish();
    assert!(samples > 100, "the sampler ran ({samples} rounds)");
    for node in &nodes {
        node.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_comes_back_by_itself() {
    let ca = certs::make_ca("t60").expect("ca");
    let first = start_node(&ca, 1).await;
    first.node.init().await.expect("init");
    wait_balanced(&first, &[1], &[&first], "one node owns everything").await;
    assert!(matches!(
        first.node.init().await,
        Err(roost_cluster::node::ClusterError::AlreadyInitialized)
    ));
    first.node.shutdown().await;
    let TestNode { node, _dir: dir, .. } = first;
    drop(node);

    let again = start_node_in(&ca, 1, dir).await;
    wait_balanced(&again, &[1], &[&again], "the restarted node serves again").await;
    eventually("the restarted node leads", || async {
        let status = again.node.status().await.ok()?;
        (status.leader == Some(NodeId(1))).then_some(status)
    })
    .await;
    again.node.shutdown().await;
}

/// Three nodes (init 1, join 2 and 3), balanced, with three voters; answers the status.
async fn three_balanced(ca: &certs::CaBundle) -> (Vec<TestNode>, ClusterStatus) {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(ca, id).await);
    }
    let seed = nodes[0].peer_addr.clone();
    nodes[0].node.init().await.expect("init");
    nodes[1].node.join(&seed).await.expect("join 2");
    nodes[2].node.join(&seed).await.expect("join 3");
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_balanced(&nodes[0], &[1, 2, 3], &all, "3 balanced").await;
    let status = leader_status(&all, "three voters and a leader", |status| voters(status) == 3).await;
    (nodes, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_its_shards_over_and_a_new_leader_finishes() {
    let ca = certs::make_ca("t60").expect("ca");
    let (nodes, status) = three_balanced(&ca).await;
    let sampler = sample(nodes.iter().map(|n| (n.id, n.placement.clone())).collect());
    let leader = status.leader.expect("leader").0;
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    let via = nodes.iter().find(|n| n.id.0 == rest[0]).expect("a follower");

    // Removed through a follower, which forwards the request to the leader: the leader itself.
    tokio::time::timeout(PATIENCE, via.node.remove(NodeId(leader)))
        .await
        .unwrap_or_else(|_| panic!("remove({leader}) did not finish within {PATIENCE:?}"))
        .expect("remove the leader");
    let serving: Vec<&TestNode> = nodes.iter().filter(|n| rest.contains(&n.id.0)).collect();
    let status = wait_balanced(via, &rest, &serving, "the old leader's shards moved to the others").await;
    assert!(member(&status, leader).is_none(), "{status:?}");
    let status = eventually("a new leader among the two, which alone vote", || async {
        let status = via.node.status().await.ok()?;
        let voters: Vec<u64> = status.members.iter().filter(|m| m.voter).map(|m| m.id.0).collect();
        (status.leader.is_some_and(|l| rest.contains(&l.0)) && voters == rest).then_some(status)
    })
    .await;
    assert!(status.term > 0 && status.members.len() == 2, "{status:?}");
    let old = nodes.iter().find(|n| n.id.0 == leader).expect("old leader");
    assert!(
        probes().into_iter().all(|c| old.placement.owner(c) != Owner::Local),
        "the removed node serves nothing"
    );

    let samples = sampler.finish();
    assert!(samples > 10, "the sampler ran ({samples} rounds)");
    for node in &nodes {
        node.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_declared_dead_rejoins_by_itself_when_it_comes_back() {
    let ca = certs::make_ca("t60").expect("ca");
    let (mut nodes, status) = three_balanced(&ca).await;
    let before = sample(nodes.iter().map(|n| (n.id, n.placement.clone())).collect());
    let leader = status.leader.expect("leader").0;
    let victim = [1, 2, 3].into_iter().find(|&id| id != leader).expect("a follower");
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != victim).collect();

    // The follower crashes: declared dead, its shards move to the two others.
    let index = nodes.iter().position(|n| n.id.0 == victim).expect("victim");
    let crashed = nodes.remove(index);
    crashed.node.shutdown().await;
    let observer = nodes.iter().find(|n| n.id.0 == leader).expect("leader node");
    let serving: Vec<&TestNode> = nodes.iter().collect();
    eventually("the crashed member is dead and its shards moved", || async {
        let status = observer.node.status().await.ok()?;
        let dead = member(&status, victim).is_some_and(|m| m.status == MemberStatus::Dead);
        (dead && balanced(&status, &survivors) && all_served(&serving)).then_some(status)
    })
    .await;

    // It comes back on the same data directory, with no join call: it learns it was declared
    // dead, joins again by itself, and is given shards anew.
    let TestNode { node, _dir: dir, .. } = crashed;
    drop(node);
    let again = start_node_in(&ca, victim, dir).await;
    let after = sample(
        nodes
            .iter()
            .chain([&again])
            .map(|n| (n.id, n.placement.clone()))
            .collect(),
    );
    let all: Vec<&TestNode> = nodes.iter().chain([&again]).collect();
    let status = wait_balanced(observer, &[1, 2, 3], &all, "the returning member serves again").await;
    assert_eq!(
        member(&status, victim).map(|m| m.status),
        Some(MemberStatus::Active),
        "{status:?}"
    );

    let samples = before.finish() + after.finish();
    assert!(samples > 10, "the samplers ran ({samples} rounds)");
    for node in &all {
        node.node.shutdown().await;
    }
}

/// A clock the test moves by hand.
#[derive(Default)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn set(&self, millis: u64) {
        self.0.store(millis, Ordering::SeqCst);
    }
}

impl LeaseClock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

#[test]
fn a_lease_covers_its_pairs_until_send_time_plus_duration() {
    let clock = Arc::new(ManualClock::default());
    let lease = NodeLease::new(clock.clone(), Duration::from_millis(600));
    let (s0, s1) = (ShardId(0), ShardId(1));
    assert!(!lease.covers(s0, 1), "no lease before the first renewal");

    clock.set(1_000);
    lease.renewed(Duration::from_millis(900), &[(s0, 1), (s1, 4)]);
    assert!(lease.covers(s0, 1) && lease.covers(s1, 4));
    assert!(!lease.covers(s0, 2), "another epoch is not covered");
    clock.set(1_499);
    assert!(lease.covers(s0, 1), "valid until send time + 600 ms");
    clock.set(1_500);
    assert!(
        !lease.covers(s0, 1),
        "expired at send time + 600 ms, not receive time + 600 ms"
    );

    lease.renewed(Duration::from_millis(1_400), &[(s0, 1)]);
    assert!(
        lease.covers(s0, 1) && !lease.covers(s1, 4),
        "a new grant replaces the covered set"
    );
    lease.renewed(Duration::from_millis(1_200), &[(s0, 1), (s1, 4)]);
    assert!(!lease.covers(s1, 4), "an older grant arriving late is ignored");
    clock.set(2_000);
    assert!(!lease.covers(s0, 1));
    assert!(
        !lease.may_confirm(s0, 1),
        "an expired lease confirms nothing, not even appends in flight"
    );
}

#[test]
fn a_released_shard_is_not_covered_and_is_reported_until_the_map_moves_on() {
    let clock = Arc::new(ManualClock::default());
    let lease = NodeLease::new(clock.clone(), Duration::from_millis(600));
    let s0 = ShardId(0);
    lease.renewed(Duration::ZERO, &[(s0, 1)]);
    lease.begin_release(&[(s0, 1)]);
    assert!(!lease.covers(s0, 1), "stops being local as soon as the release starts");
    assert_eq!(
        lease.released(),
        vec![ReleasedShard {
            shard: s0,
            epoch: 1,
            drained: false
        }]
    );
    assert!(
        lease.may_confirm(s0, 1),
        "appends in flight are still confirmed while the release drains"
    );
    lease.renewed(Duration::from_millis(100), &[(s0, 1)]);
    assert!(!lease.covers(s0, 1), "a grant cannot bring back a released pair");
    lease.finish_release(&[(s0, 1)]);
    assert!(lease.released()[0].drained);
    assert!(!lease.may_confirm(s0, 1), "drained: nothing left to confirm");

    let mut map = ShardMap::new(2).expect("map");
    map.set_owner(s0, Some(NodeId(1)));
    lease.forget_settled(&map);
    assert_eq!(lease.released().len(), 1, "the map is still at epoch 1");
    map.set_owner(s0, Some(NodeId(2)));
    lease.forget_settled(&map);
    assert!(lease.released().is_empty(), "epoch 2: the release is settled");
}

#[test]
fn timing_settings_must_keep_the_failover_safe() {
    assert!(ClusterConfig::default().problems().is_empty());
    assert!(settings().problems().is_empty());
    let short = ClusterConfig {
        failure_timeout_ms: 650,
        ..settings()
    };
    assert!(
        short.problems().iter().any(|p| p.contains("failure_timeout_ms")),
        "{:?}",
        short.problems()
    );
    let slow_renewal = ClusterConfig {
        renew_ms: 300,
        ..settings()
    };
    assert!(slow_renewal.problems().iter().any(|p| p.contains("renew_ms")));
}

#[test]
fn reclaim_bumps_the_epoch_keeps_the_owner_and_fences_the_abandoned_move() {
    use roost_cluster::raft::command::ControlCommand;
    use roost_cluster::raft::command::ControlResponse;
    use roost_cluster::raft::command::FencedMove;
    use roost_cluster::raft::command::MoveOutcome;
    use roost_cluster::raft::state_machine::apply;
    use roost_cluster::raft::state_machine::ControlState;
    use roost_cluster::raft::Node;
    use roost_cluster::Move;

    let mut state = ControlState::default();
    apply(&mut state, ControlCommand::CreateShardMap { shard_count: 4 });
    for id in [1, 2] {
        let node = Node::default();
        apply(&mut state, ControlCommand::AddMember { id: NodeId(id), node });
    }
    let s0 = ShardId(0);
    state.shards.set_owner(s0, Some(NodeId(1)));
    let abandoned = FencedMove::fence(
        &state.shards,
        &[Move {
            shard: s0,
            from: Some(NodeId(1)),
            to: NodeId(2),
        }],
    );
    let reclaimed = apply(
        &mut state,
        ControlCommand::Reclaim {
            shard: s0,
            expected_epoch: 1,
        },
    );
    assert_eq!(
        reclaimed,
        ControlResponse::MovesApplied {
            outcomes: vec![MoveOutcome::Applied { shard: s0, epoch: 2 }]
        }
    );
    assert_eq!(
        state.shards.get(s0).map(|a| (a.owner, a.epoch)),
        Some((Some(NodeId(1)), 2))
    );
    let late = apply(&mut state, ControlCommand::ApplyMoves { moves: abandoned });
    assert!(matches!(
        late,
        ControlResponse::MovesApplied { ref outcomes } if matches!(outcomes[..], [MoveOutcome::StaleEpoch { .. }])
    ));
    let stale = apply(
        &mut state,
        ControlCommand::Reclaim {
            shard: s0,
            expected_epoch: 1,
        },
    );
    assert!(matches!(
        stale,
        ControlResponse::MovesApplied { ref outcomes } if matches!(outcomes[..], [MoveOutcome::StaleEpoch { .. }])
    ));
}
