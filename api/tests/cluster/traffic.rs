//! Chat clients for cluster tests that never panic on a failure of the server: a failure is data.
//!
//! A [`Peer`] is one device of one user. It sends one message at a time (so its acknowledged
//! messages have a send order the checker can hold the server to), retries with the same
//! `client_msg_id` after an error, a timeout or a lost connection, moves to the next node after a
//! close or repeated errors, and on every (re)connection syncs from its cursors. It logs every
//! send (attempts, acks with their arrival time, errors), every event in arrival order, and how
//! each connection ended. `common::WsClient` is not used here on purpose: it panics on a refused
//! connection or a protocol error, which is right for the end-to-end tests and wrong here.
//!
//! A [`Workload`] is the cast (users, direct and group conversations) plus the peers running it.

use std::cell::Cell;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use std::time::Instant;

use actix_codec::Framed;
use awc::ws;
use awc::BoxedSocket;
use futures_util::SinkExt;
use futures_util::StreamExt;
use serde_json::json;
use serde_json::Value;

use crate::checker::check;
use crate::checker::HistoryEvent;
use crate::checker::Report;
use crate::checker::SentMessage;
use crate::checker::Stream;
use crate::common::history;
use crate::harness::http_retry;
use crate::harness::TestCluster;

/// How long a peer waits for the answer to one send attempt before it gives up on the connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a peer keeps retrying one message before its outcome is recorded as unknown.
const SEND_DEADLINE: Duration = Duration::from_secs(45);
/// Retryable errors in a row after which a peer tries another node.
const ERRORS_BEFORE_MOVING: u32 = 3;

/// A node a peer may connect to.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub node: u64,
    pub ws_url: String,
}

/// The nodes peers know about; tests add nodes as they join.
pub type Endpoints = Rc<RefCell<Vec<Endpoint>>>;

/// One WebSocket connection.
pub struct Link {
    framed: Framed<BoxedSocket, ws::Codec>,
    pub node: u64,
}

/// What reading a connection gave.
pub enum Next {
    Frame(Value),
    Idle,
    Closed(String),
}

impl Link {
    /// Connects and reads `welcome`, within 5 s; any failure is an `Err` with its reason.
    pub async fn open(endpoint: &Endpoint, token: &str) -> Result<Link, String> {
        let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
        let connect = client
            .ws(&endpoint.ws_url)
            .bearer_auth(token)
            .max_frame_size(1 << 20)
            .connect();
        let (_, framed) = match actix_rt::time::timeout(Duration::from_secs(5), connect).await {
            Err(_) => return Err("connect timeout".into()),
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Ok(Ok(ok)) => ok,
        };
        let mut link = Link {
            framed,
            node: endpoint.node,
        };
        match link.next(Duration::from_secs(5)).await {
            Next::Frame(frame) if frame["type"] == "welcome" => Ok(link),
            Next::Frame(frame) => Err(format!("first frame is not welcome: {frame}")),
            Next::Idle => Err("no welcome".into()),
            Next::Closed(how) => Err(format!("closed before welcome: {how}")),
        }
    }

    pub async fn send(&mut self, frame: &Value) -> bool {
        self.framed
            .send(ws::Message::Text(frame.to_string().into()))
            .await
            .is_ok()
    }

    /// The next JSON frame within `wait`; answers pings on the way.
    pub async fn next(&mut self, wait: Duration) -> Next {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = match actix_rt::time::timeout(left, self.framed.next()).await {
                Err(_) => return Next::Idle,
                Ok(None) => return Next::Closed("eof".into()),
                Ok(Some(Err(e))) => return Next::Closed(format!("protocol error: {e}")),
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                ws::Frame::Text(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(value) => return Next::Frame(value),
                    Err(e) => return Next::Closed(format!("non-JSON frame: {e}")),
                },
                ws::Frame::Ping(payload) => {
                    let _ = self.framed.send(ws::Message::Pong(payload)).await;
                }
                ws::Frame::Close(reason) => {
                    return Next::Closed(reason.map_or("close".into(), |r| u16::from(r.code).to_string()))
                }
                _ => {}
            }
        }
    }
}

/// One message as its sender saw it.
#[derive(Clone, Debug)]
pub struct SendRecord {
    pub conversation: u64,
    pub client_msg_id: String,
    pub attempts: u32,
    /// Every ack (late ones from earlier attempts too): seq and arrival time.
    pub acks: Vec<(u64, Instant)>,
    /// A non-retryable error that ended the send.
    pub rejected: Option<String>,
}

/// Everything one peer saw.
#[derive(Clone, Debug, Default)]
pub struct PeerLog {
    pub name: String,
    pub user: u64,
    pub sends: Vec<SendRecord>,
    /// Per conversation, every event in arrival order: (seq, client_msg_id).
    pub received: BTreeMap<u64, Vec<(u64, Option<String>)>>,
    /// Per connection: the node and how it ended ("" while open).
    pub connections: Vec<(u64, String)>,
    /// Error codes received, and timeouts, with counts.
    pub errors: BTreeMap<String, u32>,
    /// `synced` entries that said `limited` (answered by syncing again).
    pub limited: u32,
}

/// Shared progress of a workload: acks so far and, per conversation, the time of every ack.
#[derive(Default)]
pub struct Progress {
    pub acks: Cell<u64>,
    pub ack_times: RefCell<BTreeMap<u64, Vec<Instant>>>,
}

impl Progress {
    /// Whether every conversation in `conversations` has an ack later than `since`.
    pub fn all_acked_since(&self, conversations: &[u64], since: Instant) -> bool {
        let times = self.ack_times.borrow();
        conversations
            .iter()
            .all(|c| times.get(c).is_some_and(|t| t.last().is_some_and(|&at| at > since)))
    }
}

/// One device of one user (see the module docs).
pub struct Peer {
    pub log: PeerLog,
    token: String,
    endpoints: Endpoints,
    /// Index (into `endpoints`) of the node to connect to next.
    at: usize,
    link: Option<Link>,
    cursors: BTreeMap<u64, u64>,
    index: HashMap<String, usize>,
    progress: Rc<Progress>,
    syncs: u64,
    /// Retryable errors in a row after which this peer tries another node (`None`: never).
    errors_before_moving: Option<u32>,
}

/// The answer to a request of the message being sent.
enum Answer {
    Ack,
    Error { code: String, retryable: bool },
}

impl Peer {
    pub fn new(name: &str, user: u64, token: &str, endpoints: Endpoints, at: usize, progress: Rc<Progress>) -> Peer {
        Peer {
            log: PeerLog {
                name: name.to_owned(),
                user,
                ..PeerLog::default()
            },
            token: token.to_owned(),
            endpoints,
            at,
            link: None,
            cursors: BTreeMap::new(),
            index: HashMap::new(),
            progress,
            syncs: 0,
            errors_before_moving: Some(ERRORS_BEFORE_MOVING),
        }
    }

    /// This peer stays on its connection through any number of retryable errors in a row, and
    /// moves only when the node closes it: for planned changes, where a close 1001 is what tells
    /// a client to move. (How many retryable errors a handover causes depends on how long it
    /// takes, which a loaded machine stretches; those errors are allowed, leaving is not.)
    pub fn stay_through_retryable_errors(mut self) -> Peer {
        self.errors_before_moving = None;
        self
    }

    /// The node of the current connection.
    pub fn node(&self) -> Option<u64> {
        self.link.as_ref().map(|l| l.node)
    }

    pub fn cursor(&self, conversation: u64) -> u64 {
        self.cursors.get(&conversation).copied().unwrap_or(0)
    }

    /// Drops the connection, recording why, and moves on to the next node.
    fn drop_link(&mut self, why: &str) {
        if self.link.take().is_some() {
            if let Some(last) = self.log.connections.last_mut() {
                last.1 = why.to_owned();
            }
            self.at += 1;
        }
    }

    /// Closes the connection; the next one goes to the node at `index` of the endpoints.
    pub fn disconnect(&mut self, index: usize) {
        self.drop_link("closed by the test");
        self.at = index;
    }

    /// Connects to the next node that accepts, syncing from the cursors (60 s at most).
    pub async fn connect(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.link.is_none() {
            let endpoint = {
                let endpoints = self.endpoints.borrow();
                endpoints[self.at % endpoints.len()].clone()
            };
            match Link::open(&endpoint, &self.token).await {
                Ok(link) => {
                    self.link = Some(link);
                    self.log.connections.push((endpoint.node, String::new()));
                    if !self.sync().await {
                        self.drop_link("closed while syncing");
                    }
                }
                Err(why) => {
                    *self
                        .log
                        .errors
                        .entry(format!("connect node {}: {why}", endpoint.node))
                        .or_default() += 1;
                    self.at += 1;
                    actix_rt::time::sleep(Duration::from_millis(100)).await;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: no node accepted for 60 s: {:?}",
                self.log.name,
                self.log.errors
            );
        }
    }

    /// `sync` from the cursors until no entry is limited; `false` if the connection failed.
    async fn sync(&mut self) -> bool {
        loop {
            self.syncs += 1;
            let reference = format!("sync-{}", self.syncs);
            let cursors: serde_json::Map<String, Value> =
                self.cursors.iter().map(|(c, s)| (c.to_string(), json!(s))).collect();
            let frame = json!({"type": "sync", "ref": reference, "conversations": cursors, "limit": 200});
            let Some(link) = self.link.as_mut() else { return false };
            if !link.send(&frame).await {
                return false;
            }
            let synced = loop {
                let Some(link) = self.link.as_mut() else { return false };
                match link.next(Duration::from_secs(10)).await {
                    Next::Frame(frame) if frame["type"] == "synced" && frame["ref"] == reference.as_str() => {
                        break frame
                    }
                    Next::Frame(frame) => {
                        self.on_frame(&frame);
                    }
                    Next::Idle | Next::Closed(_) => return false,
                }
            };
            let limited = synced["conversations"]
                .as_array()
                .map_or(0, |entries| entries.iter().filter(|e| e["limited"] == true).count());
            if limited == 0 {
                return true;
            }
            self.log.limited += limited as u32;
        }
    }

    /// Records an event or an answer; returns the answer if it concerns a message of ours.
    fn on_frame(&mut self, frame: &Value) -> Option<(String, Answer)> {
        match frame["type"].as_str()? {
            "event" => {
                let conversation = frame["conversation"].as_u64()?;
                let seq = frame["seq"].as_u64()?;
                let cmid = frame["client_msg_id"].as_str().map(str::to_owned);
                self.log.received.entry(conversation).or_default().push((seq, cmid));
                let cursor = self.cursors.entry(conversation).or_default();
                *cursor = (*cursor).max(seq);
                None
            }
            "ack" => {
                let cmid = frame["ref"].as_str()?.split('~').next()?.to_owned();
                let at = *self.index.get(&cmid)?;
                let seq = frame["seq"].as_u64()?;
                let now = Instant::now();
                let record = &mut self.log.sends[at];
                record.acks.push((seq, now));
                self.progress.acks.set(self.progress.acks.get() + 1);
                self.progress
                    .ack_times
                    .borrow_mut()
                    .entry(record.conversation)
                    .or_default()
                    .push(now);
                Some((cmid, Answer::Ack))
            }
            "error" => {
                let cmid = frame["ref"].as_str()?.split('~').next()?.to_owned();
                let code = frame["code"].as_str().unwrap_or("?").to_owned();
                *self.log.errors.entry(code.clone()).or_default() += 1;
                let retryable = frame["retryable"] == true;
                Some((cmid, Answer::Error { code, retryable }))
            }
            _ => None,
        }
    }
}

impl Peer {
    /// Sends one new message to `conversation`, retrying with the same `client_msg_id` until it
    /// is acknowledged, rejected, or [`SEND_DEADLINE`] passes; returns whether it was acked.
    pub async fn send_message(&mut self, conversation: u64) -> bool {
        let cmid = format!("{}-{conversation}-{}", self.log.name, self.log.sends.len());
        self.index.insert(cmid.clone(), self.log.sends.len());
        self.log.sends.push(SendRecord {
            conversation,
            client_msg_id: cmid.clone(),
            attempts: 0,
            acks: Vec::new(),
            rejected: None,
        });
        let at = self.log.sends.len() - 1;
        let deadline = Instant::now() + SEND_DEADLINE;
        let mut errors_in_a_row = 0;
        while Instant::now() < deadline {
            if !self.log.sends[at].acks.is_empty() {
                return true; // a late ack of an earlier attempt
            }
            if self.link.is_none() {
                self.connect().await;
            }
            let attempt = self.log.sends[at].attempts;
            self.log.sends[at].attempts += 1;
            let frame = json!({"type": "send", "ref": format!("{cmid}~{attempt}"), "conversation": conversation,
                               "client_msg_id": cmid, "body": {"text": format!("text of {cmid}")}});
            if !self.link.as_mut().expect("connected").send(&frame).await {
                self.drop_link("send failed");
                continue;
            }
            match self.answer(&cmid).await {
                Ok(Answer::Ack) => return true,
                Ok(Answer::Error { code, retryable: false }) => {
                    self.log.sends[at].rejected = Some(code);
                    return false;
                }
                Ok(Answer::Error { .. }) => {
                    errors_in_a_row += 1;
                    if self.errors_before_moving.is_some_and(|most| errors_in_a_row >= most) {
                        errors_in_a_row = 0;
                        self.drop_link("left after repeated retryable errors");
                    }
                    actix_rt::time::sleep(Duration::from_millis(50 + rand::random::<u64>() % 100)).await;
                }
                Err(why) => {
                    *self.log.errors.entry(why.clone()).or_default() += 1;
                    self.drop_link(&why);
                }
            }
        }
        false
    }

    /// Reads until an answer about `cmid` arrives; `Err` with why the connection was given up.
    async fn answer(&mut self, cmid: &str) -> Result<Answer, String> {
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(link) = self.link.as_mut() else {
                return Err("no connection".into());
            };
            match link.next(left).await {
                Next::Frame(frame) => {
                    if let Some((id, answer)) = self.on_frame(&frame) {
                        if id == cmid {
                            return Ok(answer);
                        }
                    }
                }
                Next::Idle => return Err("timeout".into()),
                Next::Closed(how) => return Err(format!("closed {how}")),
            }
        }
    }

    /// Sends round-robin to `conversations`, pausing `pace` between messages, until `stop`; the
    /// message in flight when `stop` is set is finished first.
    pub async fn run(mut self, conversations: Vec<u64>, stop: Rc<Cell<bool>>, pace: Duration) -> Peer {
        let mut turn = 0;
        while !stop.get() {
            self.send_message(conversations[turn % conversations.len()]).await;
            turn += 1;
            actix_rt::time::sleep(pace).await;
        }
        self
    }

    /// Reads (reconnecting when needed) until the cursor of every conversation in `targets` has
    /// reached its target seq, or `wait` has passed (the checker then reports what is missing).
    pub async fn catch_up(&mut self, targets: &BTreeMap<u64, u64>, wait: Duration) {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && targets.iter().any(|(c, s)| self.cursor(*c) < *s) {
            if self.link.is_none() {
                self.connect().await;
                continue;
            }
            let link = self.link.as_mut().expect("connected");
            match link.next(Duration::from_millis(500)).await {
                Next::Frame(frame) => {
                    self.on_frame(&frame);
                }
                Next::Idle => {}
                Next::Closed(how) => self.drop_link(&format!("closed {how}")),
            }
        }
    }
}

/// A user of the cast.
pub struct User {
    pub name: String,
    pub id: u64,
    pub token: String,
}

/// A conversation of the cast and its members (indexes into `Workload::users`).
pub struct Conversation {
    pub id: u64,
    pub members: Vec<usize>,
}

/// The cast plus the peers running it.
pub struct Workload {
    pub users: Vec<User>,
    pub conversations: Vec<Conversation>,
    pub progress: Rc<Progress>,
    pub endpoints: Endpoints,
    stop: Rc<Cell<bool>>,
    running: Vec<actix_rt::task::JoinHandle<Peer>>,
}

impl Workload {
    /// `users` users, the given groups (created by their first member) and direct conversations.
    pub async fn setup(
        cluster: &mut TestCluster,
        users: usize,
        groups: &[&[usize]],
        directs: &[(usize, usize)],
    ) -> Workload {
        let names: Vec<String> = (0..users).map(|i| format!("user{i}")).collect();
        let created = cluster.users(&names).await;
        let users: Vec<User> = names
            .into_iter()
            .zip(created)
            .map(|(name, (id, token))| User { name, id, token })
            .collect();
        let node = cluster.any_node();
        let mut conversations = Vec::new();
        for (n, members) in groups.iter().enumerate() {
            let others: Vec<u64> = members[1..].iter().map(|&m| users[m].id).collect();
            let body = json!({"name": format!("group{n}"), "members": others});
            let token = &users[members[0]].token;
            let (status, group) = http_retry(node, "POST", "/v1/conversations/groups", Some(token), Some(body)).await;
            assert_eq!(status, 201, "create group: {group}");
            let id = group["id"].as_u64().expect("id");
            conversations.push(Conversation {
                id,
                members: members.to_vec(),
            });
        }
        for &(a, b) in directs {
            let body = json!({"peer": users[b].id});
            let token = &users[a].token;
            let (status, direct) = http_retry(node, "POST", "/v1/conversations/direct", Some(token), Some(body)).await;
            assert_eq!(status, 200, "open direct: {direct}");
            let id = direct["id"].as_u64().expect("id");
            conversations.push(Conversation {
                id,
                members: vec![a, b],
            });
        }
        Workload {
            users,
            conversations,
            progress: Rc::default(),
            endpoints: Rc::new(RefCell::new(cluster.endpoints())),
            stop: Rc::default(),
            running: Vec::new(),
        }
    }

    pub fn conversation_ids(&self) -> Vec<u64> {
        self.conversations.iter().map(|c| c.id).collect()
    }

    /// A peer for `user` (its first device, or another login when `device` > 0) whose first
    /// connection goes to endpoint `at`.
    pub async fn peer(&self, cluster: &mut TestCluster, user: usize, device: usize, at: usize) -> Peer {
        let u = &self.users[user];
        let token = if device == 0 {
            u.token.clone()
        } else {
            crate::common::login(cluster.any_node(), &u.name).await
        };
        let name = format!("{}d{device}", u.name);
        let mut peer = Peer::new(&name, u.id, &token, self.endpoints.clone(), at, self.progress.clone());
        peer.connect().await;
        peer
    }

    /// The conversations `user` is a member of.
    pub fn conversations_of(&self, user: usize) -> Vec<u64> {
        self.conversations
            .iter()
            .filter(|c| c.members.contains(&user))
            .map(|c| c.id)
            .collect()
    }

    /// Starts `peer` sending round-robin to its user's conversations until [`Workload::stop`].
    pub fn run(&mut self, peer: Peer, user: usize, pace: Duration) {
        let conversations = self.conversations_of(user);
        let stop = self.stop.clone();
        self.running.push(actix_rt::spawn(peer.run(conversations, stop, pace)));
    }

    /// Waits until `n` more acks than now have arrived (60 s at most).
    pub async fn wait_acks(&self, n: u64) {
        let target = self.progress.acks.get() + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.progress.acks.get() < target {
            assert!(
                Instant::now() < deadline,
                "traffic stalled at {} acks",
                self.progress.acks.get()
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the senders (each finishes its message in flight) and returns the peers.
    pub async fn stop(&mut self) -> Vec<Peer> {
        self.stop.set(true);
        let mut peers = Vec::new();
        for handle in self.running.drain(..) {
            peers.push(handle.await.expect("peer task"));
        }
        peers
    }
}

impl Workload {
    /// Every conversation's full history over REST, each peer caught up to it, then the checker
    /// over all of it. Prints the report and each peer's connections and errors.
    pub async fn verify(&self, cluster: &mut TestCluster, peers: &mut [Peer]) -> Report {
        let node = cluster.any_node();
        let mut histories = BTreeMap::new();
        for conversation in &self.conversations {
            let token = &self.users[conversation.members[0]].token;
            let events = history(node, token, conversation.id).await;
            let events: Vec<HistoryEvent> = events
                .iter()
                .map(|e| HistoryEvent {
                    seq: e["seq"].as_u64().expect("seq"),
                    sender: e["sender"].as_u64().unwrap_or(0),
                    client_msg_id: e["client_msg_id"].as_str().map(str::to_owned),
                })
                .collect();
            histories.insert(conversation.id, events);
        }
        let mut sent = Vec::new();
        let mut streams = Vec::new();
        for peer in peers.iter_mut() {
            let user = self.users.iter().position(|u| u.id == peer.log.user).expect("user");
            let targets: BTreeMap<u64, u64> = self
                .conversations_of(user)
                .into_iter()
                .map(|c| (c, histories[&c].last().map_or(0, |e| e.seq)))
                .collect();
            peer.catch_up(&targets, Duration::from_secs(30)).await;
            for conversation in targets.keys() {
                let events = peer.log.received.get(conversation).cloned().unwrap_or_default();
                streams.push(Stream {
                    peer: peer.log.name.clone(),
                    conversation: *conversation,
                    events,
                });
            }
            sent.extend(peer.log.sends.iter().map(|s| SentMessage {
                peer: peer.log.name.clone(),
                sender: peer.log.user,
                conversation: s.conversation,
                client_msg_id: s.client_msg_id.clone(),
                ack_seqs: s.acks.iter().map(|a| a.0).collect(),
                rejected: s.rejected.is_some(),
            }));
            let ended: Vec<String> = peer
                .log
                .connections
                .iter()
                .map(|(n, how)| format!("node {n}: {how}"))
                .collect();
            println!(
                "  {}: {} sends; connections [{}]; errors {:?}",
                peer.log.name,
                peer.log.sends.len(),
                ended.join(", "),
                peer.log.errors
            );
        }
        let report = check(&histories, &sent, &streams);
        println!("checker: {}", report.summary());
        for problem in &report.problems {
            println!("  problem: {problem}");
        }
        report
    }
}
