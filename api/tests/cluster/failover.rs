//! Failover under load. Nine users spread over three nodes send continuously to three groups and
//! five direct conversations, one message at a time each, retrying with the same `client_msg_id`
//! after errors, timeouts and lost connections and moving to another node when theirs closes.
//! First the owner of the busiest group is killed with SIGKILL, then (after it is back) the Raft
//! leader; each time the survivors must declare it dead and take its shards, and the killed node
//! is restarted and rejoins. Then the checker compares every conversation's history with every
//! client's log: nothing acknowledged lost, nothing duplicated, nothing reordered, no silent gap.
//! Reported: the unavailability per failover, from the kill to the first ack on each affected
//! conversation (p50/p99/max; only a sanity bound of 30 s is asserted).

use std::time::Duration;
use std::time::Instant;

use crate::checker::percentiles;
use crate::checker::unavailability;
use crate::checker::Fault;
use crate::harness::Net;
use crate::harness::TestCluster;
use crate::traffic::Progress;
use crate::traffic::Workload;

/// Pause between one peer's messages (about 50 sends/s over nine peers, on two busy cores).
pub const PACE: Duration = Duration::from_millis(100);
/// No conversation may stay unavailable longer than this after a fault.
pub const SANITY_BOUND: Duration = Duration::from_secs(30);

/// The cast of the fault tests: 9 users (user `i` first connects to node `i % 3`), 3 groups with
/// members on every node, 5 direct conversations across nodes.
pub async fn busy_workload(cluster: &mut TestCluster) -> Workload {
    let groups: &[&[usize]] = &[&[0, 1, 2, 3, 4, 5], &[0, 2, 4, 6, 8], &[1, 3, 5, 7]];
    let directs = [(0, 1), (2, 5), (3, 7), (4, 8), (6, 8)];
    let mut workload = Workload::setup(cluster, 9, groups, &directs).await;
    for user in 0..9 {
        let peer = workload.peer(cluster, user, 0, user % 3).await;
        workload.run(peer, user, PACE);
    }
    workload
}

/// Prints each fault's unavailability and the pooled p50/p99/max; asserts the sanity bound.
pub fn report_unavailability(faults: &[Fault], progress: &Progress) {
    let acks = progress.ack_times.borrow();
    let mut all = Vec::new();
    for fault in faults {
        let per_conversation = unavailability(fault, &acks);
        let samples: Vec<Duration> = per_conversation.iter().filter_map(|(_, d)| *d).collect();
        let (p50, p99, max) = percentiles(&samples);
        println!(
            "unavailability after {} ({} conversations): p50 {p50:?}, p99 {p99:?}, max {max:?}; {per_conversation:?}",
            fault.label,
            fault.affected.len()
        );
        for (conversation, took) in per_conversation {
            let took = took.unwrap_or_else(|| panic!("{}: conversation {conversation} never acked again", fault.label));
            assert!(
                took < SANITY_BOUND,
                "{}: conversation {conversation} unavailable {took:?}",
                fault.label
            );
        }
        all.extend(samples);
    }
    let (p50, p99, max) = percentiles(&all);
    println!(
        "unavailability over {} failovers ({} samples): p50 {p50:?}, p99 {p99:?}, max {max:?}",
        faults.len(),
        all.len()
    );
}

/// SIGKILL `victim`; wait until the others hold all its shards and every affected conversation
/// acknowledged a message again; restart it and wait for three active members.
async fn kill_and_recover(
    cluster: &mut TestCluster,
    workload: &Workload,
    victim: u64,
    label: String,
    affected: Vec<u64>,
) -> Fault {
    println!("fault: {label} (affects conversations {affected:?})");
    cluster.kill9(victim);
    let at = Instant::now();
    let status = cluster
        .wait_status("the killed node's shards taken over", |s| {
            s.unassigned() == 0 && s.members().iter().all(|m| m.id != victim || m.shards == 0)
        })
        .await;
    println!("  shards taken over after {:?}: {}", at.elapsed(), status.raw);
    let deadline = at + SANITY_BOUND;
    while !workload.progress.all_acked_since(&affected, at) && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    println!("  every affected conversation acked again after {:?}", at.elapsed());
    cluster.restart(victim).await;
    cluster.wait_formed(3).await;
    println!("  node {victim} back, cluster formed again after {:?}", at.elapsed());
    Fault { label, at, affected }
}

#[actix_rt::test]
async fn killing_a_conversation_owner_then_the_leader_under_load_loses_and_duplicates_nothing() {
    let mut cluster = TestCluster::start(3, Net::Loopback).await;
    let mut workload = busy_workload(&mut cluster).await;
    let all = workload.conversation_ids();
    workload.wait_acks(50).await;

    let status = cluster.status().await.expect("status");
    let (owner, owned) = status.pick_owner(&all);
    let mut faults = vec![
        kill_and_recover(
            &mut cluster,
            &workload,
            owner,
            format!("kill -9 owner node {owner}"),
            owned,
        )
        .await,
    ];
    workload.wait_acks(50).await;

    let status = cluster.status().await.expect("status");
    let leader = status.leader().expect("a leader");
    // Every conversation depends on the leader for lease renewals, so all count as affected.
    faults.push(
        kill_and_recover(
            &mut cluster,
            &workload,
            leader,
            format!("kill -9 leader node {leader}"),
            all.clone(),
        )
        .await,
    );
    workload.wait_acks(50).await;

    let mut peers = workload.stop().await;
    let report = workload.verify(&mut cluster, &mut peers).await;
    report_unavailability(&faults, &workload.progress);
    println!(
        "{} sends, 3 nodes, {} failovers: {}",
        report.sent,
        faults.len(),
        report.summary()
    );
    assert!(report.clean(), "{}\n{:#?}", report.summary(), report.problems);
}
