//! VirtualUser: one simulated client. Connects at its planned ramp time, syncs, sends its
//! streams on the open-loop schedule, retries unknown outcomes with the same `client_msg_id`,
//! reconnects (on churn or when the server closes) and syncs from its cursors, and at the end
//! hands back everything the checker needs.
//!
//! With several targets, a user whose connection fails or is closed by the server reconnects to
//! the next target in the list (`failover::next_target`, round robin from its own), with the
//! usual backoff after a failed connect; churn, a close the loader asked for, keeps the target.
//!
//! Sends never wait for acks: each due message is written at once, and one that falls due while
//! the user is disconnected is written right after the reconnect, its latency still measured
//! from the planned time. A send is *pending* until acked or given up; pending sends are
//! resent after a retryable error (after `retry_after_ms` or a backoff), after `ack_timeout`,
//! and after a reconnect.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::time::sleep_until;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::checker::AckRecord;
use crate::conn;
use crate::conn::Conn;
use crate::conn::ConnectError;
use crate::conn::ReaderMsg;
use crate::failover;
use crate::failover::PerTarget;
use crate::schedule::Schedule;
use crate::schedule::StreamCursor;
use crate::stats::recorder::Latency;
use crate::stats::recorder::Recorder;
use crate::target::Target;
use crate::tracker::StreamViolations;
use crate::wire;
use crate::wire::MsgKey;

/// Attempts per message before it is given up (and reported as unresolved).
pub const MAX_ATTEMPTS: u32 = 10;
/// Wait for the server's close answer when closing on purpose.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Longest wait for an ack before a resend, however often the message timed out.
const MAX_ACK_WAIT: Duration = Duration::from_secs(60);
/// How often pending sends are checked for retries and ack timeouts (only while any are pending).
const UPKEEP_EVERY: Duration = Duration::from_millis(50);
/// Wait before the first reconnect after a failed connect; it doubles per failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What every user shares.
#[derive(Debug)]
pub struct Shared {
    pub recorder: Arc<Recorder>,
    pub schedule: Schedule,
    pub payload_bytes: usize,
    pub ack_timeout: Duration,
    /// Set once: when the schedule's offset zero is.
    pub send_start: watch::Receiver<Option<Instant>>,
    /// Turns true when users must close and report.
    pub stop: watch::Receiver<bool>,
    /// Users connected and synced for the first time.
    pub ready: AtomicUsize,
    /// Every target node; `UserSpec::target` indexes it.
    pub targets: Vec<Target>,
    /// Connections, reconnects and failovers per target.
    pub per_target: PerTarget,
}

/// One user's part of the plan.
#[derive(Debug, Clone)]
pub struct UserSpec {
    pub index: usize,
    pub token: String,
    /// Index in `Shared::targets` of the node the user connects to first.
    pub target: usize,
    /// Server ids of the user's conversations.
    pub conversations: Vec<u64>,
    /// (slot, server conversation id) of each stream this user sends.
    pub streams: Vec<(usize, u64)>,
    pub connect_at: Instant,
}

/// Close and reconnect now (churn).
#[derive(Debug, Clone, Copy)]
pub struct Churn;

#[derive(Debug, Default)]
pub struct UserReport {
    pub index: usize,
    pub acks: Vec<AckRecord>,
    /// Never acked: given up, or still pending at the end.
    pub unresolved: Vec<(u64, MsgKey)>,
    pub violations: StreamViolations,
    pub cursors: BTreeMap<u64, u64>,
    pub connected_at_end: bool,
}

#[derive(Debug)]
struct Pending {
    conversation: u64,
    planned_ns: u64,
    attempts: u32,
    last_sent: Instant,
    /// Waiting to be resent at this time (after a retryable error).
    retry_at: Option<Instant>,
}

enum SessionEnd {
    Stopped,
    /// Closed on purpose (churn): reconnect to the same target.
    Churned,
    /// Closed by the server, lost, or unwritable: reconnect to the next target.
    Lost,
}

struct VirtualUser {
    spec: UserSpec,
    shared: Arc<Shared>,
    cursors: BTreeMap<u64, u64>,
    streams: Vec<(StreamCursor, u64)>,
    pending: HashMap<MsgKey, Pending>,
    report: UserReport,
    ready: bool,
}

pub async fn run(spec: UserSpec, shared: Arc<Shared>, churn: mpsc::Receiver<Churn>) -> UserReport {
    let cursors = spec.conversations.iter().map(|&c| (c, 0)).collect();
    let streams = spec
        .streams
        .iter()
        .map(|&(slot, conversation)| (StreamCursor::new(slot), conversation))
        .collect();
    let report = UserReport {
        index: spec.index,
        ..UserReport::default()
    };
    let user = VirtualUser {
        spec,
        shared,
        cursors,
        streams,
        pending: HashMap::new(),
        report,
        ready: false,
    };
    user.run(churn).await
}

impl VirtualUser {
    fn shard(&self) -> usize {
        self.spec.index
    }

    async fn run(mut self, mut churn: mpsc::Receiver<Churn>) -> UserReport {
        let mut stop = self.shared.stop.clone();
        let mut planned = self.spec.connect_at;
        let mut backoff = FIRST_BACKOFF;
        let mut target = self.spec.target;
        let mut reconnect = false;
        loop {
            let Some(opened) = self.attempt(target, planned, &mut stop).await else {
                break;
            };
            let connection = match opened {
                Ok(c) => c,
                Err(e) => {
                    self.shared.recorder.error(self.shard(), &e.code());
                    target = self.fail_over(target);
                    planned = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = FIRST_BACKOFF;
            self.record_connect(target, planned, reconnect);
            reconnect = true;
            self.shared.recorder.open.fetch_add(1, Ordering::Relaxed);
            let end = self.session(connection, &mut churn).await;
            self.shared.recorder.open.fetch_sub(1, Ordering::Relaxed);
            planned = Instant::now();
            match end {
                SessionEnd::Stopped => {
                    self.report.connected_at_end = true;
                    break;
                }
                SessionEnd::Churned => {}
                SessionEnd::Lost => target = self.fail_over(target),
            }
        }
        self.finish()
    }

    /// Wait until `planned`, then connect to `target` and send the first `sync`; `None` once the
    /// run stops.
    async fn attempt(
        &self,
        target: usize,
        planned: Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Result<Conn, ConnectError>> {
        tokio::select! {
            _ = sleep_until(planned.into()) => {}
            _ = stopped(stop) => return None,
        }
        let recorder = Arc::clone(&self.shared.recorder);
        let node = &self.shared.targets[target];
        tokio::select! {
            opened = conn::open(node, &self.spec.token, &self.cursors, recorder, self.shard()) => Some(opened),
            _ = stopped(stop) => None,
        }
    }

    /// The target to try after `from` failed; counts the move when there is somewhere to go.
    fn fail_over(&self, from: usize) -> usize {
        let next = failover::next_target(from, self.shared.targets.len());
        if next != from {
            self.shared.per_target.failed_over(from);
        }
        next
    }

    fn record_connect(&self, target: usize, planned: Instant, reconnect: bool) {
        let recorder = &self.shared.recorder;
        let clock = *recorder.clock();
        recorder.latency(self.shard(), Latency::Connect, clock.ns_at(planned), clock.now_ns());
        recorder.count(self.shard(), |c| c.connects += 1);
        self.shared.per_target.connected(target, reconnect);
    }

    fn finish(mut self) -> UserReport {
        self.shared
            .recorder
            .in_flight
            .fetch_sub(self.pending.len() as i64, Ordering::Relaxed);
        for (key, p) in self.pending.drain() {
            self.report.unresolved.push((p.conversation, key));
        }
        self.report.cursors = self.cursors;
        self.report
    }

    /// Drive one connection until it ends. Its tracker's cursors become the user's cursors.
    async fn session(&mut self, mut connection: Conn, churn: &mut mpsc::Receiver<Churn>) -> SessionEnd {
        let mut stop = self.shared.stop.clone();
        let mut send_start = self.shared.send_start.clone();
        let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
        upkeep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ok = self.resend_pending(&mut connection, |_| true).await;
        let end = loop {
            if !ok {
                self.shared.recorder.error(self.shard(), "write_failed");
                break SessionEnd::Lost;
            }
            let start = *send_start.borrow();
            let next_due = start.and_then(|s| self.next_due(s));
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break SessionEnd::Stopped,
                Some(Churn) = churn.recv() => break SessionEnd::Churned,
                message = connection.from_reader.recv() => {
                    let closed = match message {
                        Some(ReaderMsg::Closed { code }) => Some(code),
                        None => Some(None),
                        Some(message) => {
                            ok = self.on_reader(message, &mut connection).await;
                            None
                        }
                    };
                    if let Some(code) = closed {
                        let code = code.map_or_else(|| "connection_lost".to_owned(), |c| format!("closed_{c}"));
                        self.shared.recorder.error(self.shard(), &code);
                        break SessionEnd::Lost;
                    }
                }
                _ = sleep_until(next_due.unwrap_or_else(far_future).into()), if next_due.is_some() => {
                    if let Some(start) = start {
                        ok = self.send_due(start, &mut connection).await;
                    }
                }
                _ = upkeep.tick(), if !self.pending.is_empty() => ok = self.upkeep(&mut connection).await,
                _ = send_start.changed(), if start.is_none() => {}
            }
        };
        let _ = connection.sink.send(Message::Close(None)).await;
        self.shared.recorder.count(self.shard(), |c| c.disconnects += 1);
        if let Some(tracker) = connection.finish(CLOSE_GRACE).await {
            let (cursors, violations) = tracker.finish();
            self.cursors.extend(cursors);
            self.report.violations.add(&violations);
        }
        end
    }

    /// The earliest due time over this user's streams.
    fn next_due(&self, start: Instant) -> Option<Instant> {
        let schedule = &self.shared.schedule;
        self.streams
            .iter()
            .filter_map(|(c, _)| c.due(schedule))
            .min()
            .map(|d| start + d)
    }

    /// Write every message that is due now; flush once.
    async fn send_due(&mut self, start: Instant, connection: &mut Conn) -> bool {
        let now = Instant::now();
        let clock = *self.shared.recorder.clock();
        let schedule = self.shared.schedule;
        let mut written = 0;
        for (cursor, conversation) in &mut self.streams {
            while let Some(offset) = cursor.due(&schedule).filter(|d| start + *d <= now) {
                let key = MsgKey {
                    slot: cursor.slot as u32,
                    k: cursor.next,
                };
                let planned_ns = clock.ns_at(start + offset);
                let text = wire::message_text(planned_ns, key, self.shared.payload_bytes);
                let frame = wire::send_frame(*conversation, key, &text);
                if connection.sink.feed(Message::text(frame)).await.is_err() {
                    return false;
                }
                self.pending.insert(
                    key,
                    Pending {
                        conversation: *conversation,
                        planned_ns,
                        attempts: 1,
                        last_sent: now,
                        retry_at: None,
                    },
                );
                cursor.next += 1;
                written += 1;
            }
        }
        self.shared.recorder.count(self.spec.index, |c| c.sent += written);
        self.shared
            .recorder
            .in_flight
            .fetch_add(written as i64, Ordering::Relaxed);
        connection.sink.flush().await.is_ok()
    }

    /// Resend the pending sends `pick` selects, with their original ids; give up on those that
    /// ran out of attempts.
    async fn resend_pending(&mut self, connection: &mut Conn, pick: impl Fn(&Pending) -> bool) -> bool {
        let mut keys: Vec<MsgKey> = self.pending.iter().filter(|(_, p)| pick(p)).map(|(k, _)| *k).collect();
        if keys.is_empty() {
            return true;
        }
        keys.sort();
        let now = Instant::now();
        let mut resent = 0;
        for key in keys {
            let Some(p) = self.pending.get_mut(&key) else { continue };
            if p.attempts >= MAX_ATTEMPTS {
                let conversation = p.conversation;
                self.give_up(key, conversation);
                continue;
            }
            p.attempts += 1;
            p.last_sent = now;
            p.retry_at = None;
            let text = wire::message_text(p.planned_ns, key, self.shared.payload_bytes);
            let frame = wire::send_frame(p.conversation, key, &text);
            if connection.sink.feed(Message::text(frame)).await.is_err() {
                return false;
            }
            resent += 1;
        }
        self.shared.recorder.count(self.spec.index, |c| c.retried += resent);
        connection.sink.flush().await.is_ok()
    }

    /// Resend what is due for a retry, and what waited longer than `ack_timeout` for an answer.
    async fn upkeep(&mut self, connection: &mut Conn) -> bool {
        let timeout = self.shared.ack_timeout;
        let now = Instant::now();
        // Each further timeout of the same message waits twice as long (up to a minute), so an
        // overloaded server is not buried under resends the loader itself generates.
        let late = |p: &Pending| {
            let wait = timeout
                .saturating_mul(1 << p.attempts.saturating_sub(1).min(6))
                .min(MAX_ACK_WAIT.max(timeout));
            p.retry_at.is_none() && now.duration_since(p.last_sent) >= wait
        };
        let timed_out = self.pending.values().filter(|p| late(p)).count();
        for _ in 0..timed_out {
            self.shared.recorder.error(self.shard(), "ack_timeout");
        }
        self.resend_pending(connection, |p| late(p) || p.retry_at.is_some_and(|t| t <= now))
            .await
    }

    fn give_up(&mut self, key: MsgKey, conversation: u64) {
        self.pending.remove(&key);
        self.shared.recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.shared.recorder.error(self.shard(), "gave_up");
        self.report.unresolved.push((conversation, key));
    }

    async fn on_reader(&mut self, message: ReaderMsg, connection: &mut Conn) -> bool {
        match message {
            ReaderMsg::Ack {
                reference,
                conversation,
                seq,
            } => {
                let Some(key) = reference.as_deref().and_then(MsgKey::parse) else {
                    return true;
                };
                self.report.acks.push(AckRecord { conversation, seq, key });
                if let Some(p) = self.pending.remove(&key) {
                    let recorder = &self.shared.recorder;
                    recorder.latency(self.spec.index, Latency::Ack, p.planned_ns, recorder.clock().now_ns());
                    recorder.count(self.spec.index, |c| c.acked += 1);
                    recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
                }
            }
            ReaderMsg::Error {
                reference,
                code,
                retryable,
                retry_after_ms,
            } => {
                self.shared.recorder.error(self.shard(), &code);
                let Some(key) = reference.as_deref().and_then(MsgKey::parse) else {
                    return true;
                };
                let Some(p) = self.pending.get_mut(&key) else {
                    return true;
                };
                if retryable && p.attempts < MAX_ATTEMPTS {
                    let backoff = Duration::from_millis(25u64 << p.attempts.min(7));
                    let wait = retry_after_ms.map_or(backoff, |ms| Duration::from_millis(ms).max(backoff / 2));
                    p.retry_at = Some(Instant::now() + wait);
                } else {
                    let conversation = p.conversation;
                    self.give_up(key, conversation);
                }
            }
            ReaderMsg::Synced { complete } => {
                if complete && !self.ready {
                    self.ready = true;
                    self.shared.ready.fetch_add(1, Ordering::Relaxed);
                }
            }
            ReaderMsg::Write(frame) => return connection.sink.send(Message::text(frame)).await.is_ok(),
            ReaderMsg::Closed { .. } => return false,
        }
        true
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}
