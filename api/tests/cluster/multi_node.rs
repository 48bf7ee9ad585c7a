//! Users connected to different nodes of a three-node cluster chat 1:1 and in a group whose
//! members are spread over all three nodes. Conversations are owned by whichever node holds their
//! shard, so most sends are forwarded to another node and most events fanned out across nodes.
//! Every member gets every event exactly once, in order, on a single connection; the acks of a
//! conversation carry dense seqs; a member who leaves one node, misses messages and connects to
//! another resyncs exactly what it missed.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use futures_util::future::join_all;
use serde_json::Value;

use crate::common::open_direct;
use crate::common::Node;
use crate::common::WsClient;
use crate::harness::Net;
use crate::harness::TestCluster;
use crate::traffic::Peer;
use crate::traffic::Workload;

/// Every acked seq of a conversation, plus the seqs of events without a `client_msg_id`
/// (membership), must be exactly `1..=last`: no seq twice, none skipped.
fn assert_acks_dense(workload: &Workload, peers: &[Peer]) {
    for conversation in workload.conversation_ids() {
        let mut acked: Vec<u64> = peers
            .iter()
            .flat_map(|p| p.log.sends.iter())
            .filter(|s| s.conversation == conversation)
            .filter_map(|s| s.acks.first().map(|a| a.0))
            .collect();
        let messages = acked.len();
        let unique: BTreeSet<u64> = acked.drain(..).collect();
        assert_eq!(
            unique.len(),
            messages,
            "conversation {conversation}: two messages acked with one seq"
        );
        let last = *unique.last().expect("acks");
        let others = (1..=last).filter(|s| !unique.contains(s)).count();
        assert!(
            others <= 1,
            "conversation {conversation}: acked seqs {unique:?} are not dense after its first event"
        );
    }
}

#[actix_rt::test]
async fn users_on_three_nodes_chat_one_to_one_and_in_a_group_and_get_every_event_once_in_order() {
    let mut cluster = TestCluster::start(3, Net::Loopback).await;
    let everyone: &[usize] = &[0, 1, 2, 3, 4, 5];
    let workload = Workload::setup(&mut cluster, 6, &[everyone], &[(0, 1), (2, 4)]).await;
    let mut peers = Vec::new();
    for user in 0..6 {
        let peer = workload.peer(&mut cluster, user, 0, user % 3).await;
        assert_eq!(peer.node(), Some(user as u64 % 3 + 1), "user{user} is on its node");
        peers.push(peer);
    }

    tracing::info!("--- everyone sends 5 messages to each of their conversations, all at once");
    let sends = peers.iter_mut().enumerate().map(|(user, peer)| {
        let conversations = workload.conversations_of(user);
        async move {
            for round in 0..5 {
                for &c in &conversations {
                    assert!(peer.send_message(c).await, "{} round {round}: not acked", peer.log.name);
                }
            }
        }
    });
    join_all(sends).await;

    let report = workload.verify(&mut cluster, &mut peers).await;
    assert!(report.clean(), "{}\n{:#?}", report.summary(), report.problems);
    assert_eq!(report.acknowledged, report.sent);
    for peer in &peers {
        assert_eq!(
            peer.log.connections.len(),
            1,
            "{}: one connection, no reconnect hid anything",
            peer.log.name
        );
        assert!(
            peer.log.errors.is_empty(),
            "{}: errors {:?}",
            peer.log.name,
            peer.log.errors
        );
    }
    assert_acks_dense(&workload, &peers);
}

#[actix_rt::test]
async fn a_member_reconnecting_to_another_node_syncs_what_it_missed_without_a_gap() {
    let mut cluster = TestCluster::start(3, Net::Loopback).await;
    let workload = Workload::setup(&mut cluster, 3, &[&[0, 1, 2]], &[]).await;
    let group = workload.conversations[0].id;
    let mut peers = Vec::new();
    for user in 0..3 {
        peers.push(workload.peer(&mut cluster, user, 0, user).await);
    }
    for peer in &mut peers {
        assert!(peer.send_message(group).await);
    }

    tracing::info!("--- carol (node 3) disconnects; alice and bob send 10 more; carol connects to node 1");
    let cursor_before = {
        let carol = &mut peers[2];
        carol
            .catch_up(&BTreeMap::from([(group, 4)]), Duration::from_secs(10))
            .await;
        carol.disconnect(0);
        carol.cursor(group)
    };
    for _ in 0..5 {
        for peer in &mut peers[..2] {
            assert!(peer.send_message(group).await);
        }
    }
    let carol = &mut peers[2];
    carol.connect().await;
    assert_eq!(carol.node(), Some(1), "carol moved to node 1");
    assert_eq!(
        carol.cursor(group),
        cursor_before + 10,
        "the sync brought exactly the 10 missed messages"
    );

    tracing::info!("--- live traffic after the move arrives once, in order");
    for peer in &mut peers[..2] {
        assert!(peer.send_message(group).await);
    }
    let report = workload.verify(&mut cluster, &mut peers).await;
    assert!(report.clean(), "{}\n{:#?}", report.summary(), report.problems);
    assert_eq!(
        peers[2].log.connections.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![3, 1]
    );
    assert_acks_dense(&workload, &peers);
}

/// The next `presence` frame about `user` (frames about other users are skipped).
async fn presence_of(client: &mut WsClient, user: u64) -> Value {
    loop {
        let presence = client.next_of("presence").await;
        if presence["user"] == user {
            return presence;
        }
    }
}

/// Returns once node 2 routes to `alice` on node 1, with the connection that showed it.
///
/// Node 1 announces alice's connection to node 2 on its own (batched, a message on the peer link),
/// and advisory events are not re-read from the store, unlike timeline events: a presence change
/// on node 2 before the announcement arrived never reaches her. So a contact of hers (`probe`)
/// connects to node 2 until alice hears that it is online; node 2 can only have sent that once it
/// knew where alice is, and it keeps knowing while she stays connected.
async fn wait_routed(alice: &mut WsClient, node2: &Node, probe_token: &str, probe_id: u64) -> WsClient {
    let probe_online = |f: &Value| f["type"] == "presence" && f["user"] == probe_id && f["online"] == true;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = WsClient::connect(node2, probe_token).await;
        let wait = Instant::now() + Duration::from_secs(2);
        while let Some(left) = wait.checked_duration_since(Instant::now()) {
            match alice.poll_json(left).await {
                Some(Ok(frame)) if probe_online(&frame) => return probe,
                Some(Ok(_)) => {}
                Some(Err(closed)) => panic!("alice's connection closed: {closed:?}"),
                None => break,
            }
        }
        assert!(
            Instant::now() < deadline,
            "the presence of a contact connected to node 2 never reached alice on node 1"
        );
        // Gone before it connects again, so that its next connection is its first one again.
        drop(probe);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_rt::test]
async fn presence_and_typing_reach_a_member_connected_to_another_node() {
    let mut cluster = TestCluster::start(2, Net::Loopback).await;
    let names = ["presence_a", "presence_b", "presence_probe"].map(str::to_owned);
    let users = cluster.users(&names).await;
    let [(_, alice_token), (bob_id, bob_token), (probe_id, probe_token)] =
        [users[0].clone(), users[1].clone(), users[2].clone()];
    let (node1, node2) = (&cluster.nodes[&1].handle, &cluster.nodes[&2].handle);
    let direct = open_direct(node1, &alice_token, bob_id).await;
    open_direct(node1, &alice_token, probe_id).await;
    let mut alice = WsClient::connect(node1, &alice_token).await;
    let _probe = wait_routed(&mut alice, node2, &probe_token, probe_id).await;

    let mut bob = WsClient::connect(node2, &bob_token).await;
    let presence = presence_of(&mut alice, bob_id).await;
    assert_eq!(
        presence["online"].as_bool(),
        Some(true),
        "bob's presence on node 2 reaches alice on node 1: {presence}"
    );
    bob.send(serde_json::json!({"type": "typing", "conversation": direct}))
        .await;
    let typing = alice.next_of("typing").await;
    assert_eq!(
        typing["user"], bob_id,
        "typing crosses nodes through the conversation's owner"
    );
    drop(bob);
    let presence = presence_of(&mut alice, bob_id).await;
    assert_eq!(presence["online"].as_bool(), Some(false), "{presence}");
}
