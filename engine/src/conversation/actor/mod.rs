//! ConversationActor: owns one conversation's members, next `Seq`, dedup window and receipts.
//!
//! Receives [`Envelope`]s from the registry, in order. For a client event it checks the sender,
//! resolves the client message id (memory, then the store's durable index, holding later commands
//! meanwhile so a sender's order is kept), assigns the next seq, submits the append and moves on:
//! appends are pipelined and the store applies them in order. Completions are handled strictly in
//! seq order: the sender is acked and the event fanned out only once it is durable. A failed
//! append fails everything queued behind it and stops the actor, which is rebuilt from the store.
//!
//! Invariant: at most one live actor per conversation on the owning node (the registry ensures
//! it); acks follow a successful append; seqs are dense.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::command::Accepted;
use super::command::Command;
use super::command::Envelope;
use super::command::Reply;
use super::command::ReplyTx;
use super::dedup::DedupCache;
use super::registry::ActorStopped;
use super::registry::ConversationRegistry;
use super::rules::Facts;
use super::Deps;
use crate::clock::now_millis;
use crate::delivery::Outbound;
use crate::error::ConversationError;
use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::metrics;
use crate::model::Conversation;
use crate::model::Event;
use crate::model::EventKind;
use crate::model::Member;
use crate::model::MemberRole;
use crate::model::Receipt;
use crate::model::UnixMillis;
use crate::placement::Owner;
use crate::store::AppendError;
use crate::store::AppendOp;
use crate::store::Effect;

mod client_events;
mod members;
mod receipts;

/// State loaded from the store when the actor starts.
struct Loaded {
    conversation: Conversation,
    members: HashMap<UserId, MemberRole>,
    /// Members as a shared list, rebuilt on membership change, handed to every fan-out.
    recipients: Arc<[UserId]>,
    receipts: HashMap<UserId, Receipt>,
    /// Highest seq handed out (pending appends included).
    assigned: Seq,
    /// Highest seq known durable.
    durable: Seq,
    last_at: UnixMillis,
}

impl Loaded {
    /// The members with their roles, ordered by user id.
    fn sorted_members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .members
            .iter()
            .map(|(&user, &role)| Member { user, role })
            .collect();
        members.sort_by_key(|m| m.user);
        members
    }
}

enum State {
    Loading,
    Ready(Box<Loaded>),
    /// Loading or an append failed; every command is refused until the actor is rebuilt.
    Failed {
        not_found: bool,
        why: String,
    },
}

struct Pending {
    seq: Seq,
    event: Event,
    recipients: Arc<[UserId]>,
    replies: Vec<(ReplyTx, bool)>,
    outcome: Option<Result<(), AppendError>>,
    received: Instant,
}

pub struct ConversationActor {
    id: ConversationId,
    deps: Arc<Deps>,
    registry: Option<Addr<ConversationRegistry>>,
    state: State,
    dedup: DedupCache,
    pending: VecDeque<Pending>,
    dirty_receipts: HashMap<UserId, Receipt>,
    /// Receipt requests answered once the flush that carries them is durable.
    receipt_waiters: Vec<(ReplyTx, Receipt)>,
    receipt_flush_running: bool,
    /// Retire was asked while appends were in flight: stop once they are released.
    retiring: bool,
}

impl ConversationActor {
    pub fn new(id: ConversationId, deps: Arc<Deps>, registry: Option<Addr<ConversationRegistry>>) -> Self {
        let dedup = DedupCache::new(deps.config.dedup_cache_entries);
        Self {
            id,
            deps,
            registry,
            state: State::Loading,
            dedup,
            pending: VecDeque::new(),
            dirty_receipts: HashMap::new(),
            receipt_waiters: Vec::new(),
            receipt_flush_running: false,
            retiring: false,
        }
    }

    fn loaded(&mut self) -> Result<&mut Loaded, ConversationError> {
        match &mut self.state {
            State::Ready(loaded) => Ok(loaded),
            State::Loading => Err(ConversationError::Internal("conversation still loading".into())),
            State::Failed { not_found: true, .. } => Err(ConversationError::NotFound(self.id)),
            State::Failed { why, .. } => Err(ConversationError::Unavailable(why.clone())),
        }
    }

    fn dispatch(&mut self, command: Command, reply: ReplyTx, ctx: &mut Context<Self>) {
        if let Err(error) = self.loaded() {
            let _ = reply.send(Err(error));
            return;
        }
        match command {
            Command::Send {
                sender,
                client_msg_id,
                body,
            } => self.send(sender, client_msg_id, body, reply, ctx),
            Command::Edit {
                sender,
                client_msg_id,
                target,
                body,
            } => self.edit(sender, client_msg_id, target, body, reply, ctx),
            Command::Recall {
                sender,
                client_msg_id,
                target,
            } => self.recall(sender, client_msg_id, target, reply, ctx),
            Command::Change { actor, change } => self.change(actor, change, reply, ctx),
            Command::Receipt { user, delivered, read } => match self.receipt(user, delivered, read) {
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
                Ok((receipt, false)) => {
                    let _ = reply.send(Ok(Reply::Receipt(receipt)));
                }
                Ok((receipt, true)) => {
                    self.receipt_waiters.push((reply, receipt));
                    self.flush_receipts(ctx);
                }
            },
            Command::Typing { user } => {
                let _ = reply.send(self.typing(user).map(|()| Reply::Done));
            }
            Command::Authorize { user } => {
                let _ = reply.send(self.check_member(user).map(|_| Reply::Done));
            }
            Command::Describe { user } => {
                let _ = reply.send(self.describe(user));
            }
            Command::Announce { creator } => self.announce(creator, reply, ctx),
        }
    }

    fn check_member(&mut self, user: UserId) -> Result<MemberRole, ConversationError> {
        let id = self.id;
        let loaded = self.loaded()?;
        loaded
            .members
            .get(&user)
            .copied()
            .ok_or(ConversationError::NotMember(id))
    }

    fn facts_owned(&self) -> OwnedFacts {
        match &self.state {
            State::Ready(loaded) => OwnedFacts {
                id: self.id,
                kind: loaded.conversation.kind,
                members: loaded.members.clone(),
                max_members: self.deps.config.max_group_members,
                max_name_bytes: self.deps.config.max_group_name_bytes,
            },
            _ => OwnedFacts {
                id: self.id,
                kind: crate::model::ConversationKind::Direct,
                members: HashMap::new(),
                max_members: 0,
                max_name_bytes: 0,
            },
        }
    }

    /// Assign the next seq, apply the effects in memory, submit the durable append.
    fn append(
        &mut self,
        sender: UserId,
        kind: EventKind,
        effects: Vec<Effect>,
        client_msg_id: Option<ClientMsgId>,
        reply: Option<ReplyTx>,
        ctx: &mut Context<Self>,
    ) {
        let id = self.id;
        // Backpressure: a conversation whose store cannot keep up refuses new work (retryable,
        // nothing stored) rather than queueing without bound.
        if self.pending.len() >= self.deps.config.max_pending_appends {
            metrics::overloaded();
            if let Some(reply) = reply {
                let _ = reply.send(Err(ConversationError::Overloaded));
            }
            return;
        }
        // Fencing: this node may have lost the conversation (lease lapsed, shard moved) while the
        // command waited in the mailbox. Assign nothing; the client retries at the new owner.
        if self.deps.placement.owner(id) != Owner::Local {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ConversationError::NotOwner(id)));
            }
            return;
        }
        let Ok(loaded) = self.loaded() else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ConversationError::Unavailable("conversation failed".into())));
            }
            return;
        };
        let seq = loaded.assigned.next();
        loaded.assigned = seq;
        let at = now_millis().max(loaded.last_at);
        loaded.last_at = at;
        let mut removed: Vec<UserId> = Vec::new();
        for effect in &effects {
            match effect {
                Effect::PutMember(member) => {
                    loaded.members.insert(member.user, member.role);
                }
                Effect::RemoveMember(user) => {
                    loaded.members.remove(user);
                    removed.push(*user);
                }
                Effect::Rename(name) => loaded.conversation.name = name.clone(),
                Effect::ReviseMessage { .. } | Effect::RecallMessage { .. } => {}
            }
        }
        if effects
            .iter()
            .any(|e| matches!(e, Effect::PutMember(_) | Effect::RemoveMember(_)))
        {
            loaded.recipients = loaded.members.keys().copied().collect();
            for user in &removed {
                loaded.receipts.remove(user);
            }
        }
        let recipients: Arc<[UserId]> = if removed.is_empty() {
            loaded.recipients.clone()
        } else {
            // Removed members learn about their removal, then hear nothing more.
            loaded.recipients.iter().copied().chain(removed).collect()
        };
        let event = Event {
            conversation: id,
            seq,
            sender,
            at,
            kind,
        };
        if let Some(cmid) = client_msg_id {
            self.dedup.insert(sender, cmid, seq, at);
        }
        let ticket = self.deps.store.append(AppendOp {
            event: event.clone(),
            effects,
        });
        self.pending.push_back(Pending {
            seq,
            event,
            recipients,
            replies: reply.into_iter().map(|r| (r, false)).collect(),
            outcome: None,
            received: Instant::now(),
        });
        // The completion comes back as a message: an actor future per pending append would be
        // polled on every wake-up of the actor, which costs O(pending) per completion.
        let addr = ctx.address();
        actix::spawn(async move {
            let result = ticket.await;
            addr.do_send(AppendDone { seq, result });
        });
    }

    /// Record an append's outcome and release everything that is now durable, in seq order.
    fn append_finished(&mut self, seq: Seq, result: Result<(), AppendError>, ctx: &mut Context<Self>) {
        // Pending appends have consecutive seqs, so the position is arithmetic.
        let position = self
            .pending
            .front()
            .map(|front| seq.0.wrapping_sub(front.seq.0) as usize);
        if let Some(pending) = position.and_then(|i| self.pending.get_mut(i)).filter(|p| p.seq == seq) {
            pending.outcome = Some(result);
        }
        while self.pending.front().is_some_and(|p| p.outcome.is_some()) {
            let Some(mut done) = self.pending.pop_front() else {
                break;
            };
            match done.outcome.take() {
                // Fencing: an append confirmed after this node's lease on the conversation lapsed
                // may race the new owner's first appends; claim nothing (the sender retries with
                // the same client_msg_id and the new owner's history decides).
                Some(Ok(())) if !self.deps.placement.may_confirm(self.id) => {
                    tracing::warn!(conversation = %self.id, seq = %done.seq, "Append confirmed after ownership lapsed; not acknowledging it.");
                    self.fail_all(done, "ownership lapsed before the append was confirmed; retry", ctx);
                    return;
                }
                Some(Ok(())) => self.release(done),
                Some(Err(error)) => {
                    metrics::store_error("append");
                    tracing::warn!(conversation = %self.id, seq = %done.seq, %error, "Append failed; restarting the conversation actor.");
                    self.fail_all(done, &error.to_string(), ctx);
                    return;
                }
                None => {}
            }
        }
        if self.retiring && self.pending.is_empty() {
            self.retire(ctx);
        }
    }

    /// An event is durable: fan it out, then ack. Fan-out first, so by the time a sender sees
    /// its ack, the event is already queued at the hub ahead of anything the sender does next.
    fn release(&mut self, done: Pending) {
        if let State::Ready(loaded) = &mut self.state {
            loaded.durable = done.seq;
        }
        metrics::event_appended(done.received.elapsed());
        let bytes = self.deps.encoder.event(&done.event);
        let item = Outbound::Event {
            conversation: self.id,
            seq: done.seq,
            bytes,
        };
        self.deps.fan_out(done.recipients, item);
        for (reply, duplicate) in done.replies {
            let accepted = Accepted {
                conversation: self.id,
                seq: done.seq,
                at: done.event.at,
                duplicate,
            };
            let _ = reply.send(Ok(Reply::Accepted(accepted)));
        }
    }

    fn fail_all(&mut self, first: Pending, why: &str, ctx: &mut Context<Self>) {
        let failed = std::iter::once(first).chain(self.pending.drain(..));
        for pending in failed {
            for (reply, _) in pending.replies {
                let _ = reply.send(Err(ConversationError::Unavailable(why.to_owned())));
            }
        }
        self.state = State::Failed {
            not_found: false,
            why: why.to_owned(),
        };
        ctx.stop();
    }
}

/// An owned copy of [`Facts`] so rules can run inside closures that also borrow the actor.
struct OwnedFacts {
    id: ConversationId,
    kind: crate::model::ConversationKind,
    members: HashMap<UserId, MemberRole>,
    max_members: usize,
    max_name_bytes: usize,
}

impl OwnedFacts {
    fn as_facts(&self) -> Facts<'_> {
        Facts {
            id: self.id,
            kind: self.kind,
            members: &self.members,
            max_members: self.max_members,
            max_name_bytes: self.max_name_bytes,
        }
    }
}

async fn load(deps: Arc<Deps>, id: ConversationId) -> Result<Option<Loaded>, crate::store::StoreError> {
    let store = &deps.store;
    let Some(conversation) = store.conversation(id).await? else {
        return Ok(None);
    };
    let members: HashMap<UserId, MemberRole> = store.members(id).await?.into_iter().map(|m| (m.user, m.role)).collect();
    let receipts = store.receipts(id).await?.into_iter().collect();
    let last = store.last_seq(id).await?;
    let last_at = match store.event(id, last).await? {
        Some(event) => event.at,
        None => conversation.created_at,
    };
    let recipients = members.keys().copied().collect();
    Ok(Some(Loaded {
        conversation,
        members,
        recipients,
        receipts,
        assigned: last,
        durable: last,
        last_at,
    }))
}

impl Actor for ConversationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let deps = self.deps.clone();
        ctx.wait(load(deps, self.id).into_actor(self).map(|result, act, _ctx| {
            act.state = match result {
                Ok(Some(loaded)) => State::Ready(Box::new(loaded)),
                Ok(None) => State::Failed {
                    not_found: true,
                    why: "not found".into(),
                },
                Err(error) => {
                    tracing::warn!(conversation = %act.id, %error, "Loading a conversation failed.");
                    State::Failed {
                        not_found: false,
                        why: error.to_string(),
                    }
                }
            };
        }));
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        if let Some(registry) = &self.registry {
            registry.do_send(ActorStopped {
                conversation: self.id,
                addr: ctx.address(),
            });
        }
    }
}

impl Handler<Envelope> for ConversationActor {
    type Result = ();

    fn handle(&mut self, envelope: Envelope, ctx: &mut Context<Self>) {
        self.dispatch(envelope.command, envelope.reply, ctx);
        // A failed load is final for this actor instance: stop so the next use reloads.
        if matches!(self.state, State::Failed { .. }) {
            ctx.stop();
        }
    }
}

/// An append submitted by this actor finished.
#[derive(Message)]
#[rtype(result = "()")]
struct AppendDone {
    seq: Seq,
    result: Result<(), AppendError>,
}

impl Handler<AppendDone> for ConversationActor {
    type Result = ();

    fn handle(&mut self, msg: AppendDone, ctx: &mut Context<Self>) {
        self.append_finished(msg.seq, msg.result, ctx);
    }
}

/// Stop after persisting receipts (sent by the registry when the actor has been idle).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for ConversationActor {
    type Result = ();

    fn handle(&mut self, _msg: Retire, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            self.retire(ctx);
        } else {
            self.retiring = true;
        }
    }
}

impl ConversationActor {
    fn retire(&mut self, ctx: &mut Context<Self>) {
        let batch: Vec<(UserId, Receipt)> = self.dirty_receipts.drain().collect();
        let store = self.deps.store.clone();
        let id = self.id;
        let save = async move {
            for (user, receipt) in batch {
                let _ = store.save_receipt(id, user, receipt).await;
            }
        };
        ctx.wait(save.into_actor(self).map(|(), _act, ctx| ctx.stop()));
    }
}
