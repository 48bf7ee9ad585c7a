//! The append pipeline: how `MessageStore::append`'s contract holds on CQL, which has no
//! multi-partition transactions.
//!
//! Each conversation with appends in flight has a *lane*: a FIFO of submitted appends and one
//! task (the lane's worker) that writes them, one logged batch at a time. `append` pushes onto
//! the lane synchronously, before it returns, so submission order is queue order. While a batch
//! is being written, later appends of that conversation queue up; when the write completes, the
//! worker takes everything queued (up to `max_batch_bytes`) as the next batch: pipelined appends
//! are coalesced, and different conversations proceed in parallel on their own lanes.
//!
//! For each batch the worker:
//! 1. knows the stored last seq (read from `conversation_heads` when the lane starts, then kept
//!    from its own successful writes), and looks up every client message id of the batch in the
//!    dedup index, concurrently;
//! 2. checks each append in order against that state, exactly as the embedded store does inside
//!    its transaction: seq must be last + 1 (else `Conflict`), the client message id must be new
//!    (else `AlreadyExists`), effect targets must exist (else `NotFound`). A refused append
//!    changes nothing, so the appends behind it conflict: no gap;
//! 3. folds the accepted appends into one write set (new event rows, with edits and recalls of
//!    events of the same batch applied to those rows in memory; column updates of older events;
//!    the net membership change per user; the last rename; the dedup entries; the new head);
//! 4. writes the write set as one LOGGED batch at `write_consistency`: the events, their dedup
//!    entries, their effects and the head are applied together or not at all (the batch log
//!    replays a batch whose coordinator fails half-way).
//!
//! If the write fails (timeout, unavailable replicas), every append of the batch and every append
//! queued behind it fails with `Unavailable` and the lane closes. The next append starts a new
//! lane that reads the head again, so an append submitted after a failure can only succeed if its
//! seq follows what is really stored.
//!
//! Single writer: the checks are made against the lane's state, which is authoritative because
//! one conversation has one owner node (`Placement`), whose actor submits all its appends here.
//! A write that timed out may still be applied later by the batch log; its events are not
//! acknowledged, and a client retry finds them through the dedup index (see docs/storage.md).

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::Instant;

use ::scylla::value::MaybeUnset;
use futures_util::future::try_join_all;
use tokio::sync::oneshot;

use super::codec;
use super::Inner;
use super::ScyllaStore;
use super::WriteBatch;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::metrics;
use crate::model::Event;
use crate::model::EventKind;
use crate::model::MemberRole;
use crate::model::MessageBody;
use crate::store::AppendError;
use crate::store::AppendOp;
use crate::store::AppendTicket;
use crate::store::Effect;
use crate::store::StoreError;

/// Most appends coalesced into one batch, whatever their size.
const MAX_APPENDS_PER_BATCH: usize = 128;

type Reply = oneshot::Sender<Result<(), AppendError>>;

/// The queued appends of one conversation. A lane exists exactly while its worker runs.
#[derive(Default)]
pub(super) struct Lane {
    queue: VecDeque<(AppendOp, Reply)>,
}

impl ScyllaStore {
    /// Queue `op` on its conversation's lane now, starting the lane's worker if it has none.
    pub(super) fn enqueue(&self, op: AppendOp) -> AppendTicket {
        let (reply, answer) = oneshot::channel();
        let id = op.event.conversation;
        let start = {
            let mut lanes = self.inner.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            let lane = lanes.entry(id);
            let start = matches!(lane, std::collections::hash_map::Entry::Vacant(_));
            lane.or_default().queue.push_back((op, reply));
            start
        };
        if start {
            let inner = self.inner.clone();
            self.inner.runtime.spawn(run_lane(inner, id));
        }
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("the append pipeline stopped".into()).into()))
        })
    }
}

/// Closes the lane if the worker ends other than by emptying it (a failed write, a panic, the
/// runtime shutting down), failing whatever is still queued, so no append waits forever.
struct LaneGuard {
    inner: Arc<Inner>,
    id: ConversationId,
    error: Option<String>,
    /// False once the worker has removed its lane itself: a later lane of the same conversation
    /// belongs to another worker and must not be touched.
    armed: bool,
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let lane = self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        let why = self
            .error
            .take()
            .unwrap_or_else(|| "the append pipeline stopped".to_owned());
        for (_, reply) in lane.into_iter().flat_map(|lane| lane.queue) {
            let _ = reply.send(Err(StoreError::Unavailable(why.clone()).into()));
        }
    }
}

async fn run_lane(inner: Arc<Inner>, id: ConversationId) {
    let mut guard = LaneGuard {
        inner: inner.clone(),
        id,
        error: None,
        armed: true,
    };
    let mut head = None;
    loop {
        let batch = {
            let mut lanes = inner.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(lane) = lanes.get_mut(&id) else {
                guard.armed = false;
                return;
            };
            if lane.queue.is_empty() {
                lanes.remove(&id);
                guard.armed = false;
                return;
            }
            take_batch(&mut lane.queue, inner.options.max_batch_bytes)
        };
        let (ops, replies): (Vec<AppendOp>, Vec<Reply>) = batch.into_iter().unzip();
        let started = Instant::now();
        match write_batch(&inner, id, &mut head, ops).await {
            Ok(outcomes) => {
                metrics::store_commit(replies.len(), started.elapsed());
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::warn!(conversation = %id, %error, appends = replies.len(),
                    "An append batch failed; failing the appends queued behind it.");
                let why = match &error {
                    StoreError::Unavailable(message) => message.clone(),
                    other => other.to_string(),
                };
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(why.clone()).into()));
                }
                // The guard closes the lane and fails everything queued meanwhile, under the lock,
                // so nothing submitted before this point can slip into a new lane.
                guard.error = Some(why);
                return;
            }
        }
    }
}

/// The front of the queue, up to the size and count limits (always at least one append).
fn take_batch(queue: &mut VecDeque<(AppendOp, Reply)>, max_bytes: usize) -> Vec<(AppendOp, Reply)> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some((op, _)) = queue.front() {
        let size = estimate(op);
        if !batch.is_empty() && (bytes + size > max_bytes || batch.len() >= MAX_APPENDS_PER_BATCH) {
            break;
        }
        bytes += size;
        batch.extend(queue.pop_front());
    }
    batch
}

/// Approximate bytes an append adds to a batch: its rows, their keys and statement overhead.
fn estimate(op: &AppendOp) -> usize {
    let body = match &op.event.kind {
        EventKind::Message { body, .. } | EventKind::Edit { body, .. } => body.size_bytes(),
        EventKind::MembersAdded { members } => members.len() * 16,
        EventKind::Renamed { name } => name.len(),
        _ => 16,
    };
    let effects: usize = op
        .effects
        .iter()
        .map(|effect| match effect {
            Effect::ReviseMessage { body, .. } => 96 + body.size_bytes(),
            Effect::Rename(name) => 64 + name.len(),
            _ => 160,
        })
        .sum();
    300 + body + effects
}

/// Changes to an event stored by an earlier batch (unset fields are left alone).
#[derive(Default)]
struct Revision {
    body: Option<MessageBody>,
    edited_by: Option<Seq>,
    recalled_by: Option<Seq>,
}

/// The net effect of the accepted appends of one batch.
struct WriteSet {
    head: Seq,
    events: BTreeMap<Seq, Event>,
    revisions: BTreeMap<Seq, Revision>,
    client_msgs: HashSet<(UserId, String)>,
    /// Per user: `Some(role)` put, `None` removed.
    members: BTreeMap<UserId, Option<MemberRole>>,
    rename: Option<String>,
    /// Whether the conversation's header exists (read once, when a rename needs it).
    header_exists: Option<bool>,
    /// Whether stored events are messages (read once each, when an effect targets them).
    stored_messages: BTreeMap<Seq, bool>,
}

async fn write_batch(
    inner: &Inner,
    id: ConversationId,
    head: &mut Option<Seq>,
    ops: Vec<AppendOp>,
) -> Result<Vec<Result<(), AppendError>>, StoreError> {
    let cid = codec::big(id.0)?;
    let stored_head = match *head {
        Some(seq) => seq,
        None => inner.stored_head(cid).await?,
    };
    let duplicates = try_join_all(ops.iter().map(|op| async move {
        match op.event.kind.client_msg_id() {
            Some(client_msg_id) => {
                let sender = codec::big(op.event.sender.0)?;
                inner.stored_client_msg(cid, sender, client_msg_id.as_str()).await
            }
            None => Ok(None),
        }
    }))
    .await?;
    let mut set = WriteSet {
        head: stored_head,
        events: BTreeMap::new(),
        revisions: BTreeMap::new(),
        client_msgs: HashSet::new(),
        members: BTreeMap::new(),
        rename: None,
        header_exists: None,
        stored_messages: BTreeMap::new(),
    };
    let mut outcomes = Vec::with_capacity(ops.len());
    for (op, duplicate) in ops.into_iter().zip(duplicates) {
        let outcome = match set.check(inner, cid, &op, duplicate.is_some()).await? {
            Ok(()) => {
                set.apply(op);
                Ok(())
            }
            Err(refused) => Err(refused),
        };
        outcomes.push(outcome);
    }
    if !set.events.is_empty() {
        inner.write("append", set.to_batch(inner, cid)?).await?;
    }
    *head = Some(set.head);
    Ok(outcomes)
}

impl WriteSet {
    /// Everything that can refuse `op`, against the stored state plus this batch.
    async fn check(
        &mut self,
        inner: &Inner,
        cid: i64,
        op: &AppendOp,
        stored_duplicate: bool,
    ) -> Result<Result<(), AppendError>, StoreError> {
        let event = &op.event;
        if event.seq.0 == 0 || event.seq.0 != self.head.0 + 1 {
            let expected = Seq(event.seq.0.wrapping_sub(1));
            return Ok(Err(AppendError::Conflict {
                expected,
                found: self.head,
            }));
        }
        if let Some(client_msg_id) = event.kind.client_msg_id() {
            let key = (event.sender, client_msg_id.as_str().to_owned());
            if stored_duplicate || self.client_msgs.contains(&key) {
                let what = "client message id";
                return Ok(Err(StoreError::AlreadyExists { what }.into()));
            }
        }
        for effect in &op.effects {
            let missing = match effect {
                Effect::Rename(_) => !self.header_exists(inner, cid).await?,
                Effect::ReviseMessage { target, .. } | Effect::RecallMessage { target } => {
                    !self.is_message(inner, cid, *target).await?
                }
                Effect::PutMember(_) | Effect::RemoveMember(_) => false,
            };
            if missing {
                let what = if matches!(effect, Effect::Rename(_)) {
                    "conversation"
                } else {
                    "message"
                };
                return Ok(Err(StoreError::NotFound { what }.into()));
            }
        }
        Ok(Ok(()))
    }

    async fn header_exists(&mut self, inner: &Inner, cid: i64) -> Result<bool, StoreError> {
        if let Some(known) = self.header_exists {
            return Ok(known);
        }
        let s = &inner.statements;
        let row = inner
            .one::<(Option<String>,)>("append", &s.select_conversation_kind, (cid,))
            .await?;
        let exists = matches!(row, Some((Some(_),)));
        self.header_exists = Some(exists);
        Ok(exists)
    }

    async fn is_message(&mut self, inner: &Inner, cid: i64, target: Seq) -> Result<bool, StoreError> {
        if let Some(event) = self.events.get(&target) {
            return Ok(event.kind.is_message());
        }
        if target.0 == 0 || target > self.head {
            return Ok(false);
        }
        if let Some(known) = self.stored_messages.get(&target) {
            return Ok(*known);
        }
        let s = &inner.statements;
        let bucket = codec::bucket(target.0, inner.events_per_partition);
        let row = inner
            .one::<(Option<String>,)>("append", &s.select_event_kind, (cid, bucket, codec::big(target.0)?))
            .await?;
        let is_message = matches!(row, Some((Some(kind),)) if kind == "message");
        self.stored_messages.insert(target, is_message);
        Ok(is_message)
    }

    /// Fold an accepted append into the write set, in submission order.
    fn apply(&mut self, op: AppendOp) {
        let AppendOp { event, effects } = op;
        let seq = event.seq;
        for effect in effects {
            match effect {
                Effect::PutMember(member) => {
                    self.members.insert(member.user, Some(member.role));
                }
                Effect::RemoveMember(user) => {
                    self.members.insert(user, None);
                }
                Effect::Rename(name) => self.rename = Some(name),
                Effect::ReviseMessage { target, body } => self.revise(target, Some(body), Some(seq), None),
                Effect::RecallMessage { target } => self.revise(target, Some(MessageBody::default()), None, Some(seq)),
            }
        }
        if let Some(client_msg_id) = event.kind.client_msg_id() {
            self.client_msgs
                .insert((event.sender, client_msg_id.as_str().to_owned()));
        }
        self.head = seq;
        self.events.insert(seq, event);
    }

    fn revise(&mut self, target: Seq, body: Option<MessageBody>, edited: Option<Seq>, recalled: Option<Seq>) {
        if let Some(event) = self.events.get_mut(&target) {
            if let EventKind::Message {
                body: stored,
                edited_by,
                recalled_by,
                ..
            } = &mut event.kind
            {
                if let Some(body) = body {
                    *stored = body;
                }
                *edited_by = edited.or(*edited_by);
                *recalled_by = recalled.or(*recalled_by);
            }
            return;
        }
        let revision = self.revisions.entry(target).or_default();
        revision.body = body.or(revision.body.take());
        revision.edited_by = edited.or(revision.edited_by);
        revision.recalled_by = recalled.or(revision.recalled_by);
    }

    /// The logged batch: event rows first (the driver routes a batch by its first statement).
    fn to_batch(&self, inner: &Inner, cid: i64) -> Result<WriteBatch, StoreError> {
        let s = &inner.statements;
        let n = inner.events_per_partition;
        let ttl = inner.ttl();
        let mut batch = WriteBatch::logged(&inner.options);
        for (seq, event) in &self.events {
            let c = codec::event_columns(event)?;
            let values = (
                cid,
                codec::bucket(seq.0, n),
                codec::big(seq.0)?,
                c.0,
                c.1,
                c.2,
                c.3,
                c.4,
                c.5,
                c.6,
                c.7,
                c.8,
                ttl,
            );
            batch.push(&s.insert_event, values);
            if let Some(client_msg_id) = event.kind.client_msg_id() {
                let values = (
                    cid,
                    codec::big(event.sender.0)?,
                    client_msg_id.as_str().to_owned(),
                    codec::big(seq.0)?,
                    ttl,
                );
                batch.push(&s.insert_client_msg, values);
            }
        }
        for (target, revision) in &self.revisions {
            let unset_or = |value: Option<Option<i64>>| value.map_or(MaybeUnset::Unset, MaybeUnset::Set);
            let body = match &revision.body {
                Some(body) => MaybeUnset::Set(codec::encode(body)?),
                None => MaybeUnset::Unset,
            };
            let values = (
                ttl,
                body,
                unset_or(revision.edited_by.map(|s| codec::big(s.0)).transpose()?.map(Some)),
                unset_or(revision.recalled_by.map(|s| codec::big(s.0)).transpose()?.map(Some)),
                cid,
                codec::bucket(target.0, n),
                codec::big(target.0)?,
            );
            batch.push(&s.revise_event, values);
        }
        for (user, role) in &self.members {
            let user = codec::big(user.0)?;
            match role {
                Some(role) => {
                    batch.push(&s.insert_member, (cid, user, codec::member_role(*role)));
                    batch.push(&s.insert_conversation_of_user, (user, cid));
                }
                None => {
                    batch.push(&s.delete_member, (cid, user));
                    batch.push(&s.delete_conversation_of_user, (user, cid));
                    batch.push(&s.delete_receipt, (cid, user));
                }
            }
        }
        if let Some(name) = &self.rename {
            batch.push(&s.rename_conversation, (name.clone(), cid));
        }
        batch.push(&s.upsert_head, (cid, codec::big(self.head.0)?));
        Ok(batch)
    }
}

impl Inner {
    /// The last seq recorded in `conversation_heads`.
    pub(super) async fn stored_head(&self, cid: i64) -> Result<Seq, StoreError> {
        const OP: &str = "last_seq";
        let row = self
            .one::<(Option<i64>,)>(OP, &self.statements.select_head, (cid,))
            .await?;
        match row.and_then(|(seq,)| seq) {
            Some(seq) => Ok(Seq(codec::unsigned(OP, seq)?)),
            None => Ok(Seq::ZERO),
        }
    }

    /// The seq indexed for a client message id, if any.
    pub(super) async fn stored_client_msg(
        &self,
        cid: i64,
        sender: i64,
        client_msg_id: &str,
    ) -> Result<Option<Seq>, StoreError> {
        const OP: &str = "find_client_msg";
        let row = self
            .one::<(Option<i64>,)>(OP, &self.statements.select_client_msg, (cid, sender, client_msg_id))
            .await?;
        match row.and_then(|(seq,)| seq) {
            Some(seq) => Ok(Some(Seq(codec::unsigned(OP, seq)?))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ClientMsgId;

    fn op(seq: u64, text: &str) -> AppendOp {
        AppendOp {
            event: Event {
                conversation: ConversationId(1),
                seq: Seq(seq),
                sender: UserId(1),
                at: 0,
                kind: EventKind::Message {
                    client_msg_id: ClientMsgId::parse(&format!("m-{seq}")).expect("valid"),
                    body: MessageBody {
                        text: text.to_owned(),
                        ..MessageBody::default()
                    },
                    edited_by: None,
                    recalled_by: None,
                },
            },
            effects: Vec::new(),
        }
    }

    #[test]
    fn batches_respect_the_byte_budget_but_take_at_least_one() {
        let mut queue: VecDeque<(AppendOp, Reply)> = (1..=10)
            .map(|seq| (op(seq, &"x".repeat(1000)), oneshot::channel().0))
            .collect();
        let first = take_batch(&mut queue, 4000);
        assert_eq!(first.len(), 3, "three appends of ~1.3 KB fit in 4000 bytes");
        let huge = take_batch(&mut queue, 10);
        assert_eq!(huge.len(), 1, "an append larger than the budget goes alone");
        assert_eq!(queue.len(), 6);
    }
}
