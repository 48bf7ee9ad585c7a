//! A client that stops reading is disconnected with 4409 (`resync`) instead of making the server
//! buffer without bound; everything stays in history and a resync gets it all.

use serde_json::json;
use serde_json::Value;

use crate::common::*;

#[actix_rt::test]
async fn a_client_that_stops_reading_is_told_to_resync_and_loses_nothing() {
    let mut node =
        Node::new("[limits]\nframes_per_sec = 100000\noutbound_queue = 64\n[storage]\ndurability = \"relaxed\"\n");
    node.add_user_offline("alice", false);
    let bob_id = node.add_user_offline("bob", false);
    node.start().await;
    let (alice_token, bob_token) = (login(&node, "alice").await, login(&node, "bob").await);
    let conversation = open_direct(&node, &alice_token, bob_id).await;
    let mut bob = WsClient::connect(&node, &bob_token).await;
    let mut alice = WsClient::connect(&node, &alice_token).await;

    tracing::info!("--- bob stops reading; alice sends far more than socket buffers hold");
    const SENDS: usize = 1500;
    let text = "x".repeat(8 * 1024);
    // A few sends in flight: on the scylla backend they share CQL batches, which keeps this test
    // from taking half a minute there.
    const IN_FLIGHT: usize = 8;
    let mut unanswered = std::collections::HashSet::new();
    for i in 0..SENDS {
        let frame = json!({"type": "send", "ref": format!("r{i}"), "conversation": conversation, "client_msg_id": format!("m{i}"), "body": {"text": text}});
        alice.send(frame).await;
        unanswered.insert(format!("r{i}"));
        // Alice reads as she goes (her own echoes included); only bob stalls. Answers may come
        // in any order.
        while unanswered.len() >= IN_FLIGHT || (i + 1 == SENDS && !unanswered.is_empty()) {
            let frame = alice.next_json().await.expect("alice stays connected");
            if let Some(reference) = frame["ref"].as_str() {
                assert_eq!(frame["type"], "ack", "{frame}");
                assert!(unanswered.remove(reference), "one answer per send: {frame}");
            }
        }
    }

    tracing::info!("--- bob finds his connection closed with 4409 before the end");
    let mut received = 0;
    let closed = loop {
        match bob.next_json().await {
            Ok(frame) if frame["type"] == "event" => received += 1,
            Ok(_) => {}
            Err(closed) => break closed,
        }
    };
    assert_eq!(closed, Closed::Code(4409), "told to resync");
    assert!(received < SENDS, "not everything was buffered for him ({received})");

    tracing::info!("--- bob reconnects and syncs: everything is there, in order");
    let mut bob = WsClient::connect_unsynced(&node, &bob_token).await;
    let mut cursor = 0u64;
    loop {
        let mut cursors = serde_json::Map::new();
        cursors.insert(conversation.to_string(), json!(cursor));
        bob.send(json!({"type": "sync", "ref": "s", "conversations": cursors, "limit": 200}))
            .await;
        let mut frames: Vec<Value> = Vec::new();
        let synced = loop {
            let frame = bob.next_json().await.expect("open");
            if frame["type"] == "synced" {
                break frame;
            }
            frames.push(frame);
        };
        let seqs = seqs_of(&frames, conversation);
        assert_eq!(
            seqs,
            ((cursor + 1)..=(cursor + seqs.len() as u64)).collect::<Vec<_>>(),
            "dense, in order"
        );
        cursor += seqs.len() as u64;
        if !synced["conversations"][0]["limited"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(cursor, SENDS as u64 + 1, "the announcement and every message");
}
