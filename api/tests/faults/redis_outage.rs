//! Redis killed (SIGKILL) and restarted during a chat.
//!
//! A node with `[presence] backend = "redis"` on the fault tests' own redis-server (heartbeats
//! every second, entries live three). Alice and Bob chat in a direct conversation and see each
//! other online. Redis is killed with SIGKILL; they keep chatting; Bob loses his connection,
//! misses messages, and reconnects, all while Redis is dead; then Redis starts again, empty
//! (it persists nothing). Roost is never restarted.
//!
//! What it proves, and how:
//! - **Presence really was in Redis**, before the fault: the raw `ZRANGE <prefix>online:<user>`
//!   over a plain TCP socket lists this node for both users.
//! - **No message lost.** Every send before, during and after the outage is acknowledged; each
//!   connection receives every event of the conversation once, in seq order (the clients check
//!   density as frames arrive); Bob's reconnection syncs exactly what he missed; the history read
//!   at the end has dense seqs and every acknowledged `(client_msg_id, seq)` once.
//! - **Presence degrades, it does not fail.** While Redis is dead `/readyz` keeps answering 200
//!   and turns to `"presence":"degraded"`; `GET /v1/presence` answers from the node's own
//!   knowledge (both online; Bob offline with a `last_seen` while he is disconnected); Alice gets
//!   Bob's `presence` frames (offline, online again).
//! - **Presence recovers by itself.** Within a bounded wait after the restart, without touching
//!   Roost, `/readyz` says `"presence":"ok"` and the raw `ZRANGE` lists the node for both users
//!   again, including Bob, whose reconnection happened while Redis was dead (only the heartbeat
//!   can have restored his entry); a disconnect afterwards is reported to Redis again.

use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use serde_json::json;
use serde_json::Value;

use crate::common::*;
use crate::servers::redis_command;
use crate::servers::FaultRedis;

/// How long Roost gets to notice the outage, and to recover from it.
const BOUND: Duration = Duration::from_secs(20);
/// The chat goes on at least this long with Redis dead (several heartbeats and entry TTLs).
const OUTAGE: Duration = Duration::from_secs(5);

/// A chat client that checks, frame by frame, that its connection delivers the conversation's
/// events once each, in seq order, and remembers the presence frames it got.
struct Chatter {
    ws: WsClient,
    conversation: u64,
    cursor: u64,
    presence: Vec<Value>,
    /// client_msg_id -> seq of every ack this client got
    acked: HashMap<String, u64>,
}

impl Chatter {
    /// Connect and sync from `cursor` (what the client already has).
    async fn connect(node: &Node, token: &str, conversation: u64, cursor: u64) -> Chatter {
        let mut chatter = Chatter {
            ws: WsClient::connect_unsynced(node, token).await,
            conversation,
            cursor,
            presence: Vec::new(),
            acked: HashMap::new(),
        };
        loop {
            let mut cursors = serde_json::Map::new();
            cursors.insert(conversation.to_string(), json!(chatter.cursor));
            chatter
                .ws
                .send(json!({"type": "sync", "ref": "sync", "conversations": cursors, "limit": 200}))
                .await;
            let synced = loop {
                let frame = chatter.ws.next_json().await.expect("open while syncing");
                if frame["type"] == "synced" {
                    break frame;
                }
                chatter.on_frame(frame);
            };
            let limited = synced["conversations"]
                .as_array()
                .expect("entries")
                .iter()
                .any(|e| e["conversation"] == conversation && e["limited"] == true);
            if !limited {
                return chatter;
            }
        }
    }

    fn on_frame(&mut self, frame: Value) {
        match frame["type"].as_str() {
            Some("event") if frame["conversation"] == self.conversation => {
                let seq = frame["seq"].as_u64().expect("seq");
                assert_eq!(seq, self.cursor + 1, "events once each, in seq order: {frame}");
                self.cursor = seq;
            }
            Some("presence") => self.presence.push(frame),
            _ => {}
        }
    }

    /// Send a message and wait for its ack; returns the seq.
    async fn say(&mut self, client_msg_id: &str) -> u64 {
        let frame = json!({"type": "send", "ref": client_msg_id, "conversation": self.conversation,
                           "client_msg_id": client_msg_id, "body": {"text": format!("text of {client_msg_id}")}});
        self.ws.send(frame).await;
        loop {
            let frame = self.ws.next_json().await.expect("open");
            if frame["ref"] == client_msg_id {
                assert_eq!(frame["type"], "ack", "send {client_msg_id}: {frame}");
                let seq = frame["seq"].as_u64().expect("seq");
                self.acked.insert(client_msg_id.to_owned(), seq);
                return seq;
            }
            self.on_frame(frame);
        }
    }

    /// Read until the event with `seq` has arrived.
    async fn receive_up_to(&mut self, seq: u64) {
        while self.cursor < seq {
            let frame = self.ws.next_json().await.expect("open");
            self.on_frame(frame);
        }
    }

    /// Read until a presence frame says `user` is `online` (or is already among those read).
    async fn presence_of(&mut self, user: u64, online: bool) -> Value {
        let matches = |f: &Value| f["user"] == user && f["online"] == online;
        loop {
            if let Some(at) = self.presence.iter().position(matches) {
                return self.presence.drain(..=at).next_back().expect("found");
            }
            let frame = self.ws.next_json().await.expect("open");
            self.on_frame(frame);
        }
    }
}

/// One message from `from`, acknowledged and delivered to `to`.
async fn exchange(from: &mut Chatter, to: &mut Chatter, client_msg_id: &str) -> u64 {
    let seq = from.say(client_msg_id).await;
    to.receive_up_to(seq).await;
    seq
}

async fn readyz(node: &Node) -> (u16, Value) {
    http(node, "GET", "/readyz", None, None).await
}

/// Poll `/readyz` until its `presence` is `want`; every answer meanwhile must be 200.
async fn wait_presence_health(node: &Node, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = readyz(node).await;
        assert_eq!(status, 200, "the node stays ready whatever Redis does: {body}");
        if body["presence"] == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < BOUND,
            "/readyz presence not {want} within {BOUND:?}: {body}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn presence(node: &Node, token: &str, users: [u64; 2]) -> Vec<(bool, Option<i64>)> {
    let path = format!("/v1/presence?users={},{}", users[0], users[1]);
    let (status, body) = http(node, "GET", &path, Some(token), None).await;
    assert_eq!(status, 200, "presence answers: {body}");
    body["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| (u["online"].as_bool().expect("online"), u["last_seen"].as_i64()))
        .collect()
}

#[actix_rt::test]
async fn redis_killed_and_restarted_during_chat_loses_nothing_and_presence_recovers() {
    let story = Instant::now();
    let redis = FaultRedis::start();
    let prefix = format!("faults{}:", std::process::id());
    let node_id = "1"; // NodeId::STANDALONE, the member Roost writes into the online sets
    let mut node = Node::new(&format!(
        "[presence]\nbackend = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n\
         heartbeat_secs = 1\npresence_ttl_secs = 3\n",
        redis.url()
    ));
    let alice_id = node.add_user_offline("alice", false);
    let bob_id = node.add_user_offline("bob", false);
    node.start().await;
    let pid = node.pid();
    let alice_token = login(&node, "alice").await;
    let bob_token = login(&node, "bob").await;
    let conversation = open_direct(&node, &alice_token, bob_id).await;
    let online_key = |user: u64| format!("{prefix}online:{user}");
    let in_redis = |user: u64| redis_command(redis.port, &["ZRANGE", &online_key(user), "0", "-1"]);

    tracing::info!("--- alice and bob connect, see each other online, and chat; Redis has them");
    let mut alice = Chatter::connect(&node, &alice_token, conversation, 0).await;
    let mut bob = Chatter::connect(&node, &bob_token, conversation, 0).await;
    alice.presence_of(bob_id, true).await;
    let deadline = Instant::now() + BOUND;
    while in_redis(alice_id) != [node_id] || in_redis(bob_id) != [node_id] {
        assert!(Instant::now() < deadline, "presence never reached Redis");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Healthy means "the last Redis call answered": one slow call (over the 500 ms command
    // timeout, on a loaded machine) reads as degraded until the next heartbeat answers.
    while readyz(&node).await.1["presence"] != "ok" {
        assert!(Instant::now() < deadline, "presence not healthy with Redis up");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..5 {
        exchange(&mut alice, &mut bob, &format!("before-a{i}")).await;
        exchange(&mut bob, &mut alice, &format!("before-b{i}")).await;
    }

    tracing::info!("--- kill -9 redis; readiness stays 200 and says presence is degraded");
    redis.kill9();
    let killed = Instant::now();
    let noticed = wait_presence_health(&node, "degraded").await;

    tracing::info!("--- the chat goes on (for several heartbeats)");
    let mut i = 0;
    while i < 20 || killed.elapsed() < OUTAGE {
        exchange(&mut alice, &mut bob, &format!("during-a{i}")).await;
        exchange(&mut bob, &mut alice, &format!("during-b{i}")).await;
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        i += 1;
    }
    let states = presence(&node, &alice_token, [alice_id, bob_id]).await;
    assert!(
        states[0].0 && states[1].0,
        "both online, from the node's own knowledge: {states:?}"
    );

    tracing::info!("--- bob drops off, misses messages, comes back: presence from local knowledge");
    let bob_cursor = bob.cursor;
    let bob_acked = std::mem::take(&mut bob.acked);
    drop(bob);
    let offline = alice.presence_of(bob_id, false).await;
    assert!(offline["last_seen"].as_i64().is_some(), "{offline}");
    let states = presence(&node, &alice_token, [alice_id, bob_id]).await;
    assert!(states[0].0, "alice online: {states:?}");
    assert!(
        !states[1].0 && states[1].1.is_some(),
        "bob offline, last seen known: {states:?}"
    );
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(alice.say(&format!("missed-a{i}")).await);
    }
    let mut bob = Chatter::connect(&node, &bob_token, conversation, bob_cursor).await;
    bob.acked = bob_acked;
    assert_eq!(bob.cursor, *missed.last().unwrap(), "bob's sync brought what he missed");
    alice.presence_of(bob_id, true).await;
    for i in 0..5 {
        exchange(&mut bob, &mut alice, &format!("back-b{i}")).await;
        exchange(&mut alice, &mut bob, &format!("back-a{i}")).await;
    }
    let (status, body) = readyz(&node).await;
    assert_eq!((status, body["presence"].as_str()), (200, Some("degraded")), "{body}");

    tracing::info!("--- restart redis (empty); presence comes back without touching roost");
    redis.restart();
    let restarted = Instant::now();
    let recovered = wait_presence_health(&node, "ok").await;
    while in_redis(alice_id) != [node_id] || in_redis(bob_id) != [node_id] {
        assert!(
            restarted.elapsed() < BOUND,
            "entries not restored in Redis within {BOUND:?}: alice {:?}, bob {:?}",
            in_redis(alice_id),
            in_redis(bob_id)
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let restored = restarted.elapsed();
    let bob_seen = redis_command(redis.port, &["GET", &format!("{prefix}last_seen:{bob_id}")]);
    assert_eq!(
        bob_seen.len(),
        1,
        "the heartbeat advanced bob's last seen in Redis again"
    );
    for i in 0..5 {
        exchange(&mut alice, &mut bob, &format!("after-a{i}")).await;
        exchange(&mut bob, &mut alice, &format!("after-b{i}")).await;
    }

    tracing::info!("--- live reports flow again: bob's disconnect reaches Redis");
    bob.receive_up_to(alice.cursor).await; // his own last message's event follows its ack
    let (bob_cursor, bob_acked) = (bob.cursor, std::mem::take(&mut bob.acked));
    drop(bob);
    alice.presence_of(bob_id, false).await;
    while in_redis(bob_id).contains(&node_id.to_owned()) {
        assert!(restarted.elapsed() < 2 * BOUND, "bob's disconnect never reached Redis");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    tracing::info!("--- the history: dense, every acknowledged message once");
    let history = history(&node, &alice_token, conversation).await;
    let seqs: Vec<u64> = history.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "dense");
    assert_eq!(alice.cursor, seqs.len() as u64, "alice's connection got every event");
    assert_eq!(bob_cursor, seqs.len() as u64, "bob's connections got every event");
    let stored: HashMap<String, u64> = history
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| {
            (
                e["client_msg_id"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let acked: HashMap<String, u64> = alice
        .acked
        .iter()
        .chain(&bob_acked)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let messages = history.iter().filter(|e| e["kind"] == "message").count();
    assert_eq!(messages, acked.len(), "one stored message per acknowledged send");
    assert_eq!(stored, acked, "each acknowledged (client_msg_id, seq) is in history");
    assert_eq!(node.pid(), pid, "the same roost process throughout");
    assert!(node.is_running());
    eprintln!(
        "faults: redis outage: {} messages; degraded noticed after {:.1}s; Redis dead for {:.1}s; after the \
         restart /readyz ok in {:.1}s, entries back in {:.1}s; story {:.1}s",
        acked.len(),
        noticed.as_secs_f64(),
        (restarted - killed).as_secs_f64(),
        recovered.as_secs_f64(),
        restored.as_secs_f64(),
        story.elapsed().as_secs_f64(),
    );
}
