//! Group changes, announcements and the member's view of a conversation: the parts of the
//! conversation actor that change or show membership.

use actix::prelude::*;

use super::ConversationActor;
use crate::conversation::command::ConversationView;
use crate::conversation::command::GroupChange;
use crate::conversation::command::Reply;
use crate::conversation::command::ReplyTx;
use crate::conversation::rules;
use crate::error::ConversationError;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::EventKind;
use crate::model::Receipt;
use crate::store::Effect;

impl ConversationActor {
    pub(super) fn change(&mut self, actor: UserId, change: GroupChange, reply: ReplyTx, ctx: &mut Context<Self>) {
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
    pub(super) fn append_after_users_exist(
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

    pub(super) fn announce(&mut self, creator: UserId, reply: ReplyTx, ctx: &mut Context<Self>) {
        let Ok(loaded) = self.loaded() else { return };
        if loaded.assigned != Seq::ZERO {
            let _ = reply.send(Ok(Reply::Done));
            return;
        }
        let members = loaded.sorted_members();
        self.append(
            creator,
            EventKind::MembersAdded { members },
            Vec::new(),
            None,
            Some(reply),
            ctx,
        );
    }

    pub(super) fn describe(&mut self, user: UserId) -> Result<Reply, ConversationError> {
        self.check_member(user)?;
        let loaded = self.loaded()?;
        let members = loaded.sorted_members();
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
