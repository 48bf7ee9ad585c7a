//! Messages, edits and recalls: the client events of a conversation. Each checks its author,
//! resolves the client message id (the in-memory window, then the store's durable index, holding
//! later commands meanwhile so a sender's order is kept) and then appends or answers with the
//! original seq.

use actix::prelude::*;

use super::ConversationActor;
use crate::clock::now_millis;
use crate::conversation::command::Accepted;
use crate::conversation::command::Reply;
use crate::conversation::command::ReplyTx;
use crate::conversation::rules;
use crate::error::ConversationError;
use crate::ids::ClientMsgId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::metrics;
use crate::model::Event;
use crate::model::EventKind;
use crate::model::MessageBody;
use crate::model::UnixMillis;
use crate::store::Effect;

impl ConversationActor {
    /// The sender must be a member and the body (if any) within limits.
    pub(super) fn check_author(&mut self, sender: UserId, body: Option<&MessageBody>) -> Result<(), ConversationError> {
        self.check_member(sender)?;
        match body {
            Some(body) => rules::check_body(body, self.deps.config.max_body_bytes),
            None => Ok(()),
        }
    }

    pub(super) fn send(
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

    pub(super) fn edit(
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

    pub(super) fn recall(
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

    /// Resolve the client message id (and the target event, for edits and recalls) and then
    /// either answer with the original seq or build and append the new event. Later commands
    /// wait until this is resolved, so each sender's events keep their order.
    pub(super) fn client_event<B>(
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

    pub(super) fn answer_duplicate(&mut self, seq: Seq, at: UnixMillis, reply: ReplyTx) {
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
}
