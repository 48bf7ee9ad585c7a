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
use super::command::ConversationView;
use super::command::Envelope;
use super::command::GroupChange;
use super::command::Reply;
use super::command::ReplyTx;
use super::dedup::DedupCache;
use super::registry::ActorStopped;
use super::registry::ConversationRegistry;
use super::rules;
use super::rules::Facts;
use super::Deps;
use crate::clock::now_millis;
use crate::delivery::hub::Fanout;
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
use crate::model::MessageBody;
use crate::model::Receipt;
use crate::model::UnixMillis;
use crate::store::AppendError;
use crate::store::AppendOp;
use crate::store::Effect;

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
            Command::Receipt { user, delivered, read } => match self.receipt(user, delivered, read, ctx) {
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

    /// The sender must be a member and the body (if any) within limits.
    fn check_author(&mut self, sender: UserId, body: Option<&MessageBody>) -> Result<(), ConversationError> {
        self.check_member(sender)?;
        match body {
            Some(body) => rules::check_body(body, self.deps.config.max_body_bytes),
            None => Ok(()),
        }
    }

    fn send(
        &mut self,
        sender: UserId,
        client_msg_id: ClientMsgId,
        body: MessageBody,
        reply: ReplyTx,
        ctx: &mut Context<Self>,
    ) {
        if let Err(error) = self.check_author(sender, Some(&body)) {
            let _ = reply.send(Err(error));
            return;
        }
        self.client_event(sender, client_msg_id, None, reply, ctx, move |_, _, cmid| {
            let kind = EventKind::Message {
                client_msg_id: cmid,
                body,
                edited_by: None,
                recalled_by: None,
            };
            Ok((kind, Vec::new()))
        });
    }

    fn edit(
        &mut self,
        sender: UserId,
        client_msg_id: ClientMsgId,
        target: Seq,
        body: MessageBody,
        reply: ReplyTx,
        ctx: &mut Context<Self>,
    ) {
        if let Err(error) = self.check_author(sender, Some(&body)) {
            let _ = reply.send(Err(error));
            return;
        }
        let window = self.deps.config.edit_window();
        self.client_event(
            sender,
            client_msg_id,
            Some(target),
            reply,
            ctx,
            move |_, target_event, cmid| {
                let target_event = target_event.ok_or(ConversationError::TargetNotFound(target))?;
                rules::check_edit(sender, &target_event, now_millis(), window)?;
                let effects = vec![Effect::ReviseMessage {
                    target,
                    body: body.clone(),
                }];
                Ok((
                    EventKind::Edit {
                        client_msg_id: cmid,
                        target,
                        body,
                    },
                    effects,
                ))
            },
        );
    }

    fn recall(
        &mut self,
        sender: UserId,
        client_msg_id: ClientMsgId,
        target: Seq,
        reply: ReplyTx,
        ctx: &mut Context<Self>,
    ) {
        if let Err(error) = self.check_author(sender, None) {
            let _ = reply.send(Err(error));
            return;
        }
        let window = self.deps.config.edit_window();
        self.client_event(
            sender,
            client_msg_id,
            Some(target),
            reply,
            ctx,
            move |act, target_event, cmid| {
                let target_event = target_event.ok_or(ConversationError::TargetNotFound(target))?;
                let role = act.check_member(sender)?;
                let facts = act.facts_owned();
                rules::check_recall(&facts.as_facts(), sender, role, &target_event, now_millis(), window)?;
                Ok((
                    EventKind::Recall {
                        client_msg_id: cmid,
                        target,
                    },
                    vec![Effect::RecallMessage { target }],
                ))
            },
        );
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

    /// Resolve the client message id (and the target event, for edits and recalls) and then
    /// either answer with the original seq or build and append the new event. Later commands
    /// wait until this is resolved, so each sender's events keep their order.
    fn client_event<B>(
        &mut self,
        sender: UserId,
        client_msg_id: ClientMsgId,
        target: Option<Seq>,
        reply: ReplyTx,
        ctx: &mut Context<Self>,
        build: B,
    ) where
        B: FnOnce(&mut Self, Option<Event>, ClientMsgId) -> Result<(EventKind, Vec<Effect>), ConversationError>
            + 'static,
    {
        if let Some((seq, at)) = self.dedup.get(sender, &client_msg_id) {
            self.answer_duplicate(seq, at, reply);
            return;
        }
        let pending_target = target.and_then(|t| self.pending.iter().find(|p| p.seq == t).map(|p| p.event.clone()));
        let store = self.deps.store.clone();
        let id = self.id;
        let cmid = client_msg_id.clone();
        let lookup = async move {
            let found = store.find_client_msg(id, sender, &cmid).await?;
            let original = match found {
                Some(seq) => Some(store.event(id, seq).await?.map(|e| (seq, e.at)).unwrap_or((seq, 0))),
                None => None,
            };
            let target_event = match (target, pending_target) {
                (_, Some(event)) => Some(event),
                (Some(t), None) => store.event(id, t).await?,
                (None, None) => None,
            };
            Ok::<_, crate::store::StoreError>((original, target_event))
        };
        ctx.wait(lookup.into_actor(self).map(move |result, act, ctx| match result {
            Err(error) => {
                metrics::store_error("find_client_msg");
                let _ = reply.send(Err(error.into()));
            }
            Ok((Some((seq, at)), _)) => {
                act.dedup.insert(sender, client_msg_id, seq, at);
                act.answer_duplicate(seq, at, reply);
            }
            Ok((None, target_event)) => match build(act, target_event, client_msg_id.clone()) {
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
                Ok((kind, effects)) => act.append(sender, kind, effects, Some(client_msg_id), Some(reply), ctx),
            },
        }));
    }

    fn answer_duplicate(&mut self, seq: Seq, at: UnixMillis, reply: ReplyTx) {
        metrics::duplicate_send();
        if let Some(pending) = self.pending.iter_mut().find(|p| p.seq == seq) {
            pending.replies.push((reply, true));
            return;
        }
        let accepted = Accepted {
            conversation: self.id,
            seq,
            at,
            duplicate: true,
        };
        let _ = reply.send(Ok(Reply::Accepted(accepted)));
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
        self.deps.hub.do_send(Fanout {
            users: done.recipients,
            item,
        });
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

    fn change(&mut self, actor: UserId, change: GroupChange, reply: ReplyTx, ctx: &mut Context<Self>) {
        let facts = self.facts_owned();
        let plan = rules::plan_change(&facts.as_facts(), actor, &change);
        match plan {
            Err(error) => {
                let _ = reply.send(Err(error));
            }
            Ok(None) => {
                let _ = reply.send(Ok(Reply::Done));
            }
            Ok(Some((kind, effects))) => {
                if let GroupChange::AddMembers { users } = &change {
                    self.append_after_users_exist(actor, users.clone(), kind, effects, reply, ctx);
                } else {
                    self.append(actor, kind, effects, None, Some(reply), ctx);
                }
            }
        }
    }

    /// New members must be existing, enabled accounts; check before assigning a seq.
    fn append_after_users_exist(
        &mut self,
        actor: UserId,
        users: Vec<UserId>,
        kind: EventKind,
        effects: Vec<Effect>,
        reply: ReplyTx,
        ctx: &mut Context<Self>,
    ) {
        let store = self.deps.store.clone();
        let check = async move {
            for user in users {
                match store.user(user).await? {
                    Some(u) if !u.disabled => {}
                    _ => return Ok(Some(user)),
                }
            }
            Ok::<_, crate::store::StoreError>(None)
        };
        ctx.wait(check.into_actor(self).map(move |result, act, ctx| match result {
            Err(error) => {
                let _ = reply.send(Err(error.into()));
            }
            Ok(Some(missing)) => {
                let _ = reply.send(Err(ConversationError::Invalid(format!(
                    "user {missing} does not exist"
                ))));
            }
            Ok(None) => act.append(actor, kind, effects, None, Some(reply), ctx),
        }));
    }

    fn announce(&mut self, creator: UserId, reply: ReplyTx, ctx: &mut Context<Self>) {
        let Ok(loaded) = self.loaded() else { return };
        if loaded.assigned != Seq::ZERO {
            let _ = reply.send(Ok(Reply::Done));
            return;
        }
        let mut members: Vec<Member> = loaded
            .members
            .iter()
            .map(|(user, role)| Member {
                user: *user,
                role: *role,
            })
            .collect();
        members.sort_by_key(|m| m.user);
        self.append(
            creator,
            EventKind::MembersAdded { members },
            Vec::new(),
            None,
            Some(reply),
            ctx,
        );
    }

    /// Advance a member's cursors; returns them and whether they changed (and so must be saved
    /// before the request is answered).
    fn receipt(
        &mut self,
        user: UserId,
        delivered: Option<Seq>,
        read: Option<Seq>,
        _ctx: &mut Context<Self>,
    ) -> Result<(Receipt, bool), ConversationError> {
        self.check_member(user)?;
        let small_group = self.deps.config.presence_fanout_max_members;
        let deps = self.deps.clone();
        let id = self.id;
        let loaded = self.loaded()?;
        let current = loaded.receipts.get(&user).copied().unwrap_or_default();
        let next = current.advance(delivered, read, loaded.durable);
        if next == current {
            return Ok((next, false));
        }
        loaded.receipts.insert(user, next);
        if loaded.members.len() <= small_group {
            let bytes = deps.encoder.receipt(id, user, next);
            let users = loaded.recipients.clone();
            deps.hub.do_send(Fanout {
                users,
                item: Outbound::Ephemeral { bytes },
            });
        }
        self.dirty_receipts.insert(user, next);
        Ok((next, true))
    }

    /// Persist dirty receipts, one flush at a time; cursors are cumulative, so the newest wins.
    fn flush_receipts(&mut self, ctx: &mut Context<Self>) {
        if self.receipt_flush_running || self.dirty_receipts.is_empty() {
            return;
        }
        self.receipt_flush_running = true;
        let batch: Vec<(UserId, Receipt)> = self.dirty_receipts.drain().collect();
        let waiters = std::mem::take(&mut self.receipt_waiters);
        let store = self.deps.store.clone();
        let id = self.id;
        let save = async move {
            let mut outcome = Ok(());
            for (user, receipt) in batch {
                if let Err(error) = store.save_receipt(id, user, receipt).await {
                    metrics::store_error("save_receipt");
                    tracing::warn!(conversation = %id, %error, "Saving a receipt failed.");
                    outcome = Err(ConversationError::from(error));
                }
            }
            outcome
        };
        ctx.spawn(save.into_actor(self).map(move |outcome, act, ctx| {
            for (reply, receipt) in waiters {
                let answer = match &outcome {
                    Ok(()) => Ok(Reply::Receipt(receipt)),
                    Err(error) => Err(ConversationError::Unavailable(error.to_string())),
                };
                let _ = reply.send(answer);
            }
            act.receipt_flush_running = false;
            act.flush_receipts(ctx);
        }));
    }

    fn typing(&mut self, user: UserId) -> Result<(), ConversationError> {
        self.check_member(user)?;
        let loaded = self.loaded()?;
        let others: Arc<[UserId]> = loaded.recipients.iter().copied().filter(|u| *u != user).collect();
        let bytes = self.deps.encoder.typing(self.id, user);
        self.deps.hub.do_send(Fanout {
            users: others,
            item: Outbound::Ephemeral { bytes },
        });
        Ok(())
    }

    fn describe(&mut self, user: UserId) -> Result<Reply, ConversationError> {
        self.check_member(user)?;
        let loaded = self.loaded()?;
        let mut members: Vec<Member> = loaded
            .members
            .iter()
            .map(|(user, role)| Member {
                user: *user,
                role: *role,
            })
            .collect();
        members.sort_by_key(|m| m.user);
        let mut receipts: Vec<(UserId, Receipt)> = loaded.receipts.iter().map(|(u, r)| (*u, *r)).collect();
        receipts.sort_by_key(|(u, _)| *u);
        Ok(Reply::View(Box::new(ConversationView {
            conversation: loaded.conversation.clone(),
            members,
            receipts,
            last_seq: loaded.durable,
        })))
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
