//! Scale out and in under load. One node serves every client; two nodes join (`roost serve
//! --join`) and take shards over by graceful handover while traffic runs; second devices of some
//! users connect to the new nodes; then one of them is removed with `roost cluster remove`, which
//! hands its shards back before it leaves. Nothing may be lost or duplicated, and clients may only
//! see what the protocol promises for planned changes: a close 1001 and a resync, never a timeout,
//! a dropped connection or a non-retryable error.

use crate::failover::PACE;
use crate::harness::Net;
use crate::harness::TestCluster;
use crate::traffic::Endpoint;
use crate::traffic::Workload;

#[actix_rt::test]
async fn one_node_grows_to_three_under_load_and_shrinks_to_two_losing_nothing() {
    let mut cluster = TestCluster::start(1, Net::Loopback).await;
    let groups: &[&[usize]] = &[&[0, 1, 2, 3, 4, 5], &[0, 2, 4]];
    let mut workload = Workload::setup(&mut cluster, 6, groups, &[(0, 1), (3, 5)]).await;
    // Peers move only when a node closes their connection (see below: anything else is unexpected).
    for user in 0..6 {
        let peer = workload.peer(&mut cluster, user, 0, 0).await;
        workload.run(peer.stay_through_retryable_errors(), user, PACE);
    }
    workload.wait_acks(30).await;

    tracing::info!("--- two nodes join under load");
    for _ in 0..2 {
        let id = cluster.add_node().await;
        let ws_url = cluster.nodes[&id].ws_url();
        workload.endpoints.borrow_mut().push(Endpoint { node: id, ws_url });
        workload.wait_acks(20).await;
    }
    let status = cluster.status().await.expect("status");
    println!("after scale-out: {}", status.raw);
    for user in 0..3 {
        let peer = workload.peer(&mut cluster, user, 1, 2 - user % 2).await;
        workload.run(peer.stay_through_retryable_errors(), user, PACE);
    }
    workload.wait_acks(40).await;

    tracing::info!("--- node 3 is removed");
    let out = cluster.remove(3).await;
    println!("roost cluster remove 3: {out}");
    let status = cluster
        .wait_status("node 3 gone, two active members, nothing unassigned", |s| {
            s.active().len() == 2 && s.unassigned() == 0 && s.members().iter().all(|m| m.id != 3 || m.shards == 0)
        })
        .await;
    println!("after remove: {}", status.raw);
    workload.wait_acks(40).await;
    let exited_by_itself = !cluster.is_running(3);
    println!("node 3 process exited by itself after removal: {exited_by_itself}");
    if !exited_by_itself {
        cluster.terminate(3).await;
    }
    workload.wait_acks(20).await;

    let mut peers = workload.stop().await;
    let report = workload.verify(&mut cluster, &mut peers).await;
    assert!(report.clean(), "{}\n{:#?}", report.summary(), report.problems);
    let mut unexpected = Vec::new();
    for peer in &peers {
        for (node, how) in &peer.log.connections {
            if !how.is_empty() && how != "closed 1001" {
                unexpected.push(format!("{} on node {node}: {how}", peer.log.name));
            }
        }
        for code in peer.log.errors.keys() {
            if !matches!(
                code.as_str(),
                "not_owner" | "unavailable" | "overloaded" | "closed 1001"
            ) {
                unexpected.push(format!("{}: {code}", peer.log.name));
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "clients saw more than reconnects: {unexpected:#?}"
    );
}
