//! Two users chat 1:1 and in a group; a third member is offline, reconnects, and receives every
//! missed message exactly once, in order.

use serde_json::json;
use serde_json::Value;

use crate::common::*;

struct Cast {
    node: Node,
    alice: String,
    bob: String,
    carol: String,
    ids: [u64; 3],
}

async fn cast() -> Cast {
    let mut node = Node::new("");
    node.add_user_offline("root", true);
    node.start().await;
    let root = login(&node, "root").await;
    let ids = [
        create_user(&node, &root, "alice").await,
        create_user(&node, &root, "bob").await,
        create_user(&node, &root, "carol").await,
    ];
    let (alice, bob, carol) = (
        login(&node, "alice").await,
        login(&node, "bob").await,
        login(&node, "carol").await,
    );
    Cast {
        node,
        alice,
        bob,
        carol,
        ids,
    }
}

#[actix_rt::test]
async fn direct_and_group_chat_with_an_offline_member_catching_up() {
    let c = cast().await;
    let [alice_id, bob_id, carol_id] = c.ids;
    let mut alice = WsClient::connect(&c.node, &c.alice).await;
    let mut bob = WsClient::connect(&c.node, &c.bob).await;

    tracing::info!("--- 1:1: alice opens a direct conversation with bob and they talk");
    let direct_id = open_direct(&c.node, &c.alice, bob_id).await;
    let seq = alice.send_message(direct_id, "d1", "hi bob").await;
    let event = bob.next_of("event").await;
    // The conversation's first event announces its members; the message follows.
    let event = if event["kind"] == "members_added" {
        bob.next_of("event").await
    } else {
        event
    };
    assert_eq!(
        (event["conversation"].as_u64(), event["seq"].as_u64()),
        (Some(direct_id), Some(seq))
    );
    assert_eq!(event["body"]["text"], "hi bob");
    assert_eq!(event["sender"], alice_id);
    let reply = bob.send_message(direct_id, "d2", "hello alice").await;
    assert_eq!(reply, seq + 1);

    tracing::info!("--- group: alice creates a group with bob and (offline) carol");
    let body = json!({"name": "launch", "members": [bob_id, carol_id]});
    let (status, group) = http(&c.node, "POST", "/v1/conversations/groups", Some(&c.alice), Some(body)).await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["id"].as_u64().unwrap();
    let mut sent = vec![1]; // seq 1: the group's announcement
    for i in 0..15 {
        let (who, ws) = if i % 2 == 0 { ("a", &mut alice) } else { ("b", &mut bob) };
        sent.push(
            ws.send_message(group_id, &format!("g-{who}-{i}"), &format!("message {i}"))
                .await,
        );
    }
    assert_eq!(sent, (1..=16).collect::<Vec<_>>(), "seqs are dense in send order");

    tracing::info!("--- carol connects later and syncs from nothing: every event once, in order");
    let mut carol_ws = WsClient::connect_unsynced(&c.node, &c.carol).await;
    carol_ws
        .send(json!({"type": "sync", "ref": "s1", "conversations": {}}))
        .await;
    let mut frames: Vec<Value> = Vec::new();
    let synced = loop {
        let frame = carol_ws.next_json().await.expect("open");
        if frame["type"] == "synced" {
            break frame;
        }
        frames.push(frame);
    };
    assert_eq!(seqs_of(&frames, group_id), (1..=16).collect::<Vec<_>>());
    let entry = synced["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["conversation"] == group_id)
        .unwrap()
        .clone();
    assert_eq!(
        (
            entry["last_seq"].as_u64(),
            entry["synced_to"].as_u64(),
            entry["limited"].as_bool()
        ),
        (Some(16), Some(16), Some(false))
    );

    tracing::info!("--- live traffic after the sync arrives once, in order");
    alice.send_message(group_id, "after-sync", "welcome carol").await;
    let live = carol_ws.next_of("event").await;
    assert_eq!(live["seq"], 17);

    tracing::info!("--- carol disconnects, misses three messages, reconnects with her cursor");
    drop(carol_ws);
    for i in 0..3 {
        bob.send_message(group_id, &format!("missed-{i}"), "you missed this")
            .await;
    }
    let mut carol_ws = WsClient::connect_unsynced(&c.node, &c.carol).await;
    let mut cursors = serde_json::Map::new();
    cursors.insert(group_id.to_string(), json!(17));
    carol_ws
        .send(json!({"type": "sync", "ref": "s2", "conversations": cursors}))
        .await;
    let mut frames = Vec::new();
    loop {
        let frame = carol_ws.next_json().await.expect("open");
        if frame["type"] == "synced" {
            break;
        }
        frames.push(frame);
    }
    assert_eq!(seqs_of(&frames, group_id), vec![18, 19, 20]);

    tracing::info!("--- history over REST pages backwards and forwards");
    let path = format!("/v1/conversations/{group_id}/events?before=21&limit=5");
    let (status, page) = http(&c.node, "GET", &path, Some(&c.carol), None).await;
    assert_eq!(status, 200, "{page}");
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![20, 19, 18, 17, 16]);
    let path = format!("/v1/conversations/{group_id}/events?after=0&limit=3");
    let (_, page) = http(&c.node, "GET", &path, Some(&c.carol), None).await;
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);

    tracing::info!("--- receipts: carol reads up to 20; the list shows no unread for her");
    carol_ws
        .send(json!({"type": "receipt", "ref": "r1", "conversation": group_id, "read": 20}))
        .await;
    assert_eq!(carol_ws.reply_to("r1").await["type"], "ok");
    let (_, list) = http(&c.node, "GET", "/v1/conversations", Some(&c.carol), None).await;
    let summary = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["conversation"]["id"] == group_id)
        .unwrap()
        .clone();
    assert_eq!(summary["unread"], 0);
    assert_eq!(summary["read"], 20);
    alice
        .send(json!({"type": "receipt", "ref": "ra", "conversation": group_id, "read": 17}))
        .await;
    assert_eq!(alice.reply_to("ra").await["type"], "ok");
    let (_, list) = http(&c.node, "GET", "/v1/conversations", Some(&c.alice), None).await;
    let summary = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["conversation"]["id"] == group_id)
        .unwrap()
        .clone();
    assert_eq!(summary["last_message"]["body"]["text"], "you missed this");
    assert_eq!(
        summary["unread"], 3,
        "bob's three messages after her read cursor are unread for alice"
    );
}

#[actix_rt::test]
async fn typing_and_presence_reach_the_other_member() {
    let c = cast().await;
    let [_, bob_id, _] = c.ids;
    let direct_id = open_direct(&c.node, &c.alice, bob_id).await;
    let mut alice = WsClient::connect(&c.node, &c.alice).await;
    let mut bob = WsClient::connect(&c.node, &c.bob).await;
    let presence = alice.next_of("presence").await;
    assert_eq!(
        (presence["user"].as_u64(), presence["online"].as_bool()),
        (Some(bob_id), Some(true))
    );
    bob.send(json!({"type": "typing", "conversation": direct_id})).await;
    let typing = alice.next_of("typing").await;
    assert_eq!(typing["user"], bob_id);
    drop(bob);
    let presence = alice.next_of("presence").await;
    assert_eq!(presence["online"], false);
    assert!(presence["last_seen"].as_i64().is_some());
}
