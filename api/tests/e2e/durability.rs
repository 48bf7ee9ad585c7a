//! Acknowledged means durable: idempotent retries across restarts, `kill -9` right after a
//! burst of acknowledged sends, and a graceful SIGTERM that tells clients to reconnect.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

async fn node_with_pair() -> (Node, String, u64) {
    let mut node = Node::new("[limits]\nframes_per_sec = 100000\n");
    node.add_user_offline("alice", false);
    let bob = node.add_user_offline("bob", false);
    node.start().await;
    let token = login(&node, "alice").await;
    let conversation = open_direct(&node, &token, bob).await;
    (node, token, conversation)
}

#[actix_rt::test]
async fn idempotency_table_over_the_wire_and_across_a_restart() {
    let (mut node, token, conversation) = node_with_pair().await;
    let mut ws = WsClient::connect(&node, &token).await;
    let send = |id: &str, text: &str, r: &str| json!({"type": "send", "ref": r, "conversation": conversation, "client_msg_id": id, "body": {"text": text}});

    ws.send(send("k1", "hello", "a")).await;
    let first = ws.reply_to("a").await;
    assert_eq!(
        (first["type"].as_str(), first["duplicate"].as_bool()),
        (Some("ack"), Some(false))
    );

    ws.send(send("k1", "hello", "b")).await;
    let same_body = ws.reply_to("b").await;
    assert_eq!(
        (same_body["seq"].clone(), same_body["duplicate"].as_bool()),
        (first["seq"].clone(), Some(true))
    );

    ws.send(send("k1", "something else", "c")).await;
    let other_body = ws.reply_to("c").await;
    assert_eq!(other_body["seq"], first["seq"], "same id, different body: original seq");

    tracing::info!("--- restart the server; the retry still maps to the original seq");
    drop(ws);
    assert!(node.terminate(), "graceful stop: {}", node.log());
    node.start().await;
    let mut ws = WsClient::connect(&node, &token).await;
    ws.send(send("k1", "hello", "d")).await;
    let after_restart = ws.reply_to("d").await;
    assert_eq!(
        (after_restart["seq"].clone(), after_restart["duplicate"].as_bool()),
        (first["seq"].clone(), Some(true))
    );

    tracing::info!("--- and after kill -9 too");
    drop(ws);
    node.kill9();
    node.start().await;
    let mut ws = WsClient::connect(&node, &token).await;
    ws.send(send("k1", "hello", "e")).await;
    assert_eq!(ws.reply_to("e").await["seq"], first["seq"]);
    let messages = history(&node, &token, conversation)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "message")
        .count();
    assert_eq!(messages, 1, "exactly one stored message for k1");
}

#[actix_rt::test]
async fn kill_9_after_a_burst_loses_no_acknowledged_message() {
    let (mut node, token, conversation) = node_with_pair().await;
    let mut ws = WsClient::connect(&node, &token).await;

    tracing::info!("--- pipeline 300 sends, collect acks as they come, then kill -9 at once");
    const BURST: usize = 300;
    for i in 0..BURST {
        let frame = json!({"type": "send", "ref": format!("r{i}"), "conversation": conversation, "client_msg_id": format!("burst-{i}"), "body": {"text": format!("n{i}")}});
        ws.send(frame).await;
    }
    let mut acked: HashMap<String, u64> = HashMap::new();
    while acked.len() < BURST / 2 {
        let frame = ws.next_json().await.expect("open");
        if frame["type"] == "ack" {
            acked.insert(
                frame["ref"].as_str().unwrap().to_owned(),
                frame["seq"].as_u64().unwrap(),
            );
        }
    }
    node.kill9();
    // Acks already in flight before the kill count too. The connection then ends any way a
    // killed server leaves it: a close, an EOF, or a reset (the server may have died with
    // unread sends in its socket buffer, and then the kernel answers with RST).
    while let Some(Ok(frame)) = ws.poll_json(Duration::from_secs(10)).await {
        if frame["type"] == "ack" {
            acked.insert(
                frame["ref"].as_str().unwrap().to_owned(),
                frame["seq"].as_u64().unwrap(),
            );
        }
    }

    tracing::info!("--- restart: every acknowledged message is in history, seqs dense");
    node.start().await;
    let events = history(&node, &token, conversation).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "dense");
    let stored: HashMap<String, u64> = events
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| {
            (
                e["client_msg_id"].as_str().unwrap().replace("burst-", "r"),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    for (reference, seq) in &acked {
        assert_eq!(
            stored.get(reference),
            Some(seq),
            "acked {reference} at seq {seq} must survive kill -9"
        );
    }
    assert!(acked.len() >= BURST / 2);
}

#[actix_rt::test]
async fn sigterm_tells_clients_to_reconnect_and_keeps_data() {
    let (mut node, token, conversation) = node_with_pair().await;
    let mut ws = WsClient::connect(&node, &token).await;
    let seq = ws
        .send_message(conversation, "before-stop", "still here after restart")
        .await;
    assert!(node.terminate(), "exit status 0 after drain: {}", node.log());
    assert_eq!(ws.closed().await, Closed::Code(1001), "going away: reconnect");
    node.start().await;
    let events = history(&node, &token, conversation).await;
    assert_eq!(events.last().unwrap()["seq"].as_u64(), Some(seq));
}
