//! A conversation owner cut off from its peers for 10 s while clients keep sending. Each node runs
//! in its own network namespace; the cut is blackhole routes between the isolated node and the
//! other two only, so the isolated node still has its clients and still reaches Cassandra: the
//! dangerous case, an owner that can still write but can no longer renew its lease. The majority
//! must declare it dead and take its shards; after healing it must rejoin. Then the same checks as
//! the failover test: nothing acknowledged lost, nothing duplicated or reordered, no silent gap.

use std::time::Duration;
use std::time::Instant;

use crate::checker::Fault;
use crate::failover::busy_workload;
use crate::failover::report_unavailability;
use crate::failover::SANITY_BOUND;
use crate::harness::Net;
use crate::harness::TestCluster;

const PARTITION: Duration = Duration::from_secs(10);

#[actix_rt::test]
async fn an_owner_cut_off_from_its_peers_for_ten_seconds_loses_and_duplicates_nothing() {
    let mut cluster = TestCluster::start(3, Net::Namespaces).await;
    let mut workload = busy_workload(&mut cluster).await;
    let all = workload.conversation_ids();
    workload.wait_acks(50).await;

    let status = cluster.status().await.expect("status");
    let leader = status.leader();
    let (victim, affected) = status.pick_owner(&all);
    println!("fault: node {victim} cut off from its peers for {PARTITION:?} (owns {affected:?}; leader {leader:?})");
    cluster.isolate(victim, true);
    let at = Instant::now();
    cluster
        .wait_status("the majority took the isolated node's shards", |s| {
            s.unassigned() == 0 && s.members().iter().all(|m| m.id != victim || m.shards == 0)
        })
        .await;
    println!("  shards taken over after {:?}", at.elapsed());
    while !workload.progress.all_acked_since(&affected, at) && at.elapsed() < SANITY_BOUND {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    println!("  every affected conversation acked again after {:?}", at.elapsed());
    // The fault lasts its full duration whatever happened meanwhile (not an assertion).
    actix_rt::time::sleep(PARTITION.saturating_sub(at.elapsed())).await;
    cluster.isolate(victim, false);
    println!("  healed after {:?}", at.elapsed());
    cluster.wait_formed(3).await;
    println!("  node {victim} active again after {:?}", at.elapsed());
    workload.wait_acks(50).await;

    let mut peers = workload.stop().await;
    let report = workload.verify(&mut cluster, &mut peers).await;
    let fault = Fault {
        label: format!("partition of node {victim}"),
        at,
        affected,
    };
    report_unavailability(&[fault], &workload.progress);
    assert!(report.clean(), "{}\n{:#?}", report.summary(), report.problems);
}
