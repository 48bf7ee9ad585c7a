//! Cassandra stopped in the middle of a send burst.
//!
//! A node on the `scylla` backend, on the fault tests' own Cassandra. Alice sends a steady stream
//! of messages to Bob (up to 100 a second, at most four unacknowledged at a time) the way a
//! well-behaved client does: a fresh `client_msg_id` per message and the same id again after an
//! error, a timeout or a lost connection; after a reconnect she syncs from her cursor first. Bob
//! only reads, on one connection that lives through the whole story. After 60 acks Cassandra is
//! stopped. Alice keeps sending into the outage on her open socket for a few seconds, then loses
//! that socket (a network drop, with sends in flight whose outcome she cannot know) and keeps
//! trying to reconnect while Cassandra starts again on the same data directory. Roost is never
//! restarted. Once one of her sends is acknowledged after the restart, she sends 40 fresh
//! messages and stops.
//!
//! What it proves, and how:
//! - **Sends fail with a retryable code.** Every `error` answer, at any time, must be
//!   `unavailable` or `overloaded` with `retryable: true`, and at least one must arrive after
//!   Cassandra is down. Reconnect attempts during the outage are refused with 503.
//! - **No ack for an unpersisted message.** Between "the Cassandra JVM has exited" and "it is
//!   being started again" no `ack` reaches Alice and no `event` reaches Bob (nothing can be
//!   durable then). And every ack ever received, before, during or after the outage, names a
//!   `(client_msg_id, seq)` found in the history read at the end.
//! - **Recovery without an operator.** The same `roost` process (same pid) serves the retries,
//!   they all end in acks, and `/readyz` goes from 503 `storage_unavailable` back to 200.
//! - **Nothing lost or doubled.** The history has dense seqs, each id Alice sent exactly once,
//!   at the seq of its first ack; replaying every id afterwards answers `duplicate: true` with
//!   that same seq; Bob's one connection saw every event once, in seq order, across the outage;
//!   Alice's connections together (via sync from her cursor) too.
//!
//! Why a graceful stop (`scripts/cassandra.sh stop`, SIGTERM) and not SIGKILL: the test node
//! syncs its commitlog periodically (every 10 s, `commitlog_sync: periodic`), so a SIGKILL could
//! drop the last seconds of writes Cassandra itself had acknowledged, and the history check
//! would then measure Cassandra's durability setting rather than Roost. SIGTERM runs Cassandra's
//! drain (stop accepting clients, flush), so Cassandra is unreachable to Roost exactly as after
//! a crash, while everything it acknowledged survives. From Roost's side the outage looks the
//! same: connections refused, in-flight requests broken.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;

use serde_json::json;
use serde_json::Value;

use crate::common::*;
use crate::servers::FaultCassandra;

/// At most one new message per this interval: a steady stream, not a single burst that could
/// end before the outage begins.
const NEW_EVERY: Duration = Duration::from_millis(10);
/// Fresh messages Alice sends once her first retry after the restart is acknowledged.
const AFTER_RECOVERY: usize = 40;
/// Messages unacknowledged at once (in flight or waiting to be retried).
const WINDOW: usize = 4;
/// Acks before Cassandra is stopped.
const ACKS_BEFORE_STOP: usize = 60;
/// How long Alice keeps sending on her open socket once Cassandra is down.
const OUTAGE_ON_SOCKET: Duration = Duration::from_secs(3);
/// A send without an answer for this long is retried (same id).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// Wait before retrying a send that failed.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// Wait between reconnect attempts.
const RECONNECT_EVERY: Duration = Duration::from_millis(300);
/// Acks and events in flight when Cassandra's JVM exited may still arrive for this long.
const IN_FLIGHT_MARGIN: Duration = Duration::from_millis(500);
/// From the first send to the last ack (a graceful stop may take up to 30 s before the script
/// insists, and a start up to 180 s on a loaded machine).
const STORY_LIMIT: Duration = Duration::from_secs(300);

fn client_msg_id(i: usize) -> String {
    format!("burst-{i:04}")
}

/// Alice: a client that sends with idempotent retries and reconnects with sync.
struct Sender {
    ws: Option<WsClient>,
    conversation: u64,
    /// Ids `0..next` have been sent at least once.
    next: usize,
    /// No new ids at or beyond this.
    limit: usize,
    last_new: Option<Instant>,
    /// id -> (ref of the attempt in flight, when it was sent)
    in_flight: BTreeMap<String, (String, Instant)>,
    /// ids to send again, not before the instant
    retry: VecDeque<(String, Instant)>,
    attempts: HashMap<String, u32>,
    /// id -> seq of its first ack
    first_ack: HashMap<String, u64>,
    /// every ack: when, id, seq, duplicate
    acks: Vec<(Instant, String, u64, bool)>,
    /// every error answer: when, id, code
    errors: Vec<(Instant, String, String)>,
    /// seqs of the conversation's events, in the order Alice's connections delivered them
    events: Vec<u64>,
    /// refused reconnect attempts (HTTP status)
    refused_reconnects: Vec<u16>,
    last_reconnect: Option<Instant>,
}

impl Sender {
    fn cursor(&self) -> u64 {
        self.events.last().copied().unwrap_or(0)
    }

    /// Top up the window: due retries first, then new messages.
    async fn fill(&mut self) {
        while self.ws.is_some() && self.in_flight.len() < WINDOW {
            let now = Instant::now();
            let id = match self.retry.front() {
                Some((id, due)) if *due <= now => {
                    let id = id.clone();
                    self.retry.pop_front();
                    if self.first_ack.contains_key(&id) || self.in_flight.contains_key(&id) {
                        continue;
                    }
                    id
                }
                // A new message only while fewer than WINDOW are unacknowledged (an outbox).
                _ if self.next < self.limit
                    && self.in_flight.len() + self.retry.len() < WINDOW
                    && self.last_new.is_none_or(|at| at.elapsed() >= NEW_EVERY) =>
                {
                    self.last_new = Some(now);
                    self.next += 1;
                    client_msg_id(self.next - 1)
                }
                _ => return,
            };
            let attempt = self.attempts.entry(id.clone()).or_insert(0);
            *attempt += 1;
            let reference = format!("{id}#{attempt}");
            let frame = json!({"type": "send", "ref": reference, "conversation": self.conversation,
                               "client_msg_id": id, "body": {"text": format!("text of {id}")}});
            self.in_flight.insert(id, (reference, now));
            let sent = self.ws.as_mut().expect("connected").try_send(frame).await;
            if !sent {
                self.disconnected();
            }
        }
    }

    fn on_frame(&mut self, frame: Value) {
        let kind = frame["type"].as_str().unwrap_or_default();
        match kind {
            "event" if frame["conversation"] == self.conversation => {
                self.events.push(frame["seq"].as_u64().expect("seq"));
            }
            "ack" | "error" => {
                let reference = frame["ref"].as_str().expect("answers carry the ref").to_owned();
                let id = reference.split('#').next().expect("id").to_owned();
                let now = Instant::now();
                if self.in_flight.get(&id).is_some_and(|(r, _)| *r == reference) {
                    self.in_flight.remove(&id);
                }
                if kind == "ack" {
                    let seq = frame["seq"].as_u64().expect("seq");
                    let duplicate = frame["duplicate"].as_bool().expect("duplicate");
                    if let Some(first) = self.first_ack.get(&id) {
                        assert_eq!(*first, seq, "{id} was acked at seq {first}, now at {seq}: {frame}");
                    } else {
                        self.first_ack.insert(id.clone(), seq);
                    }
                    // Acked now: a newer attempt still in flight will be answered as a duplicate.
                    self.acks.push((now, id, seq, duplicate));
                } else {
                    let code = frame["code"].as_str().unwrap_or_default().to_owned();
                    assert!(
                        matches!(code.as_str(), "unavailable" | "overloaded") && frame["retryable"] == true,
                        "a send during a storage outage must fail with a retryable code: {frame}"
                    );
                    self.errors.push((now, id.clone(), code));
                    if !self.first_ack.contains_key(&id) && !self.in_flight.contains_key(&id) {
                        self.retry.push_back((id, now + RETRY_AFTER));
                    }
                }
            }
            _ => {}
        }
    }

    /// Sends whose answer is overdue are retried with the same id.
    fn expire(&mut self) {
        let now = Instant::now();
        let overdue: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, (_, sent))| now.duration_since(*sent) > ANSWER_TIMEOUT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in overdue {
            self.in_flight.remove(&id);
            self.retry.push_back((id, now));
        }
    }

    /// The connection is gone: every send in flight has an unknown outcome and is retried.
    fn disconnected(&mut self) {
        self.ws = None;
        let now = Instant::now();
        let lost: Vec<String> = std::mem::take(&mut self.in_flight).into_keys().collect();
        // Retried first, in their original order.
        for id in lost.into_iter().rev() {
            self.retry.push_front((id, now));
        }
    }

    /// One reconnect attempt (at most every [`RECONNECT_EVERY`]); on success, sync from the
    /// cursor before sending anything.
    async fn try_reconnect(&mut self, node: &Node, token: &str) {
        if self.last_reconnect.is_some_and(|at| at.elapsed() < RECONNECT_EVERY) {
            return;
        }
        self.last_reconnect = Some(Instant::now());
        match WsClient::try_connect(node, token).await {
            Err(status) => self.refused_reconnects.push(status),
            Ok(mut ws) => {
                let cursor = self.cursor();
                let events = sync_from(&mut ws, self.conversation, cursor).await;
                self.events.extend(events);
                self.ws = Some(ws);
            }
        }
    }
}

/// Send `sync` for one conversation from `cursor`, and return the seqs of the events that
/// come before `synced` (following `limited` answers until the end).
async fn sync_from(ws: &mut WsClient, conversation: u64, mut cursor: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        let mut cursors = serde_json::Map::new();
        cursors.insert(conversation.to_string(), json!(cursor));
        ws.send(json!({"type": "sync", "ref": "resync", "conversations": cursors, "limit": 200}))
            .await;
        let synced = loop {
            let frame = ws.next_json().await.expect("open while syncing");
            if frame["type"] == "synced" {
                break frame;
            }
            if frame["type"] == "event" && frame["conversation"] == conversation {
                seqs.push(frame["seq"].as_u64().expect("seq"));
            }
        };
        cursor = seqs.last().copied().unwrap_or(cursor);
        let entry = synced["conversations"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["conversation"] == conversation)
            .cloned()
            .unwrap_or(Value::Null);
        if entry["limited"] != true {
            return seqs;
        }
    }
}

async fn readyz(node: &Node) -> (u16, Value) {
    http(node, "GET", "/readyz", None, None).await
}

enum Phase {
    Healthy,
    Stopping(JoinHandle<()>),
    Down,
    Restarting(JoinHandle<()>),
    Restarted,
}

fn spawn_named(name: &str, work: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(work)
        .expect("spawn")
}

fn join(handle: JoinHandle<()>) {
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

#[actix_rt::test]
async fn cassandra_stopped_mid_burst_loses_no_acked_message_and_roost_recovers_by_itself() {
    let story = Instant::now();
    let cassandra = std::sync::Arc::new(FaultCassandra::start());
    let storage = Storage::Scylla {
        contact_point: cassandra.contact_point(),
    };
    let mut node = Node::with_storage(
        "[limits]\nframes_per_sec = 100000\n[scylla]\nrequest_timeout_ms = 4000\nconnect_timeout_ms = 1000\n",
        storage,
    );
    node.add_user_offline("alice", false);
    let bob_id = node.add_user_offline("bob", false);
    node.start().await;
    let pid = node.pid();
    let alice_token = login(&node, "alice").await;
    let bob_token = login(&node, "bob").await;
    let conversation = open_direct(&node, &alice_token, bob_id).await;

    // Bob: one connection for the whole story, synced from nothing.
    let mut bob = WsClient::connect_unsynced(&node, &bob_token).await;
    let mut bob_events: Vec<(Instant, u64)> = sync_from(&mut bob, conversation, 0)
        .await
        .into_iter()
        .map(|s| (Instant::now(), s))
        .collect();

    let mut alice = WsClient::connect_unsynced(&node, &alice_token).await;
    let events = sync_from(&mut alice, conversation, 0).await;
    let mut sender = Sender {
        ws: Some(alice),
        conversation,
        next: 0,
        limit: usize::MAX,
        last_new: None,
        in_flight: BTreeMap::new(),
        retry: VecDeque::new(),
        attempts: HashMap::new(),
        first_ack: HashMap::new(),
        acks: Vec::new(),
        errors: Vec::new(),
        events,
        refused_reconnects: Vec::new(),
        last_reconnect: None,
    };

    let mut phase = Phase::Healthy;
    let (mut stop_began, mut stop_done, mut restart_began, mut restart_done) = (None, None, None, None);
    let mut readyz_during_outage = None;
    tracing::info!("--- burst, Cassandra stops after {ACKS_BEFORE_STOP} acks");
    let burst = Instant::now();
    loop {
        if matches!(phase, Phase::Restarted) {
            if sender.limit == usize::MAX && sender.acks.iter().any(|a| a.0 >= restart_began.unwrap()) {
                sender.limit = sender.next + AFTER_RECOVERY;
            }
            if sender.next == sender.limit && sender.first_ack.len() == sender.next {
                break;
            }
        }
        assert!(
            burst.elapsed() < STORY_LIMIT,
            "no recovery within {STORY_LIMIT:?}: {} of {} acked, {} errors, reconnects refused: {:?}\n{}",
            sender.first_ack.len(),
            sender.next,
            sender.errors.len(),
            sender.refused_reconnects.len(),
            node.log()
        );
        sender.fill().await;
        let wait = Duration::from_millis(50);
        let (from_alice, from_bob) = match sender.ws.as_mut() {
            Some(ws) => tokio::select! {
                frame = ws.poll_json(wait) => (frame, None),
                frame = bob.poll_json(wait) => (None, frame),
            },
            None => (None, bob.poll_json(wait).await),
        };
        match from_alice {
            Some(Ok(frame)) => sender.on_frame(frame),
            Some(Err(closed)) => {
                tracing::info!(?closed, "alice's connection closed; reconnecting");
                sender.disconnected();
            }
            None => {}
        }
        match from_bob {
            Some(Ok(frame)) if frame["type"] == "event" && frame["conversation"] == conversation => {
                bob_events.push((Instant::now(), frame["seq"].as_u64().unwrap()));
            }
            Some(Ok(_)) | None => {}
            Some(Err(closed)) => panic!("bob's connection must live through the outage; it closed: {closed:?}"),
        }
        sender.expire();
        if sender.ws.is_none() {
            sender.try_reconnect(&node, &alice_token).await;
        }

        phase = match phase {
            Phase::Healthy if sender.first_ack.len() >= ACKS_BEFORE_STOP => {
                tracing::info!("--- stopping Cassandra (graceful) mid-burst");
                stop_began = Some(Instant::now());
                let cassandra = cassandra.clone();
                Phase::Stopping(spawn_named("cassandra-stop", move || cassandra.stop()))
            }
            Phase::Stopping(handle) if handle.is_finished() => {
                join(handle);
                stop_done = Some(Instant::now());
                tracing::info!("--- Cassandra is down; Alice keeps sending on her open socket");
                // Readiness says so (the probe read fails or times out within 2 s).
                readyz_during_outage = Some(readyz(&node).await);
                Phase::Down
            }
            Phase::Down if stop_done.is_some_and(|at: Instant| at.elapsed() >= OUTAGE_ON_SOCKET) => {
                tracing::info!("--- Alice's network drops (sends in flight); Cassandra starts again");
                sender.disconnected();
                restart_began = Some(Instant::now());
                let cassandra = cassandra.clone();
                Phase::Restarting(spawn_named("cassandra-restart", move || cassandra.restart()))
            }
            Phase::Restarting(handle) if handle.is_finished() => {
                join(handle);
                restart_done = Some(Instant::now());
                tracing::info!("--- Cassandra is back; Roost must recover by itself");
                Phase::Restarted
            }
            other => other,
        };
    }
    let recovered = Instant::now();
    let (stop_began, stop_done, restart_began, restart_done) = (
        stop_began.unwrap(),
        stop_done.unwrap(),
        restart_began.unwrap(),
        restart_done.unwrap(),
    );

    tracing::info!("--- the outage was seen, and answered with retryable codes only");
    assert_eq!(node.pid(), pid, "the same roost process throughout");
    assert!(node.is_running(), "roost is still running: {}", node.log());
    let (status, body) = readyz_during_outage.unwrap();
    assert_eq!(
        (status, body["storage"].as_str()),
        (503, Some("unavailable")),
        "readiness during the outage: {body}"
    );
    let outage_errors = sender.errors.iter().filter(|(at, _, _)| *at >= stop_done).count();
    assert!(
        outage_errors > 0,
        "sends on the open socket after Cassandra was down got errors (got {} errors in all)",
        sender.errors.len()
    );
    assert!(
        !sender.refused_reconnects.is_empty() && sender.refused_reconnects.iter().all(|s| *s == 503),
        "reconnecting while the store is down is refused with 503: {:?}",
        sender.refused_reconnects
    );

    tracing::info!("--- nothing was acknowledged or delivered while Cassandra was down");
    let dark = (stop_done + IN_FLIGHT_MARGIN)..restart_began;
    let acks_in_dark: Vec<_> = sender.acks.iter().filter(|a| dark.contains(&a.0)).collect();
    assert!(
        acks_in_dark.is_empty(),
        "acks while Cassandra was down: {acks_in_dark:?}"
    );
    let events_in_dark: Vec<_> = bob_events.iter().filter(|e| dark.contains(&e.0)).collect();
    assert!(
        events_in_dark.is_empty(),
        "events while Cassandra was down: {events_in_dark:?}"
    );

    tracing::info!("--- recovery: readiness is back without restarting roost");
    // Its probe is one read within 2 s, of a Cassandra that has just started (cold, on a loaded
    // machine): one slow read is no evidence against recovery, so poll (for a bounded time).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = readyz(&node).await;
        if (status, body["storage"].as_str()) == (200, Some("ok")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness not back within 60 s of the recovery: {status} {body}"
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }

    tracing::info!("--- the history: dense, every acked id once, at the seq of its first ack");
    let history = history(&node, &alice_token, conversation).await;
    let seqs: Vec<u64> = history.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let last = seqs.len() as u64;
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "dense seqs");
    let mut stored: HashMap<String, Vec<u64>> = HashMap::new();
    for event in history.iter().filter(|e| e["kind"] == "message") {
        stored
            .entry(event["client_msg_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(event["seq"].as_u64().unwrap());
    }
    let total = sender.next;
    assert_eq!(stored.len(), total, "one stored message per id");
    for i in 0..total {
        let id = client_msg_id(i);
        let first = sender.first_ack[&id];
        assert_eq!(
            stored.get(&id),
            Some(&vec![first]),
            "{id}: stored once, at its first ack's seq"
        );
    }
    for (_, id, seq, _) in &sender.acks {
        assert_eq!(stored.get(id), Some(&vec![*seq]), "every ack names a stored message");
    }

    tracing::info!("--- every retry keeps its seq: replay all ids");
    let mut ws = WsClient::connect(&node, &alice_token).await;
    for chunk in (0..total).collect::<Vec<_>>().chunks(20) {
        let mut waiting: HashMap<String, u64> = HashMap::new();
        for &i in chunk {
            let id = client_msg_id(i);
            ws.send(
                json!({"type": "send", "ref": id, "conversation": conversation, "client_msg_id": id,
                           "body": {"text": "replayed"}}),
            )
            .await;
            waiting.insert(id.clone(), sender.first_ack[&id]);
        }
        // Answers to different requests may come in any order (an id in the actor's memory is
        // answered before one looked up in the store).
        while !waiting.is_empty() {
            let reply = match ws.poll_json(Duration::from_secs(20)).await {
                Some(Ok(frame)) => frame,
                other => panic!("no answer to the replays of {waiting:?}: {other:?}\n{}", node.log()),
            };
            let Some(first) = reply["ref"].as_str().and_then(|r| waiting.remove(r)) else {
                continue;
            };
            assert_eq!(
                (
                    reply["type"].as_str(),
                    reply["seq"].as_u64(),
                    reply["duplicate"].as_bool()
                ),
                (Some("ack"), Some(first), Some(true)),
                "a replay answers the seq of the first ack: {reply}"
            );
        }
    }

    tracing::info!("--- per-connection exactly-once, in order, across the outage");
    let mut bob_seqs: Vec<u64> = bob_events.iter().map(|(_, s)| *s).collect();
    // The last events may still be on their way (an event follows its ack).
    let mut alice = sender.ws.take().expect("alice is connected at the end");
    for (ws, seqs) in [(&mut bob, &mut bob_seqs), (&mut alice, &mut sender.events)] {
        while seqs.last().copied().unwrap_or(0) < last {
            match ws.poll_json(Duration::from_secs(10)).await {
                Some(Ok(frame)) if frame["type"] == "event" && frame["conversation"] == conversation => {
                    seqs.push(frame["seq"].as_u64().unwrap());
                }
                Some(Ok(_)) => {}
                other => panic!("the last events never came: {other:?}"),
            }
        }
    }
    assert_eq!(bob_seqs, (1..=last).collect::<Vec<_>>(), "bob's one connection");
    assert_eq!(
        sender.events,
        (1..=last).collect::<Vec<_>>(),
        "alice's connections, joined by sync from her cursor"
    );

    let duplicates = sender.acks.iter().filter(|a| a.3).count();
    eprintln!(
        "faults: cassandra outage: {total} messages, {} errors ({outage_errors} after the JVM exited), \
         {} refused reconnects, {duplicates} duplicate acks; stop took {:.1}s, outage {:.1}s, restart {:.1}s, \
         first ack {:.1}s after the restart, all acked {:.1}s after it; story {:.1}s",
        sender.errors.len(),
        sender.refused_reconnects.len(),
        (stop_done - stop_began).as_secs_f64(),
        (restart_done - stop_done).as_secs_f64(),
        (restart_done - restart_began).as_secs_f64(),
        sender
            .acks
            .iter()
            .find(|a| a.0 >= restart_began)
            .map_or(f64::NAN, |a| (a.0 - restart_done).as_secs_f64()),
        (recovered - restart_done).as_secs_f64(),
        story.elapsed().as_secs_f64(),
    );
    drop(node);
}
